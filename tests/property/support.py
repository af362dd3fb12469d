"""What the property-based tests share: their settings and the example definitions they mutate."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from interpreter.model import STEP_TYPES

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def checks(max_examples: int) -> settings:
    """Settings for a property: reproducible (derandomized, no example database: CI and a laptop run
    the same cases), no per-example deadline (the machine may be busy; speed is for benchmarks)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def example_documents() -> dict[str, dict[str, Any]]:
    """The definitions in ``examples/`` (all valid), by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))}


# Keys whose values are data (templated values, outputs), not definition structure: a dict with an
# ``id`` and a ``type`` inside them is not a step.
_DATA_KEYS = frozenset({"input", "vars", "output", "json", "headers", "params", "body"})


def steps_of(document: Any, path: str = "$") -> Iterator[tuple[str, list[Any], int]]:
    """Every step of a definition: its JSON path, the list (sequence) that holds it and its index,
    in document order."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key in _DATA_KEYS:
                continue
            yield from steps_of(value, f"{path}.{key}")
    elif isinstance(document, list):
        for i, item in enumerate(document):
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item.get("type") in STEP_TYPES:
                yield f"{path}[{i}]", document, i
            yield from steps_of(item, f"{path}[{i}]")


_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def strings_of(value: Any, path: str) -> Iterator[tuple[str, Any, str | int]]:
    """Every string inside a JSON value: its JSON path, its container and its key (or index)."""
    items: Any = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    )
    for key, item in items:
        if isinstance(key, str) and not _SIMPLE_KEY.fullmatch(key):
            continue  # written ["a b"] in a path; not needed here
        where = f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]"
        if isinstance(item, str):
            yield where, value, key
        else:
            yield from strings_of(item, where)


def at(document: Any, path: str) -> Any:
    """The value at a JSON path written as :func:`steps_of` writes them (``$.steps[2].then``)."""
    value = document
    for part in path.removeprefix("$").replace("[", ".[").split(".")[1:]:
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return value
