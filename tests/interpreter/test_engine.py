"""The engine's semantics, step kind by step kind, on a virtual clock (no Temporal).

Every test builds a definition through :func:`load_definition` (so it is also a valid one), runs it
with :class:`FakeRuntime` and asserts what happened: which actions ran in which order with which
input, at which virtual time, how the run and each step ended.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from interpreter.engine import ActionCall, DecisionError, Engine, RunInfo
from interpreter.model import Definition
from interpreter.state import (
    CancelRequest,
    Decision,
    DecisionKind,
    RunResult,
    RunState,
    StepRecord,
    StepStatus,
)
from interpreter.validate import load_definition
from tests.interpreter.fake_runtime import ActionError, FakeRuntime, StuckError, retry_delay_s

ACTIONS = (
    "echo",
    "fetch",
    "work",
    "charge",
    "refund",
    "reserve",
    "release",
    "notify",
    # Fake channels with free-form inputs (the real email, sms and call actions check theirs).
    "mail_fake",
    "sms_fake",
    "call_fake",
    "crm",
)

APPROVE = DecisionKind.APPROVE
REJECT = DecisionKind.REJECT
HOUR = 3600.0


# ------------------------------------------------------------------------------------ helpers


def make_definition(steps: list[dict[str, Any]], **extra: Any) -> Definition:
    return load_definition({"name": "test", "steps": steps, **extra}, known_actions=ACTIONS)


def task(step_id: str, action: str = "echo", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "task", "action": action, **fields}


def work(
    step_id: str, seconds: float = 0, *, fail: str | None = None, value: Any = None, **fields: Any
) -> dict[str, Any]:
    """A ``work`` task: takes ``seconds`` of virtual time, then fails with ``fail`` or returns ``value``."""
    data: dict[str, Any] = {"seconds": seconds, "value": value if value is not None else step_id}
    if fail:
        data["fail"] = fail
    fields.setdefault("retry", {"maximum_attempts": 1})
    return task(step_id, "work", input=data, **fields)


def delay(step_id: str, duration: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "delay", "duration": duration, **fields}


def set_vars(step_id: str, values: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "vars": values, **fields}


def approval(step_id: str, approvers: list[str], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "approval", "approvers": approvers, **fields}


def new_runtime(start: datetime | None = None) -> FakeRuntime:
    rt = FakeRuntime() if start is None else FakeRuntime(start)

    async def do_work(call: ActionCall, attempt: int) -> Any:
        data = call.request.input
        await rt.elapse(float(data.get("seconds", 0)))
        if data.get("fail"):
            raise ActionError(f"{call.path} broke on attempt {attempt}", str(data["fail"]))
        return data.get("value")

    rt.on("work", do_work)
    return rt


def new_engine(
    steps: list[dict[str, Any]],
    rt: FakeRuntime | None = None,
    run_input: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[Engine, FakeRuntime]:
    rt = rt or new_runtime()
    engine = Engine(
        make_definition(steps, **extra),
        run_input or {},
        rt,
        RunInfo(workflow_id="wf-1", run_id="run-1", started_at=rt.now()),
    )
    return engine, rt


async def run(
    steps: list[dict[str, Any]],
    rt: FakeRuntime | None = None,
    run_input: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[RunResult, Engine, FakeRuntime]:
    engine, rt = new_engine(steps, rt, run_input, **extra)
    result = await rt.run(engine.run())
    return result, engine, rt


def rec(result: RunResult, path: str) -> StepRecord:
    """The last record of the step at ``path``."""
    matches = [r for r in result.steps if r.path == path]
    assert matches, f"no record for {path!r}; have {[r.path for r in result.steps]}"
    return matches[-1]


def paths(rt: FakeRuntime) -> list[str]:
    return [c.path for c in rt.calls]


def decide_at(rt: FakeRuntime, engine: Engine, at: float, kind: DecisionKind, **decision: Any) -> None:
    rt.at(at, lambda: engine.decide(kind, Decision(**decision)))


# ------------------------------------------------------------------------------- fake runtime


async def test_fake_runtime_wakes_concurrent_sleepers_in_deadline_order() -> None:
    import asyncio

    rt = FakeRuntime()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await rt.sleep(seconds, name)
        woke.append((name, rt.elapsed))

    async def main() -> None:
        await asyncio.gather(sleeper("slow", 30), sleeper("fast", 10), sleeper("mid", 20))

    await rt.run(main())
    assert woke == [("fast", 10.0), ("mid", 20.0), ("slow", 30.0)]
    assert rt.elapsed == 30.0


async def test_fake_runtime_condition_wakes_before_timeout_and_times_out_otherwise() -> None:
    rt = FakeRuntime()
    flag = {"set": False}
    rt.at(5, lambda: flag.update(set=True))
    assert await rt.run(rt.wait_condition(lambda: flag["set"], 60, "flag")) is True
    assert rt.elapsed == 5.0
    assert await rt.run(rt.wait_condition(lambda: False, 60, "never")) is False
    assert rt.elapsed == 65.0


async def test_fake_runtime_reports_a_run_that_cannot_progress() -> None:
    rt = FakeRuntime()
    with pytest.raises(StuckError, match="waiting on conditions: \\['forever'\\]"):
        await rt.run(rt.wait_condition(lambda: False, None, "forever"))


@pytest.mark.parametrize(
    ("retry", "delays"),
    [
        ({}, [1, 2, 4, 8]),
        ({"backoff_coefficient": 3, "maximum_interval": "10s"}, [1, 3, 9, 10]),
        ({"preset": "constant", "initial_interval": "5s"}, [5, 5, 5, 5]),
        ({"preset": "linear"}, [1, 2, 3, 4]),
        ({"preset": "linear", "initial_interval": "2s", "maximum_interval": "5s"}, [2, 4, 5, 5]),
    ],
)
def test_retry_delay_formula(retry: dict[str, Any], delays: list[float]) -> None:
    from interpreter.model import RetryPolicy

    policy = RetryPolicy.model_validate_json(json.dumps({"maximum_attempts": 10, **retry}))
    assert [retry_delay_s(policy, attempt) for attempt in range(1, 5)] == delays


async def test_fake_runtime_honours_an_explicit_next_retry_delay() -> None:
    rt = new_runtime()

    def handler(call: ActionCall, attempt: int) -> Any:
        if attempt == 1:
            raise ActionError("rate limited", "TooManyRequests", next_retry_delay_s=42)
        return "ok"

    rt.on("fetch", handler)
    result, _, rt = await run([task("call", "fetch")], rt)
    assert result.state == RunState.COMPLETED
    assert [c.elapsed for c in rt.calls] == [0.0, 42.0]


# ---------------------------------------------------------------------------------------- task


async def test_task_input_is_templated_and_result_stored_under_step_id() -> None:
    rt = new_runtime()
    rt.on("crm", lambda call, attempt: {"contact_id": 42, "email": call.request.input["email"]})
    result, _, rt = await run(
        [
            task(
                "lookup",
                "crm",
                input={"email": "{{ input.email | lower }}", "tags": ["{{ input.tier }}", "fixed"]},
            ),
            task(
                "greet",
                input={
                    "text": "Hello #{{ steps.lookup.output.contact_id }}",
                    "id": "{{ steps.lookup.output.contact_id }}",
                    "status": "{{ steps.lookup.status }}",
                    "attempts": "{{ steps.lookup.attempts }}",
                    "run": "{{ run.workflow_id }}/{{ run.definition }}",
                },
            ),
        ],
        rt,
        {"email": "Ada@Example.com", "tier": "gold"},
        output={"contact": "{{ steps.lookup.output }}", "greeting": "{{ steps.greet.output.text }}"},
    )
    assert result.state == RunState.COMPLETED
    assert [c.input for c in rt.calls] == [
        {"email": "ada@example.com", "tags": ["gold", "fixed"]},
        # a lone {{ expr }} keeps its native type; mixed text renders to a string
        {"text": "Hello #42", "id": 42, "status": "completed", "attempts": 1, "run": "wf-1/test"},
    ]
    assert result.output == {
        "contact": {"contact_id": 42, "email": "ada@example.com"},
        "greeting": "Hello #42",
    }
    assert rec(result, "lookup").output == {"contact_id": 42, "email": "ada@example.com"}
    assert [r.status for r in result.steps] == [StepStatus.COMPLETED, StepStatus.COMPLETED]


async def test_output_defaults_to_vars() -> None:
    result, _, _ = await run([set_vars("s", {"a": 1, "b": "{{ input.x * 2 }}"})], run_input={"x": 21})
    assert result.output == {"a": 1, "b": 42}


async def test_next_jumps_forward_over_steps() -> None:
    result, _, rt = await run([task("a", next="c"), task("b"), task("c")])
    assert paths(rt) == ["a", "c"]
    assert [r.path for r in result.steps] == ["a", "c"]


async def test_exponential_retry_backoff_and_attempt_count() -> None:
    rt = new_runtime()
    rt.failing("fetch", times=3, output={"ok": True})
    result, _, rt = await run([task("call", "fetch", retry={"maximum_attempts": 5})], rt)
    assert result.state == RunState.COMPLETED
    assert [(c.attempt, c.elapsed, c.outcome) for c in rt.calls] == [
        (1, 0.0, "Boom"),
        (2, 1.0, "Boom"),
        (3, 3.0, "Boom"),
        (4, 7.0, "ok"),
    ]
    assert [r.delay_s for r in rt.retries] == [1, 2, 4]
    record = rec(result, "call")
    assert (record.attempts, record.duration_s, record.output) == (4, 7.0, {"ok": True})
    # every attempt of one step execution carries the same idempotency key and activity id
    assert {c.idempotency_key for c in rt.calls} == {"wf-1/run-1/call"}
    assert {c.activity_id for c in rt.calls} == {"call"}


async def test_exhausted_exponential_retry_fails_the_run_with_attempt_count() -> None:
    rt = new_runtime()
    rt.failing("fetch", times=99, error_type="Upstream503")
    result, _, rt = await run(
        [task("call", "fetch", retry={"maximum_attempts": 3, "maximum_interval": "1500ms"}), task("after")],
        rt,
    )
    assert result.state == RunState.FAILED
    assert [c.elapsed for c in rt.calls] == [0.0, 1.0, 2.5]  # 1s, then 2s capped to 1.5s
    assert result.error_type == "Upstream503"
    assert result.error == "step 'call' failed after 3 attempt(s): attempt 3 failed"
    record = rec(result, "call")
    assert (record.status, record.attempts, record.error_type) == (StepStatus.FAILED, 3, "Upstream503")
    assert "after" not in paths(rt)


async def test_constant_retry_keeps_the_same_delay() -> None:
    rt = new_runtime()
    rt.failing("fetch", times=3)
    result, _, rt = await run(
        [
            task(
                "call",
                "fetch",
                retry={"preset": "constant", "initial_interval": "30s", "maximum_attempts": 4},
            )
        ],
        rt,
    )
    assert result.state == RunState.COMPLETED
    assert [c.elapsed for c in rt.calls] == [0.0, 30.0, 60.0, 90.0]


@pytest.mark.parametrize(
    ("retry", "times"),
    [
        ({"preset": "linear", "maximum_attempts": 4}, [0.0, 1.0, 3.0, 6.0]),  # 1s, 2s, 3s
        (
            {
                "preset": "linear",
                "initial_interval": "1s",
                "maximum_interval": "2500ms",
                "maximum_attempts": 5,
            },
            [0.0, 1.0, 3.0, 5.5, 8.0],  # 1s, 2s, then capped at 2.5s
        ),
    ],
)
async def test_linear_retry_grows_by_initial_interval_capped(
    retry: dict[str, Any], times: list[float]
) -> None:
    rt = new_runtime()
    rt.failing("fetch", times=99)
    result, _, rt = await run([task("call", "fetch", retry=retry)], rt)
    assert result.state == RunState.FAILED
    assert [c.elapsed for c in rt.calls] == times
    assert rec(result, "call").attempts == len(times)


async def test_non_retryable_error_types_stop_retrying_at_once() -> None:
    rt = new_runtime()
    rt.failing("fetch", times=99, error_type="BadRequest")
    result, _, rt = await run(
        [task("call", "fetch", retry={"maximum_attempts": 5, "non_retryable_error_types": ["BadRequest"]})],
        rt,
    )
    assert (result.state, result.error_type) == (RunState.FAILED, "BadRequest")
    assert len(rt.calls) == 1
    assert rec(result, "call").attempts == 1


async def test_non_retryable_flag_of_the_action_wins_over_the_policy() -> None:
    rt = new_runtime()

    def handler(call: ActionCall, attempt: int) -> Any:
        raise ActionError("invalid input", "InvalidActionInput", non_retryable=True)

    rt.on("fetch", handler)
    result, _, rt = await run([task("call", "fetch", retry={"maximum_attempts": 5})], rt)
    assert (result.error_type, len(rt.calls)) == ("InvalidActionInput", 1)


async def test_definition_defaults_apply_to_tasks_without_their_own_policy() -> None:
    rt = new_runtime()
    seen: list[ActionCall] = []

    def handler(call: ActionCall, attempt: int) -> Any:
        seen.append(call)
        if attempt < 2:
            raise ActionError("once", "Flaky")
        return "ok"

    rt.on("fetch", handler)
    result, _, rt = await run(
        [
            task("a", "fetch"),
            task(
                "b",
                "fetch",
                retry={"maximum_attempts": 2, "initial_interval": "1s"},
                timeouts={"heartbeat": "5s"},
            ),
        ],
        rt,
        defaults={
            "retry": {"preset": "constant", "initial_interval": "10s", "maximum_attempts": 2},
            "timeouts": {"start_to_close": "1m", "schedule_to_close": "10m"},
        },
    )
    assert result.state == RunState.COMPLETED
    assert [(c.path, c.elapsed) for c in rt.calls] == [("a", 0.0), ("a", 10.0), ("b", 10.0), ("b", 11.0)]
    a, b = seen[0], seen[2]
    assert (a.timeouts.start_to_close, a.timeouts.schedule_to_close, a.timeouts.heartbeat) == (
        "1m",
        "10m",
        None,
    )
    # a step's own timeouts override field by field; the rest still come from the defaults
    assert (b.timeouts.start_to_close, b.timeouts.schedule_to_close, b.timeouts.heartbeat) == (
        "1m",
        "10m",
        "5s",
    )
    assert a.request.retry_mode == "constant"
    assert (a.request.initial_interval_s, b.request.initial_interval_s) == (10.0, 1.0)


async def test_on_failure_continue_records_the_error_and_goes_on() -> None:
    result, _, rt = await run(
        [
            work("flaky", fail="Timeout", on_failure="continue"),
            task(
                "report",
                input={"status": "{{ steps.flaky.status }}", "error": "{{ steps.flaky.error_type }}"},
            ),
        ]
    )
    assert result.state == RunState.COMPLETED
    assert rt.calls[-1].input == {"status": "failed", "error": "Timeout"}
    flaky = rec(result, "flaky")
    assert (flaky.status, flaky.error_type, flaky.error) == (
        StepStatus.FAILED,
        "Timeout",
        "flaky broke on attempt 1",
    )
    assert result.error is None


async def test_on_failure_goto_jumps_to_the_handler_step() -> None:
    result, _, rt = await run(
        [
            work("charge", fail="CardDeclined", on_failure={"goto": "apologise"}),
            task("ship"),
            task("apologise", input={"why": "{{ steps.charge.error_type }}"}),
        ]
    )
    assert result.state == RunState.COMPLETED
    assert paths(rt) == ["charge", "apologise"]
    assert rt.calls[-1].input == {"why": "CardDeclined"}
    assert rec(result, "charge").status == StepStatus.FAILED


async def test_on_failure_fail_stops_the_run() -> None:
    result, _, rt = await run([work("a", fail="Nope"), task("b")])
    assert (result.state, result.error_type) == (RunState.FAILED, "Nope")
    assert result.error == "step 'a' failed after 1 attempt(s): a broke on attempt 1"
    assert paths(rt) == ["a"]


# -------------------------------------------------------------------------------- compensation


def saga(third: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        task(
            "reserve",
            "reserve",
            input={"sku": "A"},
            compensate=[task("release", "release", input={"res": "{{ steps.reserve.output.id }}"})],
        ),
        task(
            "charge",
            "charge",
            compensate=[task("refund", "refund", input={"amount": "{{ steps.charge.output.amount }}"})],
        ),
        third,
    ]


def saga_runtime() -> FakeRuntime:
    rt = new_runtime()
    rt.returning("reserve", {"id": "R1"})
    rt.returning("charge", {"amount": 30})
    rt.returning("release", "released")
    rt.returning("refund", "refunded")
    return rt


async def test_compensations_run_in_reverse_order_of_completion_on_failure() -> None:
    third = work("ship", fail="Carrier", compensate=[task("unship")])
    result, _, rt = await run(saga(third), saga_runtime())
    assert result.state == RunState.FAILED
    assert result.error_type == "Carrier"  # the original failure, not a compensation's
    # ship never completed, so its own compensation does not run
    assert paths(rt) == [
        "reserve",
        "charge",
        "ship",
        "compensate/charge/refund",
        "compensate/reserve/release",
    ]
    assert rt.calls[3].input == {"amount": 30}
    assert rt.calls[4].input == {"res": "R1"}
    assert rec(result, "compensate/charge/refund").status == StepStatus.COMPLETED


async def test_on_failure_compensate_ends_the_run_as_compensated() -> None:
    third = work("ship", fail="Carrier", on_failure="compensate")
    rt = saga_runtime()
    engine, rt = new_engine(saga(third), rt)
    states: list[RunState] = []
    rt.on_state_change = lambda: states.append(engine.state)
    result = await rt.run(engine.run())
    assert (result.state, result.error_type) == (RunState.COMPENSATED, "Carrier")
    assert paths(rt)[-2:] == ["compensate/charge/refund", "compensate/reserve/release"]
    assert RunState.COMPENSATING in states
    assert states[-1] == RunState.COMPENSATED


async def test_a_failing_compensation_does_not_stop_the_others() -> None:
    rt = saga_runtime()
    rt.failing("refund", times=99, error_type="RefundDown")
    third = work("ship", fail="Carrier")
    result, _, rt = await run(saga(third), rt)
    assert result.state == RunState.FAILED
    assert (result.error_type, result.error) == (
        "Carrier",
        "step 'ship' failed after 1 attempt(s): ship broke on attempt 1",
    )
    refund = rec(result, "compensate/charge/refund")
    assert (refund.status, refund.error_type) == (StepStatus.FAILED, "RefundDown")
    assert [c.path for c in rt.calls if c.outcome == "ok"][-1] == "compensate/reserve/release"
    assert paths(rt).index("compensate/reserve/release") > paths(rt).index("compensate/charge/refund")


async def test_cancellation_during_a_delay_runs_compensations_in_reverse() -> None:
    engine, rt = new_engine(saga(delay("cool_off", "1h")), saga_runtime())
    main = rt.spawn(engine.run())

    def cancel() -> None:
        engine.cancel_request = CancelRequest(actor="alice", reason="customer called")
        main.cancel()

    rt.at(600, cancel)
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert (result.error_type, result.error) == ("RunCancelled", "cancelled by alice: customer called")
    assert paths(rt) == ["reserve", "charge", "compensate/charge/refund", "compensate/reserve/release"]
    assert all(c.elapsed == 600.0 for c in rt.calls[2:])
    cool_off = rec(result, "cool_off")
    assert (cool_off.status, cool_off.duration_s) == (StepStatus.CANCELLED, 600.0)
    assert engine.status().cancelled_by == CancelRequest(actor="alice", reason="customer called")
    assert engine.status().current_steps == []


async def test_a_second_cancellation_does_not_abandon_running_compensations() -> None:
    steps = [
        work("reserve", 1, compensate=[work("release", 10)]),
        work("charge", 1, compensate=[work("refund", 10)]),
        delay("cool_off", "1h"),
    ]
    engine, rt = new_engine(steps)
    main = rt.spawn(engine.run())
    rt.at(100, main.cancel)  # the cancel signal
    rt.at(105, main.cancel)  # then Temporal's own cancellation, mid-compensation
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert [(c.path, c.elapsed, c.outcome) for c in rt.calls] == [
        ("reserve", 0.0, "ok"),
        ("charge", 1.0, "ok"),
        ("compensate/charge/refund", 100.0, "ok"),
        ("compensate/reserve/release", 110.0, "ok"),
    ]


async def test_cancellation_during_a_parallel_step_cancels_every_branch_and_compensates() -> None:
    engine, rt = new_engine(
        [
            parallel(
                "fan",
                "all",
                {"a": [work("a1", 1, compensate=[task("undo_a1")]), work("a2", 10)], "b": [work("b1", 20)]},
            )
        ]
    )
    main = rt.spawn(engine.run())
    rt.at(5, main.cancel)
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert [(c.path, c.elapsed, c.outcome) for c in rt.calls] == [
        ("a1", 0.0, "ok"),
        ("b1", 0.0, "cancelled"),
        ("a2", 1.0, "cancelled"),
        ("compensate/a1/undo_a1", 5.0, "ok"),
    ]
    assert {r.path: r.status for r in result.steps} == {
        "fan": StepStatus.CANCELLED,
        "a1": StepStatus.COMPLETED,
        "a2": StepStatus.CANCELLED,
        "b1": StepStatus.CANCELLED,
        "compensate/a1/undo_a1": StepStatus.COMPLETED,
    }


async def test_cancellation_during_a_retry_backoff_stops_retrying() -> None:
    rt = new_runtime()
    rt.failing("fetch", times=99)
    engine, rt = new_engine(
        [task("call", "fetch", retry={"maximum_attempts": 10, "initial_interval": "1m"})], rt
    )
    main = rt.spawn(engine.run())
    rt.at(90, main.cancel)
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert [c.elapsed for c in rt.calls] == [0.0, 60.0]
    assert rt.elapsed == 90.0
    assert rec(result, "call").status == StepStatus.CANCELLED


async def test_cancellation_while_awaiting_approval_clears_the_pending_approval() -> None:
    engine, rt = new_engine(
        [task("charge", "charge", compensate=[task("refund", "refund")]), approval("ok", ["bob"])]
    )
    rt.returning("charge", 1)
    rt.returning("refund", "refunded")
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    main.cancel()
    result = await rt.run(main)
    assert (result.state, result.error) == (RunState.CANCELLED, "cancelled")
    assert paths(rt) == ["charge", "compensate/charge/refund"]
    assert engine.status().pending_approvals == []
    assert not engine.awaiting_approval


# ------------------------------------------------------------------------- condition and switch


async def test_condition_runs_then_or_else_branch() -> None:
    steps = [
        {
            "id": "big",
            "type": "condition",
            "if": "input.amount > 100",
            "then": {"steps": [task("review", input={"a": "{{ input.amount }}"})]},
            "else": {"steps": [task("auto")]},
        },
        task("done"),
    ]
    result, _, rt = await run(steps, run_input={"amount": 500})
    assert paths(rt) == ["review", "done"]
    assert rec(result, "big").output == {"branch": "then"}
    result, _, rt = await run(steps, run_input={"amount": 5})
    assert paths(rt) == ["auto", "done"]
    assert rec(result, "big").output == {"branch": "else"}


async def test_condition_without_else_does_nothing_when_false() -> None:
    result, _, rt = await run(
        [{"id": "c", "type": "condition", "if": "false", "then": {"steps": [task("x")]}}, task("y")]
    )
    assert paths(rt) == ["y"]
    assert rec(result, "c").output == {"branch": None}


def seed_001_intervention() -> list[dict[str, Any]]:
    """Seed 001's high-risk intervention: a state machine whose condition has if_true_step /
    if_false_step, written as jumps."""
    return [
        task(
            "send_email", "mail_fake", input={"template": "concern_outreach", "family": "{{ input.family }}"}
        ),
        delay("wait_for_response", "3d"),
        task("check_response", "crm", input={"family": "{{ input.family }}"}),
        {
            "id": "responded",
            "type": "condition",
            "if": "steps.check_response.output.email_response_received == true",
            "then": {"goto": "mark_complete"},  # if_true_step: skip to completion
            "else": {"goto": "send_sms"},  # if_false_step: continue to SMS
        },
        task("send_sms", "sms_fake", input={"text": "Hi {{ input.family }}, checking in"}),
        delay("before_call", "2d"),
        task("schedule_call", "call_fake", input={"reason": "no email/SMS response"}),
        task("mark_complete", "crm", input={"task_type": "workflow_complete"}),
    ]


@pytest.mark.parametrize(
    ("responded", "expected"),
    [
        (True, [("send_email", 0), ("check_response", 3), ("mark_complete", 3)]),
        (
            False,
            [
                ("send_email", 0),
                ("check_response", 3),
                ("send_sms", 3),
                ("schedule_call", 5),
                ("mark_complete", 5),
            ],
        ),
    ],
)
async def test_seed_001_state_machine_with_jumps(responded: bool, expected: list[tuple[str, int]]) -> None:
    rt = new_runtime()
    for name in ("mail_fake", "sms_fake", "call_fake"):
        rt.returning(name, {"sent": True})

    def crm(call: ActionCall, attempt: int) -> Any:
        if call.path == "check_response":
            return {"email_response_received": responded}
        return {"task_created": True}

    rt.on("crm", crm)
    result, _, rt = await run(seed_001_intervention(), rt, {"family": "Martinez"})
    assert result.state == RunState.COMPLETED
    assert [(c.path, c.elapsed / 86400) for c in rt.calls] == expected
    responded_step = rec(result, "responded")
    # the record says which branch the jump came from
    assert (responded_step.status, responded_step.output) == (
        StepStatus.COMPLETED,
        {"branch": "then" if responded else "else"},
    )


SWITCH = [
    {
        "id": "route",
        "type": "switch",
        "cases": [
            {"when": "input.score >= 90", "then": {"steps": [task("vip")]}},
            {"when": "input.score >= 50", "then": {"steps": [task("standard")]}},
            {"when": "input.score >= 0", "then": {"goto": "tail"}},
        ],
        "default": {"steps": [task("invalid")]},
    },
    task("middle"),
    task("tail"),
]


@pytest.mark.parametrize(
    ("score", "calls", "case"),
    [
        (95, ["vip", "middle", "tail"], 0),  # matches cases 0, 1 and 2: the first wins
        (60, ["standard", "middle", "tail"], 1),
        (10, ["tail"], 2),
        (-5, ["invalid", "middle", "tail"], "default"),
    ],
)
async def test_switch_first_match_wins_else_default(score: int, calls: list[str], case: Any) -> None:
    result, _, rt = await run(SWITCH, run_input={"score": score})
    assert paths(rt) == calls
    assert rec(result, "route").output == {"case": case}


async def test_switch_without_default_and_no_match_does_nothing() -> None:
    result, _, rt = await run(
        [
            {"id": "s", "type": "switch", "cases": [{"when": "false", "then": {"steps": [task("x")]}}]},
            task("y"),
        ]
    )
    assert paths(rt) == ["y"]
    assert rec(result, "s").output == {"case": None}


# ---------------------------------------------------------------------------------------- loops


def polling_loop(max_visits: int) -> list[dict[str, Any]]:
    return [
        task("submit", "fetch"),
        delay("wait", "10s", max_visits=max_visits),
        task("poll", "fetch", input={"job": "{{ steps.submit.output.job }}"}, max_visits=max_visits),
        {
            "id": "check",
            "type": "condition",
            "if": "steps.poll.output.state != 'done'",
            "then": {"goto": "wait"},
        },
        task("finish", "fetch", input={"result": "{{ steps.poll.output.state }}"}),
    ]


def polling_runtime(states: list[str]) -> FakeRuntime:
    rt = new_runtime()

    def http(call: ActionCall, attempt: int) -> Any:
        if call.step_id == "submit":
            return {"job": "J7"}
        if call.step_id == "poll":
            return {"state": states.pop(0)}
        return call.request.input

    rt.on("fetch", http)
    return rt


async def test_backward_goto_loops_until_the_condition_is_false() -> None:
    result, _, rt = await run(polling_loop(5), polling_runtime(["queued", "running", "done"]))
    assert result.state == RunState.COMPLETED
    polls = rt.calls_of("poll")
    assert [c.elapsed for c in polls] == [10.0, 20.0, 30.0]
    assert all(c.input == {"job": "J7"} for c in polls)
    # one idempotency key per visit, stable within it; activity ids unique in the run
    assert [c.idempotency_key for c in polls] == ["wf-1/run-1/poll", "wf-1/run-1/poll#2", "wf-1/run-1/poll#3"]
    assert [c.activity_id for c in polls] == ["poll", "poll#2", "poll#3"]
    assert rt.calls[-1].input == {"result": "done"}
    assert [r.path for r in result.steps].count("wait") == 3


async def test_loop_beyond_max_visits_fails_with_loop_limit_exceeded() -> None:
    result, _, rt = await run(polling_loop(3), polling_runtime(["running"] * 10))
    assert (result.state, result.error_type) == (RunState.FAILED, "LoopLimitExceeded")
    assert result.error == "step 'wait' would run 4 times, more than its max_visits 3"
    assert len(rt.calls_of("poll")) == 3
    assert "finish" not in paths(rt)


async def test_max_step_executions_bounds_a_run() -> None:
    steps = [
        set_vars("count", {"n": "{{ (vars.n | default(0)) + 1 }}"}, max_visits=1000),
        {"id": "again", "type": "condition", "if": "true", "then": {"goto": "count"}},
    ]
    result, engine, _ = await run(steps, limits={"max_step_executions": 10})
    assert (result.state, result.error_type) == (RunState.FAILED, "StepLimitExceeded")
    assert "limits.max_step_executions (10)" in (result.error or "")
    assert len(result.steps) == 10
    assert engine.vars == {"n": 5}


async def test_compensations_still_run_when_the_step_limit_stopped_the_run() -> None:
    steps = [
        task("charge", "charge", compensate=[task("refund", "refund")]),
        set_vars("count", {"n": "{{ (vars.n | default(0)) + 1 }}"}, max_visits=1000),
        {"id": "again", "type": "condition", "if": "true", "then": {"goto": "count"}},
    ]
    result, _, rt = await run(steps, saga_runtime(), limits={"max_step_executions": 10})
    assert (result.state, result.error_type) == (RunState.FAILED, "StepLimitExceeded")
    assert paths(rt) == ["charge", "compensate/charge/refund"]
    assert rec(result, "compensate/charge/refund").status == StepStatus.COMPLETED


# ------------------------------------------------------------------------------------- parallel


async def test_a_run_near_temporals_history_limit_where_it_cannot_continue_fails_and_compensates() -> None:
    """A long foreach inside a parallel branch, where the run cannot continue as new: once its
    history reaches the guard, the next step does not start; the run fails in words and its
    compensations run (they have the room left under Temporal's own limit)."""
    rt = saga_runtime()
    rt.events_per_call = 1000  # each call counts for 1,000 events: the guard (40,000) after 40 calls
    steps = [
        task("charge", "charge", compensate=[task("refund", "refund")]),
        parallel(
            "fan",
            "all",
            {
                "many": [
                    {"id": "each", "type": "foreach", "items": "range(100) | list", "steps": [task("ping")]}
                ],
                "one": [task("side")],
            },
        ),
        task("after"),
    ]
    result, _, rt = await run(steps, rt)
    assert (result.state, result.error_type) == (RunState.FAILED, "HistoryLimit")
    error = result.error or ""
    assert "history reached 40000 events" in error
    assert "cannot continue as new" in error
    assert "ping" in error  # the step that did not start
    pings = [p for p in paths(rt) if p.endswith(".ping")]
    assert len(pings) == 38  # charge, side and 38 pings: 40 calls, 40,000 events
    assert "after" not in paths(rt)
    assert paths(rt)[-1] == "compensate/charge/refund"
    assert rec(result, "compensate/charge/refund").status == StepStatus.COMPLETED


async def test_every_compensation_runs_past_the_history_guard_also_after_a_wait_in_one() -> None:
    """A wait in a compensation shows the run as waiting (not compensating); the compensations
    after it must still start once the guard stopped the run."""
    rt = saga_runtime()
    rt.events_per_call = 1000
    steps = [
        task("reserve", "reserve", compensate=[task("release", "release")]),
        task(
            "charge",
            "charge",
            compensate=[
                approval("ok", ["ops"], timeout="1h", on_timeout="approve"),
                task("refund", "refund"),
            ],
        ),
        {
            "id": "each",
            "type": "foreach",
            "items": "range(100) | list",
            "concurrency": 1,
            "steps": [task("ping")],
        },
    ]
    result, _, rt = await run(steps, rt)
    assert (result.state, result.error_type) == (RunState.FAILED, "HistoryLimit")
    assert rec(result, "compensate/charge/ok").status == StepStatus.COMPLETED
    assert paths(rt)[-2:] == ["compensate/charge/refund", "compensate/reserve/release"]


async def test_a_run_below_the_history_guard_is_not_stopped() -> None:
    rt = new_runtime()
    rt.events_per_call = 390  # 100 calls: 39,000 events, under the guard
    steps = [{"id": "each", "type": "foreach", "items": "range(100) | list", "steps": [task("ping")]}]
    result, _, rt = await run(steps, rt)
    assert result.state == RunState.COMPLETED
    assert len([p for p in paths(rt) if p.endswith(".ping")]) == 100


def parallel(
    step_id: str, join: str, branches: dict[str, list[dict[str, Any]]], **fields: Any
) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "parallel",
        "join": join,
        "branches": [{"id": b, "steps": s} for b, s in branches.items()],
        **fields,
    }


