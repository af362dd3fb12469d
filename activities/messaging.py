"""The ``sms``, ``call``, ``sms_status`` and ``call_status`` actions: a Twilio-shaped messaging API
over HTTP.

The request shapes are Twilio's (API version 2010-04-01), so pointing the actions at Twilio is
configuration: ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` (form fields ``To``,
``From``, ``Body``, ``StatusCallback``), ``.../Calls.json`` (``To``, ``From``, ``Twiml`` or
``Url``), ``GET .../Messages/{sid}.json`` and ``GET .../Calls/{sid}.json``, with HTTP basic auth
``AccountSid:AuthToken``.

Configuration is the tenant's, from its scoped secrets (``<account>`` is the step's ``account``
input, default ``TWILIO``): ``<account>_BASE_URL`` (default ``https://api.twilio.com``),
``<account>_ACCOUNT_SID``, ``<account>_AUTH_TOKEN`` (a secret: redacted, its ``hosts`` restriction
checked against the base URL's host) and ``<account>_FROM`` (default sender number).

Every request carries the step's idempotency key in ``I-Twilio-Idempotency-Token`` and
``Idempotency-Key``: the same on every attempt of a step, so a provider (or a proxy in front of it)
that honours it sends a retried message once. Requests go through the worker's HTTP client, so the
outbound policy applies.

Classification (error ``type``):

===================================  ==========  ======================================
Situation                            Retryable   Type
===================================  ==========  ======================================
input fails validation               no          ``InvalidActionInput``
setting missing                      no          ``ActionNotConfigured``
auth token missing                   no          ``SecretNotFound``
token not for this host              no          ``SecretHostRefused``
outbound policy refuses the host     no          ``OutboundRefused``
429                                  yes         ``MessagingRateLimited`` (``Retry-After``)
5xx                                  yes         ``MessagingServerError``
401, 403                             no          ``MessagingAuthenticationFailed``
other 4xx                            no          ``MessagingRejected`` (provider code, message)
timed out                            yes         ``MessagingTimeout``
could not connect                    yes         ``MessagingConnectError``
2xx without a sid                    no          ``MessagingBadResponse``
===================================  ==========  ======================================
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ValidationError
from temporalio.exceptions import ApplicationError

from activities.base import (
    action,
    check_secret_hosts,
    invalid_input,
    require_setting,
    resolve_relayed,
    tenant_secret,
    tenant_setting,
)
from activities.http import _read_prefix, _retry_after, strict_json
from activities.outbound import OutboundRefusedError
from interpreter.actions import (
    ActionInput,
    ActionRequest,
    CallInput,
    CallStatusInput,
    CallStatusResult,
    MessageResult,
    SmsInput,
    SmsStatusInput,
    parse_action_input,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "MessagingActions",
    "idempotency_token",
    "provider_request",
]

DEFAULT_BASE_URL = "https://api.twilio.com"
"""Where the actions send requests when the tenant has no ``<account>_BASE_URL``."""

API_VERSION = "2010-04-01"
MAX_RESPONSE_BYTES = 64 * 1024
"""Most of a provider's answer read (the output keeps only a few fields of it)."""

_SID = re.compile(r"[A-Za-z0-9]{2,64}")


def idempotency_token(idempotency_key: str) -> str:
    """The step's idempotency key as a header value: as it is when it is short printable ASCII,
    else ``sha256:<hex>`` of it (the same for every attempt either way)."""
    if len(idempotency_key) <= 200 and all(32 < ord(c) < 127 for c in idempotency_key):
        return idempotency_key
    return "sha256:" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()


def _parse(model: type[Any], action_name: str, request: ActionRequest) -> Any:
    try:
        # Secret references in the definition's text are resolved, but not one that names hosts:
        # the provider relays the message (or fetches the call's url). Data's escaped
        # ``$${secret:`` becomes the literal text.
        return parse_action_input(model, resolve_relayed(request.input, f"the {action_name} step's input"))
    except ValidationError as exc:
        raise invalid_input(action_name, request.input, exc) from None


