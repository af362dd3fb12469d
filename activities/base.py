"""Shared plumbing for action activities: the ``action`` decorator and secret resolution.

Every action is written as a plain ``async def impl(request: ActionRequest) -> Any`` (or a method of a
class holding shared resources). :func:`action` turns it into a Temporal activity that speaks the wire
contract of :mod:`interpreter.actions` and normalises every failure into an
:class:`~temporalio.exceptions.ApplicationError` the workflow's retry policy can reason about.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ParamSpec
from urllib.parse import quote, urlsplit

import pydantic_core
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.secrets import (
    SECRET_ENV_PREFIX,
    SECRETS_FILE_ENV,
    Secret,
    encoded_forms,
    secret_store,
    tenant_scope,
)
from interpreter.actions import ActionRequest, ActionResult, RetryMode, input_problems, linear_delay_s
from interpreter.inert import SECRET_REF, SECRET_REF_START, as_text, sub_references
from interpreter.sizes import (
    ACTION_OUTPUT_BUDGET,
    JSON_ESCAPE_EXPANSION,
    VALUE_MAX_DEPTH,
    json_depth,
    json_size,
)

__all__ = [
    "MAX_FAILURE_DETAILS_BYTES",
    "MAX_FAILURE_MESSAGE_BYTES",
    "SECRET_ENV_PREFIX",
    "action",
    "bound_details",
    "bound_text",
    "check_secret_hosts",
    "check_tenant_scope",
    "holds_lone_surrogate",
    "redact_secrets",
    "require_setting",
    "resolve_relayed",
    "resolve_secrets",
    "resolve_url",
    "tenant_secret",
    "tenant_setting",
]

P = ParamSpec("P")

# The server keeps a retrying activity's last failure (message, details, stack trace and cause chain)
# only up to 4 KiB ("limit.mutableStateActivityFailureSize.error"); beyond it stores "Failure exceeds
# size limit" instead, which is all the Web UI and `wfa status` could then show. These bounds keep an
# action's failure well inside it, stack trace included.
MAX_FAILURE_MESSAGE_BYTES = 2048
"""The most an action failure's message takes (UTF-8); the rest is cut, saying how much."""

MAX_FAILURE_DETAILS_BYTES = 768
"""The most an action failure's details take (as JSON); larger entries are replaced by a preview."""

MAX_CAUSE_MESSAGE_BYTES = 256
"""The most the cause's message takes (the cause is kept as its type and message, without a trace)."""


def _as_written(output: Any) -> Any:
    """``output`` as plain JSON values, as the payload converter writes it (an ``Enum``, a
    dataclass or a model as its JSON): what the budget measures and the secrets are redacted in
    (found by a review: an ``Enum`` whose value is 600 KB counted as its short ``str``)."""
    if output is None or isinstance(output, str | int | float | bool):
        return output
    try:
        return pydantic_core.to_jsonable_python(output)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
        return output  # (the converter refuses it too: the activity fails as before)


def _written_size(output: Any) -> int:
    """Bytes of ``output`` as the payload converter writes it (JSON with its escapes)."""
    try:
        return len(pydantic_core.to_json(output))
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
        return len(json.dumps(output, default=str))


_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Secrets resolved during the current action execution (name -> secret), so the wrapper can scrub
# them from whatever the action returns or raises and the action can check where they may go. None
# outside an action execution.
_resolved_secrets: contextvars.ContextVar[dict[str, Secret] | None] = contextvars.ContextVar(
    "wfa_resolved_secrets", default=None
)
# The tenant of the run whose action executes now: the only tenant whose secrets it may resolve.
_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("wfa_action_tenant", default="default")


def _lookup_secret(name: str) -> str:
    if not _SECRET_NAME.fullmatch(name):
        raise ApplicationError(
            f"invalid secret reference {name[:100]!r}: names must match [A-Za-z_][A-Za-z0-9_]*",
            type="SecretNotFound",
            non_retryable=True,
        )
    tenant = _tenant.get()
    secret = secret_store().get(tenant, name)
    if secret is None:
        # The same words whether another tenant has a secret of that name or not.
        raise ApplicationError(
            f"secret {name!r} of tenant {tenant!r} is not configured on the worker "
            f"({SECRETS_FILE_ENV}, or {SECRET_ENV_PREFIX}{name} for tenant 'default')",
            type="SecretNotFound",
            non_retryable=True,
        )
    registry = _resolved_secrets.get()
    if registry is not None and secret.value:
        registry[name] = secret
    return secret.value


