"""Cancelling a run reaches the child it waits for after that child continued as new.

The adversary found it with nothing hostile: the SDK's cancellation of a child names the child's
first run, which is closed once the child continued as new (a long loop does so by itself, and a
fan-out slice whose items loop does too), so the request reached no run. A parent cancelled while
its child waited at an approval waited for ever; one whose child completed later completed, its
cancellation lost and its compensations not run (patch ``child-cancel-by-id``: the parent asks the
child's chain by its workflow id as well).

Real dev server, the product's worker and registry (embedded PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from interpreter.state import RunState, RunStatus
from starter.client import FlowClient, StarterError
from tests.workflows.support import (
    compensated_echo,
    counting_loop,
    definition,
    eventually,
    start,
    status,
    unique,
)
from workflows.generic import ENGINE_LEVEL

TURNS = 40
"""Loop turns before the child waits: enough to continue as new under a budget of 100 events."""


def _loop_then_wait(turns: int) -> list[dict[str, Any]]:
    """A loop of ``turns`` echo steps, then an approval nobody decides."""
    return [
        {"id": "init", "type": "set", "vars": {"c": 0}},
        *counting_loop("c", "c", turns),
        {"id": "ok", "type": "approval", "approvers": ["manager"]},
    ]


def _status_of(flows: FlowClient, workflow_id: str) -> Callable[[], Awaitable[RunStatus | None]]:
    """The run's status, None while it does not exist yet."""

    async def probe() -> RunStatus | None:
        try:
            return await flows.status(workflow_id)
        except StarterError:
            return None

    return probe


def _waiting_after_continuing(s: RunStatus | None) -> bool:
    return s is not None and bool(s.pending_approvals) and s.continued >= 1


def _booked(undo: str) -> dict[str, Any]:
    return compensated_echo(f"book-{undo}", "booked", undo, undo)


async def _ends_cancelled(flows: FlowClient, workflow_id: str) -> None:
    result = await flows.result(workflow_id, timeout=90)
    assert result.state == RunState.CANCELLED, (result.state, result.error)


async def test_a_cancelled_parent_cancels_its_subflow_that_continued_as_new(
    flows: FlowClient, client: Client, store_worker: Worker
) -> None:
    child = unique("child")
    await flows.register(
        {
            "name": child,
            "limits": {"history_budget": 100, "max_step_executions": 10_000},
            "steps": [_booked("child-undo"), *_loop_then_wait(TURNS)],
        },
        author="ann",
    )
    parent = {
        "name": unique("parent"),
        "steps": [_booked("parent-undo"), {"id": "sub", "type": "subflow", "definition": child}],
    }
    run = await flows.start_run(parent, {})
    child_id = f"{run.workflow_id}/sub"

    await eventually(
        _status_of(flows, child_id), _waiting_after_continuing, timeout=120, what="child waiting"
    )
    await flows.cancel(run.workflow_id, "ops", "stop it")

    await _ends_cancelled(flows, run.workflow_id)
    child_status = await flows.status(child_id)
    assert child_status.state == RunState.CANCELLED
    steps = {r.path for r in child_status.steps}
    assert "compensate/book-child-undo/child-undo" in steps  # the child compensated
    parent_status = await flows.status(run.workflow_id)
    assert "compensate/book-parent-undo/parent-undo" in {r.path for r in parent_status.steps}


async def test_a_cancelled_parent_cancels_its_fan_out_slices_that_continued_as_new(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("fan-cancel"),
        [
            _booked("parent-undo"),
            {
                "id": "each",
                "type": "foreach",
                "items": "range(4) | list",
                "fan_out_above": 2,
                "batch_size": 2,
                "concurrency": 2,
                "steps": _loop_then_wait(30),
            },
        ],
        limits={"history_budget": 100, "max_step_executions": 10_000},
    )
    handle = await start(
        client, task_queue, doc, engine_level=ENGINE_LEVEL, execution_timeout=timedelta(minutes=5)
    )
    flows = FlowClient(client, task_queue=task_queue)
    slice_ids = [f"{handle.id}/each/batch-{k}" for k in range(2)]

    for slice_id in slice_ids:
        await eventually(_status_of(flows, slice_id), _waiting_after_continuing, timeout=120, what=slice_id)
    await flows.cancel(handle.id, "ops", "stop it")

    await _ends_cancelled(flows, handle.id)
    for slice_id in slice_ids:
        described = await client.get_workflow_handle(slice_id).describe()
        assert described.status == WorkflowExecutionStatus.CANCELED, (slice_id, described.status)
    final = await status(handle)
    assert "compensate/book-parent-undo/parent-undo" in {r.path for r in final.steps}
