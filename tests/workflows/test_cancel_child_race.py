"""A parent cancelled as the child it waits for ends does not go on as if it had not been.

The adversary found it with nothing hostile: a parent cancelled while its waited-for subflow was
completing (someone approved the child as an operator cancelled the parent) took the child's result
in the same wait that its cancellation came to, and went on: its next steps ran and it completed,
the cancellation lost. The same for a child that failed: the step's ``on_failure: continue`` took
the run on (patch ``child-cancel-kept``).

To make the race certain rather than likely, the parent's workflow tasks are held (a worker that
serves the parent's workflow type with a workflow that fails every task) while the cancellation
and then the child's end enter the parent's history; the product's worker then takes the parent
and sees both in one workflow task, the cancellation first.

Real dev server, the product's worker and registry (embedded PostgreSQL).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from activities.dead_letters import build_store_activities
from activities.store.database import Database
from interpreter.state import RunState, StepStatus
from starter.client import FlowClient
from tests.workflows.support import compensated_echo, events, eventually, replays_as_recorded, unique
from worker import build_worker
from workflows.generic import ENGINE_LEVEL, PATCH_CHILD_CANCEL_KEPT, PATCH_LEVELS

PARENT = "cancel-race-parent"
"""The parent's definition name, so its workflow type (each test's queue is its own)."""


@workflow.defn(name=PARENT, sandboxed=False)
class Held:
    """Serves the parent's workflow type and fails every workflow task it is given: while it
    does, the parent's history grows and nothing of it runs."""

    @workflow.run
    async def run(self, argument: Any) -> None:
        raise RuntimeError("held by the test: this workflow task fails and is retried")


def _worker(
    client: Client, task_queue: str, http: httpx.AsyncClient, database: Database, *extra: type
) -> Worker:
    return build_worker(
        client,
        task_queue,
        http,
        extra_workflows=extra,
        extra_activities=build_store_activities(database.session_factory),
        graceful_shutdown_timeout=timedelta(0),
    )


@pytest.mark.parametrize(
    ("ending", "level"),
    [
        ("completes", ENGINE_LEVEL),
        ("fails", ENGINE_LEVEL),
        # A run of the generation before the patch (started by the previous build) asks it: a
        # marker, where the race happens, and the same outcome.
        ("completes", PATCH_LEVELS[PATCH_CHILD_CANCEL_KEPT] - 1),
    ],
)
async def test_a_parent_cancelled_as_its_child_ends_is_cancelled_and_runs_no_further_step(
    ending: str,
    level: int,
    flows: FlowClient,
    client: Client,
    task_queue: str,
    http_client: httpx.AsyncClient,
    database: Database,
) -> None:
    flows.engine_level = level
    child = unique("child")
    decision = "approved" if ending == "completes" else "rejected"
    await flows.register(
        {"name": child, "steps": [{"id": "ok", "type": "approval", "approvers": ["manager"]}]}, author="ann"
    )
    document = {
        "name": PARENT,
        "steps": [
            compensated_echo("book", "booked", "unbook", "unbooked"),
            {"id": "sub", "type": "subflow", "definition": child, "on_failure": "continue"},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "must not run"}},
        ],
    }
    async with _worker(client, task_queue, http_client, database):
        parent = await flows.start_run(document)
        child_run = flows.get_run(f"{parent.workflow_id}/sub")

        async def child_waits() -> bool:
            try:
                return bool((await child_run.status()).pending_approvals)
            except Exception:  # not started yet
                return False

        await eventually(child_waits, bool, timeout=60, what="the child waiting at its approval")

    async with _worker(client, task_queue, http_client, database, Held):
        # The cancellation enters the parent's history first (an operator's, as the Web UI's
        # button sends it), then the child's end; the parent runs neither until the next worker.
        await client.get_workflow_handle(parent.workflow_id).cancel()
        if decision == "approved":
            await child_run.approve("manager")
        else:
            await child_run.reject("manager")
        child_handle = client.get_workflow_handle(child_run.workflow_id)

        async def child_closed() -> bool:
            return (await child_handle.describe()).status != WorkflowExecutionStatus.RUNNING

        await eventually(child_closed, bool, timeout=60, what="the child's end")

    async with _worker(client, task_queue, http_client, database):
        result = await parent.result(timeout=90)
    assert result.state == RunState.CANCELLED, (result.state, result.error)
    by_id = {r.id: r for r in result.steps}
    assert "after" not in by_id  # the run did not go on past the subflow
    assert by_id["sub"].status == StepStatus.CANCELLED
    assert by_id["unbook"].output == "unbooked"  # the parent's compensations ran
    handle = client.get_workflow_handle(parent.workflow_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    markers = [e.SerializeToString() for e in await events(handle, EventType.EVENT_TYPE_MARKER_RECORDED)]
    asked = any(PATCH_CHILD_CANCEL_KEPT.encode() in marker for marker in markers)
    assert asked == (level < PATCH_LEVELS[PATCH_CHILD_CANCEL_KEPT]), markers
    await replays_as_recorded(handle)
