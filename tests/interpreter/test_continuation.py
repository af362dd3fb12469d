"""Continue-as-new in the engine, driven by the fake runtime: a run stopped at a safe point and
resumed from its snapshot (through JSON, as Temporal carries it) ends exactly as an uninterrupted
run: same variables, outputs, visit counts, activity ids, compensations and pending approvals."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from interpreter.continuation import (
    COMPENSATING_KIND,
    SNAPSHOT_VERSION,
    Continuation,
    ContinuationVersionError,
    read_continuation,
)
from interpreter.engine import (
    PATCH_COMPENSATE_HERE_BUDGET,
    PATCH_CONTINUE_AS_NEW_COMPENSATING,
    Engine,
    RunInfo,
)
from interpreter.events import Event
from interpreter.model import Definition
from interpreter.state import CancelRequest, Decision, DecisionKind, RunResult, RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import (
    HOUR,
    approval,
    delay,
    make_definition,
    new_runtime,
    set_vars,
    task,
    work,
)


def _loop(iterations: int) -> list[dict[str, Any]]:
    return [
        set_vars("init", {"n": 0}),
        work("charge", value="charged", compensate=[task("refund", "refund")]),
        work("step", value="{{ vars.n }}", max_visits=iterations),
        set_vars("bump", {"n": "{{ vars.n + 1 }}"}, max_visits=iterations),
        {
            "id": "again",
            "type": "condition",
            "if": f"vars.n < {iterations}",
            "then": {"goto": "step"},
            "max_visits": iterations,
        },
        {"id": "end", "type": "fail", "message": "stop after {{ vars.n }}"},
    ]


def _engine(definition: Definition, rt: FakeRuntime, snapshot: Continuation | None, every: int) -> Engine:
    """An engine that asks to continue as new every ``every`` completed actions."""
    done = len(rt.calls)

    def wanted() -> bool:
        return len(rt.calls) - done >= every

    return Engine(
        definition,
        {},
        rt,
        RunInfo(
            workflow_id="wf-1",
            run_id=f"run-{0 if snapshot is None else snapshot.generation}",
            started_at=rt.now(),
        ),
        continue_as_new=wanted,
        resume=snapshot,
    )


async def _chain(definition: Definition, rt: FakeRuntime, every: int) -> tuple[RunResult, int, Engine]:
    snapshot: Continuation | None = None
    runs = 0
    while True:
        runs += 1
        engine = _engine(definition, rt, snapshot, every)
        result = await rt.run(engine.run())
        if not engine.continuing:
            return result, runs, engine
        # Through JSON, as the workflow's input carries it.
        snapshot = read_continuation(json.loads(json.dumps(engine.continuation().model_dump(mode="json"))))


async def test_a_resumed_chain_ends_as_an_uninterrupted_run() -> None:
    definition = make_definition(_loop(12))
    straight_rt = new_runtime()
    straight_rt.on("refund", lambda call, attempt: "refunded")
    straight = await straight_rt.run(
        Engine(definition, {}, straight_rt, RunInfo("wf-1", "run-0", straight_rt.now())).run()
    )

    rt = new_runtime()
    rt.on("refund", lambda call, attempt: "refunded")
    chained, runs, engine = await _chain(definition, rt, every=3)

    assert runs >= 4
    assert chained.state == straight.state == RunState.FAILED
    assert chained.error == straight.error == "stop after 12"
    # The same actions with the same activity ids (visit counts went on), and the compensation
    # registered in the first run ran at the end of the last.
    assert [c.activity_id for c in rt.calls] == [c.activity_id for c in straight_rt.calls]
    assert rt.calls[-1].action == "refund"
    assert engine.status().continued == runs - 1


async def test_max_visits_counts_across_runs() -> None:
    steps = _loop(12)
    steps[2]["max_visits"] = 5  # the loop wants 12 visits: the 6th, in a later run, fails
    rt = new_runtime()
    rt.on("refund", lambda call, attempt: "refunded")
    result, runs, _ = await _chain(make_definition(steps), rt, every=2)
    assert runs >= 2
    assert result.error_type == "LoopLimitExceeded"


async def test_a_pending_approval_resumes_with_its_deadline_and_a_decision_taken_at_the_switch() -> None:
    steps = [
        work("prep", value="ready"),
        approval(
            "gate",
            ["alice"],
            timeout="10h",
            fields=[
                {"name": "note", "type": "string"},
                {"name": "level", "type": "enum", "values": ["a", "b"]},
            ],
            escalation={
                "after": "1h",
                "max_escalations": 5,
                "add_approvers": ["bob"],
                "steps": [work("remind")],
            },
        ),
        work("after", value="{{ steps.gate.output.actor }}"),
    ]
    definition = make_definition(steps)
    rt = new_runtime()
    first = _engine(definition, rt, None, every=3)  # prep + two reminders
    result = await rt.run(first.run())
    assert first.continuing
    assert result.state == RunState.AWAITING_APPROVAL
    pending = first.status().pending_approvals[0]
    assert pending.escalations == 2
    # A decision accepted while the host waits for its handlers travels in the snapshot.
    first.decide(DecisionKind.APPROVE, Decision(actor="bob", reason="at the switch"))
    snapshot = read_continuation(json.loads(json.dumps(first.continuation().model_dump(mode="json"))))
    assert snapshot.approval is not None
    assert snapshot.approval.view.deadline == pending.deadline

    second = _engine(definition, rt, snapshot, every=100)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED
    assert result.steps[-1].output == "bob"
    assert [d.actor for d in second.status().decisions if d.accepted] == ["bob"]


async def _continued_at_gate(rt: FakeRuntime) -> tuple[Definition, Engine]:
    """A run that continued as new while its approval ``gate`` waited (after ``prep`` and one
    reminder): the definition and that run's engine."""
    steps = [
        work("prep"),
        approval(
            "gate", ["alice"], escalation={"after": "1h", "max_escalations": 3, "steps": [work("remind")]}
        ),
    ]
    definition = make_definition(steps)
    first = _engine(definition, rt, None, every=2)
    await rt.run(first.run())
    assert first.continuing
    return definition, first


