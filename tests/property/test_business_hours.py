"""Business hours across DST in every zone: ``delay_until_open`` is checked against an oracle.

For generated zones (all of ``zoneinfo.available_timezones()``), instants (uniform, and near the
zone's UTC-offset transitions: DST, and the odd zone that moved across the date line) and weekly
windows (often placed on the wall-clock times a transition skips or repeats), the wake-up time
``now + delay`` must be exactly what an independent construction gives:

* a day's window runs from the first instant the local wall clock reaches ``start`` to the first
  instant it reaches ``end`` on that date (the module's documented rule: a time in a gap resolves to
  the first instant after the gap, an ambiguous one to its first occurrence);
* the wake-up is ``now`` when ``now`` is inside a window, else the earliest window start after it.

The oracle finds those instants from the zone's offset transitions (located by scanning the offset
and bisecting to the second), not from wall-clock arithmetic as the module does. The wake-up must be
inside a window of an open weekday that is not a holiday, and no window of any date between ``now``
and the wake-up may hold an earlier instant.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import assume, event, given
from hypothesis import strategies as st

from interpreter.business_hours import BusinessHours, Weekday, delay_until_open
from tests.property.support import checks

ZONES = sorted(available_timezones() - {"localtime", "posixrules", "Factory"})
# Zones whose transitions are unusual: at midnight (a gap that removes 00:00, a fold back to 23:00 of
# the day before), 30-minute or 2-hour DST, DST in winter (negative), 45-minute offsets, Ramadan
# pauses, a day skipped at the date line (Apia 2011, Kiritimati 1994/95); and two ordinary ones.
UNUSUAL = [
    "America/Sao_Paulo",
    "America/Asuncion",
    "America/Havana",
    "America/Santiago",
    "Asia/Beirut",
    "Asia/Gaza",
    "Asia/Tehran",
    "America/St_Johns",
    "America/Nuuk",
    "Australia/Lord_Howe",
    "Antarctica/Troll",
    "Europe/Dublin",
    "Africa/Casablanca",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "America/New_York",
    "Europe/Berlin",
]
WEEKDAYS = list(Weekday)
SCAN = timedelta(hours=6)  # no zone changes its offset twice within 6 hours
Transition = tuple[datetime, timedelta, timedelta]  # (UTC instant, offset before, offset after)


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _wall(zone: ZoneInfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _transitions(zone: ZoneInfo, start: datetime, stop: datetime) -> list[Transition]:
    """The instants in [start, stop] where the zone's UTC offset changes (to the second)."""
    found: list[Transition] = []
    a = start.replace(minute=0, second=0, microsecond=0)
    before = _offset(zone, a)
    while a < stop:
        b = a + SCAN
        after = _offset(zone, b)
        if after != before:
            low, high = 0, int(SCAN.total_seconds())  # offset(a + low) is before's, at a + high after's
            while high - low > 1:
                middle = (low + high) // 2
                if _offset(zone, a + timedelta(seconds=middle)) == before:
                    low = middle
                else:
                    high = middle
            found.append((a + timedelta(seconds=high), before, after))
        a, before = b, after
    return found


@functools.lru_cache(maxsize=256)
def _year_transitions(name: str, year: int) -> list[Transition]:
    return _transitions(
        ZoneInfo(name), datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    )


class Oracle:
    """The first instant the local wall clock reaches a reading, from the zone's transitions."""

    def __init__(self, zone: ZoneInfo, start: datetime, stop: datetime) -> None:
        self.zone = zone
        self.transitions = _transitions(zone, start - timedelta(days=3), stop + timedelta(days=3))
        self.offsets = {_offset(zone, start - timedelta(days=3))} | {t[2] for t in self.transitions}

    def first_reaching(self, reading: datetime) -> datetime:
        """The smallest instant whose wall clock reads ``reading`` or later: either an instant that
        reads exactly ``reading`` (one per offset in use) or a transition that jumps over it."""
        as_utc = reading.replace(tzinfo=UTC)
        candidates = [as_utc - o for o in self.offsets if _wall(self.zone, as_utc - o) == reading]
        candidates += [
            instant
            for instant, before, after in self.transitions
            if instant.replace(tzinfo=None) + before <= reading <= instant.replace(tzinfo=None) + after
        ]
        assert candidates, f"no instant reads {reading} in {self.zone}"
        return min(candidates)

    def window(self, day: date, hours: BusinessHours) -> tuple[datetime, datetime]:
        midnight = datetime.combine(day, time())
        return (
            self.first_reaching(midnight + _minutes(hours.start)),
            self.first_reaching(midnight + _minutes(hours.end)),  # 24:00 is the next midnight
        )


