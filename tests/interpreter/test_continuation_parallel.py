"""Continue-as-new inside the branches of a ``parallel`` step (patch ``continue-as-new-in-parallel``),
driven by the fake runtime: loops in concurrent branches stop at boundaries, the run continues as
new carrying each branch's place (or output), and the chain ends as an uninterrupted run would."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interpreter.continuation import Continuation, read_continuation
from interpreter.engine import PARALLEL_CARRY_BUDGET, PARALLEL_DRAIN_WAIT_S, PARALLEL_KIND, Engine, RunInfo
from interpreter.model import Definition
from interpreter.state import (
    CancelRequest,
    Decision,
    DecisionKind,
    ForeachBatch,
    RunResult,
    RunState,
    StepStatus,
)
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import approval, delay, make_definition, new_runtime, set_vars, task, work


def _looping(prefix: str, var: str, iterations: int, seconds: float) -> list[dict[str, Any]]:
    """A branch counting ``vars.<var>`` to ``iterations`` with a ``goto`` loop, one action a turn."""
    return [
        work(f"{prefix}_step", seconds, value=f"{{{{ vars.{var} }}}}", max_visits=iterations),
        set_vars(f"{prefix}_bump", {var: f"{{{{ vars.{var} + 1 }}}}"}, max_visits=iterations),
        {
            "id": f"{prefix}_again",
            "type": "condition",
            "if": f"vars.{var} < {iterations}",
            "then": {"goto": f"{prefix}_step"},
            "max_visits": iterations,
        },
        set_vars(f"{prefix}_done", {f"{prefix}_total": f"{{{{ vars.{var} }}}}"}),
    ]


def _parallel_loops(left: int = 9, right: int = 5) -> list[dict[str, Any]]:
    return [
        set_vars("init", {"a": 0, "b": 0}),
        work("charge", value="charged", compensate=[task("refund", "refund")]),
        {
            "id": "par",
            "type": "parallel",
            "branches": [
                {"id": "left", "steps": _looping("l", "a", left, 1)},
                {"id": "right", "steps": _looping("r", "b", right, 3)},
                {"id": "short", "steps": [work("s_one", 2, value="short")]},
            ],
        },
        work("tail", value="{{ steps.par.output.left.l_total + steps.par.output.right.r_total }}"),
        {"id": "end", "type": "fail", "message": "stop after {{ steps.tail.output }}"},
    ]


def _engine(definition: Definition, rt: FakeRuntime, snapshot: Continuation | None, every: int) -> Engine:
    """An engine whose host asks to continue as new once ``every`` actions were called in its run
    (the runtime's ``engine``: the one published events and decisions go to)."""
    done = len(rt.calls)
    engine = Engine(
        definition,
        {},
        rt,
        RunInfo("wf-1", f"run-{0 if snapshot is None else snapshot.generation}", rt.now()),
        continue_as_new=lambda: len(rt.calls) - done >= every,
        resume=snapshot,
    )
    rt.engine = engine
    return engine


def _snapshot(engine: Engine) -> dict[str, Any]:
    """The engine's continuation, as JSON (as the next run's input carries it)."""
    return json.loads(json.dumps(engine.continuation().model_dump(mode="json")))


async def _chain(
    definition: Definition, rt: FakeRuntime, every: int
) -> tuple[RunResult, Engine, list[dict[str, Any]]]:
    """Runs the chain to its end; returns the result, the last engine and each snapshot (as JSON)."""
    snapshot: Continuation | None = None
    snapshots: list[dict[str, Any]] = []
    while True:
        engine = _engine(definition, rt, snapshot, every)
        result = await rt.run(engine.run())
        if not engine.continuing:
            return result, engine, snapshots
        data = json.loads(json.dumps(engine.continuation().model_dump(mode="json")))
        snapshots.append(data)
        snapshot = read_continuation(data)


def _runtime(*, together: bool = False) -> FakeRuntime:
    """The fake runtime with the ``refund`` action (``together``: see :attr:`FakeRuntime.together`)."""
    rt = new_runtime()
    rt.on("refund", lambda call, attempt: "refunded")
    rt.together = together
    return rt


async def _straight(definition: Definition, rt: FakeRuntime | None = None) -> tuple[RunResult, FakeRuntime]:
    """The run without any switch (on ``rt``, by default a fresh :func:`_runtime`)."""
    rt = rt or _runtime()
    return await rt.run(Engine(definition, {}, rt, RunInfo("wf-1", "run-0", rt.now())).run()), rt


async def test_loops_in_parallel_branches_continue_as_new_there_and_end_as_an_uninterrupted_run() -> None:
    definition = make_definition(_parallel_loops())
    straight, straight_rt = await _straight(definition)
    assert straight.error == "stop after 14"

    rt = _runtime()
    chained, engine, snapshots = await _chain(definition, rt, every=3)

    inside = [s["kinds"][PARALLEL_KIND] for s in snapshots if PARALLEL_KIND in s["kinds"]]
    assert len(inside) >= 3, snapshots  # most switches happen with both loops running
    # The short branch finished early: later snapshots carry its output, not a place.
    assert {"id": "short", "done": True, "output": "short"} in inside[-1]["branches"]
    assert all(s["position"] == 2 for s in snapshots if PARALLEL_KIND in s["kinds"])
    assert (
        (chained.state, chained.error)
        == (straight.state, straight.error)
        == (RunState.FAILED, "stop after 14")
    )
    # Every action once, with the activity ids an uninterrupted run gives them (visits went on).
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)
    assert len(rt.calls) == len(straight_rt.calls)
    assert rt.calls[-1].step_id == "refund"  # registered in the first run, run at the end of the last
    status = engine.status()
    assert status.continued == len(snapshots)
    par = [r for r in status.steps if r.id == "par"]
    assert [(r.status, r.output) for r in par] == [
        (
            StepStatus.COMPLETED,
            {"left": {"l_total": 9}, "right": {"r_total": 5}, "short": "short"},
        )
    ]


async def test_max_visits_in_a_parallel_branch_counts_across_runs() -> None:
    steps = _parallel_loops()
    steps[2]["branches"][0]["steps"][0]["max_visits"] = 6  # the left loop wants 9 visits
    rt = _runtime()
    result, _, snapshots = await _chain(make_definition(steps), rt, every=2)
    assert any(PARALLEL_KIND in s["kinds"] for s in snapshots)
    assert result.error_type == "LoopLimitExceeded"
    assert "'l_step' would run 7 times" in (result.error or "")
    assert rt.calls[-1].step_id == "refund"


def _gate_and_loop(*gate: dict[str, Any], after: str = "{{ steps.par.output.gate }}") -> list[dict[str, Any]]:
    """A loop in one branch; in the other, 'ask', then the ``gate`` steps (an approval or human
    task, ...); then 'after' (its value ``after``)."""
    return [
        set_vars("init", {"a": 0}),
        {
            "id": "par",
            "type": "parallel",
            "branches": [
                {"id": "loop", "steps": _looping("l", "a", 8, 1)},
                {"id": "gate", "steps": [work("ask", 1, value="asked"), *gate]},
            ],
        },
        work("after", value=after),
    ]


