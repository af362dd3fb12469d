"""The ``wait_for_event`` step and ``cancel_on`` in the engine, on the fake runtime's virtual clock
(the fake's one mailbox stamps events with the virtual time, as the real mailbox stamps its own)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from interpreter.engine import Engine
from interpreter.events import Event
from interpreter.state import CancelRequest, RunState, StepStatus
from interpreter.validate import DefinitionError, load_definition
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import HOUR, new_engine, paths, rec, task

DAY = 24 * HOUR


def wait(step_id: str = "answer", **fields: Any) -> dict[str, Any]:
    step = {
        "id": step_id,
        "type": "wait_for_event",
        "event": "family.answered",
        "key": "{{ input.family_id }}",
        "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"], "required": True}],
        "timeout": "3d",
    }
    return {**step, **fields}


def event(event_id: str, key: str = "fam-1", tenant: str = "default", **data: Any) -> Event:
    return Event(id=event_id, type="family.answered", key=key, tenant=tenant, data=data or {"answer": "yes"})


def setup(steps: list[dict[str, Any]], **extra: Any) -> tuple[Engine, FakeRuntime]:
    engine, rt = new_engine(steps, run_input={"family_id": "fam-1"}, **extra)
    rt.engine = engine
    return engine, rt


async def test_an_event_published_while_waiting_resumes_the_step_with_its_data() -> None:
    engine, rt = setup([wait(), task("after")])
    rt.at(HOUR, lambda: rt.publish(event("e1")))
    result = await rt.run(engine.run())
    assert result.state == RunState.COMPLETED
    step = rec(result, "answer")
    assert step.status == StepStatus.COMPLETED
    assert step.duration_s == HOUR
    assert step.output["event_id"] == "e1"
    assert step.output["data"] == {"answer": "yes"}
    assert step.output["timed_out"] is False
    assert paths(rt) == ["after"]
    assert [s.path for s in rt.unsubscriptions] == ["answer"]


async def test_an_early_event_within_the_lookback_is_consumed_at_once() -> None:
    engine, rt = setup([task("before", "work", input={"seconds": 2 * HOUR}), wait(lookback="1d")])
    rt.handlers["work"] = lambda call, attempt: rt.elapse(2 * HOUR)
    rt.at(HOUR, lambda: rt.publish(event("early")))
    result = await rt.run(engine.run())
    assert result.state == RunState.COMPLETED
    assert rec(result, "answer").output["event_id"] == "early"
    assert rec(result, "answer").duration_s == 0.0


async def test_an_early_event_outside_the_lookback_is_not_consumed_and_the_wait_times_out() -> None:
    engine, rt = setup(
        [task("before", "work"), wait(lookback="30m", on_timeout="continue")],
    )
    rt.handlers["work"] = lambda call, attempt: rt.elapse(2 * HOUR)
    rt.at(HOUR, lambda: rt.publish(event("early")))
    result = await rt.run(engine.run())
    out = rec(result, "answer").output
    assert out["timed_out"] is True
    assert out["event_id"] is None
    assert rt.elapsed == 2 * HOUR + 3 * DAY


async def test_timeout_fail_fails_the_run_and_goto_jumps() -> None:
    engine, rt = setup([wait()])
    result = await rt.run(engine.run())
    assert (result.state, result.error_type) == (RunState.FAILED, "EventTimedOut")
    assert rt.elapsed == 3 * DAY
    engine, rt = setup([wait(on_timeout={"goto": "sms"}), task("skipped"), task("sms")])
    result = await rt.run(engine.run())
    assert result.state == RunState.COMPLETED
    assert paths(rt) == ["sms"]


async def test_an_event_id_is_consumed_once_even_when_looked_back_on_again() -> None:
    engine, rt = setup([wait("first", lookback="1d"), wait("second", lookback="1d", on_timeout="continue")])
    rt.at(HOUR, lambda: rt.publish(event("e1")))
    result = await rt.run(engine.run())
    assert rec(result, "first").output["event_id"] == "e1"
    assert rec(result, "second").output["timed_out"] is True  # e1 was in its lookback, and consumed


async def test_another_key_or_tenant_does_not_resume_the_wait_and_bad_data_is_refused() -> None:
    engine, rt = setup([wait()])
    rt.at(HOUR, lambda: rt.publish(event("other-key", key="fam-2")))
    rt.at(
        2 * HOUR,
        lambda: engine.deliver_event(event("x", tenant="acme").model_copy(update={"published_at": rt.now()})),
    )
    rt.at(3 * HOUR, lambda: rt.publish(event("bad", answer="maybe")))
    rt.at(4 * HOUR, lambda: rt.publish(event("undeclared", answer="yes", iban="X")))
    rt.at(5 * HOUR, lambda: rt.publish(event("good", answer="no")))
    result = await rt.run(engine.run())
    assert rec(result, "answer").output["event_id"] == "good"
    assert rec(result, "answer").duration_s == 5 * HOUR
    reasons = [m.reason for m in engine.status().refused_messages]
    assert "another tenant's" in reasons[0]
    assert "must be one of ['yes', 'no']" in reasons[1]
    assert "unknown event fields ['iban']" in reasons[2]


async def test_the_status_shows_the_wait() -> None:
    engine, rt = setup([wait()])
    seen: list[Any] = []
    rt.at(HOUR, lambda: seen.append(engine.status()))
    rt.at(2 * HOUR, lambda: rt.publish(event("e1")))
    await rt.run(engine.run())
    (pending,) = seen[0].waiting_events
    assert (pending.path, pending.event, pending.key) == ("answer", "family.answered", "fam-1")
    assert seen[0].current_steps == ["answer"]
    assert engine.status().waiting_events == []


async def test_cancel_on_cancels_the_run_with_its_compensations_and_names_the_event() -> None:
    compensated = task("charge", compensate=[task("refund")])
    engine, rt = setup(
        [compensated, wait()],
        cancel_on=[{"event": "family.withdrawn", "key": "{{ input.family_id }}"}],
    )
    main = rt.spawn(engine.run())

    def withdraw() -> None:
        request = rt.publish(
            Event(id="w1", type="family.withdrawn", key="fam-1", tenant="default", source="crm")
        )
        assert isinstance(request, CancelRequest)
        engine.cancel_request = request
        main.cancel()

    rt.at(HOUR, withdraw)
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert paths(rt) == ["charge", "compensate/charge/refund"]
    assert engine.status().cancelled_by is not None
    assert engine.status().cancelled_by.actor == "event:family.withdrawn:w1"
    assert [s.path for s in rt.unsubscriptions] == ["answer"]  # the cancelled wait unsubscribed


async def test_a_cancel_on_event_published_before_the_subscription_cancels_at_once() -> None:
    engine, rt = setup([task("a")], cancel_on=[{"event": "family.withdrawn", "key": "fam-1"}])
    rt.published.append(
        Event(id="w0", type="family.withdrawn", key="fam-1", tenant="default", published_at=rt.now())
    )
    result = await rt.run(engine.run())
    assert result.state == RunState.CANCELLED
    assert paths(rt) == []


def test_the_model_refuses_a_lookback_beyond_what_mailboxes_keep_and_bad_types() -> None:
    with pytest.raises(DefinitionError, match="lookback"):
        load_definition({"name": "x", "steps": [wait(lookback="8d")]})
    with pytest.raises(DefinitionError, match="event"):
        load_definition({"name": "x", "steps": [wait(event="bad type!")]})
    with pytest.raises(DefinitionError, match=r"on_timeout"):
        load_definition({"name": "x", "steps": [wait(on_timeout={"goto": "nowhere"})]})
    with pytest.raises((DefinitionError, pydantic.ValidationError)):
        load_definition({"name": "x", "steps": [wait()], "cancel_on": [{"event": "a"}]})


def test_a_cancel_on_key_may_not_use_steps_or_vars() -> None:
    for key in ("{{ steps.answer.output.key }}", "{{ vars.family }}"):
        with pytest.raises(DefinitionError, match=r"\$\.cancel_on\[0\]\.key.*rendered when the run starts"):
            load_definition({"name": "x", "steps": [wait()], "cancel_on": [{"event": "a.b", "key": key}]})
