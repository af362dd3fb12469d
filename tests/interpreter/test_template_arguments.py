"""Templates whose arguments did work or made text the budgets did not see (found by an attacker's
probe of hostile definitions): a test such as ``in`` reading a long list for every item
(``select('in', input.b)``: charged for the item only; 30,000 by 80,000 items held the workflow task
past the deadlock limit at every attempt), and text an argument multiplies, built whole before its
size was checked (``tojson(1000000)``: 2 GB; ``join`` with a long separator; format widths of many
fields). Each is now refused (``ArgumentSizeError``, a step failure) before the work; the engine
renders without the checks only for a run recorded before them (patch ``template-arguments``)."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import pytest

from interpreter.templates import ArgumentSizeError, TemplateError, last_work, render, unbounded_arguments

LISTS = {"a": list(range(30_000)), "b": list(range(-1, -80_001, -1))}
LONG = {"sep": "y" * 300_000, "items": ["x"] * 3_000, "lines": "a\n" * 100_000, "s": "a" * 100_000}


@pytest.mark.parametrize(
    ("source", "data", "words"),
    [
        pytest.param("{{ input.a | select('in', input.b) | list | length }}", LISTS, "'in'", id="select-in"),
        pytest.param("{{ input.a | reject('in', input.b) | list | length }}", LISTS, "'in'", id="reject-in"),
        pytest.param(
            "{% for x in input.a %}{% if x is in input.b %}1{% endif %}{% endfor %}",
            LISTS,
            "'in'",
            id="is-in",
        ),
        pytest.param("{{ range(1000) | list | tojson(1000000) }}", {}, "tojson's indent", id="tojson-indent"),
        pytest.param(
            "{{ range(1000) | list | tojson('x' * 10000) }}", {}, "tojson's indent", id="tojson-text"
        ),
        pytest.param("{{ input['items'] | join(input.sep) }}", LONG, "join's separator", id="join-filter"),
        pytest.param("{{ input.sep.join(input['items']) }}", LONG, "join's separator", id="join-method"),
        pytest.param(
            "{{ input.sep.join(input['items'] | map('upper')) }}",
            LONG,
            "join's separator",
            id="join-generator",
        ),
        pytest.param("{{ ('{0:99999}' * 10000).format(1) }}", {}, "widths together", id="brace-widths"),
        pytest.param(
            "{{ ('%99999s' * 1000) | format(*range(1000)) }}", {}, "widths together", id="format-filter"
        ),
        pytest.param("{{ ('%99999d' * 1000) % (range(1000) | list) }}", {}, "widths together", id="percent"),
        pytest.param("{{ input.lines | indent('x' * 100) }}", LONG, "indent", id="indent-text"),
        pytest.param("{{ input.s | wordwrap(1, true, 'x' * 100) }}", LONG, "wrap string", id="wordwrap"),
        pytest.param("{{ input.s.translate({97: 'b' * 50000}) }}", LONG, "translate's table", id="translate"),
    ],
)
def test_work_or_text_an_argument_makes_is_refused_before_it_is_done(
    source: str, data: dict[str, Any], words: str
) -> None:
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ArgumentSizeError) as info:
            render(source, {"input": data})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert words in str(info.value)
    assert peak < 32 << 20, f"{peak:,} bytes allocated at the peak"
    # Not a timed assertion on speed: a hang detector (the probe's forms ran 8 s or built gigabytes).
    assert time.process_time() - started < 5


def test_ordinary_uses_of_the_same_filters_are_untouched() -> None:
    small = {"a": list(range(1000)), "b": [3, 30, 300], "words": ["x", "y", "z"]}
    assert render("{{ input.a | select('in', input.b) | list }}", {"input": small}) == [3, 30, 300]
    assert render("{{ input.a | reject('in', input.b) | list | length }}", {"input": small}) == 997
    assert render("{{ input.words | join(', ') }}", {"input": small}) == "x, y, z"
    assert render("{{ ', '.join(input.words) }}", {"input": small}) == "x, y, z"
    assert json.loads(render("{{ {'k': input.b} | tojson(2) }}", {"input": small})) == {"k": [3, 30, 300]}
    assert render("{{ '{0:>5}|{1:<3}'.format('a', 'b') }}", {}) == "    a|b  "
    assert render("{{ '%5s' | format('a') }}", {}) == "    a"
    assert render("{{ 'a\nb' | indent('> ', true) }}", {}) == "> a\n> b"
    assert render("{{ 'aaaa' | wordwrap(2, true, '|') }}", {}) == "aa|aa"
    assert render("{{ 'abc'.translate({97: 'xy'}) }}", {}) == "xybc"
    # Counted from the characters the text holds (a review: escaping two characters of a long
    # text was refused as if every character were replaced).
    page = {"s": "<" + "x" * 300_000 + ">"}
    escaped = "{{ (input.s.translate({60: '&lt;', 62: '&gt;'})) | length }}"
    assert render(escaped, {"input": page}) == 300_008
    # A join through a method charges its list once (a review: twice, so 60,000 items passed the
    # work budget before and not after).
    many = {"xs": ["a"] * 60_000}
    assert render("{{ (','.join(input.xs)) | length }}", {"input": many}) == 119_999
    # A larger list read once is not a test called for every item: no refusal.
    big = {"b": list(range(100_000))}
    assert render("{{ 99999 is in input.b }}", {"input": big}) is True


def test_a_run_recorded_before_the_checks_renders_as_it_did() -> None:
    """Without the checks (the engine's path for a run recorded before patch
    ``template-arguments``) the same templates evaluate as before: what the run recorded is what
    it replays."""
    lists = {"a": list(range(3000)), "b": list(range(-1, -1001, -1))}
    source = "{{ input.a | select('in', input.b) | list | length }}"
    with pytest.raises(ArgumentSizeError):
        render(source, {"input": lists})
    joined = "{{ (['a', 'b', 'c'] | join(input.sep)) | length }}"
    with unbounded_arguments():
        assert render(source, {"input": lists}) == 0
        assert render(joined, {"input": {"sep": "-" * 600_000}}) == 1_200_003
    with pytest.raises(ArgumentSizeError):
        render(joined, {"input": {"sep": "-" * 600_000}})
    # The checks spend no more of the budgets that runs recorded before them counted (a review:
    # tojson's indent walk spent the single-operation budget, and a method join the work budget
    # again, both failing renders those runs had done): the same work, checked or not.
    for template, data in (
        (
            "{{ input.l == input.l }}{{ input.xs | tojson(1) | length }}",
            {"l": ["x" * 1_040_000], "xs": [0] * 20_000},
        ),
        ("{{ ', '.join(input.xs) | length }}", {"xs": ["a"] * 1000}),
    ):
        checked = render(template, {"input": data})
        work = last_work()
        with unbounded_arguments():
            assert render(template, {"input": data}) == checked
            assert last_work() == work
    assert issubclass(ArgumentSizeError, TemplateError)
