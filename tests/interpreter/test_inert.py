"""Data is inert: references that arrive as data are escaped, and the escape round-trips to text."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from activities.base import resolve_secrets
from interpreter.inert import as_text, keep_recorded, make_inert, seal
from interpreter.templates import TemplateError, check_template, render, render_html
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import run, task

DATA = [
    "${secret:DB_PASSWORD}",
    "prefix ${secret:A} and ${secret:B} suffix",
    "$${secret:ALREADY_ESCAPED}",
    "$$${secret:X}",
    "${secret:}",
    "${secret:not a name}",
]
"""Data holding references, escaped ones and malformed ones."""


@pytest.mark.parametrize("data", DATA)
def test_escaped_data_resolves_to_exactly_the_text_it_held(data: str) -> None:
    # No secret is configured: if anything were resolved, resolve_secrets would raise SecretNotFound.
    assert resolve_secrets(make_inert(data)) == data


@pytest.mark.parametrize("data", [*DATA, {"${secret:K}": ["${secret:V}", ("$${secret:W}",)]}])
def test_seal_leaves_inert_data_as_it_is_and_makes_any_other_inert(data: Any) -> None:
    """``seal`` guards values that are inert unless forged (a fan-out slice, a snapshot): a no-op
    on inert data (escaping it again would change its text), and nothing it returns resolves."""
    inert = make_inert(data)
    assert seal(inert) == inert
    sealed = seal(data)
    assert seal(sealed) == sealed
    resolve_secrets(sealed)  # no secret is configured: a live reference would raise SecretNotFound


@pytest.mark.parametrize("data", [*DATA, {"${secret:K}": ["${secret:V}", "$${secret:W}", "$$${secret:X}"]}])
def test_as_text_gives_back_the_text_inert_data_stands_for(data: Any) -> None:
    """``as_text`` undoes ``make_inert``: a child run given its parent's data as text escapes it
    once, so the child's actions get the text (escaped twice, a ``$`` more per crossing)."""
    assert as_text(make_inert(data)) == data
    assert make_inert(as_text(make_inert(data))) == make_inert(data)
    # An author's live reference is left as it is (the child escapes its whole input on arrival).
    assert as_text("${secret:LIVE} and $${secret:TEXT}") == "${secret:LIVE} and ${secret:TEXT}"


def test_every_depth_and_keys_are_escaped() -> None:
    data = {"a": [{"b": ("x", "${secret:K}")}], "${secret:KEY}": 1, "n": 3, "none": None}
    inert = make_inert(data)
    assert inert == {"a": [{"b": ["x", "$${secret:K}"]}], "$${secret:KEY}": 1, "n": 3, "none": None}
    assert resolve_secrets(inert["a"]) == [{"b": ["x", "${secret:K}"]}]


def test_values_without_references_are_not_copied() -> None:
    data = {"a": [1, "two", {"three": "${not a secret}"}]}
    assert make_inert(data) is data


@pytest.mark.parametrize(
    "template",
    [
        "${{ input.amount }}",
        "price: ${{- input.amount }}",
        "${% if x %}1{% endif %}",
        "${secret:{{ input.which }}}",
    ],
)
def test_templates_where_data_could_complete_or_choose_a_reference_are_refused(template: str) -> None:
    with pytest.raises(TemplateError, match="secret"):
        check_template(template)


async def test_a_reference_in_run_input_or_an_action_output_is_sent_as_text() -> None:
    rt = FakeRuntime()
    rt.returning("echo", {"next": "${secret:FROM_RESPONSE}"})
    steps = [
        task("first", input={"note": "{{ input.note }}", "own": "${secret:OWN}"}),
        task(
            "second", input={"echoed": "{{ steps.first.output.next }}", "whole": "{{ steps.first.output }}"}
        ),
    ]
    _, _, rt = await run(steps, rt, run_input={"note": "hi ${secret:FROM_INPUT}"})
    first, second = (call.input for call in rt.calls)
    assert first == {"note": "hi $${secret:FROM_INPUT}", "own": "${secret:OWN}"}
    assert second == {"echoed": "$${secret:FROM_RESPONSE}", "whole": {"next": "$${secret:FROM_RESPONSE}"}}


