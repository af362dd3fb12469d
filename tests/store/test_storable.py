"""Hostile data in a dead letter: NUL characters and over-long actors are stored (changed visibly),
never refused by PostgreSQL, which would leave the run's recording activity retrying for ever."""

from __future__ import annotations

from temporalio.testing import ActivityEnvironment

from activities.dead_letters import DeadLetterActivities
from activities.store.database import Database
from activities.store.models import ACTOR_LENGTH
from activities.store.repository import DeadLetterStore
from interpreter.state import DeadLetterAction
from tests.store.test_dead_letter_activities import record, resolution


async def test_nul_characters_and_long_actors_are_stored(database: Database) -> None:
    activities = DeadLetterActivities(database.session_factory)
    env = ActivityEnvironment()
    parked = record(
        "default",
        input={"note": "a\x00b", "k\x00": ["\x00"], "n": 1},
        error="boom\x00",
        path="p\x00",
    )
    row_id = await env.run(activities.park, parked)
    await env.run(
        activities.resolve,
        resolution(row_id, DeadLetterAction.SKIP, actor="a" * 500 + "\x00", output={"x": "\x00y"}),
    )
    row = await DeadLetterStore(database.session_factory).get(row_id)
    assert row.input == {"note": "a\ufffdb", "k\ufffd": ["\ufffd"], "n": 1}
    assert row.error == "boom\ufffd"
    assert row.resolved_by is not None
    assert len(row.resolved_by) == ACTOR_LENGTH
    assert row.resolved_by.startswith("a" * 100)