async def test_a_decision_in_the_new_runs_first_task_finds_the_approval() -> None:
    rt = new_runtime()
    definition, first = await _continued_at_gate(rt)
    snapshot = first.continuation()
    second = _engine(definition, rt, snapshot, every=100)
    assert second.status().state == RunState.AWAITING_APPROVAL  # pending from the first moment
    second.decide(DecisionKind.REJECT, Decision(actor="alice", reason="before the engine ran"))
    result = await rt.run(second.run())
    assert result.state == RunState.FAILED
    assert result.error_type == "ApprovalRejected"


def test_a_snapshot_of_an_unknown_version_is_refused_in_words() -> None:
    with pytest.raises(ContinuationVersionError, match="version 99"):
        read_continuation({"version": 99})
    assert SNAPSHOT_VERSION == 1


def _human_task(step_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "human_task",
        "title": "Call the family",
        "assignee": "coordinator",
        **fields,
    }


def _task_steps() -> list[dict[str, Any]]:
    return [
        work("prep", value="ready"),
        _human_task(
            "call",
            due="10h",
            fields=[{"name": "reached", "type": "boolean", "required": True}],
            escalation={
                "after": "1h",
                "max_escalations": 5,
                "add_approvers": ["lead"],
                "steps": [work("remind")],
            },
        ),
        work("after", value="{{ steps.call.output.completed_by }}:{{ steps.call.output.data.reached }}"),
    ]