async def test_parallel_all_runs_branches_concurrently_and_collects_outputs() -> None:
    result, _, rt = await run(
        [
            parallel(
                "fan",
                "all",
                {"left": [work("l1", 5), work("l2", 5)], "right": [work("r1", 3, value={"n": 1})]},
            ),
            task("after", input={"l": "{{ steps.fan.output.left }}", "r1": "{{ steps.r1.output.n }}"}),
        ]
    )
    assert result.state == RunState.COMPLETED
    assert [(c.path, c.elapsed) for c in rt.calls] == [("l1", 0.0), ("r1", 0.0), ("l2", 5.0), ("after", 10.0)]
    assert rec(result, "fan").output == {"left": "l2", "right": {"n": 1}}
    assert rec(result, "fan").duration_s == 10.0
    assert rt.calls[-1].input == {"l": "l2", "r1": 1}
    assert rt.max_in_flight == 2


async def test_parallel_all_a_failure_cancels_the_other_branches() -> None:
    result, _, rt = await run(
        [
            parallel(
                "fan",
                "all",
                {"slow": [work("slow", 60), task("never")], "bad": [work("bad", 2, fail="Boom")]},
            ),
            task("after"),
        ]
    )
    assert (result.state, result.error_type) == (RunState.FAILED, "Boom")
    assert rt.elapsed == 2.0
    assert {c.path: c.outcome for c in rt.calls} == {"slow": "cancelled", "bad": "Boom"}
    assert rec(result, "slow").status == StepStatus.CANCELLED
    assert rec(result, "fan").status == StepStatus.FAILED


