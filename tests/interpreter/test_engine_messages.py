"""How much of what people send a run keeps: a long loop of decisions stays bounded (patch
``decisions-kept``), in the status and in what the run carries on continuing as new."""

from __future__ import annotations

import pytest

from interpreter.engine import PATCH_DECISIONS_KEPT
from interpreter.state import MAX_DECISIONS, DecisionKind, RunState
from tests.interpreter.test_engine import decide_at, new_engine, new_runtime

TURNS = 700
REASON = "\u0001" * 1000  # within a decision's bounds (1,000 characters); clipped to 500 when kept


def _loop() -> list[dict[str, object]]:
    """An approval asked again and again (a reminder sequence that asks every day)."""
    return [
        {"id": "zero", "type": "set", "vars": {"n": 0}},
        {"id": "ask", "type": "approval", "approvers": ["ann"], "max_visits": TURNS},
        {"id": "bump", "type": "set", "vars": {"n": "{{ vars.n + 1 }}"}, "max_visits": TURNS},
        {
            "id": "again",
            "type": "condition",
            "if": f"vars.n < {TURNS}",
            "then": {"goto": "ask"},
            "max_visits": TURNS,
        },
    ]


@pytest.mark.parametrize("kept", [False, True], ids=["before", "decisions-kept"])
async def test_a_long_loop_of_decisions_keeps_the_last_ones_and_counts_the_rest(kept: bool) -> None:
    rt = new_runtime()
    if not kept:
        rt.declined.add(PATCH_DECISIONS_KEPT)
    engine, rt = new_engine(_loop(), rt, limits={"max_step_executions": 4 * TURNS})
    for turn in range(TURNS):
        decide_at(rt, engine, turn + 1, DecisionKind.APPROVE, actor="ann", reason=REASON)
    result = await rt.run(engine.run())
    assert result.state == RunState.COMPLETED
    status = engine.status()
    # (Step records are fitted to the limit by the workflow, the oldest left out: not counted here.)
    size = len(status.model_copy(update={"steps": []}).model_dump_json())
    if not kept:  # the finding: every decision kept, the answer past Temporal's 2 MiB
        assert len(status.decisions) == TURNS
        assert size > 2 * 1024 * 1024, size
        return
    assert len(status.decisions) == MAX_DECISIONS
    assert status.decisions_dropped == TURNS - MAX_DECISIONS
    assert all(d.accepted and d.reason.startswith(REASON[:500]) for d in status.decisions)
    assert size < 400 * 1024, size