async def _cancelled_on_resume(definition: Definition, rt: FakeRuntime, data: dict[str, Any]) -> Engine:
    """The next run from snapshot ``data``, cancelled before it went back into the branches (a
    cancellation on its way: no step starts); its engine (the run ended ``cancelled``)."""
    second = _engine(definition, rt, read_continuation(data), every=100)
    second.hold_steps = True
    running = rt.spawn(second.run())
    await rt.run_until(lambda: any(w.summary == "cancelling" for w in rt.waits))
    running.cancel()
    result = await rt.run(running)
    assert result.state == RunState.CANCELLED
    return second


def _carried(snapshots: list[dict[str, Any]], wait: str, key: str = "branches") -> list[dict[str, Any]]:
    """The waits of kind ``wait`` (``person``, ``event``, ``park``, ``delay``) the snapshots carry
    in branches (``key``: items, ``lanes``)."""
    return [
        lane[wait]
        for s in snapshots
        if PARALLEL_KIND in s["kinds"]
        for lane in s["kinds"][PARALLEL_KIND][key]
        if lane and wait in lane
    ]


def _people(snapshots: list[dict[str, Any]], key: str = "branches") -> list[dict[str, Any]]:
    """The approvals and human tasks the snapshots carry in branches (``key``: items, ``lanes``)."""
    return _carried(snapshots, "person", key)


async def _until_carried(
    definition: Definition, rt: FakeRuntime, wait: str, key: str = "branches", every: int = 2, count: int = 1
) -> tuple[Engine, dict[str, Any]]:
    """Runs the chain (a switch every ``every`` actions) until a run continues as new while
    ``count`` branches (items, ``key``) wait in a ``wait`` (see :func:`_carried`); that run's
    engine, and its snapshot (as JSON)."""
    snapshot: Continuation | None = None
    for _ in range(10):
        engine = _engine(definition, rt, snapshot, every=every)
        await rt.run(engine.run())
        assert engine.continuing
        data = _snapshot(engine)
        if len(_carried([data], wait, key)) >= count:
            return engine, data
        snapshot = read_continuation(data)
    raise AssertionError(f"no run continued as new while {count} branches waited in a {wait}")


async def _until_person(definition: Definition, rt: FakeRuntime) -> tuple[Engine, dict[str, Any]]:
    """:func:`_until_carried` a branch waiting for a person."""
    return await _until_carried(definition, rt, "person")


async def test_an_approval_waiting_in_a_branch_is_carried_and_times_out_when_it_would_have() -> None:
    """An approval in one branch waits while the other branch loops: the run continues as new
    inside the parallel step carrying the pending approval (its view and deadline), the loop runs
    at its own pace, and the approval times out at the time it would have without a switch."""
    gate = approval(
        "ok", ["alice"], timeout="1h", on_timeout="approve", message="Ship {{ steps.ask.output }}?"
    )
    definition = make_definition(_gate_and_loop(gate))
    straight, straight_rt = await _straight(definition)
    assert straight.state == RunState.COMPLETED

    rt = _runtime()
    result, engine, snapshots = await _chain(definition, rt, every=2)
    people = _people(snapshots)
    assert people, snapshots  # switches happened while the approval waited
    assert {(p["position"], p["view"]["path"], p["view"]["message"]) for p in people} == {
        (1, "ok", "Ship asked?")
    }
    assert len({p["view"]["deadline"] for p in people}) == 1  # the same deadline in every run
    assert result.state == RunState.COMPLETED
    assert result.output == straight.output
    # Every action at the same virtual time as in the uninterrupted run: the loop was not held
    # until the approval timed out, and 'after' ran when the approval timed out.
    assert sorted((c.activity_id, c.elapsed) for c in rt.calls) == sorted(
        (c.activity_id, c.elapsed) for c in straight_rt.calls
    )
    assert max(c.elapsed for c in rt.calls if c.step_id == "l_step") < 60
    ok = [r for r in engine.status().steps if r.id == "ok"]
    assert [(r.status, r.output["decision"], r.output["actor"]) for r in ok] == [
        (StepStatus.COMPLETED, "approved", "timeout")
    ]


async def test_a_decision_accepted_while_the_branches_switch_travels_with_the_approval() -> None:
    """The branches stopped, the run is switching: the approval in a branch stays pending and
    decidable; a decision accepted then is in the snapshot, and the next run takes it at once."""
    gate = approval("ok", ["alice"], timeout="1h")
    definition = make_definition(_gate_and_loop(gate))
    rt = _runtime()
    first, data = await _until_person(definition, rt)
    [pending] = first.status().pending_approvals
    assert pending.path == "ok"
    first.decide(DecisionKind.APPROVE, Decision(actor="alice", reason="fine"))
    data = json.loads(json.dumps(first.continuation().model_dump(mode="json")))
    [person] = _people([data])
    assert (person["decided"], person["decision"]["actor"]) == ("approve", "alice")

    second = _engine(definition, rt, read_continuation(data), every=100)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED
    ok = [r for r in second.status().steps if r.id == "ok"]
    assert [(r.output["decision"], r.output["actor"], r.output["reason"]) for r in ok] == [
        ("approved", "alice", "fine")
    ]
    after = next(c for c in rt.calls if c.step_id == "after")
    # Decided during the switch: 'after' waited for the loop only, not for the deadline.
    assert after.elapsed < 60
    assert [d.actor for d in second.status().decisions if d.accepted] == ["alice"]


def _ticking_items(last: dict[str, Any], output: str | None = None) -> dict[str, Any]:
    """A foreach of 3 items, all at once: each item 'seed' (1 s), then 'tick' (2 s) ``item * 4``
    times (at least once) in a goto loop, then ``last``: item 0 reaches it after one tick, item 1
    after 4, item 2 after 8."""
    return {
        "id": "each",
        "type": "foreach",
        "items": "range(3) | list",
        "concurrency": 3,
        **({} if output is None else {"output": output}),
        "steps": [
            work("seed", 1, value=0),
            work(
                "tick",
                2,
                value="{{ (steps.tick.output if steps.tick is defined else steps.seed.output) + 1 }}",
                max_visits=8,
            ),
            {
                "id": "more",
                "type": "condition",
                "if": "steps.tick.output < item * 4",
                "then": {"goto": "tick"},
                "max_visits": 8,
            },
            last,
        ],
    }


async def test_a_human_task_waiting_in_a_foreach_item_is_carried() -> None:
    """Human tasks in foreach items (one per item, paths ``each[i].call``) wait while other items
    loop: carried with their due times; completed in a later run of the chain, by the person."""
    task_step = {
        "id": "call",
        "type": "human_task",
        "title": "Call {{ item }}",
        "assignee": "nurse",
        "due": "2h",
        "on_timeout": "continue",
    }
    steps = [
        _ticking_items(
            task_step, "{{ item }}:{{ steps.call.output.status }}:{{ steps.call.output.completed_by }}"
        )
    ]
    # Item 0's task waits after one tick, item 1's after 4, item 2's after 8.
    definition = make_definition(steps)
    rt = _runtime()
    snapshot: Continuation | None = None
    snapshots: list[dict[str, Any]] = []
    for _ in range(10):
        engine = _engine(definition, rt, snapshot, every=2)
        result = await rt.run(engine.run())
        if not engine.continuing:
            break
        data = json.loads(json.dumps(engine.continuation().model_dump(mode="json")))
        snapshots.append(data)
        people = _people([data], "lanes")
        if any(p["view"]["path"] == "each[1].call" for p in people):
            engine.decide(
                DecisionKind.COMPLETE, Decision(actor="nurse", step_id="each[1].call", reason="done")
            )
            data = json.loads(json.dumps(engine.continuation().model_dump(mode="json")))
            snapshots[-1] = data
        snapshot = read_continuation(data)
    assert not engine.continuing
    people = _people(snapshots, "lanes")
    assert people, snapshots
    assert {p["view"]["kind"] for p in people} == {"task"}
    assert {p["view"]["path"] for p in people} <= {f"each[{i}].call" for i in range(3)}
    assert result.state == RunState.COMPLETED
    each = next(r for r in engine.status().steps if r.id == "each")
    assert each.output == ["0:timed_out:None", "1:completed:nurse", "2:timed_out:None"]


