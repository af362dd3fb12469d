"""A :class:`~interpreter.engine.Runtime` with a virtual clock, for driving the engine without Temporal.

Nothing here really sleeps. Every timed wait (a durable timer, a retry backoff, a ``wait_condition``
timeout, work a handler pretends to do, an event scheduled with :meth:`FakeRuntime.at`) registers
its virtual deadline in one queue. :meth:`FakeRuntime.run` lets the event loop run until every task
is blocked, wakes the waits whose predicate became true, and only then moves the clock to the
earliest deadline and fires that one event; then it lets the loop settle again. So concurrent
sleepers wake in deadline order, and a run of three days of timers takes milliseconds.

Actions are dispatched to handlers registered per action name with :meth:`FakeRuntime.on`. The fake
applies the call's retry policy itself, the way Temporal's server would (exponential, constant, and
linear as the action activity computes it; ``maximum_interval``; ``non_retryable_error_types``;
``maximum_attempts``), so tests can assert attempt counts and the virtual times of every attempt.

Everything is deterministic: ties between deadlines are broken by registration order, and the
event loop runs callbacks in FIFO order. Handlers must not wait on real time or real I/O.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from interpreter.actions import ActionResult, RetryMode, linear_delay_s
from interpreter.durations import parse_duration
from interpreter.engine import ActionCall, ActionFailedError
from interpreter.events import Event, EventSubscription
from interpreter.model import RetryPolicy
from interpreter.state import DeadLetterRecord, DeadLetterResolution

DEFAULT_START = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
"""Monday 2024-01-01 09:00 UTC: where the virtual clock starts unless told otherwise."""

_MAX_SPINS = 100_000
"""Event loop turns allowed before a settle gives up (something is busy-looping)."""

Handler = Callable[[ActionCall, int], Any]
"""``handler(call, attempt)``: returns the action's output (or an awaitable of it) or raises."""