async def test_parallel_any_first_success_wins_and_losers_are_cancelled() -> None:
    result, _, rt = await run(
        [
            parallel(
                "race",
                "any",
                {
                    "broken": [work("broken", 1, fail="Down")],
                    "fast": [work("fast", 5, value="from fast")],
                    "slow": [work("slow", 10)],
                },
            ),
            task("after", input={"w": "{{ steps.race.output.winner }}"}),
        ]
    )
    assert result.state == RunState.COMPLETED
    assert rec(result, "race").output == {"winner": "fast", "output": "from fast"}
    assert {c.path: c.outcome for c in rt.calls} == {
        "broken": "Down",
        "fast": "ok",
        "slow": "cancelled",
        "after": "ok",
    }
    assert rt.calls[-1].elapsed == 5.0
    assert rec(result, "slow").status == StepStatus.CANCELLED


async def test_parallel_any_fails_when_every_branch_fails() -> None:
    result, _, rt = await run(
        [
            parallel(
                "race", "any", {"a": [work("a", 3, fail="LateFail")], "b": [work("b", 1, fail="EarlyFail")]}
            )
        ]
    )
    assert result.state == RunState.FAILED
    assert result.error_type == "EarlyFail"  # the first failure is reported
    assert rt.elapsed == 3.0


