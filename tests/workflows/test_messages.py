"""Messages at awkward moments: parallel approvals, cancel before the run starts or while waiting for
an approval, a cancel after the end; malformed, unknown, huge and flooding signals (recorded, bounded,
never breaking the status query); plus ``next`` jumps and the CurrentStep option."""

from __future__ import annotations

import asyncio
import io

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError
from temporalio.worker import Worker

from interpreter.state import (
    MAX_DECISION_DATA_BYTES,
    MAX_DECISIONS,
    MAX_REFUSALS,
    CancelRequest,
    CurrentStepTracking,
    Decision,
    DecisionKind,
    DecisionRequest,
    RunInput,
    RunState,
    StepStatus,
)
from interpreter.validate import load_definition
from starter.cli import print_status
from tests.workflows.support import (
    Handle,
    chain_events,
    definition,
    events,
    eventually,
    failure_of,
    record,
    start,
    status,
    unique,
    wait_state,
)
from workflows.generic import (
    ENGINE_LEVEL,
    PATCH_BOUNDED_DECISIONS,
    PATCH_DECISIONS_KEPT,
    PATCH_LEVELS,
    RunDefinitionWorkflow,
)
from workflows.search_attributes import AWAITING_APPROVAL, CURRENT_STEP, RUN_STATE


async def test_parallel_approvals_need_the_step_named(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("two-approvals"),
        [
            {
                "id": "both",
                "type": "parallel",
                "branches": [
                    {"id": "legal", "steps": [{"id": "legal_ok", "type": "approval", "approvers": ["lee"]}]},
                    {
                        "id": "finance",
                        "steps": [{"id": "finance_ok", "type": "approval", "approvers": ["fin", "lee"]}],
                    },
                ],
            },
        ],
    )
    handle = await start(client, task_queue, doc)
    waiting = await eventually(
        lambda: status(handle), lambda s: len(s.pending_approvals) == 2, what="two approvals"
    )
    assert sorted(waiting.current_steps) == ["both", "finance_ok", "legal_ok"]

    with pytest.raises(WorkflowUpdateFailedError) as ambiguous:
        await handle.execute_update(
            RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="lee")
        )
    assert isinstance(ambiguous.value.cause, ApplicationError)
    assert "name the step" in ambiguous.value.cause.message

    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.APPROVE, actor="lee", step_id="legal_ok"),
    )
    one_left = await status(handle)
    assert [p.step_id for p in one_left.pending_approvals] == ["finance_ok"]
    assert one_left.state == RunState.AWAITING_APPROVAL
    # Only one pending now: no step needed.
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="fin"))
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert record(result, "legal_ok").output["actor"] == "lee"
    assert record(result, "finance_ok").output["actor"] == "fin"


async def test_cancel_signal_with_start_cancels_before_any_step(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = load_definition(
        definition(
            unique("cancel-at-start"),
            [{"id": "work", "type": "task", "action": "echo", "input": {"value": 1}}],
        )
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(definition=doc),
        id=unique("cancel-at-start"),
        task_queue=task_queue,
        start_signal="cancel",
        start_signal_args=[CancelRequest(actor="ops", reason="never mind")],
    )
    cause, _ = await failure_of(handle)
    assert isinstance(cause, CancelledError)  # closed as Canceled, through Temporal's cancellation
    final = await status(handle)
    assert final.state == RunState.CANCELLED
    assert final.error == "cancelled by ops: never mind"
    # No step ran: the only activity is the one asking Temporal for the cancellation.
    scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled] == [
        "request_cancel"
    ]


async def test_cancel_while_awaiting_approval_clears_the_approval(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("cancel-approval"),
        [
            {
                "id": "prep",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
                "compensate": [
                    {"id": "undo", "type": "task", "action": "echo", "input": {"value": "undone"}}
                ],
            },
            {"id": "review", "type": "approval", "approvers": ["alice"]},
        ],
    )
    handle = await start(client, task_queue, doc)
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="ops"))
    cause, _ = await failure_of(handle)

    assert isinstance(cause, CancelledError)
    final = await status(handle)
    assert record(final, "review").status == StepStatus.CANCELLED
    assert record(final, "compensate/prep/undo").output == "undone"
    assert final.pending_approvals == []
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(AWAITING_APPROVAL) is False
    assert attrs.get(RUN_STATE) == "cancelled"
    # A late approval reaches a closed run: the server refuses the signal.
    with pytest.raises(RPCError):
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))


