"""Event mailboxes from outside workflow code: deliver an event, subscribe a waiting run.

Both go through Update-With-Start (:func:`mailbox_update`): the mailbox of the event's tenant, type
and key is started if it does not run, and the update is handled in the same request, so neither
a publisher nor a waiter can find it missing, or start a second one. The run's ``event_subscribe``
activity (:class:`EventActivities`) is what a ``wait_for_event`` step (or ``cancel_on``) executes.

Wiring (``worker.py``)::

    build_worker(client, ...)   # serves EventMailboxWorkflow and event_subscribe on its queue
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.base import check_tenant_scope
from interpreter.events import (
    MAILBOX_WORKFLOW,
    SUBSCRIBE_ACTIVITY,
    SUBSCRIBE_UPDATE,
    Event,
    EventSubscription,
    MailboxState,
    legacy_mailbox_id,
    mailbox_id,
    oldest_past_bound,
)
from interpreter.sizes import temporal_id

__all__ = ["EventActivities", "build_event_activities", "mailbox_update"]

R = TypeVar("R")

_QUERY_TIMEOUT = timedelta(seconds=10)
"""How long the subscription of a legacy wait waits for the address's mailbox to answer its query."""

_ATTEMPTS = 3
"""Update-With-Start tries: a mailbox may close (idle) just as an update reaches it; the next try
starts a new one."""


async def mailbox_update(
    client: Client,
    task_queue: str,
    *,
    tenant: str,
    event_type: str,
    key: str,
    update: str,
    arg: Any,
    update_id: str,
    result_type: type[R],
    workflow_id: str | None = None,
) -> R:
    """Runs ``update`` on the mailbox of (tenant, type, key), starting the mailbox if need be.

    ``update_id`` makes a retried call the same update (the server deduplicates it);
    ``workflow_id``: the mailbox's (default :func:`~interpreter.events.mailbox_id`; a subscription
    names a legacy one, ``EventSubscription.mailbox_workflow``).

    Raises:
        WorkflowUpdateFailedError: The mailbox refused (its validator, e.g. ``EventRefused``).
        RPCError: The server could not be reached or refused the request.
    """
    workflow_id = workflow_id or mailbox_id(tenant, event_type, key)
    for attempt in range(1, _ATTEMPTS + 1):
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            MAILBOX_WORKFLOW,
            MailboxState(tenant=tenant, type=event_type, key=key),
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"events {event_type} ({tenant})",
        )
        try:
            result: R = await client.execute_update_with_start_workflow(
                update, arg, start_workflow_operation=start, id=update_id, result_type=result_type
            )
        except RPCError as err:
            if attempt < _ATTEMPTS and err.status == RPCStatusCode.NOT_FOUND:
                await asyncio.sleep(0.1 * attempt)
                continue
            raise
        except WorkflowUpdateFailedError as err:
            if attempt < _ATTEMPTS and "completed" in str(err.cause or err).lower():
                await asyncio.sleep(0.1 * attempt)
                continue
            raise
        return result
    raise AssertionError("unreachable")  # pragma: no cover


class EventActivities:
    """The activity a waiting run calls to subscribe to a mailbox.

    Args:
        client: The worker's client (the namespace of the runs it serves: a mailbox lives in the
            namespace of its tenant's runs).
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name=SUBSCRIBE_ACTIVITY)
    async def subscribe(self, subscription: EventSubscription) -> list[Event]:
        """Subscribes the run to the mailbox; returns the buffered events since ``since``.

        Raises:
            ApplicationError: Non-retryable ``TenantRefused`` for a tenant this worker does not
                serve in this namespace, ``EventRefused`` when the mailbox refuses (it serves its
                maximum of waits). A server error is retryable.
        """
        check_tenant_scope(subscription.tenant)
        info = activity.info()
        try:
            answer = await mailbox_update(
                self.client,
                info.task_queue,
                tenant=subscription.tenant,
                event_type=subscription.type,
                key=subscription.key,
                update=SUBSCRIBE_UPDATE,
                arg=subscription,
                # One update per wait: a retried attempt is the same subscription.
                update_id=temporal_id(
                    f"subscribe/{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"
                ),
                result_type=list[Event],
                workflow_id=subscription.mailbox_workflow,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            raise ApplicationError(message, type="EventRefused", non_retryable=True) from None
        return self._newest(answer + await self._kept_at_the_other_id(subscription))

    async def _kept_at_the_other_id(self, subscription: EventSubscription) -> list[Event]:
        """The events kept since the wait's ``since`` by its address's mailbox at the other id form:
        the new id for a wait at the legacy one (a run of an earlier generation: publishers of this
        build keep events at the new id only, handing them to the legacy mailbox without keeping
        them), the legacy id for a wait at the new one (publishers of the build before keep events
        there, for 7 days: a review found a lookback of a run of this generation missing them).
        Only a mailbox of this very address counts (a legacy id may be another tenant's, type's or
        key's mailbox). Best effort: the wait is subscribed already, so no answer (none runs there,
        no worker answers, its query fails) is none, with a log line where unexpected (a review:
        raised, it failed a wait whose subscription had worked)."""
        other = (
            mailbox_id(subscription.tenant, subscription.type, subscription.key)
            if subscription.mailbox is None
            else legacy_mailbox_id(subscription.tenant, subscription.type, subscription.key)
        )
        handle = self.client.get_workflow_handle(other)
        try:
            state = await handle.query("state", result_type=MailboxState, rpc_timeout=_QUERY_TIMEOUT)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                activity.logger.warning("the events kept at %s could not be read: %s", other, err.message)
            return []
        except WorkflowQueryFailedError as err:
            activity.logger.warning("the events kept at %s could not be read: %s", other, err)
            return []
        if (state.tenant, state.type, state.key) != (
            subscription.tenant,
            subscription.type,
            subscription.key,
        ):
            return []
        return [
            e for e in state.events if e.published_at is not None and e.published_at >= subscription.since
        ]

    def _newest(self, events: list[Event]) -> list[Event]:
        """``events`` once each (by id), in the order published, the newest within
        :data:`MAX_BUFFERED_BYTES` as written (the answer lands in the run's history)."""
        unique = list({e.id: e for e in events}.values())
        unique.sort(key=lambda e: (e.published_at is None, e.published_at))
        converter = self.client.data_converter.payload_converter
        return unique[oldest_past_bound([converter.to_payloads([e])[0].ByteSize() for e in unique]) :]


def build_event_activities(client: Client) -> list[Callable[..., Any]]:
    """The event activities on the worker's client, for ``Worker(activities=...)``."""
    return [EventActivities(client).subscribe]
