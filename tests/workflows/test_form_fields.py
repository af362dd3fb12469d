"""The payout attack on the dev server: approval form data can no longer redirect a request.

Before, an approval merged whatever a decision's data held into ``vars``: an approver (or a forger)
sent ``payout_url`` and the payout request went to their host. Now the approval declares only
``comment``; the forged field is refused by the ``decide`` update before anything is written and
recorded as refused through the signal, and the payout goes to the definition's host.
"""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, Worker

from interpreter.engine import PATCH_DECLARED_FORM_FIELDS
from interpreter.state import Decision, DecisionKind, DecisionRequest, RunState
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, events, eventually, replay, start, status, unique, wait_state
from worker import workflow_runner
from workflows.generic import WORKFLOWS, RunDefinitionWorkflow

UPDATE_EVENTS = (
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
)


def _payout(name: str, payout_url: str, **review: Any) -> dict[str, Any]:
    return definition(
        unique(name),
        [
            {"id": "init", "type": "set", "vars": {"payout_url": payout_url}},
            {"id": "review", "type": "approval", "approvers": ["alice"], **review},
            {
                "id": "pay",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": "{{ vars.payout_url }}", "json": {"amount": 100}},
            },
        ],
    )


@pytest.mark.parametrize("declared", [["comment"], None], ids=["fields-comment", "no-fields"])
async def test_form_data_cannot_redirect_the_payout(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer, declared: list[str] | None
) -> None:
    http_server.route("POST", "/payout", [(200, {}, {"paid": True})])
    with RecordingServer(host="127.0.0.2") as attacker:
        attacker.route("*", "/steal", [(200, {}, {"stolen": True})])
        review = {} if declared is None else {"fields": declared}
        handle = await start(client, task_queue, _payout("payout", f"{http_server.url}/payout", **review))
        await wait_state(handle, RunState.AWAITING_APPROVAL)
        forged = {"payout_url": f"{attacker.url}/steal", "comment": "ok"}

        # The update: refused by its validator, nothing written to history.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                RunDefinitionWorkflow.decide,
                DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", data=forged),
            )
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == "DecisionRefused"
        message = refused.value.cause.message
        assert message.startswith("unknown form fields [")
        assert "'payout_url'] for step 'review' (allowed: " in message
        assert await events(handle, *UPDATE_EVENTS) == []
        assert (await status(handle)).decisions == []

        # The signal: recorded as refused, the run still waits.
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice", data=forged))
        seen = await eventually(lambda: status(handle), lambda s: len(s.decisions) == 1, what="the refusal")
        assert seen.state == RunState.AWAITING_APPROVAL
        [decision] = seen.decisions
        assert decision.accepted is False
        assert decision.refusal == message
        assert seen.vars == {"payout_url": f"{http_server.url}/payout"}

        honest = {"comment": "ok"} if declared else {}
        await handle.signal(
            RunDefinitionWorkflow.approve, Decision(actor="alice", reason="fine", data=honest)
        )
        result = await handle.result()

    assert result.state == RunState.COMPLETED, result
    assert [r.json for r in http_server.requests("POST", "/payout")] == [{"amount": 100}]
    assert attacker.requests() == []
    assert result.output == {"payout_url": f"{http_server.url}/payout", **honest}

    # The signal path asked the patch where the new rule refused what the old one accepted (with no
    # fields, any data; with fields, the old rule refused 'payout_url' already: no marker).
    markers = await events(handle, EventType.EVENT_TYPE_MARKER_RECORDED)
    patch_markers = [m for m in markers if PATCH_DECLARED_FORM_FIELDS.encode() in m.SerializeToString()]
    assert len(patch_markers) == (1 if declared is None else 0)
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    replayed = await replay(replayer, await handle.fetch_history())
    assert replayed.replay_failure is None


async def test_typed_fields_are_checked_by_the_update_and_merged(
    client: Client, task_queue: str, worker: Worker
) -> None:
    fields = [
        {"name": "amount", "type": "number", "required": True},
        {"name": "due", "type": "date"},
        {"name": "channel", "type": "enum", "values": ["bank", "card"]},
    ]
    doc = definition(
        unique("typed-form"), [{"id": "review", "type": "approval", "approvers": ["alice"], "fields": fields}]
    )
    handle = await start(client, task_queue, doc)
    waiting = await wait_state(handle, RunState.AWAITING_APPROVAL)
    [pending] = waiting.pending_approvals
    assert pending.fields == ["amount", "due", "channel"]
    assert pending.form[2].values == ["bank", "card"]

    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "form field 'amount' of step 'review' is required"),
        ({"amount": "100"}, "form field 'amount' of step 'review' must be a number, got a string"),
        ({"amount": 1, "due": "01/12/2026"}, "must be a date as YYYY-MM-DD, got '01/12/2026'"),
        ({"amount": 1, "channel": "cash"}, "must be one of ['bank', 'card'], got 'cash'"),
    ]
    for data, message in bad:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                RunDefinitionWorkflow.decide,
                DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", data=data),
            )
        assert isinstance(refused.value.cause, ApplicationError)
        assert message in refused.value.cause.message
    assert await events(handle, *UPDATE_EVENTS) == []

    good = {"amount": 12.5, "due": "2026-12-24", "channel": "card"}
    await handle.execute_update(
        RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", data=good)
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == good
