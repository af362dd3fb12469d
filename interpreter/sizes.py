"""Payload budgets: how big a value is once serialised, measured without serialising it.

Temporal refuses a payload over 2 MiB (one activity result, the run's result, a failure's details,
a query answer); a run whose state grows past that cannot report it and would stay running. So
outputs are measured on their structure before they join the run (a string referenced many times is
counted every time, as it would be serialised), and a step whose output would bring the run past its
budget fails as a step, which the definition's ``on_failure`` handles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["ACTION_OUTPUT_BUDGET", "RUN_STATE_BUDGET", "json_size"]

ACTION_OUTPUT_BUDGET = 512 * 1024
"""Largest output one action may return (Temporal warns about payloads from 512 KiB on)."""

RUN_STATE_BUDGET = 1536 * 1024
"""Largest total of the outputs and variables a run keeps (its result and status carry them, and
must stay under Temporal's 2 MiB payload limit with room for the rest)."""


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
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2 if item.isascii() else len(item.encode("utf-8", "replace")) + 2
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
