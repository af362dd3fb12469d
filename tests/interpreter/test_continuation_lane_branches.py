"""Continue-as-new while a wait sits inside a ``condition``/``switch`` branch among a ``parallel``
branch's (a ``foreach`` item's) own steps (patch ``continue-as-new-lane-branches``), driven by the
fake runtime: the wait is carried with the branches it is in, the next run goes back into the same
branches without evaluating their conditions again, and the chain ends as an uninterrupted run
would, every action at the same virtual time."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from interpreter.continuation import read_continuation
from interpreter.engine import PATCH_CONTINUE_AS_NEW_LANE_BRANCHES, Engine
from interpreter.events import Event
from interpreter.model import Definition
from interpreter.state import (
    DeadLetterAction,
    DeadLetterDecision,
    Decision,
    DecisionKind,
    RunResult,
    RunState,
    StepStatus,
)
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_continuation_lane_events import _chain, _straight
from tests.interpreter.test_continuation_lane_parks import charge_parking
from tests.interpreter.test_continuation_parallel import (
    _cancelled_on_resume,
    _engine,
    _gate_and_loop,
    _looping,
    _ticking_items,
    _until_carried,
)
from tests.interpreter.test_dead_letters import charge_needs_card
from tests.interpreter.test_engine import approval, delay, make_definition, new_runtime, work


def _check(*gate: dict[str, Any], if_: str = "vars.a < 5") -> dict[str, Any]:
    """'check': a condition whose ``then`` runs ``gate`` and then 'then_done' (1 s, output 'then');
    its ``else`` runs 'skipped' (output 'else'). Its ``if`` reads the loop's counter: true when the
    gate branch reaches it (the loop has turned at most twice), false later."""
    return {
        "id": "check",
        "type": "condition",
        "if": if_,
        "then": {"steps": [*gate, work("then_done", 1, value="then")]},
        "else": {"steps": [work("skipped", value="else")]},
    }


THEN = {"branch": "then"}
"""The gate branch's output ('check''s, the branch's last step) when 'check' took 'then'."""


async def _uninterrupted(definition: Definition, rt: FakeRuntime) -> tuple[RunResult, Engine]:
    """The run without any switch, on ``rt``: its result and engine."""
    engine = _straight(definition, rt)
    return await rt.run(engine.run()), engine


def _in_gate(gate: list[dict[str, Any]], after: str) -> list[dict[str, Any]]:
    """:func:`_gate_and_loop` whose gate branch runs ``gate`` (instead of 'ask' and a gate)."""
    steps = _gate_and_loop(after=after)
    steps[1]["branches"][1]["steps"] = gate
    return steps


def _calls(rt: FakeRuntime) -> list[tuple[str, float]]:
    return sorted((c.activity_id, c.elapsed) for c in rt.calls)


def _records(engine: Engine, step_id: str) -> list[tuple[StepStatus, Any]]:
    return [(r.status, r.output) for r in engine.status().steps if r.id == step_id]


def _after(engine: Engine) -> Any:
    return next(r.output for r in engine.status().steps if r.id == "after")