async def test_a_waiting_human_task_continues_as_new_with_its_due_time_and_a_completion_at_the_switch() -> (
    None
):
    definition = make_definition(_task_steps())
    rt = new_runtime()
    first = _engine(definition, rt, None, every=3)  # prep + two reminders
    result = await rt.run(first.run())
    assert first.continuing
    assert result.state == RunState.AWAITING_APPROVAL
    pending = first.status().pending_approvals[0]
    assert (pending.kind, pending.escalations) == ("task", 2)
    assert "lead" in pending.approvers
    # A completion accepted while the host waits for its handlers travels in the snapshot.
    first.decide(DecisionKind.COMPLETE, Decision(actor="lead", reason="reached", data={"reached": True}))
    snapshot = read_continuation(json.loads(json.dumps(first.continuation().model_dump(mode="json"))))
    assert snapshot.approval is None
    assert snapshot.kinds["human_task"]["view"]["deadline"] is not None

    second = _engine(definition, rt, snapshot, every=100)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED
    assert result.steps[-1].output == "lead:True"
    call = next(r for r in result.steps if r.id == "call")
    assert call.output["escalations"] == 2
    assert [d.actor for d in second.status().decisions if d.accepted] == ["lead"]
    # One visit of the task across both runs; the reminders did not start again.
    assert [c.step_id for c in rt.calls].count("remind") == 2


async def test_a_carried_human_task_keeps_its_deadline_and_times_out_when_the_first_would_have() -> None:
    steps = _task_steps()
    steps[1]["on_timeout"] = "continue"
    steps[2] = work("after", value="{{ steps.call.output.status }}")
    definition = make_definition(steps)
    rt = new_runtime()
    first = _engine(definition, rt, None, every=2)  # prep + one reminder
    await rt.run(first.run())
    assert first.continuing
    pending = first.status().pending_approvals[0]
    snapshot = first.continuation()
    second = _engine(definition, rt, snapshot, every=100)
    # Pending from the first moment, with the same view: a completion sent then would count.
    [resumed] = second.status().pending_approvals
    assert (resumed.since, resumed.deadline, resumed.escalations) == (pending.since, pending.deadline, 1)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED
    assert result.steps[-1].output == "timed_out"
    assert pending.deadline is not None
    assert rt.now() >= pending.deadline  # it waited until the first run's deadline, not 10h more
    assert rt.now() < pending.deadline + timedelta(hours=1)
    assert [c.step_id for c in rt.calls].count("remind") == 5


async def test_a_snapshot_whose_human_task_is_not_at_that_position_is_refused() -> None:
    definition = make_definition(_task_steps())
    rt = new_runtime()
    first = _engine(definition, rt, None, every=2)
    await rt.run(first.run())
    data = first.continuation().model_dump(mode="json")
    data["kinds"]["human_task"]["position"] = 0
    with pytest.raises(ValueError, match="carried human task 'call' is not at top-level step 0"):
        _engine(definition, rt, read_continuation(data), every=100)


def _event_steps() -> list[dict[str, Any]]:
    return [
        work("prep", value="ready"),
        {
            "id": "answer",
            "type": "wait_for_event",
            "event": "family.answered",
            "key": "{{ input.family_id }}",
            "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"], "required": True}],
            "lookback": "1h",
            "timeout": "3d",
            "on_timeout": "continue",
        },
        work("after", value="{{ steps.answer.output.event_id }}:{{ steps.answer.output.timed_out }}"),
    ]


def _answer(event_id: str, key: str = "fam-1") -> Event:
    return Event(id=event_id, type="family.answered", key=key, tenant="default", data={"answer": "yes"})


def _event_engine(rt: FakeRuntime, snapshot: Continuation | None, *, continue_at: float | None) -> Engine:
    """An engine whose host asks to continue as new from ``continue_at`` (virtual seconds) on."""
    asked = {"now": False}
    if continue_at is not None:
        rt.at(continue_at, lambda: asked.__setitem__("now", True))
    engine = Engine(
        make_definition(_event_steps()),
        {"family_id": "fam-1"},
        rt,
        RunInfo(
            workflow_id="wf-1",
            run_id=f"run-{0 if snapshot is None else snapshot.generation}",
            started_at=rt.now(),
        ),
        continue_as_new=lambda: asked["now"],
        resume=snapshot,
    )
    rt.engine = engine
    return engine


