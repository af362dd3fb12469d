"""The run's work budget (patch ``run-work-budget``): a run continues as new once its interpreter
work since it started passed ``RUN_WORK_BUDGET``, so a worker that lost it from its cache replays it
within a workflow task's timeout.

The attack: a loop of templated ``set`` steps (a ``delay`` in each turn, or none) stays within every
other bound, each workflow task's template work and the history's events included, yet a cold
replay redoes all of its work in one workflow task. In a probe, a turn of two heavy evaluations
(and a 1 s delay) took 0.14 s; 150 turns took a cold replay 21.8 s, past the 10 s Temporal gives
the task, and after 250 turns a worker started fresh had not finished the run 150 s later, its task
timing out.

Real dev server, the product's worker; the budget is lowered (the workflow runs outside the
sandbox, so the module's constant is what the worker reads), as the history guard's tests do. The
work is counted from the steps and the templates' own operations, which are deterministic: the
tests check how the chain was cut, never how long anything took.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.worker import Worker

import interpreter.engine
from interpreter.state import RunState
from interpreter.templates import evaluate, last_work
from tests.interpreter.test_engine import new_engine
from tests.interpreter.test_run_work import FOLDED, _forget_compiled
from tests.workflows.support import (
    chain_histories,
    definition,
    patches_in,
    replays_as_recorded,
    start,
    unique,
)
from workflows.generic import ENGINE_LEVEL, RunDefinitionWorkflow

HEAVY = "range(1500) | map('string') | join(',') | length"
"""A template of some thousands of operations (its value: 6,389)."""


def _loop(turns: int, heavy: bool) -> dict[str, Any]:
    """``turns`` turns of a ``set`` (evaluating :data:`HEAVY` when ``heavy``) and a ``condition``
    looping back: steps that call nothing, so the history stays small."""
    bump: dict[str, Any] = {"n": "{{ vars.n + 1 }}"}
    if heavy:
        bump["size"] = "{{ " + HEAVY + " }}"
    return definition(
        unique("work-budget"),
        [
            {"id": "init", "type": "set", "vars": {"n": 0}},
            {"id": "bump", "type": "set", "vars": bump, "max_visits": turns},
            {
                "id": "again",
                "type": "condition",
                "if": f"vars.n < {turns}",
                "then": {"goto": "bump"},
                "max_visits": turns,
            },
        ],
        limits={"max_step_executions": 10 * turns},
        output={"n": "{{ vars.n }}", "size": "{{ vars.size | default(0) }}"},
    )


def _runs(
    client: Client, handle: WorkflowHandle[Any, Any], histories: list[WorkflowHistory]
) -> list[WorkflowHandle[Any, Any]]:
    """A handle on each run of ``histories`` (the handle's chain)."""
    return [client.get_workflow_handle(handle.id, run_id=h.run_id) for h in histories]


async def _chain(client: Client, handle: WorkflowHandle[Any, Any]) -> list[WorkflowHandle[Any, Any]]:
    """Every run of the handle's chain, oldest first."""
    return _runs(client, handle, await chain_histories(handle))


def _continued_and_asked(history: WorkflowHistory) -> tuple[bool, int]:
    """Whether the run continued as new, and how many times it asked the patch."""
    continued = any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW for e in history.events
    )
    asked = [json.loads(data)["id"] for data in patches_in(history)]
    return continued, asked.count(interpreter.engine.PATCH_RUN_WORK_BUDGET)


@pytest.mark.parametrize("level", [ENGINE_LEVEL - 1, ENGINE_LEVEL])
async def test_a_loop_of_steps_continues_as_new_when_its_work_passes_the_budget(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    # 60 steps' work a run (50 each, templates of a few operations besides); 301 steps in all.
    monkeypatch.setattr(interpreter.engine, "RUN_WORK_BUDGET", 60 * interpreter.engine.STEP_WORK)
    handle = await start(client, task_queue, _loop(150, heavy=False), engine_level=level)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"n": 150, "size": 0}

    histories = await chain_histories(handle)
    runs = _runs(client, handle, histories)
    assert 4 <= len(runs) <= 6, len(runs)  # 301 steps at under 60 a run, but not far under
    status = await handle.query(RunDefinitionWorkflow.status)
    assert status.continued == len(runs) - 1
    outcomes = [_continued_and_asked(history) for history in histories]
    assert [continued for continued, _ in outcomes] == [True] * (len(runs) - 1) + [False]
    # The generation before the patch's asked it once in each run that passed the budget; the
    # build's applies it from the start, with no marker.
    markers = [asked for _, asked in outcomes]
    assert markers[:-1] == [1 if level < ENGINE_LEVEL else 0] * (len(runs) - 1), markers
    await replays_as_recorded(*runs)


