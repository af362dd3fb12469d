"""Business-hours windows and DST-correct computation of the next opening.

A day's window is the interval of instants from the local wall-clock ``start`` to the local
wall-clock ``end`` on that date. Wall-clock times are resolved with :mod:`zoneinfo`:

* a time that does not exist (spring-forward gap) resolves to the first instant after the gap;
* an ambiguous time (fall-back fold) resolves to its first occurrence (``fold=0``).

Results depend on the installed tz database, so every worker replaying a workflow must use the
same tzdata version.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from interpreter.templates import check_template, contains_template

__all__ = ["BusinessHours", "Weekday", "check_timezone", "delay_until_open", "next_open"]

_MAX_SEARCH_DAYS = 3700
_HHMM = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d|24:00")
# Resolve to a machine-specific zone rather than a portable IANA one, so they are refused.
_NON_PORTABLE_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class Weekday(StrEnum):
    """Day of the week, in ``datetime.weekday()`` order."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


_WEEKDAYS: tuple[Weekday, ...] = tuple(Weekday)


def check_timezone(name: str) -> ZoneInfo:
    """The zone of an IANA name.

    Raises:
        ValueError: Naming the zone, when it is not a portable IANA name known to the tz database.
    """
    if name in _NON_PORTABLE_ZONES:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name like 'America/Chicago'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # (OSError: a directory of the tz database, such as 'America', or a name too long for a
        # file name; found by an attacker's probe, it failed the workflow task again and again.)
        shown = name if len(name) <= 100 else f"{name[:100]}… ({len(name)} characters)"
        raise ValueError(f"unknown time zone {shown!r}: use an IANA name like 'America/Chicago'") from exc


def _parse_hhmm(value: str) -> time | None:
    """Parse ``HH:MM``; ``None`` stands for ``24:00`` (end of the day)."""
    if value == "24:00":
        return None
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


def _minutes(value: str) -> int:
    hour, minute = value.split(":")
    return int(hour) * 60 + int(minute)