async def test_a_carried_approval_in_a_branch_is_checked() -> None:
    """A forged or stale snapshot: an approval carried at another step, under another path, with
    people the step does not name, or with a decision by someone who may not decide: refused."""
    gate = approval("ok", ["alice"], timeout="1h")
    definition = make_definition(_gate_and_loop(gate))
    rt = _runtime()
    _, data = await _until_person(definition, rt)
    decision = {"actor": "mallory", "reason": "mine", "data": {}, "groups": [], "step_id": None}

    def forged(change: Any) -> Continuation:
        bad = json.loads(json.dumps(data))
        entry = next(b for b in bad["kinds"][PARALLEL_KIND]["branches"] if b["id"] == "gate")
        change(entry)
        return read_continuation(bad)

    for change, message in (
        (lambda e: e["person"].update(position=0), "is not step 1 of it"),
        (lambda e: e["person"]["view"].update(path="other"), "its path is not the step's"),
        (lambda e: e["person"]["view"].update(approvers=["mallory"]), "its approvers are not the step's"),
        (lambda e: e["person"]["view"].update(kind="task"), "is not step 1 of it"),
        (lambda e: e["person"]["view"].update(kind="form"), "is not step 1 of it"),
        (lambda e: e["person"].update(decided="approve", decision=decision), "'mallory' may not decide it"),
        (lambda e: e.update(position=0), "is not step 0 of it"),
        (lambda e: e.update(delay=e["person"]), "waits in one step at most"),
    ):
        with pytest.raises(ValueError, match=message):
            _engine(definition, rt, forged(change), every=100)


def _delayed_loops() -> list[dict[str, Any]]:
    """Two looping branches that wait between their (instant) actions: 10 minutes and an hour."""
    quick = _looping("q", "a", 12, 0)
    quick.insert(2, delay("pause", "10m", max_visits=12))
    slow = _looping("s", "b", 4, 0)
    slow.insert(2, delay("nap", "1h", max_visits=4))
    return [
        set_vars("init", {"a": 0, "b": 0}),
        {
            "id": "par",
            "type": "parallel",
            "branches": [{"id": "quick", "steps": quick}, {"id": "slow", "steps": slow}],
        },
        work("tail", value="{{ steps.nap.output.waited_s }}"),
    ]


async def test_a_delay_in_a_branch_is_carried_and_fires_when_it_would_have() -> None:
    definition = make_definition(_delayed_loops())
    straight, straight_rt = await _straight(definition)
    assert straight.state == RunState.COMPLETED

    rt = _runtime()
    chained, engine, snapshots = await _chain(definition, rt, every=2)
    carried = [
        b["delay"]
        for s in snapshots
        if PARALLEL_KIND in s["kinds"]
        for b in s["kinds"][PARALLEL_KIND]["branches"]
        if "delay" in b
    ]
    assert carried, snapshots  # switches happened while the slow branch slept
    assert all(
        (d["path"], d["position"], d["waited_s"]) in {("nap", 2, 3600), ("pause", 2, 600)} for d in carried
    )
    assert chained.state == RunState.COMPLETED
    assert chained.output == straight.output
    # Every action at the same virtual time as in the uninterrupted run: the timers fired as before.
    assert sorted((c.activity_id, c.elapsed) for c in rt.calls) == sorted(
        (c.activity_id, c.elapsed) for c in straight_rt.calls
    )
    naps = [r for r in engine.status().steps if r.id == "nap"]
    assert [r.output["waited_s"] for r in naps if r.output] == [3600.0] * len([r for r in naps if r.output])


async def test_a_delay_in_a_foreach_item_is_carried() -> None:
    steps = [
        {
            "id": "each",
            "type": "foreach",
            "items": "range(4) | list",
            "concurrency": 4,
            "output": "{{ item }}:{{ steps.second.output }}",
            "steps": [
                work("first", 1, value="{{ item }}"),
                delay("nap", "{{ (item + 1) * 10 }}m"),
                work("second", 1, value="{{ steps.nap.output.waited_s }}"),
            ],
        },
    ]
    definition = make_definition(steps)
    straight, straight_rt = await _straight(definition)
    rt = _runtime()
    chained, _, snapshots = await _chain(definition, rt, every=2)
    lanes = [
        lane
        for s in snapshots
        if PARALLEL_KIND in s["kinds"]
        for lane in s["kinds"][PARALLEL_KIND]["lanes"]
        if lane and "delay" in lane
    ]
    assert lanes, snapshots
    assert {lane["delay"]["path"] for lane in lanes} <= {f"each[{i}].nap" for i in range(4)}
    assert chained.output == straight.output
    assert sorted((c.activity_id, c.elapsed) for c in rt.calls) == sorted(
        (c.activity_id, c.elapsed) for c in straight_rt.calls
    )


async def test_a_branch_in_a_long_step_holds_the_others_for_a_bounded_time_only() -> None:
    steps = [
        set_vars("init", {"a": 0}),
        {
            "id": "par",
            "type": "parallel",
            "branches": [
                {"id": "loop", "steps": _looping("l", "a", 30, 10)},
                {"id": "long", "steps": [work("crunch", 3600, value="crunched")]},
            ],
        },
        work("after", value="after"),
    ]
    definition = make_definition(steps)
    rt = _runtime()
    result, _, snapshots = await _chain(definition, rt, every=2)
    assert result.state == RunState.COMPLETED
    assert not any(PARALLEL_KIND in s["kinds"] for s in snapshots)
    stops = [w for w in rt.waits if w.summary.endswith("stop for continue-as-new")]
    assert any(w.timeout_s == PARALLEL_DRAIN_WAIT_S for w in stops)
    # 30 turns of 10 s, held once for at most PARALLEL_DRAIN_WAIT_S (tried again only 10 min later).
    loop_calls = [c.elapsed for c in rt.calls if c.step_id == "l_step"]
    assert len(loop_calls) == 30
    assert max(loop_calls) <= 290 + PARALLEL_DRAIN_WAIT_S + 1


async def _first_snapshot(definition: Definition, rt: FakeRuntime) -> dict[str, Any]:
    """The snapshot (as JSON) of the chain's first run, the host asking after 3 actions."""
    first = _engine(definition, rt, None, every=3)
    await rt.run(first.run())
    assert first.continuing
    data: dict[str, Any] = json.loads(json.dumps(first.continuation().model_dump(mode="json")))
    return data


