from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from interpreter.business_hours import BusinessHours, Weekday, delay_until_open, next_open

CHICAGO = ZoneInfo("America/Chicago")
WEEKDAYS = BusinessHours(timezone="America/Chicago")


def chicago(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=CHICAGO, fold=fold)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --------------------------------------------------------------------------------------- model


def test_defaults() -> None:
    hours = BusinessHours(timezone="Europe/Berlin")
    assert hours.days == [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI]
    assert (hours.start, hours.end, hours.holidays) == ("09:00", "17:00", [])


def test_parses_json_input() -> None:
    hours = BusinessHours.model_validate_json(
        '{"timezone": "UTC", "days": ["Mon", "sat"], "holidays": ["2026-12-25"], "start": "08:30"}'
    )
    assert hours.days == [Weekday.MON, Weekday.SAT]
    assert hours.holidays == [date(2026, 12, 25)]


def test_unknown_timezone_named_in_error() -> None:
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        BusinessHours(timezone="Mars/Olympus")


# ("America" is a directory of the tz database and 300 letters too long a file name: both raised an
# OSError, out of a definition's validation and, from run data, out of the workflow task.)
@pytest.mark.parametrize(
    "name", ["", "localtime", "../etc/passwd", "/usr/share/zoneinfo/UTC", "America", "Etc", "a" * 300]
)
def test_non_iana_timezone_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        BusinessHours(timezone=name)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"days": []}, "at least 1"),
        ({"days": ["mon", "mon"]}, "duplicate day 'mon'"),
        ({"days": ["funday"]}, "days.0"),
        ({"start": "9:00"}, "invalid time '9:00'"),
        ({"start": "24:00"}, "invalid time|before"),
        ({"end": "25:00"}, "invalid time '25:00'"),
        ({"start": "10:00", "end": "10:00"}, "must be before end"),
        ({"start": "18:00", "end": "09:00"}, "must be before end"),
        ({"lunch": "12:00"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_fields(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BusinessHours.model_validate({"timezone": "America/Chicago", **fields})


def test_frozen() -> None:
    with pytest.raises(ValidationError):
        WEEKDAYS.start = "08:00"  # type: ignore[misc]


# ----------------------------------------------------------------------------------- next_open


def test_naive_now_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_open(datetime(2026, 3, 6, 18), WEEKDAYS)  # noqa: DTZ001


def test_inside_window_returns_now_itself() -> None:
    now = chicago(2026, 3, 4, 10, 15)
    assert next_open(now, WEEKDAYS) is now
    assert delay_until_open(now, WEEKDAYS) == timedelta(0)


def test_at_start_is_open_and_at_end_is_closed() -> None:
    start = chicago(2026, 3, 4, 9, 0)
    assert next_open(start, WEEKDAYS) is start
    assert next_open(chicago(2026, 3, 4, 17, 0), WEEKDAYS) == utc(2026, 3, 5, 15, 0)


def test_before_opening_same_day() -> None:
    assert next_open(chicago(2026, 3, 4, 7, 0), WEEKDAYS) == utc(2026, 3, 4, 15, 0)


def test_result_is_utc() -> None:
    result = next_open(chicago(2026, 3, 4, 7, 0), WEEKDAYS)
    assert result.tzinfo is UTC


def test_now_in_another_zone() -> None:
    # 2026-03-04 03:00 UTC is Tuesday 21:00 CST, after closing.
    assert next_open(utc(2026, 3, 4, 3, 0), WEEKDAYS) == utc(2026, 3, 4, 15, 0)
    assert next_open(utc(2026, 3, 4, 16, 0), WEEKDAYS) == utc(2026, 3, 4, 16, 0)


def test_friday_evening_across_spring_forward() -> None:
    # Friday 18:00 CST -> Monday 09:00 CDT (UTC-5) after the Sunday 2026-03-08 change.
    now = chicago(2026, 3, 6, 18, 0)
    assert next_open(now, WEEKDAYS) == utc(2026, 3, 9, 14, 0)
    assert delay_until_open(now, WEEKDAYS) == timedelta(days=2, hours=14)


def test_friday_evening_across_fall_back() -> None:
    # Friday 17:30 CDT -> Monday 09:00 CST (UTC-6) after the Sunday 2026-11-01 change.
    now = chicago(2026, 10, 30, 17, 30)
    assert now.utcoffset() == timedelta(hours=-5)
    assert next_open(now, WEEKDAYS) == utc(2026, 11, 2, 15, 0)
    assert delay_until_open(now, WEEKDAYS) == timedelta(days=2, hours=16, minutes=30)


def test_weekend() -> None:
    assert next_open(chicago(2026, 3, 14, 11, 0), WEEKDAYS) == utc(2026, 3, 16, 14, 0)
    assert next_open(chicago(2026, 3, 15, 23, 59), WEEKDAYS) == utc(2026, 3, 16, 14, 0)


def test_holidays_skipped() -> None:
    hours = BusinessHours(timezone="America/Chicago", holidays=[date(2026, 3, 9), date(2026, 3, 10)])
    assert next_open(chicago(2026, 3, 6, 18, 0), hours) == utc(2026, 3, 11, 14, 0)
    # A holiday is closed even during what would be its window.
    assert next_open(chicago(2026, 3, 9, 10, 0), hours) == utc(2026, 3, 11, 14, 0)


def test_holiday_is_a_local_date() -> None:
    # 2026-03-10 03:00 UTC is still Monday 2026-03-09 (22:00 CDT) in Chicago.
    hours = BusinessHours(timezone="America/Chicago", holidays=[date(2026, 3, 10)])
    assert next_open(utc(2026, 3, 10, 3, 0), hours) == utc(2026, 3, 11, 14, 0)


def test_window_start_in_spring_forward_gap_moves_to_first_existing_instant() -> None:
    hours = BusinessHours(timezone="America/Chicago", days=["sun"], start="02:30", end="05:00")
    result = next_open(chicago(2026, 3, 7, 20, 0), hours)
    assert result == utc(2026, 3, 8, 8, 0)
    assert result.astimezone(CHICAGO).strftime("%H:%M %Z") == "03:00 CDT"


def test_inside_window_that_started_in_gap_is_open() -> None:
    hours = BusinessHours(timezone="America/Chicago", days=["sun"], start="02:30", end="05:00")
    now = chicago(2026, 3, 8, 3, 10)
    assert next_open(now, hours) is now


def test_window_entirely_inside_gap_does_not_open() -> None:
    hours = BusinessHours(timezone="America/Chicago", days=["sun"], start="02:10", end="02:50")
    assert next_open(chicago(2026, 3, 7, 20, 0), hours) == utc(2026, 3, 15, 7, 10)


def test_ambiguous_window_start_uses_first_occurrence() -> None:
    hours = BusinessHours(timezone="America/Chicago", days=["sun"], start="01:30", end="05:00")
    result = next_open(chicago(2026, 10, 31, 20, 0), hours)
    assert result == utc(2026, 11, 1, 6, 30)
    assert result.astimezone(CHICAGO).strftime("%H:%M %Z") == "01:30 CDT"


def test_second_pass_of_fold_inside_window_is_open() -> None:
    hours = BusinessHours(timezone="America/Chicago", days=["sun"], start="01:00", end="03:00")
    now = chicago(2026, 11, 1, 1, 15, fold=1)
    assert now.utcoffset() == timedelta(hours=-6)
    assert next_open(now, hours) is now


def test_ambiguous_window_end_uses_first_occurrence() -> None:
    # The window closes at the first 01:30 (CDT); the repeated 01:15 CST is after it.
    hours = BusinessHours(timezone="America/Chicago", days=["sun"], start="00:00", end="01:30")
    assert next_open(chicago(2026, 11, 1, 1, 15, fold=1), hours) == utc(2026, 11, 8, 6, 0)
    before_end = chicago(2026, 11, 1, 1, 15, fold=0)
    assert next_open(before_end, hours) is before_end


def test_end_of_day_window() -> None:
    hours = BusinessHours(timezone="America/Chicago", days=list(Weekday), start="00:00", end="24:00")
    for now in (
        chicago(2026, 3, 8, 0, 0),
        chicago(2026, 3, 8, 23, 59, 59),
        chicago(2026, 11, 1, 1, 30, fold=1),
    ):
        assert next_open(now, hours) is now


def test_no_open_window_raises() -> None:
    mondays = [date(2026, 3, 9) + timedelta(weeks=week) for week in range(600)]
    hours = BusinessHours(timezone="America/Chicago", days=["mon"], holidays=mondays)
    with pytest.raises(ValueError, match="no open window"):
        next_open(chicago(2026, 3, 6, 18, 0), hours)


def test_other_hemisphere_and_zone() -> None:
    # Sydney, Saturday 2026-04-04 10:00 AEDT; DST ends Sunday 2026-04-05 03:00 -> AEST (UTC+10).
    sydney = ZoneInfo("Australia/Sydney")
    hours = BusinessHours(timezone="Australia/Sydney")
    now = datetime(2026, 4, 4, 10, 0, tzinfo=sydney)
    assert next_open(now, hours) == utc(2026, 4, 5, 23, 0)


def _is_open_local(instant: datetime, hours: BusinessHours) -> bool:
    local = instant.astimezone(ZoneInfo(hours.timezone))
    return (
        local.weekday() < 5
        and local.date() not in hours.holidays
        and hours.start <= local.strftime("%H:%M") < hours.end
    )


@pytest.mark.parametrize("first_day", [date(2026, 3, 5), date(2026, 10, 29)])
def test_sweep_across_dst_weeks(first_day: date) -> None:
    # Every 20 minutes for a week: results are open, in the future only when closed now, start
    # at 09:00 local, and no sampled instant in between is open.
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    samples = [start + timedelta(minutes=20 * step) for step in range(7 * 72)]
    for now in samples:
        result = next_open(now, WEEKDAYS)
        if _is_open_local(now, WEEKDAYS):
            assert result is now
            continue
        assert result > now
        assert result.astimezone(CHICAGO).strftime("%H:%M") == "09:00"
        assert _is_open_local(result, WEEKDAYS)
        assert not any(now <= other < result and _is_open_local(other, WEEKDAYS) for other in samples)


def test_many_holidays_are_read_once_per_computation() -> None:
    """A probe: a human task's ``due`` in business hours open one minute a week, with 100,000
    holidays, rebuilt the holiday set at every window it looked at: 12 s in one workflow
    activation, past the deadlock limit at every attempt. Not a timed assertion on speed: a hang
    detector, with the CPU time of this process (the answer took 0.1 s)."""
    import time

    from interpreter.business_hours import add_business_time

    holidays = [date(3000, 1, 1) + timedelta(days=n) for n in range(100_000)]
    hours = BusinessHours(
        timezone="America/Chicago", days=[Weekday.MON], start="09:00", end="09:01", holidays=holidays
    )
    started = time.process_time()
    with pytest.raises(ValueError, match="does not fit within"):
        add_business_time(utc(2026, 12, 7, 12, 0), timedelta(days=36_000), hours)
    assert time.process_time() - started < 4
    # The same holidays, a due that fits: a Monday minute, the next week's after a holiday.
    near = BusinessHours(
        timezone="UTC",
        days=[Weekday.MON],
        start="09:00",
        end="09:01",
        holidays=[date(2026, 12, 14), *holidays],
    )
    assert add_business_time(utc(2026, 12, 7, 9, 0), timedelta(seconds=90), near) == utc(
        2026, 12, 21, 9, 0, 30
    )