async def test_parallel_first_finisher_decides_even_when_it_failed() -> None:
    result, _, rt = await run(
        [
            parallel("race", "first", {"ok": [work("ok", 5)], "bad": [work("bad", 1, fail="Quick")]}),
            task("after"),
        ]
    )
    assert (result.state, result.error_type) == (RunState.FAILED, "Quick")
    assert rt.elapsed == 1.0
    assert {c.path: c.outcome for c in rt.calls} == {"ok": "cancelled", "bad": "Quick"}


async def test_parallel_first_finisher_success() -> None:
    result, _, rt = await run(
        [parallel("race", "first", {"ok": [work("ok", 1, value=7)], "bad": [work("bad", 5, fail="Slow")]})]
    )
    assert result.state == RunState.COMPLETED
    assert rt.elapsed == 1.0
    assert rec(result, "race").output == {"winner": "ok", "output": 7}
    assert rec(result, "bad").status == StepStatus.CANCELLED


@pytest.mark.parametrize("join", ["all", "any", "first"])
async def test_succeed_in_a_parallel_branch_ends_the_run_whatever_the_join(join: str) -> None:
    result, _, rt = await run(
        [
            parallel(
                "fan",
                join,
                {
                    "quick": [work("q", 1), {"id": "stop", "type": "succeed", "output": "early"}],
                    "slow": [work("s", 5)],
                },
            ),
            task("after"),
        ]
    )
    assert (result.state, result.output) == (RunState.COMPLETED, "early")
    assert rt.elapsed == 1.0
    assert "after" not in paths(rt)
    assert rec(result, "s").status == StepStatus.CANCELLED


