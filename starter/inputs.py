"""Checks of caller-supplied values before they reach the Temporal server or the database.

Light (no SDK, no driver), so the CLI refuses bad input (exit 2) before connecting to anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from interpreter.sizes import VALUE_MAX_DEPTH
from starter.errors import InvalidInputError

__all__ = ["brief", "check_json", "check_json_object", "json_type"]


def check_json(
    value: Any, what: str, *, max_depth: int = VALUE_MAX_DEPTH, _path: str = "$", _depth: int = 0
) -> None:
    """Checks that ``value`` is plain JSON the server and the store can both keep.

    Refuses what PostgreSQL cannot store (a NUL character in a string or key), what JSON cannot
    express (NaN, infinities, non-string keys, other types) and nesting deeper than ``max_depth``
    levels (default :data:`interpreter.sizes.VALUE_MAX_DEPTH`, 64: what a run keeps of a value; a
    definition document takes :data:`interpreter.validate.DEFINITION_MAX_DEPTH`).

    Raises:
        InvalidInputError: Naming ``what`` and the JSON path of the first problem.
    """
    if _depth > max_depth:
        raise InvalidInputError(f"{what} is nested more than {max_depth} levels deep (at {_path[:200]})")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} has a number JSON cannot hold at {_path}: {value}")
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInputError(
                f"{what} has a NUL character (\\u0000) at {_path}, which cannot be stored"
            )
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{what} has a key that is not a string at {_path}: {brief(key)}")
            if "\x00" in key:
                raise InvalidInputError(f"{what} has a NUL character (\\u0000) in a key at {_path}")
            check_json(item, what, max_depth=max_depth, _path=f"{_path}.{key[:50]}", _depth=_depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, what, max_depth=max_depth, _path=f"{_path}[{index}]", _depth=_depth + 1)
        return
    raise InvalidInputError(f"{what} has a {type(value).__name__} at {_path}, which is not JSON")


def check_json_object(value: object, what: str) -> dict[str, Any]:
    """``value`` (None: empty) as a dict, if it is a JSON object :func:`check_json` accepts.

    Raises:
        InvalidInputError: Not a mapping, or not storable JSON.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, not {json_type(value)}")
    check_json(value, what)
    return dict(value)


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__


def brief(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
