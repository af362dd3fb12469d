"""Row-change triggers: every committed change starts exactly one run, across SIGKILLs of the listener.

Real servers: the embedded PostgreSQL (the store, and a user's database with an ``orders`` table),
the Temporal dev server, and the listener as a separate process (``python -m gateway.rowchanges``)
that the test SIGKILLs while rows are being inserted and starts again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.store.database import Database
from activities.store.repository import DefinitionStore
from gateway.config import GatewayConfig, RowChangeSource
from gateway.rowchanges import ChangeDeferredError, Deferrals, change_workflow_id, drain_once, install
from gateway.serve import running
from starter.client import FlowClient
from tests.conftest import fresh_database
from tests.workflows.support import eventually

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 4
ROWS_PER_ROUND = 15


def _definition(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [{"id": "wait", "type": "delay", "duration": "1h"}],
        "triggers": [
            {"type": "row_change", "connection": "CRM", "table": "orders", "operations": ["insert"]}
        ],
    }


def _env(temporal_env: WorkflowEnvironment, store_url: str, user_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WFA_", "TEMPORAL_"))}
    env.update(
        {
            "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "TEMPORAL_TASK_QUEUE": f"tq-{uuid4()}",
            "DATABASE_URL": store_url,
            "WFA_SECRET_CRM": user_url,
            "WFA_GATEWAY_ROW_CHANGES": "default:CRM",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _listener(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.rowchanges"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _shop_gateway(temporal_env: WorkflowEnvironment, database_url: str) -> GatewayConfig:
    """A gateway of tenant ``default`` draining its connection ``SHOP``'s outbox, on a queue of its own."""
    return GatewayConfig(
        tenants=("default",),
        address=temporal_env.client.service_client.config.target_host,
        database_url=database_url,
        task_queue=f"tq-{uuid4()}",
        row_changes=(RowChangeSource(tenant="default", connection="SHOP"),),
    )


