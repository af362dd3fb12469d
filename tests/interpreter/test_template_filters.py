"""Every filter the template sandbox offers works, in expressions and in string templates.

The table names each filter of the environment once; a filter added to (or left in) the sandbox
without a case here fails the first test, so none can be broken for every use unnoticed again
(``slice`` was, until this test).
"""

from __future__ import annotations

from typing import Any

import pytest

from interpreter.templates import _ENV, TemplateError, evaluate, render

CONTEXT: dict[str, Any] = {
    "input": {
        "xs": [3, 1, 2],
        "s": "Hello World",
        "d": {"b": 2, "a": 1},
        "people": [{"n": "a", "age": 3}, {"n": "b", "age": 5}],
        "html": "<b>x</b>",
        "n": -2.5,
        "size": 2048,
    }
}

CASES: list[tuple[str, str, Any]] = [
    ("abs", "input.n | abs", 2.5),
    ("attr", "(input.people | first) | attr('n')", "a"),
    ("batch", "input.xs | batch(2) | list", [[3, 1], [2]]),
    ("capitalize", "'abc' | capitalize", "Abc"),
    ("center", "'ab' | center(6)", "  ab  "),
    ("count", "input.xs | count", 3),
    ("d", "input.missing | d('x')", "x"),
    ("default", "input.missing | default('x')", "x"),
    ("dictsort", "input.d | dictsort", [["a", 1], ["b", 2]]),
    ("duration_seconds", "'1m' | duration_seconds", 60.0),
    ("e", "input.html | e", "&lt;b&gt;x&lt;/b&gt;"),
    ("escape", "input.html | escape", "&lt;b&gt;x&lt;/b&gt;"),
    ("filesizeformat", "input.size | filesizeformat", "2.0 kB"),
    ("first", "input.xs | first", 3),
    ("float", "'1.5' | float", 1.5),
    ("forceescape", "input.html | forceescape", "&lt;b&gt;x&lt;/b&gt;"),
    ("format", "'%s-%d' | format('a', 3)", "a-3"),
    (
        "groupby",
        "input.people | groupby('age') | list",
        [[3, [{"n": "a", "age": 3}]], [5, [{"n": "b", "age": 5}]]],
    ),
    ("indent", "'a\nb' | indent(2)", "a\n  b"),
    ("int", "'42' | int", 42),
    ("items", "input.d | items | list", [["b", 2], ["a", 1]]),
    ("join", "input.xs | join(',')", "3,1,2"),
    ("last", "input.xs | last", 2),
    ("length", "input.xs | length", 3),
    ("list", "'ab' | list", ["a", "b"]),
    ("lower", "input.s | lower", "hello world"),
    ("map", "input.people | map(attribute='n') | list", ["a", "b"]),
    ("max", "input.xs | max", 3),
    ("min", "input.xs | min", 1),
    ("pprint", "input.d | pprint", "{'a': 1, 'b': 2}"),
    ("reject", "input.xs | reject('odd') | list", [2]),
    ("rejectattr", "input.people | rejectattr('age', 'gt', 4) | list", [{"n": "a", "age": 3}]),
    ("replace", "input.s | replace('World', 'There')", "Hello There"),
    ("reverse", "input.xs | reverse | list", [2, 1, 3]),
    ("round", "2.567 | round(1)", 2.6),
    ("safe", "input.html | safe", "<b>x</b>"),
    ("select", "input.xs | select('odd') | list", [3, 1]),
    ("selectattr", "input.people | selectattr('age', 'gt', 4) | list", [{"n": "b", "age": 5}]),
    ("slice", "input.xs | slice(2) | list", [[3, 1], [2]]),
    ("sort", "input.xs | sort", [1, 2, 3]),
    ("string", "input.xs | string", "[3, 1, 2]"),
    ("striptags", "input.html | striptags", "x"),
    ("sum", "input.xs | sum", 6),
    ("title", "'ab cd' | title", "Ab Cd"),
    ("tojson", "input.d | tojson", '{"a": 1, "b": 2}'),
    ("trim", "'  a ' | trim", "a"),
    ("truncate", "'hello world foo' | truncate(9, True, '...', 0)", "hello ..."),
    ("unique", "[1,1,2] | unique | list", [1, 2]),
    ("upper", "input.s | upper", "HELLO WORLD"),
    ("urlencode", "input.d | urlencode", "b=2&a=1"),
    ("urlize", "'see http://x.org' | urlize", 'see <a href="http://x.org" rel="noopener">http://x.org</a>'),
    ("wordcount", "input.s | wordcount", 2),
    ("wordwrap", "'aaa bbb ccc' | wordwrap(4)", "aaa\nbbb\nccc"),
    ("xmlattr", "input.d | xmlattr", ' b="2" a="1"'),
]


def test_every_filter_of_the_sandbox_has_a_case() -> None:
    assert sorted(name for name, _, _ in CASES) == sorted(_ENV.filters)


@pytest.mark.parametrize(("name", "expression", "expected"), CASES, ids=[c[0] for c in CASES])
def test_filter_in_an_expression(name: str, expression: str, expected: Any) -> None:
    assert f"| {name}" in expression
    assert evaluate(expression, CONTEXT) == expected


@pytest.mark.parametrize(("name", "expression", "expected"), CASES, ids=[c[0] for c in CASES])
def test_filter_in_a_string_template(name: str, expression: str, expected: Any) -> None:
    assert render("{{ " + expression + " }}", CONTEXT) == expected  # the native value
    rendered = render("= {{ " + expression + " }}", CONTEXT)
    assert isinstance(rendered, str)
    assert rendered.startswith("= ")


def test_slice_and_batch_stay_bounded() -> None:
    with pytest.raises(TemplateError, match="slice count"):
        evaluate("input.xs | slice(1000000000) | list", CONTEXT)
    with pytest.raises(TemplateError, match="batch size"):
        evaluate("input.xs | batch(1000000000) | list", CONTEXT)


def test_attr_reads_a_key_of_an_object_and_nothing_unsafe() -> None:
    assert evaluate("input.d | attr('a')", CONTEXT) == 1
    with pytest.raises(TemplateError):
        evaluate("input.s | attr('__class__')", CONTEXT)