async def test_an_approval_inside_a_condition_in_a_branch_is_carried_with_the_branch_it_is_in() -> None:
    """The approval in the 'then' branch of a condition of one parallel branch waits while the
    other branch loops: the runs switch inside the parallel step carrying the approval and the
    condition branch it is in; the next runs go back into 'then' without evaluating the condition
    again (by then false); the decision sent in a later run completes it; the chain ends as the
    uninterrupted run, the condition recorded once."""
    definition = make_definition(_gate_and_loop(_check(approval("ok", ["alice"], timeout="1h"))))

    def decide_at(rt: FakeRuntime) -> None:
        rt.at(7, lambda: rt.engine.decide(DecisionKind.APPROVE, Decision(actor="alice", reason="fine")))

    straight_rt = new_runtime()
    decide_at(straight_rt)
    straight, straight_engine = await _uninterrupted(definition, straight_rt)
    assert (straight.state, _after(straight_engine)) == (RunState.COMPLETED, THEN)

    rt = new_runtime()
    decide_at(rt)
    result, engine, snapshots = await _chain(definition, rt)
    entries = [lane for lane in _lanes(snapshots) if "person" in lane]
    assert entries, snapshots  # switches happened while the approval waited
    assert {json.dumps((e["position"], e["within"], e["person"]["position"])) for e in entries} == {
        json.dumps((1, [{"step": "check", "branch": "then", "position": 0}], 0))
    }
    assert len({e["person"]["view"]["deadline"] for e in entries}) == 1
    assert max(s["generation"] for s in snapshots if any("person" in lane for lane in _lanes([s]))) >= 2
    assert (result.state, _after(engine)) == (RunState.COMPLETED, THEN)
    assert _calls(rt) == _calls(straight_rt)
    assert not any(c.step_id == "skipped" for c in rt.calls)
    assert _records(engine, "check") == [(StepStatus.COMPLETED, {"branch": "then"})]
    [(status, output)] = _records(engine, "ok")
    assert (status, output["decision"], output["actor"]) == (StepStatus.COMPLETED, "approved", "alice")
    assert [d.actor for d in engine.status().decisions if d.accepted] == ["alice"]


def _lanes(snapshots: list[dict[str, Any]], key: str = "branches") -> list[dict[str, Any]]:
    """Every carried branch (item, ``key``: ``lanes``) entry under way in the snapshots."""
    return [
        lane
        for s in snapshots
        if "parallel" in s["kinds"]
        for lane in s["kinds"]["parallel"][key]
        if lane and not lane.get("done")
    ]


def _switch_in_items() -> Definition:
    """Items ticking beside a switch whose case 1 (item 0) sleeps 30 s."""
    last = {
        "id": "route",
        "type": "switch",
        "cases": [
            {"when": "item == 7", "then": {"steps": [work("never")]}},
            {"when": "item == 0", "then": {"steps": [delay("nap", "30s"), work("woke", 1, value="woke")]}},
        ],
        "default": {"steps": [work("plain", 1, value="plain")]},
    }
    return make_definition([_ticking_items(last, output="{{ steps.route.output }}"), work("after")])


async def test_a_delay_inside_a_switch_in_a_foreach_item_is_carried_and_fires_when_it_would_have() -> None:
    """Item 0 reaches a switch whose first case sleeps 30 s, while items 1 and 2 still tick: the
    item is carried asleep in the case (path ``each[0].nap``), the timer fires at the time it would
    have; the others take the default."""
    definition = _switch_in_items()
    straight_rt = new_runtime()
    straight, _ = await _uninterrupted(definition, straight_rt)
    assert straight.state == RunState.COMPLETED

    rt = new_runtime()
    result, engine, snapshots = await _chain(definition, rt)
    asleep = [lane for lane in _lanes(snapshots, "lanes") if "delay" in lane]
    assert asleep, snapshots
    assert {json.dumps((e["position"], e["within"], e["delay"]["path"])) for e in asleep} == {
        json.dumps((3, [{"step": "route", "branch": "case:1", "position": 0}], "each[0].nap"))
    }
    assert result.state == RunState.COMPLETED
    assert result.output == straight.output
    assert _calls(rt) == _calls(straight_rt)
    woke = next(c for c in rt.calls if c.step_id == "woke")
    assert woke.elapsed == 1 + 2 + 30  # 'seed', one 'tick', the nap: not restarted by a switch
    assert [r.status for r in engine.status().steps if r.path == "each[0].route"] == [StepStatus.COMPLETED]


