"""What an evaluation counts, and so the run's work count (``Engine._run_work``, patch
``run-work-budget``), is the same in every process: whether the worker had compiled the run's
templates before or not, whatever earlier evaluations left of the budget, whatever checks they ran
without.

Compiling a template computes its constant parts (jinja folds ``[3, 1, 2] | sort | first``), once
per process, then cached. That work was counted in the evaluation that compiled it, and done on what
earlier evaluations had left of the budget, so a worker replaying a run in a fresh process counted
other work than the worker that ran it: the budget was crossed a step earlier on the replay, which
failed as nondeterministic (found by reviews, on a dev server). Compiling now has budgets of its
own, which depend on the text alone (``templates.FOLD_WORK_PER_TOKEN``), every check on, and counts
in no evaluation.
"""

from __future__ import annotations

from typing import Any

import pytest

import interpreter.templates as templates
from interpreter.templates import (
    WORK_BUDGET,
    ArgumentSizeError,
    TemplateError,
    evaluate,
    last_evaluation_work,
    last_work,
    render,
    unbounded_arguments,
)
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
    assert (last_evaluation_work(), last_work()) == (cold, cold_all)  # the compile counts in neither


SPENDER = "range(10000) | map('string') | map('upper') | map('lower') | map('upper') | map('lower') | map('upper') | map('lower') | map('upper') | map('lower') | list | length"
"""An expression that spends its whole budget (and fails)."""


def test_what_an_earlier_evaluation_left_does_not_change_a_compile() -> None:
    _forget_compiled()
    evaluate(FOLDED.strip("{} "), {"vars": {"i": 1}})
    fresh = last_evaluation_work()
    _forget_compiled()
    with pytest.raises(TemplateError, match="budget"):
        evaluate(SPENDER, {})
    assert last_work() == WORK_BUDGET
    # Compiled right after the budget was spent: before, its constant was left to be computed,
    # and counted, in every evaluation of this process.
    evaluate(FOLDED.strip("{} "), {"vars": {"i": 1}})
    assert last_evaluation_work() == fresh
    evaluate(FOLDED.strip("{} "), {"vars": {"i": 1}})
    assert last_evaluation_work() == fresh


def test_a_string_compiled_after_a_heavy_one_counts_the_same_as_in_a_light_render() -> None:
    loop = "{% for x in items %}{% endfor %}x"
    value = {"a": loop, "b": FOLDED}

    def light() -> int:
        render(value, {"items": [], "vars": {"i": 1}})
        return last_evaluation_work()

    _forget_compiled()
    fresh = light()
    _forget_compiled()
    # ``b`` compiled with almost nothing left of the budget (49,997 items at two operations each):
    # before, its constant was left uncomputed, to be counted in every later evaluation here.
    render(value, {"items": list(range(49_997)), "vars": {"i": 1}})
    assert light() == fresh


def test_a_relaxed_caller_does_not_compile_what_a_checked_one_refuses() -> None:
    text, indent = "a\\n" * 20_000, "y" * 60
    template = "x{{ ('" + text + "' | indent('" + indent + "')) | length }}"
    _forget_compiled()
    with unbounded_arguments():
        assert render(template, {}).startswith("x")  # a run recorded before the check: computed
    with pytest.raises(ArgumentSizeError):
        render(template, {})  # a new run in the same process: refused, as in a fresh one


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