async def test_row_changes_start_one_run_each_across_listener_sigkills(
    temporal_env: WorkflowEnvironment, postgres_server_url: str, database_url: str
) -> None:
    name = f"orders-{uuid4().hex[:8]}"
    database = Database(database_url)
    try:
        await DefinitionStore(database.session_factory, "default").register(_definition(name), "test")
    finally:
        await database.close()

    async with fresh_database(postgres_server_url, "wfa_user", migrate=False) as user_url:
        plain_url = user_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain_url)
        try:
            await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
        finally:
            await conn.close()
        env = _env(temporal_env, database_url, user_url)

        install = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "starter", "triggers", "install", "--connection", "CRM",
             "--table", "orders", "--definition", name],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert install.returncode == 0, install.stderr
        assert "wfa_outbox" in install.stdout

        conn = await asyncpg.connect(plain_url)

        async def started() -> int:
            return int(await conn.fetchval("SELECT count(*) FROM wfa_outbox WHERE started_at IS NOT NULL"))

        pool = await asyncpg.create_pool(plain_url, min_size=1, max_size=5)
        kills = 0
        listener = _listener(env)
        try:
            for round_ in range(ROUNDS):
                before = await started()

                # Concurrent transactions, one row each (change ids commit out of order).
                await asyncio.gather(
                    *(
                        pool.execute("INSERT INTO orders (item) VALUES ($1)", f"r{round_}-{i}")
                        for i in range(ROWS_PER_ROUND)
                    )
                )
                # Kill the listener mid-stream: once it has started some of this round's changes.
                await eventually(started, lambda n, before=before: n > before, timeout=120, what="a start")
                listener.send_signal(signal.SIGKILL)
                listener.wait(timeout=30)
                kills += 1
                if round_ % 2 == 0:  # rows committed while no listener runs
                    await conn.execute(
                        "INSERT INTO orders (item) SELECT 'offline-' || g FROM generate_series(1, 5) g"
                    )
                listener = _listener(env)

            total = int(await conn.fetchval("SELECT count(*) FROM orders"))
            assert total == ROUNDS * ROWS_PER_ROUND + 5 * ((ROUNDS + 1) // 2)
            await eventually(started, lambda n: n == total, timeout=180, what="every change started")
            change_ids = [row["change_id"] for row in await conn.fetch("SELECT change_id FROM wfa_outbox")]
            errors = await conn.fetchval("SELECT count(*) FROM wfa_outbox WHERE error IS NOT NULL")
        finally:
            listener.send_signal(signal.SIGKILL)
            listener.wait(timeout=30)
            await pool.close()
            await conn.close()

    assert kills == ROUNDS
    assert errors == 0
    assert len(change_ids) == total

    async def runs() -> list[str]:
        return [e.id async for e in temporal_env.client.list_workflows(f"DefinitionName = '{name}'")]

    ids = await eventually(runs, lambda ids: len(ids) >= total, timeout=120, what="every run listed")
    counts = Counter(ids)
    assert [i for i, n in counts.items() if n > 1] == [], "a change started twice"
    assert set(ids) == {change_workflow_id("default", "CRM", change_id) for change_id in change_ids}
    assert len(ids) == total
    print(f"row changes: {total} rows, {kills} SIGKILLs of the listener, {len(ids)} runs, none twice")


async def test_the_gateway_drains_the_outbox_and_refuses_undeclared_rows(
    temporal_env: WorkflowEnvironment,
    postgres_server_url: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"orders-{uuid4().hex[:8]}"
    other = f"other-{uuid4().hex[:8]}"
    database = Database(database_url)
    try:
        store = DefinitionStore(database.session_factory, "default")
        definition = _definition(name)
        definition["triggers"] = [{"type": "row_change", "connection": "SHOP", "table": "orders"}]
        await store.register(definition, "test")
        await store.register({**_definition(other), "triggers": []}, "test")
    finally:
        await database.close()
    async with fresh_database(postgres_server_url, "wfa_shop", migrate=False) as user_url:
        monkeypatch.setenv("WFA_SECRET_SHOP", user_url)
        plain_url = user_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain_url)
        try:
            await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
            await install(plain_url, "orders", "default", name, ["insert"])
            config = _shop_gateway(temporal_env, database_url)
            async with running(config):
                await conn.execute(
                    # Text that looks like a reference to the connection's secret: data, kept as is.
                    "INSERT INTO orders (item) SELECT 'item-${secret:SHOP}-' || g FROM generate_series(1, 3) g"
                )
                # A row written into the outbox by hand, naming a definition without such a trigger.
                await conn.execute(
                    "INSERT INTO wfa_outbox (tenant, definition, table_name, operation, new_row)"
                    " VALUES ('default', $1, 'public.orders', 'insert', '{}')",
                    other,
                )

                async def settled() -> int:
                    return int(
                        await conn.fetchval(
                            "SELECT count(*) FROM wfa_outbox WHERE started_at IS NOT NULL OR error IS NOT NULL"
                        )
                    )

                await eventually(settled, lambda n: n == 4, timeout=120, what="every outbox row settled")
            refused = await conn.fetchrow(
                "SELECT error, started_at FROM wfa_outbox WHERE definition = $1", other
            )
            assert refused["started_at"] is None
            assert "declares no row_change trigger" in refused["error"]
            first = await conn.fetchrow(
                "SELECT change_id, new_row FROM wfa_outbox ORDER BY change_id LIMIT 1"
            )
        finally:
            await conn.close()

    async def runs(definition: str) -> list[str]:
        query = f"DefinitionName = '{definition}'"
        return [e.id async for e in temporal_env.client.list_workflows(query)]

    ids = await eventually(lambda: runs(name), lambda ids: len(ids) >= 3, timeout=60, what="three runs")
    assert len(ids) == 3
    assert await runs(other) == []
    handle = temporal_env.client.get_workflow_handle(
        change_workflow_id("default", "SHOP", first["change_id"])
    )
    started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes
    assert b'"operation":"insert"' in started.input.payloads[0].data.replace(b" ", b"")
    # The change goes as it came; the run makes it inert where it starts (interpreter/inert.py).
    change = json.loads(started.input.payloads[0].data)["input"]
    assert change["new"] == json.loads(first["new_row"])
    assert change["new"]["item"].startswith("item-${secret:SHOP}-"), change


def _shop_definition(name: str, table: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [{"id": "wait", "type": "delay", "duration": "1h"}],
        "triggers": [{"type": "row_change", "connection": "SHOP", "table": table, "operations": ["insert"]}],
    }


@pytest.mark.parametrize("poison", ["deactivated", "huge-number"])
async def test_a_row_that_cannot_start_records_why_and_the_rows_behind_it_start(
    temporal_env: WorkflowEnvironment,
    postgres_server_url: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    poison: str,
) -> None:
    """Found by an attacker's probe: a row whose definition was deactivated (its trigger stays
    installed), or whose data Python's JSON parser refuses (a ``numeric`` of 5,001 digits), rolled
    back every drain of the outbox: that row and every later change of the tenant stayed pending,
    with no error recorded, while the listener reconnected every second."""
    a, b = f"a-{uuid4().hex[:8]}", f"b-{uuid4().hex[:8]}"
    database = Database(database_url)
    try:
        store = DefinitionStore(database.session_factory, "default")
        await store.register(_shop_definition(a, "orders"), "test")
        await store.register(_shop_definition(b, "orders2"), "test")
        if poison == "deactivated":
            await store.deactivate(a, "test")
    finally:
        await database.close()
    async with fresh_database(postgres_server_url, "wfa_shop", migrate=False) as user_url:
        monkeypatch.setenv("WFA_SECRET_SHOP", user_url)
        plain_url = user_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain_url)
        try:
            await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, v numeric)")
            await conn.execute("CREATE TABLE orders2 (id serial PRIMARY KEY, item text)")
            await install(plain_url, "orders", "default", a, ["insert"])
            await install(plain_url, "orders2", "default", b, ["insert"])
            config = _shop_gateway(temporal_env, database_url)
            async with running(config):
                if poison == "deactivated":
                    await conn.execute("INSERT INTO orders (v) VALUES (1)")
                else:
                    await conn.execute("INSERT INTO orders (v) VALUES (10::numeric ^ 5000)")
                await conn.execute("INSERT INTO orders2 (item) VALUES ('x')")

                async def settled() -> int:
                    return int(
                        await conn.fetchval(
                            "SELECT count(*) FROM wfa_outbox WHERE started_at IS NOT NULL OR error IS NOT NULL"
                        )
                    )

                await eventually(settled, lambda n: n == 2, timeout=60, what="both outbox rows settled")
            rows = {
                row["definition"]: row
                for row in await conn.fetch("SELECT change_id, definition, started_at, error FROM wfa_outbox")
            }
        finally:
            await conn.close()

    assert rows[a]["started_at"] is None
    expected = "NoActiveVersionError" if poison == "deactivated" else "4300"
    assert expected in rows[a]["error"], rows[a]["error"]
    assert rows[b]["error"] is None
    assert rows[b]["started_at"] is not None
    handle = temporal_env.client.get_workflow_handle(
        change_workflow_id("default", "SHOP", rows[b]["change_id"])
    )
    assert (await handle.describe()).status is not None