# -------------------------------------------------------------------------------------- foreach


def foreach(step_id: str, items: str, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "foreach", "items": items, "steps": steps, **fields}


async def test_foreach_respects_concurrency_and_keeps_item_order() -> None:
    rt = new_runtime()

    async def score(call: ActionCall, attempt: int) -> Any:
        await rt.elapse(call.request.input["seconds"])
        return {"score": call.request.input["name"].upper()}

    rt.on("fetch", score)
    items = [
        {"name": "a", "t": 5},
        {"name": "b", "t": 1},
        {"name": "c", "t": 1},
        {"name": "d", "t": 4},
        {"name": "e", "t": 1},
    ]
    result, _, rt = await run(
        [
            foreach(
                "each",
                "input.reviews",
                [
                    task(
                        "score",
                        "fetch",
                        input={"name": "{{ review.name }}", "seconds": "{{ review.t }}", "i": "{{ index }}"},
                    )
                ],
                **{"as": "review", "concurrency": 2},
            )
        ],
        rt,
        {"reviews": items},
    )
    assert result.state == RunState.COMPLETED
    assert rt.max_in_flight == 2
    # slot 1: a(0-5); slot 2: b(0-1), c(1-2), d(2-6); then e in whichever frees first (a at 5)
    assert [(c.path, c.elapsed) for c in rt.calls] == [
        ("each[0].score", 0.0),
        ("each[1].score", 0.0),
        ("each[2].score", 1.0),
        ("each[3].score", 2.0),
        ("each[4].score", 5.0),
    ]
    assert [c.input["i"] for c in rt.calls] == [0, 1, 2, 3, 4]
    assert rec(result, "each").output == [{"score": n} for n in "ABCDE"]
    assert rec(result, "each").duration_s == 6.0
    assert [c.idempotency_key for c in rt.calls] == [f"wf-1/run-1/each[{i}].score" for i in range(5)]


async def test_foreach_output_template_is_rendered_per_item() -> None:
    result, _, rt = await run(
        [
            foreach(
                "each",
                "input.xs",
                [task("double", input={"v": "{{ item * 2 }}"})],
                output={"item": "{{ item }}", "double": "{{ steps.double.output.v }}"},
                concurrency=3,
            ),
            task("sum", input={"total": "{{ steps.each.output | map(attribute='double') | sum }}"}),
        ],
        run_input={"xs": [1, 2, 3, 4]},
    )
    assert rec(result, "each").output == [{"item": i, "double": 2 * i} for i in (1, 2, 3, 4)]
    assert rt.calls[-1].input == {"total": 20}
    assert rt.max_in_flight == 1  # echo takes no virtual time, so iterations never overlap in a call


async def test_foreach_equal_work_takes_ceil_items_over_concurrency_rounds() -> None:
    result, _, rt = await run(
        [foreach("each", "input.xs", [work("w", 10)], concurrency=3)], run_input={"xs": list(range(7))}
    )
    assert result.state == RunState.COMPLETED
    assert rt.max_in_flight == 3
    assert rt.elapsed == 30.0
    assert rec(result, "each").output == ["w"] * 7


async def test_foreach_over_an_empty_list_outputs_an_empty_list() -> None:
    result, _, rt = await run([foreach("each", "input.xs", [task("x")])], run_input={"xs": []})
    assert result.state == RunState.COMPLETED
    assert rec(result, "each").output == []
    assert rt.calls == []


