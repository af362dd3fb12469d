"""The run's work count (``Engine._run_work``, patch ``run-work-budget``) is the same whether the
worker had compiled the run's templates before or not.

Compiling a template computes its constant parts (jinja folds ``[3, 1, 2] | sort | first`` as it
compiles), once per process, then cached; that work was counted in the evaluation that compiled.
A worker replaying a run in a fresh process then counted more than the worker that ran it, so the
budget was crossed a step earlier on the replay, which failed as nondeterministic (found by a
review, on a dev server). What compiling spends is now left out of the count.
"""

from __future__ import annotations

from typing import Any

import interpreter.templates as templates
from interpreter.templates import last_evaluation_work, last_work, render
from tests.interpreter.test_engine import new_engine

FOLDED = "{{ vars.i + ([3, 1, 2] | sort | first) }}"
"""A template with a constant part jinja computes as it compiles."""


def _forget_compiled() -> None:
    """Empties the process's template caches, as a worker started fresh has them."""
    for cache in (
        templates._single_expression,
        templates._compile_expression,
        templates._compile_template,
        templates._compile_html_template,
    ):
        cache._small.cache_clear()
        cache._large.cache_clear()


def test_an_evaluation_counts_the_same_work_compiled_or_not() -> None:
    _forget_compiled()
    assert render(FOLDED, {"vars": {"i": 1}}) == 2
    cold, cold_all = last_evaluation_work(), last_work()
    assert render(FOLDED, {"vars": {"i": 1}}) == 2
    warm, warm_all = last_evaluation_work(), last_work()
    assert cold_all > warm_all  # the compile's work is in last_work on a cold cache...
    assert cold == warm  # ...and not in what the run counts


async def _run_work(steps: list[dict[str, Any]]) -> int:
    engine, rt = new_engine(steps)
    result = await rt.run(engine.run())
    assert result.state == "completed", result
    return engine._run_work


async def test_a_run_counts_the_same_work_on_a_cold_worker_and_a_warm_one() -> None:
    steps = [
        {"id": "init", "type": "set", "vars": {"i": 0, "name": "{{ 'a' ~ ('b' | upper) }}"}},
        {"id": "bump", "type": "set", "vars": {"i": FOLDED}, "max_visits": 30},
        {
            "id": "again",
            "type": "condition",
            "if": "vars.i < 20 and ([1, 2] | length) == 2",
            "then": {"goto": "bump"},
            "max_visits": 30,
        },
    ]
    _forget_compiled()
    cold = await _run_work(steps)
    warm = await _run_work(steps)
    assert cold == warm
    assert cold > 41 * 50  # its 41 steps and their templates
