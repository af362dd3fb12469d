"""Continue-as-new on a real dev server whose history limits are lowered (``limited_server``): a
loop far longer than the server lets one run be completes by a chain of runs, an approval stays
pending across the switch with its deadline, a decision sent around the switch is not lost, the
status query and search attributes stay right, and the chain's histories replay."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from interpreter.state import RunState, StepStatus
from tests.workflows.limited_server import HISTORY_ERROR, limited_env  # noqa: F401
from tests.workflows.support import Handle, definition, eventually, failure_of, replay, start, status, unique
from worker import build_worker, workflow_runner
from workflows.generic import RunDefinitionWorkflow
from workflows.search_attributes import AWAITING_APPROVAL, CURRENT_STEP, RUN_STATE, TENANT

LOOP_ITERATIONS = 600


@pytest_asyncio.fixture(loop_scope="session")
async def limited_client(limited_env: WorkflowEnvironment) -> Client:  # noqa: F811
    return limited_env.client


@pytest_asyncio.fixture(loop_scope="session")
async def limited_worker(
    limited_client: Client, task_queue: str, http_client: httpx.AsyncClient
) -> AsyncIterator[Worker]:
    async with build_worker(
        limited_client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)
    ) as running:
        yield running


async def _chain(client: Client, workflow_id: str) -> list[tuple[str, WorkflowExecutionStatus | None]]:
    """Every run of the workflow id, oldest first, as (run id, status)."""
    runs = [
        (e.run_id, e.status, e.start_time)
        async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")
    ]
    return [(run_id, state) for run_id, state, _ in sorted(runs, key=lambda r: r[2])]


async def _replay_chain(client: Client, workflow_id: str) -> int:
    """Replays every run's history of the chain with the current workflow code; returns how many."""
    replayer = Replayer(
        workflows=[RunDefinitionWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    runs = await _chain(client, workflow_id)
    for run_id, _ in runs:
        history: WorkflowHistory = await client.get_workflow_handle(
            workflow_id, run_id=run_id
        ).fetch_history()
        result = await replay(replayer, history)
        assert result.replay_failure is None, f"run {run_id}: {result.replay_failure!r}"
    return len(runs)


def _loop(name: str, iterations: int) -> dict[str, Any]:
    return definition(
        name,
        [
            {"id": "init", "type": "set", "vars": {"n": 0, "total": 0}},
            {
                "id": "work",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ vars.n }}"},
                "max_visits": iterations,
            },
            {
                "id": "bump",
                "type": "set",
                "vars": {"n": "{{ vars.n + 1 }}", "total": "{{ vars.total + steps.work.output }}"},
                "max_visits": iterations,
            },
            {
                "id": "again",
                "type": "condition",
                "if": f"vars.n < {iterations}",
                "then": {"goto": "work"},
                "max_visits": iterations,
            },
        ],
        limits={"max_step_executions": 10 * iterations},
        output={"n": "{{ vars.n }}", "total": "{{ vars.total }}", "first": "{{ steps.init.status }}"},
    )


async def test_a_loop_longer_than_one_run_may_be_completes_by_continuing_as_new(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    # 600 activities are about 3,600 events: over twice what the server lets one run hold. No
    # history budget is set: the server's own suggestion (lowered to 400 events) drives it.
    handle = await start(
        limited_client,
        task_queue,
        _loop(unique("loop"), LOOP_ITERATIONS),
        execution_timeout=timedelta(minutes=15),
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {
        "n": LOOP_ITERATIONS,
        "total": sum(range(LOOP_ITERATIONS)),
        "first": "completed",
    }
    runs = await _chain(limited_client, handle.id)
    statuses = [s for _, s in runs]
    assert WorkflowExecutionStatus.TERMINATED not in statuses
    assert statuses[-1] == WorkflowExecutionStatus.COMPLETED
    assert statuses[:-1] == [WorkflowExecutionStatus.CONTINUED_AS_NEW] * (len(runs) - 1)
    # At least 3,600 events over runs of at most 1,500: at least three runs.
    assert len(runs) >= (LOOP_ITERATIONS * 6) // HISTORY_ERROR + 1, statuses
    last = await handle.query(RunDefinitionWorkflow.status)
    assert last.continued == len(runs) - 1
    # The visit counts went on across runs: the last visit of ``work`` is the 600th.
    work = [r for r in last.steps if r.id == "work"]
    assert work
    assert all(r.status == StepStatus.COMPLETED for r in work)
    assert last.steps_dropped + len(last.steps) == 1 + 3 * LOOP_ITERATIONS
    print(f"\nloop of {LOOP_ITERATIONS} iterations: {len(runs)} runs, 0 terminated")
    assert await _replay_chain(limited_client, handle.id) == len(runs)


def _reminders(name: str) -> dict[str, Any]:
    return definition(
        name,
        [
            {"id": "prep", "type": "task", "action": "echo", "input": {"value": "ready"}},
            {"id": "init", "type": "set", "vars": {"asked": "{{ steps.prep.output }}"}},
            {
                "id": "gate",
                "type": "approval",
                "approvers": ["alice"],
                "message": "Approve?",
                "timeout": "1h",
                "escalation": {
                    "after": "1s",
                    "max_escalations": 20,
                    "add_approvers": ["bob"],
                    "steps": [
                        {"id": "remind", "type": "task", "action": "echo", "input": {"value": "reminder"}}
                    ],
                },
            },
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "{{ vars.asked }}"}},
        ],
        limits={"history_budget": 100},
        output={"asked": "{{ vars.asked }}", "decision": "{{ steps.gate.output.decision }}"},
    )


