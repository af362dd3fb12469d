"""Parsing and formatting of durations used in workflow definitions.

Two notations are accepted:

* compact: ``500ms``, ``30s``, ``5m``, ``2h``, ``3d``, ``1w`` and combinations such as ``1h30m``
  (units in descending order, each at most once, whitespace and case ignored);
* ISO 8601: ``PT30S``, ``P3D``, ``P1DT2H30M``, ``PT0.5S``, ``P2W``.

Years and months are rejected because their length depends on the calendar.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = ["DurationError", "DurationTooLargeError", "format_duration", "parse_duration"]


class DurationError(ValueError):
    """Raised when a duration text cannot be parsed or a duration cannot be formatted."""


class DurationTooLargeError(DurationError):
    """A well-formed duration longer than the parser's bound (``MAX_DURATION``)."""


_HINT = "use forms like 30s, 5m, 2h, 3d, 1h30m or ISO 8601 like P3D"

_MICROS_PER_UNIT: dict[str, int] = {
    "w": 7 * 86_400_000_000,
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
}
# Descending order; compact parts must follow it so "5m1h" or "5m5m" are rejected as typos.
_UNIT_ORDER: tuple[str, ...] = ("w", "d", "h", "m", "s", "ms")

_NUMBER = r"\d+(?:\.\d+)?"
# "ms" must be tried before "m" and "s".
_COMPACT_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|w|d|h|m|s)\s*")
_PLAIN_NUMBER = re.compile(rf"\s*[+-]?{_NUMBER}\s*")

_ISO_NUMBER = r"\d+(?:[.,]\d+)?"
_ISO = re.compile(
    rf"P(?:(?P<y>{_ISO_NUMBER})Y)?(?:(?P<mo>{_ISO_NUMBER})M)?(?:(?P<w>{_ISO_NUMBER})W)?"
    rf"(?:(?P<d>{_ISO_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_ISO_NUMBER})H)?(?:(?P<mi>{_ISO_NUMBER})M)?(?:(?P<s>{_ISO_NUMBER})S)?)?"
)
_ISO_GROUP_UNITS: tuple[tuple[str, str], ...] = (
    ("w", "w"),
    ("d", "d"),
    ("h", "h"),
    ("mi", "m"),
    ("s", "s"),
)


def _invalid(text: str, reason: str = _HINT, kind: type[DurationError] = DurationError) -> DurationError:
    return kind(f"invalid duration {text!r}: {reason}")


_OVERFLOWING_DIGITS = 20
"""A number of this many digits before its point (leading zeros aside) is, in the smallest unit
(ms), past what a ``timedelta`` holds: it is "too large", which :func:`_make_timedelta` says."""


def _significant_digits(whole: str) -> int:
    """The digits of ``whole`` from its first that is not a zero, in any script (``\\d`` and
    ``Decimal`` read them all: a review found Arabic-Indic zeros counted as significant)."""
    for index, char in enumerate(whole):
        if unicodedata.decimal(char, 0) != 0:
            return len(whole) - index
    return 0


def _to_micros(text: str, number: str, unit: str) -> int:
    if _significant_digits(number.replace(",", ".").partition(".")[0]) >= _OVERFLOWING_DIGITS:
        # Converting it costs time quadratic in its digits (an attacker's probe: 250,000 digits
        # took 1.3 s, in every foreach item): any number past timedelta's range does as well.
        return int(10**_OVERFLOWING_DIGITS) * _MICROS_PER_UNIT[unit]
    try:
        value = Decimal(number.replace(",", "."))
    except InvalidOperation as exc:
        raise _invalid(text) from exc
    micros = (value * _MICROS_PER_UNIT[unit]).to_integral_value(rounding=ROUND_HALF_EVEN)
    return int(micros)


MAX_DURATION = timedelta(days=36600)
"""The longest duration accepted (about 100 years): longer ones overflow datetime arithmetic."""


