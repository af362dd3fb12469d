"""A long loop of steps that call nothing runs in workflow tasks of at most ``TASK_STEP_BUDGET``
steps (patch ``task-step-budget``): one task running it all went past the SDK's deadlock limit
on a busy machine and failed again on every retry."""

from __future__ import annotations

from typing import Any

from interpreter.engine import PATCH_TASK_STEP_BUDGET, TASK_STEP_BUDGET
from interpreter.state import RunState
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import run


def _loop(turns: int) -> list[dict[str, Any]]:
    return [
        {"id": "init", "type": "set", "vars": {"i": 0}},
        {"id": "bump", "type": "set", "vars": {"i": "{{ vars.i + 1 }}"}, "max_visits": turns},
        {
            "id": "again",
            "type": "condition",
            "if": f"vars.i < {turns}",
            "then": {"goto": "bump"},
            "max_visits": turns,
        },
        {"id": "done", "type": "succeed", "output": {"turns": "{{ vars.i }}"}},
    ]


async def test_a_long_loop_of_steps_that_call_nothing_ends_a_task_every_budget_of_steps() -> None:
    turns = 1600  # 3,202 steps: three tasks of 1,000 and the rest
    result, _, rt = await run(_loop(turns), limits={"max_step_executions": 2 * turns + 2})
    assert result.state == RunState.COMPLETED
    assert result.output == {"turns": turns}
    assert len(result.steps) == 2 * turns + 2
    pauses = [s for s in rt.sleeps if "steps ran without a pause" in s.summary]
    assert len(pauses) == (2 * turns + 2 - 1) // TASK_STEP_BUDGET == 3
    assert all(p.seconds == 0.001 for p in pauses)
    # The pause comes before the step past the budget, which its summary names: step 1,001 is
    # the 500th "again" (init, then bump and again in turn).
    assert pauses[0].summary == f"again: {TASK_STEP_BUDGET} steps ran without a pause"


async def test_steps_between_calls_count_per_task_and_a_run_before_the_patch_does_not_pause() -> None:
    """An action's result starts a new task: steps around calls never add up across them."""
    steps: list[dict[str, Any]] = [
        {"id": "start", "type": "set", "vars": {"k": 0}},
        {"id": "work", "type": "task", "action": "echo", "input": {"value": 1}, "max_visits": 10},
        {"id": "init", "type": "set", "vars": {"i": 0}, "max_visits": 10},
        {"id": "bump", "type": "set", "vars": {"i": "{{ vars.i + 1 }}"}, "max_visits": 2000},
        {
            "id": "again",
            "type": "condition",
            "if": "vars.i < 400",
            "then": {"goto": "bump"},
            "max_visits": 2000,
        },
        {"id": "reset", "type": "set", "vars": {"k": "{{ vars.k + 1 }}"}, "max_visits": 10},
        {"id": "more", "type": "condition", "if": "vars.k < 5", "then": {"goto": "work"}, "max_visits": 10},
    ]
    result, _, rt = await run(steps, limits={"max_step_executions": 5000})
    assert result.state == RunState.COMPLETED
    assert len(rt.calls) == 5
    assert len(result.steps) > 4000  # 5 x 803 steps after a call, each time within the budget
    assert rt.sleeps == []
    old = FakeRuntime()
    old.declined.add(PATCH_TASK_STEP_BUDGET)
    result, _, old = await run(_loop(1600), old, limits={"max_step_executions": 3202})
    assert result.state == RunState.COMPLETED
    assert old.sleeps == []
