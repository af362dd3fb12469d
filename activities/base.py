"""Shared plumbing for action activities: the ``action`` decorator and secret resolution.

Every action is written as a plain ``async def impl(request: ActionRequest) -> Any`` (or a method of a
class holding shared resources). :func:`action` turns it into a Temporal activity that speaks the wire
contract of :mod:`interpreter.actions` and normalises every failure into an
:class:`~temporalio.exceptions.ApplicationError` the workflow's retry policy can reason about.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import os
import re
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ParamSpec

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from interpreter.actions import ActionRequest, ActionResult, RetryMode, linear_delay_s

__all__ = [
    "MAX_FAILURE_DETAILS_BYTES",
    "MAX_FAILURE_MESSAGE_BYTES",
    "SECRET_ENV_PREFIX",
    "action",
    "bound_details",
    "bound_text",
    "redact_secrets",
    "resolve_secrets",
]

P = ParamSpec("P")

SECRET_ENV_PREFIX = "WFA_SECRET_"
"""Environment variable prefix: ``${secret:TOKEN}`` resolves to ``$WFA_SECRET_TOKEN``."""

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

_SECRET_REF = re.compile(r"\$\{secret:([^}]*)\}")
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Secret values resolved during the current action execution (name -> value), so the wrapper can
# scrub them from whatever the action returns or raises. None outside an action execution.
_resolved_secrets: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "wfa_resolved_secrets", default=None
)


def _lookup_secret(name: str) -> str:
    if not _SECRET_NAME.fullmatch(name):
        raise ApplicationError(
            f"invalid secret reference {name!r}: names must match [A-Za-z_][A-Za-z0-9_]*",
            type="SecretNotFound",
            non_retryable=True,
        )
    value = os.environ.get(SECRET_ENV_PREFIX + name)
    if value is None:
        raise ApplicationError(
            f"secret {name!r} is not configured on the worker "
            f"(environment variable {SECRET_ENV_PREFIX}{name} is not set)",
            type="SecretNotFound",
            non_retryable=True,
        )
    registry = _resolved_secrets.get()
    if registry is not None and value:
        registry[name] = value
    return value


def resolve_secrets(value: Any) -> Any:
    """Replace every ``${secret:NAME}`` reference with the worker's ``WFA_SECRET_NAME`` variable.

    References may appear anywhere inside any string of nested dicts, lists and tuples (dict keys are
    left alone). Resolved values are remembered for the current action execution so the
    :func:`action` wrapper can redact them from the result and from errors.

    Args:
        value: A JSON-like value, typically an action's input or part of it.

    Returns:
        A copy of ``value`` with all references substituted; non-string leaves are returned as is.

    Raises:
        ApplicationError: Non-retryable, type ``SecretNotFound``, when a referenced secret is not set
            or its name is malformed. The message names the secret, never a value.
    """
    if isinstance(value, str):
        if "${secret:" not in value:
            return value
        return _SECRET_REF.sub(lambda m: _lookup_secret(m.group(1)), value)
    if isinstance(value, dict):
        return {k: resolve_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve_secrets(v) for v in value)
    return value


def _redact_str(text: str, secrets: dict[str, str]) -> str:
    # Longest first so a secret that contains another is replaced whole.
    for name, secret in sorted(secrets.items(), key=lambda item: len(item[1]), reverse=True):
        if secret in text:
            text = text.replace(secret, f"[REDACTED:{name}]")
    return text


def redact_secrets(value: Any, secrets: dict[str, str] | None = None) -> Any:
    """Replace resolved secret values with ``[REDACTED:NAME]`` inside a JSON-like value.

    Args:
        value: Any value; strings inside dicts (keys and values), lists and tuples are scrubbed.
        secrets: ``name -> value`` to scrub; defaults to those resolved in the current action.

    Returns:
        A scrubbed copy of ``value`` (``value`` itself when there is nothing to scrub).
    """
    if secrets is None:
        secrets = _resolved_secrets.get() or {}
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
        if any(secret in str(error) for secret in secrets.values()):
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
            try:
                attempt = activity.info().attempt
                call_args, request = _coerce_request(tuple(args))
                try:
                    output = await impl(*call_args, **kwargs)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    secrets = _resolved_secrets.get() or {}
                    converted = _to_application_error(exc, request, attempt, secrets)
                    cause = exc.__cause__ if isinstance(exc, ApplicationError) else exc
                    if _chain_leaks(cause, secrets):
                        # The failure converter serialises the cause chain into history too.
                        raise converted from None
                    raise converted from _cause_summary(cause)
                return ActionResult(output=redact_secrets(output), attempt=attempt)
            finally:
                _resolved_secrets.reset(token)

        # Temporal reads the result type from the hints and the parameters from the signature.
        signature = inspect.signature(impl)
        run_action.__signature__ = signature.replace(  # type: ignore[attr-defined]
            return_annotation=ActionResult
        )
        run_action.__annotations__ = {**impl.__annotations__, "return": ActionResult}
        return activity.defn(name=name)(run_action)

    return decorate
