"""Continue-as-new while a ``wait_for_event`` among a ``parallel`` branch's (a ``foreach`` item's)
own steps waits for its event (patch ``continue-as-new-lane-events``), driven by the fake runtime:
the other branches' loops continue as new, the wait travels in its branch's carried entry with its
key, window and deadline, keeps its subscription, and the chain ends as an uninterrupted run would."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interpreter.continuation import Continuation, read_continuation
from interpreter.engine import PARALLEL_KIND, Engine, RunInfo
from interpreter.events import Event
from interpreter.model import Definition
from interpreter.state import RunResult, RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_continuation_parallel import (
    _cancelled_on_resume,
    _carried,
    _engine,
    _gate_and_loop,
    _looping,
    _snapshot,
    _ticking_items,
    _until_carried,
)
from tests.interpreter.test_engine import make_definition, new_runtime, set_vars, work


def _listen(timeout: str = "1h", key: str = "fam-1") -> dict[str, Any]:
    return {
        "id": "answer",
        "type": "wait_for_event",
        "event": "family.answered",
        "key": key,
        "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"], "required": True}],
        "timeout": timeout,
        "on_timeout": "continue",
    }


def _loop_and_listen(timeout: str = "1h") -> list[dict[str, Any]]:
    """A loop in one branch, a wait for an event in the other ('after': ``<event id>:<timed out>``)."""
    return _gate_and_loop(
        _listen(timeout), after="{{ steps.par.output.gate.event_id }}:{{ steps.par.output.gate.timed_out }}"
    )


def _answer(event_id: str, key: str = "fam-1", answer: str = "yes", tenant: str = "default") -> Event:
    return Event(id=event_id, type="family.answered", key=key, tenant=tenant, data={"answer": answer})


async def _chain(
    definition: Definition, rt: FakeRuntime, every: int = 2
) -> tuple[RunResult, Engine, list[dict[str, Any]]]:
    """Runs the chain to its end; returns the result, the last engine and each snapshot (as JSON)."""
    snapshot: Continuation | None = None
    snapshots: list[dict[str, Any]] = []
    for _ in range(40):
        engine = _engine(definition, rt, snapshot, every)
        result = await rt.run(engine.run())
        if not engine.continuing:
            return result, engine, snapshots
        data = _snapshot(engine)
        snapshots.append(data)
        snapshot = read_continuation(data)
    raise AssertionError("the chain did not end")


def _straight(definition: Definition, rt: FakeRuntime) -> Engine:
    engine = Engine(definition, {}, rt, RunInfo("wf-1", "run-0", rt.now()))
    rt.engine = engine
    return engine


def _after(result: RunResult) -> Any:
    """What the step after the parallel step saw of the wait: ``<event id>:<timed out>``."""
    return next(r.output for r in result.steps if r.id == "after")


def _waits(snapshots: list[dict[str, Any]], key: str = "branches") -> list[dict[str, Any]]:
    """The event waits the snapshots carry in branches (``key``: items, ``lanes``)."""
    return _carried(snapshots, "event", key)


async def test_an_event_wait_in_a_branch_is_carried_and_takes_an_event_published_in_a_later_run() -> None:
    """The wait subscribes, the other branch loops: the run continues as new inside the parallel
    step carrying the wait (key, window, deadline) while no event came; the event published later
    completes it in a later run, every action at the virtual time of the uninterrupted run."""
    definition = make_definition(_loop_and_listen())
    straight_rt = new_runtime()
    straight_rt.at(7, lambda: straight_rt.publish(_answer("e-1")))
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert (straight.state, _after(straight)) == (RunState.COMPLETED, "e-1:False")

    rt = new_runtime()
    rt.at(7, lambda: rt.publish(_answer("e-1")))
    result, engine, snapshots = await _chain(definition, rt)
    waits = _waits(snapshots)
    assert waits, snapshots  # switches happened while the wait waited
    assert {(w["position"], w["view"]["path"], w["view"]["key"], w["event"]) for w in waits} == {
        (1, "answer", "fam-1", None)
    }
    assert len({(w["view"]["since"], w["view"]["deadline"], w["since"]) for w in waits}) == 1
    assert (result.state, _after(result)) == (RunState.COMPLETED, "e-1:False")
    assert sorted((c.activity_id, c.elapsed) for c in rt.calls) == sorted(
        (c.activity_id, c.elapsed) for c in straight_rt.calls
    )
    # Subscribed again in every run it waited in, under one name; unsubscribed once, at its end.
    assert {s.path for s in rt.subscriptions} == set()
    assert [s.path for s in rt.unsubscriptions] == ["answer"]
    answer = [r for r in engine.status().steps if r.id == "answer"]
    assert [(r.status, r.output["event_id"]) for r in answer] == [(StepStatus.COMPLETED, "e-1")]


async def test_an_event_wait_in_a_branch_times_out_when_it_would_have() -> None:
    definition = make_definition(_loop_and_listen(timeout="30s"))
    straight_rt = new_runtime()
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert _after(straight) == "None:True"

    rt = new_runtime()
    result, _, snapshots = await _chain(definition, rt)
    assert _waits(snapshots)
    assert _after(result) == "None:True"
    assert sorted((c.activity_id, c.elapsed) for c in rt.calls) == sorted(
        (c.activity_id, c.elapsed) for c in straight_rt.calls
    )
    after = next(c for c in rt.calls if c.step_id == "after")
    assert after.elapsed == 31  # 'ask' took 1 s, then the 30 s timeout: not restarted by a switch


async def _until_wait(definition: Definition, rt: FakeRuntime) -> tuple[Engine, dict[str, Any]]:
    """:func:`_until_carried` a branch waiting for its event."""
    return await _until_carried(definition, rt, "event")


async def test_an_event_signalled_while_the_branches_switch_travels_with_the_wait() -> None:
    definition = make_definition(_loop_and_listen())
    rt = new_runtime()
    first, _ = await _until_wait(definition, rt)
    # The branches stopped; the host lets the handlers finish: the wait still takes the event.
    [waiting] = first.status().waiting_events
    assert waiting.path == "answer"
    assert [s.path for s in rt.subscriptions] == ["answer"]  # kept for the next run
    rt.publish(_answer("e-switch"))
    data = _snapshot(first)
    [carried] = _waits([data])
    assert carried["event"]["id"] == "e-switch"

    second = _engine(definition, rt, read_continuation(data), every=100)
    result = await rt.run(second.run())
    assert (result.state, _after(result)) == (RunState.COMPLETED, "e-switch:False")
    after = next(c for c in rt.calls if c.step_id == "after")
    assert after.elapsed < 60  # taken at the switch: not waited for until the deadline
    assert [s.path for s in rt.unsubscriptions] == ["answer"]


async def test_an_event_published_while_no_run_listens_is_taken_by_the_next_run() -> None:
    definition = make_definition(_loop_and_listen())
    rt = new_runtime()
    first, data = await _until_wait(definition, rt)
    started = first.status().waiting_events[0]
    rt.engine = None  # between the runs: nobody is signalled
    rt.publish(_answer("e-gap"))
    second = _engine(definition, rt, read_continuation(data), every=100)
    # Waiting from the first moment, with the same window and deadline.
    [resumed] = second.status().waiting_events
    assert (resumed.path, resumed.since, resumed.deadline) == ("answer", started.since, started.deadline)
    result = await rt.run(second.run())
    assert _after(result) == "e-gap:False"


async def test_event_waits_in_foreach_items_are_carried_each_with_its_key() -> None:
    """Each item waits for its own key after a loop of its own length: items' waits travel while
    the others loop; an event for item 1 completes it, the others time out."""
    steps = [
        _ticking_items(
            _listen(timeout="1m", key="fam-{{ item }}"), "{{ item }}:{{ steps.answer.output.event_id }}"
        )
    ]
    definition = make_definition(steps)
    rt = new_runtime()
    rt.at(16, lambda: rt.publish(_answer("e-1", key="fam-1")))
    result, engine, snapshots = await _chain(definition, rt)
    waits = _waits(snapshots, "lanes")
    assert waits, snapshots
    # Item 0 waits from 3 s on, item 1 from 9 s on: both travelled, each with its own key.
    assert {(w["view"]["path"], w["view"]["key"]) for w in waits} == {
        ("each[0].answer", "fam-0"),
        ("each[1].answer", "fam-1"),
    }
    assert result.state == RunState.COMPLETED
    each = next(r for r in engine.status().steps if r.id == "each")
    assert each.output == ["0:None", "1:e-1", "2:None"]
    assert sorted(s.path for s in rt.unsubscriptions) == [f"each[{i}].answer" for i in range(3)]


def _forge(data: dict[str, Any], change: Any) -> dict[str, Any]:
    forged = json.loads(json.dumps(data))
    [lane] = [b for b in forged["kinds"][PARALLEL_KIND]["branches"] if "event" in b]
    change(lane)
    return forged


async def test_a_carried_event_wait_in_a_branch_is_checked() -> None:
    """A forged or stale snapshot: a wait carried at another position, under another path, for
    another event type, beside a delay, with a deadline or window that are not the step's, or with
    an event another tenant published, that the chain never consumed, or whose data the step
    refuses: refused."""
    definition = make_definition(_loop_and_listen())
    rt = new_runtime()
    first, data = await _until_wait(definition, rt)
    rt.publish(_answer("e-ok"))
    taken = _snapshot(first)
    read_continuation(taken)  # (as it is, it reads)

    def event(lane: dict[str, Any], **fields: Any) -> None:
        lane["event"]["event"] = {**_answer("e-x").model_dump(mode="json"), **fields}

    forgeries: list[tuple[dict[str, Any], str]] = [
        (_forge(data, lambda lane: lane["event"].update(position=0)), "is not step 1 of it"),
        (_forge(data, lambda lane: lane["event"]["view"].update(path="other")), "is not step 1 of it"),
        (_forge(data, lambda lane: lane["event"]["view"].update(event="x.y")), "is not step 1 of it"),
        (_forge(data, lambda lane: lane["event"]["view"].update(step_id="ask")), "is not step 1 of it"),
        (_forge(data, lambda lane: lane.update(position=0)), "is not step 0 of it"),
        (
            _forge(data, lambda lane: lane.update(delay={"position": 1, "path": "answer", "until": "x"})),
            "waits in one step at most",
        ),
        (
            _forge(data, lambda lane: lane["event"]["view"].update(deadline="2030-01-01T00:00:00Z")),
            "does not fit step 'answer'",
        ),
        (_forge(data, lambda lane: lane["event"].update(since="2023-01-01T00:00:00Z")), "does not fit step"),
        (_forge(taken, lambda lane: event(lane, tenant="other")), "does not fit step 'answer'"),
        (_forge(taken, event), "does not fit step 'answer'"),  # never consumed
        (
            _forge(taken, lambda lane: lane["event"]["event"]["data"].update(answer="maybe")),
            "does not fit step 'answer'",
        ),
    ]
    for forged, problem in forgeries:
        with pytest.raises(ValueError, match=problem):
            _engine(definition, rt, read_continuation(forged), every=100)


async def test_a_run_cancelled_before_it_went_back_into_the_branch_ends_the_wait() -> None:
    definition = make_definition(_loop_and_listen())
    rt = new_runtime()
    _, data = await _until_wait(definition, rt)
    second = await _cancelled_on_resume(definition, rt, data)
    assert second.status().waiting_events == []
    answer = [r for r in second.status().steps if r.id == "answer"]
    assert [r.status for r in answer] == [StepStatus.CANCELLED]
    assert [s.path for s in rt.unsubscriptions] == ["answer"]  # the mailbox stops signalling it


def _held_listener(loop_seconds: float, listen: dict[str, Any]) -> list[dict[str, Any]]:
    """A loop of long actions in one branch; 'ask' then ``listen`` in the other."""
    return [
        set_vars("init", {"a": 0}),
        {
            "id": "par",
            "type": "parallel",
            "branches": [
                {"id": "loop", "steps": _looping("l", "a", 2, loop_seconds)},
                {"id": "listen", "steps": [work("ask", 1, value="asked"), listen]},
            ],
        },
        work("after", value="{{ steps.par.output.listen.event_id }}:{{ steps.par.output.listen.timed_out }}"),
    ]


@pytest.mark.parametrize("timeout", [None, "1h"])
async def test_a_branch_about_to_wait_for_an_event_goes_into_the_wait_instead_of_standing(
    timeout: str | None,
) -> None:
    """The other branch is in a 50 s action when the host asks; the listening branch, done with
    'ask', goes into its wait (subscribing) as it would into a delay, instead of standing before it
    until the switch: the callback published 2 s later (the wait has no lookback) is taken as in the
    uninterrupted run. Held before it (found by an attacker's probe), the wait began at 50 s and
    missed it: without a timeout the run waited for ever, with one it timed out."""
    listen = (
        _listen() if timeout else {k: v for k, v in _listen().items() if k not in ("timeout", "on_timeout")}
    )
    definition = make_definition(_held_listener(50, listen))
    straight_rt = new_runtime()
    straight_rt.at(3, lambda: straight_rt.publish(_answer("e-cb")))
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert (straight.state, _after(straight)) == (RunState.COMPLETED, "e-cb:False")

    rt = new_runtime()
    rt.at(3, lambda: rt.publish(_answer("e-cb")))
    result, _, snapshots = await _chain(definition, rt)
    assert snapshots
    assert (result.state, _after(result)) == (RunState.COMPLETED, "e-cb:False")
    assert sorted((c.activity_id, c.elapsed) for c in rt.calls) == sorted(
        (c.activity_id, c.elapsed) for c in straight_rt.calls
    )


async def test_one_event_carried_for_two_items_is_refused() -> None:
    """Items waiting for the same type and key: an event taken during the switch by one of them,
    forged into another's carried wait too, would be taken twice: refused (found by an attacker's
    probe)."""
    definition = make_definition(
        [
            {
                "id": "each",
                "type": "foreach",
                "items": "range(3) | list",
                "concurrency": 3,
                "output": "{{ item }}:{{ steps.answer.output.event_id }}",
                "steps": [work("seed", 1, value=0), work("tick", 1, value=1), _listen(timeout="1m")],
            },
        ]
    )
    rt = new_runtime()
    engine, _ = await _until_carried(definition, rt, "event", "lanes", every=1, count=2)
    rt.publish(_answer("e-x"))  # during the switch: one item takes it
    data = _snapshot(engine)
    carrying = [lane for lane in data["kinds"][PARALLEL_KIND]["lanes"] if lane and "event" in lane]
    [taken] = [lane for lane in carrying if lane["event"]["event"] is not None]
    other = next(lane for lane in carrying if lane["event"]["event"] is None)
    read_continuation(data)  # as it is, it reads
    other["event"]["event"] = taken["event"]["event"]
    with pytest.raises(ValueError, match="'e-x' is carried for another wait too"):
        _engine(definition, rt, read_continuation(data), every=100)


def _two_waits_same_key() -> list[dict[str, Any]]:
    """Two branches wait for the same type and key: 'early' from 1 s on, 'late' from 5 s on; the
    branch listed first in the definition is 'late'."""
    return [
        set_vars("init", {"a": 0}),
        {
            "id": "par",
            "type": "parallel",
            "branches": [
                {"id": "loop", "steps": _looping("l", "a", 12, 1)},
                {"id": "late", "steps": [work("late_work", 5), {**_listen("30s"), "id": "late_answer"}]},
                {"id": "early", "steps": [work("early_work", 1), {**_listen("30s"), "id": "early_answer"}]},
            ],
        },
        work(
            "after",
            value="early={{ steps.par.output.early.event_id }} late={{ steps.par.output.late.event_id }}",
        ),
    ]


async def test_the_wait_that_began_first_takes_the_event_after_a_switch_too() -> None:
    """The first matching wait takes an event: uninterrupted, the one that began first ('early');
    carried, the waits keep that order (before, they were restored in branch order and 'late'
    took it: found by a review)."""
    definition = make_definition(_two_waits_same_key())
    straight_rt = new_runtime()
    straight_rt.at(9, lambda: straight_rt.publish(_answer("e-1")))
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert _after(straight) == "early=e-1 late=None"

    rt = new_runtime()
    rt.at(9, lambda: rt.publish(_answer("e-1")))
    result, _, snapshots = await _chain(definition, rt)
    carried = {w["view"]["path"]: w["rank"] for w in _waits(snapshots)}
    assert carried.keys() == {"early_answer", "late_answer"}
    assert carried["early_answer"] < carried["late_answer"]
    assert (result.state, _after(result)) == (RunState.COMPLETED, "early=e-1 late=None")


async def test_a_wait_whose_deadline_passed_between_the_runs_times_out_rather_than_take_a_later_event() -> (
    None
):
    definition = make_definition(_loop_and_listen())
    rt = new_runtime()
    first, data = await _until_wait(definition, rt)
    [started] = first.status().waiting_events
    rt.engine = None
    await rt.run(rt.elapse(2 * 3600))  # no run's task for two hours: the deadline passes meanwhile
    assert started.deadline is not None
    assert rt.now() > started.deadline
    rt.publish(_answer("e-late"))
    second = _engine(definition, rt, read_continuation(data), every=100)
    result = await rt.run(second.run())
    assert _after(result) == "None:True"  # as the uninterrupted run, which timed out at the deadline


async def test_a_run_that_cannot_continue_as_new_after_all_ends_the_kept_subscription() -> None:
    """The branches stopped with the wait carried (its subscription kept for the next run); the host
    then finds the next run's input too large and fails the run: the mailbox is told to forget the
    wait (found by a review)."""
    definition = make_definition(_loop_and_listen())
    rt = new_runtime()
    first, _ = await _until_wait(definition, rt)
    assert [s.path for s in rt.subscriptions] == ["answer"]
    await rt.run(
        first.abandon_continuation("the run cannot continue as new: too large", "ContinueAsNewTooLarge")
    )
    assert rt.subscriptions == []
    assert [s.path for s in rt.unsubscriptions] == ["answer"]
    assert first.status().waiting_events == []