def _body(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return strict_json(text) if text.strip() else None
    except (ValueError, RecursionError):  # RecursionError: [[[[... (a probe: a retried send)
        return text


async def provider_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    prefix: str,
    what: str,
    timeout_s: float,
    **options: Any,
) -> tuple[int, Any]:
    """One request to a provider, failures classified with error types named ``<prefix>...``.

    Returns:
        ``(status, parsed body)`` of a 2xx answer (JSON, else text, at most 64 KiB read).

    Raises:
        ApplicationError: ``<prefix>RateLimited`` (429, 408) and ``<prefix>ServerError`` (5xx),
            ``<prefix>Timeout`` and ``<prefix>ConnectError`` retryable;
            ``<prefix>AuthenticationFailed`` (401, 403), ``<prefix>Rejected`` (other 4xx, with the
            provider's ``code`` and ``message``) and ``OutboundRefused`` permanent.
    """
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(method, url, timeout=httpx.Timeout(timeout_s), **options) as response:
                raw = await _read_prefix(response, MAX_RESPONSE_BYTES)
    except OutboundRefusedError as exc:
        raise exc.application_error(what) from None
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ApplicationError(f"{what} timed out after {timeout_s:g}s", type=f"{prefix}Timeout") from exc
    except httpx.ConnectError as exc:
        raise ApplicationError(f"{what} could not connect: {exc}", type=f"{prefix}ConnectError") from exc
    except httpx.TransportError as exc:
        raise ApplicationError(
            f"{what} failed: {type(exc).__name__}: {exc}", type=f"{prefix}ConnectError"
        ) from exc
    status = response.status_code
    body = _body(raw)
    if 200 <= status < 300:
        return status, body
    code = body.get("code") if isinstance(body, dict) else None
    text = body.get("message") if isinstance(body, dict) else None
    if text is None:  # not the provider's error shape: show what the receiver said
        text = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
    shown = str(text)[:500]
    details = {"status_code": status, "code": code, "message": shown}
    if isinstance(body, dict) and isinstance(body.get("more_info"), str):
        details["more_info"] = body["more_info"][:200]
    said = f"{status}" + (f" (code {code})" if code is not None else "") + (f": {shown}" if shown else "")
    if status in (408, 429):
        raise ApplicationError(
            f"{what} was rate limited: {said}",
            details,
            type=f"{prefix}RateLimited",
            next_retry_delay=_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:
        raise ApplicationError(
            f"{what} failed on the provider's side: {said}",
            details,
            type=f"{prefix}ServerError",
            next_retry_delay=_retry_after(response.headers.get("retry-after")),
        )
    if status in (401, 403):
        raise ApplicationError(
            f"{what} was refused the credentials: {said}",
            details,
            type=f"{prefix}AuthenticationFailed",
            non_retryable=True,
        )
    raise ApplicationError(
        f"{what} was rejected: {said}", details, type=f"{prefix}Rejected", non_retryable=True
    )


class _Provider(BaseModel):
    base_url: str
    account_sid: str
    auth_token: str
    sender: str | None


def _provider(account: str) -> _Provider:
    base = (tenant_setting(f"{account}_BASE_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname:
        raise ApplicationError(
            f"setting {account}_BASE_URL is not an http(s) URL",
            type="ActionNotConfigured",
            non_retryable=True,
        )
    sid = require_setting(f"{account}_ACCOUNT_SID", "messaging")
    if not _SID.fullmatch(sid):
        raise ApplicationError(
            f"setting {account}_ACCOUNT_SID is not an account id",
            type="ActionNotConfigured",
            non_retryable=True,
        )
    token = tenant_secret(f"{account}_AUTH_TOKEN") or ""
    check_secret_hosts(urlsplit(base).hostname or "")
    return _Provider(
        base_url=base, account_sid=sid, auth_token=token, sender=tenant_setting(f"{account}_FROM")
    )


def _result(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("sid"), str):
        raise ApplicationError(
            f"{what} answered without a sid",
            {"body": str(body)[:300]},
            type="MessagingBadResponse",
            non_retryable=True,
        )
    fields = {
        "sid": body["sid"],
        "status": body.get("status"),
        "to": body.get("to"),
        "from": body.get("from"),
        "error_code": body.get("error_code"),
        "error_message": body.get("error_message"),
    }
    shaped = {k: v if v is None or isinstance(v, str | int) else str(v) for k, v in fields.items()}
    return _provider_record(MessageResult, shaped, body, what)


def _provider_record(model: type[BaseModel], fields: dict[str, Any], body: Any, what: str) -> dict[str, Any]:
    """``fields`` of the provider's 2xx answer as ``model``'s record. An answer of other types
    (``"status": true``, ``"to": 5``) is ``MessagingBadResponse``, not retried: the provider has
    taken the message, and a retry sent it again (it was a retryable ValidationError: a probe)."""
    try:
        return model.model_validate(fields).model_dump(by_alias=True)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:3])
        raise ApplicationError(
            f"{what} answered with a record of other types ({problems})",
            {"body": str(body)[:300]},
            type="MessagingBadResponse",
            non_retryable=True,
        ) from None


def _call_result(body: Any, what: str) -> dict[str, Any]:
    _result(body, what)  # the same refusal of an answer without a sid
    duration = body.get("duration")  # Twilio sends the seconds as a string ("37"), null until the end
    try:
        seconds = None if duration is None else int(duration)
    except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity (a probe)
        seconds = None
    fields = {
        "sid": body["sid"],
        "status": body.get("status"),
        "to": body.get("to"),
        "from": body.get("from"),
        "answered_by": body.get("answered_by"),
    }
    shaped = {k: v if v is None or isinstance(v, str) else str(v) for k, v in fields.items()}
    return _provider_record(CallStatusResult, {**shaped, "duration": seconds}, body, what)


class MessagingActions:
    """The ``sms``, ``call``, ``sms_status`` and ``call_status`` activities over the worker's shared
    HTTP client.

    Args:
        client: The worker's client (built with the outbound policy), owned by the worker.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _send(
        self,
        request: ActionRequest,
        spec: ActionInput,
        resource: str,
        form: dict[str, str],
        provider: _Provider,
    ) -> dict[str, Any]:
        url = f"{provider.base_url}/{API_VERSION}/Accounts/{quote(provider.account_sid)}/{resource}.json"
        token = idempotency_token(request.idempotency_key)
        what = f"POST {resource} at {urlsplit(provider.base_url).netloc}"
        _, body = await provider_request(
            self._client,
            "POST",
            url,
            prefix="Messaging",
            what=what,
            timeout_s=float(getattr(spec, "timeout_s", 10.0)),
            data=form,
            auth=(provider.account_sid, provider.auth_token),
            headers={
                "I-Twilio-Idempotency-Token": token,
                "Idempotency-Key": token,
                "Accept": "application/json",
            },
        )
        return _result(body, what)

    @action("sms")
    async def sms(self, request: ActionRequest) -> dict[str, Any]:
        """Send a text message (:class:`SmsInput`); returns the provider's record (``sid``, ``status``).

        Raises:
            ApplicationError: Classified as in the module docstring.
        """
        spec: SmsInput = _parse(SmsInput, "sms", request)
        provider = _provider(spec.account)
        sender = spec.from_ or provider.sender
        if not sender:
            raise ApplicationError(
                f"invalid sms input: from: no sender given and the tenant has no setting {spec.account}_FROM",
                type="InvalidActionInput",
                non_retryable=True,
            )
        form = {"To": spec.to, "From": sender, "Body": spec.body}
        if spec.status_callback:
            form["StatusCallback"] = spec.status_callback
        return await self._send(request, spec, "Messages", form, provider)

    @action("call")
    async def call(self, request: ActionRequest) -> dict[str, Any]:
        """Place a phone call (:class:`CallInput`); returns the provider's record (``sid``, ``status``).

        Raises:
            ApplicationError: Classified as in the module docstring.
        """
        spec: CallInput = _parse(CallInput, "call", request)
        provider = _provider(spec.account)
        sender = spec.from_ or provider.sender
        if not sender:
            raise ApplicationError(
                f"invalid call input: from: no caller number given and the tenant has no setting {spec.account}_FROM",
                type="InvalidActionInput",
                non_retryable=True,
            )
        form = {"To": spec.to, "From": sender}
        if spec.twiml is not None:
            form["Twiml"] = spec.twiml
        if spec.url is not None:
            form["Url"] = spec.url
        if spec.status_callback:
            form["StatusCallback"] = spec.status_callback
        return await self._send(request, spec, "Calls", form, provider)

    async def _read(
        self, request: ActionRequest, spec: SmsStatusInput | CallStatusInput, resource: str
    ) -> tuple[Any, str]:
        provider = _provider(spec.account)
        url = (
            f"{provider.base_url}/{API_VERSION}/Accounts/{quote(provider.account_sid)}"
            f"/{resource}/{quote(spec.sid)}.json"
        )
        what = f"GET {resource}/{spec.sid} at {urlsplit(provider.base_url).netloc}"
        _, body = await provider_request(
            self._client,
            "GET",
            url,
            prefix="Messaging",
            what=what,
            timeout_s=spec.timeout_s,
            auth=(provider.account_sid, provider.auth_token),
            headers={
                "I-Twilio-Idempotency-Token": idempotency_token(request.idempotency_key),
                "Accept": "application/json",
            },
        )
        return body, what

    @action("sms_status")
    async def sms_status(self, request: ActionRequest) -> dict[str, Any]:
        """Read a sent message's delivery status (:class:`SmsStatusInput`).

        Raises:
            ApplicationError: Classified as in the module docstring (``MessagingRejected`` with
                the provider's 404 for an unknown sid).
        """
        spec: SmsStatusInput = _parse(SmsStatusInput, "sms_status", request)
        body, what = await self._read(request, spec, "Messages")
        return _result(body, what)

    @action("call_status")
    async def call_status(self, request: ActionRequest) -> dict[str, Any]:
        """Read a placed call's status (:class:`CallStatusInput`): ``status``, and ``duration`` in
        seconds once the call ended.

        Raises:
            ApplicationError: Classified as in the module docstring (``MessagingRejected`` with
                the provider's 404 for an unknown sid).
        """
        spec: CallStatusInput = _parse(CallStatusInput, "call_status", request)
        body, what = await self._read(request, spec, "Calls")
        return _call_result(body, what)
