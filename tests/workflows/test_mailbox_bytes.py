"""The event mailbox's byte bound, on the mailbox workflow's own code with a stand-in for the
workflow runtime (its clock, converter and patch answers): ``tests/workflows/test_events.py`` runs
it on a dev server. A review found the first version counting an event at the size of an earlier
one of the same id (forgotten by then, published again 60 KB larger): 100 such events, 6 MB kept."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

import workflows.mailbox
from interpreter.events import (
    MAX_BUFFERED_BYTES,
    MAX_REMEMBERED_ID_BYTES,
    MAX_SUBSCRIPTION_BYTES,
    Event,
    EventSubscription,
    MailboxState,
)
from workflows.mailbox import EventMailboxWorkflow

CONVERTER = pydantic_data_converter.payload_converter


def _bytes(events: list[Event]) -> int:
    return sum(CONVERTER.to_payloads([event])[0].ByteSize() for event in events)


def _mailbox(
    monkeypatch: pytest.MonkeyPatch,
    *,
    patched: bool = True,
    events: list[Event] | None = None,
    key: str = "k",
) -> tuple[EventMailboxWorkflow, list[datetime]]:
    """A mailbox of ``key`` on a stand-in runtime whose patches answer ``patched``, started with
    ``events``."""
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    runtime = types.SimpleNamespace(
        payload_converter=lambda: CONVERTER,
        patched=lambda _patch_id: patched,
        now=lambda: clock[0],
        info=lambda: types.SimpleNamespace(workflow_id="evt-t-e-k"),
        logger=workflows.mailbox.workflow.logger,
    )
    monkeypatch.setattr(workflows.mailbox, "workflow", runtime)
    started = MailboxState(tenant="t", type="e", key=key, events=events or [])
    state = types.SimpleNamespace(payload=CONVERTER.to_payloads([started])[0])
    return EventMailboxWorkflow(state), clock


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> tuple[EventMailboxWorkflow, list[datetime]]:
    return _mailbox(monkeypatch)


async def _publish(
    box: EventMailboxWorkflow, clock: list[datetime], event_id: str, data: dict[str, Any]
) -> None:
    clock[0] += timedelta(milliseconds=1)
    await box.publish(Event(id=event_id, type="e", key="k", tenant="t", data=data))


async def test_an_id_forgotten_and_published_again_larger_is_counted_at_its_new_size(
    mailbox: tuple[EventMailboxWorkflow, list[datetime]],
) -> None:
    box, clock = mailbox
    for n in range(100):
        await _publish(box, clock, f"A{n}", {})
    for n in range(1200):  # past the 100 kept and the 1,000 ids remembered besides
        await _publish(box, clock, f"F{n}", {})
    assert not any(i.startswith("A") for i in box._seen)
    for n in range(100):
        await _publish(box, clock, f"A{n}", {"answer": "x" * 60_000})
    assert _bytes(box._events) <= MAX_BUFFERED_BYTES
    assert box._events[-1].id == "A99"


async def test_the_newest_event_is_always_kept(mailbox: tuple[EventMailboxWorkflow, list[datetime]]) -> None:
    box, clock = mailbox
    for n in range(12):
        await _publish(box, clock, f"big-{n}", {"answer": "x" * 60_000})
    kept = [e.id for e in box._events]
    assert kept == [f"big-{n}" for n in range(12 - len(kept), 12)]
    assert _bytes(box._events) <= MAX_BUFFERED_BYTES < _bytes(box._events) + 70_000


def _big(event_id: str, at: datetime) -> Event:
    return Event(id=event_id, type="e", key="k", tenant="t", data={"answer": "x" * 60_000}, published_at=at)


async def test_a_buffer_started_with_one_event_twice_is_bounded_without_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (A raw client may start a mailbox with any state: a review found the same event twice
    # crashing the trim, a KeyError failing the mailbox's workflow task at every attempt.)
    at = datetime(2025, 12, 31, tzinfo=UTC)
    twice = [_big("A", at), _big("A", at), *(_big(f"B{n}", at) for n in range(12))]
    box, clock = _mailbox(monkeypatch, events=twice)
    await _publish(box, clock, "C", {})
    assert _bytes(box._events) <= MAX_BUFFERED_BYTES
    assert box._events[-1].id == "C"


async def test_a_subscribe_answer_holds_the_newest_events_within_the_bound_whatever_the_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A mailbox of a build before the bound, replayed by this one, keeps its events (its patch
    # answered False): its answer to a lookback is still the newest 512 KiB (a review found 2.4 MB
    # answers failing the workflow task at every attempt).
    at = datetime(2025, 12, 31, tzinfo=UTC)
    box, _ = _mailbox(monkeypatch, patched=False, events=[_big(f"old-{n}", at) for n in range(40)])
    since = at - timedelta(hours=1)
    subscription = EventSubscription(
        tenant="t", type="e", key="k", workflow_id="run", path="answer", since=since
    )
    answer = box.subscribe(subscription)
    assert len(box._events) == 40  # the buffer as its history left it
    assert _bytes(answer) <= MAX_BUFFERED_BYTES
    assert answer[-1].id == "old-39"


def _carried(box: EventMailboxWorkflow) -> int:
    """The bytes of the state the mailbox carries on continuing as new (its next run's input)."""
    return CONVERTER.to_payloads([box._state()])[0].ByteSize()


def test_waits_past_the_mailboxs_byte_bound_are_refused_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by a review: the mailbox bounded its waits by count only (1,000), and a definition's
    # foreach of 1,000 waits on one key of 1,000 control characters (6 KB each as JSON) took the
    # state it carries on continuing as new past 6 MB: its workflow task failed at every attempt,
    # every wait and publish of the key with it. The waits past the bound are refused instead (the
    # step fails, EventSubscribeFailed, which the definition handles).
    key = "\u0001" * 1000
    box, clock = _mailbox(monkeypatch, key=key)
    refused: list[str] = []
    for n in range(1000):
        wait = EventSubscription(
            tenant="t", type="e", key=key, workflow_id="run", path=f"each[{n}].answer", since=clock[0]
        )
        try:
            box._validate_subscribe(wait)
        except ApplicationError as err:
            refused.append(err.message)
            continue
        box.subscribe(wait)
        box._validate_subscribe(wait)  # (a retried subscription of the same wait is taken again)
    assert 80 < len(box._subscriptions) < 120
    assert len(refused) == 1000 - len(box._subscriptions)
    assert refused[0].startswith("the mailbox's waits take ")
    assert refused[0].endswith(
        f"(at most {MAX_SUBSCRIPTION_BYTES:,} in all: shorter keys or step paths take less)"
    )
    assert _carried(box) < 1024 * 1024
    # Once some waits end, others are served again.
    for name in list(box._subscriptions)[:10]:
        box.unsubscribe(name)
    box._validate_subscribe(
        EventSubscription(tenant="t", type="e", key=key, workflow_id="run", path="late", since=clock[0])
    )


@pytest.mark.parametrize("patched", [True, False], ids=["mailbox-seen-bytes", "recorded-before"])
async def test_remembered_ids_are_carried_within_their_byte_bound(
    monkeypatch: pytest.MonkeyPatch, patched: bool
) -> None:
    # Found by a review: 1,100 ids of 200 control characters (a publisher's own ids) are 1.3 MB as
    # JSON, which the mailbox carried beside its events and waits on continuing as new.
    box, clock = _mailbox(monkeypatch, patched=patched)
    ids = [f"{n:04d}" + "\u0001" * 196 for n in range(1100)]
    for event_id in ids:
        await _publish(box, clock, event_id, {})
    assert len(box._seen) == 1100  # the last 1,000 and the 100 buffered
    box._forget_past_bound()  # where it continues as new
    carried = [i for i in box._seen if i not in {e.id for e in box._events}]
    if not patched:  # a mailbox's history recorded before replays as it was
        assert len(box._seen) == 1100
        return
    assert sum(CONVERTER.to_payloads([i])[0].ByteSize() for i in carried) <= MAX_REMEMBERED_ID_BYTES
    assert carried == ids[1100 - 100 - len(carried) : 1000]  # the newest not buffered
    assert [e.id for e in box._events] == ids[1000:]  # the buffered ones, all remembered
    assert all(i in box._seen for i in ids[1000:])
    assert _carried(box) < 1024 * 1024
    again = await box.publish(Event(id=ids[-1], type="e", key="k", tenant="t", data={}))
    assert again.duplicate


async def test_an_event_handed_to_a_legacy_mailbox_is_delivered_not_kept(
    mailbox: tuple[EventMailboxWorkflow, list[datetime]],
) -> None:
    # Patch mailbox-ids: a publisher of this build keeps an event at its address's mailbox and
    # hands it to the legacy one by ``deliver``. Kept there too, every publish held a legacy
    # mailbox open for 7 more days (a review); now it ends once its waits do.
    box, clock = mailbox
    clock[0] += timedelta(milliseconds=1)
    handed = await box.deliver(Event(id="d-1", type="e", key="k", tenant="t", data={"answer": "x"}))
    assert (handed.duplicate, box._events) == (False, [])
    again = await box.deliver(Event(id="d-1", type="e", key="k", tenant="t", data={}))
    assert again.duplicate  # its id is remembered
