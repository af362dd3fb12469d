"""Continue-as-new while a wait sits inside a ``parallel`` or ``foreach`` step among a ``parallel``
branch's (a ``foreach`` item's) own steps (patch ``continue-as-new-lane-nested``), driven by the
fake runtime: the nested step's branches stop and wait as the outer ones do, the branch running it
is carried with the nested step's entry, the next run goes back into it without evaluating it
again, and the chain ends as an uninterrupted run would, every action at the same virtual time."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from interpreter.continuation import read_continuation
from interpreter.engine import PATCH_CONTINUE_AS_NEW_LANE_NESTED
from interpreter.model import Definition
from interpreter.state import Decision, DecisionKind, RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_continuation_lane_branches import _calls, _records, _uninterrupted
from tests.interpreter.test_continuation_lane_events import _chain
from tests.interpreter.test_continuation_parallel import (
    _cancelled_on_resume,
    _engine,
    _gate_and_loop,
    _looping,
    _ticking_items,
)
from tests.interpreter.test_engine import approval, delay, make_definition, new_runtime, work


def _inner(*branches: list[dict[str, Any]], join: str = "all") -> dict[str, Any]:
    """'inner': a parallel step whose branches are ``branches`` ('b0', 'b1', ...)."""
    return {
        "id": "inner",
        "type": "parallel",
        "join": join,
        "branches": [{"id": f"b{i}", "steps": steps} for i, steps in enumerate(branches)],
    }


def _nested(snapshots: list[dict[str, Any]], key: str = "branches") -> list[dict[str, Any]]:
    """The nested entries the snapshots carry in the outer step's branches (items: ``lanes``)."""
    return [
        lane["nested"]
        for s in snapshots
        if "parallel" in s["kinds"]
        for lane in s["kinds"]["parallel"][key]
        if lane and "nested" in lane
    ]


def _inner_lanes(nested: list[dict[str, Any]], key: str = "branches") -> list[dict[str, Any]]:
    return [lane for entry in nested for lane in entry[key] if lane and not lane.get("done")]


def _after(engine: Any) -> Any:
    return next(r.output for r in engine.status().steps if r.id == "after")


def _approval_beside_a_nap() -> Definition:
    """A loop in one branch; in the other 'ask', then 'inner': an approval in one of its branches,
    a 1 s step and an 8 s nap in the other (waking once the loop is done)."""
    gate = _inner(
        [approval("ok", ["alice"], timeout="1h")],
        [work("side", 1, value="side"), delay("nap", "8s"), work("woke", 1, value="woke")],
    )
    return make_definition(_gate_and_loop(gate, after="{{ steps.par.output.gate | tojson }}"))


def _decide_at(rt: FakeRuntime, at: float) -> None:
    rt.at(at, lambda: rt.engine.decide(DecisionKind.APPROVE, Decision(actor="alice", reason="fine")))


async def test_an_approval_in_a_parallel_step_inside_a_branch_is_carried_with_that_step() -> None:
    """The approval in a branch of 'inner' (itself a step of the outer gate branch) waits while the
    other outer branch loops: the runs switch carrying the gate branch inside 'inner' with its
    branches' places (the approval pending, the nap's timer); the decision sent in a later run
    completes it; the chain ends as the uninterrupted run, every action at the same virtual time,
    'inner' recorded once."""
    definition = _approval_beside_a_nap()
    straight_rt = new_runtime()
    _decide_at(straight_rt, 7)
    straight, straight_engine = await _uninterrupted(definition, straight_rt)
    assert straight.state == RunState.COMPLETED

    rt = new_runtime()
    _decide_at(rt, 7)
    result, engine, snapshots = await _chain(definition, rt)
    nested = _nested(snapshots)
    assert nested, snapshots
    assert {n["step"] for n in nested} == {"inner"}
    lanes = _inner_lanes(nested)
    assert any("person" in lane for lane in lanes), nested
    assert any("delay" in lane for lane in lanes), nested  # the nap carried asleep at least once
    assert len({lane["person"]["view"]["deadline"] for lane in lanes if "person" in lane}) == 1
    assert max(s["generation"] for s in snapshots if _nested([s])) >= 2
    assert result.state == RunState.COMPLETED
    assert _after(engine) == _after(straight_engine)
    assert _calls(rt) == _calls(straight_rt)
    assert [status for status, _ in _records(engine, "inner")] == [StepStatus.COMPLETED]
    [(status, output)] = _records(engine, "ok")
    assert (status, output["decision"], output["actor"]) == (StepStatus.COMPLETED, "approved", "alice")
    assert [d.actor for d in engine.status().decisions if d.accepted] == ["alice"]


