"""More open child runs than the server lets a run have pending (its
``limit.numPendingChildExecutions.error``), on a real dev server with that limit lowered to 4 (and the
worker's cap, ``workflows.generic.MAX_PENDING_CHILDREN``, lowered to match, as an operator of such a
cluster would build it). Found by an attacker's probe: a foreach of detached subflows whose
children wait for a person, or a foreach of waited subflows at a concurrency over the limit, had
its workflow task's commands refused by the server on every retry, the run stuck running. Now a
waited child waits its turn (the run completes, every child once) and a detached one over the cap
fails its step (``SubflowLimitExceeded``), which the definition's ``on_failure`` handles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

import workflows.generic
from activities.dead_letters import build_store_activities
from activities.store.database import Database
from interpreter.state import RunState
from starter.client import FlowClient
from tests.workflows.limited_server import start_limited_server
from tests.workflows.support import events, unique
from worker import build_worker

LIMIT = 4


@pytest_asyncio.fixture(loop_scope="session")
async def child_limited_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_limited_server({"limit.numPendingChildExecutions.error": LIMIT})
    try:
        yield env
    finally:
        await env.shutdown()


def _spawner(**foreach: Any) -> dict[str, Any]:
    return {
        "name": unique("spawner"),
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": "range(8) | list",
                **foreach,
            }
        ],
        "output": {"children": "{{ steps.each.output }}"},
    }


async def test_fanned_out_slices_over_the_pending_child_limit_wait_their_turn(
    child_limited_env: WorkflowEnvironment,
    task_queue: str,
    database: Database,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workflows.generic, "MAX_PENDING_CHILDREN", LIMIT)
    client = child_limited_env.client
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    call = {"id": "call", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}
    # Eight slices of one item, all at once: twice what the server lets the run have open.
    document = _spawner(concurrency=8, fan_out_above=0, batch_size=1, steps=[call])
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
    ):
        run = await flows.start_run(document)
        result = await run.result(timeout=90)
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"children": list(range(8))}
    assert await _refused_tasks(client, run.workflow_id) == 0
    assert await _started(client, run.workflow_id) == 8


async def _refused_tasks(client: Client, workflow_id: str) -> int:
    return len(
        await events(client.get_workflow_handle(workflow_id), EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    )


async def _started(client: Client, workflow_id: str) -> int:
    handle = client.get_workflow_handle(workflow_id)
    return len(await events(handle, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED))


@pytest.mark.parametrize("wait", [True, False], ids=["waited", "detached"])
async def test_children_over_the_pending_child_limit_wait_their_turn_or_fail_their_step(
    child_limited_env: WorkflowEnvironment,
    task_queue: str,
    database: Database,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    wait: bool,
) -> None:
    monkeypatch.setattr(workflows.generic, "MAX_PENDING_CHILDREN", LIMIT)
    client = child_limited_env.client
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    child = unique("child")
    if wait:  # each child naps, then closes: the next ones start as slots free up
        body: dict[str, Any] = {"id": "nap", "type": "delay", "duration": "1s"}
    else:  # each child waits for a person: open far longer than the parent runs
        body = {"id": "ok", "type": "approval", "approvers": ["manager"]}
    await flows.register({"name": child, "steps": [body]}, author="eve")
    subflow = {"id": "sub", "type": "subflow", "definition": child, "wait": wait, "on_failure": "continue"}
    document = _spawner(concurrency=8, steps=[subflow])
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(
            client,
            task_queue,
            http_client,
            extra_activities=build_store_activities(database.session_factory),
            graceful_shutdown_timeout=timedelta(0),
        ),
    ):
        run = await flows.start_run(document)
        result = await run.result(timeout=90)
    assert result.state == RunState.COMPLETED, result.error
    assert await _refused_tasks(client, run.workflow_id) == 0  # no command refused by the server
    errors = [r.error_type for r in result.steps if r.id == "sub"]
    if wait:
        assert errors == [None] * 8  # every child ran, once
        assert await _started(client, run.workflow_id) == 8
    else:
        assert await _started(client, run.workflow_id) == LIMIT
        assert sorted(errors, key=str) == [None] * LIMIT + ["SubflowLimitExceeded"] * (8 - LIMIT)
        failed = next(r for r in result.steps if r.error_type == "SubflowLimitExceeded")
        assert f"has {LIMIT} child runs open" in (failed.error or "")