def _minutes(hhmm: str) -> timedelta:
    hour, minute = hhmm.split(":")
    return timedelta(hours=int(hour), minutes=int(minute))


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def cases(draw: st.DrawFn) -> tuple[datetime, BusinessHours]:
    near = draw(st.booleans(), label="near a transition")
    name = draw(st.sampled_from(UNUSUAL) if near else st.sampled_from(ZONES), label="zone")
    zone = ZoneInfo(name)
    year = draw(st.integers(1990, 2037), label="year")
    transitions = _year_transitions(name, year) if near else []
    if transitions:
        instant, before, after = draw(st.sampled_from(transitions), label="transition")
        event("near a transition: " + ("gap" if after > before else "fold"))
        now = instant + draw(st.timedeltas(-timedelta(days=2), timedelta(days=2)), label="from transition")
        # Window edges on the readings the transition skips or repeats, give or take.
        pivots = [(instant.replace(tzinfo=None) + o) for o in (before, after)]
        pivot = draw(st.sampled_from(pivots), label="pivot")
        start = pivot.hour * 60 + pivot.minute + draw(st.integers(-90, 90), label="start from pivot")
        start = min(max(start, 0), 1439)
        end = min(start + draw(st.integers(1, 240), label="length"), 1440)
    else:
        event("anywhere")
        now = datetime(year, 1, 1, tzinfo=UTC) + draw(
            st.timedeltas(timedelta(0), timedelta(days=365)), label="into the year"
        )
        start = draw(st.integers(0, 1439), label="start")
        end = draw(st.integers(start + 1, 1440), label="end")
    today = _wall(zone, now).date()
    hours = BusinessHours(
        timezone=name,
        days=draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True), label="days"),
        start=_hhmm(start),
        end=_hhmm(end),
        holidays=draw(
            st.lists(
                st.dates(today - timedelta(days=2), today + timedelta(days=21)), max_size=10, unique=True
            ),
            label="holidays",
        ),
    )
    return now, hours


@checks(400)
@given(cases())
def test_the_wake_up_is_the_first_open_instant(case: tuple[datetime, BusinessHours]) -> None:
    now, hours = case
    zone = ZoneInfo(hours.timezone)
    delay = delay_until_open(now, hours)
    assert delay >= timedelta(0)
    wake = now + delay

    oracle = Oracle(zone, now, wake)
    days_open = set(hours.days)
    first = _wall(zone, now).date() - timedelta(days=1)  # a window of the day before may still be open
    last = _wall(zone, wake).date() + timedelta(days=1)
    windows: list[tuple[date, datetime, datetime]] = []
    day = first
    while day <= last:
        if WEEKDAYS[day.weekday()] in days_open and day not in hours.holidays:
            opens, closes = oracle.window(day, hours)
            if opens < closes:
                windows.append((day, opens, closes))
        day += timedelta(days=1)

    holding = [(day, opens, closes) for day, opens, closes in windows if opens <= wake < closes]
    assert holding, f"{wake} ({_wall(zone, wake)} local) is in no window; windows: {windows}"
    (day, opens, _), *_ = holding
    assert WEEKDAYS[day.weekday()] in days_open
    assert day not in hours.holidays
    assert wake == now or wake == opens  # now if open, else a window's start
    earlier = [(d, o, c) for d, o, c in windows if o < wake and c > now and not o <= now < c]
    assert not earlier, f"opens earlier than {wake}: {earlier}"
    if wake > now:
        assert not any(o <= now < c for _, o, c in windows), "open at now, yet told to wait"


@checks(100)
@given(st.sampled_from(UNUSUAL), st.integers(1990, 2037))
def test_the_oracle_finds_the_transitions_zoneinfo_reports(name: str, year: int) -> None:
    """The oracle's own footing: between two transitions it found, the offset does not change."""
    transitions = _year_transitions(name, year)
    assume(transitions)
    zone = ZoneInfo(name)
    for instant, before, after in transitions:
        assert _offset(zone, instant - timedelta(seconds=1)) == before
        assert _offset(zone, instant) == after
