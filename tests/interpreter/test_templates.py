import json
from typing import Any

import pytest

from interpreter.templates import (
    MAX_RENDERED_BYTES,
    TemplateError,
    check_expression,
    check_template,
    contains_template,
    evaluate,
    render,
    template_strings,
)

CONTEXT: dict[str, Any] = {
    "input": {"items": [1, 2, 3], "tier": "gold", "name": "Ada", "keys": "k", "nested": {"b": 2, "a": 1}},
    "steps": {"check": {"output": {"status_code": 200, "body": {"ok": True}}}},
}


def template_error(source: str, context: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        render(source, CONTEXT if context is None else context)
    assert info.value.source == source
    return info.value


# ------------------------------------------------------------------------------------- evaluate


def test_evaluate_condition() -> None:
    expression = "steps.check.output.status_code == 200 and input.tier in ['gold']"
    assert evaluate(expression, CONTEXT) is True
    assert evaluate("input.tier == 'silver'", CONTEXT) is False


def test_evaluate_native_values() -> None:
    assert evaluate("input.items | length", CONTEXT) == 3
    assert evaluate("steps.check.output.body", CONTEXT) == {"ok": True}
    assert evaluate("none", CONTEXT) is None
    assert evaluate("1.5 * 2", CONTEXT) == 3.0


def test_evaluate_iterators_become_lists() -> None:
    # A lazy generator would always be truthy; a list is falsy when empty.
    assert evaluate("input.items | select('odd')", CONTEXT) == [1, 3]
    assert evaluate("input.items | select('gt', 5)", CONTEXT) == []
    assert evaluate("range(3)", CONTEXT) == [0, 1, 2]
    assert evaluate("(1, 2)", CONTEXT) == [1, 2]


def test_evaluate_uses_cache() -> None:
    assert evaluate("input.name ~ '!'", CONTEXT) == "Ada!"
    assert evaluate("input.name ~ '!'", {"input": {"name": "Bob"}}) == "Bob!"


def test_evaluate_undefined() -> None:
    with pytest.raises(TemplateError) as info:
        evaluate("steps.missing.output", CONTEXT)
    assert (
        str(info.value)
        == "template error in 'steps.missing.output': 'missing' is undefined (available: check)"
    )
    assert info.value.source == "steps.missing.output"


def test_evaluate_syntax_error() -> None:
    with pytest.raises(TemplateError, match="syntax error"):
        evaluate("input.tier ==", CONTEXT)
    with pytest.raises(TemplateError, match="chunk after expression"):
        evaluate("a b", CONTEXT)


# --------------------------------------------------------------------------------------- render


def test_single_expression_yields_native_value() -> None:
    assert render("{{ input.items }}", CONTEXT) == [1, 2, 3]
    assert render("{{ 3 }}", CONTEXT) == 3
    assert render("  {{ input.nested }}\n", CONTEXT) == {"b": 2, "a": 1}
    assert render("{{ steps.check.output.body.ok }}", CONTEXT) is True
    assert render("{{ none }}", CONTEXT) is None
    assert render("{{- 3 -}}", CONTEXT) == 3
    assert render("{{ '}}' }}", CONTEXT) == "}}"


def test_native_strings_are_not_literal_evaluated() -> None:
    assert render("{{ '123' }}", CONTEXT) == "123"
    assert render("{{ x }}", {"x": "[1, 2]"}) == "[1, 2]"


def test_dict_keys_win_over_methods() -> None:
    assert render("{{ input.items }}", CONTEXT) == [1, 2, 3]
    assert render("{{ input.keys }}", CONTEXT) == "k"
    assert render("{{ steps.check.output.values() | list | length }}", CONTEXT) == 2


def test_mixed_text_renders_to_string() -> None:
    assert render("Hello {{ input.name }}!", CONTEXT) == "Hello Ada!"
    assert render("{{ input.name }}{{ input.tier }}", CONTEXT) == "Adagold"
    assert render("{{ 1 }} {{ 2 }}", CONTEXT) == "1 2"
    assert render("{% if input.tier == 'gold' %}vip{% else %}std{% endif %}", CONTEXT) == "vip"
    assert render("{{ 3 }}{# note #}", CONTEXT) == "3"


def test_containers_print_as_json_in_strings() -> None:
    assert render("items={{ input.items }}", CONTEXT) == "items=[1, 2, 3]"
    assert render("n={{ input.nested }}", CONTEXT) == 'n={"a": 1, "b": 2}'
    assert render("odd={{ input.items | select('odd') }}", CONTEXT) == "odd=[1, 3]"


def test_render_recurses_and_keeps_keys() -> None:
    value = {
        "url": "https://x.test/{{ input.name }}",
        "{{ not_a_template_key }}": 1,
        "list": ["{{ input.items }}", "plain", 4, None, True],
        "nested": {"tier": "{{ input.tier }}"},
    }
    assert render(value, CONTEXT) == {
        "url": "https://x.test/Ada",
        "{{ not_a_template_key }}": 1,
        "list": [[1, 2, 3], "plain", 4, None, True],
        "nested": {"tier": "gold"},
    }


def test_plain_values_returned_unchanged() -> None:
    text = "no templates { here } {#"
    assert render(text, {}) is text
    assert render(42, {}) == 42
    assert render(None, {}) is None
    assert render(1.5, {}) == 1.5


def test_plain_strings_skip_jinja() -> None:
    # Invalid jinja, but without "{{" or "{%" it is never parsed.
    assert render("{# unterminated", {}) == "{# unterminated"
    assert render("} }} %}", {}) == "} }} %}"


def test_secret_references_pass_through() -> None:
    value = {
        "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
        "body": "${secret:A} for {{ input.name }} and ${secret:B}",
        # Inside a tag a reference is a value an expression could rebuild: refused by validation,
        # and text (escaped) in a definition stored before (tests/interpreter/test_inert.py).
        "raw": "{{ '${secret:C}' }}",
    }
    assert render(value, CONTEXT) == {
        "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
        "body": "${secret:A} for Ada and ${secret:B}",
        "raw": "$${secret:C}",
    }


def test_strict_undefined_message() -> None:
    error = template_error("{{ steps.x.output }}")
    assert str(error) == "template error in '{{ steps.x.output }}': 'x' is undefined (available: check)"
    assert error.detail.startswith("'x' is undefined")
    assert (
        str(template_error("Hi {{ nobody }}")) == "template error in 'Hi {{ nobody }}': 'nobody' is undefined"
    )


def test_undefined_inside_containers_is_an_error() -> None:
    template_error("{{ [input.missing] }}")
    template_error("{{ {'a': input.missing} }}")


def test_default_and_defined_still_work() -> None:
    assert render("{{ input.missing | default('fallback') }}", CONTEXT) == "fallback"
    assert render("{{ input.missing is defined }}", CONTEXT) is False


def test_template_error_is_value_error_and_long_sources_are_shortened() -> None:
    source = "{{ nope }}" + "x" * 1000
    error = template_error(source)
    assert isinstance(error, ValueError)
    assert len(str(error)) < 300
    assert error.source == source


def test_syntax_error_in_render() -> None:
    assert "syntax error" in template_error("{{ input.name ").detail
    assert "syntax error" in template_error("{% if %}").detail


def test_runtime_errors_become_template_errors() -> None:
    assert "ZeroDivisionError" in template_error("{{ 1 / 0 }}").detail
    assert "TypeError" in template_error("{{ 'a' - 1 }}").detail
    template_error("{% include 'other.html' %}")


def test_non_json_results_refused() -> None:
    assert "Cycler" in template_error("{{ cycler(1) }}").detail
    assert "Cycler" in template_error("x {{ cycler(1) }}").detail
    template_error("{{ {1: 'a'} }}")
    template_error("{{ 'inf' | float * 1e308 * 10 }}")


def test_rendered_string_size_limit() -> None:
    big = "x" * (MAX_RENDERED_BYTES // 2 + 1)
    assert "larger than" in template_error("{{ a }}{{ a }}", {"a": big}).detail
    assert "larger than" in template_error("{{ a ~ a }}", {"a": big}).detail
    assert render("{{ a }}", {"a": big}) == big


def test_tojson_is_deterministic() -> None:
    context = {"a": {"z": 1, "a": [True, None], "m": "é"}, "b": {"m": "é", "a": [True, None], "z": 1}}
    first = render("{{ a | tojson }}", context)
    assert first == render("{{ b | tojson }}", context)
    assert first == '{"a": [true, null], "m": "é", "z": 1}'
    assert json.loads(render("{{ a | tojson(indent=2) }}", context)) == context["a"]
    assert render("{{ '<b>' | tojson }}", {}) == '"<b>"'


def test_duration_seconds_filter() -> None:
    assert render("{{ '1h30m' | duration_seconds }}", {}) == 5400.0
    assert render("{{ 'PT0.5S' | duration_seconds }}", {}) == 0.5
    assert "3 days" in template_error("{{ '3 days' | duration_seconds }}").detail


# -------------------------------------------------------------------------------------- sandbox


def test_random_filter_and_lipsum_absent() -> None:
    assert "random" in template_error("{{ [1, 2] | random }}").detail
    with pytest.raises(TemplateError):
        check_template("{{ [1, 2] | random }}")
    assert "lipsum" in template_error("{{ lipsum() }}").detail


def test_range_bounded() -> None:
    assert len(render("{{ range(10000) | list }}", {})) == 10_000
    assert "range" in template_error("{{ range(10**9) }}").detail
    template_error("{{ range(10001) }}")
    template_error("{% for i in range(10**9) %}{% endfor %}")


def test_repetition_and_concatenation_bounded() -> None:
    assert "repetition" in template_error("{{ 'a' * 10**9 }}").detail
    template_error("{{ 10**9 * 'a' }}")
    template_error("{{ [0] * 100001 }}")
    assert render("{{ 'ab' * 3 }}", {}) == "ababab"
    assert render("{{ 6 * 7 }}", {}) == 42
    assert "concatenation" in template_error("{{ a + a }}", {"a": "x" * 60_000}).detail
    template_error("{{ a + a }}", {"a": list(range(60_000))})
    assert render("{{ [1] + [2] }}", {}) == [1, 2]


def test_power_bounded() -> None:
    assert "exponent" in template_error("{{ 2 ** 10000 }}").detail
    assert render("{{ 2 ** 100 }}", {}) == 2**100
    template_error("{{ ((10 ** 100) ** 100) ** 100 }}")


def test_format_widths_bounded() -> None:
    template_error("{{ '%999999999d' % 1 }}")
    template_error("{{ '%*d' % (999999999, 1) }}")
    template_error("{{ '%999999999d' | format(1) }}")
    template_error("{{ '{:>999999999}'.format(1) }}")
    template_error("{{ 'a'.ljust(10**9) }}")
    template_error("{{ 'a' | center(10**9) }}")
    template_error("{{ a.replace('x', a) }}", {"a": "x" * 1000})
    template_error("{{ a | replace('x', a) }}", {"a": "x" * 1000})
    template_error("{{ [1] | batch(10**9, 0) | list }}")
    assert render("{{ '%05.1f' % 3.14159 }}", {}) == "003.1"
    assert render("{{ '%s-%s' | format('a', 'b') }}", {}) == "a-b"
    assert render("{{ '{}:{:>3}'.format('a', 1) }}", {}) == "a:  1"
    assert render("{{ 7 % 3 }}", {}) == 1


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.mro() }}",
        "{{ input.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ''.format.__globals__ }}",
        "{{ '{0.__class__}'.format(1) }}",
        "x {{ ().__class__.__base__.__subclasses__() }}",
    ],
)
def test_unsafe_attributes_refused(source: str) -> None:
    error = template_error(source)
    assert "unsafe" in error.detail or "undefined" in error.detail


