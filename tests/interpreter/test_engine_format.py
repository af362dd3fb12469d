"""Engine behaviour of format features: a business-hours zone from the run input, an approval's
compensation, the README's branching on an HTTP status."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from interpreter.engine import ActionCall, Engine, RunInfo
from interpreter.state import RunState, StepStatus
from interpreter.validate import load_definition
from tests.interpreter.test_engine import (
    APPROVE,
    REJECT,
    approval,
    decide_at,
    new_engine,
    new_runtime,
    paths,
    rec,
    run,
    task,
    work,
)

FAMILY_HOURS = {"timezone": "{{ input.family.timezone }}", "start": "09:00", "end": "17:00"}


@pytest.mark.parametrize(
    ("zone", "opens"),
    [
        # Friday 2024-03-08 23:30 UTC: Saturday already in Tokyo, Friday evening in Chicago
        ("America/Chicago", datetime(2024, 3, 11, 14, 0, tzinfo=UTC)),  # Monday 09:00 CDT
        ("Asia/Tokyo", datetime(2024, 3, 11, 0, 0, tzinfo=UTC)),  # Monday 09:00 JST
        ("Europe/Berlin", datetime(2024, 3, 11, 8, 0, tzinfo=UTC)),  # Monday 09:00 CET
    ],
)
async def test_one_definition_waits_for_each_familys_own_business_hours(zone: str, opens: datetime) -> None:
    start = datetime(2024, 3, 8, 23, 30, tzinfo=UTC)
    steps = [{"id": "office", "type": "delay", "business_hours": FAMILY_HOURS}, task("call")]
    result, _, rt = await run(steps, new_runtime(start), run_input={"family": {"timezone": zone}})
    assert result.state == RunState.COMPLETED
    assert rt.calls[0].at == opens


@pytest.mark.parametrize("zone", ["Mars/Olympus", "localtime", 42, None])
async def test_an_invalid_zone_at_run_time_is_a_clear_step_error(zone: Any) -> None:
    steps = [{"id": "office", "type": "delay", "business_hours": FAMILY_HOURS}, task("call")]
    result, _, rt = await run(steps, run_input={"family": {"timezone": zone}})
    assert (result.state, result.error_type) == (RunState.FAILED, "InvalidTimeZone")
    assert result.error is not None
    assert "business_hours.timezone" in result.error
    assert rec(result, "office").status == StepStatus.FAILED
    assert rt.calls == []


async def test_an_approved_approval_is_compensated_when_the_run_fails_later() -> None:
    engine, rt = new_engine(
        [
            work("reserve", compensate=[task("release")]),
            approval(
                "gate",
                ["alice"],
                compensate=[task("tell_alice", input={"d": "{{ steps.gate.output.actor }}"})],
            ),
            work("ship", fail="Carrier"),
        ]
    )
    decide_at(rt, engine, 60, APPROVE, actor="alice", reason="ok")
    result = await rt.run(engine.run())
    assert (result.state, result.error_type) == (RunState.FAILED, "Carrier")
    # most recent first: the approval's compensation, then the reservation's
    assert paths(rt)[-2:] == ["compensate/gate/tell_alice", "compensate/reserve/release"]
    assert rt.calls[-2].input == {"d": "alice"}


@pytest.mark.parametrize(("on_reject", "compensated"), [("fail", False), ("continue", True)])
async def test_a_rejected_approval_is_compensated_only_if_it_completed(
    on_reject: str, compensated: bool
) -> None:
    engine, rt = new_engine(
        [
            approval("gate", ["alice"], on_reject=on_reject, compensate=[task("undo_gate")]),
            work("ship", fail="Carrier"),
        ]
    )
    decide_at(rt, engine, 60, REJECT, actor="alice", reason="no")
    result = await rt.run(engine.run())
    assert result.state == RunState.FAILED
    assert ("compensate/gate/undo_gate" in paths(rt)) is compensated


@pytest.mark.parametrize(
    ("on_timeout", "compensated"), [({"goto": "after"}, False), ("approve", True), ("reject", False)]
)
@pytest.mark.parametrize("patched", [True, False])
async def test_an_approval_that_timed_out_is_compensated_only_if_its_timeout_decided(
    on_timeout: Any, compensated: bool, patched: bool
) -> None:
    """Found by a review: an approval whose timeout jumped to its ``on_timeout`` goto joined the
    saga, so a later failure ran "undo what was approved" though nobody approved anything. From
    generation 28 (patch approval-timeout-saga) it joins only when it completed: approved (by a
    person or by ``on_timeout: approve``), or rejected with ``continue`` or a goto."""
    rt = new_runtime()
    if not patched:  # a run of an earlier generation: as before
        rt.declined.add("approval-timeout-saga")
    result, _, rt = await run(
        [
            approval("gate", ["alice"], timeout="1h", on_timeout=on_timeout, compensate=[task("undo_gate")]),
            task("after"),
            work("ship", fail="Carrier"),
        ],
        rt,
    )
    assert result.state == RunState.FAILED
    expected = compensated or (not patched and isinstance(on_timeout, dict))
    assert ("compensate/gate/undo_gate" in paths(rt)) is expected, paths(rt)


async def test_a_cancelled_run_compensates_a_completed_approval() -> None:
    engine, rt = new_engine([approval("gate", ["alice"], compensate=[task("undo_gate")]), work("long", 3600)])
    decide_at(rt, engine, 60, APPROVE, actor="alice", reason="ok")
    main = rt.spawn(engine.run())
    rt.at(600, main.cancel)
    result = await rt.run(main)
    assert result.state == RunState.CANCELLED
    assert paths(rt)[-1] == "compensate/gate/undo_gate"


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(("status", "taken"), [(404, "found/create"), (200, "found/update")])
async def test_the_readmes_branching_on_a_status_works(status: int, taken: str) -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("### The `http` action", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    definition = load_definition(json.loads(block))
    rt = new_runtime()

    async def http(call: ActionCall, attempt: int) -> Any:
        return {"status_code": status if call.step_id == "lookup" else 200, "headers": {}, "body": None}

    rt.on("http", http)
    engine = Engine(definition, {"api": "http://crm", "family": "f-1"}, rt, RunInfo("wf", "run", rt.now()))
    result = await rt.run(engine.run())
    assert result.state == RunState.COMPLETED
    assert [c.step_id for c in rt.calls] == ["lookup", taken.split("/")[1]]