async def test_an_event_wait_two_conditions_deep_in_a_branch_takes_an_event_published_in_a_later_run() -> (
    None
):
    """A ``wait_for_event`` inside a condition inside a condition of a branch: carried with both
    branches (outermost first), it keeps its subscription and takes the event published later."""
    listen = {
        "id": "answer",
        "type": "wait_for_event",
        "event": "family.answered",
        "key": "fam-1",
        "timeout": "1h",
        "on_timeout": "continue",
    }
    inner = {
        "id": "inner",
        "type": "condition",
        "if": "true",
        "then": {"steps": [work("pre", 1), listen]},
    }
    definition = make_definition(_gate_and_loop(_check(inner)))

    def publish_at(rt: FakeRuntime) -> None:
        event = Event(id="e-1", type="family.answered", key="fam-1", tenant="default", data={})
        # (At 6 s no switch is asked while 'then_done' runs: one asked then would hold the loop at
        # its boundary until 'then_done' ended, as for any step a branch runs.)
        rt.at(6, lambda: rt.publish(event))

    straight_rt = new_runtime()
    publish_at(straight_rt)
    _, straight_engine = await _uninterrupted(definition, straight_rt)

    rt = new_runtime()
    publish_at(rt)
    result, engine, snapshots = await _chain(definition, rt)
    waits = [lane for lane in _lanes(snapshots) if "event" in lane]
    assert waits, snapshots
    assert {json.dumps((w["within"], w["event"]["position"], w["event"]["view"]["path"])) for w in waits} == {
        json.dumps(
            (
                [
                    {"step": "check", "branch": "then", "position": 0},
                    {"step": "inner", "branch": "then", "position": 1},
                ],
                1,
                "answer",
            )
        )
    }
    assert (
        (result.state, _after(engine))
        == (RunState.COMPLETED, _after(straight_engine))
        == (RunState.COMPLETED, THEN)
    )
    assert _calls(rt) == _calls(straight_rt)
    [(status, output)] = _records(engine, "answer")
    assert (status, output["event_id"]) == (StepStatus.COMPLETED, "e-1")
    assert [s.path for s in rt.unsubscriptions] == ["answer"]


async def test_a_park_inside_a_condition_in_a_branch_is_carried_and_redriven_in_a_later_run() -> None:
    definition = make_definition(_gate_and_loop(_check(charge_parking())))
    redrive = DeadLetterDecision(
        action=DeadLetterAction.REDRIVE, actor="ops", input={"amount": 5, "card": "visa"}
    )

    def runtime() -> FakeRuntime:
        rt = new_runtime()
        rt.on("charge", charge_needs_card)
        rt.at(7, lambda: rt.engine.resolve(redrive))
        return rt

    straight_rt = runtime()
    await straight_rt.run(_straight(definition, straight_rt).run())
    rt = runtime()
    result, engine, snapshots = await _chain(definition, rt)
    parks = [lane for lane in _lanes(snapshots) if "park" in lane]
    assert parks, snapshots
    assert {json.dumps((p["within"], p["park"]["position"], p["park"]["view"]["path"])) for p in parks} == {
        json.dumps(([{"step": "check", "branch": "then", "position": 0}], 0, "charge"))
    }
    assert (result.state, _after(engine)) == (RunState.COMPLETED, THEN)
    assert _calls(rt) == _calls(straight_rt)
    assert [(r.action, r.actor) for r in rt.resolutions] == [(DeadLetterAction.REDRIVE, "ops")]
    assert engine.status().parked == []


async def test_a_goto_out_of_the_carried_branch_goes_on_in_the_branchs_own_steps() -> None:
    """After the carried approval, a step of the condition branch jumps to one of the parallel
    branch's own steps: the resumed run follows it there as the uninterrupted run did."""
    gate = [
        work("ask", 1, value="asked"),
        _check(
            approval("ok", ["alice"], timeout="20s", on_timeout="approve"),
            {"id": "leave", "type": "condition", "if": "true", "then": {"goto": "landed"}},
        ),
        work("not_run", value="wrong"),
        work("landed", 1, value="landed"),
    ]
    definition = make_definition(_in_gate(gate, after="{{ steps.par.output.gate }}"))
    straight_rt = new_runtime()
    _, straight_engine = await _uninterrupted(definition, straight_rt)
    assert _after(straight_engine) == "landed"

    rt = new_runtime()
    result, engine, snapshots = await _chain(definition, rt)
    assert [lane for lane in _lanes(snapshots) if "person" in lane and "within" in lane]
    assert (result.state, _after(engine)) == (RunState.COMPLETED, "landed")
    assert _calls(rt) == _calls(straight_rt)
    assert not any(c.step_id in ("not_run", "then_done") for c in rt.calls)