def test_dunder_access_reports_security_error() -> None:
    error = template_error("{{ ''.__class__ }}")
    assert error.detail == "access to attribute '__class__' of 'str' object is unsafe."
    assert isinstance(error.__cause__, Exception)
    assert type(error.__cause__).__name__ == "SecurityError"


def test_immutable_sandbox_refuses_mutation() -> None:
    context = {"items": [1, 2]}
    assert "unsafe" in template_error("{{ items.append(3) }}", context).detail
    assert context == {"items": [1, 2]}


def test_no_clock_globals() -> None:
    template_error("{{ now() }}")


# ----------------------------------------------------------------------------------- validation


def test_check_expression_and_template() -> None:
    check_expression("steps.a.output.x == 1 and input.y")
    check_template("Hello {{ name }}{% if x %}!{% endif %}")
    with pytest.raises(TemplateError, match="template error in 'a =='"):
        check_expression("a ==")
    with pytest.raises(TemplateError, match="syntax error"):
        check_expression("{{ a }}")
    with pytest.raises(TemplateError) as info:
        check_template("{% if x %}unterminated")
    assert info.value.source == "{% if x %}unterminated"


def test_check_does_not_evaluate() -> None:
    check_expression("undefined_name.deep / 0")
    check_template("{{ 'a' * 10**9 }}")


def test_contains_template() -> None:
    assert contains_template("{{ x }}")
    assert contains_template({"a": [1, {"b": "{% if x %}y{% endif %}"}]})
    assert not contains_template({"a": [1, "plain ${secret:X}", None], "{{ key }}": 1})
    assert not contains_template(42)


def test_template_strings_paths() -> None:
    value = {
        "url": "https://x/{{ input.id }}",
        "headers": {"Authorization": "Bearer {{ t }}", "Content-Type": "json", "X Y": "{{ z }}"},
        "items": [1, "{{ a }}", ["{% if b %}b{% endif %}"]],
    }
    assert list(template_strings(value)) == [
        (".url", "https://x/{{ input.id }}"),
        (".headers.Authorization", "Bearer {{ t }}"),
        ('.headers["X Y"]', "{{ z }}"),
        (".items[1]", "{{ a }}"),
        (".items[2][0]", "{% if b %}b{% endif %}"),
    ]
    assert list(template_strings("{{ x }}")) == [("", "{{ x }}")]
    assert list(template_strings(["plain", 3])) == []
