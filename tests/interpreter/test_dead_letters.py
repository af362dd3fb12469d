"""Dead letters in the engine: a step that exhausted its retries parks the run until an operator
redrives it, skips it or aborts the run, or its park timeout decides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from interpreter.engine import ActionCall, DeadLetterError, Engine
from interpreter.state import (
    CancelRequest,
    DeadLetterAction,
    DeadLetterDecision,
    DeadLetterRecord,
    RunState,
    StepStatus,
)
from tests.interpreter.fake_runtime import ActionError, FakeRuntime
from tests.interpreter.test_engine import new_engine, paths, rec, task

DAY = 86400.0


def charge_needs_card(call: ActionCall, attempt: int) -> Any:
    """``charge`` fails unless its input carries a card."""
    del attempt
    if "card" not in call.request.input:
        raise ActionError("card missing", "CardMissing")
    return {"charged": call.request.input["card"]}


def parked_flow(**task_fields: Any) -> list[dict[str, Any]]:
    return [
        task("reserve", "reserve", compensate=[task("release", "release")]),
        task(
            "charge",
            "charge",
            input={"amount": 5},
            retry={"maximum_attempts": 2, "preset": "constant", "initial_interval": "10s"},
            on_failure="dead_letter",
            **task_fields,
        ),
        task("ship", "crm", input={"charge": "{{ steps.charge.output }}"}),
    ]


def runtime() -> FakeRuntime:
    rt = FakeRuntime()
    rt.returning("reserve", "R1")
    rt.returning("release", "released")
    rt.returning("crm", "shipped")
    rt.on("charge", charge_needs_card)
    return rt


def decide(rt: FakeRuntime, engine: Engine, at: float, **decision: Any) -> None:
    rt.at(at, lambda: engine.resolve(DeadLetterDecision(**decision)))


async def test_a_parked_step_is_recorded_and_the_run_waits_as_parked() -> None:
    engine, rt = new_engine(parked_flow(), runtime())
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.state == RunState.PARKED)
    status = engine.status()
    assert [p.park_id for p in status.parked] == ["charge"]
    parked = status.parked[0]
    assert (parked.error_type, parked.attempts, parked.input, parked.dead_letter_id) == (
        "CardMissing",
        2,
        {"amount": 5},
        1,
    )
    assert parked.deadline is not None
    assert (parked.deadline - parked.parked_at).total_seconds() == 7 * DAY
    assert [(d.park_id, d.step_id, d.error, d.attempts) for d in rt.dead_letters] == [
        ("charge", "charge", "card missing", 2)
    ]
    main.cancel()
    await rt.run(main)


async def test_redrive_with_corrected_input_runs_the_step_again_with_a_new_key() -> None:
    engine, rt = new_engine(parked_flow(), runtime())
    main = rt.spawn(engine.run())
    decide(rt, engine, 3600, action="redrive", actor="ops", input={"amount": 5, "card": "visa"})
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    charges = [c for c in rt.calls if c.path == "charge"]
    assert [(c.attempt, c.outcome) for c in charges] == [(1, "CardMissing"), (2, "CardMissing"), (1, "ok")]
    assert charges[2].input == {"amount": 5, "card": "visa"}
    assert charges[2].idempotency_key == charges[0].idempotency_key + "~r1"
    assert charges[2].activity_id == "charge~r1"
    assert rec(result, "ship").status == StepStatus.COMPLETED
    assert [c.input for c in rt.calls if c.path == "ship"] == [{"charge": {"charged": "visa"}}]
    assert [(r.action, r.actor, r.dead_letter_id) for r in rt.resolutions] == [
        (DeadLetterAction.REDRIVE, "ops", 1)
    ]


async def test_a_redrive_that_fails_again_parks_again() -> None:
    engine, rt = new_engine(parked_flow(), runtime())
    main = rt.spawn(engine.run())
    decide(rt, engine, 100, action="redrive", actor="ops")  # same input: fails again
    decide(rt, engine, 500, action="skip", actor="ops", park_id="charge~r1~p2", output={"charged": "manual"})
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert [d.park_id for d in rt.dead_letters] == ["charge", "charge~r1~p2"]
    assert [r.action for r in rt.resolutions] == [DeadLetterAction.REDRIVE, DeadLetterAction.SKIP]


async def test_skip_supplies_the_output_and_the_run_goes_on() -> None:
    engine, rt = new_engine(parked_flow(), runtime())
    main = rt.spawn(engine.run())
    decide(rt, engine, 60, action="skip", actor="ops", output={"charged": "offline"})
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    charge = rec(result, "charge")
    assert (charge.status, charge.output) == (StepStatus.COMPLETED, {"charged": "offline"})
    assert [c.input for c in rt.calls if c.path == "ship"] == [{"charge": {"charged": "offline"}}]


async def test_abort_fails_the_run_and_compensates() -> None:
    engine, rt = new_engine(parked_flow(), runtime())
    main = rt.spawn(engine.run())
    decide(rt, engine, 60, action="abort", actor="ops", reason="customer gone")
    result = await rt.run(main)
    assert result.state == RunState.FAILED
    assert (result.error_type, result.error) == (
        "DeadLetterAborted",
        "step 'charge' aborted by ops: customer gone",
    )
    assert paths(rt)[-1] == "compensate/reserve/release"
    assert [r.action for r in rt.resolutions] == [DeadLetterAction.ABORT]


@pytest.mark.parametrize(
    ("on_park_timeout", "state", "error_type"),
    [("fail", RunState.FAILED, "CardMissing"), ("continue", RunState.COMPLETED, None)],
)
async def test_without_a_decision_the_park_timeout_applies(
    on_park_timeout: str, state: RunState, error_type: str | None
) -> None:
    engine, rt = new_engine(parked_flow(park_timeout="2d", on_park_timeout=on_park_timeout), runtime())
    result = await rt.run(engine.run())
    assert result.state == state
    assert result.error_type == error_type
    assert [(r.action, r.actor) for r in rt.resolutions] == [(DeadLetterAction.TIMEOUT, "timeout")]
    assert rt.elapsed == pytest.approx(2 * DAY + 10)  # 10 s of retry backoff, then 2 days parked


async def test_decisions_that_cannot_apply_are_refused() -> None:
    engine, rt = new_engine(parked_flow(), runtime())
    with pytest.raises(DeadLetterError, match="no step of this run is parked"):
        engine.check_dead_letter(DeadLetterDecision(action="skip", actor="ops"))
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.state == RunState.PARKED)
    with pytest.raises(DeadLetterError, match=r"no step is parked as 'ship' \(parked: charge\)"):
        engine.check_dead_letter(DeadLetterDecision(action="skip", actor="ops", park_id="ship"))
    with pytest.raises(DeadLetterError, match="decided by the run"):
        engine.check_dead_letter(DeadLetterDecision(action="timeout", actor="ops"))
    main.cancel()
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED


async def test_cancelling_a_parked_run_closes_its_dead_letter_and_compensates() -> None:
    engine, rt = new_engine(parked_flow(), runtime())
    main = rt.spawn(engine.run())

    def cancel() -> None:
        engine.cancel_request = CancelRequest(actor="ops", reason="order withdrawn")
        main.cancel()

    rt.at(3600, cancel)
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert [(r.action, r.actor, r.reason) for r in rt.resolutions] == [
        (DeadLetterAction.CANCELLED, "ops", "order withdrawn")
    ]
    assert paths(rt)[-1] == "compensate/reserve/release"
    assert engine.status().parked == []
    with pytest.raises(DeadLetterError, match="decided by the run"):
        engine.check_dead_letter(DeadLetterDecision(action="cancelled", actor="ops"))


class OperatorAtOnce(FakeRuntime):
    """The dead letter row is written a moment before the run hears back from the recording (the
    activity still has to report, and the run's next workflow task to be processed); an operator
    who acts as soon as the row is visible decides in between.

    Args:
        decide: What the operator does, given the row (as recorded); returns what the run answered.
    """

    def __init__(self, decide: Callable[[DeadLetterRecord], Any]) -> None:
        super().__init__()
        self.decide = decide
        self.answers: list[Any] = []

    async def record_dead_letter(self, record: DeadLetterRecord) -> int:
        row_id = await super().record_dead_letter(record)
        self.answers.append(self.decide(record))
        await self.sleep(1, "reporting the recorded dead letter")
        return row_id


def at_once(decide: Callable[[Engine, DeadLetterRecord], Any]) -> tuple[Engine, OperatorAtOnce]:
    holder: list[Engine] = []
    rt = OperatorAtOnce(lambda row: decide(holder[0], row))
    rt.returning("reserve", "R1")
    rt.returning("release", "released")
    rt.returning("crm", "shipped")
    rt.on("charge", charge_needs_card)
    engine, rt = new_engine(parked_flow(), rt)
    holder.append(engine)
    return engine, rt


def refusal_or_view(engine: Engine, decision: DeadLetterDecision) -> Any:
    try:
        return engine.resolve(decision)
    except DeadLetterError as err:
        return err


async def test_a_decision_taken_as_soon_as_the_row_is_written_is_accepted_and_recorded() -> None:
    engine, rt = at_once(
        lambda engine, row: refusal_or_view(
            engine,
            DeadLetterDecision(action="skip", actor="ops", park_id=row.park_id, output={"charged": "phone"}),
        )
    )
    result = await rt.run(engine.run())
    [answer] = rt.answers
    assert not isinstance(answer, DeadLetterError), answer
    assert (answer.park_id, answer.path) == ("charge", "charge")
    assert result.state == RunState.COMPLETED
    assert rec(result, "charge").output == {"charged": "phone"}
    assert [c.input for c in rt.calls if c.path == "ship"] == [{"charge": {"charged": "phone"}}]
    # The decision reaches the row once the run knows its id; the run never waits for one.
    assert [(r.action, r.actor, r.dead_letter_id) for r in rt.resolutions] == [
        (DeadLetterAction.SKIP, "ops", 1)
    ]
    assert not [w for w in rt.waits if "parked" in w.summary]
    assert engine.status().parked == []


async def test_a_redrive_taken_while_recording_runs_the_step_again() -> None:
    engine, rt = at_once(
        lambda engine, row: refusal_or_view(
            engine, DeadLetterDecision(action="redrive", actor="ops", input={**row.input, "card": "visa"})
        )
    )
    result = await rt.run(engine.run())
    assert not isinstance(rt.answers[0], DeadLetterError), rt.answers[0]
    assert result.state == RunState.COMPLETED
    assert [c.input for c in rt.calls if c.path == "charge"][-1] == {"amount": 5, "card": "visa"}
    assert [(r.action, r.dead_letter_id) for r in rt.resolutions] == [(DeadLetterAction.REDRIVE, 1)]


async def test_while_recording_a_park_takes_one_decision_and_refuses_the_rest() -> None:
    def twice(engine: Engine, row: DeadLetterRecord) -> Any:
        first = refusal_or_view(engine, DeadLetterDecision(action="abort", actor="ops", park_id=row.path))
        second = refusal_or_view(engine, DeadLetterDecision(action="skip", actor="bob", output=1))
        wrong = refusal_or_view(engine, DeadLetterDecision(action="skip", actor="eve", park_id="ship"))
        return first, second, wrong

    engine, rt = at_once(twice)
    result = await rt.run(engine.run())
    [(first, second, wrong)] = rt.answers
    assert not isinstance(first, DeadLetterError), first
    assert isinstance(second, DeadLetterError)
    assert str(second) == "no step of this run is parked"
    assert isinstance(wrong, DeadLetterError)
    assert result.state == RunState.FAILED
    assert result.error_type == "DeadLetterAborted"
    assert [r.action for r in rt.resolutions] == [DeadLetterAction.ABORT]


async def test_a_run_cancelled_while_recording_takes_no_decision_afterwards() -> None:
    engine, rt = at_once(lambda engine, row: None)
    main = rt.spawn(engine.run())
    rt.at(10.5, main.cancel)  # after the 10 s backoff, while the row is being reported
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert paths(rt)[-1] == "compensate/reserve/release"
    assert engine.status().parked == []
    with pytest.raises(DeadLetterError, match="no step of this run is parked"):
        engine.check_dead_letter(DeadLetterDecision(action="skip", actor="ops"))