async def _history_length(handle: Handle) -> int:
    described = await handle.describe()
    return int(described.raw_description.workflow_execution_info.history_length)


async def test_an_approval_stays_pending_across_continue_as_new_and_a_decision_at_the_switch_counts(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    # Reminders every second grow the history while the approval waits; past the definition's
    # history budget (100 events) the run continues as new, the approval still pending.
    handle = await start(
        limited_client, task_queue, _reminders(unique("reminders")), execution_timeout=timedelta(minutes=5)
    )
    first = await eventually(
        lambda: status(handle), lambda s: bool(s.pending_approvals), what="approval pending", timeout=60
    )
    deadline = first.pending_approvals[0].deadline
    assert deadline is not None

    after = await eventually(
        lambda: status(handle),
        lambda s: s.continued >= 1 and bool(s.pending_approvals),
        timeout=120,
        what="the run continued as new with the approval pending",
    )
    pending = after.pending_approvals[0]
    assert pending.deadline == deadline  # the deadline travelled, it did not restart
    assert pending.since == first.pending_approvals[0].since
    assert pending.escalations >= 1  # escalation progress travelled
    assert "bob" in pending.approvers
    assert after.state == RunState.AWAITING_APPROVAL
    assert after.vars["asked"] == "ready"
    described = await handle.describe()  # the latest run of the chain
    attrs = described.typed_search_attributes
    assert attrs.get(AWAITING_APPROVAL) is True
    assert attrs.get(RUN_STATE) == RunState.AWAITING_APPROVAL.value
    assert attrs.get(CURRENT_STEP) == "gate"
    assert attrs.get(TENANT) == "default"

    # Decide when the current run is about to switch again: within one reminder of its budget.
    generation = after.continued
    await eventually(
        lambda: _history_length(handle),
        lambda n: n >= 90,
        timeout=120,
        interval=0.05,
        what="history near the budget",
    )
    await handle.signal("approve", {"actor": "bob", "reason": "at the switch"})
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"asked": "ready", "decision": "approved"}
    final = await handle.query(RunDefinitionWorkflow.status)
    accepted = [d for d in final.decisions if d.accepted]
    assert [(d.actor, d.reason) for d in accepted] == [("bob", "at the switch")]
    assert not final.refused_messages
    print(f"\napproval across continue-as-new: decided in generation {final.continued} (was {generation})")

    runs = await _chain(limited_client, handle.id)
    assert len(runs) >= 2
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    # CurrentStep does not flap at the switch: the first run (which continued while the approval
    # waited, before any decision was sent) did not unset it last.
    first_run, first_state = runs[0]
    assert first_state == WorkflowExecutionStatus.CONTINUED_AS_NEW
    history = await limited_client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    steps = [json.loads(f["CurrentStep"].data) for f in upserts if "CurrentStep" in f]
    assert steps[-1] == "gate", steps
    assert await _replay_chain(limited_client, handle.id) == len(runs)


async def test_a_run_within_its_budget_does_not_continue_as_new(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    handle = await start(limited_client, task_queue, _loop(unique("short"), 5))
    result = await handle.result()
    assert result.output == {"n": 5, "total": 10, "first": "completed"}
    assert [s for _, s in await _chain(limited_client, handle.id)] == [WorkflowExecutionStatus.COMPLETED]


async def test_a_compensation_registered_before_the_switch_runs_when_a_later_run_is_cancelled(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    document = _reminders(unique("undo"))
    document["steps"][0]["compensate"] = [
        {"id": "unbook", "type": "task", "action": "echo", "input": {"value": "{{ steps.prep.output }}"}}
    ]
    handle = await start(limited_client, task_queue, document, execution_timeout=timedelta(minutes=5))
    await eventually(
        lambda: status(handle),
        lambda s: s.continued >= 1 and bool(s.pending_approvals),
        timeout=120,
        what="the run continued as new with the approval pending",
    )
    await handle.signal("cancel", {"actor": "ops", "reason": "no longer needed"})
    cause, _ = await failure_of(handle)
    assert isinstance(cause, CancelledError)  # the cancel signal closes the run as Canceled
    result = await status(handle)
    assert result.state == RunState.CANCELLED
    undo = [r for r in result.steps if r.id == "unbook"]
    assert [(r.status, r.output) for r in undo] == [(StepStatus.COMPLETED, "ready")]