async def _first_event_run(rt: FakeRuntime) -> tuple[Engine, Continuation]:
    first = _event_engine(rt, None, continue_at=HOUR)
    result = await rt.run(first.run())
    assert first.continuing
    assert result.state == RunState.RUNNING
    [waiting] = first.status().waiting_events
    assert waiting.subscribed
    # The subscription stays for the next run: the wait did not end.
    assert rt.unsubscriptions == []
    return first, first.continuation()


async def test_an_event_wait_continues_as_new_and_an_event_at_the_switch_is_carried() -> None:
    rt = new_runtime()
    first, _ = await _first_event_run(rt)
    # Signalled while the host lets the handlers finish: the switching run takes it.
    rt.publish(_answer("e-switch"))
    snapshot = read_continuation(json.loads(json.dumps(first.continuation().model_dump(mode="json"))))
    assert snapshot.kinds["wait_for_event"]["event"]["id"] == "e-switch"

    second = _event_engine(rt, snapshot, continue_at=None)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED
    assert result.steps[-1].output == "e-switch:False"
    assert [s.path for s in rt.subscriptions] == []  # unsubscribed once the wait ended
    assert [s.path for s in rt.unsubscriptions] == ["answer"]


async def test_an_event_published_while_no_run_listens_is_taken_by_the_next_run() -> None:
    rt = new_runtime()
    first, snapshot = await _first_event_run(rt)
    started = first.status().waiting_events[0]
    rt.engine = None  # between the runs: nobody is signalled
    rt.publish(_answer("e-gap"))
    second = _event_engine(
        rt, read_continuation(json.loads(json.dumps(snapshot.model_dump(mode="json")))), continue_at=None
    )
    # Waiting from the first moment, with the same window and deadline.
    [resumed] = second.status().waiting_events
    assert (resumed.since, resumed.deadline) == (started.since, started.deadline)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED
    assert result.steps[-1].output == "e-gap:False"
    # Published while no run was signalled: the next run found it in its new subscription's
    # answer (the same name and window), then unsubscribed once.
    assert [s.path for s in rt.unsubscriptions] == ["answer"]


async def test_a_carried_event_wait_times_out_when_the_first_would_have() -> None:
    rt = new_runtime()
    first, snapshot = await _first_event_run(rt)
    deadline = first.status().waiting_events[0].deadline
    assert deadline is not None
    second = _event_engine(rt, snapshot, continue_at=None)
    result = await rt.run(second.run())
    assert result.steps[-1].output == "None:True"
    assert rt.now() == deadline  # the first run's deadline, not 3 days after the switch


async def test_a_carried_event_wait_whose_deadline_passed_between_the_runs_does_not_take_a_later_event() -> (
    None
):
    """No run's task for four days (workers down): the wait's 3-day deadline passes, then an event
    is published; the next run subscribes again, and its answer holds that event: the wait times
    out, as the uninterrupted run did at the deadline (before, it took the late event: found by a
    review)."""
    rt = new_runtime()
    first, snapshot = await _first_event_run(rt)
    deadline = first.status().waiting_events[0].deadline
    assert deadline is not None
    rt.engine = None
    await rt.run(rt.elapse(4 * 24 * HOUR))
    assert rt.now() > deadline
    rt.publish(_answer("e-late"))
    second = _event_engine(rt, snapshot, continue_at=None)
    result = await rt.run(second.run())
    assert result.steps[-1].output == "None:True"


async def test_an_event_consumed_before_the_switch_is_not_taken_again_by_a_later_wait() -> None:
    steps = _event_steps()
    steps.insert(1, {**steps[1], "id": "first_answer"})  # the same key, lookback 1h: both see "e-1"
    rt = new_runtime()
    asked = {"now": False}
    rt.at(2 * HOUR, lambda: asked.__setitem__("now", True))
    rt.at(HOUR, lambda: rt.publish(_answer("e-1")))

    def engine(snapshot: Continuation | None) -> Engine:
        built = Engine(
            make_definition(steps),
            {"family_id": "fam-1"},
            rt,
            RunInfo("wf-1", f"run-{0 if snapshot is None else snapshot.generation}", rt.now()),
            continue_as_new=lambda: asked["now"],
            resume=snapshot,
        )
        rt.engine = built
        return built

    first = engine(None)
    await rt.run(first.run())
    assert first.continuing  # in the second wait, which started at once after "e-1" was taken
    asked["now"] = False
    second = engine(read_continuation(json.loads(json.dumps(first.continuation().model_dump(mode="json")))))
    rt.at(3 * HOUR, lambda: rt.publish(_answer("e-2")))
    result = await rt.run(second.run())
    outputs = {r.id: r.output for r in result.steps if r.id in ("first_answer", "answer")}
    assert outputs["first_answer"]["event_id"] == "e-1"
    assert outputs["answer"]["event_id"] == "e-2"


