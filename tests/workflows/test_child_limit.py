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
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import workflows.generic
from activities.dead_letters import build_store_activities
from activities.store.database import Database
from interpreter.state import RunState
from starter.client import FlowClient
from tests.workflows.limited_server import start_limited_server
from tests.workflows.support import events, eventually, terminated_too_large, unique
from worker import build_worker
from workflows.generic import ENGINE_LEVEL, PATCH_LEVELS, PATCH_SLOT_SEND_PACING

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


def _worker(client: Client, task_queue: str, http_client: httpx.AsyncClient, database: Database) -> Worker:
    """The product's worker with the registry's activities (subflows resolve through them)."""
    return build_worker(
        client,
        task_queue,
        http_client,
        extra_activities=build_store_activities(database.session_factory),
        graceful_shutdown_timeout=timedelta(0),
    )


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
    async with httpx.AsyncClient() as http_client, _worker(client, task_queue, http_client, database):
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


def _quiet(history: list[HistoryEvent]) -> bool:
    """Whether the parent has done all it can (its last workflow task completed, no timer and no
    activity pending): its eight subflows resolved, four started, four paced and waiting for slots."""
    kinds = [e.event_type for e in history]
    resolved = kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    timers = kinds.count(EventType.EVENT_TYPE_TIMER_STARTED) - kinds.count(EventType.EVENT_TYPE_TIMER_FIRED)
    started = kinds.count(EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
    return (
        resolved == 2 * LIMIT
        and started == LIMIT
        and timers == 0
        and kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )


@pytest.mark.parametrize("level", [PATCH_LEVELS[PATCH_SLOT_SEND_PACING] - 1, ENGINE_LEVEL])
async def test_children_whose_slots_free_together_start_over_several_workflow_tasks(
    child_limited_env: WorkflowEnvironment,
    task_queue: str,
    database: Database,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    level: int,
) -> None:
    # Patch slot-send-pacing. Four detached children (each waiting for a person) hold every slot;
    # four waited-for subflows, each sending 1.3 MB, are paced and wait for slots. The detached
    # children are terminated while the worker is down, so their four closures reach the parent in
    # one workflow task. Before, the four waiting starts went out in that task, 5.2 MB in one
    # completion: the server refused it and terminated the run. Now each is paced again where it
    # starts, and the run completes.
    monkeypatch.setattr(workflows.generic, "MAX_PENDING_CHILDREN", LIMIT)
    client = child_limited_env.client
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    flows.engine_level = level
    holder, taker = unique("holder"), unique("taker")
    await flows.register(
        {"name": holder, "steps": [{"id": "ok", "type": "approval", "approvers": ["manager"]}]}, author="eve"
    )
    await flows.register(
        {
            "name": taker,
            "steps": [{"id": "count", "type": "succeed", "output": "{{ (input.a + input.b) | length }}"}],
        },
        author="eve",
    )

    def each(step: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "type": "foreach",
            "items": f"range({LIMIT}) | list",
            "concurrency": LIMIT,
            "steps": [step],
            **extra,
        }

    document = {
        "name": unique("freed"),
        "steps": [
            {"id": "hold", **each({"id": "h", "type": "subflow", "definition": holder, "wait": False})},
            {
                "id": "take",
                **each(
                    {
                        "id": "t",
                        "type": "subflow",
                        "definition": taker,
                        # (Two templates: one renders at most 1 MiB.)
                        "input": {"a": "{{ input.a }}", "b": "{{ input.b }}"},
                    },
                    output="{{ steps.t.output.output }}",
                ),
            },
        ],
        "output": {"rows": "{{ steps.take.output }}"},
    }
    async with httpx.AsyncClient() as http_client:
        async with _worker(client, task_queue, http_client, database):
            run = await flows.start_run(document, {"a": ["x" * 1000] * 650, "b": ["y" * 1000] * 650})
            parent = client.get_workflow_handle(run.workflow_id)
            history = await eventually(
                lambda: events(parent), _quiet, timeout=60, what="four children open, four waiting"
            )
        holders = [e.child_workflow_execution_started_event_attributes.workflow_execution for e in history]
        holders = [h for h in holders if h.workflow_id]
        assert len(holders) == LIMIT
        for execution in holders:  # no worker: their closures wait for the parent's next task together
            await client.get_workflow_handle(execution.workflow_id, run_id=execution.run_id).terminate()
        async with _worker(client, task_queue, http_client, database):
            if level < ENGINE_LEVEL:
                # The finding, kept for runs of the generation before.
                await terminated_too_large(parent)
                return
            result = await run.result(timeout=90)
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"rows": [1300] * LIMIT}
    initiated = await events(parent, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    takers = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_task_completed_event_id
        for e in initiated[LIMIT:]
    ]
    assert len(set(takers)) == LIMIT  # 1.3 MB each: one start a workflow task