async def test_template_work_counts_toward_the_budget(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate(HEAVY, {})
    heavy = last_work()
    assert heavy > 2_000  # what makes the template heavy here
    # Steps alone (80 turns: 161 steps, about 8,000) stay under the budget; with the heavy
    # template's work every turn, a run holds at most 10 turns.
    budget = 10 * heavy
    monkeypatch.setattr(interpreter.engine, "RUN_WORK_BUDGET", budget)
    assert budget > 161 * interpreter.engine.STEP_WORK
    handle = await start(client, task_queue, _loop(80, heavy=True), engine_level=ENGINE_LEVEL)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"n": 80, "size": 6389}
    runs = await _chain(client, handle)
    assert len(runs) >= 8, len(runs)  # 80 turns, at most 10 a run (the crossing turn included)
    await replays_as_recorded(*runs)


async def test_a_run_recorded_before_the_budget_replays_as_it_went_on(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded as the engine before the patch ran it (one run, far past what is now the budget),
    at the generation before the patch's: a worker with the budget replays it without continuing
    it as new (the patch is not in its history)."""
    monkeypatch.setattr(interpreter.engine, "RUN_WORK_BUDGET", 10**12)
    handle = await start(client, task_queue, _loop(150, heavy=False), engine_level=ENGINE_LEVEL - 1)
    result = await handle.result()
    assert result.output == {"n": 150, "size": 0}
    assert len(await _chain(client, handle)) == 1

    monkeypatch.setattr(interpreter.engine, "RUN_WORK_BUDGET", 60 * interpreter.engine.STEP_WORK)
    await replays_as_recorded(handle)


def _folded_loop(turns: int) -> list[dict[str, Any]]:
    """``turns`` turns of a ``set`` whose template has a constant part (computed as it compiles),
    a 1 s ``delay`` (a command in every turn) and a ``condition``."""
    return [
        {"id": "init", "type": "set", "vars": {"i": 0}},
        {"id": "bump", "type": "set", "vars": {"i": FOLDED}, "max_visits": turns},
        {"id": "nap", "type": "delay", "duration": "1s", "max_visits": turns},
        {
            "id": "again",
            "type": "condition",
            "if": f"vars.i < {turns}",
            "then": {"goto": "bump"},
            "max_visits": turns,
        },
    ]


async def _work_at_each_step(steps: list[dict[str, Any]]) -> list[int]:
    """The run's work as each step started (the engine on a fake runtime)."""
    engine, rt = new_engine(steps)
    seen: list[int] = []
    count = engine._count_run_work

    def counted(work: int) -> None:
        count(work)
        seen.append(engine._run_work)

    engine._count_run_work = counted  # type: ignore[method-assign]
    await rt.run(engine.run())
    return seen


async def test_a_worker_started_fresh_replays_the_run_where_its_budget_was_crossed(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded by a worker that had compiled the run's templates, replayed by one that has not
    (a worker started fresh): the budget is crossed at the same step. Before, the compile's work
    counted in the fresh worker's first evaluation, it crossed one step earlier, continued as new
    where the recorded run slept, and the replay failed as nondeterministic (found by a review)."""
    steps = _folded_loop(4)
    await _work_at_each_step(steps)  # compiles the templates in this process
    work = await _work_at_each_step(steps)
    # Crossed as the second turn's delay starts (steps: init, bump, nap, again, bump, nap): the
    # second bump's count plus one.
    monkeypatch.setattr(interpreter.engine, "RUN_WORK_BUDGET", work[4] + 1)
    handle = await start(
        client, task_queue, definition(unique("work-folded"), steps), engine_level=ENGINE_LEVEL
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    runs = await _chain(client, handle)
    assert len(runs) >= 2
    _forget_compiled()
    await replays_as_recorded(runs[0])


async def test_a_loop_racing_a_delay_in_an_any_join_continues_as_new(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branches of a ``join: any`` step stop for a continue-as-new only once the run presses
    (they race: the first to finish wins). Before, only the history pressed it, so a loop of steps
    that call nothing, raced against a long delay, ran its whole work in one run; now a run whose
    work reached twice the budget presses too (found by a review)."""
    monkeypatch.setattr(interpreter.engine, "RUN_WORK_BUDGET", 40 * interpreter.engine.STEP_WORK)
    turns = 150
    document = definition(
        unique("work-any"),
        [
            {"id": "init", "type": "set", "vars": {"n": 0}},
            {
                "id": "race",
                "type": "parallel",
                "join": "any",
                "branches": [
                    {
                        "id": "loop",
                        "steps": [
                            {
                                "id": "bump",
                                "type": "set",
                                "vars": {"n": "{{ vars.n + 1 }}"},
                                "max_visits": turns,
                            },
                            {
                                "id": "again",
                                "type": "condition",
                                "if": f"vars.n < {turns}",
                                "then": {"goto": "bump"},
                                "max_visits": turns,
                            },
                        ],
                    },
                    {"id": "nap", "steps": [{"id": "sleep", "type": "delay", "duration": "1h"}]},
                ],
            },
        ],
        limits={"max_step_executions": 10 * turns},
        output={"n": "{{ vars.n }}"},
    )
    handle = await start(client, task_queue, document, engine_level=ENGINE_LEVEL)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"n": turns}
    runs = await _chain(client, handle)
    # 301 steps, a run pressed at twice the budget's 40: several runs.
    assert len(runs) >= 3, len(runs)
    await replays_as_recorded(*runs)