SECRET_REFERENCE = re.compile(r"(\$?)\$\{secret:([^}]*)\}")
"""What the activity resolves (``activities.base``): an unescaped ``${secret:NAME}``."""

# The adversary: whoever writes a run's data (a webhook body, a form, an HTTP response) and knows
# what the definition's templates do with it. Each value alone holds no reference, so make_inert
# leaves it as it is; what the template makes of the values must not become one either.
FORMED = [
    # Two values written next to each other complete a reference neither holds.
    ("Hello {{ input.first }}{{ input.last }}", {"first": "${sec", "last": "ret:API_TOKEN}"}),
    ("{{ input.first }}{{ input.last }}", {"first": "${secret:", "last": "API_TOKEN}"}),
    ("{{ input.first ~ input.last }}", {"first": "${sec", "last": "ret:API_TOKEN}"}),
    ("{{ [input.first ~ input.last] }}", {"first": "${sec", "last": "ret:API_TOKEN}"}),
    ("{{ {'k': input.first ~ input.last} }}", {"first": "${sec", "last": "ret:API_TOKEN}"}),
    # Ordinary filters rebuild one from a value that is not one.
    ("{{ input.comment | striptags }}", {"comment": "$<i>{secret:API_TOKEN}</i>"}),
    ("x {{ input.comment | replace('#', '') }}", {"comment": "$#{secret:API_TOKEN}"}),
    ("{{ input.comment | reverse }}", {"comment": "}NEKOT_IPA:terces{$"}),
    ("{% for c in input.chars %}{{ c }}{% endfor %}", {"chars": list("${secret:API_TOKEN}")}),
    ("{{ input.chars | join }}", {"chars": list("${secret:API_TOKEN}")}),
    ("{% set x %}{{ input.first }}{% endset %}{{ x }}{{ input.last }}", {"first": "${sec", "last": "ret:A}"}),
    # Data formed next to the author's own reference: only the author's is one.
    ("${secret:OWN} {{ input.first }}{{ input.last }}", {"first": "${sec", "last": "ret:API_TOKEN}"}),
]


@pytest.mark.parametrize(("template", "data"), FORMED)
def test_data_that_forms_a_reference_through_a_template_stays_text(
    template: str, data: dict[str, Any]
) -> None:
    rendered = render({"v": template}, {"input": make_inert(data)})["v"]
    assert [name for name in secret_names(rendered) if name != "OWN"] == [], rendered
    # No secret is configured: resolving anything but the author's own reference would raise.
    sent = resolve_secrets(json.loads(json.dumps(rendered).replace("${secret:OWN}", "own")))
    assert "{secret:" in json.dumps(sent)  # the data's text arrives as text


def secret_names(value: Any) -> list[str]:
    """The names of the references the activity would resolve in a rendered value."""
    names: list[str] = []
    if isinstance(value, str):
        names += [m.group(2) for m in SECRET_REFERENCE.finditer(value) if not m.group(1)]
    elif isinstance(value, dict):
        for key, item in value.items():
            names += secret_names(key) + secret_names(item)
    elif isinstance(value, list):
        for item in value:
            names += secret_names(item)
    return names


def test_the_author_references_still_resolve_where_the_author_wrote_them() -> None:
    value = {
        "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
        "body": "${secret:A} for {{ input.name }} and ${secret:B}{% for i in [1, 2] %} ${secret:C}{% endfor %}",
        "escaped": "$${secret:D} {{ input.name }}",
        "html": "<p>{{ input.name }}</p>${secret:E}",
    }
    rendered = render(value, {"input": make_inert({"name": "${secret:X}"})})
    assert rendered == {
        "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
        "body": "${secret:A} for $${secret:X} and ${secret:B} ${secret:C} ${secret:C}",
        "escaped": "$${secret:D} $${secret:X}",
        "html": "<p>$${secret:X}</p>${secret:E}",
    }
    assert render_html(
        "<p>{{ input.a }}{{ input.b }}</p> ${secret:E}", {"input": {"a": "${sec", "b": "ret:Z}"}}
    ) == ("<p>$${secret:Z}</p> ${secret:E}")


