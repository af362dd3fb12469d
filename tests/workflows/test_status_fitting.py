"""The ``status`` answer always fits in Temporal's payload limit, whatever the run holds: a query
writes no history, so the workflow fits what it answers (``workflows.generic._fitted_status``).
These build statuses with the engine (``tests/interpreter``'s fake runtime) and fit them with the
worker's payload converter; ``tests/workflows/test_run_closing_limits.py`` does the same on a dev
server. Each case passed the limit after fitting before (found by a review): nothing in it could be
left out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

import workflows.generic
from interpreter.engine import PATCH_DECISIONS_KEPT, Engine
from interpreter.state import ApprovalsQuery, DecisionKind, PendingApproval, RunStatus
from tests.interpreter.test_engine import decide_at, new_engine, new_runtime
from tests.interpreter.test_engine_messages import REASON, TURNS, _loop
from tests.workflows.support import foreach_branches
from workflows.generic import _approvals_page, _fitted_status

LIMIT = 2 * 1024 * 1024 - 1024  # what the workflow gives it (Temporal's 2 MiB less the codec's margin)


def _bytes(value: Any) -> int:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0].ByteSize()


@pytest.fixture(autouse=True)
def _converter(monkeypatch: pytest.MonkeyPatch) -> None:
    # Outside a workflow: the worker's converter measured directly (the workflow asks its own).
    monkeypatch.setattr(workflows.generic, "_payload_bytes", _bytes)


async def _waiting(engine: Engine, count: int) -> tuple[RunStatus, asyncio.Future[Any]]:
    """The engine's status once ``count`` approvals or tasks wait (its run left running)."""
    running = asyncio.ensure_future(engine.runtime.run(engine.run()))  # type: ignore[attr-defined]
    for _ in range(10_000):
        await asyncio.sleep(0)
        if len(engine.status().pending_approvals) >= count:
            return engine.status(), running
    await _stop(running)
    raise AssertionError(f"never {count} waiting: {len(engine.status().pending_approvals)}")


async def _stop(running: asyncio.Future[Any]) -> None:
    running.cancel()
    with contextlib.suppress(BaseException):
        await running


