"""The ``human_task`` step on the fake runtime: completion hands the form data to the output, the
shared waiting mechanism (escalation ladder, due date, business hours), decisions of the wrong kind
and people who may not complete it are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from interpreter.engine import DecisionError, assignee_value, may_decide
from interpreter.model import parse_definition
from interpreter.state import Decision, DecisionKind, RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import HOUR, decide_at, new_engine, rec, task

COMPLETE = DecisionKind.COMPLETE


def human_task(step_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "human_task",
        "title": "Call {{ input.family | default('the family') }}",
        **fields,
    }


async def test_completion_hands_the_form_to_the_output() -> None:
    engine, rt = new_engine(
        [
            human_task(
                "call",
                assignee="coordinator",
                description="No answer to the last SMS",
                fields=[
                    {"name": "reached", "type": "boolean", "required": True},
                    {"name": "outcome", "type": "enum", "values": ["booked", "declined"]},
                ],
                due="1d",
            ),
            task("log", input={"reached": "{{ steps.call.output.data.reached }}"}),
        ],
        run_input={"family": "the Nguyens"},
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    [pending] = engine.status().pending_approvals
    assert (pending.kind, pending.message, pending.description) == (
        "task",
        "Call the Nguyens",
        "No answer to the last SMS",
    )
    assert (pending.approvers, pending.deadline) == (["coordinator"], rt.start + timedelta(days=1))
    assert engine.assignees() == ["user:coordinator"]
    # An approval's verbs do not complete a task; a missing required field is refused.
    with pytest.raises(DecisionError, match="is a human task: complete it"):
        engine.decide(DecisionKind.APPROVE, Decision(actor="coordinator"))
    with pytest.raises(DecisionError, match="'reached' of step 'call' is required"):
        engine.decide(COMPLETE, Decision(actor="coordinator", data={"outcome": "booked"}))
    with pytest.raises(DecisionError, match="may not decide"):
        engine.decide(COMPLETE, Decision(actor="intruder", data={"reached": True}))
    decide_at(
        rt,
        engine,
        2 * HOUR,
        COMPLETE,
        actor="coordinator",
        reason="spoke to the mother",
        data={"reached": True, "outcome": "booked"},
    )
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert rec(result, "call").output == {
        "status": "completed",
        "completed_by": "coordinator",
        "comment": "spoke to the mother",
        "data": {"reached": True, "outcome": "booked"},
        "escalations": 0,
    }
    assert rt.calls[0].input == {"reached": True}
    assert engine.vars == {}  # a task's data is its output, not variables
    assert engine.assignees() == []


async def test_a_candidate_group_member_completes_it_after_an_escalation() -> None:
    engine, rt = new_engine(
        [
            human_task(
                "call",
                candidate_groups=["coordinators"],
                due="4h",
                escalation={"after": "1h", "add_approvers": ["group:supervisors"], "steps": [task("nudge")]},
            )
        ]
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    assert engine.assignees() == ["group:coordinators"]
    with pytest.raises(DecisionError, match="may not decide"):
        engine.decide(COMPLETE, Decision(actor="sam", groups=["supervisors"]))
    await rt.run_until(lambda: len(rt.calls) == 1)
    assert engine.assignees() == ["group:coordinators", "group:supervisors"]
    decide_at(rt, engine, 90 * 60, COMPLETE, actor="sam", groups=["supervisors"])
    result = await rt.run(main)
    output = rec(result, "call").output
    assert (output["completed_by"], output["escalations"]) == ("sam", 1)


@pytest.mark.parametrize(
    ("on_timeout", "state", "status"),
    [("fail", RunState.FAILED, StepStatus.FAILED), ("continue", RunState.COMPLETED, StepStatus.COMPLETED)],
)
async def test_not_completed_when_due(on_timeout: str, state: RunState, status: StepStatus) -> None:
    engine, rt = new_engine([human_task("call", assignee="c", due="2h", on_timeout=on_timeout)])
    result = await rt.run(rt.spawn(engine.run()))
    assert result.state == state
    assert rec(result, "call").status == status
    assert rt.elapsed == 2 * HOUR
    if on_timeout == "fail":
        assert (result.error_type, result.error) == ("TaskTimedOut", "step 'call': not completed within 2h")
    else:
        assert rec(result, "call").output["status"] == "timed_out"


async def test_due_counts_business_hours_only() -> None:
    # Friday 2026-01-02 16:00 in Paris (15:00 UTC): 8 business hours of 09:00-17:00 end on Monday
    # at 16:00 Paris time.
    start = datetime(2026, 1, 2, 15, 0, tzinfo=UTC)
    rt = FakeRuntime(start)
    engine, rt = new_engine(
        [
            human_task(
                "call",
                assignee="c",
                due="8h",
                business_hours={"timezone": "Europe/Paris", "start": "09:00", "end": "17:00"},
                on_timeout="continue",
            )
        ],
        rt=rt,
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    [pending] = engine.status().pending_approvals
    assert pending.deadline == datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    await rt.run(main)
    assert rt.now() == datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def test_model_rules() -> None:
    base = {"name": "t", "steps": [{"id": "t", "type": "human_task", "title": "x"}]}
    with pytest.raises(ValidationError, match="needs an 'assignee' or 'candidate_groups'"):
        parse_definition(base)
    step = {"id": "t", "type": "human_task", "title": "x", "assignee": "a"}
    with pytest.raises(ValidationError, match="'business_hours' counts the 'due' time"):
        parse_definition({**base, "steps": [{**step, "business_hours": {"timezone": "UTC"}}]})
    with pytest.raises(ValidationError, match="shorter than 'due'"):
        parse_definition({**base, "steps": [{**step, "due": "1h", "escalation": {"after": "2h"}}]})


def test_group_approvers() -> None:
    assert may_decide(["alice", "group:finance"], "bob", ["finance"])
    assert not may_decide(["alice", "group:finance"], "bob", ["sales"])
    assert (assignee_value("alice"), assignee_value("group:finance")) == ("user:alice", "group:finance")


async def test_an_approval_refuses_complete() -> None:
    engine, rt = new_engine([{"id": "gate", "type": "approval", "approvers": ["alice"]}])
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    with pytest.raises(DecisionError, match="is an approval: approve or reject it"):
        engine.decide(COMPLETE, Decision(actor="alice"))
    engine.decide(DecisionKind.APPROVE, Decision(actor="alice"))
    assert (await rt.run(main)).state == RunState.COMPLETED


async def test_links_are_sent_at_the_start_and_to_people_an_escalation_adds() -> None:
    engine, rt = new_engine(
        [
            {
                "id": "gate",
                "type": "approval",
                "approvers": ["alice", "group:finance"],
                "message": "Approve {{ input.amount }}?",
                "fields": [{"name": "amount_ok", "type": "boolean", "required": True}],
                "timeout": "3h",
                "escalation": {"after": "1h", "add_approvers": ["boss"]},
                "notify": {
                    "email": {
                        "to": {
                            "alice": "{{ input.alice }}",
                            "boss": "boss@example.org",
                        }
                    }
                },
            }
        ],
        run_input={"amount": 5, "alice": "alice@example.org"},
    )
    rt.returning("decision_links", {"sent": ["alice"]}, {"sent": ["boss"]})
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: len(rt.calls) == 2)
    first, second = rt.calls
    assert (first.action, first.activity_id, first.elapsed) == ("decision_links", "gate/links", 0)
    assert first.input["recipients"] == [{"actor": "alice", "address": "alice@example.org"}]
    assert (first.input["subject"], first.input["kind"], first.input["required_fields"]) == (
        "Approve 5?",
        "approval",
        True,
    )
    assert first.input["expires_at"] == (rt.start + timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    assert (second.activity_id, second.elapsed) == ("gate/links2", HOUR)
    assert second.input["recipients"] == [{"actor": "boss", "address": "boss@example.org"}]
    [pending] = engine.status().pending_approvals
    assert (pending.notified, pending.notify_error) == (["alice", "boss"], None)
    decide_at(rt, engine, 2 * HOUR, DecisionKind.APPROVE, actor="boss", data={"amount_ok": True})
    assert (await rt.run(main)).state == RunState.COMPLETED


async def test_links_that_cannot_be_sent_leave_the_step_waiting() -> None:
    engine, rt = new_engine(
        [human_task("call", assignee="carol", notify={"email": {"to": {"carol": "carol@example.org"}}})]
    )
    rt.failing("decision_links", times=99, error_type="DecisionLinksNotConfigured")
    main = rt.spawn(engine.run())
    await rt.run_until(
        lambda: engine.awaiting_approval and bool(engine.status().pending_approvals[0].notify_error)
    )
    [pending] = engine.status().pending_approvals
    assert pending.notify_error is not None
    assert pending.notify_error.startswith("DecisionLinksNotConfigured")
    assert pending.notified == []
    decide_at(rt, engine, HOUR, COMPLETE, actor="carol")
    assert (await rt.run(main)).state == RunState.COMPLETED


def test_links_go_to_people_not_groups() -> None:
    step = {
        "id": "t",
        "type": "human_task",
        "title": "x",
        "assignee": "a",
        "notify": {"email": {"to": {"group:ops": "ops@example.org"}}},
    }
    with pytest.raises(ValidationError, match="name the members"):
        parse_definition({"name": "t", "steps": [step]})


@pytest.mark.parametrize(
    ("step", "refused"),
    [
        (human_task("t", assignee="a", notify={"email": {"to": {"dave": "d@x"}}}), "'dave'"),
        (
            # A candidate group's member: the link would name a person the step does not list.
            human_task("t", candidate_groups=["ops"], notify={"email": {"to": {"olga": "o@x"}}}),
            "'olga'",
        ),
        (
            {
                "id": "t",
                "type": "approval",
                "approvers": ["alice"],
                "notify": {"email": {"to": {"alice": "a@x", "bob": "b@x"}}},
            },
            "'bob'",
        ),
    ],
    ids=["task", "group-member", "approval"],
)
def test_a_link_for_someone_the_step_does_not_list_is_refused_not_dropped(
    step: dict[str, Any], refused: str
) -> None:
    """A probe: ``notify.email.to`` naming someone who is not the step's assignee, approver or
    added by its escalation validated, and at run time that person was silently mailed nothing.
    Refused where a definition is written or registered; one the registry already holds loads as
    it did (its runs and triggers go on)."""
    from interpreter.validate import DefinitionError, load_definition
    from starter.definitions import load

    nested = {"id": "p", "type": "parallel", "branches": [{"id": "b", "steps": [step]}]}
    for steps, path in (([step], "$.steps[0]"), ([nested], "$.steps[0].branches[0].steps[0]")):
        with pytest.raises(DefinitionError) as caught:
            load({"name": "t", "steps": steps})
        [problem] = caught.value.problems
        assert problem.path == f"{path}.notify.email.to"
        assert refused in problem.message
        assert "inbox" in problem.message
        load_definition({"name": "t", "steps": steps})  # as the registry loads what it holds


def test_a_link_problem_is_listed_with_the_other_problems() -> None:
    """It showed only once every other problem was fixed (found by a probe): a second round of
    ``wfa validate`` for one definition."""
    from interpreter.validate import DefinitionError
    from starter.definitions import load

    steps = [
        human_task("t", assignee="a", notify={"email": {"to": {"dave": "d@x"}}}),
        {"id": "route", "type": "condition", "if": "true", "then": {"goto": "nowhere"}},
    ]
    for document in ({"name": "t", "steps": steps}, json.dumps({"name": "t", "steps": steps})):
        with pytest.raises(DefinitionError) as caught:
            load(document)
        assert [p.path for p in caught.value.problems] == [
            "$.steps[1].then.goto",
            "$.steps[0].notify.email.to",
        ]


def test_a_link_for_someone_an_escalation_adds_is_accepted() -> None:
    from starter.definitions import load

    escalation = {"after": "1h", "add_approvers": ["dave", "group:ops"]}
    step = human_task(
        "t", assignee="a", escalation=escalation, notify={"email": {"to": {"a": "a@x", "dave": "d@x"}}}
    )
    load({"name": "t", "steps": [step]})
