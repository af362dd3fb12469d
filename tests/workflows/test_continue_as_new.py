"""Continue-as-new on a real dev server whose history limits are lowered (``limited_server``): a
loop far longer than the server lets one run be completes by a chain of runs, an approval stays
pending across the switch with its deadline, a decision sent around the switch is not lost, the
status query and search attributes stay right, and the chain's histories replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.store.database import Database
from activities.store.models import DeadLetterStatus
from interpreter.events import MailboxState, legacy_mailbox_id, mailbox_id
from interpreter.state import RunResult, RunState, RunStatus, StepStatus
from starter.client import FlowClient
from tests.helpers.http_server import RecordingServer
from tests.workflows.limited_server import HISTORY_ERROR, limited_env  # noqa: F401
from tests.workflows.support import (
    Handle,
    counting_loop,
    definition,
    eventually,
    failure_of,
    recorded_input_and_result,
    replay,
    signal,
    start,
    status,
    unique,
)
from worker import build_worker, workflow_runner
from workflows.generic import ENGINE_LEVEL, WORKFLOWS, RunDefinitionWorkflow
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


async def _completed(
    client: Client, task_queue: str, document: dict[str, Any], level: int = ENGINE_LEVEL
) -> tuple[Handle, RunResult]:
    """Starts a run of ``document`` at generation ``level`` and waits for its result, completed."""
    handle = await start(
        client, task_queue, document, engine_level=level, execution_timeout=timedelta(minutes=5)
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    return handle, result


async def _chain(client: Client, workflow_id: str) -> list[tuple[str, WorkflowExecutionStatus | None]]:
    """Every run of the workflow id, oldest first, as (run id, status).

    The runs come from visibility, their statuses from each run itself: visibility may still show
    the last run as running a moment after its result was returned."""
    runs = [(e.run_id, e.start_time) async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    chain: list[tuple[str, WorkflowExecutionStatus | None]] = []
    for run_id, _ in sorted(runs, key=lambda r: r[1]):
        described = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        chain.append((run_id, described.status))
    return chain


async def _replay_chain(client: Client, workflow_id: str) -> int:
    """Replays every run's history of the chain with the current workflow code; returns how many."""
    replayer = Replayer(
        workflows=list(WORKFLOWS),
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
    # As a service sends it: the product's client sends it again to the chain's next run when it
    # met the switching run ("workflow execution already completed").
    flows = FlowClient(limited_client, task_queue=task_queue)
    await flows.approve(handle.id, "bob", reason="at the switch", wait=False)
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


@pytest.mark.parametrize("join", ["any", "first"])
async def test_an_any_join_whose_branches_all_loop_continues_as_new_instead_of_being_terminated(
    limited_client: Client, limited_worker: Worker, task_queue: str, join: str
) -> None:
    # In an any or first join a branch stopped for a continue-as-new only where every other one
    # slept or waited: two loops racing never did, and the server terminated the run at its limit
    # (1,500 events here) though max_visits allowed the loops. Once the history presses, they
    # stop as an all join's branches do (patch continue-as-new-any-pressed).
    document = definition(
        unique("race"),
        [
            {"id": "init", "type": "set", "vars": {"a": 0, "b": 0}},
            {
                "id": "race",
                "type": "parallel",
                "join": join,
                "branches": [
                    {
                        "id": "quick",
                        "steps": [
                            *counting_loop("q", "a", 150),
                            {"id": "q_end", "type": "set", "vars": {"won": "quick"}},
                        ],
                    },
                    {
                        "id": "slow",
                        "steps": [
                            *counting_loop("s", "b", 1000),
                            {"id": "s_end", "type": "set", "vars": {"won": "slow"}},
                        ],
                    },
                ],
            },
        ],
        limits={"max_step_executions": 10_000},
        output={"won": "{{ steps.race.output }}", "quick": "{{ vars.a }}"},
    )
    handle = await start(
        limited_client,
        task_queue,
        document,
        engine_level=ENGINE_LEVEL,
        execution_timeout=timedelta(minutes=10),
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output["quick"] == 150
    assert result.output["won"]["winner"] == "quick"
    runs = await _chain(limited_client, handle.id)
    statuses = [s for _, s in runs]
    assert WorkflowExecutionStatus.TERMINATED not in statuses
    assert len(runs) >= 2, statuses
    assert statuses[:-1] == [WorkflowExecutionStatus.CONTINUED_AS_NEW] * (len(runs) - 1)
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


SAGA_TURNS = 300


async def test_a_saga_longer_than_one_run_may_be_runs_every_compensation_once_and_fails_in_words(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    # 300 bookings, then a failure: 300 compensations are about 1,800 events, more than the server
    # lets one run hold (1,500). Before, the run compensating was terminated by the server part way
    # through (214 of 300 here), no message; now it continues as new between compensations.
    steps: list[dict[str, Any]] = [
        {"id": "init", "type": "set", "vars": {"n": 0}},
        *counting_loop("book", "n", SAGA_TURNS),
        {
            "id": "boom",
            "type": "fail",
            "message": "no stock after {{ vars.n }} bookings",
            "error_type": "NoStock",
        },
    ]
    steps[1]["compensate"] = [
        {"id": "unbook", "type": "task", "action": "echo", "input": {"value": "undone"}}
    ]
    document = definition(unique("saga"), steps, limits={"max_step_executions": 10 * SAGA_TURNS})
    handle = await start(
        limited_client,
        task_queue,
        document,
        engine_level=ENGINE_LEVEL,
        execution_timeout=timedelta(minutes=10),
    )
    cause, result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == ("NoStock", f"no stock after {SAGA_TURNS} bookings")
    assert result is not None
    assert result.state == RunState.FAILED

    runs = await _chain(limited_client, handle.id)
    statuses = [s for _, s in runs]
    assert statuses[-1] == WorkflowExecutionStatus.FAILED
    assert statuses[:-1] == [WorkflowExecutionStatus.CONTINUED_AS_NEW] * (len(runs) - 1)
    compensations: list[str] = []
    switched_compensating = 0
    for run_id, _ in runs:
        history = await limited_client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        ids = [
            e.activity_task_scheduled_event_attributes.activity_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_id.startswith("compensate/")
        ]
        assert len(history.events) < HISTORY_ERROR
        compensations += ids
        last = history.events[-1]
        if ids and last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            switched_compensating += 1
    # Every compensation ran, once (each attempt's activity is scheduled once), across two runs at least.
    assert len(compensations) == len(set(compensations)) == SAGA_TURNS
    assert switched_compensating >= 1
    final = await status(handle)
    assert final.state == RunState.FAILED
    assert final.continued == len(runs) - 1
    assert all(r.status == StepStatus.COMPLETED for r in final.steps if r.id == "unbook")
    assert await _replay_chain(limited_client, handle.id) == len(runs)


async def test_a_saga_whose_next_run_would_be_too_large_compensates_to_its_end_in_its_run(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    # The history budget is reached only during the compensations, and the next run's input (the
    # 1.5 MB input and a 0.7 MB variable) would be over Temporal's 2 MiB: the rest run here, as
    # before runs switched while compensating. Before this, 13 of 20 ran, then ContinueAsNewTooLarge.
    turns = 20
    steps: list[dict[str, Any]] = [
        {"id": "init", "type": "set", "vars": {"n": 0, "copy": "{{ input.part }}"}},
        *counting_loop("book", "n", turns),
        {"id": "boom", "type": "fail", "message": "no stock", "error_type": "NoStock"},
    ]
    steps[1]["compensate"] = [
        {"id": "unbook", "type": "task", "action": "echo", "input": {"value": "undone"}}
    ]
    document = definition(unique("saga-big"), steps, limits={"history_budget": 200})
    run_input = {"big": ["x" * 1000 for _ in range(800)], "part": ["y" * 1000 for _ in range(700)]}
    handle = await start(
        limited_client,
        task_queue,
        document,
        run_input,
        engine_level=ENGINE_LEVEL,
        execution_timeout=timedelta(minutes=5),
    )
    cause, result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == ("NoStock", "no stock")
    assert result is not None
    assert [r.status for r in result.steps if r.id == "unbook"] == [StepStatus.COMPLETED] * turns
    runs = await _chain(limited_client, handle.id)
    assert [s for _, s in runs] == [WorkflowExecutionStatus.FAILED]  # one run: it never switched
    assert await _replay_chain(limited_client, handle.id) == 1


# ------------------------------------------------------------------ waits that continue as new
# Nothing in these definitions grows the history while the run waits: what does is the messages
# sent to it (here, approvals nobody asked for, each refused and recorded: four events apiece).
# A small history budget makes the run continue as new after a few of them.


async def _grow_until_continued(handle: Handle, *, generation: int = 1, timeout: float = 120) -> RunStatus:
    """Sends refused ``approve`` signals until the run has continued as new ``generation`` times."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        now = await status(handle)
        if now.continued >= generation:
            return now
        assert asyncio.get_running_loop().time() < deadline, f"not continued: {now.continued}"
        for _ in range(5):
            await signal(handle, "approve", {"actor": "nobody", "reason": "noise"})
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="session")
async def limited_flows(
    limited_client: Client, database: Database, task_queue: str
) -> AsyncIterator[FlowClient]:
    """A client with the store, and a worker serving the dead-letter activities (own queue)."""
    queue = f"{task_queue}-store"
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(
            limited_client,
            queue,
            http_client,
            session_factory=database.session_factory,
            graceful_shutdown_timeout=timedelta(0),
        ),
    ):
        yield FlowClient(limited_client, task_queue=queue, database=database, tenant="acme")


def _charge(name: str, api: str) -> dict[str, Any]:
    return definition(
        name,
        [
            {"id": "prep", "type": "task", "action": "echo", "input": {"value": "ready"}},
            {
                "id": "charge",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{api}/charge", "json": {"card": "{{ input.card }}"}},
                "retry": {"maximum_attempts": 1},
                "on_failure": "dead_letter",
                "park_timeout": "1h",
            },
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "{{ steps.prep.output }}"}},
        ],
        limits={"history_budget": 100},
        output={"charge": "{{ steps.charge.output }}", "after": "{{ steps.after.output }}"},
    )


def _cards(http_server: RecordingServer) -> None:
    def charge(request: Any) -> tuple[int, dict[str, str], Any]:
        if (request.json or {}).get("card") == "good":
            return 200, {}, {"charge_id": "ch-1"}
        return 402, {}, {"error": "declined"}

    http_server.route("POST", "/charge", charge)


async def _open_row(flows: FlowClient, workflow_id: str) -> Any:
    rows = await eventually(
        lambda: flows.list_dead_letters(workflow_id=workflow_id),
        lambda found: len(found) == 1,
        timeout=60,
        what="the dead letter row",
    )
    return rows[0]


async def test_a_parked_step_continues_as_new_and_a_redrive_sent_after_the_switch_completes_it(
    limited_flows: FlowClient, http_server: RecordingServer
) -> None:
    _cards(http_server)
    run = await limited_flows.start_run(_charge(unique("park"), http_server.url), {"card": "expired"})
    row = await _open_row(limited_flows, run.workflow_id)
    handle = limited_flows.client.get_workflow_handle(run.workflow_id)
    first = await eventually(lambda: status(handle), lambda s: bool(s.parked), what="parked", timeout=60)
    assert row.run_id == (await _chain(limited_flows.client, run.workflow_id))[0][0]

    after = await _grow_until_continued(handle)
    assert after.state == RunState.PARKED
    assert [(p.park_id, p.dead_letter_id, p.deadline) for p in after.parked] == [
        (p.park_id, row.id, p.deadline) for p in first.parked
    ]
    described = await handle.describe()
    assert described.typed_search_attributes.get(RUN_STATE) == RunState.PARKED.value
    assert described.typed_search_attributes.get(CURRENT_STEP) == "charge"

    # The row names the first run, which has ended (continued as new): the decision follows the chain.
    await limited_flows.redrive(row.id, "ops-alice", {"json": {"card": "good"}}, reason="new card")
    result = await limited_flows.result(run.workflow_id, timeout=60)
    assert result.state == RunState.COMPLETED
    assert (result.output["charge"]["body"], result.output["after"]) == ({"charge_id": "ch-1"}, "ready")
    charges = http_server.requests("POST", "/charge")
    assert [c.json for c in charges] == [{"card": "expired"}, {"card": "good"}]
    assert charges[1].idempotency_key == f"{charges[0].idempotency_key}~r1"  # the same step, redriven
    resolved = await limited_flows.show_dead_letter(row.id)
    assert (resolved.status, resolved.resolved_by) == (DeadLetterStatus.REDRIVEN, "ops-alice")

    runs = await _chain(limited_flows.client, run.workflow_id)
    assert len(runs) >= 2
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    assert await _replay_chain(limited_flows.client, run.workflow_id) == len(runs)


async def test_a_skip_sent_at_the_switch_is_not_lost(
    limited_flows: FlowClient, http_server: RecordingServer
) -> None:
    _cards(http_server)
    run = await limited_flows.start_run(_charge(unique("park-skip"), http_server.url), {"card": "expired"})
    row = await _open_row(limited_flows, run.workflow_id)
    handle = limited_flows.client.get_workflow_handle(run.workflow_id)
    await eventually(lambda: status(handle), lambda s: bool(s.parked), what="parked", timeout=60)
    # Within one signal of the budget, one more signal and the skip go out together: the skip
    # lands in the run that is switching (and is carried) or in the next one.
    while await _history_length(handle) < 94:
        await signal(handle, "approve", {"actor": "nobody", "reason": "noise"})
    await asyncio.gather(
        signal(handle, "approve", {"actor": "nobody", "reason": "the last straw"}),
        limited_flows.skip(row.id, "ops-bob", {"charge_id": "manual"}, reason="charged by phone"),
    )
    result = await limited_flows.result(run.workflow_id, timeout=60)
    assert result.state == RunState.COMPLETED
    assert result.output == {"charge": {"charge_id": "manual"}, "after": "ready"}
    final = await status(handle)
    charge = [r for r in final.steps if r.id == "charge"]
    assert charge[-1].status == StepStatus.COMPLETED
    assert charge[-1].output == {"charge_id": "manual"}
    resolved = await limited_flows.show_dead_letter(row.id)
    assert (resolved.status, resolved.resolved_by) == (DeadLetterStatus.SKIPPED, "ops-bob")
    assert len(http_server.requests("POST", "/charge")) == 1
    print(f"\nskip at the switch: the run finished in generation {final.continued}")
    runs = await _chain(limited_flows.client, run.workflow_id)
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    assert await _replay_chain(limited_flows.client, run.workflow_id) == len(runs)


async def test_a_delay_continues_as_new_and_fires_at_the_same_time(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    document = definition(
        unique("nap"),
        [
            {"id": "nap", "type": "delay", "duration": "40s"},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "woke"}},
        ],
        limits={"history_budget": 100},
        output={"nap": "{{ steps.nap.output }}", "after": "{{ steps.after.output }}"},
    )
    handle = await start(limited_client, task_queue, document, execution_timeout=timedelta(minutes=5))
    flows = FlowClient(limited_client, task_queue=task_queue)
    timers = await eventually(lambda: flows.pending_timers(handle.id), bool, timeout=60, what="the timer")
    fires_at = timers[0].fires_at

    after = await _grow_until_continued(handle)
    assert after.state == RunState.RUNNING
    assert [r.status for r in after.steps if r.id == "nap"] == [StepStatus.RUNNING]
    assert (await handle.describe()).typed_search_attributes.get(CURRENT_STEP) == "nap"
    # The next run's timer is for the time that was left: it fires when the first one would have
    # (give or take the time a workflow task takes on a busy machine), not 40 s after the switch.
    again = await eventually(lambda: flows.pending_timers(handle.id), bool, timeout=60, what="the new timer")
    assert abs(again[0].fires_at - fires_at) < timedelta(seconds=5), (again[0].fires_at, fires_at)

    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output["after"] == "woke"
    assert result.output["nap"]["waited_s"] == 40.0  # the step's output is the one it would have had
    resumed_at = datetime.fromisoformat(result.output["nap"]["resumed_at"])
    assert abs(resumed_at - fires_at) < timedelta(seconds=5)
    runs = await _chain(limited_client, handle.id)
    assert len(runs) >= 2
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    closed = (await handle.describe()).close_time
    assert closed is not None
    assert closed >= resumed_at  # it did not fire early
    assert await _replay_chain(limited_client, handle.id) == len(runs)


def _call_task(name: str) -> dict[str, Any]:
    return definition(
        name,
        [
            {"id": "prep", "type": "task", "action": "echo", "input": {"value": "ready"}},
            {
                "id": "call",
                "type": "human_task",
                "title": "Call the family",
                "assignee": "coordinator",
                "fields": [{"name": "reached", "type": "boolean", "required": True}],
                "due": "1h",
                "escalation": {
                    "after": "1s",
                    "max_escalations": 20,
                    "add_approvers": ["lead"],
                    "steps": [
                        {"id": "remind", "type": "task", "action": "echo", "input": {"value": "reminder"}}
                    ],
                },
            },
            {
                "id": "after",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ steps.prep.output }} {{ steps.call.output.data.reached }}"},
            },
        ],
        limits={"history_budget": 100},
        output={"after": "{{ steps.after.output }}", "by": "{{ steps.call.output.completed_by }}"},
    )


async def test_a_human_task_stays_pending_across_continue_as_new_and_a_completion_at_the_switch_counts(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    # Reminders every second grow the history while the task waits for the coordinator; past the
    # budget (100 events) the run continues as new with the task still pending (it used to wait on
    # in one run until Temporal terminated it at its history limit).
    handle = await start(
        limited_client, task_queue, _call_task(unique("call")), execution_timeout=timedelta(minutes=5)
    )
    first = await eventually(
        lambda: status(handle), lambda s: bool(s.pending_approvals), what="task pending", timeout=60
    )
    [task] = first.pending_approvals
    assert task.kind == "task"
    assert task.deadline is not None

    after = await eventually(
        lambda: status(handle),
        lambda s: s.continued >= 1 and bool(s.pending_approvals),
        timeout=120,
        what="the run continued as new with the task pending",
    )
    [pending] = after.pending_approvals
    assert (pending.kind, pending.since, pending.deadline) == ("task", task.since, task.deadline)
    assert pending.escalations >= 1  # escalation progress travelled
    assert "lead" in pending.approvers
    assert after.state == RunState.AWAITING_APPROVAL
    assert [r.status for r in after.steps if r.id == "call"] == [StepStatus.WAITING]
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(AWAITING_APPROVAL) is True
    assert attrs.get(RUN_STATE) == RunState.AWAITING_APPROVAL.value
    assert attrs.get(CURRENT_STEP) == "call"

    # Complete it when the current run is about to switch again: within one reminder of its budget.
    generation = after.continued
    await eventually(
        lambda: _history_length(handle),
        lambda n: n >= 90,
        timeout=120,
        interval=0.05,
        what="history near the budget",
    )
    flows = FlowClient(limited_client, task_queue=task_queue)
    await flows.complete_task(handle.id, "lead", comment="at the switch", data={"reached": True})
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"after": "ready True", "by": "lead"}
    final = await handle.query(RunDefinitionWorkflow.status)
    accepted = [d for d in final.decisions if d.accepted]
    assert [(d.actor, d.reason) for d in accepted] == [("lead", "at the switch")]
    print(
        f"\nhuman task across continue-as-new: completed in generation {final.continued} (was {generation})"
    )

    runs = await _chain(limited_client, handle.id)
    assert len(runs) >= 2
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    assert await _replay_chain(limited_client, handle.id) == len(runs)


async def _mailbox_forgot_the_wait(
    client: Client, key: str, events: list[str], waited_at: str | None
) -> None:
    """The mailbox the wait subscribed at (``waited_at``: its view's ``mailbox``, None for the
    legacy one of a run of an earlier generation) holds no subscription any more (the wait ended),
    and the mailbox of ``family.answered`` events of ``key`` holds ``events``."""
    waited = client.get_workflow_handle(waited_at or legacy_mailbox_id("default", "family.answered", key))
    await eventually(
        lambda: waited.query("state", result_type=MailboxState),
        lambda s: not s.subscriptions,
        timeout=30,
        what="the mailbox forgot the wait",
    )
    mailbox = client.get_workflow_handle(mailbox_id("default", "family.answered", key))
    state = await mailbox.query("state", result_type=MailboxState)
    assert [e.id for e in state.events] == events


async def test_an_event_wait_continues_as_new_and_an_event_published_at_the_switch_is_taken_once(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    family = unique("fam")
    document = definition(
        unique("answer"),
        [
            {
                "id": "answer",
                "type": "wait_for_event",
                "event": "family.answered",
                "key": "{{ input.family_id }}",
                "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"]}],
                "timeout": "10m",
            },
            {
                "id": "after",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ steps.answer.output.data.answer }}"},
            },
        ],
        limits={"history_budget": 100},
        output={"event": "{{ steps.answer.output.event_id }}", "after": "{{ steps.after.output }}"},
    )
    handle = await start(
        limited_client, task_queue, document, {"family_id": family}, execution_timeout=timedelta(minutes=5)
    )
    first = await eventually(
        lambda: status(handle),
        lambda s: any(w.subscribed for w in s.waiting_events),
        timeout=60,
        what="the wait subscribed",
    )
    [started] = first.waiting_events

    # The wait used to block continue-as-new (its run grew until Temporal terminated it).
    after = await _grow_until_continued(handle)
    [resumed] = after.waiting_events
    assert (resumed.since, resumed.deadline, resumed.key) == (started.since, started.deadline, family)
    assert [r.status for r in after.steps if r.id == "answer"] == [StepStatus.WAITING]
    assert (await handle.describe()).typed_search_attributes.get(CURRENT_STEP) == "answer"

    # Within one signal of the next switch, the last straw and the event go out together: the
    # event lands in the switching run (and is carried), in the next one, or in its subscription's
    # answer; it is taken once either way.
    flows = FlowClient(limited_client, task_queue=task_queue)
    while await _history_length(handle) < 94:
        await signal(handle, "approve", {"actor": "nobody", "reason": "noise"})
    published = await asyncio.gather(
        signal(handle, "approve", {"actor": "nobody", "reason": "the last straw"}),
        flows.publish_event(
            "family.answered", family, {"answer": "yes"}, event_id="e-1", start_triggers=False
        ),
    )
    assert published[1].duplicate is False
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"event": "e-1", "after": "yes"}
    final = await status(handle)
    assert [r.status for r in final.steps if r.id == "answer"] == [StepStatus.COMPLETED]
    print(f"\nevent at the switch: the run finished in generation {final.continued}")

    runs = await _chain(limited_client, handle.id)
    assert len(runs) >= 2
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    assert await _replay_chain(limited_client, handle.id) == len(runs)
    # The subscription the chain kept is gone once the wait ended.
    await _mailbox_forgot_the_wait(limited_client, family, ["e-1"], started.mailbox)


async def test_a_loop_and_an_approval_inside_branches_continue_as_new_there(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    iterations = 40
    document = definition(
        unique("branches"),
        [
            {"id": "init", "type": "set", "vars": {"n": 0, "mode": "loop"}},
            {
                "id": "route",
                "type": "condition",
                "if": "vars.mode == 'loop'",
                "then": {
                    "steps": [
                        {"id": "flip", "type": "set", "vars": {"mode": "done"}, "max_visits": iterations},
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
                            "vars": {"n": "{{ vars.n + 1 }}"},
                            "max_visits": iterations,
                        },
                        {
                            "id": "again",
                            "type": "condition",
                            "if": f"vars.n < {iterations}",
                            "then": {"goto": "flip"},
                            "max_visits": iterations,
                        },
                        {
                            "id": "gate",
                            "type": "approval",
                            "approvers": ["alice"],
                            "timeout": "1h",
                            "escalation": {
                                "after": "1s",
                                "max_escalations": 20,
                                "steps": [
                                    {
                                        "id": "remind",
                                        "type": "task",
                                        "action": "echo",
                                        "input": {"value": "r"},
                                    }
                                ],
                            },
                        },
                    ]
                },
                "else": {"steps": [{"id": "never", "type": "fail", "message": "chose the branch again"}]},
            },
        ],
        limits={"history_budget": 100},
        output={"n": "{{ vars.n }}", "decision": "{{ steps.gate.output.decision }}"},
    )
    handle = await start(limited_client, task_queue, document, execution_timeout=timedelta(minutes=5))
    # 40 activities inside the branch are about 240 events: the run continues as new inside it.
    pending = await eventually(
        lambda: status(handle),
        lambda s: bool(s.pending_approvals) and s.continued >= 2,
        timeout=120,
        what="the loop done in a chain, the approval pending",
    )
    since = pending.pending_approvals[0].since
    # The reminders grow the history while the approval waits in the branch: it continues again.
    later = await eventually(
        lambda: status(handle),
        lambda s: s.continued > pending.continued and bool(s.pending_approvals),
        timeout=120,
        what="the run continued as new while the approval in the branch waited",
    )
    assert later.pending_approvals[0].since == since
    assert (await handle.describe()).typed_search_attributes.get(CURRENT_STEP) == "gate"
    await handle.signal("approve", {"actor": "alice", "reason": "ok"})
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"n": iterations, "decision": "approved"}
    final = await status(handle)
    assert [(r.status, r.output) for r in final.steps if r.id == "route"] == [
        (StepStatus.COMPLETED, {"branch": "then"})
    ]
    runs = await _chain(limited_client, handle.id)
    assert len(runs) >= 3
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    assert await _replay_chain(limited_client, handle.id) == len(runs)


def _counting_branch(prefix: str, var: str, iterations: int) -> list[dict[str, Any]]:
    """:func:`counting_loop`, then its count in ``vars.<prefix>_n``."""
    return [
        *counting_loop(prefix, var, iterations),
        {"id": f"{prefix}_total", "type": "set", "vars": {f"{prefix}_n": f"{{{{ vars.{var} }}}}"}},
    ]


async def _scheduled(
    client: Client, workflow_id: str, runs: list[tuple[str, WorkflowExecutionStatus | None]]
) -> list[str]:
    """The activity ids every run of the chain scheduled, in order."""
    scheduled: list[str] = []
    for run_id, _ in runs:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        scheduled += [
            e.activity_task_scheduled_event_attributes.activity_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
    return scheduled


def _counting_items(items: int, turns: int, **fields: Any) -> dict[str, Any]:
    """A foreach over ``range(items)`` whose body counts to ``turns`` in the item's own steps."""
    tick = "{{ (steps.tick.output if steps.tick is defined else steps.seed.output) + 1 }}"
    return {
        "id": "each",
        "type": "foreach",
        "items": f"range({items}) | list",
        **fields,
        "steps": [
            {"id": "seed", "type": "task", "action": "echo", "input": {"value": 0}},
            {"id": "tick", "type": "task", "action": "echo", "input": {"value": tick}, "max_visits": turns},
            {
                "id": "more",
                "type": "condition",
                "if": f"steps.tick.output < {turns}",
                "then": {"goto": "tick"},
                "max_visits": turns,
            },
        ],
    }


@pytest.mark.parametrize("level", [0, ENGINE_LEVEL])
async def test_loops_in_parallel_branches_continue_as_new_inside_the_parallel_step(
    limited_client: Client, limited_worker: Worker, task_queue: str, level: int
) -> None:
    """Two loops in the branches of a parallel step (about 400 events together, a history budget
    of 100): the run continues as new with both branches where they stood, a third branch's output
    carried once it finished; the step completes once, with every branch's output, no run of the
    chain is terminated and every history replays (generation 0 asks the patch, the current one
    applies it)."""
    document = definition(
        unique("parallel-loops"),
        [
            {"id": "init", "type": "set", "vars": {"a": 0, "b": 0}},
            {
                "id": "fan",
                "type": "parallel",
                "branches": [
                    {"id": "left", "steps": _counting_branch("l", "a", 40)},
                    {"id": "right", "steps": _counting_branch("r", "b", 25)},
                    {
                        "id": "once",
                        "steps": [
                            {"id": "solo", "type": "task", "action": "echo", "input": {"value": "solo"}}
                        ],
                    },
                ],
            },
        ],
        limits={"history_budget": 100},
        output={"fan": "{{ steps.fan.output }}", "a": "{{ vars.a }}", "b": "{{ vars.b }}"},
    )
    handle, result = await _completed(limited_client, task_queue, document, level)
    assert result.output == {
        "fan": {"left": {"l_n": 40}, "right": {"r_n": 25}, "once": "solo"},
        "a": 40,
        "b": 25,
    }
    final = await status(handle)
    assert final.continued >= 2
    assert [r.status for r in final.steps if r.id == "fan"] == [StepStatus.COMPLETED]
    runs = await _chain(limited_client, handle.id)
    assert len(runs) == final.continued + 1
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    # Each action ran once per turn: 40 + 25 + 1 activities across the chain, none twice.
    scheduled = await _scheduled(limited_client, handle.id, runs)
    assert len(scheduled) == len(set(scheduled)) == 66
    assert await _replay_chain(limited_client, handle.id) == len(runs)


async def test_loops_in_foreach_items_continue_as_new_inside_the_foreach_step(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    """A foreach of 8 items, 3 at a time, each looping 5 turns (about 300 events, a history budget
    of 100): the run continues as new with the items done, running (where in the body, with their
    own steps) and not started; the step completes once with every item's output in order."""
    document = definition(
        unique("foreach-loops"),
        [_counting_items(8, 5, concurrency=3, output="{{ item }}:{{ steps.tick.output }}")],
        limits={"history_budget": 100},
        output={"each": "{{ steps.each.output }}"},
    )
    handle, result = await _completed(limited_client, task_queue, document)
    assert result.output == {"each": [f"{i}:5" for i in range(8)]}
    final = await status(handle)
    assert final.continued >= 2
    runs = await _chain(limited_client, handle.id)
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    scheduled = await _scheduled(limited_client, handle.id, runs)
    assert len(scheduled) == len(set(scheduled)) == 8 * 6
    assert await _replay_chain(limited_client, handle.id) == len(runs)


async def test_a_delay_in_a_parallel_branch_is_carried_across_continue_as_new(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    """One branch loops 40 times, the other waits 4 s three times between its actions (history
    budget 100): the run continues as new while the second branch sleeps, the next run's timer
    fires for the time that was left, and the delays' outputs are the whole waits."""
    slow = _counting_branch("s", "b", 3)
    slow.insert(2, {"id": "nap", "type": "delay", "duration": "4s", "max_visits": 3})
    document = definition(
        unique("parallel-delay"),
        [
            {"id": "init", "type": "set", "vars": {"a": 0, "b": 0}},
            {
                "id": "fan",
                "type": "parallel",
                "branches": [
                    {"id": "quick", "steps": _counting_branch("q", "a", 40)},
                    {"id": "slow", "steps": slow},
                ],
            },
        ],
        limits={"history_budget": 100},
        output={"fan": "{{ steps.fan.output }}", "nap": "{{ steps.nap.output.waited_s }}"},
    )
    handle, result = await _completed(limited_client, task_queue, document)
    assert result.output == {"fan": {"quick": {"q_n": 40}, "slow": {"s_n": 3}}, "nap": 4.0}
    runs = await _chain(limited_client, handle.id)
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    carried_delays = 0
    for run_id, _ in runs[1:]:
        history = await limited_client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        started_event = history.events[0].workflow_execution_started_event_attributes
        run_input = json.loads(started_event.input.payloads[0].data)
        branches = run_input["continuation"]["kinds"].get("parallel", {}).get("branches", [])
        for carried in [b["delay"] for b in branches if "delay" in b]:
            carried_delays += 1
            until, since = datetime.fromisoformat(carried["until"]), datetime.fromisoformat(carried["since"])
            assert until - since == timedelta(seconds=4)
            # The next run's timer is for the time that was left, not a new wait of 4 s.
            timers = [
                e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
            ]
            assert timers
            assert timers[0] < timedelta(seconds=4)
            assert history.events[0].event_time.ToDatetime(UTC) + timers[0] <= until + timedelta(seconds=1)
    assert carried_delays >= 1, "no run of the chain started with the slow branch's delay carried"
    assert await _replay_chain(limited_client, handle.id) == len(runs)


async def test_the_children_of_a_fanned_out_foreach_continue_as_new_between_their_items_steps(
    limited_client: Client, limited_worker: Worker, task_queue: str
) -> None:
    """30 items in children of 15 (fan-out above 10), each item looping 4 turns (about 450 events
    per child, a history budget of 100): each child continues as new with its items where they
    stood; the parent gets every output in order, no action ran twice, every history replays."""
    document = definition(
        unique("fanout-loops"),
        [
            _counting_items(
                30,
                4,
                fan_out_above=10,
                batch_size=15,
                concurrency=6,
                output="{{ item }}:{{ steps.tick.output }}:{{ run.workflow_id == vars.parent }}",
            )
        ],
        limits={"history_budget": 100},
        output={"each": "{{ steps.each.output }}"},
    )
    document["steps"].insert(0, {"id": "who", "type": "set", "vars": {"parent": "{{ run.workflow_id }}"}})
    handle, result = await _completed(limited_client, task_queue, document)
    # The items read the parent's run context in every run of their child's chain.
    assert result.output == {"each": [f"{i}:4:True" for i in range(30)]}
    scheduled: list[str] = []
    continued = 0
    for k in range(2):
        child = f"{handle.id}/each/batch-{k}"
        runs = await _chain(limited_client, child)
        continued += len(runs) - 1
        assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
        scheduled += await _scheduled(limited_client, child, runs)
        assert await _replay_chain(limited_client, child) == len(runs)
        # The chain's last run returns the slice's output alone (patch slice-results-output).
        _, raw = await recorded_input_and_result(limited_client.get_workflow_handle(child))
        assert json.loads(raw) == {
            "state": "completed",
            "output": {"results": result.output["each"][15 * k : 15 * k + 15]},
        }
    assert continued >= 2
    assert len(scheduled) == len(set(scheduled)) == 30 * 5


def _loop_beside(gate: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps: a 40-turn loop (about 240 events) in one branch of a top-level parallel step,
    ``gate`` (a branch that waits) in the other."""
    return [
        {"id": "init", "type": "set", "vars": {"a": 0}},
        {
            "id": "fan",
            "type": "parallel",
            "branches": [{"id": "loop", "steps": _counting_branch("l", "a", 40)}, gate],
        },
    ]


async def _waited_through_the_chain(handle: WorkflowHandle[Any, Any], what: str) -> RunStatus:
    """The status once the loop is done in a chain that continued at least twice."""
    return await eventually(
        lambda: status(handle),
        lambda s: s.continued >= 2 and s.vars.get("l_n") == 40,
        timeout=120,
        what=f"the loop done in a chain that continued while {what}",
    )


async def _pending(handle: WorkflowHandle[Any, Any], what: str) -> RunStatus:
    """The status once an approval is pending."""
    return await eventually(
        lambda: status(handle), lambda s: bool(s.pending_approvals), timeout=60, what=what
    )


async def _loop_done(
    handle: WorkflowHandle[Any, Any], first: RunStatus, carried: bool, what: str
) -> RunStatus:
    """The status once the loop is done: in a chain that continued at least twice while ``what``
    (``carried``), or else in the run ``first`` was seen in (the wait kept the branches in it)."""
    if carried:
        return await _waited_through_the_chain(handle, what)
    later = await eventually(
        lambda: status(handle), lambda s: s.vars.get("l_n") == 40, timeout=120, what="the loop done"
    )
    assert later.continued == first.continued
    return later


async def _approved_after_the_loop(handle: WorkflowHandle[Any, Any], carried: bool, what: str) -> RunResult:
    """Waits for the approval ``ok`` (``what``) to be pending, and for the loop to be done (in a
    chain that continued while it waited, ``carried``, else in the same run), the approval with the
    same ``since`` and deadline; approves it; the run's result, completed."""
    first = await _pending(handle, f"{what} pending")
    [pending] = first.pending_approvals
    later = await _loop_done(handle, first, carried, f"{what} waited")
    [kept] = later.pending_approvals
    assert (kept.path, kept.since, kept.deadline) == ("ok", pending.since, pending.deadline)
    await handle.signal("approve", {"actor": "alice", "reason": "ok"})
    result: RunResult = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    return result


async def _runs_carrying(client: Client, workflow_id: str, wait: str, *, nested: bool = False) -> int:
    """How many runs of the chain started with a branch carrying a ``wait`` (``person``, ``event``,
    ``park``) in their input's snapshot (``nested``: in a branch of the nested step a branch is
    carried in): the switches that wait was carried through (counted from the histories, not from
    when a test first saw the wait)."""
    carrying = 0
    for run_id, _ in await _chain(client, workflow_id):
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        run_input = json.loads(started.input.payloads[0].data)
        parallel = ((run_input.get("continuation") or {}).get("kinds") or {}).get("parallel") or {}
        lanes = parallel.get("branches", [])
        if nested:
            lanes = [inner for lane in lanes for inner in (lane.get("nested") or {}).get("branches", [])]
        carrying += any(wait in lane for lane in lanes)
    return carrying


async def _ran_once(client: Client, workflow_id: str, echo: Callable[[str], bool]) -> list[str]:
    """Checks the chain: none terminated, every run replays, the 41 echo calls (``echo`` picks their
    activity ids: the loop's 40 turns and the waiting branch's first step) scheduled once each;
    returns every activity id scheduled."""
    runs = await _chain(client, workflow_id)
    assert WorkflowExecutionStatus.TERMINATED not in [s for _, s in runs]
    assert await _replay_chain(client, workflow_id) == len(runs)
    scheduled = await _scheduled(client, workflow_id, runs)
    echoes = [a for a in scheduled if echo(a)]
    assert len(echoes) == len(set(echoes)) == 41
    return scheduled


@pytest.mark.parametrize("level", [0, ENGINE_LEVEL])
async def test_an_approval_waiting_in_a_parallel_branch_is_carried_while_the_other_branch_loops(
    limited_client: Client, limited_worker: Worker, task_queue: str, level: int
) -> None:
    """A 40-turn loop in one branch, an approval in the other (about 240 events, a history budget of
    100): the run continues as new inside the parallel step while the approval waits, which stays
    pending with its deadline through the chain; approved in a later run, the step completes with
    the decision and the loop's count. At generation 0 the patch is asked (a marker); every run of
    the chain replays."""
    ask = {"id": "ask", "type": "task", "action": "echo", "input": {"value": "asked"}}
    document = definition(
        unique("branch-approval"),
        _loop_beside(
            {
                "id": "gate",
                "steps": [ask, {"id": "ok", "type": "approval", "approvers": ["alice"], "timeout": "1h"}],
            }
        ),
        limits={"history_budget": 100},
        output={"n": "{{ vars.l_n }}", "decision": "{{ steps.ok.output.decision }}"},
    )
    handle = await start(
        limited_client, task_queue, document, engine_level=level, execution_timeout=timedelta(minutes=5)
    )
    first = await _pending(handle, "the approval in the branch pending")
    [pending] = first.pending_approvals
    later = await _waited_through_the_chain(handle, "the approval waited")
    [carried] = later.pending_approvals
    assert (carried.path, carried.since, carried.deadline) == ("ok", pending.since, pending.deadline)
    await handle.signal("approve", {"actor": "alice", "reason": "ok"})
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"n": 40, "decision": "approved"}
    final = await status(handle)
    assert [r.status for r in final.steps if r.id == "ok"] == [StepStatus.COMPLETED]
    await _ran_once(limited_client, handle.id, lambda activity_id: True)
    assert await _runs_carrying(limited_client, handle.id, "person") >= 2


@pytest.mark.parametrize("level", [5, ENGINE_LEVEL])
async def test_an_approval_inside_a_condition_in_a_parallel_branch_is_carried_while_the_other_loops(
    limited_client: Client, limited_worker: Worker, task_queue: str, level: int
) -> None:
    """A 40-turn loop in one branch; in the other, an approval inside the 'then' of a condition
    true when the branch reaches it and false once the loop is done (a history budget of 100): the
    run continues as new while the approval waits, carried with the condition branch it is in; the
    runs go back into 'then' without evaluating the condition again; approved after the loop, the
    step after it in that branch runs once. A run started at generation 5 keeps the branches in one
    run while the nested approval waits, as before; every run of the chain replays."""
    ask = {"id": "ask", "type": "task", "action": "echo", "input": {"value": "asked"}}
    check = {
        "id": "check",
        "type": "condition",
        "if": "vars.a < 40",
        "then": {
            "steps": [
                {"id": "ok", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
                {"id": "shipped", "type": "task", "action": "echo", "input": {"value": "shipped"}},
            ]
        },
        "else": {"steps": [{"id": "skipped", "type": "task", "action": "echo", "input": {"value": "no"}}]},
    }
    document = definition(
        unique("nested-approval"),
        _loop_beside({"id": "gate", "steps": [ask, check]}),
        limits={"history_budget": 100},
        output={
            "n": "{{ vars.l_n }}",
            "decision": "{{ steps.ok.output.decision }}",
            "branch": "{{ steps.check.output.branch }}",
            "shipped": "{{ steps.shipped.output }}",
        },
    )
    handle = await start(
        limited_client, task_queue, document, engine_level=level, execution_timeout=timedelta(minutes=5)
    )
    result = await _approved_after_the_loop(handle, level >= 6, "the approval inside the condition")
    assert result.output == {"n": 40, "decision": "approved", "branch": "then", "shipped": "shipped"}
    final = await status(handle)
    assert [r.status for r in final.steps if r.id in ("check", "ok")] == [StepStatus.COMPLETED] * 2
    scheduled = await _ran_once(limited_client, handle.id, lambda activity_id: activity_id != "shipped")
    assert scheduled.count("shipped") == 1
    assert "skipped" not in scheduled
    carried_in = await _runs_carrying(limited_client, handle.id, "person")
    assert carried_in >= 2 if level >= 6 else carried_in == 0


@pytest.mark.parametrize("level", [6, ENGINE_LEVEL])
async def test_an_approval_in_a_parallel_step_inside_a_branch_is_carried_while_the_other_loops(
    limited_client: Client, limited_worker: Worker, task_queue: str, level: int
) -> None:
    """A 40-turn loop in one branch; in the other, a parallel step ('inner') whose one branch waits
    for an approval and the other notes something (a history budget of 100): the run continues as
    new while the approval waits, the branch carried inside 'inner' with its branches' places; the
    runs go back into 'inner' without starting it again; approved after the loop, the step after
    the approval runs once and 'inner' completes once. A run started at generation 6 keeps the
    branches in one run while the nested approval waits, as before; every run of the chain replays."""
    ask = {"id": "ask", "type": "task", "action": "echo", "input": {"value": "asked"}}
    inner = {
        "id": "inner",
        "type": "parallel",
        "branches": [
            {
                "id": "person",
                "steps": [
                    {"id": "ok", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
                    {"id": "shipped", "type": "task", "action": "echo", "input": {"value": "shipped"}},
                ],
            },
            {"id": "note", "steps": [{"id": "noted", "type": "set", "vars": {"noted": True}}]},
        ],
    }
    document = definition(
        unique("inner-approval"),
        _loop_beside({"id": "gate", "steps": [ask, inner]}),
        limits={"history_budget": 100},
        output={
            "n": "{{ vars.l_n }}",
            "decision": "{{ steps.ok.output.decision }}",
            "noted": "{{ vars.noted }}",
            "shipped": "{{ steps.shipped.output }}",
        },
    )
    handle = await start(
        limited_client, task_queue, document, engine_level=level, execution_timeout=timedelta(minutes=5)
    )
    result = await _approved_after_the_loop(
        handle, level >= 7, "the approval inside the nested parallel step"
    )
    assert result.output == {"n": 40, "decision": "approved", "noted": True, "shipped": "shipped"}
    final = await status(handle)
    assert [r.status for r in final.steps if r.id in ("inner", "ok")] == [StepStatus.COMPLETED] * 2
    scheduled = await _ran_once(limited_client, handle.id, lambda activity_id: activity_id != "shipped")
    assert scheduled.count("shipped") == 1
    carried_in = await _runs_carrying(limited_client, handle.id, "person", nested=True)
    assert carried_in >= 2 if level >= 7 else carried_in == 0


@pytest.mark.parametrize("level", [4, ENGINE_LEVEL])
async def test_an_event_wait_in_a_parallel_branch_is_carried_while_the_other_branch_loops(
    limited_client: Client, limited_worker: Worker, task_queue: str, level: int
) -> None:
    """A 40-turn loop in one branch, a wait_for_event in the other (a history budget of 100): the
    run continues as new inside the parallel step while the wait waits, with its key, window and
    deadline through the chain and its mailbox subscription kept; the event published in a later
    run completes the step once, and the mailbox forgets the wait; every run of the chain replays.
    A run started at generation 4 keeps the branches in one run while the wait waits, as before,
    whichever worker runs it (a worker of that generation could not read the wait carried)."""
    family = unique("fam")
    answer = {
        "id": "answer",
        "type": "wait_for_event",
        "event": "family.answered",
        "key": "{{ input.family_id }}",
        "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"]}],
        "timeout": "1h",
    }
    ask = {"id": "ask", "type": "task", "action": "echo", "input": {"value": "asked"}}
    document = definition(
        unique("branch-event"),
        _loop_beside({"id": "listen", "steps": [ask, answer]}),
        limits={"history_budget": 100},
        output={"n": "{{ vars.l_n }}", "answer": "{{ steps.answer.output.data.answer }}"},
    )
    handle = await start(
        limited_client,
        task_queue,
        document,
        {"family_id": family},
        engine_level=level,
        execution_timeout=timedelta(minutes=5),
    )
    first = await eventually(
        lambda: status(handle),
        lambda s: any(w.subscribed for w in s.waiting_events),
        timeout=60,
        what="the wait in the branch subscribed",
    )
    [started] = first.waiting_events
    later = await _loop_done(handle, first, level >= 5, "the wait waited")
    [carried] = later.waiting_events
    assert (carried.path, carried.key, carried.since, carried.deadline) == (
        "answer",
        family,
        started.since,
        started.deadline,
    )
    flows = FlowClient(limited_client, task_queue=task_queue)
    await flows.publish_event(
        "family.answered", family, {"answer": "no"}, event_id="b-1", start_triggers=False
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"n": 40, "answer": "no"}
    final = await status(handle)
    assert [(r.status, r.output["event_id"]) for r in final.steps if r.id == "answer"] == [
        (StepStatus.COMPLETED, "b-1")
    ]
    # The wait subscribed again under the same name in each run it waited in (the mailbox keeps
    # one subscription).
    scheduled = await _ran_once(
        limited_client, handle.id, lambda activity_id: not activity_id.startswith("answer/")
    )
    assert scheduled.count("answer/events#1") >= (3 if level >= 5 else 1)
    carried_in = await _runs_carrying(limited_client, handle.id, "event")
    assert carried_in >= 2 if level >= 5 else carried_in == 0
    assert carried.mailbox == (mailbox_id("default", "family.answered", family) if level >= 23 else None)
    await _mailbox_forgot_the_wait(limited_client, family, ["b-1"], carried.mailbox)


async def test_a_park_in_a_parallel_branch_is_carried_while_the_other_branch_loops(
    limited_flows: FlowClient, http_server: RecordingServer
) -> None:
    """A 40-turn loop in one branch, a charge parked on a dead letter in the other (a history
    budget of 100): the run continues as new inside the parallel step while the task is parked,
    which stays parked on the same row with its deadline through the chain; the redrive sent after
    the loop (the row names the run that parked) runs the charge again with the key it would have
    had, and the run completes. Every run of the chain replays."""
    _cards(http_server)
    document = _charge(unique("branch-park"), http_server.url)
    prep, charge, after = document["steps"]
    document["steps"] = [*_loop_beside({"id": "pay", "steps": [prep, charge]}), after]
    document["output"] = {"n": "{{ vars.l_n }}", "charge": "{{ steps.charge.output }}"}
    run = await limited_flows.start_run(document, {"card": "expired"})
    row = await _open_row(limited_flows, run.workflow_id)
    handle = limited_flows.client.get_workflow_handle(run.workflow_id)
    first = await eventually(lambda: status(handle), lambda s: bool(s.parked), what="parked", timeout=60)
    later = await _waited_through_the_chain(handle, "the task was parked")
    assert later.state == RunState.PARKED
    assert [(p.park_id, p.dead_letter_id, p.deadline) for p in later.parked] == [
        (p.park_id, row.id, p.deadline) for p in first.parked
    ]
    await limited_flows.redrive(row.id, "ops-alice", {"json": {"card": "good"}}, reason="new card")
    result = await limited_flows.result(run.workflow_id, timeout=60)
    assert result.state == RunState.COMPLETED, result.error
    assert (result.output["n"], result.output["charge"]["body"]) == (40, {"charge_id": "ch-1"})
    charges = http_server.requests("POST", "/charge")
    assert [c.json for c in charges] == [{"card": "expired"}, {"card": "good"}]
    assert charges[1].idempotency_key == f"{charges[0].idempotency_key}~r1"  # the same step, redriven
    resolved = await limited_flows.show_dead_letter(row.id)
    assert (resolved.status, resolved.resolved_by) == (DeadLetterStatus.REDRIVEN, "ops-alice")
    await _ran_once(
        limited_flows.client, run.workflow_id, lambda activity_id: activity_id.startswith(("l_", "prep"))
    )
    assert await _runs_carrying(limited_flows.client, run.workflow_id, "park") >= 2
    assert row.run_id == (await _chain(limited_flows.client, run.workflow_id))[0][0]  # parked in the first


async def test_a_run_too_large_to_continue_as_new_fails_saying_why(
    client: Client, worker: Worker, task_queue: str
) -> None:
    """A run whose next run's input would pass Temporal's payload limit (a 1.2 MB input carried
    along, 1 MB of outputs in its state) fails with ``ContinueAsNewTooLarge`` naming the sizes,
    instead of a workflow task the SDK refuses again and again (found by an attacker's probe)."""
    document = definition(
        unique("too-large"),
        [
            *(
                {
                    "id": f"copy{i}",
                    "type": "task",
                    "action": "echo",
                    "input": {"value": f"{{{{ input.p{i} }}}}"},
                }
                for i in range(5)
            ),
            {"id": "init", "type": "set", "vars": {"n": 0}},
            *counting_loop("l", "n", 60),
        ],
        limits={"history_budget": 100},
    )
    handle = await start(
        client,
        task_queue,
        document,
        {f"p{i}": str(i) * 200_000 for i in range(6)},
        execution_timeout=timedelta(minutes=2),
    )
    cause, result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ContinueAsNewTooLarge", cause.message
    assert "more than Temporal's payload limit" in cause.message
    assert result is not None
    assert (result.state, result.error_type) == (RunState.FAILED, "ContinueAsNewTooLarge")
    final = await status(handle)  # answered by a worker replaying the closed run
    assert (final.state, final.current_steps) == (RunState.FAILED, [])
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]


async def test_a_foreach_whose_items_end_in_a_delay_that_does_not_sleep_completes(
    client: Client, worker: Worker, task_queue: str
) -> None:
    """40 items one at a time, each an ``echo`` then a ``0s`` delay, past a history budget of 100:
    the item that begins a stop before its delay finishes instead of sleeping, and the next item
    goes on (before, it waited for that stop for ever: an attacker's probe saw the history frozen
    at 102 events). The run completes with every item's output, each action once."""
    document = definition(
        unique("zero-delay"),
        [
            {
                "id": "each",
                "type": "foreach",
                "items": "range(40) | list",
                "concurrency": 1,
                "output": "{{ steps.w.output }}",
                "steps": [
                    {"id": "w", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}},
                    {"id": "d", "type": "delay", "duration": "0s"},
                ],
            },
        ],
        limits={"history_budget": 100},
        output={"each": "{{ steps.each.output }}"},
    )
    handle, result = await _completed(client, task_queue, document)
    assert result.output == {"each": list(range(40))}
    runs = await _chain(client, handle.id)
    scheduled = await _scheduled(client, handle.id, runs)
    assert len(scheduled) == len(set(scheduled)) == 40


async def test_a_cancel_whose_run_continued_as_new_meanwhile_reaches_the_next_run(
    limited_flows: FlowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race: ``cancel`` describes the run, then the run continues as new before the update
    # reaches it; the update (and Temporal's cancellation) sent to the run described is refused.
    # Held in place by handing ``cancel`` the description of the chain's first run.
    run = await limited_flows.start_run(_reminders(unique("cancel-chain")), {})
    first = await limited_flows.describe(run.workflow_id)
    handle = limited_flows.client.get_workflow_handle(run.workflow_id)
    await eventually(
        lambda: status(handle), lambda s: s.continued >= 1, timeout=120, what="the run continued as new"
    )

    async def described(workflow_id: str) -> Any:
        return first

    monkeypatch.setattr(limited_flows, "describe", described)
    await limited_flows.cancel(run.workflow_id, "ops-carol", "no longer needed")
    cause, _ = await failure_of(handle)
    assert isinstance(cause, CancelledError)
    final = await status(handle)
    assert final.state == RunState.CANCELLED
    assert final.cancelled_by is not None
    assert final.cancelled_by.actor == "ops-carol"
    assert final.continued >= 1
