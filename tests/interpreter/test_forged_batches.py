"""A fanned-out foreach's child runs the slice its input carries. Its parent sends at most
``batch_size`` items (at most 1,000) and at most the step's ``concurrency`` (at most 100); a raw
client can start a run with a slice of any size and any concurrency. A forged slice of 5,000 items
running 5,000 at once scheduled them all in one workflow task (far past the server's 2,000 pending
activities a run may have): the task failed on every retry and the worker ground to a halt.
Such a slice now fails the run, ``InvalidBatch``, before any item runs."""

from __future__ import annotations

from interpreter.engine import PATCH_BATCH_BOUNDS, Engine, RunInfo
from interpreter.model import FAN_OUT_MAX_BATCH_SIZE, parse_definition
from interpreter.state import ForeachBatch, RunResult, RunState
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import make_definition, new_runtime, task


async def _child(batch: ForeachBatch, *, declined: bool = False) -> tuple[RunResult, FakeRuntime]:
    definition = make_definition(
        [
            {
                "id": "each",
                "type": "foreach",
                "items": "range(300) | list",
                "concurrency": 4,
                "steps": [task("say", input={"value": "{{ item }}"})],
            }
        ],
        limits={"max_step_executions": 2 * FAN_OUT_MAX_BATCH_SIZE},
    )
    rt = new_runtime()
    if declined:
        rt.declined.add(PATCH_BATCH_BOUNDS)
    info = RunInfo("wf-1/each/batch-0", "run-0", rt.now())
    return await rt.run(Engine(definition, {}, rt, info, batch=batch).run()), rt


def _batch(items: int, concurrency: int) -> ForeachBatch:
    return ForeachBatch(
        step_id="each", path="each", offset=0, items=list(range(items)), concurrency=concurrency
    )


async def test_a_slice_as_large_as_a_parent_sends_runs() -> None:
    result, rt = await _child(_batch(FAN_OUT_MAX_BATCH_SIZE, 4))
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"results": [{"value": i} for i in range(FAN_OUT_MAX_BATCH_SIZE)]}
    assert len(rt.calls) == FAN_OUT_MAX_BATCH_SIZE


async def test_a_slice_larger_than_any_parent_sends_fails_the_run_before_any_item() -> None:
    result, rt = await _child(_batch(FAN_OUT_MAX_BATCH_SIZE + 1, 4))
    assert (result.state, result.error_type) == (RunState.FAILED, "InvalidBatch")
    assert result.error == (
        "the foreach 'each' slice has 1001 items; a fanned-out foreach's child runs at most 1000"
    )
    assert rt.calls == []


async def test_a_slice_running_more_items_at_once_than_its_step_fails_the_run_before_any_item() -> None:
    result, rt = await _child(_batch(50, 50))
    assert (result.state, result.error_type) == (RunState.FAILED, "InvalidBatch")
    assert result.error == (
        "the foreach 'each' slice runs 50 items at once; its step runs at most 4 (concurrency)"
    )
    assert rt.calls == []


async def test_a_run_recorded_before_the_bound_runs_its_slice_as_it_did() -> None:
    result, rt = await _child(_batch(50, 50), declined=True)
    assert result.state == RunState.COMPLETED, result.error
    assert len(rt.calls) == 50
    assert result.output == {"results": [{"value": i} for i in range(50)]}


async def test_with_duplicate_ids_a_slice_is_checked_against_the_most_its_steps_allow() -> None:
    """A raw client's definition may repeat an id (its whole-tree checks skipped): the slice the
    first ``each`` sends (three at once) is not refused for the second's concurrency of one."""
    definition = parse_definition(
        {
            "name": "twice",
            "steps": [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "range(300) | list",
                    "concurrency": 10,
                    "steps": [task("say", input={"value": "{{ item }}"})],
                },
                {"id": "each", "type": "foreach", "items": "[1]", "steps": [task("again")]},
            ],
        }
    )
    rt = new_runtime()
    info = RunInfo("wf-1/each/batch-0", "run-0", rt.now())
    result = await rt.run(Engine(definition, {}, rt, info, batch=_batch(100, 3)).run())
    assert result.error_type != "InvalidBatch", result.error
    assert len(rt.calls) == 100