def _substitute(match: re.Match[str]) -> str:
    if match.group(1):  # escaped: literal text
        return match.group(0)[1:]
    return _lookup_secret(match.group(2))


def resolve_secrets(value: Any) -> Any:
    """Replace every ``${secret:NAME}`` reference with the run's tenant's secret ``NAME``.

    References may appear anywhere inside any string of nested dicts, lists and tuples (dict keys
    are never resolved; an escaped one is given its literal text); ``$${secret:NAME}`` stands for
    the literal text ``${secret:NAME}`` and is not resolved. Resolved secrets are remembered for
    the current action execution so the :func:`action` wrapper can redact them from the result
    and from errors, and the action can check where they may be sent (:func:`check_secret_hosts`).

    Args:
        value: A JSON-like value, typically an action's input or part of it.

    Returns:
        A copy of ``value`` with all references substituted; non-string leaves are returned as is.

    Raises:
        ApplicationError: Non-retryable, type ``SecretNotFound``, when a referenced secret is not
            configured for the run's tenant or its name is malformed. The message names the secret,
            never a value.
    """
    if isinstance(value, str):
        if "{secret:" not in value:
            return value
        return sub_references(SECRET_REF, _substitute, value)
    if isinstance(value, dict):
        # Keys are never resolved; one escaped (data's inert form) is given its literal text.
        return {as_text(k): resolve_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve_secrets(v) for v in value)
    return value


def resolve_relayed(value: Any, what: str) -> Any:
    """:func:`resolve_secrets` for what the receiver relays to others (an email's addresses and
    text, a text message, a call's script): a secret that names the hosts it may be sent to cannot
    be there, as it would go on to recipients that are no host it names (an attacker's probe: the
    SMTP password, allowed to the SMTP server only, was mailed to any address). A secret that names
    no hosts may go anywhere, as everywhere.

    Raises:
        ApplicationError: Non-retryable, type ``SecretHostRefused`` (or ``SecretNotFound``), naming
            the secret, never its value.
    """
    resolved: dict[str, Secret] = {}
    token = _resolved_secrets.set(resolved)
    try:
        result = resolve_secrets(value)
    finally:
        _resolved_secrets.reset(token)
    registry = _resolved_secrets.get()
    if registry is not None:
        registry.update(resolved)  # redacted from the output and errors like any other
    for name, secret in sorted(resolved.items()):
        if secret.hosts:
            raise ApplicationError(
                f"secret {name!r} may be sent only to {', '.join(secret.hosts)}; {what} goes on to"
                " its recipients, so it may not hold it",
                type="SecretHostRefused",
                non_retryable=True,
            )
    return result


_URL_SLOT = "\ue010{}\ue011"
"""Stands for the n-th secret reference of a URL while its shape is read (:func:`resolve_url`)."""


def _escaped(value: str, characters: str) -> str:
    """``value`` with each of ``characters`` (and whitespace) percent-encoded, the rest as it is."""
    return "".join(f"%{ord(c):02X}" if c in characters or c.isspace() else c for c in value)


