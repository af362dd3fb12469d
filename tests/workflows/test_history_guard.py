"""The history guard (patch ``history-guard``): where a run cannot continue as new (inside a
``parallel`` or ``foreach`` branch), a step does not start once the run's history is near Temporal's
limit; the run fails in words and compensates instead of being terminated by the server.

Real dev server, the product's worker. The guard is 40,000 events; these tests lower it (the
workflow runs outside the sandbox, so the module's constant is what the worker reads) to reach it
in seconds rather than minutes.
"""

from __future__ import annotations

import json
import re
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
    replays_as_recorded,
    start,
    status,
    unique,
)
from workflows.generic import ENGINE_LEVEL

GUARD = 150
"""The lowered guard, in events."""


def _document() -> dict[str, Any]:
    return definition(
        unique("guard"),
        [
            compensated_echo("charge", "charged", "refund", "refunded"),
            {
                "id": "fan",
                "type": "parallel",
                "join": "all",
                "branches": [
                    {
                        "id": "many",
                        "steps": [
                            {
                                "id": "each",
                                "type": "foreach",
                                "items": "range(60) | list",
                                "concurrency": 1,
                                "steps": [
                                    {"id": "ping", "type": "task", "action": "echo", "input": {"value": 1}}
                                ],
                            }
                        ],
                    },
                    {
                        "id": "one",
                        "steps": [{"id": "side", "type": "task", "action": "echo", "input": {"value": 2}}],
                    },
                ],
            },
            {"id": "after", "type": "task", "action": "echo", "input": {"value": 3}},
        ],
    )


def _guard_markers(history: list[Any]) -> list[Any]:
    return [
        e
        for e in history
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
        and json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        == interpreter.engine.PATCH_HISTORY_GUARD
    ]


@pytest.mark.parametrize("level", [0, ENGINE_LEVEL])
async def test_a_loop_in_a_parallel_branch_stops_at_the_guard_and_compensates(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    monkeypatch.setattr(interpreter.engine, "HISTORY_GUARD_EVENTS", GUARD)
    handle = await start(client, task_queue, _document(), engine_level=level)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "HistoryLimit"
    reached = re.search(r"history reached (\d+) events", cause.message)
    assert reached is not None, cause.message
    assert GUARD <= int(reached.group(1)) < GUARD + 20, cause.message
    assert "cannot continue as new" in cause.message

    final = await status(handle)
    assert final.state == RunState.FAILED
    by_path = {r.path: r for r in final.steps}
    assert by_path["compensate/charge/refund"].output == "refunded"  # the compensation ran
    assert "after" not in by_path
    pings = [r for r in final.steps if r.path.endswith(".ping")]
    assert 0 < len(pings) < 60  # stopped in the middle of the loop

    history = await events(handle)
    assert len(history) < GUARD + 40  # stopped at the guard, not at Temporal's limit
    # Generation 0 asked the patch where it mattered (one marker); this build's generation did not.
    assert len(_guard_markers(history)) == (1 if level == 0 else 0)
    await replays_as_recorded(handle)


async def test_a_run_recorded_before_the_guard_replays_as_it_went_on(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded as the engine before the guard ran it (no guard: the loop runs to its end past what
    is now the guard), at generation 0: a worker with the guard replays it without stopping it (the
    patch is not in its history)."""
    monkeypatch.setattr(interpreter.engine, "HISTORY_GUARD_EVENTS", 10**9)
    handle = await start(client, task_queue, _document())
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    history = await events(handle)
    assert len(history) > GUARD
    assert _guard_markers(history) == []

    monkeypatch.setattr(interpreter.engine, "HISTORY_GUARD_EVENTS", GUARD)
    await replays_as_recorded(handle)
