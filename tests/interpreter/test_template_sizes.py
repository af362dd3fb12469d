"""Templates whose cost the work budget did not see (found by an attacker's probe of hostile
definitions): integer products doubling in a loop, and values amplified by shared references
(``[a]*10`` nested, a list literal of the same list) turned into text in one C call. Each held a
workflow task past the worker's deadlock limit, retried for ever, stalling the worker for every
tenant. Now each is refused (``OversizedValueError``, a step failure) before the work; the engine
renders without the checks only for a run recorded before them (patch ``template-sizes``)."""

from __future__ import annotations

import pytest

from interpreter.templates import (
    MAX_RESULT_CHARS,
    OversizedValueError,
    TemplateError,
    evaluate,
    render,
    unbounded_sizes,
)

AMPLIFIED = "{% set a = range(10000) | list %}{% set a = [a]*10 %}{% set a = [a]*10 %}{% set a = [a]*10 %}"
"""A list of ten million numbers the budget saw as a few dozen operations (shared references)."""
LITERAL = "{% set a = range(10000) | list %}" + "{% set a = [a,a,a,a,a,a,a,a,a,a] %}" * 3


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "{% set ns = namespace(a=10**100) %}{% for i in range(22) %}{% set ns.a = ns.a * ns.a %}"
            "{% endfor %}{{ ns.a % 7 }}",
            id="squaring-in-a-loop",
        ),
        pytest.param(AMPLIFIED + "{{ a | string | length }}", id="repetition-string"),
        pytest.param(AMPLIFIED + "{{ a | pprint | length }}", id="repetition-pprint"),
        pytest.param(LITERAL + "{{ (a ~ '') | length }}", id="literal-concat"),
        pytest.param(LITERAL + "{{ ('%s' % (a,)) | length }}", id="literal-percent"),
        pytest.param(LITERAL + "{{ a | join(',') | length }}", id="literal-join"),
        pytest.param(LITERAL + "{{ ','.join(a | map('string')) | length }}", id="literal-method-join"),
        pytest.param(LITERAL + "{{ a | map('string') | list | length }}", id="literal-map-string"),
        # Found by a review of the checks above:
        pytest.param(
            "{% set b = range(10000) | list %}{% set c = [b]*800 %}{{ (c | sum(start=[]))[0] }}",
            id="sum-concatenating",
        ),
        pytest.param(
            "{% set a = range(10000) | list %}{% set b = range(10000) | list %}"
            + "{% set a = [a]*10 %}{% set b = [b]*10 %}" * 5
            + "{{ a == b }}",
            id="comparing-equal-copies",
        ),
        pytest.param(AMPLIFIED + "{{ (namespace(k=a) | string)[:5] }}", id="namespace-text"),
        pytest.param(AMPLIFIED + "{{ ({'k': a}.items() | string)[:5] }}", id="items-text"),
        pytest.param(AMPLIFIED + "{{ ('' ~ {'k': a}.values())[:5] }}", id="values-concat"),
        pytest.param(
            "{% set x = ((2**100)**99)**10 - 1 %}{% set y = ((3**60)**100)**5 + 1 %}"
            "{% for i in range(10000) %}{% if x // y %}{% endif %}{% endfor %}",
            id="big-division-loop",
        ),
        pytest.param("{{ ('a'.encode() * 300000000) | length }}", id="bytes-repetition"),
        pytest.param("{{ (1).to_bytes(300000000, 'big') | length }}", id="bytes-of-an-int"),
    ],
)
def test_work_the_budget_did_not_see_is_refused_before_it_is_done(source: str) -> None:
    with pytest.raises(OversizedValueError, match=r"too large|characters|limit|bytes|single operations"):
        render(source, {})


def test_str_format_of_an_amplified_value_is_refused_too() -> None:
    with pytest.raises(TemplateError):
        render(LITERAL + "{{ '{}'.format(a) | length }}", {})


def test_a_product_is_bounded_but_ordinary_arithmetic_is_not() -> None:
    assert evaluate("12345678901234567890 * 98765432109876543210", {}) == (
        12345678901234567890 * 98765432109876543210
    )
    assert evaluate("(10 ** 100) * (10 ** 100) % 7", {}) == (10**200) % 7
    with pytest.raises(OversizedValueError, match="over 100,000 bits"):
        evaluate("(7 ** 100) * (7 ** 100) * 0 + x * x", {"x": 2**60_000})
    with pytest.raises(OversizedValueError, match="over 100,000 bits"):
        render(
            "{% set ns = namespace(a=10**100) %}{% for i in range(9) %}{% set ns.a = ns.a * ns.a %}{% endfor %}",
            {},
        )
    assert isinstance(OversizedValueError("s", "d"), TemplateError)  # a step failure like any other


def test_ordinary_arithmetic_sums_and_comparisons_are_untouched() -> None:
    context = {"input": {"n": 5, "ids": list(range(5000)), "same": list(range(5000))}}
    assert render("{{ 10 - 3 }} {{ input.n - 1 }} {{ 7 // 2 }} {{ 5 / 2 }} {{ 2 ** 64 - 1 }}", context) == (
        f"7 4 3 2.5 {2**64 - 1}"
    )
    assert evaluate("input.ids == input.same and [[1, 2], [3]] | sum(start=[]) == [1, 2, 3]", context)
    assert evaluate("input.ids | sum", context) == sum(range(5000))


def test_ordinary_text_of_values_is_untouched() -> None:
    data = {"rows": [{"id": i, "name": f"row {i}"} for i in range(2000)]}
    assert render("{{ input.rows | length }}", {"input": data}) == 2000
    text = render("{{ input.rows | string | length }}", {"input": data})
    assert text == len(str(data["rows"]))
    assert (
        render("{{ 'n=' ~ [1, 2] }} {{ '%s' % ([1],) }} {{ [1, 2] | join('-') }}", {}) == "n=[1, 2] [1] 1-2"
    )


def test_a_value_as_large_as_a_result_may_be_is_still_text() -> None:
    """The limit is a result's (``MAX_RESULT_CHARS``, every shared reference counted): a value just
    under it is turned into text; one just over it is refused."""
    chars = MAX_RESULT_CHARS // 2 - 10
    under = {"a": "x" * chars}
    assert render("{{ input.a | length }}{{ ([input.a] | string) | length }}", {"input": under}) == (
        f"{chars}{chars + 4}"
    )
    with pytest.raises(OversizedValueError):
        render("{{ ([input.a, input.a, input.a] | string) | length }}", {"input": under})


def test_a_run_recorded_before_the_checks_renders_as_it_did() -> None:
    """Without the checks (the engine's path for a run recorded before patch ``template-sizes``)
    the same templates evaluate as before: what the run recorded is what it replays."""
    big = {"s": "x" * 400_000}
    with unbounded_sizes():
        assert evaluate("x * x % 7", {"x": 2**60_000}) == (2**120_000) % 7
        text = "{% set a = [input.s, input.s, input.s] %}{{ a | string | length }}"
        assert int(render(text, {"input": big})) > MAX_RESULT_CHARS
    with pytest.raises(OversizedValueError):
        render(text, {"input": big})
