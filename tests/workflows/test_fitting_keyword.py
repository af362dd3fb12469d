"""``CurrentStep``'s value is fitted to Temporal's limit for a search attribute value."""

from __future__ import annotations

import json

import pytest

from workflows.generic import SEARCH_ATTRIBUTE_MAX_BYTES, _fitting_keyword


@pytest.mark.parametrize("value", ["", "review", "p" * 2046, "é" * 340])
def test_a_value_that_fits_is_unchanged(value: str) -> None:
    assert _fitting_keyword(value) == value


@pytest.mark.parametrize("value", ["p" * 2047, "p" * 100_000, "é" * 400, "a" * 1000 + "\u2028" * 1000])
def test_a_longer_value_is_cut_to_fit_and_says_so(value: str) -> None:
    fitted = _fitting_keyword(value)
    assert len(json.dumps(fitted)) <= SEARCH_ATTRIBUTE_MAX_BYTES
    assert fitted.endswith("…")
    assert value.startswith(fitted[:-1])
    assert len(json.dumps(fitted)) > SEARCH_ATTRIBUTE_MAX_BYTES - 64  # cut near the limit, not far below


@pytest.mark.parametrize("value", ["p" * 256, "é" * 300, "😀" * 300, "p" * 5000])
def test_a_value_past_the_characters_asked_is_cut_to_them(value: str) -> None:
    fitted = _fitting_keyword(value, 255)
    assert len(fitted) <= 255
    assert len(json.dumps(fitted)) <= SEARCH_ATTRIBUTE_MAX_BYTES
    assert fitted.endswith("…")
    assert value.startswith(fitted[:-1])


def test_a_value_within_the_characters_asked_is_unchanged() -> None:
    assert _fitting_keyword("p" * 255, 255) == "p" * 255
