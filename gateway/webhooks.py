"""Webhook triggers: ``POST /hooks/{tenant}/{definition}/{trigger_id}``.

A delivery starts a run of the definition's active version when that version declares a
``webhook`` trigger with this id and the delivery proves its sender:

* ``standard_webhooks`` (https://www.standardwebhooks.com): ``webhook-id``, ``webhook-timestamp``
  and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, several separated
  by spaces while a secret rotates). The timestamp must lie within the trigger's ``replay_window``
  of the gateway's clock; the signed ``webhook-id`` is the delivery id.
* ``hmac_sha256``: the hex HMAC-SHA256 of the body in the trigger's ``header`` (``sha256=`` prefix
  accepted, GitHub-style). Only the body is signed, so the delivery id is a hash of it (or, when
  the gateway is configured with ``hmac_delivery_header``, that header's value).

The secret is the tenant's scoped secret the trigger names (:mod:`activities.secrets`). Signatures
are compared in constant time. The delivery id becomes the workflow id
(:func:`delivery_workflow_id`: ``webhook-{tenant}-{definition}-{trigger}-{delivery}-{digest}``, the
digest that of the four exact parts), started with the reuse policy ``REJECT_DUPLICATE``: a
redelivery, while the run goes on or after it ended however it ended, starts nothing and is
answered ``200`` with ``"duplicate": true``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook
from temporalio.common import WorkflowIDReusePolicy

from gateway.errors import ApiError
from gateway.jsonbody import check_content_type, parse_object
from gateway.state import GatewayState, UnknownTenantError
from interpreter.durations import parse_duration
from interpreter.events import parts_digest
from interpreter.model import Definition, WebhookSignature, WebhookTrigger

__all__ = ["delivery_workflow_id", "find_webhook_trigger", "router", "verify_signature"]

log = logging.getLogger("gateway.webhooks")

router = APIRouter(tags=["webhooks"])

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_NOT_FOUND = "no webhook trigger at this address"
_DEFINITION_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


def delivery_workflow_id(tenant: str, definition: str, trigger_id: str, delivery_id: str) -> str:
    """The workflow id of a delivery: ``webhook-{tenant}-{definition}-{trigger}-{delivery}-{digest}``.

    The digest (the first 32 hex digits of the SHA-256 of the JSON array of the four parts) tells
    deliveries apart; the rest is there to be read (the Web UI, search), the delivery id only when it
    is short and plain (``A-Za-z0-9_.:-``, at most 100 characters). Before (``hook-`` and the parts
    joined with ``-``), parts holding ``-`` made one id: definition ``cX`` trigger ``form-a`` and
    definition ``cX-form`` trigger ``a`` with the same delivery id, and the second delivery was
    answered as a duplicate of the other definition's run and started nothing (across tenants too,
    in a namespace they share; found by an attacker's probe). The prefix differs from the old one,
    so no old id, whose delivery part a sender chooses, is one of these.
    """
    shown = f"{delivery_id}-" if _SAFE_ID.fullmatch(delivery_id) else ""
    return f"webhook-{tenant}-{definition}-{trigger_id}-{shown}{parts_digest(tenant, definition, trigger_id, delivery_id)}"


async def find_webhook_trigger(
    state: GatewayState, tenant: str, name: str, trigger_id: str
) -> tuple[Definition, WebhookTrigger] | None:
    """The active version of ``name`` in ``tenant`` and its live webhook trigger ``trigger_id``.

    The live triggers are those the active version declares (:func:`starter.triggers.live_triggers`).
    Unknown and malformed names and versions without that trigger are all None: the caller answers
    404 without telling which.
    """
    from activities.store.repository import DefinitionStore
    from starter.triggers import live_triggers_in

    if not _DEFINITION_NAME.match(name):
        return None
    store = DefinitionStore((await state.database()).session_factory, tenant)
    for live in await live_triggers_in(store, "webhook", name):
        if isinstance(live.trigger, WebhookTrigger) and live.trigger.id == trigger_id:
            return live.resolved.definition, live.trigger
    return None


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "invalid_signature", detail)


def verify_signature(
    trigger: WebhookTrigger,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    hmac_delivery_header: str | None = None,
) -> str:
    """Checks a delivery's signature and returns its delivery id.

    Args:
        trigger: The webhook trigger (its scheme, header and replay window).
        secret: The trigger's secret (for Standard Webhooks, ``whsec_<base64>`` or base64).
        body: The raw body, exactly as received.
        headers: The request headers (case-insensitive mapping).
        now: The current time (seconds since the epoch); default the clock.
        hmac_delivery_header: See :class:`~gateway.config.GatewayConfig`.

    Raises:
        ApiError: 401 for a missing, malformed or wrong signature, a timestamp outside the
            replay window, or a header the check reads sent more than once.
    """
    named = (
        ("webhook-id", "webhook-timestamp", "webhook-signature")
        if trigger.signature == WebhookSignature.STANDARD_WEBHOOKS
        else (trigger.header, *((hmac_delivery_header,) if hmac_delivery_header else ()))
    )
    _refuse_repeated(headers, named)
    if trigger.signature == WebhookSignature.STANDARD_WEBHOOKS:
        return _verify_standard(trigger, secret, body, headers, time.time() if now is None else now)
    return _verify_hmac(trigger, secret, body, headers, hmac_delivery_header)


def _refuse_repeated(headers: Mapping[str, str], names: Sequence[str]) -> None:
    """A 401 when a header the verification reads comes more than once (found by a probe: the
    first was read, while a proxy before the gateway may read, log or strip the other one)."""
    getlist = getattr(headers, "getlist", None)
    if getlist is None:  # a plain mapping (the tests, a caller's dict) holds each name once
        return
    for name in names:
        if len(getlist(name)) > 1:
            raise _unauthorized(f"the {name} header is sent more than once")


def _verify_standard(
    trigger: WebhookTrigger, secret: str, body: bytes, headers: Mapping[str, str], now: float
) -> str:
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise _unauthorized("webhook-id, webhook-timestamp and webhook-signature headers are required")
    if len(msg_id) > 256 or len(signatures) > 4096:
        raise _unauthorized("webhook headers too long")
    # ASCII digits only: headers arrive as Latin-1, and '²' is a digit to str.isdigit() that int()
    # refuses (found by an attacker's probe: an unauthenticated 500).
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise _unauthorized("webhook-timestamp is not a Unix timestamp in seconds")
    # The package's own check has a fixed 5-minute tolerance: the trigger's window is checked here,
    # and the signature computed by the package's signer.
    window = parse_duration(trigger.replay_window).total_seconds()
    if abs(now - int(stamp)) > window:
        raise _unauthorized(f"webhook-timestamp is outside the replay window ({trigger.replay_window})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8") from None
    try:
        signer = Webhook(secret)
    except Exception:  # a misconfigured secret: the operator's problem, logged, never echoed
        log.warning("webhook secret %r of trigger %r is not base64", trigger.secret, trigger.id)
        raise _unauthorized("the signature cannot be verified") from None
    expected = base64.b64decode(
        signer.sign(msg_id, datetime.fromtimestamp(int(stamp), tz=UTC), text).split(",", 1)[1]
    )
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version != "v1" or not value:
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except ValueError:
            continue
        if hmac.compare_digest(expected, given):
            return msg_id
    raise _unauthorized("no matching signature")


def _verify_hmac(
    trigger: WebhookTrigger,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    delivery_header: str | None,
) -> str:
    given = headers.get(trigger.header)
    if not given:
        raise _unauthorized(f"the {trigger.header} header is required")
    given = given.strip()
    if given.lower().startswith("sha256="):
        given = given[len("sha256=") :]
    if not _HEX.match(given):
        raise _unauthorized(f"{trigger.header} is not a hex HMAC-SHA256")
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise _unauthorized("no matching signature")
    if delivery_header:
        delivery = headers.get(delivery_header)
        if delivery:
            return delivery
    return "body-" + hashlib.sha256(body).hexdigest()


def _invalid_input(problems: Sequence[Any]) -> ApiError:
    listed = [{"path": p.path, "message": p.message} for p in problems]
    return ApiError(
        422,
        "invalid_input",
        "; ".join(f"{p['path']}: {p['message']}" for p in listed[:5]),
        problems=listed,
    )


@router.post(
    "/hooks/{tenant}/{definition}/{trigger_id}",
    summary="Deliver a signed webhook: starts one run per delivery id",
    status_code=202,
    responses={
        200: {"description": "A redelivery: nothing new started (`duplicate: true`)"},
        400: {"description": "Not strict JSON (a lone surrogate escape among others), not an object"},
        401: {"description": "Missing, wrong or expired signature"},
        404: {"description": "No such tenant, definition or webhook trigger"},
        413: {"description": "Body too large, too deep, or a number too long"},
        415: {"description": "Not application/json"},
        422: {"description": "The input does not match the definition's input_schema, or holds a NUL"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def deliver(tenant: str, definition: str, trigger_id: str, request: Request) -> JSONResponse:
    """Verifies a delivery and starts a run of the definition's active version with its body."""
    from activities.secrets import secret_store
    from starter.errors import InvalidInputError, InvalidRunInputError, RunAlreadyExistsError

    state: GatewayState = request.app.state.gateway
    config = state.config
    if tenant not in config.tenants:
        raise ApiError(404, "not_found", _NOT_FOUND)
    check_content_type(request.headers.get("content-type"))
    body = await request.body()
    found = await find_webhook_trigger(state, tenant, definition, trigger_id)
    if found is None:
        raise ApiError(404, "not_found", _NOT_FOUND)
    parsed, trigger = found
    secret = secret_store().get(tenant, trigger.secret)
    if secret is None or not secret.value:
        log.warning(
            "tenant %s has no secret %r for webhook %s/%s", tenant, trigger.secret, definition, trigger_id
        )
        raise _unauthorized("the signature cannot be verified")
    delivery = verify_signature(
        trigger, secret.value, body, request.headers, hmac_delivery_header=config.hmac_delivery_header
    )
    data = parse_object(body, max_depth=config.max_json_depth, max_digits=config.max_number_digits)
    workflow_id = delivery_workflow_id(tenant, definition, trigger_id, delivery)
    try:
        flows = await state.client(tenant)
    except UnknownTenantError:
        raise ApiError(404, "not_found", _NOT_FOUND) from None
    try:
        run = await flows.start_run(
            f"{parsed.name}@{parsed.version}",
            data,  # inert: the run escapes its input where it starts (interpreter/inert.py)
            workflow_id=workflow_id,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except RunAlreadyExistsError:
        return JSONResponse({"workflow_id": workflow_id, "duplicate": True}, status_code=200)
    except InvalidRunInputError as err:  # the client checks it, in a process of its own
        raise _invalid_input(err.problems) from None
    except InvalidInputError as err:  # data no run can keep (a NUL character), named by its path
        raise ApiError(422, "invalid_input", str(err)[:1000]) from None
    if not run.started:
        return JSONResponse(
            {"workflow_id": workflow_id, "run_id": run.run_id, "duplicate": True}, status_code=200
        )
    log.info("webhook %s/%s/%s started %s", tenant, definition, trigger_id, workflow_id)
    return JSONResponse(
        {"workflow_id": workflow_id, "run_id": run.run_id, "duplicate": False, "version": run.version},
        status_code=202,
    )
