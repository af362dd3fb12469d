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

import workflows.mailbox
from interpreter.events import MAX_BUFFERED_BYTES, Event, MailboxState
from workflows.mailbox import EventMailboxWorkflow

CONVERTER = pydantic_data_converter.payload_converter


def _bytes(events: list[Event]) -> int:
    return sum(CONVERTER.to_payloads([event])[0].ByteSize() for event in events)


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> tuple[EventMailboxWorkflow, list[datetime]]:
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    runtime = types.SimpleNamespace(
        payload_converter=lambda: CONVERTER,
        patched=lambda _patch_id: True,
        now=lambda: clock[0],
        info=lambda: types.SimpleNamespace(workflow_id="evt-t-e-k"),
        logger=workflows.mailbox.workflow.logger,
    )
    monkeypatch.setattr(workflows.mailbox, "workflow", runtime)
    state = types.SimpleNamespace(
        payload=CONVERTER.to_payloads([MailboxState(tenant="t", type="e", key="k")])[0]
    )
    return EventMailboxWorkflow(state), clock


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
