"""Continue-as-new under attack, on the fake runtime: a continued run cancelled before it went
back into the wait it carries ends that wait (no longer pending, subscription ended, record
cancelled); a resumed event wait whose new subscription fails still ends the old one; and a
forged or inconsistent snapshot (another tenant's event, a decision the step does not take, a
wait at another path or position, two waits at once) is refused in words."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interpreter.continuation import Continuation, read_continuation
from interpreter.engine import ActionFailedError, Engine, RunInfo
from interpreter.events import Event, EventSubscription
from interpreter.state import CancelRequest, Decision, DecisionKind, RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_continuation import (
    _continued_at_gate,
    _engine,
    _event_engine,
    _event_steps,
    _first_event_run,
    _task_steps,
)
from tests.interpreter.test_engine import make_definition, new_runtime


def _through_json(snapshot: Continuation) -> Continuation:
    return read_continuation(json.loads(json.dumps(snapshot.model_dump(mode="json"))))


async def _cancel_before_first_step(rt: FakeRuntime, engine: Engine) -> Any:
    """As the host does for a cancel signal in the new run's first task: steps are held, then
    Temporal's cancellation lands."""
    engine.hold_steps = True
    engine.cancel_request = CancelRequest(actor="alice", reason="at the switch")
    main = rt.spawn(engine.run())
    rt.at(rt.elapsed + 5, main.cancel)
    return await rt.run(main)


async def test_a_carried_event_wait_cancelled_before_it_resumed_ends_its_subscription() -> None:
    rt = new_runtime()
    _, snapshot = await _first_event_run(rt)
    second = _event_engine(rt, _through_json(snapshot), continue_at=None)
    result = await _cancel_before_first_step(rt, second)
    assert result.state == RunState.CANCELLED
    assert [s.path for s in rt.unsubscriptions] == ["answer"]
    assert second.status().waiting_events == []
    assert [r.status for r in result.steps if r.id == "answer"] == [StepStatus.CANCELLED]


async def test_a_carried_human_task_cancelled_before_it_resumed_is_no_longer_pending() -> None:
    definition = make_definition(_task_steps())
    rt = new_runtime()
    first = _engine(definition, rt, None, every=2)
    await rt.run(first.run())
    assert first.continuing
    second = _engine(definition, rt, _through_json(first.continuation()), every=100)
    result = await _cancel_before_first_step(rt, second)
    assert result.state == RunState.CANCELLED
    assert (second.awaiting_approval, second.assignees(), second.status().pending_approvals) == (
        False,
        [],
        [],
    )
    assert [r.status for r in result.steps if r.id == "call"] == [StepStatus.CANCELLED]


async def test_a_carried_approval_cancelled_before_it_resumed_is_no_longer_pending() -> None:
    rt = new_runtime()
    definition, first = await _continued_at_gate(rt)
    second = _engine(definition, rt, _through_json(first.continuation()), every=100)
    result = await _cancel_before_first_step(rt, second)
    assert result.state == RunState.CANCELLED
    assert (second.awaiting_approval, second.status().pending_approvals) == (False, [])


async def test_a_resumed_event_wait_whose_new_subscription_fails_ends_the_old_one() -> None:
    rt = new_runtime()
    _, snapshot = await _first_event_run(rt)

    async def refuse(subscription: EventSubscription) -> Any:
        raise ActionFailedError("mailbox unavailable", "TimeoutError", 3)

    rt.subscribe_events = refuse  # type: ignore[method-assign]
    second = _event_engine(rt, _through_json(snapshot), continue_at=None)
    result = await rt.run(second.run())
    assert result.error_type == "EventSubscribeFailed"
    assert [s.path for s in rt.unsubscriptions] == ["answer"]


