"""Approvals: status while waiting, signal and update decisions, refusals, rejection, escalation and
timeouts (the days-long ones on the time-skipping server)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from interpreter.state import Decision, DecisionKind, DecisionRequest, RunState, StepStatus
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import (
    definition,
    events,
    eventually,
    failure_of,
    record,
    settled,
    start,
    status,
    unique,
    wait_state,
)
from workflows.generic import RunDefinitionWorkflow

UPDATE_EVENTS = (
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
)


def _approval_definition(name: str, **approval: Any) -> dict[str, Any]:
    return definition(
        name,
        [
            {
                "id": "prep",
                "type": "task",
                "action": "echo",
                "input": {"value": "ready", "fail": "NotYet", "succeed_on_attempt": 2},
                "retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 3},
            },
            {"id": "init", "type": "set", "vars": {"amount": "{{ input.amount }}"}},
            {
                "id": "review",
                "name": "Manager review",
                "type": "approval",
                "approvers": ["alice", "bob"],
                "message": "Approve {{ vars.amount }} EUR?",
                "fields": ["note"],
                **approval,
            },
            {"id": "after", "type": "set", "vars": {"decided_by": "{{ steps.review.output.actor }}"}},
        ],
    )


async def test_status_while_waiting_then_approve_by_signal(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await start(
        client, task_queue, _approval_definition(unique("approval-signal"), timeout="1h"), {"amount": 120}
    )
    waiting = await wait_state(handle, RunState.AWAITING_APPROVAL)

    assert waiting.definition.startswith("approval-signal-")
    assert waiting.current_steps == ["review"]
    [pending] = waiting.pending_approvals
    assert (pending.step_id, pending.path, pending.approvers) == ("review", "review", ["alice", "bob"])
    assert pending.message == "Approve 120 EUR?"
    assert pending.fields == ["note"]
    assert pending.deadline == pending.since + timedelta(hours=1)
    prep = record(waiting, "prep")
    assert (prep.status, prep.attempts, prep.output) == (StepStatus.COMPLETED, 2, "ready")
    assert prep.duration_s is not None
    assert prep.duration_s > 0
    assert record(waiting, "review").status == StepStatus.WAITING
    assert waiting.vars == {"amount": 120}

    # Refused signals change nothing but are recorded, with the reason.
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="mallory"))
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="bob", data={"salary": 1}))
    refused = await eventually(lambda: status(handle), lambda s: len(s.decisions) == 2, what="two refusals")
    assert refused.state == RunState.AWAITING_APPROVAL
    assert [(d.actor, d.accepted) for d in refused.decisions] == [("mallory", False), ("bob", False)]
    assert "may not decide" in (refused.decisions[0].refusal or "")
    assert "unknown form fields" in (refused.decisions[1].refusal or "")

    await handle.signal(
        RunDefinitionWorkflow.approve, Decision(actor="bob", reason="fine", data={"note": "ok"})
    )
    result = await handle.result()

    assert result.state == RunState.COMPLETED
    assert result.output == {"amount": 120, "note": "ok", "decided_by": "bob"}
    review = record(result, "review")
    assert review.status == StepStatus.COMPLETED
    assert review.output == {
        "decision": "approved",
        "actor": "bob",
        "reason": "fine",
        "data": {"note": "ok"},
        "escalations": 0,
    }
    final = await status(handle)  # queries still answer after the run closed
    assert final.state == RunState.COMPLETED
    assert final.pending_approvals == []
    assert [(d.actor, d.accepted) for d in final.decisions][-1] == ("bob", True)


async def test_update_approves_and_refuses_unlisted_approvers_without_history(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await start(client, task_queue, _approval_definition(unique("approval-update")), {"amount": 9})
    await wait_state(handle, RunState.AWAITING_APPROVAL)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="mallory")
        )
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == "DecisionRefused"
    assert "mallory" in refused.value.cause.message
    # The validator refused it before anything was written: no update events, no decision record.
    assert await events(handle, *UPDATE_EVENTS) == []
    assert (await status(handle)).decisions == []

    accepted = await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", data={"note": "go"}),
    )
    assert (accepted.actor, accepted.accepted, accepted.decision) == ("alice", True, DecisionKind.APPROVE)
    result = await handle.result()
    assert result.output == {"amount": 9, "note": "go", "decided_by": "alice"}
    kinds = [e.event_type for e in await events(handle, *UPDATE_EVENTS)]
    assert kinds == [
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    ]


async def test_rejections(client: Client, task_queue: str, worker: Worker) -> None:
    fail = await start(client, task_queue, _approval_definition(unique("reject-fail")), {"amount": 1})
    cont = await start(
        client,
        task_queue,
        _approval_definition(unique("reject-continue"), on_reject="continue"),
        {"amount": 2},
    )
    by_update = await start(client, task_queue, _approval_definition(unique("reject-update")), {"amount": 3})
    await asyncio.gather(*(wait_state(h, RunState.AWAITING_APPROVAL) for h in (fail, cont, by_update)))

    await fail.signal(RunDefinitionWorkflow.reject, Decision(actor="alice", reason="too much"))
    await cont.signal(RunDefinitionWorkflow.reject, Decision(actor="bob", reason="meh"))
    await by_update.execute_update(
        RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.REJECT, actor="bob", reason="no")
    )

    cause, failed = await failure_of(fail)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ApprovalRejected"
    assert "too much" in cause.message
    assert failed is not None
    assert record(failed, "review").status == StepStatus.FAILED
    assert "after" not in {r.path for r in failed.steps}

    continued = await cont.result()
    assert continued.state == RunState.COMPLETED
    assert record(continued, "review").output["decision"] == "rejected"
    assert continued.output["decided_by"] == "bob"

    cause, _ = await failure_of(by_update)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ApprovalRejected"


# ----------------------------------------------------------------------- time-skipping server


async def test_escalation_after_two_days_notifies_and_widens_approvers(
    time_skipping_env: WorkflowEnvironment, ts_worker: Worker, task_queue: str, http_server: RecordingServer
) -> None:
    client = time_skipping_env.client
    doc = definition(
        unique("escalation"),
        [
            {
                "id": "review",
                "type": "approval",
                "approvers": ["alice"],
                "timeout": "5d",
                "on_timeout": "reject",
                "escalation": {
                    "after": "2d",
                    "add_approvers": ["boss"],
                    "steps": [
                        {
                            "id": "notify",
                            "type": "task",
                            "action": "http",
                            "input": {
                                "method": "POST",
                                "url": f"{http_server.url}/notify",
                                "json": {"text": "{{ run.workflow_id }} waits for approval"},
                            },
                        }
                    ],
                },
            },
        ],
    )
    handle = await start(client, task_queue, doc, execution_timeout=timedelta(days=30))
    began = await time_skipping_env.get_current_time()
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    # Before the escalation: the added approver may not decide yet.
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="boss")
        )

    await time_skipping_env.sleep(timedelta(days=2, hours=1))

    async def notified() -> list[Any]:
        return http_server.requests("POST", "/notify")

    await eventually(notified, bool, what="the escalation's notify request")
    escalated = await eventually(
        lambda: status(handle),
        lambda s: bool(s.pending_approvals) and s.pending_approvals[0].escalations == 1,
    )
    assert escalated.pending_approvals[0].approvers == ["alice", "boss"]
    assert escalated.state == RunState.AWAITING_APPROVAL
    [notify] = http_server.requests("POST", "/notify")
    assert notify.json == {"text": f"{handle.id} waits for approval"}
    assert notify.idempotency_key == f"{handle.id}/{handle.result_run_id}/review/escalation1/notify"

    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="boss", reason="escalated"))
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert record(result, "review").output["actor"] == "boss"
    assert record(result, "review").output["escalations"] == 1
    assert record(result, "review/escalation1/notify").status == StepStatus.COMPLETED
    waited = record(result, "review").finished_at - began
    assert timedelta(days=2) <= waited < timedelta(days=5)


async def test_approval_timeouts(
    time_skipping_env: WorkflowEnvironment, ts_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client

    def doc(on_timeout: str) -> dict[str, Any]:
        return definition(
            unique(f"timeout-{on_timeout}"),
            [
                {
                    "id": "review",
                    "type": "approval",
                    "approvers": ["alice"],
                    "timeout": "3d",
                    "on_timeout": on_timeout,
                },
                {"id": "after", "type": "set", "vars": {"went_on": True}},
            ],
        )

    began = await time_skipping_env.get_current_time()
    outcomes: dict[str, Any] = {}
    for kind in ("reject", "fail", "approve"):  # one at a time: see test_delays_time_skipping
        handle = await start(client, task_queue, doc(kind), execution_timeout=timedelta(days=30))
        await settled(handle, step="review")
        outcomes[kind] = await handle.result() if kind == "approve" else await failure_of(handle)
    approved = outcomes["approve"]
    (reject_cause, rejected), (fail_cause, failed) = outcomes["reject"], outcomes["fail"]

    assert approved.state == RunState.COMPLETED
    assert approved.output == {"went_on": True}
    assert record(approved, "review").output["actor"] == "timeout"
    assert isinstance(reject_cause, ApplicationError)
    assert reject_cause.type == "ApprovalRejected"
    assert isinstance(fail_cause, ApplicationError)
    assert fail_cause.type == "ApprovalTimedOut"
    for result in (rejected, failed):
        assert result is not None
        review = record(result, "review")
        assert review.status == StepStatus.FAILED
        assert review.finished_at - began >= timedelta(days=3)
        assert "after" not in {r.path for r in result.steps}