async def test_a_loop_inside_a_nested_parallel_step_stops_between_its_steps() -> None:
    """Both an outer branch and a branch of the nested step loop: the nested branch stops at its
    own boundaries (carried at its position in the nested step), and the chain ends as the
    uninterrupted run."""
    gate = _inner(_looping("m", "b", 6, 1), [work("once", 1, value="once")])
    definition = make_definition(
        [{"id": "zero", "type": "set", "vars": {"b": 0}}, *_gate_and_loop(gate, after="{{ vars.b }}")]
    )
    straight_rt = new_runtime()
    straight, straight_engine = await _uninterrupted(definition, straight_rt)
    assert straight.state == RunState.COMPLETED

    rt = new_runtime()
    result, engine, snapshots = await _chain(definition, rt)
    standing = [lane for lane in _inner_lanes(_nested(snapshots)) if "position" in lane]
    assert standing, snapshots
    assert all(not set(lane) & {"delay", "person", "event", "park"} for lane in standing)
    assert result.state == RunState.COMPLETED
    assert _after(engine) == _after(straight_engine) == 6
    assert _calls(rt) == _calls(straight_rt)
    assert [status for status, _ in _records(engine, "inner")] == [StepStatus.COMPLETED]


async def test_a_foreach_inside_a_branch_sleeps_across_runs_and_wakes_when_it_would_have() -> None:
    """A foreach nested in the gate branch, its items asleep in their delays while the other branch
    loops: carried in the gate branch's entry with its list as evaluated; each item's timer fires
    at the time it would have."""
    each = {
        "id": "naps",
        "type": "foreach",
        "items": "[4, 9] | list",
        "concurrency": 2,
        "steps": [delay("nap", "{{ item }}s"), work("up", 1, value="{{ item }}")],
    }
    definition = make_definition(_gate_and_loop(each, after="{{ steps.par.output.gate | tojson }}"))
    straight_rt = new_runtime()
    straight, straight_engine = await _uninterrupted(definition, straight_rt)
    assert straight.state == RunState.COMPLETED

    rt = new_runtime()
    result, engine, snapshots = await _chain(definition, rt)
    nested = _nested(snapshots)
    assert {n["step"] for n in nested} == {"naps"}, snapshots
    asleep = [lane["delay"]["path"] for lane in _inner_lanes(nested, "lanes") if "delay" in lane]
    assert set(asleep) == {"naps[0].nap", "naps[1].nap"}, nested
    assert all(n["items"] == [4, 9] for n in nested)
    assert result.state == RunState.COMPLETED
    assert _after(engine) == _after(straight_engine) == "[4, 9]"
    assert _calls(rt) == _calls(straight_rt)
    ups = sorted(c.elapsed for c in rt.calls if c.step_id == "up")
    assert ups == sorted(c.elapsed for c in straight_rt.calls if c.step_id == "up")


async def test_a_parallel_step_inside_foreach_items_carries_each_items_nested_branches() -> None:
    """Items of a foreach each reach a parallel step whose one branch sleeps 20 s while the other
    items still tick: each item is carried inside its own parallel step (its branches' paths under
    the item's index), and wakes when it would have."""
    pair = _inner([delay("nap", "20s"), work("woke", 1, value="woke")], [work("w", 1, value="w")])
    definition = make_definition([_ticking_items(pair), work("after", value="{{ steps.each.output }}")])
    straight_rt = new_runtime()
    straight, straight_engine = await _uninterrupted(definition, straight_rt)
    assert straight.state == RunState.COMPLETED

    rt = new_runtime()
    result, engine, snapshots = await _chain(definition, rt)
    nested = _nested(snapshots, "lanes")
    asleep = {lane["delay"]["path"] for lane in _inner_lanes(nested) if "delay" in lane}
    assert asleep, nested
    assert asleep <= {"each[0].nap", "each[1].nap", "each[2].nap"}, nested
    assert result.state == RunState.COMPLETED
    assert _after(engine) == _after(straight_engine)
    assert _calls(rt) == _calls(straight_rt)
    for i in range(3):  # each item's nested step recorded once
        assert [r.status for r in engine.status().steps if r.path == f"each[{i}].inner"] == [
            StepStatus.COMPLETED
        ]


