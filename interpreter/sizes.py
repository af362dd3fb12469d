"""Payload budgets: how big a value is once serialised, measured without serialising it.

Temporal refuses a payload over 2 MiB (one activity result, the run's result, a failure's details,
a query answer); a run whose state grows past that cannot report it and would stay running. So
outputs are measured on their structure before they join the run (a string referenced many times is
counted every time, as it would be serialised), and a step whose output would bring the run past its
budget fails as a step, which the definition's ``on_failure`` handles.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

__all__ = [
    "ACTION_OUTPUT_BUDGET",
    "ID_MAX_BYTES",
    "INT_MAX_BITS",
    "JSON_ESCAPE_EXPANSION",
    "RUN_STATE_BUDGET",
    "VALUE_MAX_DEPTH",
    "json_depth",
    "json_size",
    "json_written_size",
    "temporal_id",
    "text_problem",
]

ACTION_OUTPUT_BUDGET = 512 * 1024
"""Largest output one action may return (Temporal warns about payloads from 512 KiB on)."""

JSON_ESCAPE_EXPANSION = 6
"""JSON escapes a character in at most 6 bytes (``\\u001f``) where :func:`json_size` counts one
(and counts every other value at least as long as it is written, within the same factor): a value
whose ``json_size`` times this fits under a limit is written within it, and needs no measuring."""

RUN_STATE_BUDGET = 1536 * 1024
"""Largest total of the outputs and variables a run keeps (its result and status carry them, and
must stay under Temporal's 2 MiB payload limit with room for the rest)."""

VALUE_MAX_DEPTH = 64
"""Deepest nesting of lists and objects a value the run keeps may have (an action's output, a
variable, the run's input). Temporal's payloads are read with pydantic, which refuses JSON nested
past about 200 levels: a value nested near that inside the run's result, status or next run's
input could be written but not read back, and the workflow task reading it failed for ever. 64
leaves the run's own structure (records, snapshots, nested steps) the rest."""

INT_MAX_BITS = 13_000
"""Largest integer (in bits: about 3,900 digits) a value a run keeps may hold: JSON readers refuse
longer numbers (pydantic, and Python's own ``int`` parsing, past 4,300 digits)."""

ID_MAX_BYTES = 1000
"""Temporal's default limit on an id (activity, workflow, update): longer ones are refused, and a
workflow task whose command carries one fails for ever."""


def temporal_id(value: str) -> str:
    """``value`` as an id Temporal takes: itself when it fits in :data:`ID_MAX_BYTES` (every id
    of a run whose paths are not that long, so histories keep their ids), else its first 600 and
    last 300 bytes around a digest of the whole (the same value gives the same id, two values
    differing anywhere give two ids, and the Web UI still shows where the step is)."""
    raw = value.encode()
    if len(raw) <= ID_MAX_BYTES:
        return value
    digest = hashlib.sha256(raw).hexdigest()[:32]
    head = raw[:600].decode(errors="ignore")
    tail = raw[-300:].decode(errors="ignore")
    return f"{head}~{digest}~{tail}"


def text_problem(text: str) -> str | None:
    """What in ``text`` neither PostgreSQL nor a payload can hold, or None: a NUL character
    (PostgreSQL's text refuses it) or a lone surrogate (no UTF-8 encodes it, so the data converter
    fails on it, and so does every reader of an answer that quotes it)."""
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "a lone surrogate (text no UTF-8 can encode)"
    return None


def json_depth(value: Any, limit: int = VALUE_MAX_DEPTH) -> int:
    """How deep lists and objects nest in ``value`` (0 for a scalar, 1 for ``[1]``), counting no
    further than one past ``limit`` (so a hostile value costs at most its size to measure). Level
    by level, without a tuple per node: about 0.8x the time of :func:`json_size` on the same value
    (measured on a 60-node HTTP output)."""
    depth = 0
    level: list[Any] = [value]
    while True:
        children: list[Any] = []
        found = False
        for item in level:
            if isinstance(item, dict):
                found = True
                children.extend(item.values())
            elif isinstance(item, list | tuple):
                found = True
                children.extend(item)
            elif isinstance(item, Mapping):
                found = True
                children.extend(item.values())
        if not found:
            return depth
        depth += 1
        if depth > limit:
            return depth
        level = children


def json_size(value: Any, limit: int | None = None) -> int:
    """The approximate size in bytes of ``value`` as JSON: UTF-8 strings with their quotes (escapes
    not counted), numbers as written, one byte per separator.

    Args:
        value: A JSON-like value (dicts, lists, tuples, strings, numbers, booleans, None); other
            objects count as their ``str``.
        limit: Stop counting once past it (the result is then just over ``limit``).

    Returns:
        The size, or a number over ``limit`` when it was reached.
    """
    return _counted(value, limit, -1)


def json_written_size(value: Any, limit: int | None = None, *, escaped_up_to: int | None = None) -> int:
    """:func:`json_size` with every string counted as written, escapes and all (``\\u0001`` is six
    bytes, a quote two), as Temporal's pydantic converter writes it: UTF-8, control characters,
    quotes and backslashes escaped. The rest is counted as by :func:`json_size`, which counts no
    number or separator less than two thirds of its written size (``-1,`` counted two bytes), where
    it counts a string of control characters a sixth. About the time of :func:`json_size` plus one
    copy of each string escaped (the escaping, in C).

    Args:
        value: As for :func:`json_size`.
        limit: Stop counting once past it (the result is then just over ``limit``).
        escaped_up_to: Count strings as written only while the count stays within it (default:
            ``limit``, or every string); a string that would take it past is counted as
            :func:`json_size` counts it, without escaping (copying) it: what a budget of that size
            needs, where escaping megabytes of strings past it would take seconds (found by a
            review: 100 inputs of 55 MB, with the payload store, took 3.3 s to count).

    Returns:
        The size, or a number over ``limit`` when it was reached.
    """
    within = escaped_up_to if escaped_up_to is not None else limit
    return _counted(value, limit, sys.maxsize if within is None else within)


def _counted(value: Any, limit: int | None, escape_within: int) -> int:
    """:func:`json_size` (``escape_within`` -1) or :func:`json_written_size`: strings escaped
    while the count stays within ``escape_within``."""
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if total + len(item) + 2 > escape_within:
                total += len(item) + 2 if item.isascii() else len(item.encode("utf-8", "replace")) + 2
            else:
                escaped = encode_basestring(item)
                total += len(escaped) if escaped.isascii() else len(escaped.encode("utf-8", "surrogatepass"))
        elif isinstance(item, Mapping):
            total += 2 + len(item)
            for key, child in item.items():
                stack.append(str(key))
                stack.append(child)
        elif isinstance(item, list | tuple):
            total += 2 + len(item)
            stack.extend(item)
        elif item is None or isinstance(item, bool):
            total += 5
        elif isinstance(item, float):
            total += len(json.dumps(item))
        elif isinstance(item, int):
            total += 1 + item.bit_length() * 3 // 10  # digits, without converting a huge number
        else:
            total += len(str(item))
        if limit is not None and total > limit:
            return total
    return total
