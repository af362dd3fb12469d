"""Template bombs, played by the attacker: each is stopped by the work or size budget with a clear
error, quickly, without allocating what it asks for; ordinary templates are untouched."""

from __future__ import annotations

import pytest

from interpreter.templates import MAX_RESULT_CHARS, WORK_BUDGET, TemplateError, evaluate, render

CONTEXT = {"input": {"s": "y" * 256_000, "items": list(range(10_000)), "big": "x" * 100_000}}

BOMBS = {
    "shared references": "{{ ['x' * 100000] * 100000 }}",
    "shared references in text": "pre {{ ['x' * 100000] * 100000 }}",
    "list of one big string": "{{ [input.big] * 50 }}",
    "nested ranges": "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
    "nested loops over data": "{% for a in input['items'] %}{% for b in input['items'] %}{% endfor %}{% endfor %}",
    "sort in a loop": "{% for a in range(10000) %}{{ input['items']|sort|first }}{% endfor %}",
    "scan in a loop": "{% for a in range(10000) %}{% set x = 'q' in input.s %}{% endfor %}",
    "method in a loop": "{% for a in range(10000) %}{% set x = input.s.upper() %}{% endfor %}",
    "concatenation in a loop": "{% for a in range(10000) %}{% set x = input.s ~ input.s %}{% endfor %}",
    "printing in a loop": "{% for a in range(10000) %}{{ input.s }}{% endfor %}",
    "filter chain in a loop": "{% for a in range(1000) %}{% set x = input['items']|map('string')|join(',') %}{% endfor %}",
    "cheap work, a lot of it": "{% for a in range(10000) %}{% for b in range(11) %}{% set x = b|string %}{% endfor %}{% endfor %}",
}


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS.keys())
def test_bombs_are_stopped_with_a_named_budget(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        render({"value": source}, CONTEXT)
    assert f"budget of {WORK_BUDGET} operations" in info.value.detail or (
        f"larger than {MAX_RESULT_CHARS}" in info.value.detail
    )


def test_expressions_have_the_budget_too() -> None:
    with pytest.raises(TemplateError, match="budget"):
        evaluate("(input['items'] * 10) | map('string') | join(',') | length", CONTEXT)


def test_each_render_has_its_own_budget() -> None:
    # Far more work in total than one budget, spread over many renders: each is fine on its own.
    source = "{% for a in range(5000) %}{% endfor %}done"
    for _ in range(50):
        assert render(source, CONTEXT) == "done"


def test_ordinary_templates_are_untouched() -> None:
    assert render("{{ input.s }}!", CONTEXT) == "y" * 256_000 + "!"
    assert render("{{ input['items'][:3] }}", CONTEXT) == [0, 1, 2]
    assert evaluate("input['items'] | select('odd') | list | length", CONTEXT) == 5000
    assert render("{% for i in input['items'][:5] %}{{ i }},{% endfor %}", CONTEXT) == "0,1,2,3,4,"