class BusinessHours(BaseModel):
    """Weekly opening hours in one IANA time zone.

    Attributes:
        timezone: IANA zone name, e.g. ``America/Chicago``, or a template giving one at run time
            (``{{ input.family.timezone }}``).
        days: Open weekdays, no duplicates, at least one.
        start: Local opening time ``HH:MM``.
        end: Local closing time ``HH:MM`` (exclusive), later than ``start``; ``24:00`` means
            midnight at the end of the day.
        holidays: Local dates that are closed even if their weekday is open.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    timezone: str
    # Lax for the weekday names only, so code can write ``days=["mon"]``; JSON accepts them anyway.
    days: list[Annotated[Weekday, Field(strict=False)]] = Field(
        default_factory=lambda: [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI],
        min_length=1,
    )
    start: str = "09:00"
    end: str = "17:00"
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        if contains_template(value):
            check_template(value)  # the zone is known only at run time (e.g. the family's zone)
            return value
        check_timezone(value)
        return value

    @property
    def templated(self) -> bool:
        """Whether ``timezone`` is a template, to render before :func:`next_open` can use it."""
        return contains_template(self.timezone)

    @field_validator("days", mode="before")
    @classmethod
    def _lowercase_days(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [item.strip().lower() if isinstance(item, str) else item for item in value]
        return value

    @field_validator("days")
    @classmethod
    def _check_days(cls, value: list[Weekday]) -> list[Weekday]:
        seen: list[Weekday] = []
        for day in value:
            if day in seen:
                raise ValueError(f"duplicate day {day.value!r}")
            seen.append(day)
        return value

    @field_validator("start", "end")
    @classmethod
    def _check_time(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError(f"invalid time {value!r}: expected HH:MM from 00:00 to 23:59 (or 24:00 as end)")
        return value

    @model_validator(mode="after")
    def _check_order(self) -> BusinessHours:
        if self.start == "24:00":
            raise ValueError("start must be before 24:00")
        if _minutes(self.start) >= _minutes(self.end):
            raise ValueError(f"start {self.start!r} must be before end {self.end!r}")
        return self


def _resolve(day: date, wall: time | None, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the local wall clock on ``day`` first reads ``wall``.

    ``None`` means 24:00, i.e. midnight starting the next day.
    """
    naive = (
        datetime.combine(day + timedelta(days=1), time(0)) if wall is None else datetime.combine(day, wall)
    )
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # Gap: fold=0 applies the pre-transition offset and lands after the transition, fold=1
    # lands before it; the first existing instant after the gap lies in between.
    before = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if before > first:
        before, first = first, before
    # Binary search over whole seconds (tz transitions fall on whole seconds) for the smallest
    # offset from ``before`` whose wall-clock reading is not earlier than ``naive``.
    low, high = 0, int((first - before).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if (before + timedelta(seconds=middle)).astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return before + timedelta(seconds=high)


def next_open(now: datetime, hours: BusinessHours) -> datetime:
    """The first instant at or after ``now`` that lies inside a business-hours window.

    Args:
        now: The current time; must be timezone-aware.
        hours: The business hours.

    Returns:
        ``now`` itself if it lies inside a window (its local date is an open weekday and not a
        holiday, and it is at or after the window's start and before its end); otherwise the
        start of the next window as an aware UTC datetime.

    Raises:
        ValueError: If ``now`` is naive, or no window opens within about ten years.
    """
    return _next_open(now, hours, frozenset(hours.holidays))


def _next_open(now: datetime, hours: BusinessHours, holidays: frozenset[date]) -> datetime:
    """:func:`next_open` with the holidays as a set, built once by a caller that asks many times
    (a probe: :func:`add_business_time` rebuilt a set of 100,000 holidays 3,700 times, 12 s in one
    workflow activation, past the deadlock limit at every attempt)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    zone = check_timezone(hours.timezone)
    now_utc = now.astimezone(UTC)
    open_days = frozenset(hours.days)
    start = _parse_hhmm(hours.start)
    end = _parse_hhmm(hours.end)
    if start is None:
        raise ValueError("start must be before 24:00")
    day = now_utc.astimezone(zone).date()
    for _ in range(_MAX_SEARCH_DAYS):
        if _WEEKDAYS[day.weekday()] in open_days and day not in holidays:
            opens = _resolve(day, start, zone)
            closes = _resolve(day, end, zone)
            if now_utc < opens < closes:
                return opens
            if opens <= now_utc < closes:
                return now
        day += timedelta(days=1)
    raise ValueError(f"no open window within {_MAX_SEARCH_DAYS} days of {now.isoformat()}")


def delay_until_open(now: datetime, hours: BusinessHours) -> timedelta:
    """How long to wait from ``now`` until business hours are open.

    Args:
        now: The current time; must be timezone-aware.
        hours: The business hours.

    Returns:
        Zero when open now, otherwise the time until the next window opens.

    Raises:
        ValueError: As for :func:`next_open`.
    """
    return next_open(now, hours) - now


def add_business_time(start: datetime, duration: timedelta, hours: BusinessHours) -> datetime:
    """The instant when ``duration`` of open business time has passed since ``start``.

    Time counts only inside the windows: a task due in ``8h`` of 09:00-17:00 business hours,
    created on Friday at 16:00, is due on Monday at 16:00.

    Args:
        start: Timezone-aware.
        duration: Open time to add (zero or more).
        hours: The business hours (its timezone rendered).

    Raises:
        ValueError: As for :func:`next_open`, or when the duration does not fit in about ten years.
    """
    zone = check_timezone(hours.timezone)
    end = _parse_hhmm(hours.end)
    holidays = frozenset(hours.holidays)
    remaining = duration
    moment = _next_open(start, hours, holidays).astimezone(UTC)
    for _ in range(_MAX_SEARCH_DAYS):
        closes = _resolve(moment.astimezone(zone).date(), end, zone)
        available = closes - moment
        if remaining <= available:
            return moment + remaining
        remaining -= available
        moment = _next_open(closes, hours, holidays).astimezone(UTC)
    raise ValueError(f"{duration} of business time does not fit within {_MAX_SEARCH_DAYS} days")
