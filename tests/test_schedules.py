"""Triggers that are real, on the dev server and the store: schedule triggers become Temporal
Schedules that fire runs of the active version and follow activate and rollback; a version without
the schedule removes it; pause, unpause, trigger and backfill work; a failed schedule sync leaves a
clear error and ``wfa schedules sync`` repairs it; the live triggers are read from the active
versions; every start checks the input against ``input_schema``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from sqlalchemy import insert
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.store.database import Database
from activities.store.errors import DefinitionNotFoundError, NoActiveVersionError
from activities.store.models import DefinitionHeadRow, DefinitionRow
from activities.store.repository import DefinitionStore
from interpreter.validate import DefinitionError, definition_hash, load_definition
from starter.cli import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, main
from starter.client import FlowClient, RunSummary
from starter.errors import InvalidInputError, InvalidRunInputError, ScheduleSyncError
from starter.schedules import ScheduleInfo, schedule_id
from starter.triggers import live_triggers, live_triggers_of_every_tenant
from tests.workflows.support import eventually
from workflows.search_attributes import DEFINITION_NAME, DEFINITION_VERSION

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def unique(prefix: str = "sched") -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def scheduled(
    name: str, marker: str, *, every: str = "1s", overlap: str = "allow_all", **extra: Any
) -> dict[str, Any]:
    """A definition with one schedule trigger whose runs end at once, saying which body ran."""
    return {
        "name": name,
        "triggers": [
            {
                "type": "schedule",
                "id": "tick",
                "every": every,
                "overlap": overlap,
                "input": {"who": "schedule"},
            }
        ],
        "steps": [
            {"id": "done", "type": "succeed", "output": {"marker": marker, "who": "{{ input.who }}"}},
        ],
        **extra,
    }


def plain(name: str, marker: str) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "done", "type": "succeed", "output": {"marker": marker}}]}


@pytest_asyncio.fixture(loop_scope="session")
async def flows(flows: FlowClient, client: Client, tenant: str) -> AsyncIterator[FlowClient]:
    """The shared ``flows`` (tests/conftest.py), with the tenant's schedules deleted after the test."""
    yield flows
    # Nothing left firing for the rest of the session, whatever the test did.
    async for listed in await client.list_schedules():
        if listed.id.endswith(f"@{tenant}"):
            with contextlib.suppress(RPCError):
                await client.get_schedule_handle(listed.id).delete()


async def runs_of(flows: FlowClient, name: str) -> list[RunSummary]:
    """The runs of ``name``, oldest first."""
    return list(reversed(await flows.list_runs(definition=name, limit=1000)))


async def schedule_version(client: Client, sid: str) -> int | None:
    try:
        description = await client.get_schedule_handle(sid).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return description.typed_search_attributes.get(DEFINITION_VERSION)