async def test_a_snapshot_whose_event_wait_is_not_at_that_position_is_refused() -> None:
    rt = new_runtime()
    _, snapshot = await _first_event_run(rt)
    data = snapshot.model_dump(mode="json")
    data["kinds"]["wait_for_event"]["position"] = 2
    with pytest.raises(ValueError, match="carried event wait 'answer' is not at top-level step 2"):
        _event_engine(rt, read_continuation(data), continue_at=None)


def _branch_loop(iterations: int) -> list[dict[str, Any]]:
    """A loop inside the ``then`` branch of a top-level condition, inside a switch case."""
    return [
        set_vars("init", {"n": 0, "mode": "loop"}),
        {
            "id": "route",
            "type": "condition",
            "if": "vars.mode == 'loop'",
            "then": {
                "steps": [
                    work("charge", value="charged", compensate=[task("refund", "refund")]),
                    {
                        "id": "pick",
                        "type": "switch",
                        "cases": [
                            {
                                "when": "vars.n >= 0",
                                "then": {
                                    "steps": [
                                        # The branch changes what chose it: a resumed run must not choose again.
                                        set_vars("flip", {"mode": "done"}, max_visits=iterations),
                                        work("step", value="{{ vars.n }}", max_visits=iterations),
                                        set_vars("bump", {"n": "{{ vars.n + 1 }}"}, max_visits=iterations),
                                        {
                                            "id": "again",
                                            "type": "condition",
                                            "if": f"vars.n < {iterations}",
                                            "then": {"goto": "flip"},
                                            "max_visits": iterations,
                                        },
                                    ]
                                },
                            }
                        ],
                    },
                    work("tail", value="{{ vars.mode }}"),
                ]
            },
            "else": {"steps": [work("never", value="wrong branch")]},
        },
        {"id": "end", "type": "fail", "message": "stop after {{ vars.n }}"},
    ]


async def test_a_loop_inside_branches_continues_as_new_inside_them_and_ends_as_an_uninterrupted_run() -> None:
    definition = make_definition(_branch_loop(9))
    straight_rt = new_runtime()
    straight_rt.on("refund", lambda call, attempt: "refunded")
    straight = await straight_rt.run(
        Engine(definition, {}, straight_rt, RunInfo("wf-1", "run-0", straight_rt.now())).run()
    )
    assert straight.error == "stop after 9"

    rt = new_runtime()
    rt.on("refund", lambda call, attempt: "refunded")
    chained, runs, engine = await _chain(definition, rt, every=2)
    # 11 actions, a switch every 2 of them: most switches happen inside the two branches.
    assert runs >= 5
    assert (chained.state, chained.error) == (straight.state, straight.error)
    assert [c.activity_id for c in rt.calls] == [c.activity_id for c in straight_rt.calls]
    assert "never" not in [c.step_id for c in rt.calls]
    assert rt.calls[-1].step_id == "refund"  # registered in the first run, run at the end of the last
    # The condition and the switch each completed once, with the branch taken.
    status = engine.status()
    route = [r for r in status.steps if r.id == "route"]
    assert [(r.status, r.output) for r in route] == [(StepStatus.COMPLETED, {"branch": "then"})]
    tail = [r for r in status.steps if r.id == "tail"]
    assert [r.output for r in tail] == ["done"]


