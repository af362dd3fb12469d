"""Data is inert: references that arrive as data are escaped, and the escape round-trips to text."""

from __future__ import annotations

import pytest

from activities.base import resolve_secrets
from interpreter.inert import make_inert


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