async def test_a_run_of_an_earlier_generation_keeps_its_branches_in_one_run_while_the_nested_wait_waits() -> (
    None
):
    definition = _approval_beside_a_nap()
    rt = new_runtime()
    rt.declined.add(PATCH_CONTINUE_AS_NEW_LANE_NESTED)
    _decide_at(rt, 7)
    result, engine, snapshots = await _chain(definition, rt)
    assert not _nested(snapshots)
    straight_rt = new_runtime()
    _decide_at(straight_rt, 7)
    _, straight_engine = await _uninterrupted(definition, straight_rt)
    assert result.state == RunState.COMPLETED
    assert _after(engine) == _after(straight_engine)
    assert _calls(rt) == _calls(straight_rt)


async def _nested_snapshot() -> dict[str, Any]:
    """A snapshot carrying the gate branch inside 'inner' with the approval pending in it."""
    rt = new_runtime()
    definition = _approval_beside_a_nap()
    snapshot = None
    for _ in range(20):
        engine = _engine(definition, rt, snapshot, every=2)
        await rt.run(engine.run())
        assert engine.continuing
        data: dict[str, Any] = json.loads(json.dumps(engine.continuation().model_dump(mode="json")))
        if any("person" in lane for lane in _inner_lanes(_nested([data]))):
            return data
        snapshot = read_continuation(data)
    raise AssertionError("no run continued as new while the nested approval waited")


def _gate_entry(data: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = data["kinds"]["parallel"]["branches"][1]
    return entry


@pytest.mark.parametrize(
    ("forge", "problem"),
    [
        (lambda e: e.update(position=0), "is not a parallel or foreach step at 0"),
        (lambda e: e["nested"].update(step="elsewhere"), "is not at step 1"),
        (lambda e: e.update(person=e["nested"]["branches"][0]["person"]), "is not step 1 of it"),
        (lambda e: e.update(nested=[]), "is not a parallel or foreach step"),
        (lambda e: e["nested"]["branches"].pop(), "are not its branches"),
        (
            lambda e: e["nested"]["branches"][0]["person"]["view"].update(path="ok2"),
            "its path is not the step's",
        ),
    ],
)
async def test_a_forged_nested_entry_is_refused(forge: Any, problem: str) -> None:
    data = copy.deepcopy(await _nested_snapshot())
    forge(_gate_entry(data))
    with pytest.raises(ValueError, match=problem):
        _engine(_approval_beside_a_nap(), new_runtime(), read_continuation(data), every=100)


async def test_a_nested_entry_is_refused_by_a_run_of_an_earlier_generation() -> None:
    data = await _nested_snapshot()
    rt = new_runtime()
    rt.declined.add(PATCH_CONTINUE_AS_NEW_LANE_NESTED)
    with pytest.raises(ValueError, match="a run of this generation does not do"):
        _engine(_approval_beside_a_nap(), rt, read_continuation(data), every=100)


async def test_a_run_cancelled_before_it_went_back_into_the_nested_step_closes_it() -> None:
    """The next run is cancelled before it went back into the branches: the nested step and the
    approval carried in it end cancelled, none left running or pending."""
    definition = _approval_beside_a_nap()
    data = await _nested_snapshot()
    second = await _cancelled_on_resume(definition, new_runtime(), data)
    open_ones = [
        r.path for r in second.status().steps if r.status in (StepStatus.RUNNING, StepStatus.WAITING)
    ]
    assert open_ones == []
    steps = {r.path: r.status for r in second.status().steps if r.path in ("par", "inner", "ok")}
    assert steps == {"par": StepStatus.CANCELLED, "inner": StepStatus.CANCELLED, "ok": StepStatus.CANCELLED}
    assert second.status().pending_approvals == []


def _race_in_gate(join: str) -> Definition:
    """A loop in the outer 'loop' branch; in 'gate', 'inner' (``join``): a 3-turn loop against a
    3.5 s step (the loop wins)."""
    gate = _inner(
        [{"id": "mz", "type": "set", "vars": {"m": 0}}, *_looping("m", "m", 3, 1)],
        [work("slow", 3.5, value="slow")],
        join=join,
    )
    return make_definition(_gate_and_loop(gate, after="{{ steps.par.output.gate | tojson }}"))


@pytest.mark.parametrize("join", ["any", "first"])
async def test_a_nested_any_step_keeps_its_winner_while_a_stop_another_branch_began_is_under_way(
    join: str,
) -> None:
    """The outer loop begins a stop at each boundary; the nested step's loop must not stand while
    its rival runs (the first to finish wins): before, it stood, and the 3.5 s step won (found by a
    review)."""
    definition = _race_in_gate(join)
    straight_rt = new_runtime()
    straight, straight_engine = await _uninterrupted(definition, straight_rt)
    rt = new_runtime()
    result, engine, snapshots = await _chain(definition, rt, every=1)
    assert snapshots
    winner = {"winner": "b0", "output": {"m_total": 3}}
    assert _records(engine, "inner") == _records(straight_engine, "inner") == [(StepStatus.COMPLETED, winner)]
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)
    assert result.state == straight.state == RunState.COMPLETED