@pytest.mark.parametrize("items", [{"a": 1}, "abc", 5, None])
async def test_foreach_over_a_non_list_fails(items: Any) -> None:
    result, _, rt = await run([foreach("each", "input.xs", [task("x")])], run_input={"xs": items})
    assert (result.state, result.error_type) == (RunState.FAILED, "InvalidItems")
    assert "'items' evaluated to" in (result.error or "")
    assert rt.calls == []


async def test_foreach_max_items_and_limit() -> None:
    result, _, rt = await run(
        [foreach("each", "input.xs", [task("x")], max_items=3)], run_input={"xs": [1, 2, 3, 4]}
    )
    assert (result.state, result.error_type) == (RunState.FAILED, "TooManyItems")
    assert result.error == "step 'each': 4 items exceed the limit of 3"
    assert rt.calls == []
    result, _, _ = await run(
        [foreach("each", "input.xs", [task("x")])],
        run_input={"xs": [1, 2, 3]},
        limits={"max_foreach_items": 2},
    )
    assert result.error_type == "TooManyItems"
    result, _, rt = await run(
        [foreach("each", "input.xs", [task("x")], max_items=3)], run_input={"xs": [1, 2, 3]}
    )
    assert result.state == RunState.COMPLETED
    assert len(rt.calls) == 3


async def test_foreach_failure_of_one_item_cancels_the_rest() -> None:
    rt = new_runtime()

    async def handler(call: ActionCall, attempt: int) -> Any:
        await rt.elapse(call.request.input["t"])
        if call.request.input["t"] == 2:
            raise ActionError("bad item", "BadItem")
        return "ok"

    rt.on("fetch", handler)
    result, _, rt = await run(
        [
            foreach(
                "each",
                "input.xs",
                [task("h", "fetch", input={"t": "{{ item }}"}, retry={"maximum_attempts": 1})],
                concurrency=2,
            )
        ],
        rt,
        {"xs": [5, 2, 1]},
    )
    assert (result.state, result.error_type) == (RunState.FAILED, "BadItem")
    assert rt.elapsed == 2.0
    # The failed iteration frees its slot before the join reacts, so item 2 starts and is
    # cancelled at once; no iteration completes after the failure.
    assert [(c.path, c.elapsed, c.outcome) for c in rt.calls] == [
        ("each[0].h", 0.0, "cancelled"),
        ("each[1].h", 0.0, "BadItem"),
        ("each[2].h", 2.0, "cancelled"),
    ]
    assert [r.status for r in result.steps if r.path.startswith("each[")] == [
        StepStatus.CANCELLED,
        StepStatus.FAILED,
        StepStatus.CANCELLED,
    ]


# ---------------------------------------------------------------------------------------- delay


async def test_delay_duration_sleeps_on_the_clock() -> None:
    result, _, rt = await run([delay("pause", "1h30m"), task("after")])
    assert [(s.seconds, s.summary) for s in rt.sleeps] == [(5400.0, "pause: wait 1h30m")]
    assert rt.calls[0].elapsed == 5400.0
    assert rec(result, "pause").output == {"waited_s": 5400.0, "resumed_at": "2024-01-01T10:30:00+00:00"}
    assert rec(result, "pause").duration_s == 5400.0


async def test_delay_duration_template() -> None:
    result, _, rt = await run(
        [delay("pause", "{{ input.wait }}"), task("after")], run_input={"wait": "P1DT2M"}
    )
    assert rt.calls[0].elapsed == 86400 + 120
    result, _, rt = await run([delay("pause", "{{ input.wait }}"), task("after")], run_input={"wait": "soon"})
    assert (result.state, result.error_type) == (RunState.FAILED, "InvalidDuration")
    assert rt.calls == []


async def test_delay_until_a_timestamp() -> None:
    steps = [{"id": "until", "type": "delay", "until": "{{ input.at }}"}, task("after")]
    result, _, rt = await run(steps, run_input={"at": "2024-01-02T08:00:00-05:00"})
    assert rt.calls[0].at == datetime(2024, 1, 2, 13, 0, tzinfo=UTC)
    assert rt.sleeps[0].seconds == 28 * 3600
    # in the past: no timer at all
    result, _, rt = await run(steps, run_input={"at": "2023-12-31T00:00:00+00:00"})
    assert rt.sleeps == []
    assert rec(result, "until").output["waited_s"] == 0.0
    # no offset, or not a timestamp: the run fails saying why
    for text in ("2024-01-02T08:00:00", "tomorrow"):
        result, _, rt = await run(steps, run_input={"at": text})
        assert (result.state, result.error_type) == (RunState.FAILED, "InvalidTimestamp")
        assert rt.calls == []


@pytest.mark.parametrize(
    ("start", "opens"),
    [
        # Friday 17:30 CST; DST starts Sunday 2024-03-10: Monday 09:00 is CDT (UTC-5)
        (datetime(2024, 3, 8, 23, 30, tzinfo=UTC), datetime(2024, 3, 11, 14, 0, tzinfo=UTC)),
        # Friday 17:30 CDT; DST ends Sunday 2024-11-03: Monday 09:00 is CST (UTC-6)
        (datetime(2024, 11, 1, 22, 30, tzinfo=UTC), datetime(2024, 11, 4, 15, 0, tzinfo=UTC)),
    ],
)
async def test_delay_until_business_hours_across_dst(start: datetime, opens: datetime) -> None:
    steps = [
        {"id": "office", "type": "delay", "business_hours": {"timezone": "America/Chicago"}},
        task("call"),
    ]
    result, _, rt = await run(steps, new_runtime(start))
    assert rt.calls[0].at == opens
    assert rt.sleeps[0].seconds == (opens - start).total_seconds()
    assert rec(result, "office").output == {
        "waited_s": (opens - start).total_seconds(),
        "resumed_at": opens.isoformat(),
    }


async def test_delay_business_hours_when_already_open_does_not_sleep() -> None:
    tuesday_noon_chicago = datetime(2024, 3, 12, 17, 0, tzinfo=UTC)
    steps = [
        {"id": "office", "type": "delay", "business_hours": {"timezone": "America/Chicago"}},
        task("call"),
    ]
    result, _, rt = await run(steps, new_runtime(tuesday_noon_chicago))
    assert rec(result, "office").output == {"waited_s": 0.0, "resumed_at": tuesday_noon_chicago.isoformat()}
    assert rt.sleeps == []
    assert rt.calls[0].at == tuesday_noon_chicago


# ------------------------------------------------------------------------------------- approval