def _all_finished(entry: dict[str, Any]) -> None:
    entry["branches"] = [{"id": b["id"], "done": True, "output": None} for b in entry["branches"]]


async def test_a_carried_parallel_step_is_checked_against_the_definition() -> None:
    definition = make_definition(_parallel_loops())
    rt = _runtime()
    data = await _first_snapshot(definition, rt)
    assert data["kinds"][PARALLEL_KIND]["step"] == "par"
    entry = data["kinds"][PARALLEL_KIND]
    for forge, message in (
        (lambda e: e.update(step="tail"), "carried parallel step 'tail' is not at step 2"),
        (lambda e: e["branches"].reverse(), "are not its branches"),
        (lambda e: e["branches"][0].update(position=7), "no step 7 in it"),
        (lambda e: e["branches"][0].update(position=True), "no step True in it"),
        (lambda e: e["branches"][1].pop("last_output"), "is malformed"),
        (lambda e: e.pop("branches"), "is malformed"),
        (_all_finished, "are all finished"),
    ):
        bad = json.loads(json.dumps(data))
        forge(bad["kinds"][PARALLEL_KIND])
        with pytest.raises(ValueError, match=message):
            _engine(definition, rt, read_continuation(bad), every=100)
    assert entry["branches"][0]["id"] == "left"


async def test_a_finished_branch_is_carried_only_for_a_join_of_all() -> None:
    steps = _parallel_loops()
    steps[2]["join"] = "any"
    definition = make_definition(steps)
    rt = _runtime()
    first = _engine(make_definition(_parallel_loops()), rt, None, every=3)
    await rt.run(first.run())
    data = json.loads(json.dumps(first.continuation().model_dump(mode="json")))
    data["kinds"][PARALLEL_KIND]["branches"][2] = {"id": "short", "done": True, "output": "short"}
    with pytest.raises(ValueError, match="only when the join is 'all'"):
        _engine(definition, rt, read_continuation(data), every=100)


async def test_a_run_cancelled_before_it_went_back_into_the_parallel_step_closes_it() -> None:
    definition = make_definition(_parallel_loops())
    rt = _runtime()
    first = _engine(definition, rt, None, every=3)
    await rt.run(first.run())
    snapshot = read_continuation(json.loads(json.dumps(first.continuation().model_dump(mode="json"))))
    second = await _cancelled_on_resume(definition, rt, snapshot.model_dump(mode="json"))
    par = [r for r in second.status().steps if r.id == "par"]
    assert [r.status for r in par] == [StepStatus.CANCELLED]
    assert rt.calls[-1].step_id == "refund"


def _foreach_loops(items: int = 6, turns: int = 4) -> list[dict[str, Any]]:
    """A foreach whose body loops ``turns`` times per item (a counter kept in the item's own steps)."""
    return [
        work("charge", value="charged", compensate=[task("refund", "refund")]),
        {
            "id": "each",
            "type": "foreach",
            "items": f"range({items}) | list",
            "concurrency": 2,
            "output": "{{ item }}-{{ steps.tick.output }}",
            "steps": [
                work("seed", 1, value=0),
                work(
                    "tick",
                    2,
                    value="{{ (steps.tick.output if steps.tick is defined else steps.seed.output) + 1 }}",
                    max_visits=turns,
                ),
                {
                    "id": "more",
                    "type": "condition",
                    "if": f"steps.tick.output < {turns}",
                    "then": {"goto": "tick"},
                    "max_visits": turns,
                },
            ],
        },
        {"id": "end", "type": "fail", "message": "{{ steps.each.output | join(',') }}"},
    ]


async def test_loops_in_foreach_items_continue_as_new_there_and_end_as_an_uninterrupted_run() -> None:
    definition = make_definition(_foreach_loops())
    straight, straight_rt = await _straight(definition)
    assert straight.error == "0-4,1-4,2-4,3-4,4-4,5-4"

    rt = _runtime()
    chained, engine, snapshots = await _chain(definition, rt, every=3)
    inside = [s["kinds"][PARALLEL_KIND] for s in snapshots if PARALLEL_KIND in s["kinds"]]
    assert len(inside) >= 4, snapshots
    assert all(e["items"] == list(range(6)) for e in inside)
    lanes = inside[len(inside) // 2]["lanes"]
    # Items done (their outputs), running (where in the body, their own steps) and not started.
    assert any(lane is not None and lane.get("done") for lane in lanes)
    assert any(lane is not None and "position" in lane for lane in lanes)
    assert lanes[-1] is None
    assert (chained.state, chained.error) == (straight.state, straight.error)
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)
    assert len(rt.calls) == len(straight_rt.calls)
    assert rt.calls[-1].step_id == "refund"
    each = [r for r in engine.status().steps if r.id == "each"]
    assert [(r.status, r.output) for r in each] == [
        (StepStatus.COMPLETED, ["0-4", "1-4", "2-4", "3-4", "4-4", "5-4"])
    ]


async def test_a_carried_foreach_step_is_checked_against_the_definition() -> None:
    definition = make_definition(_foreach_loops())
    rt = _runtime()
    data = await _first_snapshot(definition, rt)
    assert data["kinds"][PARALLEL_KIND]["step"] == "each"

    def running(entry: dict[str, Any]) -> dict[str, Any]:
        return next(lane for lane in entry["lanes"] if lane is not None and "position" in lane)

    for forge, message in (
        (lambda e: e.update(step="charge"), "carried foreach step 'charge' is not at step 1"),
        (lambda e: e["items"].pop(), "are malformed"),
        (lambda e: running(e).update(position=3), "no step 3 in the body"),
        (lambda e: running(e).update(steps=[]), "is malformed"),
        (lambda e: e["lanes"].__setitem__(0, {"done": "yes", "output": 1}), "is malformed"),
        (lambda e: e.update(items=list(range(2000)), lanes=[None] * 2000), "exceed its limit"),
        (lambda e: e.update(lanes=[{"done": True, "output": 1}] * 6), "are all finished"),
    ):
        bad = json.loads(json.dumps(data))
        forge(bad["kinds"][PARALLEL_KIND])
        with pytest.raises(ValueError, match=message):
            _engine(definition, rt, read_continuation(bad), every=100)


async def test_a_parallel_step_inside_a_condition_branch_continues_as_new_inside_both() -> None:
    steps = _parallel_loops()
    steps[2] = {
        "id": "route",
        "type": "condition",
        "if": "vars.a == 0",
        "then": {"steps": [work("first", value="first"), steps[2]]},
        "else": {"steps": [work("never", value="never")]},
    }
    steps[3]["input"]["value"] = "{{ vars.a + vars.b }}"
    definition = make_definition(steps)
    straight, straight_rt = await _straight(definition)
    assert straight.error == "stop after 14"

    rt = _runtime()
    chained, engine, snapshots = await _chain(definition, rt, every=3)
    inside = [s for s in snapshots if PARALLEL_KIND in s["kinds"]]
    assert len(inside) >= 3
    assert all(s["kinds"]["branches"] == [{"step": "route", "branch": "then", "position": 1}] for s in inside)
    assert (chained.state, chained.error) == (straight.state, straight.error)
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)
    assert "never" not in [c.step_id for c in rt.calls]
    route = [r for r in engine.status().steps if r.id == "route"]
    assert [(r.status, r.output) for r in route] == [(StepStatus.COMPLETED, {"branch": "then"})]


