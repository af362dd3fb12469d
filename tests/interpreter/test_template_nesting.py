"""Whether a template compiles depends on its text alone, not on how deep the caller's stack is.

The attacker writes templates that nest right at the edge of what jinja's recursive parser and code
generator take (brackets, long chains of operators or filters, blocks inside blocks). A worker
compiles a text once, wherever a run first meets it, and caches it: compiled in the caller's
thread, such a template compiled on one worker (met near the top of a stack) and failed on another
(met deeper, or replaying the run started fresh), so the run took another path on replay. Every
compile now runs at the same depth (``interpreter.templates._at_fixed_depth``), and one that nests
too deeply fails with words that say so.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from interpreter.model import parse_definition
from interpreter.templates import TemplateError, check_expression, check_template, evaluate, render

_FRESH = itertools.count()


def _fresh(text: str) -> str:
    """``text`` with a comment no earlier call compiled (compiles are cached per text)."""
    return f"{text}{{# {next(_FRESH)} #}}"


def _at_depth(depth: int, call: Callable[[], Any]) -> Any:
    """``call()`` made ``depth`` frames further down the stack."""
    if depth == 0:
        return call()
    return _at_depth(depth - 1, call)


def _outcome(depth: int, check: Callable[[str], None], text: str) -> str:
    """What ``check(text)`` says, called ``depth`` frames down: "compiles" or its error's words."""
    try:
        _at_depth(depth, lambda: check(text))
    except TemplateError as err:
        return err.detail
    return "compiles"


_EDGES = {
    # Each nests from well within what compiles to well past it.
    "brackets": [("{{ " + "(" * n + "1" + ")" * n + " }}") for n in (30, 50, 60, 65, 70, 75, 90)],
    "operators": ["{{ " + "+".join(["1"] * n) + " }}" for n in (50, 150, 190, 250, 400)],
    "filters": ["{{ 1" + "|string" * n + " }}" for n in (50, 150, 190, 250, 400)],
    "blocks": ["{% if 1 %}" * n + "x" + "{% endif %}" * n for n in (20, 60, 90, 99, 101, 120)],
}


@pytest.mark.parametrize("kind", sorted(_EDGES))
def test_a_template_compiles_or_not_whatever_the_callers_depth(kind: str) -> None:
    outcomes = []
    for text in _EDGES[kind]:
        at = {depth: _outcome(depth, check_template, _fresh(text)) for depth in (0, 250, 600)}
        assert len(set(at.values())) == 1, (kind, len(text), at)
        outcomes.append(at[0])
    # The set straddles the edge: the smallest compiles, the largest is refused, and in words.
    assert outcomes[0] == "compiles", outcomes
    assert "nests or recurses too deeply" in outcomes[-1], outcomes
    assert all("recursion" not in o and "line" not in o for o in outcomes), outcomes


def test_an_expression_compiles_or_not_whatever_the_callers_depth() -> None:
    for n in (40, 60, 70, 90):
        text = "(" * n + "input.a" + ")" * n
        at = {
            depth: _outcome(depth, check_expression, f"{text} or {next(_FRESH)}") for depth in (0, 250, 600)
        }
        assert len(set(at.values())) == 1, (n, at)


def test_a_compiled_template_evaluates_the_same_wherever_it_was_first_compiled() -> None:
    """What a run sees: the first evaluation compiles (deep in the workflow's stack), the next ones
    read the cache; both give the same value, and a text too deep fails the same way at any depth."""
    ok = "(" * 60 + "input.a" + ")" * 60
    expression = f"{ok} ~ '-{next(_FRESH)}'"
    first = _at_depth(600, lambda: evaluate(expression, {"input": {"a": "x"}}))
    assert first == _at_depth(0, lambda: evaluate(expression, {"input": {"a": "x"}}))
    assert first.startswith("x-")
    template = _fresh("{{ " + ok + " }}")
    assert _at_depth(600, lambda: render(template, {"input": {"a": "y"}})) == "y"
    deep = "{{ " + "(" * 90 + "input.a" + ")" * 90 + " }}"
    for depth in (0, 600):
        with pytest.raises(TemplateError, match="nests or recurses too deeply"):
            _at_depth(depth, lambda: render(_fresh(deep), {"input": {"a": "y"}}))


def test_a_definition_with_a_template_too_deep_is_refused_naming_it() -> None:
    deep = "{{ " + "(" * 90 + "input.a" + ")" * 90 + " }}"
    definition = {"name": "deep", "steps": [{"id": "s", "type": "set", "vars": {"v": deep}}]}
    with pytest.raises(ValidationError) as caught:
        parse_definition(definition)
    messages = [str(e["msg"]) for e in caught.value.errors()]
    assert any("nests or recurses too deeply" in m for m in messages), messages


def test_a_macro_calling_itself_too_deeply_fails_in_words() -> None:
    """Evaluating recurses too (Python's words named nothing in the template)."""
    recursive = "{% macro f(n) %}{{ f(n - 1) if n > 0 else 'end' }}{% endmacro %}{{ f(input.n) }}"
    assert render(recursive, {"input": {"n": 20}}) == "end"
    with pytest.raises(TemplateError, match="nests or recurses too deeply") as caught:
        render(recursive, {"input": {"n": 5000}})
    assert "recursion" not in caught.value.detail


def test_a_compile_no_thread_can_take_is_compiled_by_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handover that fails (the interpreter exiting, or no thread could start: ``submit`` raises
    RuntimeError) is no template's error: it neither fails the template nor is cached as one."""
    from concurrent.futures import ThreadPoolExecutor

    from interpreter import templates

    closed = ThreadPoolExecutor(max_workers=1)
    closed.shutdown()
    monkeypatch.setattr(templates, "_COMPILER", closed)
    listed = f"{{{{ [1, {next(_FRESH)}] }}}}"
    value = render(listed, {})
    assert isinstance(value, list), value
    assert value[0] == 1
    assert render(listed, {}) == value  # the cached compile: still the list
    with pytest.raises(TemplateError, match="nests or recurses too deeply"):
        check_template(_fresh("{{ " + "(" * 120 + "1" + ")" * 120 + " }}"))