async def test_a_snapshot_taken_inside_a_branch_carries_where_and_is_checked() -> None:
    definition = make_definition(_branch_loop(9))
    rt = new_runtime()
    first = _engine(definition, rt, None, every=3)  # charge, step, step: inside the switch case
    await rt.run(first.run())
    assert first.continuing
    data = first.continuation().model_dump(mode="json")
    assert data["position"] == 1
    assert data["kinds"]["branches"] == [
        {"step": "route", "branch": "then", "position": 1},
        {"step": "pick", "branch": "case:0", "position": data["kinds"]["branches"][1]["position"]},
    ]
    for forged, message in (
        ({"step": "route", "branch": "else", "position": 5}, "no step 5 in branch 'else'"),
        ({"step": "route", "branch": "maybe", "position": 0}, "has no branch 'maybe'"),
        ({"step": "init", "branch": "then", "position": 0}, "'init' is not a condition or switch"),
        ({"step": "route", "branch": "then"}, "is malformed"),
    ):
        bad = json.loads(json.dumps(data))
        bad["kinds"]["branches"][0] = forged
        with pytest.raises(ValueError, match=message):
            _engine(definition, rt, read_continuation(bad), every=100)


async def test_an_approval_inside_a_branch_stays_pending_across_the_switch() -> None:
    steps = [
        work("prep", value="ready"),
        {
            "id": "route",
            "type": "condition",
            "if": "steps.prep.output == 'ready'",
            "then": {
                "steps": [
                    approval(
                        "gate",
                        ["alice"],
                        timeout="10h",
                        escalation={
                            "after": "1h",
                            "max_escalations": 5,
                            "add_approvers": ["bob"],
                            "steps": [work("remind")],
                        },
                    ),
                    work("after", value="{{ steps.gate.output.actor }}"),
                ]
            },
        },
    ]
    definition = make_definition(steps)
    rt = new_runtime()
    first = _engine(definition, rt, None, every=3)  # prep + two reminders
    result = await rt.run(first.run())
    assert first.continuing
    assert result.state == RunState.AWAITING_APPROVAL
    pending = first.status().pending_approvals[0]
    first.decide(DecisionKind.APPROVE, Decision(actor="bob", reason="at the switch"))
    snapshot = read_continuation(json.loads(json.dumps(first.continuation().model_dump(mode="json"))))
    assert snapshot.approval is not None
    assert (snapshot.position, snapshot.approval.position) == (1, 0)
    assert snapshot.kinds["branches"] == [{"step": "route", "branch": "then", "position": 0}]
    assert snapshot.approval.view.deadline == pending.deadline

    second = _engine(definition, rt, snapshot, every=100)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED
    assert result.steps[-1].output == "bob"
    assert [c.step_id for c in rt.calls].count("remind") == 2
    assert [c.step_id for c in rt.calls].count("prep") == 1


# ------------------------------------------------------------ a saga longer than one run's history