def hundreds_of_tasks(assignee: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Steps and input of a run with 500 tasks for ``assignee`` waiting at once (5 branches of a
    100-item foreach), each with a title and a description of 499 control characters: each under
    the cut, 3 KB as JSON."""
    task = {
        "type": "human_task",
        "assignee": assignee,
        "title": "{{ input.t }}",
        "description": "{{ input.t }}",
    }
    steps = [foreach_branches(5, lambda n: {"id": f"review{n}", **task})]
    return steps, {"items": list(range(100)), "t": "\u0001" * 499}


async def test_hundreds_of_tasks_waiting_at_once_are_listed_as_far_as_they_fit() -> None:
    steps, run_input = hundreds_of_tasks("ann")
    engine, _ = new_engine(steps, new_runtime(), run_input)
    status, running = await _waiting(engine, 490)  # (the rest wait on the fake clock)
    try:
        assert _bytes(status) > LIMIT
        fitted = _fitted_status(status, limit=LIMIT)
        assert _bytes(fitted) <= LIMIT
        assert "pending_approvals" in fitted.left_out
        kept = fitted.pending_approvals
        assert 100 < len(kept) < len(status.pending_approvals)
        assert [a.path for a in kept] == [a.path for a in status.pending_approvals[: len(kept)]]
        assert fitted.pending_approvals_dropped == len(status.pending_approvals) - len(kept)
        # The pending_approvals query answers them all, in full, page by page, each within the
        # limit (before it, the inbox showed the ones cut as decided); brief, in fewer pages.
        assert _all_pages(status.pending_approvals) == _in_order(status.pending_approvals)
        brief = _all_pages(status.pending_approvals, brief=True)
        assert [a.path for a in brief] == [a.path for a in _in_order(status.pending_approvals)]
        # One decided between two pages moves none of the others (a review: paged by position,
        # the one after it was never listed).
        first = _approvals_page(status.pending_approvals, ApprovalsQuery(), limit=LIMIT)
        decided = first.approvals[0].path
        left = [a for a in status.pending_approvals if a.path != decided]
        last = first.approvals[-1]
        after = ApprovalsQuery(after_since=last.since, after_path=last.path)
        rest = _all_pages(left, ask=after)
        assert [a.path for a in first.approvals[1:] + rest] == [a.path for a in _in_order(left)]
    finally:
        await _stop(running)


def _in_order(pending: list[PendingApproval]) -> list[PendingApproval]:
    """``pending`` in the query's order: since, then path."""
    return sorted(pending, key=lambda a: (a.since, a.path))


def _all_pages(
    pending: list[PendingApproval], *, brief: bool = False, ask: ApprovalsQuery | None = None
) -> list[PendingApproval]:
    """What the ``pending_approvals`` query answers, page after page (from ``ask``'s cursor), each
    page within the limit."""
    found: list[PendingApproval] = []
    ask = ask or ApprovalsQuery(brief=brief)
    while True:
        page = _approvals_page(pending, ask, limit=LIMIT)
        assert _bytes(page) <= LIMIT
        assert (page.total, page.left_out) == (len(pending), [])
        found += page.approvals
        if not page.more:
            return found
        assert len(page.approvals) < len(pending)  # (a page each: the test pages)
        last = page.approvals[-1]
        ask = ApprovalsQuery(after_since=last.since, after_path=last.path, brief=brief)


def test_an_approval_too_large_for_one_answer_alone_has_its_texts_cut_first() -> None:
    form = [
        {"name": f"f{i}", "type": "enum", "values": [f"{n:03d}" + "v" * 197 for n in range(100)]}
        for i in range(10)
    ]
    huge = PendingApproval.model_validate_json(
        json.dumps(
            {
                "step_id": "review",
                "path": "review",
                "approvers": ["ann"],
                "message": "\u0001" * 250_000,  # 1.5 MB as JSON, as the description
                "description": "\u0001" * 250_000,
                "form": form,
                "since": "2026-12-01T00:00:00Z",
            }
        )
    )
    other = huge.model_copy(update={"path": "other", "message": "", "description": ""})
    page = _approvals_page([other, huge], ApprovalsQuery(path="review"), limit=LIMIT)
    assert _bytes(page) <= LIMIT
    assert (page.total, page.more, page.left_out) == (2, False, ["message"])
    [answered] = page.approvals
    assert answered.message.endswith("… (250000 characters)")
    assert (answered.description, answered.form) == (huge.description, huge.form)  # as far as it fits
    both = _approvals_page([huge, other], ApprovalsQuery(), limit=LIMIT)
    assert ([a.path for a in both.approvals], both.more) == (["other"], True)  # then the large one alone
    assert _approvals_page([other, huge], ApprovalsQuery(path="gone"), limit=LIMIT).approvals == []
    # A definition's approvers are bounded by its size alone (a review: with the payload store,
    # past what one answer takes): the first 50 are kept, last.
    crowd = other.model_copy(update={"approvers": [f"person-{n:06d}-" + "x" * 20 for n in range(100_000)]})
    page = _approvals_page([crowd], ApprovalsQuery(), limit=LIMIT)
    assert _bytes(page) <= LIMIT
    assert (page.left_out, page.approvals[0].approvers) == (["form", "approvers"], crowd.approvers[:50])


async def test_large_forms_of_waiting_tasks_are_left_out_their_names_kept() -> None:
    values = [f"{n:03d}" + "v" * 197 for n in range(100)]
    form = [{"name": f"f{i}", "type": "enum", "values": values} for i in range(10)]
    task = {
        "id": "review",
        "type": "human_task",
        "assignee": "ann",
        "title": "Review {{ item }}",
        "fields": form,
    }
    each = {"id": "each", "type": "foreach", "items": "input.items", "concurrency": 100, "steps": [task]}
    engine, _ = new_engine([each], new_runtime(), {"items": list(range(100))})
    status, running = await _waiting(engine, 100)
    try:
        assert _bytes(status) > LIMIT
        fitted = _fitted_status(status, limit=LIMIT)
        assert _bytes(fitted) <= LIMIT
        assert fitted.left_out == ["pending_approvals.form"]
        assert len(fitted.pending_approvals) == 100
        assert all(
            a.form == [] and a.fields == [f"f{i}" for i in range(10)] for a in fitted.pending_approvals
        )
        # The query has each form in full (the inbox shows it; before, it showed the form empty).
        one = _approvals_page(
            status.pending_approvals, ApprovalsQuery(path=status.pending_approvals[42].path), limit=LIMIT
        )
        assert one.approvals == [status.pending_approvals[42]]
        assert len(one.approvals[0].form) == 10
        assert _all_pages(status.pending_approvals) == _in_order(status.pending_approvals)
        assert all(a.form == [] for a in _all_pages(status.pending_approvals, brief=True))
    finally:
        await _stop(running)


async def test_decisions_kept_by_a_run_from_before_decisions_kept_are_listed_as_far_as_they_fit() -> None:
    # A run of an earlier generation past 100 decisions when its worker was upgraded keeps them
    # all (its replay answers the patch False): the answer keeps the most recent that fit.
    rt = new_runtime()
    rt.declined.add(PATCH_DECISIONS_KEPT)
    engine, rt = new_engine(_loop(), rt, limits={"max_step_executions": 4 * TURNS})
    for turn in range(TURNS):
        decide_at(rt, engine, turn + 1, DecisionKind.APPROVE, actor="ann", reason=REASON)
    await rt.run(engine.run())
    status = engine.status()
    assert len(status.decisions) == TURNS
    fitted = _fitted_status(status, limit=LIMIT)
    assert _bytes(fitted) <= LIMIT
    assert fitted.left_out == ["decisions"]  # its small variables and output kept
    assert fitted.decisions_dropped + len(fitted.decisions) == TURNS
    assert fitted.decisions == status.decisions[TURNS - len(fitted.decisions) :]  # the most recent
    assert len(fitted.decisions) > TURNS // 2
