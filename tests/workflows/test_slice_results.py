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
from tests.record_histories import _fan_out
from tests.workflows.support import (
    events,
    record,
    recorded_input_and_result,
    replays_as_recorded,
    start,
    status,
    unique,
)
from workflows.generic import ENGINE_LEVEL, PATCH_LEVELS, PATCH_SLICE_RESULTS_OUTPUT

LEVEL = PATCH_LEVELS[PATCH_SLICE_RESULTS_OUTPUT]


def _document() -> dict[str, Any]:
    """The fan-out the replay histories record (7 items in slices of 3), under a name of its own."""
    return {**_fan_out(""), "name": unique("slice-results")}


def test_the_patch_is_of_this_generation() -> None:
    assert LEVEL == 25 <= ENGINE_LEVEL


@pytest.mark.parametrize("level", [ENGINE_LEVEL, LEVEL - 1, 0])
async def test_a_slice_returns_its_output_alone_from_generation_25(
    level: int, client: Client, task_queue: str, worker: Worker
) -> None:
    run_input = {"label": "x", "items": [1, 2, 3, 4, 5, 6, 7]}
    handle = await start(client, task_queue, _document(), run_input, engine_level=level)
    result: RunResult = await handle.result()
    assert result.state == RunState.COMPLETED
    assert record(result, "loop").output == [2, 5, 8, 11, 14, 17, 20]  # 2 * item + index

    slice_ = client.get_workflow_handle(f"{handle.id}/loop/batch-1")
    _, raw = await recorded_input_and_result(slice_)
    recorded = json.loads(raw)
    assert recorded["output"] == {"results": [11, 14, 17]}
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
    assert [r.path for r in (await status(slice_)).steps] == [
        "loop[3].double",
        "loop[4].double",
        "loop[5].double",
    ]
    await replays_as_recorded(handle, slice_)
