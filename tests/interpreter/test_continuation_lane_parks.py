"""Continue-as-new while a task among a ``parallel`` branch's (a ``foreach`` item's) own steps is
parked on a dead letter (patch ``continue-as-new-lane-parks``), driven by the fake runtime: the
other branches' loops continue as new, the park travels in its branch's carried entry (the same
row, park id and deadline, the failed call), stays decidable, and the chain ends as an
uninterrupted run would."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from interpreter.continuation import read_continuation
from interpreter.engine import PARALLEL_KIND, Engine
from interpreter.model import Definition
from interpreter.state import DeadLetterAction, DeadLetterDecision, RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_continuation_lane_events import _chain, _straight
from tests.interpreter.test_continuation_parallel import (
    _cancelled_on_resume,
    _carried,
    _engine,
    _gate_and_loop,
    _snapshot,
    _ticking_items,
    _until_carried,
)
from tests.interpreter.test_dead_letters import charge_needs_card
from tests.interpreter.test_engine import make_definition, new_runtime, task, work


def charge_parking(park_timeout: str = "1h", **fields: Any) -> dict[str, Any]:
    """'charge': fails without a card (:func:`charge_needs_card`) and parks on a dead letter."""
    return task(
        "charge",
        "charge",
        input={"amount": 5},
        retry={"maximum_attempts": 1},
        on_failure="dead_letter",
        park_timeout=park_timeout,
        **fields,
    )


def _loop_and_park(park_timeout: str = "1h") -> list[dict[str, Any]]:
    """A loop in one branch; in the other, 'ask', then 'charge' that fails without a card and
    parks on a dead letter, then 'done'; 'after' shows 'done''s output."""
    charge = charge_parking(park_timeout, on_park_timeout="continue")
    return _gate_and_loop(charge, work("done", 1, value="{{ steps.charge.output }}"))


def _runtime() -> FakeRuntime:
    rt = new_runtime()
    rt.on("charge", charge_needs_card)
    return rt


