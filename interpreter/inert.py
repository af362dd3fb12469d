"""Data is inert: a secret reference that arrives as data is text, never a reference.

Secrets are written ``${secret:NAME}`` in a definition's own text and resolved only inside the
action's activity. Everything else a run handles is data (its input, action outputs, approval form
data, an operator's redrive input or skip output); data may come from anyone, so the engine makes
it inert where it enters the run: every ``${secret:`` inside a string becomes ``$${secret:``, the
escaped form the activity turns back into the literal text ``${secret:`` without resolving it. A
template that writes data into a step's input therefore sends exactly the text the data held.

Definition text keeps its references (that is where a tenant's author names the secrets the step
uses); validation refuses a ``$`` written directly before a template tag (``${{ ... }}``), since the
value rendered there could complete a reference (``{secret:NAME}``) that neither side wrote whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "SECRET_REF",
    "SECRET_REF_START",
    "as_text",
    "holds_reference",
    "keep_recorded",
    "make_inert",
    "seal",
]

SECRET_REF_START = "${secret:"
SECRET_REF = re.compile(r"(\$?)\$\{secret:([^}]*)\}")
"""A reference as the activity resolves it: ``${secret:NAME}`` (group 2 the name);
``$${secret:NAME}`` (group 1 set) is the escaped, literal text (what data becomes when a template
writes it into a step's input: data never names a secret). ``interpreter.templates`` finds an
author's references with the same pattern, less its own mark characters."""
_ESCAPED = "$" + SECRET_REF_START


def sub_references(
    pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str, excluded: str = ""
) -> str:
    """``pattern.sub(repl, text)`` for :data:`SECRET_REF` (or a pattern like it whose name group
    also refuses the characters ``excluded``), in time linear in ``text``. A match ends at the first
    ``}`` after its start and holds none of ``excluded``, so it lies within a part of the text
    between ``excluded`` characters and before the part's last ``}``: the pattern runs on those
    heads alone. On the whole text, each start with no ``}`` after it scanned to the end before
    failing: ``${secret:`` repeated over 200 KB took 7.7 s, and over 2 MB hours (found by an
    attacker's probe)."""
    if SECRET_REF_START not in text:
        return text
    parts = re.split(f"([{re.escape(excluded)}])", text) if excluded else [text]
    out: list[str] = []
    for part in parts:
        end = part.rfind("}") + 1
        out.append(pattern.sub(repl, part[:end]) + part[end:] if end else part)
    return "".join(out)


_START = re.compile(r"(\$?)\$\{secret:")
"""Where the activity would see a reference start: ``$${secret:`` (group 1 set) is the escaped,
literal form; ``${secret:`` alone is live."""


def make_inert(value: Any) -> Any:
    """A copy of a JSON-like value with every secret reference in its strings escaped.

    Dict keys are escaped too (a key can be rendered into a string). Values without a reference
    are returned as they are (no copy), so the common case costs one scan.
    """
    return _map_strings(value, _escape_all)


def _escape_all(text: str) -> str:
    return text.replace(SECRET_REF_START, _ESCAPED)


def _map_strings(value: Any, escape: Callable[[str], str]) -> Any:
    """``value`` with ``escape`` applied to every string holding ``${secret:`` (dict keys too);
    a container holding none is returned as it is (no copy)."""
    if isinstance(value, str):
        return escape(value) if SECRET_REF_START in value else value
    if isinstance(value, dict):
        if not holds_reference(value):
            return value
        return {_map_strings(key, escape): _map_strings(item, escape) for key, item in value.items()}
    if isinstance(value, list | tuple):
        if not holds_reference(value):
            return value
        return [_map_strings(item, escape) for item in value]
    return value


def holds_reference(value: Any) -> bool:
    """Whether a JSON-like value holds ``${secret:`` in any string (dict keys too), escaped or not."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if SECRET_REF_START in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def as_text(value: Any) -> Any:
    """The text an inert value stands for: a copy in which every ``$${secret:`` is ``${secret:``
    again, the inverse of :func:`make_inert` (``as_text(make_inert(v)) == v``).

    Only for a value on its way to where it is made inert again (a child run's input: the child's
    engine escapes its whole input), so the data reaches the child's actions as the text it was,
    not escaped twice. Nothing is resolved here, and a reference the value holds is escaped again
    on arrival.
    """
    return _map_strings(value, _unescape)


def _unescape(text: str) -> str:
    return text.replace(_ESCAPED, SECRET_REF_START)


def seal(value: Any) -> Any:
    """A copy of a JSON-like value (keys too) in which no reference is live: every ``${secret:``
    that is not escaped already is escaped; escaped ones are left as they are.

    Unlike :func:`make_inert` (for data entering the run, whose every ``${secret:`` is text), it
    is idempotent, so it serves where a value is inert already unless forged, or where a template
    made it of inert data (``interpreter.templates``): data that is inert passes unchanged.
    """
    return _map_strings(value, _escape_live_ones)


def _escape_live_ones(text: str) -> str:
    return _START.sub(_escape_live, text)


def _escape_live(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) else _ESCAPED


def keep_recorded(value: Any, recorded: Any) -> Any:
    """``value`` made inert, except where it repeats ``recorded`` at the same place: there the
    recorded value is kept as it was, its references live.

    For an operator's redrive input (data) against the parked step's recorded input (the
    definition's, resolved): a key the operator left as the dead letter shows it (a header holding
    the definition's ``${secret:TOKEN}``, a note holding a customer's escaped text) is sent as the
    step first sent it, not escaped once more; whatever the operator changed or added is inert.
    Nothing the operator writes becomes live: only the recorded value, at its own place, is.
    """
    if isinstance(value, dict) and isinstance(recorded, dict):
        kept = {
            (key if key in recorded else make_inert(key)): (
                keep_recorded(item, recorded[key]) if key in recorded else make_inert(item)
            )
            for key, item in value.items()
        }
        # A new key escaped into a kept one's name (``${secret:K}`` beside a recorded
        # ``$${secret:K}``) would overwrite it: the whole dict is made inert instead, so no value
        # is lost and nothing is live (its recorded references go out as their text).
        return kept if len(kept) == len(value) else make_inert(value)
    if isinstance(value, list) and isinstance(recorded, list):
        return [
            keep_recorded(item, recorded[i]) if i < len(recorded) else make_inert(item)
            for i, item in enumerate(value)
        ]
    if type(value) is type(recorded) and value == recorded:  # (``True`` is not ``1`` here)
        return recorded
    return make_inert(value)