async def test_a_carried_delay_in_a_branch_is_checked() -> None:
    definition = make_definition(_delayed_loops())
    rt = _runtime()
    snapshot = None
    data: dict[str, Any] = {}
    # Run the chain until a snapshot carries a delay in a branch.
    for _ in range(10):
        engine = _engine(definition, rt, snapshot, 2)
        await rt.run(engine.run())
        assert engine.continuing
        data = json.loads(json.dumps(engine.continuation().model_dump(mode="json")))
        if any("delay" in b for b in data["kinds"].get(PARALLEL_KIND, {}).get("branches", [])):
            break
        snapshot = read_continuation(data)
    sleeping = next(b for b in data["kinds"][PARALLEL_KIND]["branches"] if "delay" in b)

    for forge, message in (
        (lambda d: d.update(path="other"), "its carried delay 'other' is not step 2 of it"),
        (lambda d: d.update(position=0), "is not step 2 of it"),
        (lambda d: d.pop("until"), "until"),
    ):
        bad = json.loads(json.dumps(data))
        entry = next(b for b in bad["kinds"][PARALLEL_KIND]["branches"] if b["id"] == sleeping["id"])
        forge(entry["delay"])
        with pytest.raises(ValueError, match=message):
            _engine(definition, rt, read_continuation(bad), every=100)
    bad = json.loads(json.dumps(data))
    entry = next(b for b in bad["kinds"][PARALLEL_KIND]["branches"] if b["id"] == sleeping["id"])
    entry["position"] = 0  # a delay carried at a step that is not one
    entry["delay"]["position"] = 0
    with pytest.raises(ValueError, match="is not step 0 of it"):
        _engine(definition, rt, read_continuation(bad), every=100)


async def test_a_foreach_whose_list_is_too_large_to_carry_does_not_continue_inside_it() -> None:
    """A list of 300 KB would ride in the next run's input with the state: the items do not stop
    for a continue-as-new (the run goes on in one run, bounded by the history guard)."""
    steps = [
        set_vars("init", {"blobs": "{{ range(300) | map('string') | map('center', 1000) | list }}"}),
        {
            "id": "each",
            "type": "foreach",
            "items": "vars.blobs",
            "max_items": 300,
            "concurrency": 2,
            "output": "{{ index }}",
            "steps": [work("one", 1, value="x"), work("two", 1, value="y")],
        },
    ]
    definition = make_definition(steps, limits={"max_foreach_items": 300, "max_step_executions": 2000})
    rt = _runtime()
    result, _, snapshots = await _chain(definition, rt, every=3)
    assert result.state == RunState.COMPLETED, result.error
    assert result.output["blobs"][0].strip() == "0"
    assert not any(PARALLEL_KIND in s["kinds"] for s in snapshots)
    assert len(rt.calls) == 600
    # A small list under the same host continues inside it.
    small = make_definition([steps[0] | {"vars": {"blobs": "{{ range(30) | list }}"}}, steps[1]])
    rt = _runtime()
    result, _, snapshots = await _chain(small, rt, every=3)
    assert result.state == RunState.COMPLETED
    assert any(PARALLEL_KIND in s["kinds"] for s in snapshots)


def _items(body: list[dict[str, Any]], count: int, concurrency: int) -> list[dict[str, Any]]:
    """A foreach ``each`` over ``range(count)`` running ``body``, then a ``tail`` action."""
    each = {"id": "each", "type": "foreach", "items": f"range({count}) | list", "concurrency": concurrency}
    return [{**each, "steps": body}, work("tail")]


async def test_items_carried_under_way_are_not_started_again_when_the_next_run_stops_at_once() -> None:
    """The host asks from the next run's first action: items the snapshot carried mid-body are
    not new items (they do not wait at the gate, and are carried again where they stand)."""
    body = [work("pre", 1), work("mid", 2), set_vars("acc", {"n": 1}), work("post", 1)]
    steps = _items(body, 3, 3)
    definition = make_definition(steps)
    straight, straight_rt = await _straight(definition)
    rt = _runtime()
    chained, _, snapshots = await _chain(definition, rt, every=1)
    assert any(PARALLEL_KIND in s["kinds"] for s in snapshots)
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)
    assert chained.output == straight.output


async def test_a_cancellation_while_the_branches_stop_goes_to_the_run_that_holds_them() -> None:
    steps = [
        set_vars("init", {"a": 0}),
        work("charge", value="charged", compensate=[task("refund", "refund")]),
        {
            "id": "par",
            "type": "parallel",
            "branches": [
                {"id": "left", "steps": _looping("l", "a", 20, 1)},
                {"id": "right", "steps": [work("long", 30), work("long2", 30)]},
            ],
        },
        work("tail"),
    ]
    rt = _runtime()
    engine = _engine(make_definition(steps), rt, None, every=2)

    def accept_cancel() -> None:  # what the host does when it accepts cancel_run
        engine.cancel_request = CancelRequest(actor="alice", reason="stop")
        engine.hold_steps = True

    rt.at(10, accept_cancel)  # 'left' stands stopped, 'right' is in its 30 s action
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: sum(w.summary == "cancelling" for w in rt.waits) >= 2)
    assert rt.elapsed >= 30  # the branches went on (to wait for the cancellation) once 'right' stood
    assert not main.done()
    assert not engine.continuing  # held for the cancellation, not continued as new past it
    main.cancel()  # Temporal's cancellation arrives
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert [c.step_id for c in rt.calls].count("refund") == 1


@pytest.mark.parametrize("join", ["any", "first"])
async def test_an_any_or_first_join_switches_only_when_no_branch_would_wait_for_another(join: str) -> None:
    """Which branch finishes first decides these joins: a branch stops only when every other one
    sleeps in a delay (the switch is then at once), so the chain ends as the uninterrupted run,
    at the same virtual times."""
    quick = _looping("q", "a", 9, 0)
    quick.insert(2, delay("pause", "10m", max_visits=9))
    racing = [
        set_vars("init", {"a": 0, "b": 0}),
        {
            "id": "par",
            "type": "parallel",
            "join": join,
            "branches": [
                {"id": "quick", "steps": quick},
                {"id": "busy", "steps": _looping("b", "b", 30, 7)},
                {"id": "sleepy", "steps": [delay("long", "2h"), work("late", value="late")]},
            ],
        },
        work("tail", value="{{ steps.par.output }}"),
    ]
    definition = make_definition(racing)
    straight, straight_rt = await _straight(definition)
    rt = _runtime()
    chained, _, snapshots = await _chain(definition, rt, every=2)
    assert any(PARALLEL_KIND in s["kinds"] for s in snapshots)  # switched inside, while the others slept
    assert chained.output == straight.output
    assert sorted((c.activity_id, c.elapsed) for c in rt.calls) == sorted(
        (c.activity_id, c.elapsed) for c in straight_rt.calls
    )


