"""The history guard for a fanned-out ``foreach`` (patch ``fan-out-history-guard``): its child runs
keep to the guard a run's own steps keep to. Each child adds events to its parent's history (its
start, its close and the workflow tasks they bring: about nine with ``concurrency: 1``); the whole
fan-out is one step, so before the patch the guard was consulted once, before its first child, and
``batch_size: 1`` over 10,000 items ran the parent into Temporal's 51,200 events, where the server
terminated it with no message and no compensation (found by an attacker's probe).

Real dev server, the product's worker; the guard is lowered (the workflow runs outside the sandbox,
so the module's constant is what the worker reads), as in ``test_history_guard.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import interpreter.engine
from interpreter.state import RunState
from tests.workflows.support import (
    compensated_echo,
    definition,
    events,
    patch_ids,
    replays_as_recorded,
    start,
    status,
    unique,
)
from workflows.generic import ENGINE_LEVEL

GUARD = 160
"""The lowered guard, in events."""


def _document(items: int) -> dict[str, Any]:
    """A charge to undo, then ``items`` items in one child run each, one at a time, then a step."""
    return definition(
        unique("fan-guard"),
        [
            compensated_echo("charge", "charged", "refund", "refunded"),
            {
                "id": "each",
                "type": "foreach",
                "items": f"range({items}) | list",
                "fan_out_above": 0,
                "batch_size": 1,
                "concurrency": 1,
                "steps": [{"id": "ping", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}],
            },
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "done"}},
        ],
    )


async def _guard_markers(client: Client, workflow_id: str) -> int:
    """How many times the run asked the patch (its markers)."""
    asked = [json.loads(data)["id"] for data in await patch_ids(client, workflow_id)]
    return asked.count(interpreter.engine.PATCH_FAN_OUT_HISTORY_GUARD)


async def _failed_by_the_guard(handle: Any) -> str:
    """The run's ``HistoryLimit`` message, after checking that it compensated and went no further."""
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "HistoryLimit", cause
    assert "larger batch_size" in cause.message
    final = await status(handle)
    assert final.state == RunState.FAILED
    by_path = {r.path: r for r in final.steps}
    assert by_path["compensate/charge/refund"].output == "refunded"  # the compensation ran
    assert "after" not in by_path
    return cause.message


@pytest.mark.parametrize("level", [0, ENGINE_LEVEL])
async def test_a_fan_out_stops_starting_children_at_the_guard_and_compensates(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    monkeypatch.setattr(interpreter.engine, "HISTORY_GUARD_EVENTS", GUARD)
    # 40 children fit the guard at three events each, but not at the nine each really costs.
    handle = await start(client, task_queue, _document(40), engine_level=level)
    message = await _failed_by_the_guard(handle)
    assert "as step 'each' was to start its child run" in message, message
    assert f"limits: {GUARD} events" in message

    history = await events(handle)
    children = [
        e for e in history if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    assert 0 < len(children) < 40  # stopped in the middle of the fan-out
    assert len(history) < GUARD + 40  # at the guard, not at Temporal's limit
    # Generation 0 asked the patch where it mattered (one marker); this build's generation did not.
    assert await _guard_markers(client, handle.id) == (1 if level == 0 else 0)
    await replays_as_recorded(handle)


async def test_a_fan_out_of_more_children_than_the_history_holds_starts_none(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interpreter.engine, "HISTORY_GUARD_EVENTS", GUARD)
    handle = await start(client, task_queue, _document(60), engine_level=ENGINE_LEVEL)
    message = await _failed_by_the_guard(handle)
    assert "step 'each' would start 60 child runs, which take at least 3 events each" in message, message

    history = await events(handle)
    children = [
        e for e in history if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    assert children == []
    await replays_as_recorded(handle)


async def test_a_fan_out_recorded_before_the_guard_replays_as_it_went_on(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded as the engine before the patch ran it (its fan-out went on past what is now the
    guard), at generation 0: a worker with the guard replays it without stopping it (the patch is
    not in its history)."""
    monkeypatch.setattr(interpreter.engine, "HISTORY_GUARD_EVENTS", 10**9)
    handle = await start(client, task_queue, _document(40))
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert [r.path for r in (await status(handle)).steps if r.path in ("each", "after")] == ["each", "after"]
    history = await events(handle)
    assert len(history) > GUARD
    assert await _guard_markers(client, handle.id) == 0

    monkeypatch.setattr(interpreter.engine, "HISTORY_GUARD_EVENTS", GUARD)
    await replays_as_recorded(handle)
