"""Continue-as-new in a ``join: any`` ``parallel`` step after one of its branches failed (patch
``continue-as-new-failed-branches``), driven by the fake runtime: the failed branch is carried as
failed, the others' loops go on in later runs, and the step ends as in an uninterrupted run: with
the first branch to succeed, or, when every branch failed, with the first failure."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from interpreter.continuation import read_continuation
from interpreter.engine import PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES
from interpreter.model import Definition
from interpreter.state import RunState
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_continuation_lane_events import _chain, _straight
from tests.interpreter.test_continuation_parallel import _engine, _looping
from tests.interpreter.test_engine import delay, make_definition, new_runtime, set_vars, work


def _any(*branches: dict[str, Any], join: str = "any") -> Definition:
    """'par' (``join``) over ``branches``, then 'after' showing its output."""
    return make_definition(
        [
            set_vars("init", {"a": 0}),
            {"id": "par", "type": "parallel", "join": join, "branches": list(branches)},
            work("after", value="{{ steps.par.output }}"),
        ]
    )


def _loop(fail: str | None = None) -> dict[str, Any]:
    """A branch looping 8 turns of 1 s (then failing with ``fail``, if given)."""
    steps = _looping("l", "a", 8, 1)
    if fail is not None:
        steps.append(work("l_fail", fail=fail))
    return {"id": "loop", "steps": steps}


def _failing(branch: str, seconds: float, error: str) -> dict[str, Any]:
    return {"id": branch, "steps": [work(f"{branch}_work", seconds, fail=error)]}


def _failed_entries(snapshots: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [
        (lane["id"], lane["failed"]["error_type"], lane["failed"]["rank"])
        for s in snapshots
        if "parallel" in s["kinds"]
        for lane in s["kinds"]["parallel"]["branches"]
        if "failed" in lane
    ]


def _calls(rt: FakeRuntime) -> list[tuple[str, float]]:
    return sorted((c.activity_id, c.elapsed) for c in rt.calls)


async def test_after_a_branch_failed_the_others_still_continue_as_new_and_one_wins() -> None:
    """A branch fails at 1 s; the loop goes on through later runs (the failed branch carried as
    failed) and wins the step, as in the uninterrupted run."""
    definition = _any(_failing("quick", 1, "Broke"), _loop())
    straight_rt = new_runtime()
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert straight.state == RunState.COMPLETED, straight.error

    rt = new_runtime()
    result, _, snapshots = await _chain(definition, rt)
    failed = _failed_entries(snapshots)
    assert failed, snapshots
    assert set(failed) == {("quick", "Broke", 0)}
    assert len([s for s in snapshots if _failed_entries([s])]) >= 2  # carried through switches
    assert (result.state, result.output, result.error) == (straight.state, straight.output, straight.error)
    after = next(r.output for r in result.steps if r.id == "after")
    assert after["winner"] == "loop"
    assert _calls(rt) == _calls(straight_rt)
    assert [c.step_id for c in rt.calls].count("quick_work") == 1


async def test_when_every_branch_failed_the_first_failure_is_the_steps_across_the_chain() -> None:
    """Branch 'late' fails at 3 s, 'early' (listed after it) at 1 s, the loop after its 8 turns:
    the step fails with 'early''s error, as in the uninterrupted run, although the next run fails
    the carried branches again in the order they are listed."""
    definition = _any(_failing("late", 3, "Late"), _loop(fail="Loop"), _failing("early", 1, "Early"))
    straight_rt = new_runtime()
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert (straight.state, straight.error_type) == (RunState.FAILED, "Early")

    rt = new_runtime()
    result, _, snapshots = await _chain(definition, rt)
    assert {("early", "Early", 0), ("late", "Late", 1)} <= set(_failed_entries(snapshots))
    assert (result.state, result.error, result.error_type) == (
        straight.state,
        straight.error,
        straight.error_type,
    )
    assert _calls(rt) == _calls(straight_rt)


@pytest.mark.parametrize("long_fails", [True, False])
async def test_a_branch_failing_at_once_in_the_next_run_ranks_after_the_carried_failure(
    long_fails: bool,
) -> None:
    """'first' resumes right at a ``fail`` step in the next run and fails there before the carried
    'quick' failed again: it ranks after 'quick' (which failed first), so the step still reports
    'quick''s error when every branch failed, and the next snapshot's ranks stay 0 and 1 (before,
    both ranked 0: the wrong error, or the chain refused its own snapshot; found by a probe)."""
    last = work("long_fail", fail="Long") if long_fails else work("long_ok", value="ok")
    definition = _any(
        {"id": "first", "steps": [work("x", 2), {"id": "boom", "type": "fail", "message": "Boom"}]},
        _failing("quick", 1, "Quick"),
        {"id": "long", "steps": [delay("nap", "100s"), last]},
    )
    straight_rt = new_runtime()
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    assert straight.state == (RunState.FAILED if long_fails else RunState.COMPLETED)

    rt = new_runtime()
    result, _, _ = await _chain(definition, rt, every=1)
    assert (result.state, result.error, result.error_type, result.output) == (
        straight.state,
        straight.error,
        straight.error_type,
        straight.output,
    )
    if long_fails:
        assert result.error_type == "Quick"


async def test_the_chain_reads_the_ranks_it_carried_after_a_branch_failed_at_once() -> None:
    """As above, with a fourth branch that keeps the chain switching: the snapshot after 'first'
    failed carries ranks 0 and 1 and the next run reads it (before: ranks 0 and 0, which the next
    run refused as forged)."""
    definition = _any(
        {"id": "first", "steps": [work("x", 2), {"id": "boom", "type": "fail", "message": "Boom"}]},
        _failing("quick", 1, "Quick"),
        {"id": "long", "steps": [delay("nap", "100s"), work("long_ok", value="ok")]},
        {
            "id": "looper",
            "steps": [delay("wait3", "3s"), *(work(f"w{i}", 1) for i in range(3)), work("w3", 1, fail="L")],
        },
    )
    straight_rt = new_runtime()
    straight = await straight_rt.run(_straight(definition, straight_rt).run())
    rt = new_runtime()
    result, _, snapshots = await _chain(definition, rt, every=1)
    assert {("quick", "Quick", 0), ("first", "WorkflowFailed", 1)} <= set(_failed_entries(snapshots))
    assert (
        (result.state, result.output)
        == (straight.state, straight.output)
        == (RunState.COMPLETED, result.output)
    )
    assert _calls(rt) == _calls(straight_rt)


def _generation5() -> FakeRuntime:
    """A runtime for a run started at generation 5: the patch does not apply."""
    rt = new_runtime()
    rt.declined.add(PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES)
    return rt


async def test_a_run_of_an_earlier_generation_keeps_the_branches_in_one_run_after_a_failure() -> None:
    definition = _any(_failing("quick", 1, "Broke"), _loop())
    rt = _generation5()
    result, _, snapshots = await _chain(definition, rt)
    assert result.state == RunState.COMPLETED
    assert not _failed_entries(snapshots)
    # The failure (at 1 s, with the loop's first turn) kept the step in one run: no switch in it.
    assert not [s for s in snapshots if "parallel" in s["kinds"]]


async def _snapshot_with_a_failure() -> dict[str, Any]:
    definition = _any(_failing("quick", 1, "Broke"), _loop())
    rt = new_runtime()
    _, _, snapshots = await _chain(definition, rt)
    return next(s for s in snapshots if _failed_entries([s]))


@pytest.mark.parametrize(
    ("forge", "problem"),
    [
        (lambda b: b[0]["failed"].update(rank=1), "not ranked 0 to 0"),
        (lambda b: b[0]["failed"].update(rank=True), "malformed"),
        (lambda b: b[0]["failed"].pop("compensate"), "malformed"),
        (lambda b: b[0]["failed"].update(message=["x"]), "malformed"),
        (lambda b: b[0].update(failed="boom"), "malformed"),
        (
            lambda b: (
                b[1].clear()
                or b[1].update(
                    id="loop", failed={"message": "m", "error_type": "T", "compensate": False, "rank": 1}
                )
            ),
            "all finished",
        ),
    ],
)
async def test_a_forged_failed_branch_is_refused(forge: Any, problem: str) -> None:
    data = copy.deepcopy(await _snapshot_with_a_failure())
    forge(data["kinds"]["parallel"]["branches"])
    with pytest.raises(ValueError, match=problem):
        _engine(
            _any(_failing("quick", 1, "Broke"), _loop()), new_runtime(), read_continuation(data), every=100
        )


async def test_a_failed_branch_is_refused_in_a_join_all_step_and_by_an_earlier_generation() -> None:
    data = await _snapshot_with_a_failure()
    with pytest.raises(ValueError, match="only when the join is 'any'"):
        _engine(
            _any(_failing("quick", 1, "Broke"), _loop(), join="all"),
            new_runtime(),
            read_continuation(data),
            every=100,
        )
    with pytest.raises(ValueError, match="a failed branch is carried"):
        _engine(
            _any(_failing("quick", 1, "Broke"), _loop()), _generation5(), read_continuation(data), every=100
        )
