"""Continue-as-new in the engine, driven by the fake runtime: a run stopped at a safe point and
resumed from its snapshot (through JSON, as Temporal carries it) ends exactly as an uninterrupted
run: same variables, outputs, visit counts, activity ids, compensations and pending approvals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interpreter.continuation import (
    SNAPSHOT_VERSION,
    Continuation,
    ContinuationVersionError,
    read_continuation,
)
from interpreter.engine import Engine, RunInfo
from interpreter.model import Definition
from interpreter.state import Decision, DecisionKind, RunResult, RunState
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import approval, make_definition, new_runtime, set_vars, task, work


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


async def test_a_decision_in_the_new_runs_first_task_finds_the_approval() -> None:
    steps = [
        work("prep"),
        approval(
            "gate", ["alice"], escalation={"after": "1h", "max_escalations": 3, "steps": [work("remind")]}
        ),
    ]
    definition = make_definition(steps)
    rt = new_runtime()
    first = _engine(definition, rt, None, every=2)
    await rt.run(first.run())
    assert first.continuing
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