async def test_approval_approve_merges_data_into_vars() -> None:
    engine, rt = new_engine(
        [
            approval(
                "sign_off",
                ["alice", "bob"],
                message="Approve {{ input.amount }} EUR?",
                timeout="1d",
                fields=["note"],
            ),
            task(
                "pay", input={"approved_by": "{{ steps.sign_off.output.actor }}", "note": "{{ vars.note }}"}
            ),
        ],
        run_input={"amount": 250},
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    status = engine.status()
    assert status.state == RunState.AWAITING_APPROVAL
    assert status.current_steps == ["sign_off"]
    [pending] = status.pending_approvals
    assert (pending.step_id, pending.approvers, pending.message) == (
        "sign_off",
        ["alice", "bob"],
        "Approve 250 EUR?",
    )
    assert (pending.since, pending.deadline) == (rt.start, rt.start + timedelta(days=1))
    assert rec(engine.result(), "sign_off").status == StepStatus.WAITING

    decide_at(rt, engine, 2 * HOUR, APPROVE, actor="bob", reason="fine", data={"note": "ok by bob"})
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert rt.calls[0].input == {"approved_by": "bob", "note": "ok by bob"}
    assert rt.calls[0].elapsed == 2 * HOUR
    record = rec(result, "sign_off")
    assert (record.status, record.duration_s) == (StepStatus.COMPLETED, 2 * HOUR)
    assert record.output == {
        "decision": "approved",
        "actor": "bob",
        "reason": "fine",
        "data": {"note": "ok by bob"},
        "escalations": 0,
    }
    assert engine.vars == {"note": "ok by bob"}
    [decision] = engine.status().decisions
    assert (decision.actor, decision.accepted, decision.at) == ("bob", True, rt.start + timedelta(hours=2))
    assert engine.status().pending_approvals == []


@pytest.mark.parametrize(
    ("on_reject", "state", "calls"),
    [
        ("fail", RunState.FAILED, []),
        ("continue", RunState.COMPLETED, ["next", "last"]),
        ({"goto": "last"}, RunState.COMPLETED, ["last"]),
    ],
)
async def test_approval_reject(on_reject: Any, state: RunState, calls: list[str]) -> None:
    engine, rt = new_engine(
        [
            approval("gate", ["alice"], on_reject=on_reject),
            task("next", input={"d": "{{ steps.gate.output.decision }}"}),
            task("last"),
        ]
    )
    decide_at(rt, engine, 60, REJECT, actor="alice", reason="too expensive")
    result = await rt.run(engine.run())
    assert result.state == state
    assert paths(rt) == calls
    gate = rec(result, "gate")
    assert gate.output["decision"] == "rejected"
    if on_reject == "fail":
        assert (result.error_type, result.error) == (
            "ApprovalRejected",
            "step 'gate' rejected by alice: too expensive",
        )
        assert (gate.status, gate.error_type) == (StepStatus.FAILED, "ApprovalRejected")
    else:
        assert gate.status == StepStatus.COMPLETED
    if on_reject == "continue":
        assert rt.calls[0].input == {"d": "rejected"}


async def test_unlisted_approver_is_refused_and_recorded() -> None:
    engine, rt = new_engine([approval("gate", ["alice"])])
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    with pytest.raises(DecisionError, match="'mallory' may not decide step 'gate'"):
        engine.decide(APPROVE, Decision(actor="mallory"))
    with pytest.raises(DecisionError, match="no approval is pending at step 'other'"):
        engine.check_decision(APPROVE, Decision(actor="alice", step_id="other"))
    status = engine.status()
    assert status.state == RunState.AWAITING_APPROVAL
    [refused] = status.decisions
    assert (refused.actor, refused.accepted) == ("mallory", False)
    assert "may not decide" in (refused.refusal or "")
    engine.decide(APPROVE, Decision(actor="alice"))
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert [d.accepted for d in engine.status().decisions] == [False, True]
    with pytest.raises(DecisionError, match="no approval is pending"):
        engine.decide(APPROVE, Decision(actor="alice"))


async def test_several_pending_approvals_need_a_step_id() -> None:
    engine, rt = new_engine(
        [
            parallel(
                "both",
                "all",
                {"legal": [approval("legal_ok", ["lea"])], "finance": [approval("finance_ok", ["fin"])]},
            )
        ]
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: len(engine.status().pending_approvals) == 2)
    with pytest.raises(DecisionError, match="several approvals are pending"):
        engine.decide(APPROVE, Decision(actor="lea"))
    with pytest.raises(DecisionError, match="'lea' may not decide step 'finance_ok'"):
        engine.decide(APPROVE, Decision(actor="lea", step_id="finance_ok"))
    engine.decide(APPROVE, Decision(actor="lea", step_id="legal_ok"))
    await rt.run_until(lambda: len(engine.status().pending_approvals) == 1)
    assert engine.status().state == RunState.AWAITING_APPROVAL
    engine.decide(APPROVE, Decision(actor="fin"))  # only one left: no step_id needed
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert rec(result, "both").output == {
        "legal": rec(result, "legal_ok").output,
        "finance": rec(result, "finance_ok").output,
    }


async def test_the_same_approval_in_several_foreach_items_needs_its_path() -> None:
    step = {
        "id": "each",
        "type": "foreach",
        "items": "['a', 'b']",
        "concurrency": 2,
        "steps": [approval("ok", ["bob"])],
    }
    engine, rt = new_engine([step])
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: len(engine.status().pending_approvals) == 2)
    with pytest.raises(
        DecisionError, match=r"step 'ok' is pending in several places \(each\[0\]\.ok, each\[1\]\.ok\)"
    ):
        engine.decide(APPROVE, Decision(actor="bob", step_id="ok"))
    engine.decide(APPROVE, Decision(actor="bob", step_id="each[1].ok"))
    engine.decide(APPROVE, Decision(actor="bob", step_id="each[0].ok"))
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED


async def test_approval_fields_restrict_the_form_data() -> None:
    engine, rt = new_engine(
        [
            approval("gate", ["alice"], fields=[{"name": "amount", "type": "number"}, "comment"]),
            set_vars("s", {"seen": "{{ vars.amount }}"}),
        ]
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    assert engine.status().pending_approvals[0].fields == ["amount", "comment"]
    with pytest.raises(DecisionError, match=r"unknown form fields \['role'\]"):
        engine.decide(APPROVE, Decision(actor="alice", data={"amount": 5, "role": "admin"}))
    engine.decide(APPROVE, Decision(actor="alice", data={"amount": 5}))
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert engine.vars == {"amount": 5, "seen": 5}


async def test_escalation_runs_steps_widens_approvers_and_repeats_then_times_out() -> None:
    engine, rt = new_engine(
        [
            approval(
                "gate",
                ["alice"],
                timeout="4h",
                escalation={
                    "after": "1h",
                    "add_approvers": ["boss"],
                    "max_escalations": 2,
                    "steps": [task("nudge", "notify", input={"to": "boss", "n": "{{ index | default(0) }}"})],
                },
            )
        ]
    )
    rt.returning("notify", "sent")
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: len(rt.calls) == 1)
    [pending] = engine.status().pending_approvals
    assert (pending.approvers, pending.escalations) == (["alice", "boss"], 1)
    await rt.run_until(lambda: len(rt.calls) == 2)
    [pending] = engine.status().pending_approvals
    assert (pending.approvers, pending.escalations) == (["alice", "boss"], 2)  # boss added once
    result = await rt.run(main)
    assert [(c.path, c.elapsed) for c in rt.calls] == [
        ("gate/escalation1/nudge", HOUR),
        ("gate/escalation2/nudge", 2 * HOUR),
    ]
    assert len({c.idempotency_key for c in rt.calls}) == 2
    assert (result.state, result.error_type) == (RunState.FAILED, "ApprovalTimedOut")
    assert result.error == "step 'gate': no decision within 4h"
    assert rt.elapsed == 4 * HOUR
    assert rec(result, "gate").duration_s == 4 * HOUR


async def test_an_escalation_adding_many_approvers_to_many_is_linear() -> None:
    """A probe: 50,000 names added to 50,000 approvers were each looked for in the list, past the
    deadlock limit at every attempt. Not a timed assertion on speed: a hang detector, with the
    CPU time of this process."""
    import time

    approvers = [f"a{i}" for i in range(50_000)]
    added = [f"b{i}" for i in range(50_000)] + ["a7", "b3"]
    engine, rt = new_engine(
        [approval("gate", approvers, timeout="2h", escalation={"after": "1h", "add_approvers": added})]
    )
    main = rt.spawn(engine.run())
    started = time.process_time()
    await rt.run_until(
        lambda: (
            bool(engine.status().pending_approvals) and engine.status().pending_approvals[0].escalations == 1
        )
    )
    assert time.process_time() - started < 10
    [pending] = engine.status().pending_approvals
    # The same names in the same order as before: a7 was there already, and the second b3 is
    # added again, as the names are looked for among the approvers before the escalation.
    assert pending.approvers == [*approvers, *added[:50_000], "b3"]
    result = await rt.run(main)
    assert (result.state, result.error_type) == (RunState.FAILED, "ApprovalTimedOut")