async def test_a_loop_inside_a_condition_in_a_branch_stops_between_its_steps() -> None:
    """Both parallel branches loop, one of them inside the 'then' of a condition: the runs switch
    while it stands between two steps of that branch (carried with the branch it is in, no wait),
    and the next run goes on there: the chain ends as the uninterrupted run."""
    inner_loop = {
        "id": "check",
        "type": "condition",
        "if": "vars.b == 0",
        "then": {"steps": _looping("g", "b", 6, 1)},
        "else": {"steps": [work("skipped", value="else")]},
    }
    steps = _in_gate(
        [work("ask", 1, value="asked"), inner_loop], after="{{ steps.par.output.gate }}:{{ vars.b }}"
    )
    steps[0]["vars"]["b"] = 0
    definition = make_definition(steps)
    straight_rt = new_runtime()
    _, straight_engine = await _uninterrupted(definition, straight_rt)
    assert _after(straight_engine) == '{"branch": "then"}:6'

    rt = new_runtime()
    result, engine, snapshots = await _chain(definition, rt)
    standing = [lane for lane in _lanes(snapshots) if "within" in lane]
    assert standing, snapshots
    assert all(not set(lane) & {"delay", "person", "event", "park"} for lane in standing)
    assert {lane["within"][0]["step"] for lane in standing} == {"check"}
    assert (result.state, _after(engine)) == (RunState.COMPLETED, '{"branch": "then"}:6')
    assert _calls(rt) == _calls(straight_rt)
    assert not any(c.step_id == "skipped" for c in rt.calls)
    assert _records(engine, "check") == [(StepStatus.COMPLETED, {"branch": "then"})]


async def test_a_run_cancelled_before_it_went_back_into_the_carried_branch_closes_the_condition() -> None:
    """The next run is cancelled before it went back into the branches: the approval and the
    condition it was carried in end cancelled, none left running (found by an attacker's probe)."""
    definition = _nested_definition()
    rt = new_runtime()
    _, data = await _until_carried(definition, rt, "person")
    second = await _cancelled_on_resume(definition, rt, data)
    steps = {r.path: r.status for r in second.status().steps if r.path in ("par", "check", "ok")}
    assert steps == {"par": StepStatus.CANCELLED, "check": StepStatus.CANCELLED, "ok": StepStatus.CANCELLED}
    assert second.status().pending_approvals == []


async def test_a_run_cancelled_before_it_went_back_into_an_items_carried_switch_closes_it() -> None:
    last = {
        "id": "route",
        "type": "switch",
        "cases": [{"when": "item == 0", "then": {"steps": [delay("nap", "30s")]}}],
        "default": {"steps": [work("plain", 1)]},
    }
    definition = make_definition([_ticking_items(last), work("after")])
    rt = new_runtime()
    _, data = await _until_carried(definition, rt, "delay", key="lanes")
    second = await _cancelled_on_resume(definition, rt, data)
    open_ones = [
        r.path for r in second.status().steps if r.status in (StepStatus.RUNNING, StepStatus.WAITING)
    ]
    assert open_ones == []
    assert [r.status for r in second.status().steps if r.path == "each[0].route"] == [StepStatus.CANCELLED]


def _generation5() -> FakeRuntime:
    """A runtime for a run started at generation 5: the patch does not apply."""
    rt = new_runtime()
    rt.declined.add(PATCH_CONTINUE_AS_NEW_LANE_BRANCHES)
    return rt


async def test_a_run_of_an_earlier_generation_keeps_its_branches_in_one_run_while_the_nested_wait_waits() -> (
    None
):
    """Without the patch (a run started at generation 5), no switch carries the nested approval:
    the branches go on in one run while it waits, as before."""
    definition = make_definition(
        _gate_and_loop(_check(approval("ok", ["alice"], timeout="30s", on_timeout="approve")))
    )
    rt = _generation5()
    result, _, snapshots = await _chain(definition, rt)
    assert result.state == RunState.COMPLETED
    assert not [lane for lane in _lanes(snapshots) if "person" in lane or "within" in lane]