def resolve_url(url: str) -> str:
    """:func:`resolve_secrets` for a URL, each secret kept within the part of the URL it is
    written in (a password holding ``#`` in a query was cut there, the rest read as a fragment,
    and the part the server echoed was no form redaction knew: an attacker's probe). A secret that
    is a query parameter's value (``?key=${secret:K}``) is percent-encoded whole; one in the path
    has its ``?`` and ``#`` encoded (a webhook's ``T000/B000/XXXX`` keeps its slashes), one
    standing for query parameters (``?${secret:QS}``) its ``#``, one in the userinfo its ``@``,
    ``/``, ``?`` and ``#`` (``user:password`` keeps its colon); whitespace is encoded everywhere.
    A secret that starts the URL (a base URL kept as a secret) is written as it is; one in the
    host too, but it may not change the URL's shape there.

    Raises:
        ApplicationError: As :func:`resolve_secrets`; non-retryable ``InvalidActionInput`` for a
            secret in the host holding ``/``, ``?``, ``#``, ``@`` or whitespace.
    """
    if SECRET_REF_START not in url:
        return url
    count = [0]

    def slot(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        count[0] += 1
        return _URL_SLOT.format(count[0])

    shape = sub_references(SECRET_REF, slot, url)
    parts = urlsplit(shape)
    userinfo, _, host = parts.netloc.rpartition("@")
    escapes: dict[int, str | None] = {}  # per reference: the characters to encode (None: all)
    for n in range(1, count[0] + 1):
        mark = _URL_SLOT.format(n)
        if shape.startswith(mark) or mark in parts.fragment:
            continue
        if mark in parts.query:
            before = parts.query[: parts.query.index(mark)]
            parameter = before[max(before.rfind("&"), before.rfind(";")) + 1 :]
            escapes[n] = None if "=" in parameter else "#"
        elif mark in parts.path:
            escapes[n] = "?#"
        elif mark in userinfo:
            escapes[n] = "@/?#"
    in_host = {n for n in range(1, count[0] + 1) if _URL_SLOT.format(n) in host}
    count[0] = 0

    def value(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        count[0] += 1
        resolved: str = resolve_secrets(match.group(0))
        if count[0] in escapes:
            characters = escapes[count[0]]
            return quote(resolved, safe="") if characters is None else _escaped(resolved, characters)
        if count[0] in in_host and any(c in "/?#@" or c.isspace() for c in resolved):
            raise ApplicationError(
                f"invalid input: url: secret {match.group(2)!r} stands in the URL's host but holds a"
                " character that would change the URL there",
                type="InvalidActionInput",
                non_retryable=True,
            )
        return resolved

    return sub_references(SECRET_REF, value, url)


def tenant_setting(name: str) -> str | None:
    """A configuration value of the run's tenant (an SMTP host, a provider's base URL), read from
    the tenant's scoped secrets but not treated as a secret: not redacted from outputs and errors
    (a port ``25`` would otherwise scrub every ``25``). Credentials go through :func:`tenant_secret`.

    Returns:
        The value, or None when the tenant has no such setting.
    """
    if not _SECRET_NAME.fullmatch(name):
        raise ApplicationError(
            f"invalid setting name {name[:100]!r}", type="SecretNotFound", non_retryable=True
        )
    secret = secret_store().get(_tenant.get(), name)
    return None if secret is None else secret.value


def require_setting(name: str, action_name: str) -> str:
    """:func:`tenant_setting`, required.

    Raises:
        ApplicationError: Non-retryable, type ``ActionNotConfigured``, naming the setting and where
            it is configured.
    """
    value = tenant_setting(name)
    if value is None or not value.strip():
        tenant = _tenant.get()
        raise ApplicationError(
            f"the {action_name} action needs the setting {name} of tenant {tenant!r}, which the worker does"
            f" not have ({SECRETS_FILE_ENV}, or {SECRET_ENV_PREFIX}{name} for tenant 'default')",
            type="ActionNotConfigured",
            non_retryable=True,
        )
    return value.strip()


def tenant_secret(name: str, *, required: bool = True) -> str | None:
    """A credential of the run's tenant by name (as ``${secret:NAME}`` would resolve it): it is
    redacted from the action's output and errors, and :func:`check_secret_hosts` checks where it
    goes.

    Args:
        name: The secret's name.
        required: Without it, a missing secret is None instead of an error.

    Raises:
        ApplicationError: Non-retryable, type ``SecretNotFound``, when required and missing.
    """
    if not required and _SECRET_NAME.fullmatch(name) and secret_store().get(_tenant.get(), name) is None:
        return None
    return _lookup_secret(name)


def check_secret_hosts(host: str) -> None:
    """Refuses to send the secrets resolved so far in this action to a host they do not name.

    Raises:
        ApplicationError: Non-retryable, type ``SecretHostRefused``, naming the secret and the host.
    """
    for name, secret in sorted((_resolved_secrets.get() or {}).items()):
        if not secret.allows_host(host):
            raise ApplicationError(
                f"secret {name!r} may not be sent to {host!r} (allowed: {', '.join(secret.hosts)})",
                type="SecretHostRefused",
                non_retryable=True,
            )


def check_tenant_scope(tenant: str) -> None:
    """Refuses to act for ``tenant`` unless it belongs to the namespace this activity runs in and
    this worker serves it (the worker's :class:`~activities.secrets.TenantScope`).

    A run's tenant is whatever its starter claimed; the namespace is where the server's
    authorization let the starter act. Checked before anything is resolved or sent.

    Raises:
        ApplicationError: Non-retryable, type ``TenantRefused``, naming the tenant and the namespace.
    """
    scope = tenant_scope()
    if scope is None:
        return
    reason = scope.refusal(tenant, activity.info().namespace)
    if reason is not None:
        raise ApplicationError(f"refused: {reason}", type="TenantRefused", non_retryable=True)


def _resolved_values() -> dict[str, str]:
    return {name: secret.value for name, secret in (_resolved_secrets.get() or {}).items()}


def _redact_str(text: str, secrets: dict[str, str]) -> str:
    # Every encoded form a server may echo back, longest first so a form that contains another is
    # replaced whole.
    forms = sorted(
        ((form, name) for name, value in secrets.items() for form in encoded_forms(value)),
        key=lambda item: len(item[0]),
        reverse=True,
    )
    for form, name in forms:
        if form in text:
            text = text.replace(form, f"[REDACTED:{name}]")
    return text


def redact_secrets(value: Any, secrets: dict[str, str] | None = None) -> Any:
    """Replace resolved secret values, in every encoded form, with ``[REDACTED:NAME]``.

    Args:
        value: Any value; strings inside dicts (keys and values), lists and tuples are scrubbed.
        secrets: ``name -> value`` to scrub; defaults to those resolved in the current action.

    Returns:
        A scrubbed copy of ``value`` (``value`` itself when there is nothing to scrub).
    """
    if secrets is None:
        secrets = _resolved_values()
    if not secrets:
        return value
    if isinstance(value, str):
        return _redact_str(value, secrets)
    if isinstance(value, dict):
        return {redact_secrets(k, secrets): redact_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_secrets(v, secrets) for v in value)
    return value


def _chain_leaks(error: BaseException | None, secrets: dict[str, str]) -> bool:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if any(form in text for value in secrets.values() for form in encoded_forms(value)):
            return True
        error = error.__cause__ or error.__context__
    return False


def bound_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, saying how many characters were left out."""
    if len(text) <= limit // 4 or len(text.encode("utf-8")) <= limit:
        return text
    kept = text.encode("utf-8")[: max(limit - 40, 0)].decode("utf-8", errors="ignore")
    return f"{kept}… ({len(text) - len(kept)} more characters)"


def bound_details(details: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    """Failure details within about ``limit`` bytes of JSON.

    An entry that does not fit in what is left has its long strings cut first (an object keeps its
    keys: an HTTP error keeps its status and headers, its body shortened); if that is not enough it
    is replaced by ``{"truncated": true, "bytes": n, "preview": "..."}``.
    """
    bounded: list[Any] = []
    left = limit
    for entry in details:
        kept, size = _fit(entry, left)
        bounded.append(kept)
        left = max(left - size, 0)
    return tuple(bounded)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str, ensure_ascii=False).encode("utf-8"))


def _fit(entry: Any, budget: int) -> tuple[Any, int]:
    try:
        size = _json_size(entry)
    except (TypeError, ValueError, RecursionError):
        entry = {"unserialisable": bound_text(repr(entry), 128)}
        size = _json_size(entry)
    if size <= budget:
        return entry, size
    if isinstance(entry, dict) and all(isinstance(key, str) for key in entry):
        overhead = _json_size({key: "" if isinstance(value, str) else value for key, value in entry.items()})
        strings = [key for key, value in entry.items() if isinstance(value, str)]
        if strings and overhead < budget:
            share = (budget - overhead) // len(strings)
            shrunk = {
                key: bound_text(value, share) if isinstance(value, str) else value
                for key, value in entry.items()
            }
            shrunk_size = _json_size(shrunk)
            if shrunk_size <= budget:
                return shrunk, shrunk_size
    preview = bound_text(json.dumps(entry, default=str, ensure_ascii=False), max(min(128, budget - 60), 0))
    truncated = {"truncated": True, "bytes": size, "preview": preview}
    return truncated, _json_size(truncated)


def _cause_summary(cause: BaseException | None) -> ApplicationError | None:
    """The cause as its type and bounded message only: its stack trace and its own causes (an
    HTTP library's chain of a few exceptions) would push the failure past the server's limit."""
    if cause is None:
        return None
    message = bound_text(str(cause) or type(cause).__name__, MAX_CAUSE_MESSAGE_BYTES)
    return ApplicationError(message, type=type(cause).__name__)


def _coerce_request(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], ActionRequest]:
    if not args:
        raise ApplicationError(
            "action called without an ActionRequest", type="InvalidActionRequest", non_retryable=True
        )
    raw = args[-1]
    if isinstance(raw, ActionRequest):
        return args, raw
    # A client without the pydantic data converter hands over a plain dict.
    try:
        request = ActionRequest.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "<root>" for err in exc.errors())
        raise ApplicationError(
            f"malformed ActionRequest (fields: {fields})",
            type="InvalidActionRequest",
            non_retryable=True,
        ) from None
    return (*args[:-1], request), request


def _to_application_error(
    error: Exception, request: ActionRequest, attempt: int, secrets: dict[str, str]
) -> ApplicationError:
    if isinstance(error, ApplicationError):
        error_type = error.type or type(error).__name__
        message = error.message
        details: tuple[Any, ...] = tuple(error.details)
        non_retryable = error.non_retryable
        next_retry_delay = error.next_retry_delay
        category = error.category
    else:
        error_type = type(error).__name__
        message = str(error) or error_type
        details = ()
        non_retryable = False
        next_retry_delay = None
        category = ApplicationErrorCategory.UNSPECIFIED
    if next_retry_delay is None and not non_retryable and request.retry_mode == RetryMode.LINEAR:
        next_retry_delay = timedelta(
            seconds=linear_delay_s(attempt, request.initial_interval_s, request.maximum_interval_s)
        )
    return ApplicationError(
        bound_text(_redact_str(message, secrets) if secrets else message, MAX_FAILURE_MESSAGE_BYTES),
        *bound_details(redact_secrets(details, secrets), MAX_FAILURE_DETAILS_BYTES),
        {"attempt": attempt},
        type=error_type,
        non_retryable=non_retryable,
        next_retry_delay=next_retry_delay,
        category=category,
    )


def holds_lone_surrogate(value: Any) -> bool:
    """Whether a string (or key) in ``value`` holds a lone UTF-16 surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()  # what the converter does with it
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def action(
    name: str,
) -> Callable[[Callable[P, Awaitable[Any]]], Callable[P, Coroutine[Any, Any, ActionResult]]]:
    """Turn an action implementation into the Temporal activity ``name``.

    The implementation takes the :class:`ActionRequest` as its last positional parameter (a method
    may take ``self`` first) and returns the action's JSON-compatible output. The resulting activity
    returns ``ActionResult(output=..., attempt=activity.info().attempt)``.

    Any exception other than cancellation is re-raised as an :class:`ApplicationError` that keeps
    the original error type (the ``ApplicationError.type``, else the exception class name, so
    ``RetryPolicy.non_retryable_error_types`` can match it), ``non_retryable``, the message,
    ``next_retry_delay`` and existing details, plus one more details entry ``{"attempt": n}``. Under
    the ``linear`` retry preset a retryable error without an explicit ``next_retry_delay`` gets
    ``initial * attempt`` (capped) as its next delay. Secret values resolved with
    :func:`resolve_secrets` are redacted from the output, the message and the details.

    Args:
        name: Activity (and action) name used by workflow definitions.

    Returns:
        A decorator producing the activity function.
    """

    def decorate(impl: Callable[P, Awaitable[Any]]) -> Callable[P, Coroutine[Any, Any, ActionResult]]:
        @functools.wraps(impl)
        async def run_action(*args: P.args, **kwargs: P.kwargs) -> ActionResult:
            token = _resolved_secrets.set({})
            tenant_token = None
            try:
                attempt = activity.info().attempt
                call_args, request = _coerce_request(tuple(args))
                check_tenant_scope(request.tenant)
                tenant_token = _tenant.set(request.tenant)
                try:
                    async with _heartbeating():
                        output = await impl(*call_args, **kwargs)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    secrets = _resolved_values()
                    converted = _to_application_error(exc, request, attempt, secrets)
                    cause = exc.__cause__ if isinstance(exc, ApplicationError) else exc
                    if _chain_leaks(cause, secrets):
                        # The failure converter serialises the cause chain into history too.
                        raise converted from None
                    raise converted from _cause_summary(cause)
                output = redact_secrets(_as_written(output))
                size = json_size(output, ACTION_OUTPUT_BUDGET)
                if ACTION_OUTPUT_BUDGET // JSON_ESCAPE_EXPANSION < size <= ACTION_OUTPUT_BUDGET:
                    # What lands in history is the output as written, escapes and all (a control
                    # character is six bytes, ``\u0001``): the budget bounds that, which the run's
                    # history guard counts on (found by a review: 250,000 such characters passed
                    # the count above and took 1.5 MB of history).
                    size = _written_size(output)
                if size > ACTION_OUTPUT_BUDGET:
                    raise ApplicationError(
                        f"the output of {name!r} is over {size} bytes, more than the budget of"
                        f" {ACTION_OUTPUT_BUDGET} bytes for one action's output",
                        {"attempt": attempt},
                        type="ActionOutputTooLarge",
                        non_retryable=True,
                    )
                if json_depth(output) > VALUE_MAX_DEPTH:
                    # Nested past what the run can read back (an HTTP answer like [[[[...]]]]): the
                    # workflow failed to decode the result, its task again on every retry.
                    raise ApplicationError(
                        f"the output of {name!r} nests lists and objects more than {VALUE_MAX_DEPTH}"
                        " levels deep, more than a run keeps",
                        {"attempt": attempt},
                        type="ActionOutputTooDeep",
                        non_retryable=True,
                    )
                if holds_lone_surrogate(output):
                    # No UTF-8 writes it: the result failed to serialise, in words no one could
                    # act on (PydanticSerializationError), and the call was made again.
                    raise ApplicationError(
                        f"the output of {name!r} holds a lone surrogate character (text no UTF-8"
                        " can encode, as a JSON escape like \\ud800 alone makes it): a run cannot keep it",
                        {"attempt": attempt},
                        type="ActionOutputUnreadable",
                        non_retryable=True,
                    )
                return ActionResult(output=output, attempt=attempt)
            finally:
                if tenant_token is not None:
                    _tenant.reset(tenant_token)
                _resolved_secrets.reset(token)

        # Temporal reads the result type from the hints and the parameters from the signature.
        signature = inspect.signature(impl)
        run_action.__signature__ = signature.replace(  # type: ignore[attr-defined]
            return_annotation=ActionResult
        )
        run_action.__annotations__ = {**impl.__annotations__, "return": ActionResult}
        return activity.defn(name=name)(run_action)

    return decorate


HEARTBEAT_EVERY_MAX_S = 10.0
"""The longest gap between two heartbeats of an action whose step declares ``heartbeat``."""

HEARTBEAT_SEND_EVERY_MAX = timedelta(seconds=3)
"""The worker's cap on how long the SDK holds a heartbeat back (``max_heartbeat_throttle_interval``,
60 s by default). The SDK sends at most one heartbeat per 80% of the step's heartbeat timeout: for
a 10 s timeout, one every 8 s, leaving 2 s for the worker's loop, the SDK and the server to carry
it. On a busy machine that was not enough: the server timed out a live ``http`` call and the retry
sent the POST again (a CI run beside a CPU burner). Capped at 3 s, the heartbeats :func:`_heartbeating`
asks for (every third of the timeout, at most every :data:`HEARTBEAT_EVERY_MAX_S`) leave as asked
for timeouts of 9 s or more, so each has two thirds of the timeout to arrive; a shorter timeout
keeps at least its 20%."""


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeats for the action while it runs, when its step declares a ``heartbeat`` timeout.

    Only ``echo`` heartbeats by itself. Without this, an ``http`` call (or any other action) that
    ran longer than the heartbeat timeout was timed out by Temporal on every attempt, though its
    worker was alive, and retried: its receiver got the request again (found by a review). The
    heartbeats say what the timeout asks: the worker running the action is alive; a worker that
    dies stops them and the attempt is retried within the timeout. They also bring a cancellation
    of the step to the action, as Temporal delivers it with a heartbeat's answer. The SDK sends at
    most one heartbeat per 80% of the timeout or per :data:`HEARTBEAT_SEND_EVERY_MAX` (the
    product's worker's cap), whichever is shorter; this asks for one every third of the timeout, at
    most every :data:`HEARTBEAT_EVERY_MAX_S`.
    """
    timeout = activity.info().heartbeat_timeout
    if timeout is None or timeout <= timedelta(0):
        yield
        return
    every = min(max(timeout.total_seconds() / 3, 0.1), HEARTBEAT_EVERY_MAX_S)

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    beating = asyncio.create_task(beat(), name="wfa-action-heartbeat")
    try:
        yield
    finally:
        beating.cancel()  # not awaited: waiting here could swallow a cancellation of the action


def invalid_input(action_name: str, data: dict[str, Any], exc: ValidationError) -> ApplicationError:
    """The refusal of an action's rendered input (``InvalidActionInput``, permanent), naming each
    field and its problem, never the values (they may be large or sensitive)."""
    problems = input_problems(data, exc)
    summary = "; ".join(f"{p['field']}: {p['error']}" for p in problems)
    return ApplicationError(
        f"invalid {action_name} input: {summary}", problems, type="InvalidActionInput", non_retryable=True
    )