@pytest.mark.parametrize(
    "template",
    [
        "{{ '${secret:C}' }}",
        "{{ '${secret:C}' | reverse }}",
        "{% set x %}${secret:C}{% endset %}{{ x }}",
        "{% filter upper %}${secret:c}{% endfilter %}",
        "{% macro m() %}${secret:C}{% endmacro %}{{ m() }}",
        "{% block b %}${secret:C}{% endblock %}",
        # loop() returns the body's text as a value (a review found the mark reach the output).
        "{% for n in [[[]]] recursive %}t=${secret:C} {{ loop(n) | upper }}{% endfor %}",
        "{% for n in [[[]]] recursive %}${secret:C}{{ loop(n) | reverse }}{% endfor %}",
    ],
)
def test_a_reference_a_template_can_take_apart_is_refused(template: str) -> None:
    """Inside a tag, or in text an expression can read back (a block, macro or set), a reference
    would be a value the template could cut, reverse or rebuild: validation refuses it, naming it."""
    with pytest.raises(TemplateError, match="secret reference"):
        check_template(template)
    # A definition stored before this check renders it as text: nothing is resolved.
    assert secret_names(render(template, {})) == []


RECORDED = {
    "url": "https://pay.example/charge",
    "headers": {"Authorization": "Bearer ${secret:PAY_TOKEN}", "X-Trace": "t1"},
    "json": {"note": make_inert("paid ${secret:PAY_TOKEN}"), "n": 1, "tags": ["${secret:TAG}", "b"]},
}
"""A parked step's recorded input: the definition's live references and a customer's escaped text."""


def test_a_redrive_input_keeps_the_recorded_values_the_operator_left_and_escapes_the_rest() -> None:
    typed = "${secret:OTHER}"
    corrected = keep_recorded(
        {
            "url": "https://pay.example/v2/charge",  # changed
            "headers": {"Authorization": "Bearer ${secret:PAY_TOKEN}", "X-Trace": typed},
            "json": {"note": RECORDED["json"]["note"], "n": True, "tags": ["${secret:TAG}", typed, typed]},
            typed: typed,  # a new key
        },
        RECORDED,
    )
    assert corrected == {
        "url": "https://pay.example/v2/charge",
        # Left as recorded: the definition's reference stays live.
        "headers": {"Authorization": "Bearer ${secret:PAY_TOKEN}", "X-Trace": make_inert(typed)},
        # The customer's text as recorded (escaped once), True is not 1, what was typed is inert.
        "json": {
            "note": "paid $${secret:PAY_TOKEN}",
            "n": True,
            "tags": ["${secret:TAG}", "$" + typed, "$" + typed],
        },
        "$" + typed: "$" + typed,
    }
    assert keep_recorded(RECORDED, RECORDED) == RECORDED


@pytest.mark.parametrize(
    "forged",
    [
        {"headers": "Bearer ${secret:PAY_TOKEN}"},  # a recorded value moved to another place
        {"json": {"note": "paid ${secret:PAY_TOKEN}"}},  # the text unescaped
        {"headers": {"Authorization": ["Bearer ${secret:PAY_TOKEN}"]}},
        {"url": "${secret:PAY_TOKEN}"},
    ],
)
def test_an_operator_cannot_make_a_reference_live_by_redrive(forged: dict[str, Any]) -> None:
    """The attacker is an operator who wants a secret the step did not send where it sent it: no
    reference they write is live unless it is the recorded value at its own place."""
    corrected = keep_recorded(forged, RECORDED)
    assert corrected == make_inert(forged)
    # No secret is configured: anything live would raise SecretNotFound; all of it is text.
    assert resolve_secrets(corrected) == forged


def test_a_new_key_that_escapes_into_a_kept_ones_name_loses_nothing() -> None:
    """A review: ``${secret:K}`` beside a recorded ``$${secret:K}`` escaped into the same key."""
    recorded = {"$${secret:K}": "v"}
    value = {"$${secret:K}": "v", "${secret:K}": "w"}
    assert keep_recorded(value, recorded) == make_inert(value)
    assert len(keep_recorded(value, recorded)) == 2