@pytest.mark.parametrize(
    "wait",
    [delay("bnap", "60s"), approval("bok", ["alice"], timeout="60s", on_timeout="approve")],
    ids=["delay", "approval"],
)
@pytest.mark.parametrize("join", ["any", "first"])
async def test_a_branch_whose_timer_fired_with_another_result_is_not_taken_for_asleep(
    join: str, wait: dict[str, Any]
) -> None:
    """'a2' completes and the wait in 'b' ends in one workflow task ('bnap' fires, or the approval
    'bok' times out with ``on_timeout: approve``): 'a' reaches its boundary while 'b' has not woken
    yet; 'b' must not count as asleep or waiting (else 'a' stops and 'b' wins the race 'a' wins
    without the switch; the approval's case found by a review)."""
    steps = [
        {
            "id": "par",
            "type": "parallel",
            "join": join,
            "branches": [
                {
                    "id": "a",
                    "steps": [
                        work("a1", 60, value="a1"),
                        work("a2", 60, value="a2"),
                        set_vars("a_done", {"won": "a"}),
                    ],
                },
                {"id": "b", "steps": [work("b0", 60, value="b0"), wait]},
            ],
        },
        work("tail", value="{{ steps.par.output.winner }}"),
    ]
    definition = make_definition(steps)
    straight, straight_rt = await _straight(definition, _runtime(together=True))
    rt = _runtime(together=True)
    chained, _, _ = await _chain(definition, rt, every=1)
    tails = [c.input for c in rt.calls if c.step_id == "tail"]
    assert tails == [c.input for c in straight_rt.calls if c.step_id == "tail"]
    assert tails[0]["value"] == "a"
    assert (chained.state, chained.output) == (straight.state, straight.output)


async def test_items_that_finish_while_the_others_stop_cannot_bring_the_carried_entry_past_its_budget() -> (
    None
):
    """Five items finish with 215 KB outputs while item 0 stands: the entry would pass 256 KiB,
    so the items go on instead of continuing as new (and the run fails as without the switch)."""
    body = [work("w1", "{{ 1 if index == 0 else 0 }}"), work("w2", "{{ 0 if index == 0 else 5 + index }}")]
    steps = [
        {"id": "each", "type": "foreach", "items": "range(6) | list", "concurrency": 6, "steps": body},
        work("tail", value="{{ steps.each.output | length }}"),
    ]
    definition = make_definition(steps)

    def runtime() -> FakeRuntime:
        rt = _runtime()
        base = rt.handlers["work"]

        async def big(call: Any, attempt: int) -> Any:
            out = await base(call, attempt)
            return "x" * 215_000 if call.step_id == "w2" else out

        rt.on("work", big)
        return rt

    straight, _ = await _straight(definition, runtime())
    rt = runtime()
    chained, _, snapshots = await _chain(definition, rt, every=11)
    assert all(len(json.dumps(s["kinds"].get(PARALLEL_KIND, {}))) <= 256 * 1024 for s in snapshots)
    assert (chained.state, chained.error_type) == (straight.state, straight.error_type)


async def test_a_carried_delay_with_a_naive_timestamp_is_refused() -> None:
    definition = make_definition(_delayed_loops())
    rt = _runtime()
    snapshot = None
    for _ in range(10):
        engine = _engine(definition, rt, snapshot, 2)
        await rt.run(engine.run())
        data = json.loads(json.dumps(engine.continuation().model_dump(mode="json")))
        branches = data["kinds"].get(PARALLEL_KIND, {}).get("branches", [])
        if any("delay" in b for b in branches):
            break
        snapshot = read_continuation(data)
    sleeping = next(b for b in data["kinds"][PARALLEL_KIND]["branches"] if "delay" in b)
    for key, value in (
        ("until", sleeping["delay"]["until"][:19]),
        ("since", "2024-01-01T09:00:00"),
        ("waited_s", -5),
    ):
        bad = json.loads(json.dumps(data))
        next(b for b in bad["kinds"][PARALLEL_KIND]["branches"] if "delay" in b)["delay"][key] = value
        with pytest.raises(ValueError, match=key):
            _engine(definition, rt, read_continuation(bad), every=100)


@pytest.mark.parametrize(
    "last",
    [
        delay("d", "0s"),
        delay("d", "1h", when="false"),
        delay("d", "{{ 0 }}s"),
        {"id": "d", "type": "delay", "until": "2020-01-01T00:00:00Z"},
    ],
    ids=["zero", "skipped", "templated-zero", "until-past"],
)
@pytest.mark.parametrize("concurrency", [1, 2])
async def test_an_item_that_began_the_stop_before_a_delay_that_does_not_sleep_does_not_hold_the_others(
    last: dict[str, Any], concurrency: int
) -> None:
    """The item that began the stop stands before its own ``delay`` (it would sleep there, carried)
    but the delay does not sleep (no length, skipped, in the past) and the item finishes: no item
    is left to stop, so the items not started go on instead of waiting for a stop that could never
    complete (found by an attacker's probe: the run waited for ever, with no timer)."""
    steps = [
        {
            "id": "each",
            "type": "foreach",
            "items": "range(4) | list",
            "concurrency": concurrency,
            "steps": [work("w", 1, value="{{ item }}"), last],
        },
        work("tail", value="done"),
    ]
    definition = make_definition(steps)
    straight, straight_rt = await _straight(definition)
    assert straight.state == RunState.COMPLETED
    rt = _runtime()
    chained, _, _ = await _chain(definition, rt, every=1)
    assert (chained.state, chained.output) == (straight.state, straight.output)
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)


async def test_a_drain_whose_running_items_all_finish_does_not_hold_the_next_item() -> None:
    """Item 0 begins the stop before its last step, a delay it sleeps in; item 1 then finishes
    (the same delay skipped for it), and item 0 wakes and finishes: the next item goes on."""
    body = [work("pre", "{{ [1, 300, 1][index] }}"), delay("nap", "1m", when="index == 0")]
    steps = _items(body, 3, 2)
    definition = make_definition(steps)
    straight, _ = await _straight(definition)
    assert straight.state == RunState.COMPLETED
    chained, _, _ = await _chain(definition, _runtime(), every=2)
    assert (chained.state, chained.output) == (straight.state, straight.output)


_HELD_BY_A_LONG_STEP = [
    work("pre", "{{ [1, 3600, 2, 1][index] }}"),
    delay("nap", "{{ ['1d', '1s', '1s', '1s'][index] }}"),
]
"""Item 0 sleeps a day, item 1 is in an hour-long step: no item stands while the others stop."""

_HELD_BY_A_NESTED_APPROVAL = [
    {
        "id": "route",
        "type": "condition",
        "if": "index == 1",
        "then": {"steps": [work("w", 10), approval("ok", ["alice"], timeout="1d", on_timeout="approve")]},
    },
    work("pre", "{{ [1, 1, 2, 1][index] }}"),
    delay("nap", "{{ ['1d', '1s', '1s', '1s'][index] }}"),
]
"""Item 1 waits for a person in an approval nested in its condition (not one of its own steps:
not carried), item 0 sleeps a day."""