def _make_timedelta(text: str, micros: int) -> timedelta:
    try:
        value = timedelta(microseconds=micros)
    except OverflowError as exc:
        raise _invalid(text, "too large", DurationTooLargeError) from exc
    if value > MAX_DURATION:
        raise _invalid(text, f"too large (at most {MAX_DURATION.days} days)", DurationTooLargeError)
    return value


def _parse_iso(text: str, upper: str) -> timedelta:
    match = _ISO.fullmatch(upper)
    if match is None:
        raise _invalid(text)
    groups = match.groupdict()
    if groups["y"] is not None or groups["mo"] is not None:
        raise _invalid(
            text,
            "years and months have an ambiguous length; use weeks or days instead (e.g. P30D)",
        )
    if upper.endswith("T"):
        raise _invalid(text)
    micros = 0
    found = False
    for group, unit in _ISO_GROUP_UNITS:
        number = groups[group]
        if number is not None:
            found = True
            micros += _to_micros(text, number, unit)
    if not found:
        raise _invalid(text)
    return _make_timedelta(text, micros)


def _parse_compact(text: str, lower: str) -> timedelta:
    position = 0
    micros = 0
    last_rank = -1
    while position < len(lower):
        match = _COMPACT_PART.match(lower, position)
        if match is None:
            raise _invalid(text)
        number, unit = match.group(1), match.group(2)
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise _invalid(text, f"units must appear once each, largest first (e.g. 1h30m); {_HINT}")
        last_rank = rank
        micros += _to_micros(text, number, unit)
        position = match.end()
    return _make_timedelta(text, micros)


@functools.lru_cache(maxsize=4096)  # definitions repeat the same few durations in every run
def parse_duration(text: str) -> timedelta:
    """Parse a compact or ISO 8601 duration.

    Args:
        text: The duration, e.g. ``"30s"``, ``"1h30m"``, ``"500ms"``, ``"P1DT2H"`` or ``"PT0.5S"``.

    Returns:
        The duration as a non-negative ``timedelta``. Fractions below a microsecond are rounded
        half-to-even.

    Raises:
        DurationError: If the text is not a valid duration, is a bare number without a unit, is
            negative, or uses years or months.
    """
    if not isinstance(text, str):
        raise DurationError(f"invalid duration {text!r}: expected a string; {_HINT}")
    stripped = text.strip()
    if not stripped:
        raise _invalid(text)
    if stripped.startswith("-"):
        raise _invalid(text, "negative durations are not allowed")
    if _PLAIN_NUMBER.fullmatch(stripped):
        raise _invalid(text, f"add a unit, e.g. {stripped.lstrip('+')}s; {_HINT}")
    upper = stripped.upper()
    if upper.startswith("P"):
        return _parse_iso(text, upper)
    return _parse_compact(text, stripped.lower())


def format_duration(td: timedelta) -> str:
    """Format a duration in the compact notation accepted by :func:`parse_duration`.

    Days are not folded into weeks. Sub-millisecond precision is kept as fractional seconds so
    that ``parse_duration(format_duration(td)) == td`` always holds.

    Args:
        td: A non-negative duration.

    Returns:
        The compact text, e.g. ``"1h30m"``, ``"3d"``, ``"250ms"``, ``"1.0005s"`` or ``"0s"``.

    Raises:
        DurationError: If ``td`` is negative.
    """
    if td < timedelta(0):
        raise DurationError(f"cannot format negative duration {td!r}")
    days = td.days
    hours, remainder = divmod(td.seconds, 3600)
    minutes, seconds = divmod(remainder, 60)
    micros = td.microseconds
    parts: list[str] = []
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if micros % 1000 == 0:
        if seconds:
            parts.append(f"{seconds}s")
        if micros:
            parts.append(f"{micros // 1000}ms")
    else:
        fraction = f"{micros:06d}".rstrip("0")
        parts.append(f"{seconds}.{fraction}s")
    return "".join(parts) or "0s"
