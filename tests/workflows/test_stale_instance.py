"""A run's host publishes only from its own workflow instance (issue 12).

The engine tells the host of changes from ``finally`` blocks, and those also run when Python closes
the suspended coroutine of a run the worker dropped (an evicted run's tasks left behind by the
SDK's deadlock interruption, finalized by the garbage collector on whichever thread it runs). When
that thread is running another workflow's activation, ``workflow.*`` calls act on that other
instance: its commands gained a search attribute upsert (or a patch marker) its own code never
asked for, which the next replay reported as a nondeterminism error ("UpsertWorkflowSearchAttributes
vs ActivityTaskScheduled", "patch marker tenant-attribute ... no corresponding command").

The test makes that happen deterministically on a real dev server: a run waits at an approval
(CurrentStep published), and another workflow's activation runs what the finalizer of that run's
wait runs, the wait's end telling the host. Nothing may reach the other workflow's history, and
the run itself goes on as before.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from interpreter.state import Decision, RunState
from tests.workflows.stale_workflows import OtherWorkflow, RecordedRun, stale_runs
from tests.workflows.support import definition, events, replay, start, unique, wait_state
from worker import PASSTHROUGH_MODULES, build_activities
from workflows.generic import WORKFLOWS


def _runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            *PASSTHROUGH_MODULES, "tests.workflows.stale_runs"
        )
    )


async def test_a_run_never_publishes_into_another_workflows_instance(client: Client, task_queue: str) -> None:
    doc = definition(
        unique("stale-host"),
        [
            {"id": "review", "type": "approval", "approvers": ["alice"]},
            {"id": "after", "type": "set", "vars": {"done": True}},
        ],
    )
    async with (
        httpx.AsyncClient() as http_client,
        Worker(
            client,
            task_queue=task_queue,
            workflows=[RecordedRun, OtherWorkflow],
            activities=build_activities(http_client),
            workflow_runner=_runner(),
            graceful_shutdown_timeout=timedelta(0),
        ),
    ):
        run = await start(client, task_queue, doc)
        await wait_state(run, RunState.AWAITING_APPROVAL, timeout=60)
        assert run.id in stale_runs.OBJECTS

        other = await client.start_workflow(
            OtherWorkflow.run,
            run.id,
            id=unique("other"),
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=2),
        )
        assert await other.result() == "done"
        # Nothing of the run reached the other workflow's history.
        assert await events(other, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == []
        assert await events(other, EventType.EVENT_TYPE_MARKER_RECORDED) == []

        await run.signal("approve", Decision(actor="alice"))
        result = await run.result()
        assert result.state == RunState.COMPLETED

    history = await run.fetch_history()
    replayer = Replayer(
        workflows=list(WORKFLOWS), data_converter=pydantic_data_converter, workflow_runner=_runner()
    )
    outcome = await replay(replayer, history)
    assert outcome.replay_failure is None, repr(outcome.replay_failure)
    stale_runs.OBJECTS.pop(run.id, None)