def _saga(turns: int, on_failure: str = "fail", last: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A loop that books ``turns`` times (each booking registers its ``unbook``), then ``last``
    (by default a shipment that fails with ``on_failure``)."""
    return [
        set_vars("init", {"n": 0}),
        work(
            "book",
            value="{{ vars.n }}",
            max_visits=turns,
            compensate=[task("unbook", "refund")],
        ),
        set_vars("bump", {"n": "{{ vars.n + 1 }}"}, max_visits=turns),
        {
            "id": "again",
            "type": "condition",
            "if": f"vars.n < {turns}",
            "then": {"goto": "book"},
            "max_visits": turns,
        },
        last or work("ship", fail="Carrier", on_failure=on_failure),
    ]


def _saga_runtime() -> FakeRuntime:
    rt = new_runtime()
    rt.on("refund", lambda call, attempt: "unbooked")
    return rt


@pytest.mark.parametrize(
    ("on_failure", "ending"), [("fail", RunState.FAILED), ("compensate", RunState.COMPENSATED)]
)
async def test_a_saga_continues_as_new_between_its_compensations_and_ends_as_an_uninterrupted_run(
    on_failure: str, ending: RunState
) -> None:
    definition = make_definition(_saga(8, on_failure))
    straight_rt = _saga_runtime()
    straight = await straight_rt.run(
        Engine(definition, {}, straight_rt, RunInfo("wf-1", "run-0", straight_rt.now())).run()
    )
    assert straight.state == ending

    rt = _saga_runtime()
    snapshot: Continuation | None = None
    compensating: list[int] = []  # the generations that continued while compensating
    runs = 0
    while True:
        runs += 1
        engine = _engine(definition, rt, snapshot, every=3)
        result = await rt.run(engine.run())
        if not engine.continuing:
            break
        snapshot = read_continuation(json.loads(json.dumps(engine.continuation().model_dump(mode="json"))))
        if COMPENSATING_KIND in snapshot.kinds:
            assert result.state == RunState.COMPENSATING
            assert snapshot.position == len(definition.steps)
            compensating.append(snapshot.generation)

    assert len(compensating) >= 2  # eight compensations, a switch every three actions
    assert (result.state, result.error_type, result.error) == (ending, straight.error_type, straight.error)
    # Every compensation ran once, in the same order, with the same activity ids and inputs.
    assert [(c.activity_id, c.input) for c in rt.calls] == [
        (c.activity_id, c.input) for c in straight_rt.calls
    ]
    assert [(c.activity_id, c.outcome) for c in rt.calls if c.action == "refund"] == [
        (f"compensate/book/unbook{'' if n == 1 else f'#{n}'}", "ok") for n in range(1, 9)
    ]
    assert engine.status().continued == runs - 1
    assert [r.output for r in result.steps if r.id == "unbook"] == ["unbooked"] * 8


@pytest.mark.parametrize("signalled", [True, False], ids=["cancel-signal", "temporal-cancel"])
async def test_a_cancelled_run_runs_its_compensations_in_the_run_the_cancellation_reached(
    signalled: bool,
) -> None:
    # Only that run can close as Canceled: it does not continue as new while it compensates.
    definition = make_definition(_saga(6, last=delay("cool_off", "1h")))
    rt = _saga_runtime()
    asked = False
    engine = Engine(definition, {}, rt, RunInfo("wf-1", "run-0", rt.now()), continue_as_new=lambda: asked)
    main = rt.spawn(engine.run())

    def cancel() -> None:
        nonlocal asked
        asked = True  # the host asks to continue as new from now on
        if signalled:
            engine.cancel_request = CancelRequest(actor="alice", reason="customer called")
        main.cancel()

    rt.at(600, cancel)
    result = await rt.run(main)
    assert not engine.continuing
    assert result.state == RunState.CANCELLED
    assert [c.outcome for c in rt.calls if c.action == "refund"] == ["ok"] * 6


async def test_a_saga_that_cannot_switch_compensates_here_within_the_same_step_budget() -> None:
    # The host declines the switch (the next run's input would be too large): the compensations left
    # run in this run, still counted against the budget they started with, not a fresh one.
    units = [task(f"undo{n}", "refund") for n in range(1, 7)]
    definition = make_definition(
        [{**step, "compensate": units} if step["id"] == "book" else step for step in _saga(4)],
        limits={"max_step_executions": 20},
    )
    straight_rt = _saga_runtime()
    straight = await straight_rt.run(
        Engine(definition, {}, straight_rt, RunInfo("wf-1", "run-0", straight_rt.now())).run()
    )
    # Four bookings of six undo steps each: 24 past the budget of 20, so four are refused.
    assert [c.action for c in straight_rt.calls].count("refund") == 20

    async def declined(rt: FakeRuntime) -> RunResult:
        """The run, asking to switch from its first compensation on, then compensating here."""
        engine = Engine(
            definition,
            {},
            rt,
            RunInfo("wf-1", "run-0", rt.now()),
            continue_as_new=lambda: any(c.action == "refund" for c in rt.calls),
        )
        await rt.run(engine.run())
        assert engine.compensating_switch
        result = await rt.run(engine.compensate_here())
        assert not engine.continuing
        return result

    rt = _saga_runtime()
    result = await declined(rt)
    assert (result.state, result.error_type) == (straight.state, straight.error_type)
    assert [(c.activity_id, c.outcome) for c in rt.calls] == [
        (c.activity_id, c.outcome) for c in straight_rt.calls
    ]

    # A run recorded before the patch (it answers False on replay) keeps its second budget.
    rt = _saga_runtime()
    rt.declined.add(PATCH_COMPENSATE_HERE_BUDGET)
    await declined(rt)
    assert [c.action for c in rt.calls].count("refund") == 24


async def _compensating_snapshot() -> tuple[Definition, Continuation]:
    definition = make_definition(_saga(4))
    rt = _saga_runtime()
    snapshot: Continuation | None = None
    while True:
        engine = _engine(definition, rt, snapshot, every=2)
        await rt.run(engine.run())
        assert engine.continuing
        snapshot = read_continuation(json.loads(json.dumps(engine.continuation().model_dump(mode="json"))))
        if COMPENSATING_KIND in snapshot.kinds:
            return definition, snapshot


async def test_a_snapshot_of_a_run_compensating_is_refused_where_it_cannot_be_and_otherwise_resumes() -> None:
    definition, snapshot = await _compensating_snapshot()
    rt = _saga_runtime()
    rt.declined.add(PATCH_CONTINUE_AS_NEW_COMPENSATING)  # a run of an earlier generation
    with pytest.raises(ValueError, match="which a run of this generation does not do"):
        _engine(definition, rt, snapshot, every=100)
    forged = snapshot.model_copy(update={"position": 2})
    with pytest.raises(ValueError, match="goes on after its last step"):
        _engine(definition, _saga_runtime(), forged, every=100)
    forged = snapshot.model_copy(
        update={"kinds": {**snapshot.kinds, COMPENSATING_KIND: {"ending": "cancelled"}}}
    )
    with pytest.raises(ValueError, match="ending"):
        _engine(definition, _saga_runtime(), forged, every=100)

    rt = _saga_runtime()
    result = await rt.run(_engine(definition, rt, snapshot, every=100).run())
    assert (result.state, result.error_type) == (RunState.FAILED, "Carrier")
    assert [c.action for c in rt.calls] == ["refund"] * len(snapshot.compensations)


async def test_a_cancel_on_event_published_while_the_run_switched_cancels_the_next_run() -> None:
    # The next run subscribes again from the chain's start: an event published after the previous
    # run's last task (or signalled to this run before it subscribed, when nothing matches it yet)
    # would otherwise reach no run. Before, it asked from its own start and ran on.
    steps = [
        set_vars("init", {"n": 0}),
        work("step", value="{{ vars.n }}", max_visits=50),
        set_vars("bump", {"n": "{{ vars.n + 1 }}"}, max_visits=50),
        {"id": "again", "type": "condition", "if": "vars.n < 50", "then": {"goto": "step"}, "max_visits": 50},
    ]
    definition = make_definition(steps, cancel_on=[{"event": "order.cancelled", "key": "o-1"}])
    rt = new_runtime()
    first = _engine(definition, rt, None, every=3)
    await rt.run(first.run())
    assert first.continuing
    snapshot = read_continuation(json.loads(json.dumps(first.continuation().model_dump(mode="json"))))
    withdrawn = Event(id="w1", type="order.cancelled", key="o-1", tenant="default")
    rt.published.append(withdrawn.model_copy(update={"published_at": rt.now()}))  # between the runs
    later = rt.now() + timedelta(seconds=2)  # the next run's start
    second = Engine(
        definition,
        {},
        rt,
        RunInfo(workflow_id="wf-1", run_id="run-1", started_at=later, created_at=later),
        continue_as_new=lambda: False,
        resume=snapshot,
    )
    assert second.deliver_event(rt.published[-1]) is None  # its first task: nothing subscribed yet
    result = await rt.run(second.run())
    assert result.state == RunState.CANCELLED
    assert second.status().cancelled_by is not None
    assert second.status().cancelled_by.actor == "event:order.cancelled:w1"
    assert [s.since for s in rt.subscriptions if s.path == "cancel_on[0]"][-1] == snapshot.started_at