def _nested_definition() -> Definition:
    return make_definition(_gate_and_loop(_check(approval("ok", ["alice"], timeout="1h"))))


async def _nested_snapshot() -> dict[str, Any]:
    """A snapshot carrying the approval inside 'check''s 'then' (the gate branch's step 1)."""
    _, data = await _until_carried(_nested_definition(), new_runtime(), "person")
    return data


def _gate_entry(data: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = data["kinds"]["parallel"]["branches"][1]
    return entry


@pytest.mark.parametrize(
    ("forge", "problem"),
    [
        (lambda e: e.update(within=[{"step": "check", "branch": "else", "position": 0}]), "is not step 0"),
        (
            lambda e: e.update(within=[{"step": "elsewhere", "branch": "then", "position": 0}]),
            "is not a condition",
        ),
        (lambda e: e.update(within=[{"step": "check", "branch": "case:0", "position": 0}]), "has no branch"),
        (lambda e: e.update(within=[{"step": "check", "branch": "then", "position": 5}]), "no step 5"),
        (lambda e: e.update(within=[{"step": "check", "branch": "then"}]), "malformed"),
        (lambda e: e.update(within=[]), "malformed"),
        (lambda e: e.update(within=[{"step": "check", "branch": "then", "position": True}]), "no step True"),
        (lambda e: e.update(position=0), "is not a condition"),
    ],
)
async def test_a_forged_carried_branch_is_refused(forge: Any, problem: str) -> None:
    """A snapshot whose branch claims to wait inside another branch, step or position than its
    wait's, or to stand inside a condition without a wait, is refused in words."""
    data = copy.deepcopy(await _nested_snapshot())
    forge(_gate_entry(data))
    with pytest.raises(ValueError, match=problem):
        _engine(_nested_definition(), new_runtime(), read_continuation(data), every=100)


@pytest.mark.parametrize("field", ["since", "deadline"])
async def test_a_carried_approvals_time_without_a_utc_offset_is_refused_in_words(field: str) -> None:
    """Forged: the approval a branch carries waits since (or until) a time without an offset.
    Before, the run raised a TypeError comparing it with the clock (on a worker, a workflow task
    failing for ever); now the snapshot is refused as any other forged entry is."""
    data = copy.deepcopy(await _nested_snapshot())
    view = _gate_entry(data)["person"]["view"]
    view[field] = view[field].replace("Z", "").replace("+00:00", "")
    with pytest.raises(ValueError, match=f"CarriedApproval.view.{field} .* has no UTC offset"):
        _engine(_nested_definition(), new_runtime(), read_continuation(data), every=100)


@pytest.mark.parametrize("case", ["case:01", "case:+1", "case:¹", "case: 1", "case:1 "])
async def test_a_carried_switch_case_not_written_as_the_run_writes_it_is_refused(case: str) -> None:
    """``case:1`` is the only way a run writes the second case: a forged spelling of it is refused
    (before, ``case:01`` was taken as ``case:1``)."""
    _, data = await _until_carried(_switch_in_items(), new_runtime(), "delay", "lanes")
    [entry] = [lane for lane in data["kinds"]["parallel"]["lanes"] if lane and "delay" in lane]
    assert entry["within"][0]["branch"] == "case:1"
    entry["within"][0]["branch"] = case
    with pytest.raises(ValueError, match="has no branch"):
        _engine(_switch_in_items(), new_runtime(), read_continuation(data), every=100)


async def test_a_carried_branch_is_refused_by_a_run_of_an_earlier_generation() -> None:
    data = await _nested_snapshot()
    definition = _nested_definition()
    with pytest.raises(ValueError, match="inside a condition or switch"):
        _engine(definition, _generation5(), read_continuation(data), every=100)
