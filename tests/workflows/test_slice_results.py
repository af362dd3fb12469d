"""Patch ``slice-results-output`` (generation 25): a fan-out slice returns its output alone, without
its step records, which its parent never read (each record repeated its item's output).

On a dev server with the product's worker: a 7-item foreach fanned out in slices of 3, started at
this build's generation (the slices return their output alone, no marker), at generation 24 and at
0, as a raw client starts a run (the slices ask the patch: a marker, then their output alone). Each
slice still shows its steps in its ``status`` query, and the parent's and the slices' histories
replay. A slice recorded before the patch (``tests/histories/
foreach_fan_out_child_before_slice_results.json``, returning its records) replays as recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from interpreter.state import RunResult, RunState
from tests.workflows.support import (
    definition,
    events,
    recorded_input_and_result,
    replays_as_recorded,
    start,
    status,
    unique,
)
from workflows.generic import ENGINE_LEVEL, PATCH_LEVELS, PATCH_SLICE_RESULTS_OUTPUT

LEVEL = PATCH_LEVELS[PATCH_SLICE_RESULTS_OUTPUT]


def _document() -> dict[str, Any]:
    return definition(
        unique("slice-results"),
        [
            {
                "id": "loop",
                "type": "foreach",
                "items": "input.items",
                "concurrency": 2,
                "fan_out_above": 3,
                "batch_size": 3,
                "steps": [
                    {"id": "e", "type": "task", "action": "echo", "input": {"value": "{{ item * 10 }}"}}
                ],
                "output": "{{ steps.e.output }}",
            }
        ],
        output="{{ steps.loop.output }}",
    )


def test_the_patch_is_of_this_generation() -> None:
    assert LEVEL == ENGINE_LEVEL == 25


@pytest.mark.parametrize("level", [ENGINE_LEVEL, LEVEL - 1, 0])
async def test_a_slice_returns_its_output_alone_from_generation_25(
    level: int, client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await start(
        client, task_queue, _document(), {"items": [1, 2, 3, 4, 5, 6, 7]}, engine_level=level
    )
    result: RunResult = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == [10, 20, 30, 40, 50, 60, 70]

    slice_ = client.get_workflow_handle(f"{handle.id}/loop/batch-1")
    _, raw = await recorded_input_and_result(slice_)
    recorded = json.loads(raw)
    assert recorded["output"] == {"results": [40, 50, 60]}
    markers = await events(slice_, EventType.EVENT_TYPE_MARKER_RECORDED)
    asked = any(PATCH_SLICE_RESULTS_OUTPUT.encode() in e.SerializeToString() for e in markers)
    assert "steps" not in recorded
    assert asked == (level < LEVEL)  # a run of an earlier generation asks the patch (a marker)
    # What the parent's history received is what the slice returned.
    completed = await events(handle, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED)
    results = [
        json.loads(e.child_workflow_execution_completed_event_attributes.result.payloads[0].data)
        for e in completed
    ]
    assert len(results) == 3
    assert all(r == {"state": "completed", "output": {"results": r["output"]["results"]}} for r in results)
    # The slice still shows every step it ran.
    assert [r.path for r in (await status(slice_)).steps] == ["loop[3].e", "loop[4].e", "loop[5].e"]
    await replays_as_recorded(handle, slice_)