@pytest.mark.parametrize(
    "body", [_HELD_BY_A_LONG_STEP, _HELD_BY_A_NESTED_APPROVAL], ids=["long-step", "nested-approval"]
)
async def test_an_item_at_the_gate_is_held_no_longer_than_the_drain_wait(body: list[dict[str, Any]]) -> None:
    """The item about to start while the others stop holds the stop's deadline itself when no
    stopped item does, and goes on once a step starts waiting for a person: within
    :data:`PARALLEL_DRAIN_WAIT_S` of when it would have started, not after the hour-long step or
    the day-long approval (found by a review)."""
    steps = _items(body, 4, 3)
    definition = make_definition(steps)
    straight, straight_rt = await _straight(definition)
    rt = _runtime()
    chained, _, _ = await _chain(definition, rt, every=3)
    assert chained.state == straight.state == RunState.COMPLETED
    before = {c.path: c.elapsed for c in straight_rt.calls}
    after = {c.path: c.elapsed for c in rt.calls}
    assert after["each[3].pre"] <= before["each[3].pre"] + PARALLEL_DRAIN_WAIT_S, (before, after)


def _big_outputs_runtime(size: int) -> FakeRuntime:
    """:func:`_runtime` whose ``work`` action returns ``size`` bytes for a step whose id ends in ``_big``."""
    rt = _runtime()
    base = rt.handlers["work"]

    async def big(call: Any, attempt: int) -> Any:
        out = await base(call, attempt)
        return "x" * size if call.step_id.endswith("_big") else out

    rt.on("work", big)
    return rt


async def test_the_carried_entry_counts_the_branches_last_outputs_against_its_budget() -> None:
    """Branches that sleep right after a 200 KB step carry it as their last output: the entry's
    budget counts those (the run does not continue inside the step rather than carry 800 KB, and
    completes as the uninterrupted run; found by a review and an attacker's probe, whose
    snapshot passed Temporal's 2 MiB payload limit and left the run's task failing)."""
    branches: list[dict[str, Any]] = [
        {
            "id": f"b{i}",
            "steps": [work(f"b{i}_big", 0), delay(f"nap{i}", "1h"), work(f"after{i}", 0, value="ok")],
        }
        for i in range(4)
    ]
    branches.append({"id": "loop", "steps": _looping("l", "a", 20, 1)})
    steps = [
        set_vars("init", {"a": 0}),
        {"id": "par", "type": "parallel", "branches": branches},
        work("tail"),
    ]
    definition = make_definition(steps)
    straight, straight_rt = await _straight(definition, _big_outputs_runtime(200_000))
    rt = _big_outputs_runtime(200_000)
    chained, _, snapshots = await _chain(definition, rt, every=6)
    assert snapshots  # it did continue as new, outside the step
    sizes = [len(json.dumps(s["kinds"][PARALLEL_KIND])) for s in snapshots if PARALLEL_KIND in s["kinds"]]
    assert all(size <= PARALLEL_CARRY_BUDGET for size in sizes), sizes
    assert (chained.state, chained.output) == (straight.state, straight.output)
    assert sorted(c.activity_id for c in rt.calls) == sorted(c.activity_id for c in straight_rt.calls)

    # Small outputs: the same branches are carried while they sleep.
    small_chain, _, small = await _chain(definition, _big_outputs_runtime(10), every=6)
    assert small_chain.state == RunState.COMPLETED
    assert any(PARALLEL_KIND in s["kinds"] for s in small)


def _batch_engine(
    definition: Definition,
    rt: FakeRuntime,
    batch: ForeachBatch,
    snapshot: Continuation | None,
    every: int | None,
) -> Engine:
    """An engine running a fanned-out foreach's child (its ``batch``), continuing as new as
    :func:`_engine` does (``every`` None: never)."""
    done = len(rt.calls)
    return Engine(
        definition,
        {},
        rt,
        RunInfo("wf-1/each/batch-0", f"run-{0 if snapshot is None else snapshot.generation}", rt.now()),
        continue_as_new=None if every is None else (lambda: len(rt.calls) - done >= every),
        resume=snapshot,
        batch=batch,
    )


async def test_a_foreach_nested_in_a_fanned_out_childs_body_does_not_take_over_its_stop() -> None:
    """A child's items run a foreach of their own: only the child's items stop for its
    continue-as-new (before, the nested foreach's items stopped alone and the child carried them
    as its slice, which the next run refused: the child failed; found by a review)."""
    body = [
        work("a", 1, value="a"),
        {
            "id": "inner",
            "type": "foreach",
            "items": "range(3) | list",
            "concurrency": 3,
            "steps": [work("x", 1, value="x"), work("y", 1, value="y")],
        },
        work("b", 5, value="{{ item }}"),
    ]
    definition = make_definition(
        [{"id": "each", "type": "foreach", "items": "range(2) | list", "concurrency": 2, "steps": body}]
    )
    batch = ForeachBatch(step_id="each", path="each", offset=0, items=[0, 1], concurrency=2)
    rt = _runtime()
    straight = await rt.run(_batch_engine(definition, rt, batch, None, None).run())
    assert straight.state == RunState.COMPLETED, straight.error
    straight_calls = sorted(c.activity_id for c in rt.calls)

    rt = _runtime()
    snapshot: Continuation | None = None
    snapshots: list[dict[str, Any]] = []
    for _ in range(20):
        engine = _batch_engine(definition, rt, batch, snapshot, 4)
        result = await rt.run(engine.run())
        if not engine.continuing:
            break
        data = json.loads(json.dumps(engine.continuation().model_dump(mode="json")))
        snapshots.append(data)
        snapshot = read_continuation(data)
    assert snapshots
    assert {s["kinds"][PARALLEL_KIND]["step"] for s in snapshots if PARALLEL_KIND in s["kinds"]} == {"each"}
    assert (result.state, result.output) == (straight.state, straight.output), result.error
    assert sorted(c.activity_id for c in rt.calls) == straight_calls


async def test_a_carried_items_own_results_are_checked() -> None:
    """A forged snapshot whose item results name no step of the body, or are not results, or with
    more items under way than the step runs at once: refused."""
    definition = make_definition(_foreach_loops())
    rt = _runtime()
    data = await _first_snapshot(definition, rt)
    index = next(
        i for i, x in enumerate(data["kinds"][PARALLEL_KIND]["lanes"]) if x is not None and "position" in x
    )
    _engine(definition, rt, read_continuation(data), every=100)  # as carried: accepted
    for results, message in (
        ({"nowhere": {}}, "'nowhere', not a step of the body"),
        ({"tick": 5}, "the result of 'tick' is malformed"),
        ({"tick": {"output": 5}}, "the result of 'tick' is malformed"),
        ([], "is malformed"),
    ):
        bad = json.loads(json.dumps(data))
        bad["kinds"][PARALLEL_KIND]["lanes"][index]["steps"] = results
        with pytest.raises(ValueError, match=message):
            _engine(definition, rt, read_continuation(bad), every=100)
    # More items under way than the step's concurrency (2): each would hold a place, so one could
    # never start and the stop never complete.
    bad = json.loads(json.dumps(data))
    lanes = bad["kinds"][PARALLEL_KIND]["lanes"]
    bad["kinds"][PARALLEL_KIND]["lanes"] = [lanes[index]] * 3 + lanes[3:]
    with pytest.raises(ValueError, match="3 carried items of 'each' under way, more than its concurrency"):
        _engine(definition, rt, read_continuation(bad), every=100)


