"""Data is inert: references that arrive as data are escaped, and the escape round-trips to text."""

from __future__ import annotations

import pytest

from activities.base import resolve_secrets
from interpreter.inert import make_inert
from interpreter.templates import TemplateError, check_template
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import run, task


@pytest.mark.parametrize(
    "data",
    [
        "${secret:DB_PASSWORD}",
        "prefix ${secret:A} and ${secret:B} suffix",
        "$${secret:ALREADY_ESCAPED}",
        "$$${secret:X}",
        "${secret:}",
        "${secret:not a name}",
    ],
)
def test_escaped_data_resolves_to_exactly_the_text_it_held(data: str) -> None:
    # No secret is configured: if anything were resolved, resolve_secrets would raise SecretNotFound.
    assert resolve_secrets(make_inert(data)) == data


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
