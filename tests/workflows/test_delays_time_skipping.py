"""Long delays on the time-skipping server: business hours (across a DST change) and ``until``.

The server's clock cannot be set to a chosen date, so the tests read it and build definitions
relative to it: holidays push the next opening past the next DST transition of the zone.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from interpreter.state import RunState
from tests.workflows.support import definition, record, settled, start, unique

ZONE_NAME = "America/New_York"
ZONE = ZoneInfo(ZONE_NAME)
LONG = timedelta(days=400)


def _next_dst_change(after: date) -> date:
    """The first local date whose noon UTC offset differs from the day before."""
    day = after
    while True:
        today = datetime.combine(day, time(12), ZONE).utcoffset()
        if datetime.combine(day + timedelta(days=1), time(12), ZONE).utcoffset() != today:
            return day + timedelta(days=1)
        day += timedelta(days=1)


def _hours(holidays: list[date]) -> dict[str, Any]:
    return {
        "timezone": ZONE_NAME,
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "09:00",
        "end": "17:00",
        "holidays": [d.isoformat() for d in holidays],
    }


async def test_business_hours_resume_at_nine_local_on_a_weekday_across_dst(
    time_skipping_env: WorkflowEnvironment, ts_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    now = await time_skipping_env.get_current_time()
    today = now.astimezone(ZONE).date()
    change = _next_dst_change(today)
    across = [today + timedelta(days=i) for i in range((change - today).days + 1)]

    # One run at a time: with several runs parked on different timers, the time-skipping server can
    # jump past one run's pending workflow task to another's timer (and then its execution timeout).
    runs = []
    for name, holidays in (("hours", [today]), ("hours-dst", across)):
        handle = await start(
            client,
            task_queue,
            definition(unique(name), [{"id": "open", "type": "delay", "business_hours": _hours(holidays)}]),
            execution_timeout=LONG,
        )
        await settled(handle, step="open")
        runs.append((handle, await handle.result(), holidays))
    (_plain, plain_result, _), (_dst, dst_result, _) = runs

    for handle, result, holidays in runs:
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

    plain_local = datetime.fromisoformat(record(plain_result, "open").output["resumed_at"]).astimezone(ZONE)
    assert plain_local.date() - today <= timedelta(days=4)  # today is a holiday; a weekend may follow

    # Across the transition: 09:00 local under the new UTC offset, not 09:00 under the old one.
    dst_local = datetime.fromisoformat(record(dst_result, "open").output["resumed_at"]).astimezone(ZONE)
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
