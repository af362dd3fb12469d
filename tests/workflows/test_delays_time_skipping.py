"""Long delays on the time-skipping server: business hours (across a DST change) and ``until``.

The server's clock cannot be set to a chosen date: it starts at the real date. So the tests read it
and build definitions relative to it, and must hold for any date it shows: holidays push the next
opening past the zone's next DST transition, whenever that is.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from interpreter.state import RunResult, RunState
from tests.workflows.support import Handle, definition, record, settled, start, unique

ZONE_NAME = "America/New_York"
ZONE = ZoneInfo(ZONE_NAME)
LONG = timedelta(days=400)


def _next_dst_change(after: datetime) -> date:
    """The local date of the zone's first UTC offset change after the instant ``after`` (a date
    compared by its noon offset would miss a change later on the day itself, before noon)."""
    offset = after.astimezone(ZONE).utcoffset()
    moment = after.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while True:
        moment += timedelta(hours=1)
        if moment.astimezone(ZONE).utcoffset() != offset:
            return moment.astimezone(ZONE).date()


def _hours(holidays: list[date]) -> dict[str, Any]:
    return {
        "timezone": ZONE_NAME,
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "09:00",
        "end": "17:00",
        "holidays": [d.isoformat() for d in holidays],
    }


def _transition_after(after: datetime) -> datetime:
    """The instant of the zone's first UTC offset change after ``after`` (to the hour)."""
    change = _next_dst_change(after)
    moment = datetime.combine(change, time(0), ZONE).astimezone(UTC)
    while moment.astimezone(ZONE).utcoffset() == after.astimezone(ZONE).utcoffset():
        moment += timedelta(hours=1)
    return moment


@pytest.mark.parametrize(
    "before_transition",
    # As the clock stands; and moved to the last days before a transition (the clock starts today,
    # anywhere before one): Friday inside business hours, Saturday, Sunday before the 2 a.m. change.
    [None, timedelta(hours=40), timedelta(hours=20), timedelta(minutes=30)],
    ids=["as-the-clock-stands", "friday-before", "saturday-before", "just-before"],
)
async def test_business_hours_resume_at_nine_local_on_a_weekday_across_dst(
    time_skipping_env: WorkflowEnvironment,
    ts_worker: Worker,
    task_queue: str,
    before_transition: timedelta | None,
) -> None:
    client = time_skipping_env.client
    if before_transition is not None:
        clock = await time_skipping_env.get_current_time()
        target = _transition_after(clock + before_transition + timedelta(hours=1)) - before_transition
        await time_skipping_env.sleep(target - clock)

    async def run_parked(name: str, holidays: list[date]) -> tuple[Handle, RunResult]:
        handle = await start(
            client,
            task_queue,
            definition(unique(name), [{"id": "open", "type": "delay", "business_hours": _hours(holidays)}]),
            execution_timeout=LONG,
        )
        await settled(handle, step="open")
        return handle, await handle.result()

    # One run at a time: with several runs parked on different timers, the time-skipping server can
    # jump past one run's pending workflow task to another's timer (and then its execution timeout).
    # The run across the transition goes first and from "now", whatever date the clock shows: a run
    # started after another one's wait could start after the transition already (the clock may be
    # a day or two before one), inside business hours.
    now = await time_skipping_env.get_current_time()
    today = now.astimezone(ZONE).date()
    change = _next_dst_change(now)
    across = [today + timedelta(days=i) for i in range((change - today).days + 1)]
    dst = await run_parked("hours-dst", across)
    later = (await time_skipping_env.get_current_time()).astimezone(ZONE).date()
    plain = await run_parked("hours", [later])

    for (handle, result), holidays in ((dst, across), (plain, [later])):
        assert result.state == RunState.COMPLETED
        step = record(result, "open")
        resumed = datetime.fromisoformat(step.output["resumed_at"])
        local = resumed.astimezone(ZONE)
        assert (local.hour, local.minute, local.second, local.microsecond) == (9, 0, 0, 0), local
        assert local.weekday() < 5
        assert local.date() not in holidays
        assert local.date() > holidays[-1]
        started = (await handle.describe()).start_time
        assert resumed > started
        assert step.output["waited_s"] == (resumed - step.started_at).total_seconds()
        # The durable timer really ran for that long on the server's clock.
        assert step.finished_at >= resumed

    plain_local = datetime.fromisoformat(record(plain[1], "open").output["resumed_at"]).astimezone(ZONE)
    assert plain_local.date() - later <= timedelta(days=4)  # today is a holiday; a weekend may follow

    # Across the transition: 09:00 local under the new UTC offset, not 09:00 under the old one.
    dst_local = datetime.fromisoformat(record(dst[1], "open").output["resumed_at"]).astimezone(ZONE)
    assert dst_local.utcoffset() != now.astimezone(ZONE).utcoffset()
    first_open = change + timedelta(days=1)
    while first_open.weekday() >= 5:
        first_open += timedelta(days=1)
    assert dst_local == datetime.combine(first_open, time(9), ZONE)


async def test_until_resumes_at_the_given_instant_days_later(
    time_skipping_env: WorkflowEnvironment, ts_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    now = await time_skipping_env.get_current_time()
    until = (now + timedelta(days=3, hours=5)).astimezone(ZoneInfo("Asia/Tokyo")).replace(microsecond=0)
    handle = await start(
        client,
        task_queue,
        definition(
            unique("until"),
            [
                {"id": "later", "type": "delay", "until": "{{ input.until }}"},
                {"id": "again", "type": "delay", "duration": "2d"},
            ],
        ),
        {"until": until.isoformat()},
        execution_timeout=LONG,
    )
    await settled(handle, step="later")
    result = await handle.result()

    later, again = record(result, "later"), record(result, "again")
    assert datetime.fromisoformat(later.output["resumed_at"]) == until
    assert later.output["waited_s"] == (until - later.started_at).total_seconds()
    assert later.finished_at >= until
    assert again.duration_s >= timedelta(days=2).total_seconds()
