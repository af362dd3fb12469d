"""From an HTML form to a decision's data, by the step's declared fields (and back, for messages).

Browsers send text; each declared field's type says how to read it. A value that cannot be read
(a number that is not one) is reported next to its field without asking the run; everything else
(required fields, lengths, enum values, dates) is the run's own check (``form_problem`` in the
engine), whose message the inbox places next to the field it names.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData
from starlette.requests import Request

from interpreter.model import FieldType, FormField

FIELD_PREFIX = "f_"
"""Declared fields travel as ``f_<name>``, so a field called ``reason`` or ``run`` never meets the
page's own controls."""

_FIELD_IN_MESSAGE = re.compile(r"form field '([A-Za-z_][A-Za-z0-9_]*)'")


@dataclass(frozen=True)
class FieldView:
    """A declared field as the template renders it."""

    field: FormField
    label: str
    value: str
    error: str | None

    @property
    def input_id(self) -> str:
        """The input's HTML id."""
        return f"f-{self.field.name}"


class UnreadableFormError(Exception):
    """A form the inbox does not read (:func:`submitted_form`)."""


async def submitted_form(request: Request) -> FormData:
    """The request's form, if it is what these pages send: urlencoded, its escapes UTF-8.

    Starlette reads a byte that is not UTF-8 (``%FF``) as U+FFFD, a raw non-ASCII byte, and any
    such byte of a multipart part, as Latin-1, so a decision recorded a reason or a field the
    person never wrote (``é`` as ``Ã©``), where the JSON endpoints refuse such a body (found by a
    probe and a review). Browsers send these pages' forms urlencoded, escaping every non-ASCII
    byte of the page's UTF-8.

    Raises:
        UnreadableFormError: Another content type, a raw non-ASCII byte, or an escape that is not UTF-8.
    """
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise UnreadableFormError
    try:
        parse_qsl((await request.body()).decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise UnreadableFormError from None
    return await request.form()


def label_of(name: str) -> str:
    """A readable label from a field name (``cost_center`` -> ``Cost center``)."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number as people type it (its digits in any script read as 0-9 first). float() also took an
underscore ("1_000"), and a comma anywhere was dropped, so "1,5" (one and a half, in much of
Europe) was recorded as 15 (a probe and a review)."""
_GROUPED = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
"""Commas only between groups of three digits, before any point: ``1,234,567.5``."""


def _number(text: str) -> tuple[int | float | None, str | None]:
    """The number ``text`` says, or the problem (to follow the field's label)."""
    # Digits of any script (Arabic-Indic, full-width from an IME) as the ASCII digits they are.
    plain = "".join(str(unicodedata.decimal(c)) if not c.isascii() and c.isdecimal() else c for c in text)
    if "," in plain:
        if not _GROUPED.fullmatch(plain):
            return None, f": {text[:40]!r} is not a number (a comma goes only between groups of three digits)"
        plain = plain.replace(",", "")
    if re.fullmatch(r"-?[0-9]+", plain):
        return int(plain), None
    if not _NUMBER.fullmatch(plain):
        if plain.strip("+-").lower() in ("nan", "inf", "infinity"):
            return None, " must be a finite number"
        return None, f": {text[:40]!r} is not a number"
    number = float(plain)
    if not math.isfinite(number):
        return None, " must be a finite number"
    if number == 0 and re.search(r"[1-9]", plain.partition("e")[0].partition("E")[0]):
        # 1e-999 arrived as 0.0 (a probe), as the gateway's JSON bodies refuse it too.
        return None, f": {text[:40]!r} is too close to zero to keep"
    return number, None


MAX_NUMBER_CHARS = 100
"""Longest number a form field takes (as the gateway's JSON bodies): 4,000 digits passed here, and
the run failed when a template read the number (found by a probe)."""


def read_form(form: list[FormField], submitted: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The decision data of a submitted form, and the fields that could not be read.

    An empty input is left out (the run then says whether the field was required).
    """
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for declared in form:
        raw = submitted.get(FIELD_PREFIX + declared.name, "")
        text = raw.strip() if declared.type != FieldType.STRING else raw
        if text == "":
            continue
        if declared.type == FieldType.NUMBER:
            if len(text.lstrip("-+")) > MAX_NUMBER_CHARS:  # a run fails on a number past 13,000 bits
                errors[declared.name] = f"{label_of(declared.name)}: at most {MAX_NUMBER_CHARS} digits"
                continue
            number, problem = _number(text)
            if problem is not None:
                errors[declared.name] = f"{label_of(declared.name)}{problem}"
                continue
            data[declared.name] = number
        elif declared.type == FieldType.BOOLEAN:
            if text not in ("true", "false"):
                errors[declared.name] = f"{label_of(declared.name)}: choose yes or no"
                continue
            data[declared.name] = text == "true"
        else:
            data[declared.name] = text
    return data, errors


def field_of_message(message: str, form: list[FormField]) -> str | None:
    """The declared field a refusal names, if any."""
    match = _FIELD_IN_MESSAGE.search(message)
    if match and any(f.name == match.group(1) for f in form):
        return match.group(1)
    return None


def readable_refusal(message: str) -> str:
    """A refusal for a person: the run's message without the step path noise."""
    text = re.sub(r"^decision token refused: ", "", message)
    return re.sub(r"form field '([^']+)' of step '[^']+' ", "", text)


def field_views(
    form: list[FormField], submitted: Mapping[str, str], errors: Mapping[str, str]
) -> list[FieldView]:
    """What the template needs for each declared field."""
    return [
        FieldView(f, label_of(f.name), submitted.get(FIELD_PREFIX + f.name, ""), errors.get(f.name))
        for f in form
    ]