async def test_a_forged_carried_event_is_refused() -> None:
    rt = new_runtime()
    _, snapshot = await _first_event_run(rt)
    data = snapshot.model_dump(mode="json")
    data["kinds"]["wait_for_event"]["event"] = {
        "id": "forged",
        "type": "other.type",
        "key": "someone-else",
        "tenant": "other-tenant",
        "data": {"answer": "not-an-enum-value", "extra": 1},
    }
    with pytest.raises(ValueError, match="carried event wait 'answer' does not fit step 'answer'"):
        _event_engine(rt, read_continuation(data), continue_at=None)
    # Even of the right type, key and tenant: an event this chain never consumed.
    data["kinds"]["wait_for_event"]["event"] = {
        "id": "never-consumed",
        "type": "family.answered",
        "key": "fam-1",
        "tenant": "default",
        "data": {"answer": "yes"},
    }
    with pytest.raises(ValueError, match="does not fit"):
        _event_engine(rt, read_continuation(data), continue_at=None)


async def test_a_carried_event_wait_with_an_empty_key_is_refused_when_the_run_starts() -> None:
    """Forged: the carried wait's key is empty. Before, the snapshot was taken and the run raised a
    ValidationError making the wait's subscription (a workflow task failing for ever, found by an
    attacker's probe); now it does not fit its step."""
    rt = new_runtime()
    _, snapshot = await _first_event_run(rt)
    data = snapshot.model_dump(mode="json")
    data["kinds"]["wait_for_event"]["view"]["key"] = ""
    with pytest.raises(ValueError, match="carried event wait 'answer' does not fit step 'answer'"):
        _event_engine(rt, read_continuation(data), continue_at=None)


async def test_an_event_published_at_a_time_without_an_offset_is_refused_not_raised() -> None:
    """Forged (a mailbox stamps UTC): an event signalled with a naive ``published_at`` while the
    wait waits. Before, comparing it with the wait's window raised a TypeError in the signal
    handler (a workflow task failing for ever, found by an attacker's probe); now it is refused
    in words, and the wait takes the next, proper event."""
    rt = new_runtime()
    engine = _event_engine(rt, None, continue_at=None)
    running = rt.spawn(engine.run())
    await rt.run_until(lambda: bool(engine.status().waiting_events))
    naive = Event(
        id="naive",
        type="family.answered",
        key="fam-1",
        tenant="default",
        data={"answer": "yes"},
        published_at=rt.now().replace(tzinfo=None),
    )
    assert engine.deliver_event(naive) is None
    [refused] = engine.status().refused_messages
    assert refused.reason == "event 'naive': its published_at has no UTC offset"
    proper = naive.model_copy(update={"id": "proper", "published_at": rt.now()})
    assert engine.deliver_event(proper) is None
    result = await rt.run(running)
    assert result.state == RunState.COMPLETED
    assert next(r.output for r in result.steps if r.id == "after") == "proper:False"


async def test_a_forged_task_completion_is_refused() -> None:
    definition = make_definition(_task_steps())
    rt = new_runtime()
    first = _engine(definition, rt, None, every=2)
    await rt.run(first.run())
    data = first.continuation().model_dump(mode="json")
    data["kinds"]["human_task"]["decided"] = "approve"
    data["kinds"]["human_task"]["decision"] = {"actor": "mallory", "data": {}}
    with pytest.raises(ValueError, match="carried task 'call': a 'approve' decision is not one it takes"):
        _engine(definition, rt, read_continuation(data), every=100)
    # The right kind and form, by someone the task is not for.
    data["kinds"]["human_task"]["decided"] = "complete"
    data["kinds"]["human_task"]["decision"] = {"actor": "mallory", "data": {"reached": True}}
    with pytest.raises(ValueError, match="carried task 'call': 'mallory' may not decide it"):
        _engine(definition, rt, read_continuation(data), every=100)
    # ... nor made one by adding them to the carried approvers.
    data["kinds"]["human_task"]["view"]["approvers"].append("mallory")
    with pytest.raises(ValueError, match="carried task 'call': its approvers are not the step's"):
        _engine(definition, rt, read_continuation(data), every=100)