async def test_next_jumps_and_current_step_tracking_off(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("next"),
        [
            {"id": "first", "type": "set", "vars": {"a": 1}, "next": "third"},
            {"id": "second", "type": "set", "vars": {"b": 2}},
            {"id": "third", "type": "set", "vars": {"c": 3}},
            {"id": "hold", "type": "approval", "approvers": ["alice"]},
        ],
    )
    tracked, untracked = await asyncio.gather(
        start(client, task_queue, doc), start(client, task_queue, doc, track_current_step=False)
    )
    await asyncio.gather(
        wait_state(tracked, RunState.AWAITING_APPROVAL), wait_state(untracked, RunState.AWAITING_APPROVAL)
    )
    assert (await tracked.describe()).typed_search_attributes.get(CURRENT_STEP) == "hold"
    assert (await untracked.describe()).typed_search_attributes.get(CURRENT_STEP) is None
    for handle in (tracked, untracked):
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
    tracked_result, untracked_result = await asyncio.gather(tracked.result(), untracked.result())
    assert tracked_result.output == untracked_result.output == {"a": 1, "c": 3}
    upserts = [
        len(await events(h, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES))
        for h in (tracked, untracked)
    ]
    assert upserts[1] < upserts[0]


async def test_current_step_is_published_where_runs_wait_unless_every_step_is_asked(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("waits"),
        [
            *({"id": f"t{i}", "type": "task", "action": "echo", "input": {"value": i}} for i in range(4)),
            {"id": "hold", "type": "approval", "approvers": ["alice"]},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "done"}},
        ],
    )
    waits, every = await asyncio.gather(
        start(client, task_queue, doc),
        start(client, task_queue, doc, current_step=CurrentStepTracking.EVERY_STEP),
    )
    await asyncio.gather(
        wait_state(waits, RunState.AWAITING_APPROVAL), wait_state(every, RunState.AWAITING_APPROVAL)
    )
    for handle in (waits, every):  # both find the run waiting at its approval
        assert (await handle.describe()).typed_search_attributes.get(CURRENT_STEP) == "hold"
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
    await asyncio.gather(waits.result(), every.result())
    upserted = []
    for handle in (waits, every):
        steps = []
        for event in await events(handle, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if "CurrentStep" in fields:
                steps.append(fields["CurrentStep"].data.decode())
        upserted.append(steps)
    # waits: only the approval (and clearing it); every_step: every task step too.
    assert upserted[0] == ['"hold"', '""']
    assert [s for s in upserted[1] if s != '""'] == ['"t0"', '"t1"', '"t2"', '"t3"', '"hold"', '"after"']


async def _approval_run(client: Client, task_queue: str, name: str) -> Handle:
    # "blob" is declared long enough for the huge-data case to be refused for its size.
    fields = [{"name": "blob", "max_length": 100_000}]
    doc = definition(
        unique(name), [{"id": "review", "type": "approval", "approvers": ["alice"], "fields": fields}]
    )
    handle = await start(client, task_queue, doc)
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    return handle


async def test_malformed_signals_are_recorded_with_the_reason(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await _approval_run(client, task_queue, "malformed")
    # What a raw client can send: wrong types, missing and extra fields, no object, no or two
    # arguments (which used to fail the workflow task forever), and a misspelt signal name.
    await handle.signal("approve", {"actor": 5})
    await handle.signal("approve", {"actor": "alice", "verdict": "yes"})
    await handle.signal("reject", "no")
    await handle.signal("reject")
    await handle.signal("approve", args=[{"actor": "alice"}, {"actor": "alice"}])
    await handle.signal("cancel", {"reason": "who am I"})
    await handle.signal("cancel", {"actor": "ops", "reason": ["not", "text"]})
    await handle.signal("aprove", {"actor": "alice"})

    seen = await eventually(
        lambda: status(handle), lambda s: len(s.refused_messages) == 8, what="eight refused messages"
    )
    assert seen.state == RunState.AWAITING_APPROVAL
    assert seen.decisions == []
    assert seen.cancelled_by is None
    refused = [(m.name, m.actor, m.reason) for m in seen.refused_messages]
    assert refused == [
        ("approve", None, "malformed approve signal: actor: Input should be a valid string"),
        ("approve", "alice", "malformed approve signal: verdict: Extra inputs are not permitted"),
        (
            "reject",
            None,
            "malformed reject signal: argument: Input should be a valid dictionary or instance of Decision",
        ),
        ("reject", None, "malformed reject signal: it takes one argument (an object), got none"),
        ("approve", None, "malformed approve signal: it takes one argument (an object), got 2"),
        ("cancel", None, "malformed cancel signal: actor: Field required"),
        ("cancel", "ops", "malformed cancel signal: reason: Input should be a valid string"),
        ("aprove", None, "unknown signal 'aprove': this run accepts approve, reject, cancel and event"),
    ]

    shown = io.StringIO()
    print_status(handle.id, seen, shown)
    assert "\nRefused messages\n" in shown.getvalue()
    assert (
        "cancel from ops: malformed cancel signal: reason: Input should be a valid string\n"
        in shown.getvalue()
    )

    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert record(result, "review").output["actor"] == "alice"


async def test_signals_the_worker_cannot_decode_are_recorded_not_dropped(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """A raw client can send a signal whose payload the SDK cannot decode: a 5,000-digit number
    (past Python's 4,300-digit limit), JSON nested 300 deep (past what pydantic reads), text that is
    not JSON, an encoding no converter knows. Decoded by the SDK, each was dropped with a worker log
    line only: the run's status never said a decision had been sent. Each is now recorded as a
    refused message naming the problem, and the run goes on."""
    handle = await _approval_run(client, task_queue, "undecodable")

    def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
        return RawValue(Payload(metadata={"encoding": encoding}, data=data))

    await handle.signal("approve", raw(b"9" * 5000))
    await handle.signal("reject", raw(b"[" * 300 + b"]" * 300))
    await handle.signal("cancel", raw(b'{"actor": "ops", '))
    await handle.signal("event", raw(b"\x00\x01", b"binary/unheard-of"))
    await handle.signal("approve", args=[{"actor": "alice"}, raw(b"9" * 5000)])

    seen = await eventually(
        lambda: status(handle), lambda s: len(s.refused_messages) == 5, what="five refused messages"
    )
    assert seen.state == RunState.AWAITING_APPROVAL
    assert seen.decisions == []
    assert seen.cancelled_by is None
    names = [m.name for m in seen.refused_messages]
    assert names == ["approve", "reject", "cancel", "event", "approve"]
    for message in seen.refused_messages:
        assert message.actor is None
        assert message.reason.startswith(f"malformed {message.name} signal: its argument could not be read: ")
    reasons = [m.reason for m in seen.refused_messages]
    assert "number out of range" in reasons[0]
    assert "binary/unheard-of" in reasons[3]

    await handle.signal("approve", {"actor": "alice"})
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert record(result, "review").output["actor"] == "alice"


async def test_huge_signals_cannot_break_the_status_query(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await _approval_run(client, task_queue, "huge")
    huge = "x" * 1_500_000  # under the server's 2 MiB payload limit; two used to break `status`
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="mallory", reason=huge))
    await handle.signal(RunDefinitionWorkflow.reject, Decision(actor=huge))
    await handle.signal("approve", {"actor": "alice", huge: 1})
    await handle.signal("cancel", {"actor": huge, "reason": 1})
    await handle.signal(huge[:900], {})  # the server bounds names (1000 characters)
    # From a listed approver, but too large to become run data: refused (the patched behaviour).
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice", reason=huge))
    await handle.signal(
        RunDefinitionWorkflow.approve, Decision(actor="alice", data={"blob": "y" * (MAX_DECISION_DATA_BYTES)})
    )

    seen = await eventually(
        lambda: status(handle),
        lambda s: len(s.decisions) == 4 and len(s.refused_messages) == 3,
        what="every huge message recorded",
    )
    assert seen.state == RunState.AWAITING_APPROVAL
    assert len(seen.model_dump_json()) < 20_000
    mallory, long_actor, long_reason, big_data = seen.decisions
    assert not any(d.accepted for d in seen.decisions)
    assert mallory.reason == f"{'x' * 500}… (1500000 characters)"
    assert "may not decide" in (mallory.refusal or "")
    assert long_actor.actor == f"{'x' * 200}… (1500000 characters)"
    assert long_reason.refusal == "decision too large: reason is 1500000 characters long (at most 1000)"
    assert (big_data.refusal or "").startswith("decision too large: data is ")
    assert all(len(m.reason) < 600 and len(m.name) < 300 for m in seen.refused_messages)
    assert (seen.refused_messages[1].actor or "").endswith("… (1500000 characters)")
    # Six messages of 1.5 MB make a history past 4 MiB, where Temporal suggests continuing as new:
    # the run may have continued (its status carried), so look at every run of the chain, and
    # address the latest run from here on.
    markers = await chain_events(handle, EventType.EVENT_TYPE_MARKER_RECORDED)
    patch_markers = [m for m in markers if PATCH_BOUNDED_DECISIONS.encode() in m.SerializeToString()]
    assert len(patch_markers) == 1  # recorded once, where it mattered
    handle = client.get_workflow_handle_for(RunDefinitionWorkflow.run, handle.id)

    # The decide update refuses the same at once, before anything is written.
    with pytest.raises(WorkflowUpdateFailedError) as too_large:
        await handle.execute_update(
            RunDefinitionWorkflow.decide,
            DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", reason=huge),
        )
    assert isinstance(too_large.value.cause, ApplicationError)
    assert too_large.value.cause.message == (
        "decision too large: reason is 1500000 characters long (at most 1000)"
    )

    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice", reason="fine"))
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    final = await status(handle)
    assert [d.accepted for d in final.decisions] == [False, False, False, False, True]


async def test_only_the_last_refusals_are_kept_and_the_rest_counted(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await _approval_run(client, task_queue, "flood")
    extra = 7
    for i in range(MAX_REFUSALS + extra):
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor=f"mallory-{i}"))
        await handle.signal("reject", {"actor": i})

    seen = await eventually(
        lambda: status(handle),
        lambda s: (
            s.decisions_dropped + len(s.decisions) == MAX_REFUSALS + extra
            and s.refused_messages_dropped + len(s.refused_messages) == MAX_REFUSALS + extra
        ),
        what="every refusal kept or counted",
    )
    assert (seen.decisions_dropped, seen.refused_messages_dropped) == (extra, extra)
    assert [d.actor for d in seen.decisions] == [f"mallory-{i}" for i in range(extra, MAX_REFUSALS + extra)]
    assert len(seen.refused_messages) == MAX_REFUSALS

    # Accepted decisions are never dropped to make room.
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
    await handle.result()
    final = await status(handle)
    assert final.decisions[-1].accepted
    assert final.decisions_dropped == extra


@pytest.mark.parametrize("level", [PATCH_LEVELS[PATCH_DECISIONS_KEPT] - 1, ENGINE_LEVEL])
async def test_a_loop_of_decisions_keeps_the_last_ones_and_counts_the_others(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    # Patch decisions-kept (tests/interpreter/test_engine_messages.py shows the 700 decisions that
    # took the status past 2 MiB before it). A run of the generation before asks it, with a marker,
    # where the first decision is dropped; a run of this generation applies it without one.
    turns = MAX_DECISIONS + 5
    loop = [
        {"id": "zero", "type": "set", "vars": {"n": 0}},
        {"id": "ask", "type": "approval", "approvers": ["ann"], "max_visits": turns},
        {"id": "bump", "type": "set", "vars": {"n": "{{ vars.n + 1 }}"}, "max_visits": turns},
        {"id": "again", "type": "condition", "if": f"vars.n < {turns}", "then": {"goto": "ask"}},
    ]
    loop[-1]["max_visits"] = turns
    doc = definition(unique("decided"), loop, limits={"max_step_executions": 4 * turns})
    handle = await start(client, task_queue, doc, engine_level=level)
    for turn in range(turns):
        await wait_state(handle, RunState.AWAITING_APPROVAL)
        request = DecisionRequest(decision=DecisionKind.APPROVE, actor="ann", reason=f"turn {turn}")
        await handle.execute_update(RunDefinitionWorkflow.decide, request)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    final = await status(handle)
    assert [d.reason for d in final.decisions] == [f"turn {turn}" for turn in range(5, turns)]
    assert final.decisions_dropped == 5
    markers = [
        e
        for e in await events(handle, EventType.EVENT_TYPE_MARKER_RECORDED)
        if e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data.find(b"decisions-kept")
        >= 0
    ]
    assert len(markers) == (1 if level < ENGINE_LEVEL else 0)
