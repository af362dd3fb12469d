"""Strict JSON for request bodies: the media type, UTF-8, no NaN/Infinity, no duplicate keys,
bounded nesting and number size, and an object where one is expected.

Every refusal is a :class:`~gateway.errors.ApiError` carrying the HTTP status and a short machine code, turned into
``{"error": code, "detail": message}`` by the app's handler.
"""

from __future__ import annotations

import json
import math
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


def parse_strict(body: bytes, *, max_depth: int = 32, max_digits: int = 100) -> Any:
    """Parses a JSON body strictly.

    Raises:
        BodyError: 400 for malformed JSON (with the position), duplicate keys, NaN/Infinity, non-UTF-8
            bytes; 413 for nesting past ``max_depth`` or a number longer than ``max_digits``.
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
        return value

    try:
        return json.loads(
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


def parse_object(body: bytes, *, max_depth: int = 32, max_digits: int = 100) -> dict[str, Any]:
    """:func:`parse_strict` of a body that must be a JSON object (400 otherwise)."""
    value = parse_strict(body, max_depth=max_depth, max_digits=max_digits)
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        raise BodyError(400, "not_an_object", f"the body must be a JSON object, not {kind}")
    return value