async def test_changes_of_tenants_and_connections_that_read_alike_start_a_run_each(
    temporal_env: WorkflowEnvironment, postgres_server_url: str, database_url: str
) -> None:
    """Found by an attacker's probe: ``row-{tenant}-{connection}-{change id}`` named the first change
    of tenant ``acme-x``'s connection ``y`` and of tenant ``acme``'s connection ``x-y`` alike, in a
    namespace the tenants share: the second was marked started, and its run never happened."""
    suffix = uuid4().hex[:6]
    pairs = [(f"acme-x{suffix}", "y"), ("acme", f"x{suffix}-y")]
    name = f"orders-{uuid4().hex[:8]}"
    database = Database(database_url)
    try:
        for tenant, connection in pairs:
            definition = _definition(name)
            definition["triggers"][0]["connection"] = connection
            await DefinitionStore(database.session_factory, tenant).register(definition, "test")
    finally:
        await database.close()

    workflow_ids: list[str] = []
    for tenant, connection in pairs:
        async with fresh_database(postgres_server_url, "wfa_shop", migrate=False) as user_url:
            plain_url = user_url.replace("postgresql+asyncpg://", "postgresql://", 1)
            conn = await asyncpg.connect(plain_url)
            flows = FlowClient(
                temporal_env.client, task_queue=f"tq-{uuid4()}", database=database_url, tenant=tenant
            )
            try:
                await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
                await install(plain_url, "orders", tenant, name, ["insert"])
                await conn.execute("INSERT INTO orders (item) VALUES ('x')")
                assert await drain_once(conn, flows, connection) == 1
                row = await conn.fetchrow("SELECT change_id, workflow_id, started_at, error FROM wfa_outbox")
            finally:
                await flows.close()
                await conn.close()
        assert row["change_id"] == 1
        assert row["started_at"] is not None
        assert row["error"] is None
        assert row["workflow_id"] == change_workflow_id(tenant, connection, 1)
        workflow_ids.append(row["workflow_id"])

    async def runs() -> list[str]:
        return [e.id async for e in temporal_env.client.list_workflows(f"DefinitionName = '{name}'")]

    ids = await eventually(runs, lambda ids: len(ids) >= 2, timeout=60, what="a run per change")
    assert sorted(ids) == sorted(workflow_ids)
    assert workflow_ids[0] != workflow_ids[1]