async def test_the_carry_budget_counts_the_nested_branches_last_outputs() -> None:
    """Three nested branches each hold a 95 KB output while they sleep: together over the 256 KiB a
    carried entry may hold, so the run does not switch while they hold them (as with the same
    branches at the top); before, the nested ones' outputs were not counted (found by a review)."""
    big = "{{ 'x' * 95000 }}"
    inner = _inner(
        *[
            [work(f"big{i}", 1, value=big), delay(f"nap{i}", "20s"), work(f"end{i}", 1, value="e")]
            for i in range(3)
        ]
    )
    steps = _gate_and_loop(inner, after="done")
    steps[1]["branches"][0]["steps"] = _looping("l", "a", 15, 1)
    rt = new_runtime()
    result, _, snapshots = await _chain(make_definition(steps), rt, every=1)
    assert result.state == RunState.COMPLETED
    assert snapshots
    assert max(len(json.dumps(s["kinds"].get("parallel"))) for s in snapshots) <= 256 * 1024


async def test_a_stop_still_ends_within_its_deadline_when_the_branch_holding_its_timer_is_cancelled() -> None:
    """The nested loop stands first (holding the stop's 60 s timer) while the outer 'slow' branch
    runs a 300 s call; its rival wins the nested 'any' at 5 s and it is cancelled. The branch then
    stands before 'next': it goes on when the stop's deadline passes (61 s), not when the 300 s call
    ends (before, the timer was lost with the cancelled branch; found by a review)."""
    inner = _inner(
        [{"id": "mz", "type": "set", "vars": {"m": 0}}, *_looping("m", "m", 20, 1)],
        [delay("nap", "5s")],
        join="any",
    )
    definition = make_definition(
        [
            {"id": "init", "type": "set", "vars": {"a": 0}},
            {
                "id": "par",
                "type": "parallel",
                "branches": [
                    {
                        "id": "slow",
                        "steps": [work("long", 300, value="long"), work("long_after", 0, value=1)],
                    },
                    {"id": "gate", "steps": [inner, work("next", 1, value="next")]},
                ],
            },
            work("after", 0, value="done"),
        ]
    )
    rt = new_runtime()
    result, _, snapshots = await _chain(definition, rt, every=1)
    assert result.state == RunState.COMPLETED
    assert snapshots
    [next_call] = [c for c in rt.calls if c.step_id == "next"]
    assert next_call.elapsed <= 1 + 60  # the stop began at 1 s
