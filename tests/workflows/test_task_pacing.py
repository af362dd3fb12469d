"""A valid long loop of steps that call nothing (a ``set`` step may run 5,000 times) on the dev
server: its workflow tasks stay short (patch ``task-step-budget``), so a worker with a tight
deadlock limit runs it to the end; in one task it took seconds, and the task failed for ever.

The test counts the tasks, not their time: on a machine loaded enough, a short task may still pass
the tight limit now and then and be retried once (a CI run beside a CPU burner and two other CI
runs saw one such retry); the run ending, in tasks of at most ``TASK_STEP_BUDGET`` steps, is the
claim."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

import interpreter.engine
from interpreter.engine import TASK_STEP_BUDGET
from interpreter.state import RunState
from tests.workflows.support import definition, events, start, unique
from worker import build_worker, tolerate_slow_activations
from workflows.generic import END_TASK_ACTIVITY

SETS = 12
TURNS = 5000  # the most visits a step may declare: 12 x 5,000 = 60,000 steps, no call among them


def _long_loop() -> list[dict[str, Any]]:
    body = [
        {"id": f"set{k:02d}", "type": "set", "vars": {f"v{k}": "{{ vars.i }}"}, "max_visits": TURNS}
        for k in range(SETS - 2)
    ]
    return [
        {"id": "init", "type": "set", "vars": {"i": 0}},
        {"id": "bump", "type": "set", "vars": {"i": "{{ vars.i + 1 }}"}, "max_visits": TURNS},
        *body,
        {
            "id": "again",
            "type": "condition",
            "if": f"vars.i < {TURNS}",
            "then": {"goto": "bump"},
            "max_visits": TURNS,
        },
        {"id": "done", "type": "succeed", "output": {"turns": "{{ vars.i }}"}},
    ]


async def test_a_long_loop_runs_in_short_workflow_tasks_under_a_tight_deadlock_limit(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One run for the whole loop, as here it is the tasks within a run that are counted: the run's
    # work budget would continue it as new every 20,000 steps (tests/workflows/test_run_work_budget.py).
    monkeypatch.setattr(interpreter.engine, "RUN_WORK_BUDGET", 10**12)
    steps = SETS * TURNS + 2
    document = definition(unique("long-loop"), _long_loop(), limits={"max_step_executions": steps})
    async with build_worker(
        client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)
    ) as running:
        # 1.5 s instead of 8: the whole loop takes longer than that in one task, even on an idle
        # machine, so without the budget its task fails on every retry and the run never ends
        # (this test then fails at the execution timeout). A task of TASK_STEP_BUDGET steps takes a
        # fraction of it, though on a machine loaded enough one may pass it now and then: that
        # task fails once and its retry (one task's worth of replay per activation) goes on.
        tolerate_slow_activations(running, 1.5)
        handle = await start(client, task_queue, document, execution_timeout=timedelta(minutes=4))
        result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"turns": TURNS}
    markers = await events(handle, EventType.EVENT_TYPE_MARKER_RECORDED)
    pauses = [m for m in markers if END_TASK_ACTIVITY.encode() in m.SerializeToString()]
    assert len(pauses) == (steps - 1) // TASK_STEP_BUDGET
    failed = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
    print(
        f"\n{len(pauses) + 1} workflow tasks of at most {TASK_STEP_BUDGET} steps;"
        f" {len(await events(handle, *failed))} failed or timed out and were retried"
    )