async def cli(argv: list[str]) -> int:
    """``wfa`` in-process, in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, argv)


async def listed(flows: FlowClient, name: str, accept: Any) -> ScheduleInfo:
    """The one schedule of ``name`` once ``accept(it)`` holds (pause, unpause and updates are
    applied by the server's scheduler shortly after the call returns)."""
    found = await eventually(
        lambda: flows.list_schedules(name),
        lambda items: len(items) == 1 and accept(items[0]),
        timeout=30,
        what=f"the schedule of {name}",
    )
    return found[0]


async def version_becomes(client: Client, sid: str, version: int | None) -> None:
    """Waits until the schedule starts ``version`` (None: until it is gone). A schedule update is
    applied by the server's scheduler shortly after the call returns."""
    await eventually(
        lambda: schedule_version(client, sid),
        lambda found: found == version,
        timeout=30,
        what=f"schedule {sid} at version {version}",
    )


# --------------------------------------------------------------------- following the registry


async def test_a_schedule_fires_the_active_version_and_follows_activate_and_rollback(
    flows: FlowClient, client: Client, store_worker: Worker, tenant: str
) -> None:
    name = unique()
    sid = schedule_id(tenant, name, "tick")
    first = await flows.register(scheduled(name, "one"), author="ann")
    assert first.activated
    await version_becomes(client, sid, 1)
    runs = await eventually(
        lambda: runs_of(flows, name),
        lambda rs: sum(r.state == "completed" for r in rs) >= 2,
        timeout=60,
        what="two completed scheduled runs of v1",
    )
    assert {r.version for r in runs} == {1}
    assert all(r.tenant == tenant for r in runs)
    # Each fire is a run like one started by hand: pinned version, tenant, memo, output.
    handle = client.get_workflow_handle(runs[0].workflow_id)
    description = await handle.describe()
    assert description.typed_search_attributes.get(DEFINITION_NAME) == name
    assert description.typed_search_attributes.get(DEFINITION_VERSION) == 1
    memo = await description.memo()
    assert memo["source"] == "schedule"
    assert "definition" not in memo  # in the search attributes, not repeated
    result = await flows.result(runs[0].workflow_id, timeout=30)
    assert result.output == {"marker": "one", "who": "schedule"}

    await flows.register(scheduled(name, "two"), author="bob")  # v2, not active: nothing changes
    await version_becomes(client, sid, 1)
    await flows.activate(name, 2, actor="ops")
    await version_becomes(client, sid, 2)
    runs = await eventually(
        lambda: runs_of(flows, name),
        lambda rs: any(r.version == 2 for r in rs),
        timeout=60,
        what="a scheduled run of v2",
    )
    switched = next(i for i, r in enumerate(runs) if r.version == 2)
    runs = await eventually(
        lambda: runs_of(flows, name),
        lambda rs: len(rs) >= switched + 3,
        timeout=60,
        what="more fires after the activation",
    )
    # Once the schedule runs v2, every later fire does.
    assert {r.version for r in runs[switched:]} == {2}
    assert (await flows.result(runs[-1].workflow_id, timeout=30)).output["marker"] == "two"

    await flows.rollback(name, actor="ops")
    await version_becomes(client, sid, 1)
    seen = len(runs)
    runs = await eventually(
        lambda: runs_of(flows, name),
        lambda rs: len(rs) > seen + 2 and rs[-1].version == 1,
        timeout=60,
        what="fires of v1 again after the rollback",
    )

    # A version without the schedule trigger removes it; nothing else is left behind.
    await flows.register(plain(name, "three"), author="ann", activate=True)
    await version_becomes(client, sid, None)
    assert await flows.list_schedules() == []
    assert await flows.list_schedules(name) == []  # a definition without schedules: none
    with pytest.raises(DefinitionNotFoundError):  # no such definition: not found (exit 4)
        await flows.list_schedules(unique("nope"))
    await flows.archive(name, 2, actor="ops")  # archiving an old version leaves nothing either
    await version_becomes(client, sid, None)
    # Rolling back to a version with the schedule brings it back (v1, since v2 is archived).
    rolled = await flows.rollback(name, actor="ops")
    assert rolled.version == 1
    await version_becomes(client, sid, 1)
    # Deactivating the name stops its triggers; a rollback brings the last active version back.
    deactivated = await flows.deactivate(name, actor="ops")
    assert deactivated is not None
    assert deactivated.previous == 1
    await version_becomes(client, sid, None)
    assert await live_triggers(flows, definition=name) == []
    with pytest.raises(NoActiveVersionError):
        await flows.start_run(name, {})
    assert await flows.deactivate(name, actor="ops") is None  # idempotent
    assert (await flows.rollback(name, actor="ops")).version == 1
    await version_becomes(client, sid, 1)
    await flows.activate(name, 3, actor="ops")
    await version_becomes(client, sid, None)


async def test_a_schedule_written_at_another_interpreter_generation_is_out_of_sync(
    flows: FlowClient, client: Client
) -> None:
    """``WFA_ENGINE_LEVEL`` changed (a rollout ended) after a schedule was written: ``list`` reads
    the generation from the schedule's action and says the schedule is out of sync; a sync writes
    the client's generation."""
    name = unique()
    level = flows.engine_level
    await flows.register(scheduled(name, "hourly", every="1h"), author="ann")
    first = await listed(flows, name, lambda item: item.in_sync)
    assert first.generation == level
    try:
        flows.engine_level = 0  # the client of a rollout that pins generation 0
        stale = await listed(flows, name, lambda item: True)
        assert not stale.in_sync
        assert stale.generation == level
        assert stale.version == stale.active_version == 1
        await flows.sync_schedules(name)
        pinned = await listed(flows, name, lambda item: item.generation == 0)
        assert pinned.in_sync
    finally:
        flows.engine_level = level
    assert not (await listed(flows, name, lambda item: True)).in_sync
    await flows.sync_schedules(name)
    assert (await listed(flows, name, lambda item: item.generation == level)).in_sync


async def test_pause_unpause_trigger_and_backfill(
    flows: FlowClient, client: Client, store_worker: Worker, tenant: str, database_url: str
) -> None:
    name = unique()
    await flows.register(scheduled(name, "hourly", every="1h"), author="ann")
    first = await listed(flows, name, lambda item: item.in_sync)
    assert first.id == schedule_id(tenant, name, "tick")
    assert not first.paused
    assert first.version == 1
    assert first.next_fires  # the Web UI and `temporal schedule list` show the same schedule

    sid = await flows.trigger_schedule(name)
    assert sid == first.id

    async def listed_ids() -> list[str]:
        return [item.id async for item in await client.list_schedules()]

    # What the Web UI's Schedules page and `temporal schedule list` read (ListSchedules).
    await eventually(listed_ids, lambda ids: sid in ids, timeout=60, what=f"{sid} in ListSchedules")
    await eventually(
        lambda: runs_of(flows, name), lambda rs: len(rs) == 1, timeout=60, what="the triggered run"
    )

    assert await flows.pause_schedule(f"{name}:tick", note="maintenance") == sid
    paused = await listed(flows, name, lambda item: item.paused)
    assert paused.note == "maintenance"
    # A new active version keeps an operator's pause.
    await flows.register(scheduled(name, "hourly-2", every="1h"), author="ann", activate=True)
    await listed(flows, name, lambda item: item.version == 2 and item.in_sync)
    assert (await listed(flows, name, lambda item: True)).paused
    await flows.unpause_schedule(sid)
    await listed(flows, name, lambda item: not item.paused)

    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    # A probe's backfill from the year 1 (Temporal took it from 1970) and one of 900 fires, which
    # runs at once, paused or not, and nothing stops: refused, nothing started.
    with pytest.raises(InvalidInputError, match="the start must be 1970-01-01 or later"):
        await flows.backfill_schedule(sid, datetime(1, 1, 2, tzinfo=UTC), now)
    with pytest.raises(InvalidInputError, match=r"holds 900 fires of \S+, more than 500 at once"):
        await flows.backfill_schedule(sid, now - timedelta(hours=900), now)
    await flows.backfill_schedule(sid, now - timedelta(hours=3), now)  # three hour marks
    runs = await eventually(
        lambda: runs_of(flows, name), lambda rs: len(rs) >= 4, timeout=60, what="three backfilled runs"
    )
    assert [r.version for r in runs] == [1, 2, 2, 2]

    # Another tenant's client cannot operate this schedule.
    conn = ["--address", flows.address, "--namespace", flows.namespace, "--database-url", database_url]
    for ref in (name, sid, f"{name}:tick"):
        assert await cli(["--tenant", unique("other"), "schedules", "pause", ref, *conn]) == EXIT_NOT_FOUND
    assert await cli(["--tenant", tenant, "schedules", "pause", name, *conn]) == EXIT_OK
    await listed(flows, name, lambda item: item.paused)


async def test_a_failed_schedule_sync_is_reported_and_repaired(
    flows: FlowClient, client: Client, tenant: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique()
    sid = schedule_id(tenant, name, "tick")
    await flows.register(scheduled(name, "one", every="1h"), author="ann")
    await flows.register(scheduled(name, "two", every="1h"), author="ann")
    # Temporal unreachable during the activation: the registry change stands, the error says so.
    dead = await Client.connect("127.0.0.1:1", lazy=True, namespace=client.namespace)
    offline = FlowClient(dead, task_queue=flows.task_queue, database=await flows.database(), tenant=tenant)
    with pytest.raises(ScheduleSyncError) as caught:
        await offline.activate(name, 2, actor="ops")
    assert f"{name} v2 is active in the registry, but its schedules could not be updated" in str(caught.value)
    assert f"wfa schedules sync {name}" in str(caught.value)
    assert (await flows.resolve(name)).version == 2
    await version_becomes(client, sid, 1)
    stale = await listed(flows, name, lambda item: True)
    assert not stale.in_sync
    assert stale.version == 1
    assert stale.active_version == 2

    # `wfa schedules sync NAME` repairs it (and is idempotent).
    args = ["--tenant", tenant, "--address", flows.address, "--namespace", flows.namespace]
    args += ["--task-queue", flows.task_queue, "--database-url", database_url]
    assert await cli(["schedules", "sync", name, *args]) == EXIT_OK
    assert f"schedule {sid} starts {name} v2" in capsys.readouterr().out
    await version_becomes(client, sid, 2)
    assert await cli(["schedules", "sync", *args]) == EXIT_OK
    await listed(flows, name, lambda item: item.in_sync)

    # The CLI with Temporal unreachable: exit code 3, one clear line, the registry change stands.
    offline_args = [*args[:2], "--address", "127.0.0.1:1", "--database-url", database_url]
    code = await cli(["definitions", "rollback", name, "--actor", "ops", *offline_args])
    err = capsys.readouterr().err
    assert code == EXIT_UNAVAILABLE, err
    assert f"{name} is rolled back to v1 in the registry, but its schedules could not be updated" in err
    assert "Traceback" not in err
    assert (await flows.resolve(name)).version == 1
    await version_becomes(client, sid, 2)
    # Re-running the registry command once Temporal is back repairs it too.
    assert await cli(["definitions", "activate", name, "1", "--actor", "ops", *args]) == EXIT_OK
    await version_becomes(client, sid, 1)


# ------------------------------------------------------------------------------- live triggers


async def test_live_triggers_are_those_of_the_active_versions(flows: FlowClient, tenant: str) -> None:
    name = unique()
    v1 = {
        "name": name,
        "triggers": [
            {"type": "webhook", "id": "shop", "secret": "SHOP_SECRET"},
            {"type": "event", "id": "paid", "event": "order.paid"},
        ],
        "steps": [{"id": "done", "type": "succeed"}],
    }
    v2 = {**v1, "triggers": [{"type": "event", "id": "paid", "event": "order.paid.v2"}]}
    await flows.register(v1, author="ann")
    await flows.register(plain(unique(), "no triggers"), author="ann")
    live = await live_triggers(flows)
    assert [(t.definition, t.version, t.trigger.type, t.trigger.id) for t in live] == [
        (name, 1, "webhook", "shop"),
        (name, 1, "event", "paid"),
    ]
    assert all(t.tenant == tenant and t.ref == f"{name}@1" for t in live)
    await flows.register(v2, author="ann", activate=True)
    [event] = await live_triggers(flows, "event", name)
    assert event.version == 2
    assert event.trigger.event == "order.paid.v2"
    assert await live_triggers(flows, "webhook") == []
    await flows.rollback(name, actor="ops")
    assert [t.trigger.id for t in await live_triggers(flows, "webhook")] == ["shop"]
    # A service of every tenant (a platform login) reads them all at once.
    everyone = await live_triggers_of_every_tenant((await flows.database()).session_factory, "webhook", name)
    assert [(t.tenant, t.definition, t.version, t.trigger.id) for t in everyone] == [
        (tenant, name, 1, "shop")
    ]
    other = FlowClient(
        flows.client, task_queue=flows.task_queue, database=await flows.database(), tenant=unique("other")
    )
    assert await live_triggers(other) == []
    with pytest.raises(ValueError, match="unknown trigger kind"):
        await live_triggers(flows, "cron")


async def test_schedules_whose_names_join_alike_start_runs_of_their_own_ids(
    flows: FlowClient, client: Client
) -> None:
    """A probe: definition ``a-x``'s trigger ``y`` and definition ``a``'s trigger ``x-y`` gave
    their runs one id (``{definition}-{trigger}-{tenant}`` and the time), so the second schedule's
    fires were all "already running", lost without a word. In two tenants sharing a namespace, one
    tenant's schedule took the other's fires."""
    base = unique("join")
    first = scheduled(f"{base}-x", "one", every="1h")
    first["triggers"][0]["id"] = "y"
    second = scheduled(base, "two", every="1h")
    second["triggers"][0]["id"] = "x-y"
    await flows.register(first, author="ann")
    await flows.register(second, author="ann")
    ids = set()
    for name in (f"{base}-x", base):
        info = await listed(flows, name, lambda item: item.in_sync)
        action = (await client.get_schedule_handle(info.id).describe()).schedule.action
        ids.add(action.id)  # type: ignore[attr-defined]
    assert len(ids) == 2, ids
    assert all(i.startswith(base) for i in ids)


@pytest.mark.parametrize(
    ("trigger", "where", "words"),
    [
        ({"cron": "61 * * * *"}, "cron", "'61' is not a minute from 0 to 59"),
        ({"cron": "1-0 * * * *"}, "cron", "a range goes up"),
        ({"cron": "*/0 * * * *"}, "cron", "step '0' is not a number from 1 to 60"),
        ({"cron": "0 0 ? * 9#9"}, "cron", "'9#9' is not a day of week"),
        # The 6-field (year last) and 7-field (second first) forms: Temporal refused these too.
        ({"cron": "0 0 1 1 * 1999"}, "cron", "'1999' is not a year from 2000 to 2100"),
        ({"cron": "61 0 1 1 * 2030"}, "cron", "'61' is not a minute from 0 to 59"),
        ({"cron": "60 0 0 1 1 * 2030"}, "cron", "'60' is not a second from 0 to 59"),
        ({"cron": "0 0 0 1 1 * 2030-2020"}, "cron", "a range goes up"),
        ({"every": "1h", "catchup_window": "5s"}, "catchup_window", "shortest catch-up window is 10s"),
    ],
)
async def test_a_schedule_temporal_would_refuse_is_refused_before_anything_is_stored(
    flows: FlowClient, tmp_path: Path, trigger: dict[str, Any], where: str, words: str
) -> None:
    """A probe: ``61 * * * *`` passed ``wfa validate``, was registered and made active, and its
    schedule could never be written (exit 3, "once Temporal is reachable"); a catch-up window under
    10 s was stored as 10 s, and the schedule read as OUT OF SYNC for ever."""
    name = unique("cron")
    document = {
        "name": name,
        "triggers": [{"type": "schedule", "id": "tick", **trigger}],
        "steps": [{"id": "done", "type": "succeed"}],
    }
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(document))
    assert await cli(["validate", str(path)]) == EXIT_BAD_INPUT
    with pytest.raises(DefinitionError, match=words) as info:
        await flows.register(document, author="ann")
    assert [p.path for p in info.value.problems] == [f"$.triggers[0].{where}"]
    with pytest.raises(DefinitionNotFoundError):
        await flows.list_definitions(name)
    for fine in (
        "0 9 * * MON-FRI",
        "*/15 8-17 * * 1-5",
        "0 0 L * *",
        "0 0 ? * MON#2",
        "0 0 1 JAN,JUL *",
        "0 0 1 1 * 2030",
        "30 0 9 * * MON-FRI */2",
    ):
        ok = {**document, "name": unique("cron"), "triggers": [{"type": "schedule", "id": "t", "cron": fine}]}
        path.write_text(json.dumps(ok))
        assert await cli(["validate", str(path)]) == EXIT_OK, fine


async def test_stored_bodies_with_the_legacy_trigger_still_load(
    flows: FlowClient, database: Database, tenant: str
) -> None:
    name = unique()
    body = {"name": name, "trigger": {"type": "manual"}, "steps": [{"id": "done", "type": "succeed"}]}
    digest = definition_hash(load_definition(body))
    async with database.session_factory() as session, session.begin():
        await session.execute(
            insert(DefinitionRow).values(
                tenant=tenant, name=name, version=1, body=body, content_hash=digest, author="old"
            )
        )
        await session.execute(
            insert(DefinitionHeadRow).values(tenant=tenant, name=name, active_version=1, updated_by="old")
        )
    store = DefinitionStore(database.session_factory, tenant)
    resolved = await store.resolve(name)
    assert resolved.definition.trigger.type == "manual"
    assert await live_triggers(flows) == []
    # ... while a new body with it is refused, naming `triggers`.
    with pytest.raises(ValueError, match="triggers"):
        await flows.register({**body, "description": "new"}, author="ann")


# -------------------------------------------------------------------------------- typed input


async def test_every_start_checks_the_input_schema(
    flows: FlowClient, store_worker: Worker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique()
    schema = {
        "type": "object",
        "required": ["order"],
        "properties": {
            "order": {
                "type": "object",
                "required": ["id", "items"],
                "properties": {
                    "id": {"type": "string"},
                    "items": {"type": "array", "items": {"type": "integer"}},
                },
            }
        },
    }
    await flows.register({**plain(name, "typed"), "input_schema": schema}, author="ann")
    with pytest.raises(InvalidRunInputError) as caught:
        await flows.start_run(name, {"order": {"id": "o-1", "items": [1, "two"]}})
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("$.order.items[1]", "'two' is not of type 'integer'")
    ]
    with pytest.raises(InvalidRunInputError) as caught:
        await flows.start_run(name, {})
    assert caught.value.problems[0].path == "$"
    assert "'order' is a required property" in caught.value.problems[0].message
    run = await flows.start_run(name, {"order": {"id": "o-1", "items": [1, 2]}})
    assert (await run.result(timeout=30)).state == "completed"

    file = tmp_path / "typed.json"
    file.write_text(json.dumps({**plain(unique(), "typed"), "input_schema": schema}))
    args = ["--address", flows.address, "--namespace", flows.namespace, "--task-queue", flows.task_queue]
    code = await cli(["start", str(file), "--input", '{"order": {"id": 7, "items": []}}', *args])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "$.order.id: 7 is not of type 'string'" in err
    assert "Traceback" not in err

    # A schedule whose fixed input breaks the schema is refused before anything is stored.
    bad = scheduled(
        unique(),
        "x",
        input_schema={"type": "object", "required": ["who"], "properties": {"who": {"type": "integer"}}},
    )
    with pytest.raises(ValueError, match=r"\$\.triggers\[0\]\.input\.who"):
        await flows.register(bad, author="ann")


# ---------------------------------------------------------------------------------------- CLI


async def test_the_schedules_cli(
    flows: FlowClient,
    client: Client,
    tenant: str,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = unique()
    sid = schedule_id(tenant, name, "tick")
    file = tmp_path / "hourly.json"
    file.write_text(json.dumps(scheduled(name, "cli", every="1h")))
    conn = ["--tenant", tenant, "--address", flows.address, "--namespace", flows.namespace]
    conn += ["--task-queue", flows.task_queue, "--database-url", database_url]

    async def wfa(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await cli([*args, *conn])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = await wfa("definitions", "register", str(file), "--author", "ann")
    assert code == EXIT_OK, err
    assert f"schedule {sid} starts {name} v1" in out
    await version_becomes(client, sid, 1)
    code, out, _ = await wfa("schedules", "list")
    assert code == EXIT_OK
    [row] = [line for line in out.splitlines() if line.startswith(sid)]
    assert "every 1h (UTC)" in row
    assert "active" in row
    code, out, _ = await wfa("schedules", "list", name, "--json")
    [item] = json.loads(out)
    assert item["id"] == sid
    assert item["version"] == 1
    assert item["in_sync"] is True

    code, _, err = await wfa(
        "schedules", "backfill", name, "--start", "yesterday", "--end", "2026-12-01T00:00:00Z"
    )
    assert code == EXIT_BAD_INPUT
    assert "not an ISO 8601 time" in err
    code, _, err = await wfa("schedules", "sync", unique("missing"))
    assert code == EXIT_NOT_FOUND
    code, _, err = await wfa("schedules", "pause", f"{name}:nope")
    assert code == EXIT_NOT_FOUND
    assert "no schedule" in err

    code, out, err = await wfa("definitions", "deactivate", name, "--actor", "ops")
    assert code == EXIT_OK, err
    assert f"schedule {sid} deleted" in out
    await version_becomes(client, sid, None)
    code, _, err = await wfa("start", name)
    assert code == EXIT_REFUSED
    assert "has no active version" in err
    code, _, _ = await wfa("schedules", "trigger", name)
    assert code == EXIT_NOT_FOUND
    code, out, _ = await wfa("schedules", "list")
    assert "no schedule triggers" in out
    code, out, _ = await wfa("definitions", "list")
    [listed_name] = [line for line in out.splitlines() if line.startswith(name)]
    assert listed_name.split()[1] == "deactivated"
    code, out, _ = await wfa("definitions", "activate", name, "1", "--actor", "ops")
    assert code == EXIT_OK
    assert "(was deactivated)" in out
    await version_becomes(client, sid, 1)


async def test_concurrent_activations_leave_the_schedule_of_the_last_one(
    flows: FlowClient, client: Client, tenant: str
) -> None:
    name = unique()
    sid = schedule_id(tenant, name, "tick")
    for marker in ("one", "two", "three"):
        await flows.register(scheduled(name, marker, every="1h"), author="ann")
    await asyncio.gather(*(flows.activate(name, 2 + i % 2, actor=f"op{i}") for i in range(8)))
    active = (await flows.resolve(name)).version
    await version_becomes(client, sid, active)
    [item] = await flows.list_schedules(name)
    assert item.in_sync
