"""Payload budgets: an output that would bring the run's state past its budget fails its step, and
the step's ``on_failure`` handles it; nothing is left for Temporal to refuse later."""

from __future__ import annotations

from typing import Any

from interpreter.sizes import RUN_STATE_BUDGET, json_size
from interpreter.state import RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import rec, run, task

BIG = "x" * (RUN_STATE_BUDGET // 3 - 100)  # three fit, the fourth does not


async def test_a_task_output_over_the_budget_is_a_step_failure_on_failure_handles() -> None:
    rt = FakeRuntime()
    rt.returning("echo", BIG)
    steps: list[dict[str, Any]] = [
        task("a"),
        task("b"),
        task("c", on_failure="continue"),
        task("d", on_failure="continue"),
    ]
    result, _, _ = await run(steps, rt)
    assert result.state == RunState.COMPLETED
    assert rec(result, "a").status == StepStatus.COMPLETED
    assert rec(result, "b").status == StepStatus.COMPLETED
    assert rec(result, "c").status == StepStatus.COMPLETED
    failed = rec(result, "d")
    assert failed.status == StepStatus.FAILED
    assert failed.error_type == "StateBudgetExceeded"
    assert f"budget of {RUN_STATE_BUDGET} bytes" in (failed.error or "")
    assert json_size(result.model_dump(mode="json")) < 2 * 1024 * 1024


async def test_a_foreach_adding_up_past_the_budget_fails_the_run_with_a_message() -> None:
    """The probe that left a run RUNNING forever: 450 items of 2.5 KB each, collected."""
    rt = FakeRuntime()
    rt.returning("echo", "y" * 2500)
    steps: list[dict[str, Any]] = [
        {
            "id": "each",
            "type": "foreach",
            "items": "range(450) | list",
            "max_items": 1000,
            "steps": [task("item")],
        }
    ]
    result, _, _ = await run(steps, rt)
    assert result.state == RunState.FAILED
    assert result.error_type == "StateBudgetExceeded"
    assert json_size(result.model_dump(mode="json")) < 2 * 1024 * 1024


async def test_within_the_budget_nothing_changes() -> None:
    rt = FakeRuntime()
    rt.returning("echo", "z" * 10_000)
    result, _, _ = await run([task(f"s{i}") for i in range(20)], rt)
    assert result.state == RunState.COMPLETED
