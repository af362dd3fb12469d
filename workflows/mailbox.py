"""The event mailbox: one entity workflow per tenant, event type and correlation key.

Publishers and waiting runs meet here, and the mailbox serialises them, so no event and no wait
can slip between a check and an act:

* ``publish`` (an update, reached by Update-With-Start: the mailbox starts if it does not exist)
  stamps the event, refuses an id it has seen (a duplicate delivers nothing), keeps it for
  :data:`~interpreter.model.MAX_EVENT_LOOKBACK` (at most :data:`~interpreter.events.MAX_BUFFERED_EVENTS`
  of them) and signals every subscribed run once.
* ``subscribe`` (an update, also by Update-With-Start, from the run's ``event_subscribe``
  activity) records the run's wait and returns the buffered events published since the wait's
  lookback began. Whatever is published after the subscription is signalled to the run; what
  came before is in the answer. Either way the run's engine consumes an event at most once.
* ``unsubscribe`` (a signal from the run when its wait ends) forgets the wait; a wait also lapses
  at its deadline, and a run that can no longer be signalled (it ended) is forgotten.

The mailbox ends when nobody waits and it holds no event young enough for a lookback, and it
continues as new (carrying events, subscriptions and the ids it has seen) when Temporal suggests
it. Its clock stamps ``published_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from interpreter.events import (
        DELIVER_UPDATE,
        EVENT_SIGNAL,
        MAILBOX_WORKFLOW,
        MAX_BUFFERED_EVENTS,
        MAX_REMEMBERED_ID_BYTES,
        MAX_REMEMBERED_IDS,
        MAX_SUBSCRIBERS,
        MAX_SUBSCRIPTION_BYTES,
        PATCH_MAILBOX_BYTES,
        PATCH_MAILBOX_CARRY,
        PATCH_MAILBOX_SEEN_BYTES,
        PUBLISH_UPDATE,
        SUBSCRIBE_UPDATE,
        UNSUBSCRIBE_SIGNAL,
        Event,
        EventSubscription,
        MailboxState,
        PublishResult,
        event_data_problem,
        oldest_past_bound,
    )
    from interpreter.inert import make_inert
    from interpreter.model import MAX_EVENT_LOOKBACK
    from interpreter.state import clip, decoding_problem

if TYPE_CHECKING:
    MailboxArgument = MailboxState
else:
    MailboxArgument = RawValue
"""The mailbox's argument: a :class:`MailboxState` to whoever starts one, read by the worker as the
raw payload and decoded here, so an input that is not a state (a raw client's) fails the mailbox in
words instead of failing its workflow task on every retry. Same payload, same history."""

NO_MAILBOX_ARGUMENT = cast("MailboxArgument", None)


def _read_state(raw: Any) -> tuple[MailboxState, str | None]:
    """The mailbox's state, or a placeholder and why the input is not one."""
    problem = "the mailbox's input is not a mailbox's state: "
    if raw is None:
        return MailboxState(tenant="", type="", key=""), problem + "there is none"
    try:
        state: object = workflow.payload_converter().from_payload(raw.payload, MailboxState)
    except Exception as err:
        return MailboxState(tenant="", type="", key=""), problem + clip(decoding_problem(err))
    if not isinstance(state, MailboxState):  # a payload not in JSON comes back as itself
        return MailboxState(tenant="", type="", key=""), problem + f"it is {type(state).__name__}"
    return state, None


@workflow.defn(name=MAILBOX_WORKFLOW)
class EventMailboxWorkflow:
    """Buffers the events of one (tenant, type, key) and hands each to every run waiting for it."""

    @workflow.init
    def __init__(self, raw: MailboxArgument = NO_MAILBOX_ARGUMENT) -> None:
        state, self._problem = _read_state(raw)
        self._tenant, self._type, self._key = state.tenant, state.type, state.key
        self._events: list[Event] = list(state.events)
        self._subscriptions: dict[str, EventSubscription] = {s.subscriber: s for s in state.subscriptions}
        self._seen: dict[str, None] = dict.fromkeys(state.seen_ids)
        self._subscription_sizes: dict[str, tuple[EventSubscription, int]] = {}
        """Bytes of each wait's subscription as written, by its subscriber name."""
        self._sizes: dict[tuple[str, datetime | None], int] = {}
        """Bytes of each buffered event as written, by id and time (measured once; an id forgotten
        and published again is another event)."""
        self._changed = False

    @workflow.run
    async def run(self, raw: MailboxArgument = NO_MAILBOX_ARGUMENT) -> None:
        """Lives while someone waits or an event may still be looked back on."""
        if self._problem is not None:
            raise ApplicationError(self._problem, type="InvalidMailboxState", non_retryable=True)
        while True:
            self._prune()
            if not self._subscriptions and not self._events:
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._prune()
                if not self._subscriptions and not self._events:
                    return
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._trim(PATCH_MAILBOX_CARRY)
                self._forget_past_bound()
                workflow.continue_as_new(self._state())
            wake = self._next_expiry()
            self._changed = False
            timeout = None if wake is None else max((wake - workflow.now()).total_seconds(), 0.001)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._changed, timeout=timeout, timeout_summary="expiry"
                )

    @workflow.update(name=PUBLISH_UPDATE)
    async def publish(self, event: Event) -> PublishResult:
        """Accepts an event (once per id) and signals every subscribed run with it."""
        return await self._accept(event, keep=True)

    @publish.validator
    def _validate_publish(self, event: Event) -> None:
        self._check_event(event)

    @workflow.update(name=DELIVER_UPDATE)
    async def deliver(self, event: Event) -> PublishResult:
        """Signals every subscribed run with an event published at the address's mailbox of this
        build (once per id), without keeping it: at a legacy id, for the waits of runs of earlier
        generations, and the mailbox ends once they do (a review: kept, every publish held it open
        for 7 more days)."""
        return await self._accept(event, keep=False)

    @deliver.validator
    def _validate_deliver(self, event: Event) -> None:
        self._check_event(event)

    def _check_event(self, event: Event) -> None:
        self._check_address(event.tenant, event.type, event.key)
        problem = event_data_problem(event.data)
        if problem is not None:
            raise ApplicationError(problem, type="EventRefused", non_retryable=True)

    async def _accept(self, event: Event, *, keep: bool) -> PublishResult:
        """Stamps ``event``, keeps it when ``keep``, and signals every subscribed run with it; an id
        seen before delivers nothing (``duplicate``)."""
        mailbox = workflow.info().workflow_id
        if event.id in self._seen:
            first = next((e for e in self._events if e.id == event.id), None)
            return PublishResult(
                event_id=event.id,
                mailbox=mailbox,
                duplicate=True,
                published_at=None if first is None else first.published_at,
            )
        stamped = event.model_copy(update={"published_at": workflow.now(), "data": make_inert(event.data)})
        if keep:
            self._events.append(stamped)
        self._remember(event.id)
        if keep:
            del self._events[:-MAX_BUFFERED_EVENTS]
            self._trim(PATCH_MAILBOX_BYTES)
        self._changed = True
        targets = sorted({s.workflow_id for s in self._live()})
        outcomes = await asyncio.gather(*(self._signal(target, stamped) for target in targets))
        return PublishResult(
            event_id=event.id,
            mailbox=mailbox,
            duplicate=False,
            delivered_to=[t for t, ok in zip(targets, outcomes, strict=True) if ok],
            published_at=stamped.published_at,
        )

    @workflow.update(name=SUBSCRIBE_UPDATE)
    def subscribe(self, subscription: EventSubscription) -> list[Event]:
        """Records a run's wait; returns the buffered events published since its ``since``."""
        self._subscriptions[subscription.subscriber] = subscription
        self._changed = True
        self._trim(PATCH_MAILBOX_BYTES)
        answer = [
            (e, size)
            for e, size in zip(self._events, self._measure(self._events), strict=True)
            if e.published_at is not None and e.published_at >= subscription.since
        ]
        # The newest 512 KiB, whatever the buffer holds: a mailbox of a build before the bound,
        # replayed here, keeps its events (its patch answered False), and an answer over 2 MiB
        # failed its workflow task at every attempt (a review). An update's answer is not
        # compared on replay: no patch.
        past = oldest_past_bound([size for _, size in answer])
        return [e for e, _ in answer[past:]]

    @subscribe.validator
    def _validate_subscribe(self, subscription: EventSubscription) -> None:
        self._check_address(subscription.tenant, subscription.type, subscription.key)
        if subscription.subscriber in self._subscriptions:
            return  # (a retried subscription: the same wait)
        if len(self._subscriptions) >= MAX_SUBSCRIBERS:
            raise ApplicationError(
                f"the mailbox already serves {MAX_SUBSCRIBERS} waits", type="EventRefused", non_retryable=True
            )
        served = sum(self._subscription_size(s) for s in self._subscriptions.values())
        size = self._subscription_size(subscription)
        if served + size > MAX_SUBSCRIPTION_BYTES:
            # A validator's refusal writes no history: no patch.
            raise ApplicationError(
                f"the mailbox's waits take {served:,} bytes and this one {size:,}"
                f" (at most {MAX_SUBSCRIPTION_BYTES:,} in all: shorter keys or step paths take less)",
                type="EventRefused",
                non_retryable=True,
            )

    def _subscription_size(self, subscription: EventSubscription) -> int:
        """The bytes of ``subscription`` as written (measured once per wait: one subscribed again
        with other fields, a retried activity's, is measured again)."""
        cached = self._subscription_sizes.get(subscription.subscriber)
        if cached is not None and cached[0] == subscription:
            return cached[1]
        size = workflow.payload_converter().to_payloads([subscription])[0].ByteSize()
        self._subscription_sizes[subscription.subscriber] = (subscription, size)
        if len(self._subscription_sizes) > 2 * MAX_SUBSCRIBERS:  # (forgotten waits' sizes go)
            self._subscription_sizes = {
                name: kept for name, kept in self._subscription_sizes.items() if name in self._subscriptions
            }
        return size

    @workflow.signal(name=UNSUBSCRIBE_SIGNAL)
    def unsubscribe(self, *args: Any) -> None:
        """Forgets a wait (its run took an event, timed out or moved on); the argument is the wait's
        subscriber name. Taken as any arguments: with a typed one, a raw client's signal with two
        made the SDK call the handler with both, and the workflow task failed on every retry. One
        that is not a single name is ignored (nobody waits under it), with a worker log line."""
        if len(args) != 1 or not isinstance(args[0], str):
            workflow.logger.warning("ignored a malformed unsubscribe signal (%d arguments)", len(args))
            return
        if self._subscriptions.pop(args[0], None) is not None:
            self._changed = True

    @workflow.query
    def state(self) -> MailboxState:
        """The buffered events, the waits and the remembered ids."""
        return self._state()

    def _check_address(self, tenant: str, event_type: str, key: str) -> None:
        if (tenant, event_type, key) != (self._tenant, self._type, self._key):
            raise ApplicationError(
                "this mailbox holds another tenant's, type's or key's events",
                type="EventRefused",
                non_retryable=True,
            )

    async def _signal(self, workflow_id: str, event: Event) -> bool:
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(EVENT_SIGNAL, event)
        except FailureError:
            # The run ended (or never was): it waits for nothing any more.
            for name in [n for n, s in self._subscriptions.items() if s.workflow_id == workflow_id]:
                del self._subscriptions[name]
            self._changed = True
            return False
        return True

    def _live(self) -> list[EventSubscription]:
        now = workflow.now()
        return [s for s in self._subscriptions.values() if s.until is None or s.until > now]

    def _prune(self) -> None:
        now = workflow.now()
        self._events = [
            e for e in self._events if e.published_at is None or e.published_at + MAX_EVENT_LOOKBACK > now
        ]
        self._subscriptions = {s.subscriber: s for s in self._live()}

    def _next_expiry(self) -> datetime | None:
        times = [e.published_at + MAX_EVENT_LOOKBACK for e in self._events if e.published_at is not None]
        times.extend(s.until for s in self._subscriptions.values() if s.until is not None)
        # A lapsed wait (until passed) is pruned on the next turn; one second of slack for ties.
        return min(times) + timedelta(seconds=1) if times else None

    def _trim(self, patch_id: str) -> None:
        """Drops the oldest buffered events past :data:`MAX_BUFFERED_BYTES`, the newest kept, where
        ``patch_id`` applies (:data:`PATCH_MAILBOX_BYTES`, :data:`PATCH_MAILBOX_CARRY`); their ids
        stay remembered, so a republished one is still a duplicate."""
        dropped = oldest_past_bound(self._measure(self._events))
        if dropped and workflow.patched(patch_id):
            del self._events[:dropped]
            self._measure(self._events)

    def _measure(self, events: list[Event]) -> list[int]:
        """The bytes of each of ``events`` as written, in their order; the cache then holds theirs
        only (an event pruned, or past the count, is gone; a buffer a raw client started with the
        same event twice is counted twice: a review found it crashing the trim)."""
        measured, self._sizes = self._sizes, {}
        sizes: list[int] = []
        for event in events:
            at = (event.id, event.published_at)
            size = measured.get(at) or self._sizes.get(at)
            if size is None:
                size = workflow.payload_converter().to_payloads([event])[0].ByteSize()
            self._sizes[at] = size
            sizes.append(size)
        return sizes

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        buffered = {e.id for e in self._events}
        while len(self._seen) > MAX_REMEMBERED_IDS + len(buffered):
            oldest = next(iter(self._seen))
            del self._seen[oldest]

    def _forget_past_bound(self) -> None:
        """Forgets the oldest remembered ids not buffered while those carried would take more than
        :data:`MAX_REMEMBERED_ID_BYTES` as written, where :data:`PATCH_MAILBOX_SEEN_BYTES` applies
        (asked only then): a mailbox carried 1,100 ids of 200 control characters, 1.3 MB."""
        converter = workflow.payload_converter()
        buffered = {e.id for e in self._events}
        sizes = {i: converter.to_payloads([i])[0].ByteSize() for i in self._seen if i not in buffered}
        total = sum(sizes.values())
        if total <= MAX_REMEMBERED_ID_BYTES or not workflow.patched(PATCH_MAILBOX_SEEN_BYTES):
            return
        for oldest, size in sizes.items():  # (in the order remembered)
            if total <= MAX_REMEMBERED_ID_BYTES:
                break
            del self._seen[oldest]
            total -= size

    def _state(self) -> MailboxState:
        return MailboxState(
            tenant=self._tenant,
            type=self._type,
            key=self._key,
            events=list(self._events),
            subscriptions=list(self._subscriptions.values()),
            seen_ids=list(self._seen),
        )
