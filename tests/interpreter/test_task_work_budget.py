"""Template work in one workflow task is bounded in total: concurrent items that each evaluate a
template near its own budget would together hold the workflow task past Temporal's 2-second deadlock
limit (and the task would be retried for ever); past the total, the evaluating step fails instead."""

from __future__ import annotations

from typing import Any

from interpreter.engine import TASK_WORK_BUDGET
from interpreter.state import RunState
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import run, task

NEAR_BUDGET = "{% for a in range(1000) %}{% set y = input['items']|map('string')|join(',') %}{% endfor %}ok"


def foreach(template: str, concurrency: int) -> list[dict[str, Any]]:
    return [
        {
            "id": "each",
            "type": "foreach",
            "items": "range(100) | list",
            "concurrency": concurrency,
            "steps": [
                {"id": "s", "type": "set", "vars": {"x": template}},
                {"id": "wait", "type": "delay", "duration": "1s"},
                task("t"),
            ],
        }
    ]


async def test_concurrent_heavy_templates_fail_the_step_instead_of_the_workflow_task() -> None:
    result, _, _ = await run(foreach(NEAR_BUDGET, 100), FakeRuntime(), {"items": list(range(30))})
    assert result.state == RunState.FAILED
    assert result.error_type == "TemplateError"
    assert f"more than {TASK_WORK_BUDGET} operations in one workflow task" in (result.error or "")


async def test_the_same_templates_one_at_a_time_succeed() -> None:
    # Each item's action completes in a later task: the work is spread and every item finishes.
    result, _, rt = await run(foreach(NEAR_BUDGET, 1), FakeRuntime(), {"items": list(range(30))})
    assert result.state == RunState.COMPLETED, result.error
    assert len(rt.calls) == 100


async def test_light_templates_at_full_concurrency_are_untouched() -> None:
    result, _, _ = await run(foreach("{{ item }}-{{ input.items[0] }}", 100), FakeRuntime(), {"items": [1]})
    assert result.state == RunState.COMPLETED