async def test_escalated_approver_may_decide_only_after_the_escalation() -> None:
    engine, rt = new_engine(
        [approval("gate", ["alice"], escalation={"after": "30m", "add_approvers": ["boss"]})]
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    with pytest.raises(DecisionError):
        engine.decide(APPROVE, Decision(actor="boss"))
    decide_at(rt, engine, 45 * 60, APPROVE, actor="boss")
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert rec(result, "gate").output["escalations"] == 1
    assert rt.elapsed == 45 * 60


@pytest.mark.parametrize(
    ("on_timeout", "state", "error_type", "calls"),
    [
        ("approve", RunState.COMPLETED, None, ["next", "last"]),
        ("reject", RunState.FAILED, "ApprovalRejected", []),  # on_reject defaults to fail
        ("fail", RunState.FAILED, "ApprovalTimedOut", []),
        ({"goto": "last"}, RunState.COMPLETED, None, ["last"]),
    ],
)
async def test_approval_timeout(
    on_timeout: Any, state: RunState, error_type: str | None, calls: list[str]
) -> None:
    result, _, rt = await run(
        [
            approval("gate", ["alice"], timeout="2d", on_timeout=on_timeout),
            task(
                "next", input={"d": "{{ steps.gate.output.decision }}", "by": "{{ steps.gate.output.actor }}"}
            ),
            task("last"),
        ]
    )
    assert (result.state, result.error_type) == (state, error_type)
    assert paths(rt) == calls
    assert all(c.elapsed == 2 * 86400 for c in rt.calls)
    assert rt.elapsed == 2 * 86400
    if on_timeout == "approve":
        assert rt.calls[0].input == {"d": "approved", "by": "timeout"}


async def test_approval_timeout_reject_with_on_reject_continue() -> None:
    result, _, rt = await run(
        [
            approval("gate", ["alice"], timeout="1h", on_timeout="reject", on_reject="continue"),
            task("next", input={"d": "{{ steps.gate.output.decision }}"}),
        ]
    )
    assert result.state == RunState.COMPLETED
    assert rt.calls[0].input == {"d": "rejected"}


# -------------------------------------------------------------------- set, succeed, fail, when


async def test_set_makes_vars_visible_to_later_steps() -> None:
    result, engine, rt = await run(
        [
            set_vars("first", {"total": "{{ input.price * input.qty }}", "label": "order-{{ input.id }}"}),
            set_vars("second", {"total": "{{ vars.total + 5 }}"}),
            task(
                "use",
                input={
                    "total": "{{ vars.total }}",
                    "label": "{{ vars.label }}",
                    "set": "{{ steps.first.output }}",
                },
            ),
        ],
        run_input={"price": 10, "qty": 3, "id": 9},
    )
    assert rt.calls[0].input == {"total": 35, "label": "order-9", "set": {"total": 30, "label": "order-9"}}
    assert engine.vars == {"total": 35, "label": "order-9"}
    assert result.output == {"total": 35, "label": "order-9"}


async def test_succeed_ends_the_run_early_with_its_output() -> None:
    result, _, rt = await run(
        [
            task("a", input={"x": 5}, compensate=[task("undo")]),
            {
                "id": "done",
                "type": "succeed",
                "output": {"from": "{{ steps.a.output.x }}"},
                "message": "early",
            },
            task("never"),
        ],
        output={"ignored": True},
    )
    assert result.state == RunState.COMPLETED
    assert result.output == {"from": 5}
    assert paths(rt) == ["a"]  # no compensation on success
    assert rec(result, "done").status == StepStatus.COMPLETED


async def test_succeed_inside_a_condition_branch_ends_the_run() -> None:
    result, _, rt = await run(
        [
            {
                "id": "c",
                "type": "condition",
                "if": "input.skip",
                "then": {"steps": [{"id": "stop", "type": "succeed", "output": "skipped"}]},
            },
            task("rest"),
        ],
        run_input={"skip": True},
    )
    assert (result.state, result.output) == (RunState.COMPLETED, "skipped")
    assert rt.calls == []


async def test_fail_step_ends_the_run_with_its_error_type_after_compensating() -> None:
    result, _, rt = await run(
        [
            task("charge", "charge", compensate=[task("refund", "refund")]),
            {
                "id": "stop",
                "type": "fail",
                "message": "fraud score {{ input.score }}",
                "error_type": "Fraud.Suspected",
            },
            task("never"),
        ],
        saga_runtime(),
        {"score": 97},
    )
    assert (result.state, result.error_type, result.error) == (
        RunState.FAILED,
        "Fraud.Suspected",
        "fraud score 97",
    )
    assert paths(rt) == ["charge", "compensate/charge/refund"]
    stop = rec(result, "stop")
    assert (stop.status, stop.error, stop.error_type) == (
        StepStatus.FAILED,
        "fraud score 97",
        "Fraud.Suspected",
    )


async def test_when_false_skips_the_step() -> None:
    result, _, rt = await run(
        [
            task("maybe", when="input.send", input={"x": 1}),
            task("always", input={"status": "{{ steps.maybe.status }}"}),
            task("also", when="steps.maybe.status == 'skipped'"),
        ],
        run_input={"send": False},
    )
    assert paths(rt) == ["always", "also"]
    assert rt.calls[0].input == {"status": "skipped"}
    maybe = rec(result, "maybe")
    assert (maybe.status, maybe.attempts, maybe.duration_s) == (StepStatus.SKIPPED, 0, 0.0)
    result, _, rt = await run([task("maybe", when="input.send")], run_input={"send": True})
    assert paths(rt) == ["maybe"]


# ---------------------------------------------------------------------------- keys and status


async def test_idempotency_keys_are_stable_per_step_and_distinct_per_visit_and_iteration() -> None:
    steps = [
        task("once", "fetch"),
        foreach("each", "input.xs", [task("inner")], concurrency=2),
        set_vars("tick", {"n": "{{ (vars.n | default(0)) + 1 }}"}, max_visits=3),
        task("again", max_visits=3),
        {"id": "loop", "type": "condition", "if": "vars.n < 2", "then": {"goto": "tick"}},
    ]
    runs = []
    for _ in range(2):
        rt = new_runtime()
        rt.failing("fetch", times=1)
        result, _, rt = await run(steps, rt, {"xs": ["a", "b"]})
        assert result.state == RunState.COMPLETED
        runs.append([(c.path, c.attempt, c.activity_id, c.idempotency_key) for c in rt.calls])
    assert runs[0] == [
        ("once", 1, "once", "wf-1/run-1/once"),  # retries keep the key
        ("once", 2, "once", "wf-1/run-1/once"),
        ("each[0].inner", 1, "each[0].inner", "wf-1/run-1/each[0].inner"),
        ("each[1].inner", 1, "each[1].inner", "wf-1/run-1/each[1].inner"),
        ("again", 1, "again", "wf-1/run-1/again"),
        ("again", 1, "again#2", "wf-1/run-1/again#2"),
    ]
    assert runs[1] == runs[0]  # deterministic: the same run makes the same calls


async def test_status_reports_current_steps_and_records() -> None:
    engine, rt = new_engine(
        [
            work("prep", 2),
            parallel(
                "fan", "all", {"a": [delay("wait_a", "10s")], "b": [work("job_b", 4), delay("wait_b", "1m")]}
            ),
        ]
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: rt.elapsed >= 4 and "wait_b" in engine.active)
    status = engine.status()
    assert status.state == RunState.RUNNING
    assert status.current_steps == ["fan", "wait_a", "wait_b"]
    assert (status.definition, status.version) == ("test", 1)
    by_path = {r.path: r for r in status.steps}
    assert (by_path["prep"].attempts, by_path["prep"].duration_s, by_path["prep"].status) == (
        1,
        2.0,
        StepStatus.COMPLETED,
    )
    assert by_path["job_b"].duration_s == 4.0
    assert by_path["wait_a"].status == StepStatus.RUNNING
    assert by_path["fan"].finished_at is None
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert engine.status().current_steps == []
    assert rec(result, "fan").duration_s == 64.0
    assert rec(result, "wait_a").started_at == rt.start + timedelta(seconds=2)
    assert rt.state_changes > 0


# ------------------------------------------------------------------------------ template errors


@pytest.mark.parametrize(
    ("step", "where"),
    [
        (task("bad", input={"x": "{{ input.missing.deeper }}"}), "bad"),
        ({"id": "bad", "type": "condition", "if": "input.nope > 1", "then": {"steps": [task("x")]}}, "bad"),
        (set_vars("bad", {"v": "{{ 1 / 0 }}"}), "bad"),
        (task("bad", when="input.absent.field"), "bad"),
    ],
)
async def test_template_errors_fail_the_run_naming_the_step(step: dict[str, Any], where: str) -> None:
    result, _, rt = await run([task("first"), step, task("never")], run_input={"present": 1})
    assert (result.state, result.error_type) == (RunState.FAILED, "TemplateError")
    assert (result.error or "").startswith(f"step '{where}': template error in ")
    assert paths(rt) == ["first"]
    bad = rec(result, where)
    assert (bad.status, bad.error_type) == (StepStatus.FAILED, "TemplateError")


async def test_template_error_in_the_definition_output() -> None:
    result, _, _ = await run([task("a")], output="{{ steps.a.output.nothing.here }}")
    assert (result.state, result.error_type) == (RunState.FAILED, "TemplateError")
    assert "template error" in (result.error or "")
