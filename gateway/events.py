"""``POST /events``: a tenant's services publish business events.

The tenant comes from the credentials, never from the body: ``Authorization: Bearer <API key>``
(``wfa keys api create --tenant T``; :mod:`gateway.apikeys`). The body is strict JSON::

    {"type": "family.answered", "key": "family-123", "data": {"answer": "yes"}, "id": "evt-42"}

``type`` is an event type (as in definitions), ``key`` the correlation key, ``data`` a JSON object
(inert data: it is never a template or a secret reference; the mailbox and the runs it starts
make it inert where it enters them, so it is handed on as it came), ``id`` the event's id, which makes a
resent event a duplicate (a run receives each event id at most once). It is handed to
``FlowClient.publish_event`` (:mod:`starter.events`), which delivers it to the runs waiting on it and starts the runs of
event triggers.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ApiError
from gateway.jsonbody import check_content_type, parse_object
from gateway.state import GatewayState, UnknownTenantError
from interpreter.model import EVENT_TYPE_PATTERN

__all__ = ["EventIn", "router"]

log = logging.getLogger("gateway.events")

router = APIRouter(tags=["events"])


class EventIn(BaseModel):
    """An event as posted to ``/events``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Annotated[str, Field(pattern=EVENT_TYPE_PATTERN)]
    key: Annotated[str, Field(min_length=1, max_length=200)]
    data: dict[str, Any] = Field(default_factory=dict)
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$")]


def _bearer(request: Request) -> str:
    if len(request.headers.getlist("authorization")) > 1:  # the first one won (a probe): which?
        raise ApiError(401, "unauthorized", "send one Authorization header, not several")
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer <key>)")
    scheme, _, value = header.partition(" ")
    value = value.strip(" \t")  # HTTP's whitespace only: str.strip() took a key ending in U+00A0 (a probe)
    if scheme.lower() != "bearer" or not value:
        raise ApiError(401, "unauthorized", "use Authorization: Bearer <key>")
    return value


def _path(loc: tuple[int | str, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


@router.post(
    "/events",
    summary="Publish an event of the caller's tenant",
    status_code=202,
    responses={
        400: {"description": "Not strict JSON (a lone surrogate escape among others), not an object"},
        401: {"description": "Missing, unknown or revoked API key"},
        413: {"description": "Body too large, too deep, or a number too long"},
        415: {"description": "Not application/json"},
        422: {"description": "Not an event (the JSON path of each problem), or data holding a NUL"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EventIn.model_json_schema()}},
        }
    },
)
async def publish(request: Request) -> JSONResponse:
    """Authenticates the caller, validates the event and publishes it in the caller's tenant."""
    from gateway.apikeys import authenticate
    from starter.errors import InvalidInputError, NoWorkerError

    state: GatewayState = request.app.state.gateway
    config = state.config
    key = _bearer(request)
    tenant = await authenticate((await state.database()).session_factory, key)
    if tenant is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    check_content_type(request.headers.get("content-type"))
    body = parse_object(
        await request.body(), max_depth=config.max_json_depth, max_digits=config.max_number_digits
    )
    try:
        event = EventIn.model_validate(body)
    except ValidationError as err:
        problems = [{"path": _path(e["loc"]), "message": e["msg"]} for e in err.errors()[:20]]
        raise ApiError(
            422,
            "invalid_event",
            "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5]),
            problems=problems,
        ) from None
    try:
        flows = await state.client(tenant)
    except UnknownTenantError:
        raise ApiError(403, "forbidden", f"tenant {tenant} is not served by this gateway") from None
    try:
        published = await flows.publish_event(
            event.type, event.key, event.data, event_id=event.id, source="gateway"
        )
    except InvalidInputError as err:  # e.g. data over the event size limit
        raise ApiError(422, "invalid_event", str(err)[:1000]) from None
    except NoWorkerError:
        raise ApiError(503, "unavailable", "no worker took the event in time; send it again") from None
    log.info("tenant %s published %s key=%s id=%s", tenant, event.type, event.key, event.id)
    answer: dict[str, Any] = {"accepted": True, "tenant": tenant, "id": event.id}
    if isinstance(published, BaseModel):
        answer["result"] = published.model_dump(mode="json")
    return JSONResponse(answer, status_code=202)
