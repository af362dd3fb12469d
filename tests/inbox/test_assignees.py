"""Who a run waits for, on a real server: the ``WfaAssignees`` search attribute follows pending
approvals and tasks (escalations included) and is cleared once decided; runs not asking for it keep
none. Human tasks completed through the client with group proof, and through ``wfa task complete``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from interpreter.state import RunInput, RunOptions, RunResult, RunState
from interpreter.validate import load_definition
from starter.client import FlowClient
from starter.errors import DecisionRefusedError
from starter.tokens import generate_keys, mint
from tests.helpers.wfa_process import run_wfa, wfa_env
from tests.workflows.support import eventually, unique, wait_state
from workflows import decision_tokens
from workflows.generic import RunDefinitionWorkflow
from workflows.search_attributes import ASSIGNEES


async def _start(
    client: Client, task_queue: str, step: dict[str, Any], *, publish: bool = True, proof: bool = False
) -> WorkflowHandle[Any, Any]:
    run = RunInput(
        definition=load_definition({"name": unique("people"), "steps": [step]}),
        options=RunOptions(tenant="acme", publish_assignees=publish, decision_proof=proof),
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run, run, id=unique("people-run"), task_queue=task_queue
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    return handle


async def _assignees(handle: WorkflowHandle[Any, Any]) -> list[str] | None:
    value = (await handle.describe()).typed_search_attributes.get(ASSIGNEES)
    return None if value is None else list(value)


async def test_assignees_follow_the_pending_approval(client: Client, task_queue: str, worker: Worker) -> None:
    step = {
        "id": "gate",
        "type": "approval",
        "approvers": ["alice", "group:finance"],
        "escalation": {"after": "2s", "add_approvers": ["bob"]},
    }
    handle = await _start(client, task_queue, step)
    quiet = await _start(client, task_queue, step, publish=False)
    assert await _assignees(handle) in (
        ["group:finance", "user:alice"],
        ["group:finance", "user:alice", "user:bob"],
    )
    await eventually(
        lambda: _assignees(handle),
        lambda v: v == ["group:finance", "user:alice", "user:bob"],
        what="escalated",
    )
    found = [
        e.id async for e in client.list_workflows(f"WfaAssignees = 'user:bob' AND WorkflowId = '{handle.id}'")
    ]
    assert found in ([], [handle.id])  # visibility may lag; the query itself is valid
    await FlowClient(client, task_queue=task_queue, tenant="acme").approve(
        handle.id, "carol", groups=["finance"]
    )
    result: RunResult = await handle.result()
    assert result.steps[0].output["actor"] == "carol"
    assert await _assignees(handle) is None
    assert await _assignees(quiet) is None
    await quiet.terminate("test over")


async def test_a_task_completed_with_proven_groups_only(
    client: Client, task_queue: str, worker: Worker
) -> None:
    private, public = generate_keys("people-test")
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(public))
    try:
        step = {"id": "call", "type": "human_task", "title": "Call", "candidate_groups": ["coordinators"]}
        handle = await _start(client, task_queue, step, proof=True)
        flows = FlowClient(client, task_queue=task_queue, tenant="acme")

        def token(groups: list[str], decision: str = "complete") -> str:
            return mint(
                private,
                tenant="acme",
                run=handle.id,
                actor="sam",
                decisions=[decision],
                step="call",
                groups=groups,
            )

        with pytest.raises(DecisionRefusedError, match="does not prove membership of 'coordinators'"):
            await flows.complete_task(handle.id, "sam", token=token([]), groups=["coordinators"])
        with pytest.raises(DecisionRefusedError, match="'sam' may not decide"):
            await flows.complete_task(handle.id, "sam", token=token(["coordinators"]))
        with pytest.raises(DecisionRefusedError, match="is a human task: complete it"):
            await flows.approve(
                handle.id, "sam", token=token(["coordinators"], "approve"), groups=["coordinators"]
            )
        record = await flows.complete_task(
            handle.id, "sam", token=token(["coordinators"]), groups=["coordinators"], comment="done"
        )
        assert (record.actor, record.accepted) == ("sam", True)
        assert (await handle.result()).steps[0].output["comment"] == "done"
    finally:
        decision_tokens.configure(None)


async def test_wfa_task_complete(client: Client, task_queue: str, worker: Worker) -> None:
    step = {
        "id": "call",
        "type": "human_task",
        "title": "Call",
        "assignee": "carol",
        "fields": [{"name": "reached", "type": "boolean", "required": True}],
    }
    handle = await _start(client, task_queue, step)
    env = wfa_env(client.service_client.config.target_host, task_queue)
    base = ("--tenant", "acme", "task", "complete", handle.id, "--actor", "carol")
    refused = await run_wfa(*base, env=env)
    assert refused.code == 5, refused
    assert "'reached' of step 'call' is required" in refused.err
    done = await run_wfa(*base, "--data", json.dumps({"reached": True}), "--json", env=env)
    assert done.code == 0, done
    assert json.loads(done.out)["decision"] == "complete"
    result: RunResult = await handle.result()
    assert result.steps[0].output["data"] == {"reached": True}


async def test_assignees_past_temporals_search_attribute_limit_are_left_out_not_fatal(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """An approver's name of 3,000 characters: its ``user:`` value would take WfaAssignees past the
    2 KB Temporal takes for a search attribute, and the server terminated the run (no message, no
    compensation; found by an attacker's probe). Now the values that do not fit are left out (the
    ones before it kept), and the run goes on waiting, to be approved."""
    long_name = "l" * 3000
    step = {"id": "gate", "type": "approval", "approvers": ["alice", long_name]}
    handle = await _start(client, task_queue, step)
    assert await _assignees(handle) == ["user:alice"]
    await handle.signal("approve", {"actor": "alice", "reason": "fine"})
    result = RunResult.model_validate(await asyncio.wait_for(handle.result(), 60))
    assert result.state == RunState.COMPLETED
    assert await _assignees(handle) is None