async def test_a_carried_wait_at_another_path_or_position_or_beside_another_is_refused() -> None:
    rt = new_runtime()
    _, snapshot = await _first_event_run(rt)
    data = snapshot.model_dump(mode="json")
    phantom = json.loads(json.dumps(data))
    phantom["kinds"]["wait_for_event"]["view"]["path"] = "phantom"
    with pytest.raises(ValueError, match="carried event wait 'phantom' does not fit"):
        _event_engine(rt, read_continuation(phantom), continue_at=None)
    elsewhere = json.loads(json.dumps(data))
    elsewhere["position"] = 0
    with pytest.raises(ValueError, match="the carried wait_for_event is at step 1, the run goes on at 0"):
        _event_engine(rt, read_continuation(elsewhere), continue_at=None)
    # Two waits at once (each fitting its step): no run stops in two places.
    two = json.loads(json.dumps(data))
    two["kinds"]["delay"] = {
        "position": 2,
        "path": "nap",
        "since": data["started_at"],
        "until": data["started_at"],
        "waited_s": 0,
    }
    steps = _event_steps()
    steps[2] = {"id": "nap", "type": "delay", "duration": "1h"}
    with pytest.raises(ValueError, match="a snapshot carries one wait at most, not wait_for_event, delay"):
        Engine(
            make_definition(steps),
            {"family_id": "fam-1"},
            rt,
            RunInfo("wf-1", "run-1", rt.now()),
            continue_as_new=lambda: False,
            resume=read_continuation(two),
        )


async def test_a_snapshot_with_an_empty_kind_or_a_position_out_of_range_is_refused_in_words() -> None:
    rt = new_runtime()
    _, snapshot = await _first_event_run(rt)
    data = snapshot.model_dump(mode="json")
    empty = json.loads(json.dumps(data))
    empty["kinds"]["delay"] = None  # present but empty: not a second wait
    second = _event_engine(rt, read_continuation(empty), continue_at=None)
    assert [w.path for w in second.status().waiting_events] == ["answer"]
    for position in (-1, 3):
        out = json.loads(json.dumps(data))
        out["position"] = position
        out["kinds"]["wait_for_event"]["position"] = position
        with pytest.raises(ValueError, match=r"greater than or equal to 0|the definition has 3"):
            _event_engine(rt, read_continuation(out), continue_at=None)


async def test_a_resumed_approval_does_not_continue_again_while_the_host_asks_from_its_start() -> None:
    rt = new_runtime()
    definition, first = await _continued_at_gate(rt)
    # A host that asks from the next run's very start (a budget smaller than what the run spends
    # to reach the wait): the approval waits on instead of continuing again at once.
    second = Engine(
        definition,
        {},
        rt,
        RunInfo("wf-1", "run-2", rt.now()),
        continue_as_new=lambda: True,
        resume=_through_json(first.continuation()),
    )
    rt.at(rt.elapsed + 60, lambda: second.decide(DecisionKind.APPROVE, Decision(actor="alice")))
    result = await rt.run(second.run())
    assert not second.continuing
    assert result.state == RunState.COMPLETED


def test_carried_times_are_held_to_the_calendar_where_deadlines_are_computed_from_them() -> None:
    """A forged ``since`` at the calendar's end overflowed the deadline arithmetic (the task failed
    for ever); a delay's ``until`` of year 9999 is an author's "never" and still carries."""
    from datetime import UTC, datetime

    from interpreter.continuation import CarriedDelay, aware

    now = datetime(2026, 12, 4, tzinfo=UTC)
    never = datetime(9999, 12, 31, tzinfo=UTC)
    assert aware(CarriedDelay(position=0, path="wait", since=now, until=never, waited_s=1.0)).until == never
    with pytest.raises(
        ValueError, match=r"CarriedDelay.since \(9999-12-31T00:00:00\+00:00\) is outside the years"
    ):
        aware(CarriedDelay(position=0, path="wait", since=never, until=never, waited_s=1.0))