@pytest.mark.parametrize("description", [2_000, 40_000])
async def test_carried_people_count_against_the_entry_budget(description: int) -> None:
    """Items waiting in human tasks (their rendered descriptions 2 KB or 40 KB each) beside an item
    that loops: the carried entry holds each pending view, and its 256 KiB budget counts them (with
    40 KB each the run does not continue inside the step; found by a review)."""
    body = [
        work("seed", 1, value=0),
        {"id": "pick", "type": "condition", "if": "index > 0", "then": {"goto": "call"}},
        work(
            "tick",
            2,
            value="{{ (steps.tick.output if steps.tick is defined else steps.seed.output) + 1 }}",
            max_visits=30,
        ),
        {
            "id": "more",
            "type": "condition",
            "if": "steps.tick.output < 20",
            "then": {"goto": "tick"},
            "max_visits": 30,
        },
        {
            "id": "call",
            "type": "human_task",
            "when": "index > 0",
            "title": "Call {{ item }}",
            "description": "x" * description,
            "assignee": "nurse",
            "due": "1h",
            "on_timeout": "continue",
        },
    ]
    definition = make_definition(_items(body, 9, 9))
    straight, _ = await _straight(definition)
    assert straight.state == RunState.COMPLETED, straight.error
    chained, _, snapshots = await _chain(definition, _runtime(), every=2)
    assert (chained.state, chained.output) == (straight.state, straight.output)
    sizes = [len(json.dumps(s["kinds"][PARALLEL_KIND])) for s in snapshots if PARALLEL_KIND in s["kinds"]]
    assert all(size <= PARALLEL_CARRY_BUDGET for size in sizes), sizes
    assert bool(_people(snapshots, "lanes")) == (description < 10_000)


@pytest.mark.parametrize(
    ("gate", "kind", "data"),
    [
        (approval("ok", ["alice"], timeout="1h", fields=["note"]), DecisionKind.APPROVE, {"note": "n"}),
        (
            {
                "id": "ok",
                "type": "human_task",
                "title": "t",
                "assignee": "alice",
                "due": "1h",
                "fields": [{"name": "score", "type": "number"}],
            },
            DecisionKind.COMPLETE,
            {"score": 3},
        ),
    ],
    ids=["approval", "human-task"],
)
async def test_a_carried_approval_or_task_with_a_form_is_read_back(
    gate: dict[str, Any], kind: DecisionKind, data: dict[str, Any]
) -> None:
    """A form's field types are read back from the carried view (before, the next run refused the
    snapshot and the run failed; found by an attacker's probe); a decision with form data taken at
    the switch reaches the next run."""
    definition = make_definition(_gate_and_loop(gate))
    rt = _runtime()
    first, _ = await _until_person(definition, rt)
    first.decide(kind, Decision(actor="alice", reason="r", data=data))
    data_json = json.loads(json.dumps(first.continuation().model_dump(mode="json")))
    second = _engine(definition, rt, read_continuation(data_json), every=100)
    result = await rt.run(second.run())
    assert result.state == RunState.COMPLETED, result.error
    ok = next(r for r in second.status().steps if r.id == "ok")
    assert ok.output["data"] == data


@pytest.mark.parametrize("join", ["any", "first"])
async def test_an_any_join_whose_branches_all_loop_switches_once_its_history_presses(join: str) -> None:
    """Left open by earlier sessions: in an ``any`` or ``first`` join a branch stops only when every
    other one sleeps or waits, so branches that all loop never let the run continue as new: the
    run went on in one run until the history guard failed it, though ``max_visits`` allowed the
    loops. Once the history has grown to twice what it was when a branch first could not stop
    (and 100 events more) the branches stop at boundaries as in an ``all`` join (patch
    ``continue-as-new-any-pressed``), and the same branch wins as in the uninterrupted run."""
    racing = [
        set_vars("init", {"a": 0, "b": 0}),
        {
            "id": "par",
            "type": "parallel",
            "join": join,
            "branches": [
                {"id": "quick", "steps": _looping("q", "a", 40, 1)},
                {"id": "slow", "steps": _looping("s", "b", 60, 7)},
            ],
        },
        work("tail", value="{{ steps.par.output }}"),
    ]
    definition = make_definition(racing, limits={"max_step_executions": 10_000})
    straight, _ = await _straight(definition)
    assert straight.state == RunState.COMPLETED

    rt = _runtime()
    rt.events_per_call = 10  # first held at 20 events (2 actions): pressed from 140 (14 actions)
    chained, engine, snapshots = await _chain(definition, rt, every=2)
    inside = [s for s in snapshots if PARALLEL_KIND in s["kinds"]]
    assert inside, "the run continued as new inside the join once pressed"
    assert chained.state == RunState.COMPLETED
    # The same branch wins with the same output; the loser, stopped with it, went further (its
    # counter in the run's vars): what depends on when branches run may differ, as in an all join.
    assert record_of(engine, "par") == record_of_result(straight, "par")
    assert record_of(engine, "tail") == record_of_result(straight, "tail")
    assert chained.output["q_total"] == straight.output["q_total"] == 40

    # Not pressed yet: no branch waits for another, as before.
    rt = _runtime()
    rt.events_per_call = 1  # first held at 2 events: pressed from 104, after the quick loop's end
    chained, _, snapshots = await _chain(definition, rt, every=2)
    assert not any(PARALLEL_KIND in s["kinds"] for s in snapshots)
    assert chained.output == straight.output

    # A run recorded before the patch (declined) went on in one run: it still does.
    rt = _runtime()
    rt.events_per_call = 10
    rt.declined.add("continue-as-new-any-pressed")
    chained, _, snapshots = await _chain(definition, rt, every=2)
    assert not any(PARALLEL_KIND in s["kinds"] for s in snapshots)
    assert chained.output == straight.output


def record_of(engine: Engine, step_id: str) -> Any:
    return next(r.output for r in engine.status().steps if r.id == step_id)


def record_of_result(result: RunResult, step_id: str) -> Any:
    return next(r.output for r in result.steps if r.id == step_id)


@pytest.mark.parametrize("join", ["any", "first"])
async def test_a_pressed_loop_racing_a_long_activity_holds_only_briefly_and_still_wins(join: str) -> None:
    """Found by a review: a loop stopped under pressure waited 60 s at each stop for a branch in an
    1,100 s activity (no switch could come of it), every 660 s, and lost the race it wins without
    the patch. A pressed stop waits at most 5 s (``PRESSED_DRAIN_WAIT_S``)."""
    racing = [
        set_vars("init", {"a": 0}),
        {
            "id": "par",
            "type": "parallel",
            "join": join,
            "branches": [
                {"id": "loop", "steps": _looping("l", "a", 1000, 1)},
                {"id": "long", "steps": [work("slow", 1100, value="slow"), set_vars("long_done", {"x": 1})]},
            ],
        },
    ]
    definition = make_definition(racing, limits={"max_step_executions": 10_000})
    straight, _ = await _straight(definition)
    rt = _runtime()
    rt.events_per_call = 10
    chained, engine, _ = await _chain(definition, rt, every=2)
    assert record_of_result(straight, "par")["winner"] == "loop"
    assert record_of(engine, "par") == record_of_result(straight, "par")
    assert chained.state == straight.state