def _parks(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parks the snapshots carry in branches."""
    return _carried(snapshots, "park")


def _decide_at(rt: FakeRuntime, at: float, **decision: Any) -> None:
    """An operator's decision at ``at`` (virtual seconds), to whichever run is open then."""
    rt.at(at, lambda: rt.engine.resolve(DeadLetterDecision(**decision)))


def _calls(rt: FakeRuntime) -> list[tuple[str, float]]:
    return sorted((c.activity_id, c.elapsed) for c in rt.calls)


async def test_a_park_in_a_branch_is_carried_and_redriven_in_a_later_run() -> None:
    """The park waits while the other branch loops: the run continues as new inside the parallel
    step carrying it (the same row and deadline, the failed call); the redrive sent in a later run
    runs the call again with the key it would have had, at the virtual time of the uninterrupted
    run, and the row is resolved once."""
    definition = make_definition(_loop_and_park())
    redrive = {"action": "redrive", "actor": "ops", "input": {"amount": 5, "card": "visa"}}
    straight_rt = _runtime()
    _decide_at(straight_rt, 7, **redrive)
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert straight.state == RunState.COMPLETED, straight.error

    rt = _runtime()
    _decide_at(rt, 7, **redrive)
    result, engine, snapshots = await _chain(definition, rt)
    parks = _parks(snapshots)
    assert parks, snapshots  # switches happened while the task was parked
    assert {
        (p["position"], p["view"]["park_id"], p["view"]["dead_letter_id"], p["activity_id"]) for p in parks
    } == {(1, "charge", 1, "charge")}
    assert len({(p["view"]["deadline"], p["request"]["idempotency_key"]) for p in parks}) == 1
    assert result.state == RunState.COMPLETED, result.error
    assert _calls(rt) == _calls(straight_rt)
    # The redrive runs with the key it would have had: the parking run's, with '~r1' (in a later run).
    first, again = (c for c in rt.calls if c.step_id == "charge")
    parked_in = first.idempotency_key.split("/")[1]
    assert (again.activity_id, again.idempotency_key) == ("charge~r1", f"{first.idempotency_key}~r1")
    assert [(d.park_id, d.run_id) for d in rt.dead_letters] == [("charge", parked_in)]
    assert max(s["generation"] for s in snapshots if _parks([s])) > int(parked_in.removeprefix("run-")) + 1
    assert [(r.action, r.actor, r.dead_letter_id) for r in rt.resolutions] == [
        (DeadLetterAction.REDRIVE, "ops", 1)
    ]
    after = next(r for r in result.steps if r.id == "after")
    assert after.output == {"charged": "visa"}
    assert engine.status().parked == []


async def test_a_park_in_a_branch_times_out_when_it_would_have() -> None:
    definition = make_definition(_loop_and_park(park_timeout="30s"))
    straight_rt = _runtime()
    await straight_rt.run(_straight(definition, straight_rt).run())

    rt = _runtime()
    result, _, snapshots = await _chain(definition, rt)
    assert _parks(snapshots)
    assert result.state == RunState.COMPLETED
    assert _calls(rt) == _calls(straight_rt)
    done = next(c for c in rt.calls if c.step_id == "done")
    assert done.elapsed == 31  # 'ask' took 1 s, then the 30 s park timeout: not restarted by a switch
    assert [(r.action, r.actor) for r in rt.resolutions] == [(DeadLetterAction.TIMEOUT, "timeout")]


async def _until_parked(definition: Definition, rt: FakeRuntime) -> tuple[Engine, dict[str, Any]]:
    """:func:`_until_carried` a branch parked on a dead letter."""
    return await _until_carried(definition, rt, "park")


async def test_a_decision_accepted_while_the_branches_switch_travels_with_the_park() -> None:
    definition = make_definition(_loop_and_park())
    rt = _runtime()
    first, _ = await _until_parked(definition, rt)
    [parked] = first.status().parked
    assert (parked.park_id, first.state) == ("charge", RunState.PARKED)
    first.resolve(DeadLetterDecision(action="skip", actor="ops", output={"charged": "by hand"}))
    data = _snapshot(first)
    [carried] = _parks([data])
    assert (carried["decision"]["action"], carried["decision"]["actor"]) == ("skip", "ops")
    assert rt.resolutions == []  # the row stays open for the next run

    second = _engine(definition, rt, read_continuation(data), every=100)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED, result.error
    assert next(r for r in result.steps if r.id == "after").output == {"charged": "by hand"}
    done = next(c for c in rt.calls if c.step_id == "done")
    assert done.elapsed < 60  # decided at the switch: not waited for until the park timeout
    assert [(r.action, r.dead_letter_id) for r in rt.resolutions] == [(DeadLetterAction.SKIP, 1)]


async def test_a_carried_park_is_pending_and_decidable_from_the_next_runs_first_task() -> None:
    definition = make_definition(_loop_and_park())
    rt = _runtime()
    first, data = await _until_parked(definition, rt)
    second = _engine(definition, rt, read_continuation(data), every=100)
    [parked] = second.status().parked
    assert (parked.park_id, parked.deadline) == ("charge", first.status().parked[0].deadline)
    assert second.state == RunState.PARKED
    second.resolve(DeadLetterDecision(action="abort", actor="ops", reason="no card"))
    result = await rt.run(second.run())
    assert (result.state, result.error_type) == (RunState.FAILED, "DeadLetterAborted")
    assert [(r.action, r.dead_letter_id) for r in rt.resolutions] == [(DeadLetterAction.ABORT, 1)]


def _forge(data: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    forged = json.loads(json.dumps(data))
    [lane] = [b for b in forged["kinds"][PARALLEL_KIND]["branches"] if "park" in b]
    change(lane)
    return forged


async def test_a_carried_park_in_a_branch_is_checked() -> None:
    """A forged or stale snapshot: a park carried at another position, under another path or
    step, for another action, without its row, beside another wait, with a deadline, decision,
    ids, key or tenant that are not its step's: refused."""
    definition = make_definition(_loop_and_park())
    rt = _runtime()
    _, data = await _until_parked(definition, rt)
    forgeries: list[tuple[dict[str, Any], str]] = [
        (_forge(data, lambda lane: lane["park"].update(position=0)), "is not step 1 of it"),
        (_forge(data, lambda lane: lane["park"]["view"].update(path="other")), "is not step 1 of it"),
        (_forge(data, lambda lane: lane["park"]["view"].update(step_id="ask")), "is not step 1 of it"),
        (_forge(data, lambda lane: lane["park"]["view"].update(action="work")), "is not step 1 of it"),
        (_forge(data, lambda lane: lane["park"]["view"].update(dead_letter_id=None)), "is not step 1 of it"),
        (_forge(data, lambda lane: lane.update(position=2)), "is not step 2 of it"),
        (
            _forge(data, lambda lane: lane.update(delay={"position": 1, "path": "charge", "until": "x"})),
            "waits in one step at most",
        ),
        # Found by an attacker's probe: a deadline moved, a decision only the run takes, ids and a
        # key its call did not have, another tenant's request.
        (
            _forge(data, lambda lane: lane["park"]["view"].update(deadline="2099-01-01T00:00:00Z")),
            "its deadline is not its step's park timeout",
        ),
        (
            _forge(data, lambda lane: lane["park"].update(decision={"action": "timeout", "actor": "x"})),
            "a carried 'timeout' decision is the run's to take",
        ),
        (_forge(data, lambda lane: lane["park"]["view"].update(park_id="other")), "or park id 'other'"),
        (_forge(data, lambda lane: lane["park"].update(activity_id="charge~r9")), "its activity id"),
        (_forge(data, lambda lane: lane["park"].update(redrives=-4)), "its activity id"),
        (
            _forge(
                data, lambda lane: lane["park"]["request"].update(idempotency_key="wf-1/run-0/charge~r-4")
            ),
            "its request is not its step's call",
        ),
        (
            _forge(data, lambda lane: lane["park"]["request"].update(tenant="other")),
            "its request is not its step's call",
        ),
    ]
    for forged, problem in forgeries:
        with pytest.raises(ValueError, match=problem):
            _engine(definition, rt, read_continuation(forged), every=100)
    # A task that does not park on a dead letter cannot have a carried park.
    steps = _loop_and_park()
    steps[1]["branches"][1]["steps"][1]["on_failure"] = "fail"
    steps[1]["branches"][1]["steps"][1].pop("park_timeout")
    steps[1]["branches"][1]["steps"][1].pop("on_park_timeout")
    with pytest.raises(ValueError, match="is not step 1 of it"):
        _engine(make_definition(steps), rt, read_continuation(data), every=100)


async def test_a_run_cancelled_before_it_went_back_into_the_branch_closes_the_row() -> None:
    definition = make_definition(_loop_and_park())
    rt = _runtime()
    _, data = await _until_parked(definition, rt)
    second = await _cancelled_on_resume(definition, rt, data)
    assert second.status().parked == []
    charge = [r for r in second.status().steps if r.id == "charge"]
    assert [r.status for r in charge][-1] == StepStatus.CANCELLED
    assert [(r.action, r.dead_letter_id) for r in rt.resolutions] == [(DeadLetterAction.CANCELLED, 1)]


async def test_one_dead_letter_row_carried_for_two_items_is_refused() -> None:
    """Items parked at once (item 2 still looping), each on its own row: a snapshot giving two of
    them one row (it would be resolved twice) is refused (found by an attacker's probe)."""
    charge = task(
        "charge",
        "charge",
        input={"amount": "{{ item }}"},
        retry={"maximum_attempts": 1},
        on_failure="dead_letter",
    )
    definition = make_definition([_ticking_items(charge)])
    rt = _runtime()
    _, data = await _until_carried(definition, rt, "park", "lanes", every=1, count=2)
    parked = [lane for lane in data["kinds"][PARALLEL_KIND]["lanes"] if lane and "park" in lane]
    assert len({lane["park"]["view"]["dead_letter_id"] for lane in parked}) == len(parked)
    _engine(definition, rt, read_continuation(data), every=100)  # as it is, it reads
    parked[1]["park"]["view"]["dead_letter_id"] = parked[0]["park"]["view"]["dead_letter_id"]
    with pytest.raises(ValueError, match="is carried for another park too"):
        _engine(definition, rt, read_continuation(data), every=100)


async def test_a_run_that_cannot_continue_as_new_after_all_closes_the_row_it_kept_open() -> None:
    """The branches stopped with the park carried (its row open for the next run); the host then
    finds the next run's input too large and fails the run (``ContinueAsNewTooLarge``): the row is
    resolved ``cancelled`` once, not left open for a run that will never come (found by an
    attacker's probe)."""
    definition = make_definition(_loop_and_park())
    rt = _runtime()
    first, _ = await _until_parked(definition, rt)
    assert rt.resolutions == []
    await rt.run(
        first.abandon_continuation("the run cannot continue as new: too large", "ContinueAsNewTooLarge")
    )
    assert [(r.action, r.actor, r.dead_letter_id) for r in rt.resolutions] == [
        (DeadLetterAction.CANCELLED, "run", 1)
    ]
    assert first.status().parked == []
    assert first.result().error_type == "ContinueAsNewTooLarge"


def _parking_again_and_again() -> Definition:
    """A branch whose task parks 12 times in a loop (each park timing out after a minute, the loop
    going on) while the other branch ticks every 31 s: a switch carries the step's tenth park."""
    pk = {
        "id": "pk",
        "type": "task",
        "action": "work",
        "input": {"seconds": 0, "fail": "Broke"},
        "retry": {"maximum_attempts": 1},
        "on_failure": "dead_letter",
        "park_timeout": "1m",
        "on_park_timeout": "continue",
        "max_visits": 20,
    }
    tick = {
        "id": "tick",
        "type": "task",
        "action": "work",
        "input": {"seconds": 1, "value": "{{ (steps.tick.output if steps.tick is defined else 0) + 1 }}"},
        "retry": {"maximum_attempts": 1},
        "max_visits": 100,
    }
    return make_definition(
        [
            {"id": "init", "type": "set", "vars": {"n": 0}},
            {
                "id": "par",
                "type": "parallel",
                "branches": [
                    {
                        "id": "parks",
                        "steps": [
                            pk,
                            {
                                "id": "n_up",
                                "type": "set",
                                "vars": {"n": "{{ vars.n + 1 }}"},
                                "max_visits": 20,
                            },
                            {
                                "id": "more",
                                "type": "condition",
                                "if": "vars.n < 12",
                                "then": {"goto": "pk"},
                                "max_visits": 20,
                            },
                        ],
                    },
                    {
                        "id": "loop",
                        "steps": [
                            tick,
                            {"id": "nap", "type": "delay", "duration": "30s", "max_visits": 100},
                            {
                                "id": "again",
                                "type": "condition",
                                "if": "steps.tick.output < 40",
                                "then": {"goto": "tick"},
                                "max_visits": 100,
                            },
                        ],
                    },
                ],
            },
            work("tail", value="done"),
        ]
    )


async def test_a_branchs_tenth_park_of_a_step_is_carried_and_read_back() -> None:
    """Park ids go ``pk``, ``pk#2~p2`` ... ``pk#10~p10``: before, the next run read 2-9 only and
    refused the genuine snapshot carrying ``~p10`` (the chain failed; found by a differential
    probe). Now the chain ends as the uninterrupted run, every call once."""
    definition = _parking_again_and_again()
    straight_rt = new_runtime()
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert straight.state == RunState.COMPLETED
    rt = new_runtime()
    result, _, snapshots = await _chain(definition, rt)
    carried = [
        lane["park"]["view"]["park_id"]
        for s in snapshots
        for lane in s["kinds"].get(PARALLEL_KIND, {}).get("branches", [])
        if "park" in lane
    ]
    assert any(park_id.endswith(("~p10", "~p11", "~p12")) for park_id in carried), carried
    assert result.state == RunState.COMPLETED
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)
