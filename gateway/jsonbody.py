"""Strict JSON for request bodies: the media type, UTF-8, no NaN/Infinity, no duplicate keys, no
lone surrogate escapes, bounded nesting and number size, and an object where one is expected.

Every refusal is a :class:`~gateway.errors.ApiError` carrying the HTTP status and a short machine code, turned into
``{"error": code, "detail": message}`` by the app's handler.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway.errors import ApiError as BodyError

__all__ = ["BodyError", "check_content_type", "parse_object", "parse_strict"]

_MEDIA_TYPES = {"application/json"}


def check_content_type(value: str | None) -> None:
    """Refuses anything but ``application/json`` (an optional ``charset=utf-8`` parameter)."""
    if not value:
        raise BodyError(415, "unsupported_media_type", "Content-Type must be application/json")
    media, _, params = value.partition(";")
    if media.strip().lower() not in _MEDIA_TYPES:
        raise BodyError(415, "unsupported_media_type", "Content-Type must be application/json")
    for param in params.split(";"):
        name, _, val = param.strip().partition("=")
        if name.lower() == "charset" and val.strip().strip('"').lower() not in {"utf-8", "utf8"}:
            raise BodyError(415, "unsupported_media_type", "the only charset accepted is utf-8")


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (strings skipped), before parsing."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BodyError(400, "invalid_json", f"duplicate key {key[:100]!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise BodyError(400, "invalid_json", f"{name} is not a JSON number")


_SURROGATE = re.compile("[\ud800-\udfff]")
"""A UTF-16 surrogate left alone: ``json`` pairs a high and a low escape into one character, so any
surrogate in a parsed string came from a lone ``\\ud800``-style escape. UTF-8 cannot write it."""
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")


def _member(path: str, key: str) -> str:
    """The JSON path of ``key`` in the object at ``path`` (``$.a``, or ``$["a b"]`` in ASCII)."""
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key[:50])}]"


def _lone_surrogate_at(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first string or key in ``value`` holding a lone surrogate, or None."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            member = _member(path, key)
            if _SURROGATE.search(key):
                return member
            found = _lone_surrogate_at(item, member)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def parse_strict(body: bytes, *, max_depth: int = 32, max_digits: int = 100) -> Any:
    """Parses a JSON body strictly.

    Raises:
        BodyError: 400 for malformed JSON (with the position), duplicate keys, NaN/Infinity, non-UTF-8
            bytes, a string or key holding a lone surrogate escape (``"\\ud800"``: valid JSON, but
            no UTF-8 text, so the data could not arrive as it was sent; the answer names its JSON
            path); 413 for nesting past ``max_depth`` or a number longer than ``max_digits``.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BodyError(400, "invalid_json", f"the body is not UTF-8 (byte {err.start})") from None
    if _depth_exceeds(text, max_depth):
        raise BodyError(413, "too_deep", f"JSON nesting deeper than {max_depth}")

    def parse_int(literal: str) -> int:
        if len(literal.lstrip("-")) > max_digits:
            raise BodyError(413, "number_too_large", f"a number longer than {max_digits} digits")
        return int(literal)

    def parse_float(literal: str) -> float:
        if len(literal) > max_digits + 10:
            raise BodyError(413, "number_too_large", f"a number longer than {max_digits} digits")
        value = float(literal)
        if not math.isfinite(value):
            raise BodyError(413, "number_too_large", f"{literal[:40]} does not fit a finite number")
        if value == 0.0 and any(c in "123456789" for c in literal.lower().partition("e")[0]):
            # 1e-999 arrived as 0.0: data must arrive as sent or be refused (an attacker's probe).
            raise BodyError(
                413, "number_too_large", f"{literal[:40]} is too small for a float: it would be 0"
            )
        return value

    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
            parse_int=parse_int,
            parse_float=parse_float,
        )
    except json.JSONDecodeError as err:
        raise BodyError(
            400, "invalid_json", f"not JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:  # _depth_exceeds bounds nesting well below this; kept as a guard
        raise BodyError(413, "too_deep", "JSON nesting too deep") from None
    # Found by an attacker's probe: a lone surrogate failed the run's start (500), and in a key it
    # was replaced on the way (the run got "\ufffd\ufffd\ufffd"). Only a \u escape makes one.
    where = _lone_surrogate_at(value) if "\\u" in text else None
    if where is not None:
        raise BodyError(
            400,
            "invalid_json",
            f"a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair) at {where}:"
            " it is not text UTF-8 can carry",
        )
    return value


def parse_object(body: bytes, *, max_depth: int = 32, max_digits: int = 100) -> dict[str, Any]:
    """:func:`parse_strict` of a body that must be a JSON object (400 otherwise)."""
    value = parse_strict(body, max_depth=max_depth, max_digits=max_digits)
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        raise BodyError(400, "not_an_object", f"the body must be a JSON object, not {kind}")
    return value
