"""A run's host publishes only from its own workflow instance (issue 12).

A worker that shuts down drops the runs it still holds without tearing their coroutines down: the
garbage collector closes them later, on whichever thread it happens to run, and the engine's
``finally`` blocks (a step or a wait ends) then tell the host of the change. When that thread is
running another workflow's activation, ``workflow.*`` calls act on *that* instance: its commands
gained a search attribute upsert (or a patch marker) its code never asked for, and a replay of it
(a status query on an evicted run, a workflow task after eviction) failed with a nondeterminism
error ("UpsertWorkflowSearchAttributes vs ActivityTaskScheduled", "patch marker tenant-attribute
... no corresponding command"). In the test suite, earlier tests' workers are such dropped runs;
the SDK's deadlock interruption can leave them too.

Deterministic on a real dev server: the collector is held off while a worker holding a waiting
run shuts down, then runs inside another workflow's activation. Nothing of the dropped run may
reach that workflow's history.
"""

from __future__ import annotations

import gc
from datetime import timedelta

import httpx
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from interpreter.state import RunState
from tests.workflows.support import approvals_in_a_foreach, collector_held, events, start, unique, wait_state
from worker import build_worker


@workflow.defn(name="CollectsGarbage", sandboxed=False)
class _CollectsGarbage:
    """Another workflow, whose activation is where the collector happens to run."""

    @workflow.run
    async def run(self) -> int:
        found = gc.collect()
        await workflow.sleep(0.01)
        return found


async def test_a_dropped_runs_clean_up_never_reaches_another_workflows_history(
    client: Client, task_queue: str, http_client: httpx.AsyncClient
) -> None:
    doc = approvals_in_a_foreach("dropped")
    other_queue = f"{task_queue}-other"
    with collector_held():
        async with build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)):
            run = await start(client, task_queue, doc)
            await wait_state(run, RunState.AWAITING_APPROVAL, timeout=60)
        # The worker is gone; the run's suspended coroutines wait for the collector.
        async with build_worker(
            client,
            other_queue,
            http_client,
            extra_workflows=[_CollectsGarbage],
            graceful_shutdown_timeout=timedelta(0),
        ):
            other = await client.start_workflow(
                _CollectsGarbage.run,
                id=unique("collects-garbage"),
                task_queue=other_queue,
                execution_timeout=timedelta(minutes=2),
            )
            assert await other.result() > 0  # the dropped run's objects were collected there
    assert await events(other, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == []
    assert await events(other, EventType.EVENT_TYPE_MARKER_RECORDED) == []
    await run.terminate("test over")
