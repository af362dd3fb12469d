"""Publishing business events: :meth:`starter.client.FlowClient.publish_event` and ``wfa events send``.

Publishing one event does two things, each idempotent on the event id, so a publisher that is not
sure its call went through publishes again with the same id:

1. It delivers the event to the mailbox of its tenant, type and correlation key (Update-With-Start:
   the mailbox starts if need be, see :mod:`workflows.mailbox`), which signals every run waiting on
   that key and keeps the event for waits that start later within their lookback. The mailbox
   refuses an id it has seen (``duplicate``).
2. It starts a run of every definition whose active version declares an ``event`` trigger of that
   type, with the event's data as the run input (inert). The workflow id is derived from the
   tenant, the definition, the type and the event id (:func:`event_run_id`), started with the reuse
   policy ``REJECT_DUPLICATE`` (as a webhook delivery): publishing the event again finds that run
   and starts nothing new (``existing``), while it runs or after it ended however it ended. Data
   that the definition's ``input_schema`` refuses starts nothing for it (``refused`` says why).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from pydantic import BaseModel, Field
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.events import mailbox_update
from interpreter.events import (
    DELIVER_UPDATE,
    MAX_EVENT_ID_CHARS,
    MAX_EVENT_KEY_CHARS,
    PUBLISH_UPDATE,
    Event,
    PublishResult,
    event_data_problem,
    legacy_mailbox_id,
    mailbox_id,
)
from interpreter.model import EVENT_TYPE_PATTERN, EventTrigger
from starter.errors import (
    InputCheckUnavailableError,
    InvalidInputError,
    InvalidRunInputError,
    NoWorkerError,
    RunAlreadyExistsError,
)
from starter.inputs import brief, check_json_object, check_text

if TYPE_CHECKING:
    from starter.client import FlowClient

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
"""How long a publication may wait for a worker to run the mailbox (it needs one, as runs do)."""


class EventPublication(BaseModel):
    """What publishing an event did.

    Attributes:
        event_id: The event's id (generated when none was given).
        mailbox: The workflow id of the mailbox it went to.
        duplicate: The mailbox had this id already: nothing was delivered again.
        delivered_to: Workflow ids of the waiting runs the mailbox signalled.
        started: Workflow ids of the runs its event triggers started.
        existing: Workflow ids of trigger runs that already existed for this event id.
        refused: Workflow id -> why a trigger's run was not started (its definition's
            ``input_schema`` refuses the event's data, naming the JSON paths).
    """

    event_id: str
    type: str
    key: str
    mailbox: str
    duplicate: bool
    delivered_to: list[str] = Field(default_factory=list)
    started: list[str] = Field(default_factory=list)
    existing: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)


def event_run_id(tenant: str, definition: str, event_type: str, event_id: str) -> str:
    """The workflow id of the run an ``event`` trigger starts for one event: the same for every
    publication of that event id, so a republished event starts nothing new."""
    digest = hashlib.sha256(f"{tenant}\n{event_type}\n{event_id}".encode()).hexdigest()[:32]
    return f"{definition}-event-{digest}"


def check_event(event_type: object, key: object, event_id: object, data: object) -> dict[str, Any]:
    """Checks what a publisher gives; returns the data as a JSON object.

    Raises:
        InvalidInputError: Naming the problem (a type not matching the pattern, an empty or too long
            key or id, one holding a NUL or a lone surrogate, data that is not a JSON object or is
            too large).
    """
    if not isinstance(event_type, str) or not re.match(EVENT_TYPE_PATTERN, event_type):
        raise InvalidInputError(
            f"event type {brief(event_type)} must match {EVENT_TYPE_PATTERN} (e.g. family.answered)"
        )
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_EVENT_KEY_CHARS:
        raise InvalidInputError(f"event key must be text of 1 to {MAX_EVENT_KEY_CHARS} characters")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_EVENT_ID_CHARS:
        raise InvalidInputError(f"event id must be text of 1 to {MAX_EVENT_ID_CHARS} characters")
    check_text(key, "event key")
    check_text(event_id, "event id")
    payload = check_json_object(data if data is not None else {}, "the event data")
    problem = event_data_problem(payload)
    if problem is not None:
        raise InvalidInputError(problem)
    return payload


async def event_trigger_definitions(flows: FlowClient, event_type: str) -> list[tuple[str, int]]:
    """``(name, version)`` of the tenant's active versions with a live ``event`` trigger of this type
    (:func:`starter.triggers.live_triggers`), each once even if it declares several."""
    from starter.triggers import live_triggers

    found: list[tuple[str, int]] = []
    for live in await live_triggers(flows, "event"):
        trigger = live.trigger
        matches = isinstance(trigger, EventTrigger) and trigger.event == event_type
        if matches and (live.definition, live.version) not in found:
            found.append((live.definition, live.version))
    return found


LEGACY_DELIVERY_TIMEOUT_S = 5.0
"""How long a publisher waits for the legacy mailbox of an event's address to take it."""