async def test_two_connection_names_of_one_database_each_drain_their_own_changes(
    temporal_env: WorkflowEnvironment,
    postgres_server_url: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe: the outbox did not say which connection a change came through, so the listener of
    SHOP2 took SHOP's change, found no trigger for it on SHOP2, and settled it as an error: lost."""
    first, second = f"orders-{uuid4().hex[:8]}", f"refunds-{uuid4().hex[:8]}"
    database = Database(database_url)
    try:
        store = DefinitionStore(database.session_factory, "default")
        await store.register(_shop_definition(first, "orders"), "test")
        refunds = _shop_definition(second, "refunds")
        refunds["triggers"][0]["connection"] = "SHOP2"
        await store.register(refunds, "test")
    finally:
        await database.close()
    async with fresh_database(postgres_server_url, "wfa_shop", migrate=False) as user_url:
        monkeypatch.setenv("WFA_SECRET_SHOP", user_url)
        monkeypatch.setenv("WFA_SECRET_SHOP2", user_url)
        plain_url = user_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain_url)
        flows = FlowClient(temporal_env.client, task_queue=f"tq-{uuid4()}", database=database_url)
        try:
            await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
            await conn.execute("CREATE TABLE refunds (id serial PRIMARY KEY, item text NOT NULL)")
            await install(plain_url, "orders", "default", first, ["insert"], connection="SHOP")
            await install(plain_url, "refunds", "default", second, ["insert"], connection="SHOP2")
            await conn.execute("INSERT INTO orders (item) VALUES ('o')")
            await conn.execute("INSERT INTO refunds (item) VALUES ('r')")
            assert await drain_once(conn, flows, "SHOP2") == 1  # its own change only
            assert await drain_once(conn, flows, "SHOP") == 1
            rows = await conn.fetch(
                "SELECT connection, definition, started_at, error FROM wfa_outbox ORDER BY change_id"
            )
        finally:
            await flows.close()
            await conn.close()
    assert [(r["connection"], r["definition"], r["error"]) for r in rows] == [
        ("SHOP", first, None),
        ("SHOP2", second, None),
    ]
    assert all(r["started_at"] is not None for r in rows)


async def test_a_start_that_may_heal_leaves_its_row_pending_and_the_rows_behind_it_are_tried(
    temporal_env: WorkflowEnvironment, postgres_server_url: str, database_url: str
) -> None:
    """Temporal refusing the start (here: a namespace that does not exist) may heal: the row stays
    pending with no error, the drain reports it, and that row waits while the next drain tries the
    rows behind it; once Temporal takes the starts, every row starts once."""
    name = f"orders-{uuid4().hex[:8]}"
    database = Database(database_url)
    try:
        await DefinitionStore(database.session_factory, "default").register(_definition(name), "test")
    finally:
        await database.close()
    config = temporal_env.client.config()
    config["namespace"] = f"missing-{uuid4().hex[:8]}"
    task_queue = f"tq-{uuid4()}"
    unavailable = FlowClient(Client(**config), task_queue=task_queue, database=database_url)
    flows = FlowClient(temporal_env.client, task_queue=task_queue, database=database_url)
    async with fresh_database(postgres_server_url, "wfa_shop", migrate=False) as user_url:
        plain_url = user_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain_url)
        try:
            await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
            await install(plain_url, "orders", "default", name, ["insert"])
            await conn.execute("INSERT INTO orders (item) SELECT 'r' || g FROM generate_series(1, 3) g")
            deferrals = Deferrals()
            for change_id in (1, 2):
                with pytest.raises(ChangeDeferredError) as caught:
                    await drain_once(conn, unavailable, "CRM", deferrals)
                assert caught.value.change_id == change_id  # not the row that failed before
                assert "does not exist" in str(caught.value)
            assert sorted(deferrals.waiting()) == [1, 2]
            pending = await conn.fetchval(
                "SELECT count(*) FROM wfa_outbox WHERE started_at IS NULL AND error IS NULL"
            )
            assert pending == 3
            assert await drain_once(conn, flows, "CRM", deferrals) == 1  # 1 and 2 wait
            assert await drain_once(conn, flows, "CRM") == 2
            rows = await conn.fetch("SELECT change_id, started_at, error FROM wfa_outbox ORDER BY change_id")
        finally:
            await conn.close()
            await unavailable.close()
            await flows.close()
    assert [(r["change_id"], r["started_at"] is not None, r["error"]) for r in rows] == [
        (1, True, None),
        (2, True, None),
        (3, True, None),
    ]