class ActionError(Exception):
    """What a handler raises to make an attempt fail with a chosen error type.

    Any other exception fails the attempt too, with its class name as the error type.

    Attributes:
        error_type: The error type the retry policy and the engine see.
        non_retryable: Fails the action at once, whatever the retry policy says.
        next_retry_delay_s: Overrides the policy's delay before the next attempt (like
            Temporal's ``ApplicationError.next_retry_delay``).
    """

    def __init__(
        self,
        message: str,
        error_type: str = "ActionError",
        *,
        non_retryable: bool = False,
        next_retry_delay_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.non_retryable = non_retryable
        self.next_retry_delay_s = next_retry_delay_s


class StuckError(AssertionError):
    """Every task is blocked and no timed event is left: the run can never progress on its own."""


@dataclass
class CallRecord:
    """One attempt of one action."""

    at: datetime
    elapsed: float
    step_id: str
    path: str
    action: str
    activity_id: str
    idempotency_key: str
    input: dict[str, Any]
    attempt: int
    outcome: str = "running"
    """``running``, ``ok``, ``cancelled`` or the error type of the failure."""
    finished_elapsed: float | None = None


@dataclass(frozen=True)
class SleepRecord:
    """One durable timer the engine started."""

    at: datetime
    elapsed: float
    seconds: float
    summary: str


@dataclass(frozen=True)
class RetryRecord:
    """A backoff the retry policy imposed after a failed attempt."""

    path: str
    attempt: int
    delay_s: float


@dataclass(frozen=True)
class WaitRecord:
    """One ``wait_condition`` call."""

    elapsed: float
    timeout_s: float | None
    summary: str


@dataclass
class _Condition:
    predicate: Callable[[], bool]
    future: asyncio.Future[bool]
    summary: str


@dataclass(order=True)
class _Event:
    when: datetime
    seq: int
    fire: Callable[[], None] = field(compare=False)
    alive: Callable[[], bool] = field(compare=False)
    label: str = field(compare=False, default="")


def retry_delay_s(policy: RetryPolicy, attempt: int) -> float:
    """The delay before the attempt after ``attempt`` (1-based) under ``policy``.

    Exponential and constant follow Temporal's server: ``initial * coefficient ** (attempt - 1)``
    capped by ``maximum_interval`` (100 x initial when unset). Linear follows the action
    activity: ``initial * attempt`` capped by ``maximum_interval`` when set.
    """
    initial = parse_duration(policy.initial_interval).total_seconds()
    maximum = parse_duration(policy.maximum_interval).total_seconds() if policy.maximum_interval else None
    if policy.preset == RetryMode.LINEAR:
        return linear_delay_s(attempt, initial, maximum)
    cap = maximum if maximum is not None else 100 * initial
    return min(initial * policy.coefficient ** (attempt - 1), cap)


def _echo(call: ActionCall, attempt: int) -> Any:
    del attempt
    return dict(call.request.input)


class FakeRuntime:
    """The engine's runtime on a virtual clock.

    Args:
        start: Virtual time at creation (timezone-aware).

    Attributes:
        calls: Every attempt of every action, in the order they started.
        sleeps: Every durable timer the engine started.
        retries: Every backoff between attempts.
        waits: Every ``wait_condition`` call.
        state_changes: How many times the engine said its state changed.
        max_in_flight: Most action attempts running at the same time, overall and per action
            (``max_in_flight_by_action``).
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.start = start
        self._now = start
        self.together = False
        """Fire every event due at one virtual time before the run goes on, as Temporal delivers
        an action's result and a timer that end together in one workflow task."""
        self._seq = itertools.count()
        self._events: list[_Event] = []
        self._conditions: list[_Condition] = []
        self._background: set[asyncio.Future[Any]] = set()
        self.handlers: dict[str, Handler] = {"echo": _echo}
        self.declined: set[str] = set()
        """Patches that do not apply (a run of an earlier generation): :meth:`patched` says False."""
        self.calls: list[CallRecord] = []
        self.dead_letters: list[DeadLetterRecord] = []
        self.wait_changes = 0
        self.resolutions: list[DeadLetterResolution] = []
        self.sleeps: list[SleepRecord] = []
        self.retries: list[RetryRecord] = []
        self.waits: list[WaitRecord] = []
        self.state_changes = 0
        self.on_state_change: Callable[[], None] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._in_flight_by_action: dict[str, int] = {}
        self.max_in_flight_by_action: dict[str, int] = {}
        self.published: list[Event] = []
        """Events published with :meth:`publish` (the fake's one mailbox for every key)."""
        self.events_per_call = 0
        """History events each action call counts for (:meth:`history_used`): 0, no history."""
        self.subscriptions: list[EventSubscription] = []
        self.unsubscriptions: list[EventSubscription] = []
        self.engine: Any = None
        """The engine :meth:`publish` hands events to (as the generic workflow's signal does)."""

    # ------------------------------------------------------------------------------ test API

    @property
    def elapsed(self) -> float:
        """Virtual seconds since ``start``."""
        return (self._now - self.start).total_seconds()

    def waiting_changed(self) -> None:
        """Counts durable waits beginning or ending (the engine's ``waiting`` says where)."""
        self.wait_changes += 1

    async def record_dead_letter(self, record: DeadLetterRecord) -> int:
        """Keeps the dead letter row in memory; idempotent on the park id like the real store."""
        for row_id, existing in enumerate(self.dead_letters, start=1):
            if existing.park_id == record.park_id:
                return row_id
        self.dead_letters.append(record)
        return len(self.dead_letters)

    async def resolve_dead_letter(self, resolution: DeadLetterResolution) -> None:
        """Keeps the resolution in memory."""
        self.resolutions.append(resolution)

    async def subscribe_events(self, subscription: EventSubscription) -> list[Event]:
        """Records the subscription; returns the published events of its type and key since ``since``."""
        self.subscriptions.append(subscription)
        return [
            e
            for e in self.published
            if (e.tenant, e.type, e.key) == (subscription.tenant, subscription.type, subscription.key)
            and e.published_at is not None
            and e.published_at >= subscription.since
        ]

    async def unsubscribe_events(self, subscription: EventSubscription) -> None:
        """Records that the subscription ended."""
        self.unsubscriptions.append(subscription)
        self.subscriptions = [s for s in self.subscriptions if s.subscriber != subscription.subscriber]

    def publish(self, event: Event) -> Any:
        """Publishes ``event`` now (virtual clock) and hands it to :attr:`engine` when a live
        subscription matches, as a mailbox signals a subscribed run; returns what the engine
        answered (a cancel request for a ``cancel_on`` match)."""
        stamped = event.model_copy(update={"published_at": self._now})
        self.published.append(stamped)
        live = [
            s
            for s in self.subscriptions
            if (s.tenant, s.type, s.key) == (event.tenant, event.type, event.key)
            and (s.until is None or s.until > self._now)
        ]
        if live and self.engine is not None:
            return self.engine.deliver_event(stamped)
        return None

    def task_key(self) -> int:
        """A new workflow task begins when an action is called or virtual time moves (on Temporal an
        action's result or a timer arrives in a task of its own); work in between is one task."""
        return hash((len(self.calls), self._now))

    def history_used(self) -> tuple[int, int]:
        """A history of :attr:`events_per_call` events (of 100 bytes) per action called so far."""
        events = len(self.calls) * self.events_per_call
        return events, events * 100

    def patched(self, patch_id: str) -> bool:
        """Every patch applies but :attr:`declined`: the fake only runs new code, it never replays."""
        return patch_id not in self.declined

    def on(self, action: str, handler: Handler) -> None:
        """Routes calls of ``action`` to ``handler(call, attempt)``."""
        self.handlers[action] = handler

    def returning(self, action: str, *outputs: Any) -> None:
        """``action`` returns these outputs on successive calls (the last one repeats)."""
        remaining = list(outputs)

        def handler(call: ActionCall, attempt: int) -> Any:
            del call, attempt
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

        self.on(action, handler)

    def failing(self, action: str, times: int, error_type: str = "Boom", output: Any = "ok") -> None:
        """``action`` fails its first ``times`` attempts (per step execution), then returns ``output``."""

        def handler(call: ActionCall, attempt: int) -> Any:
            del call
            if attempt <= times:
                raise ActionError(f"attempt {attempt} failed", error_type)
            return output

        self.on(action, handler)

    async def elapse(self, seconds: float) -> None:
        """Lets ``seconds`` of virtual time pass for the caller (a handler doing work)."""
        await self._wait_until(self._now + timedelta(seconds=seconds), f"work {seconds}s")

    def at(self, when: float | datetime, callback: Callable[[], Any]) -> None:
        """Calls ``callback()`` at a virtual time (seconds since ``start``, or a datetime), e.g. a
        signal arriving. A callback returning a coroutine has it run as a task."""
        moment = when if isinstance(when, datetime) else self.start + timedelta(seconds=when)

        def fire() -> None:
            result = callback()
            if inspect.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._background.add(task)
                task.add_done_callback(self._background.discard)

        self._push(moment, fire, lambda: True, f"at {moment.isoformat()}")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Starts ``coro`` as a task (run it with :meth:`run`)."""
        return asyncio.ensure_future(coro)

    async def run(self, work: Awaitable[Any]) -> Any:
        """Drives the virtual clock until ``work`` (a coroutine or task) is done; returns its result.

        Raises:
            StuckError: When everything is blocked and no timed event is left.
        """
        task = asyncio.ensure_future(work)
        while True:
            await self._settle()
            if self._release_conditions():
                continue
            if task.done():
                return task.result()
            if not self._advance():
                raise StuckError(self._describe_blocked("the run"))

    async def run_until(self, predicate: Callable[[], bool], max_elapsed: float | None = None) -> None:
        """Drives the virtual clock until ``predicate()`` is true, checked whenever all tasks block.

        Raises:
            StuckError: When everything is blocked without the predicate becoming true, or the
                clock would pass ``max_elapsed`` seconds.
        """
        while True:
            await self._settle()
            if self._release_conditions():
                continue
            if predicate():
                return
            if max_elapsed is not None and self._next_deadline_elapsed() > max_elapsed:
                raise StuckError(f"condition still false at t={self.elapsed}s (limit {max_elapsed}s)")
            if not self._advance():
                raise StuckError(self._describe_blocked("the condition"))

    def calls_of(self, path: str) -> list[CallRecord]:
        """The attempts of the step at ``path``, in order."""
        return [c for c in self.calls if c.path == path]

    # ---------------------------------------------------------------------- Runtime protocol

    def now(self) -> datetime:
        """The virtual time."""
        return self._now

    async def execute_action(self, call: ActionCall) -> ActionResult:
        """Runs the handler for ``call.action``, retrying by the call's policy on the virtual clock.

        Raises:
            ActionFailedError: When an attempt fails non-retryably or the attempts are exhausted.
            LookupError: When no handler is registered for the action (a test mistake).
        """
        handler = self.handlers.get(call.action)
        if handler is None:
            raise LookupError(f"FakeRuntime has no handler for action {call.action!r}")
        policy = call.retry
        attempt = 0
        while True:
            attempt += 1
            record = CallRecord(
                at=self._now,
                elapsed=self.elapsed,
                step_id=call.step_id,
                path=call.path,
                action=call.action,
                activity_id=call.activity_id,
                idempotency_key=call.request.idempotency_key,
                input=dict(call.request.input),
                attempt=attempt,
            )
            self.calls.append(record)
            self._enter(call.action)
            try:
                value = handler(call, attempt)
                if inspect.isawaitable(value):
                    value = await value
            except asyncio.CancelledError:
                record.outcome = "cancelled"
                raise
            except Exception as exc:  # the handler simulates a failed attempt
                failure = exc
            else:
                record.outcome = "ok"
                if isinstance(value, ActionResult):
                    return value.model_copy(update={"attempt": attempt})
                return ActionResult(output=value, attempt=attempt)
            finally:
                record.finished_elapsed = self.elapsed
                self._leave(call.action)
            if isinstance(failure, ActionError):
                error_type, message = failure.error_type, failure.message
                non_retryable, override = failure.non_retryable, failure.next_retry_delay_s
            else:
                error_type, message = type(failure).__name__, str(failure)
                non_retryable, override = False, None
            record.outcome = error_type
            if (
                non_retryable
                or error_type in policy.non_retryable_error_types
                or attempt >= policy.maximum_attempts
            ):
                raise ActionFailedError(message, error_type, attempt)
            delay = override if override is not None else retry_delay_s(policy, attempt)
            self.retries.append(RetryRecord(call.path, attempt, delay))
            await self._wait_until(self._now + timedelta(seconds=delay), f"retry {call.activity_id}")

    async def end_task(self, summary: str) -> None:
        """A 1 ms timer, as on Temporal (recorded in :attr:`sleeps`)."""
        await self.sleep(0.001, summary)

    async def sleep(self, seconds: float, summary: str) -> None:
        """A durable timer on the virtual clock (recorded in :attr:`sleeps`)."""
        self.sleeps.append(SleepRecord(self._now, self.elapsed, seconds, summary))
        await self._wait_until(self._now + timedelta(seconds=seconds), summary)

    async def wait_condition(
        self, predicate: Callable[[], bool], timeout_s: float | None, summary: str
    ) -> bool:
        """Waits until ``predicate()`` is true (True) or ``timeout_s`` virtual seconds pass (False).

        The predicate is checked now and then whenever every task is blocked, before the clock moves.
        """
        self.waits.append(WaitRecord(self.elapsed, timeout_s, summary))
        if predicate():
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        condition = _Condition(predicate, future, summary)
        self._conditions.append(condition)
        if timeout_s is not None:

            def expire() -> None:
                future.set_result(bool(predicate()))

            self._push(self._now + timedelta(seconds=timeout_s), expire, lambda: not future.done(), summary)
        try:
            return await future
        finally:
            if condition in self._conditions:
                self._conditions.remove(condition)

    def state_changed(self) -> None:
        """Counts the notification and forwards it to :attr:`on_state_change`."""
        self.state_changes += 1
        if self.on_state_change is not None:
            self.on_state_change()

    # ------------------------------------------------------------------------------ internals

    def _enter(self, action: str) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        count = self._in_flight_by_action.get(action, 0) + 1
        self._in_flight_by_action[action] = count
        self.max_in_flight_by_action[action] = max(self.max_in_flight_by_action.get(action, 0), count)

    def _leave(self, action: str) -> None:
        self.in_flight -= 1
        self._in_flight_by_action[action] -= 1

    def _push(self, when: datetime, fire: Callable[[], None], alive: Callable[[], bool], label: str) -> None:
        heapq.heappush(self._events, _Event(when, next(self._seq), fire, alive, label))

    async def _wait_until(self, when: datetime, label: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            future.set_result(None)

        self._push(when, wake, lambda: not future.done(), label)
        await future

    async def _settle(self) -> None:
        """Yields to the event loop until no callback is ready to run (every task is blocked)."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        for spin in range(_MAX_SPINS):
            await asyncio.sleep(0)
            if ready is None and spin >= 50:
                return  # not CPython's loop: fall back to a fixed number of turns
            if ready is not None and not ready:
                return
        raise RuntimeError("the event loop never went idle: is a handler busy-looping?")

    def _release_conditions(self) -> bool:
        released = False
        for condition in list(self._conditions):
            if condition.future.done():
                continue
            try:
                true = bool(condition.predicate())
            except Exception as exc:
                condition.future.set_exception(exc)
                released = True
                continue
            if true:
                condition.future.set_result(True)
                released = True
        return released

    def _drop_dead_events(self) -> None:
        while self._events and not self._events[0].alive():
            heapq.heappop(self._events)

    def _next_deadline_elapsed(self) -> float:
        self._drop_dead_events()
        if not self._events:
            return float("inf")
        return (self._events[0].when - self.start).total_seconds()

    def _advance(self) -> bool:
        """Moves the clock to the earliest live event and fires it (with :attr:`together`, every
        live event due then); False when there is none."""
        self._drop_dead_events()
        if not self._events:
            return False
        event = heapq.heappop(self._events)
        due = [event]
        while self.together and self._events and self._events[0].when == event.when:
            following = heapq.heappop(self._events)
            if following.alive():
                due.append(following)
        self._now = max(self._now, event.when)
        for each in due:
            each.fire()
        return True

    def _describe_blocked(self, what: str) -> str:
        waiting = [c.summary for c in self._conditions if not c.future.done()]
        return (
            f"{what} cannot progress at t={self.elapsed}s: no timer is pending;"
            f" waiting on conditions: {waiting or 'none'}"
        )
