from datetime import timedelta

import pytest

from interpreter.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h", timedelta(days=1, hours=2)),
        ("1w2d3h4m5s6ms", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5, milliseconds=6)),
        (" 1h 30m ", timedelta(hours=1, minutes=30)),
        ("1 h 30 m", timedelta(hours=1, minutes=30)),
        ("1H30M", timedelta(hours=1, minutes=30)),
        ("250MS", timedelta(milliseconds=250)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
        ("0ms", timedelta(0)),
        ("PT30S", timedelta(seconds=30)),
        ("P3D", timedelta(days=3)),
        ("P1DT2H30M", timedelta(days=1, hours=2, minutes=30)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0,5S", timedelta(milliseconds=500)),
        ("P2W", timedelta(weeks=2)),
        ("pt1m", timedelta(minutes=1)),
        ("PT0S", timedelta(0)),
        ("  P1D  ", timedelta(days=1)),
    ],
)
def test_parse_valid(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_invalid_message_names_text_and_forms() -> None:
    with pytest.raises(DurationError) as info:
        parse_duration("3 days")
    assert str(info.value) == (
        "invalid duration '3 days': use forms like 30s, 5m, 2h, 3d, 1h30m or ISO 8601 like P3D"
    )


@pytest.mark.parametrize("text", ["30", "1.5", " 42 "])
def test_plain_number_asks_for_unit(text: str) -> None:
    with pytest.raises(DurationError, match="add a unit"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-5s", "-PT5S", " -1h"])
def test_negative_rejected(text: str) -> None:
    with pytest.raises(DurationError, match="negative"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["P1Y", "P2M", "P1Y2M3D", "P1MT5M"])
def test_years_and_months_rejected_as_ambiguous(text: str) -> None:
    with pytest.raises(DurationError, match="ambiguous"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "s", "5x", "5 minutes", "1h1h", "30m1h", "5m5m", "P", "PT", "P1DT", "PT5", "5s!", "1e3s"],
)
def test_garbage_rejected(text: str) -> None:
    with pytest.raises(DurationError, match="invalid duration"):
        parse_duration(text)


def test_error_is_value_error_and_names_text() -> None:
    with pytest.raises(ValueError, match="'5 parsecs'"):
        parse_duration("5 parsecs")


def test_non_string_rejected() -> None:
    with pytest.raises(DurationError):
        parse_duration(30)  # type: ignore[arg-type]


def test_overflow_rejected() -> None:
    with pytest.raises(DurationError, match="too large"):
        parse_duration("9999999999999w")


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=3), "3d"),
        (timedelta(days=10), "10d"),
        (timedelta(days=1, hours=2, seconds=3, milliseconds=4), "1d2h3s4ms"),
        (timedelta(seconds=1, microseconds=500), "1.0005s"),
        (timedelta(microseconds=1), "0.000001s"),
    ],
)
def test_format(td: timedelta, expected: str) -> None:
    assert format_duration(td) == expected


def test_format_negative_rejected() -> None:
    with pytest.raises(DurationError):
        format_duration(timedelta(seconds=-1))


@pytest.mark.parametrize(
    "td",
    [
        timedelta(0),
        timedelta(microseconds=7),
        timedelta(days=400, hours=23, minutes=59, seconds=59, microseconds=999_999),
        timedelta(hours=1, milliseconds=1),
        timedelta(weeks=3),
    ],
)
def test_round_trip(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td


@pytest.mark.parametrize("text", ["1h30m", "3d", "250ms", "0s", "1d2h3s4ms"])
def test_format_of_canonical_text_is_identity(text: str) -> None:
    assert format_duration(parse_duration(text)) == text
