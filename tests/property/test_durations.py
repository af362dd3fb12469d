"""Durations: what ``format_duration`` writes, ``parse_duration`` reads back exactly; whatever text
``parse_duration`` is given, it returns a duration or raises ``DurationError`` (a ``ValueError``)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from interpreter.durations import MAX_DURATION, DurationError, format_duration, parse_duration
from tests.property.support import checks

durations = st.timedeltas(min_value=timedelta(0), max_value=MAX_DURATION)
# Microsecond-exact and round values both: most definitions use whole units.
round_durations = st.builds(
    timedelta,
    days=st.integers(0, 400),
    hours=st.integers(0, 23),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
    milliseconds=st.integers(0, 999),
)

UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1)}
UNITS |= {"m": timedelta(minutes=1), "s": timedelta(seconds=1), "ms": timedelta(milliseconds=1)}
ALPHABET = "0123456789.,+-PTYMWDHSpTymwdhs µ\t\n{}"


@checks(500)
@given(st.one_of(durations, round_durations))
def test_format_then_parse_is_the_identity(td: timedelta) -> None:
    text = format_duration(td)
    assert parse_duration(text) == td
    assert text == text.strip()
    assert text.lower() == text


@checks(200)
@given(
    st.lists(st.sampled_from(list(UNITS)), min_size=1, unique=True).map(
        lambda units: sorted(units, key=list(UNITS).index)
    ),
    st.data(),
)
def test_compact_parts_largest_first_add_up(units: list[str], data: st.DataObject) -> None:
    amounts = [data.draw(st.integers(0, 500), label=unit) for unit in units]
    spaces = data.draw(st.sampled_from(["", " "]), label="spacing")
    text = spaces.join(f"{n}{spaces}{u}" for n, u in zip(amounts, units, strict=True))
    text = data.draw(st.sampled_from([text, text.upper()]), label="case")
    expected = sum((n * UNITS[u] for n, u in zip(amounts, units, strict=True)), timedelta(0))
    assert parse_duration(text) == expected


@checks(200)
@given(st.one_of(durations, round_durations))
def test_iso_seconds_read_as_the_same_duration(td: timedelta) -> None:
    seconds = td.days * 86_400 + td.seconds
    fraction = f".{td.microseconds:06d}" if td.microseconds else ""
    assert parse_duration(f"PT{seconds}{fraction}S") == td
    assert parse_duration(f"P{td.days}DT{td.seconds}{fraction}S") == td


@checks(1000)
@given(st.one_of(st.text(), st.text(alphabet=ALPHABET, max_size=30)))
def test_parsing_any_text_returns_a_duration_or_a_duration_error(text: str) -> None:
    refusal: DurationError | None = None
    try:
        value = parse_duration(text)
    except DurationError as err:  # a ValueError; anything else escapes and fails the test
        refusal = err
    if refusal is None:
        assert timedelta(0) <= value <= MAX_DURATION
    else:
        assert repr(text) in str(refusal)  # names what it refused


def _reference(text: str) -> timedelta | str:
    """What ``parse_duration`` answered before numbers of 20 digits and more were read as too
    large without converting them (the conversion is quadratic in the digits: a probe's 250,000
    digits took 1.3 s): every number converted."""
    from decimal import ROUND_HALF_EVEN, Decimal

    from interpreter import durations

    def convert(text: str, number: str, unit: str) -> int:
        value = Decimal(number.replace(",", "."))
        micros = (value * durations._MICROS_PER_UNIT[unit]).to_integral_value(rounding=ROUND_HALF_EVEN)
        return int(micros)

    original = durations._to_micros
    durations._to_micros = convert
    try:
        return durations.parse_duration.__wrapped__(text)
    except DurationError as err:
        return f"{type(err).__name__}: {err}"
    finally:
        durations._to_micros = original


def _answer(text: str) -> timedelta | str:
    try:
        return parse_duration(text)
    except DurationError as err:
        return f"{type(err).__name__}: {err}"


@checks(400)
@given(
    st.integers(0, 30),
    st.sampled_from(["0", "\u0660", "\uff10"]),  # zeros in other scripts count as zeros (a review)
    st.integers(0, 10**25),
    st.sampled_from(["", ".5", ".000001", ",25", ".99999999999999999999999"]),
    st.sampled_from(["{n}{u}", "1h{n}{u}", "{n}{u}5ms", "P{n}D", "PT{n}S", "P1DT{n}M", "{n}{u}{n}{u}"]),
    st.sampled_from(list(UNITS)),
)
def test_long_numbers_answer_as_when_every_number_was_converted(
    zeros: int, zero: str, number: int, fraction: str, shape: str, unit: str
) -> None:
    text = shape.format(n=zero * zeros + str(number) + fraction, u=unit)
    assert _answer(text) == _reference(text), text