async def _publish_at_legacy(flows: FlowClient, event: Event) -> PublishResult | None:
    """Hands ``event``, published at its address's mailbox, to the address's legacy mailbox too
    (``interpreter.events.legacy_mailbox_id``) when one runs there: runs started before generation
    23 wait there. Its ``deliver`` update signals them without keeping the event (the mailbox at the
    new id keeps it, and their lookbacks read it there), so a legacy mailbox ends once its waits
    do. Nothing is started there (a plain update, answered ``NOT_FOUND`` at once where none runs).
    Also for a republished event (``deliver`` ignores an id it has seen): publishing again
    completes a hand-over that failed. Best effort, within :data:`LEGACY_DELIVERY_TIMEOUT_S`: the
    event is published already, so a refusal there (the mailbox may be another tenant's, type's
    or key's, which the legacy ids could not tell apart), a timeout or a server error is logged,
    not raised (a review: it failed a publish that had succeeded)."""
    handle = flows.client.get_workflow_handle(legacy_mailbox_id(event.tenant, event.type, event.key))
    try:
        async with asyncio.timeout(LEGACY_DELIVERY_TIMEOUT_S):
            result: PublishResult = await handle.execute_update(
                DELIVER_UPDATE, event, id=f"deliver/{event.id}/{uuid4()}", result_type=PublishResult
            )
    except RPCError as err:
        if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            log.warning("event %r: the legacy mailbox %s: %s", event.id, handle.id, err.message)
        return None  # (NOT_FOUND: none runs there, or it has just closed)
    except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError) as err:
        log.warning("event %r: the legacy mailbox %s did not take it: %s", event.id, handle.id, err)
        return None
    return result


async def publish_event(
    flows: FlowClient,
    event_type: str,
    key: str,
    data: Mapping[str, Any] | None = None,
    *,
    event_id: str | None = None,
    source: str = "client",
    start_triggers: bool = True,
) -> EventPublication:
    """See :meth:`starter.client.FlowClient.publish_event`."""
    event_id = event_id if event_id is not None else str(uuid4())
    payload = check_event(event_type, key, event_id, data)
    check_text(source, "event source")
    event = Event(
        id=event_id, type=event_type, key=key, tenant=flows.tenant, data=payload, source=source[:200]
    )
    timer = asyncio.timeout(PUBLISH_TIMEOUT_S)
    try:
        async with timer:
            result = await mailbox_update(
                flows.client,
                flows.task_queue,
                tenant=flows.tenant,
                event_type=event_type,
                key=key,
                update=PUBLISH_UPDATE,
                arg=event,
                # Not the event id: the server would answer a republication with the first one's
                # result; the mailbox itself refuses the id again and says so (``duplicate``).
                update_id=f"publish/{event_id}/{uuid4()}",
                result_type=PublishResult,
            )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # The SDK turns the timeout's cancellation into its own error, which the timeout then
        # passes on as it is (a probe: the gateway answered 500 after 30 s, not 503). A caller's
        # own cancellation stays one.
        task = asyncio.current_task()
        if not timer.expired() and task is not None and task.cancelling():
            raise asyncio.CancelledError from None  # the SDK's error, back to what it stands for
        raise NoWorkerError(
            f"no worker ran the event mailbox within {PUBLISH_TIMEOUT_S:g}s; is a worker polling"
            f" task queue {flows.task_queue!r}?",
            mailbox_id(flows.tenant, event_type, key),
            flows.task_queue,
        ) from None
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        raise InvalidInputError(f"the event was refused: {message}") from None
    except RPCError as err:
        raise flows._rpc_error(err, None, "publish the event") from None
    # A duplicate too (a review): the first publication's hand-over may have failed; a legacy
    # mailbox that saw the id delivers nothing again.
    legacy = await _publish_at_legacy(flows, event)
    publication = EventPublication(
        event_id=event_id,
        type=event_type,
        key=key,
        mailbox=result.mailbox,
        duplicate=result.duplicate,
        delivered_to=result.delivered_to,
    )
    if legacy is not None:
        publication.delivered_to += [w for w in legacy.delivered_to if w not in publication.delivered_to]
    if start_triggers:
        from activities.store.errors import DatabaseUnavailableError

        try:
            triggered = await event_trigger_definitions(flows, event_type)
        except DatabaseUnavailableError as err:
            raise DatabaseUnavailableError(
                f"event {event_id!r} was delivered to {len(result.delivered_to)} waiting run(s), but its"
                f" triggers could not be read: {err}; publish it again with the same id once the"
                " registry is reachable (nothing is delivered twice)",
                err.url,
            ) from None
        for name, version in triggered:
            workflow_id = event_run_id(flows.tenant, name, event_type, event_id)
            try:
                # Never again under this id, whatever became of the run: with the default policy a
                # run that failed or was terminated started again when the event was republished,
                # answered `duplicate` (found by an attacker's probe).
                run = await flows.start_run(
                    f"{name}@{version}",
                    payload,
                    workflow_id=workflow_id,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            except RunAlreadyExistsError:
                publication.existing.append(workflow_id)
                continue
            except InvalidRunInputError as err:  # the other triggers still start
                publication.refused[workflow_id] = str(err)
                continue
            except InputCheckUnavailableError as err:
                raise InputCheckUnavailableError(
                    f"event {event_id!r} was delivered to {len(result.delivered_to)} waiting run(s), but"
                    f" the run of {name} v{version} it triggers was not started: {err}; publish it again"
                    " with the same id (nothing is delivered or started twice)"
                ) from None
            (publication.started if run.started else publication.existing).append(workflow_id)
    return publication
