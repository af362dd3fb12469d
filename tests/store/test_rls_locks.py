"""A tenant's database login cannot hold up another tenant (migration 0007).

The attacker holds tenant B's login, as in ``test_rls.py``, and no longer reads A's rows but stops
A's work. A probe found three ways, which these tests play:

- the registry serialised writes to one name with an advisory lock keyed by tenant and name, and
  any login may take any advisory lock: B held A's key, and A's ``register`` waited for good;
- table-wide INSERT and UPDATE let B ``LOCK TABLE`` the registry and the dead letters of every
  tenant in any mode, the worker's reads included;
- B chose row ids itself: the primary key's refusals told it which ids A's rows hold, and taking the
  next ids of the shared counters made A's ``register`` and the parking of A's dead letters fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import text

from activities.store.database import Database
from activities.store.repository import DeadLetterStore, DefinitionStore, park_dead_letter
from tests.store.test_rls import TABLES, Tenants, count, doc, record, refused, tenant_pair


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenants(database_url: str) -> AsyncIterator[Tenants]:
    """Tenants A and B as in ``test_rls.py`` (a definition, a dead letter and a login each)."""
    async with tenant_pair(database_url) as state:
        yield state


LIVENESS_S = 120
"""How long a write of A's may take beside B's locks before the test calls it held up (seconds; it
takes well under one, but the machine may be busy). Before the fix it waited for good."""

LOCK_MODES = (
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)
"""Every lock mode stronger than a read's (ACCESS SHARE, which a SELECT takes)."""


async def test_tenant_b_cannot_lock_a_store_table_beyond_a_read(tenants: Tenants) -> None:
    b = tenants.engine(tenants.role_b)
    accepted = [
        (table, mode, outcome)
        for table in (*TABLES, "store_locks")
        for mode in LOCK_MODES
        if (outcome := await refused(b, f"LOCK TABLE {table} IN {mode} MODE", params={})) is not None
    ]
    assert accepted == []


async def test_tenant_b_cannot_choose_or_change_row_ids(tenants: Tenants) -> None:
    b = tenants.engine(tenants.role_b)
    params = {"b": tenants.b, "id": 1}
    statements = {
        "definitions": (
            "INSERT INTO definitions (id, tenant, name, version, body, content_hash, author)"
            " VALUES (:id, :b, 'probe', 1, CAST('{}' AS jsonb), 'x', 'mallory')"
        ),
        "activations": (
            "INSERT INTO activations (id, tenant, name, version, kind, actor)"
            " VALUES (:id, :b, 'payout', 1, 'activate', 'mallory')"
        ),
        "dead_letters": (
            "INSERT INTO dead_letters (id, tenant, workflow_id, run_id, definition, version, park_id, step_id,"
            " path, action, input, error, error_type, attempts, parked_at, status)"
            " VALUES (:id, :b, 'w', 'r', 'payout', 1, 'p', 's', 's', 'http', CAST('{}' AS jsonb), 'e', 'E', 1,"
            " now(), 'open')"
        ),
        "definitions id": "UPDATE definitions SET id = id + 1000000 WHERE tenant = :b",
        "dead_letters id": "UPDATE dead_letters SET id = id + 1000000 WHERE tenant = :b",
    }
    outcomes = {what: await refused(b, sql, params=params) for what, sql in statements.items()}
    assert outcomes == dict.fromkeys(statements)
    # B's own writes without an id still work: the column grants leave out the id only.
    async with b.begin() as conn:
        new_id = await conn.scalar(
            text(
                "INSERT INTO activations (tenant, name, version, kind, actor)"
                " VALUES (:b, 'payout', 1, 'activate', 'b-itself') RETURNING id"
            ),
            params,
        )
    assert isinstance(new_id, int)


async def test_tenant_b_cannot_see_take_or_lock_tenant_a_lock_rows(tenants: Tenants) -> None:
    admin = Database(tenants.admin_url)
    try:
        await DefinitionStore(admin.session_factory, tenants.a).register(doc("locked-a"), author="owner")
    finally:
        await admin.close()
    platform = tenants.engine(tenants.role_platform)
    b = tenants.engine(tenants.role_b)
    assert await count(platform, "store_locks", tenants.a) >= 1
    assert await count(b, "store_locks", tenants.a) == 0
    async with b.begin() as conn:
        locked = (
            await conn.execute(
                text("SELECT key FROM store_locks WHERE tenant = :a FOR UPDATE"), {"a": tenants.a}
            )
        ).all()
    assert locked == []
    forged = "INSERT INTO store_locks (tenant, key) VALUES (:a, 'definitions/x')"
    assert await refused(b, forged, params={"a": tenants.a}) is None


async def test_every_lock_tenant_b_can_take_leaves_tenant_a_and_the_worker_working(tenants: Tenants) -> None:
    a_db, platform_db = Database(tenants.url(tenants.role_a)), Database(tenants.url(tenants.role_platform))
    a_store = DefinitionStore(a_db.session_factory, tenants.a)
    b = tenants.engine(tenants.role_b)
    try:
        async with b.connect() as held:
            await held.begin()
            # The old registry's keys, every store table at the lock a read takes, and B's own rows
            # of store_locks, held in one open transaction while A works.
            for key in (f"wfa-definitions/{tenants.a}/payout", f"wfa-trigger-sync/{tenants.a}/payout"):
                await held.execute(text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), {"key": key})
            for table in (*TABLES, "store_locks"):
                await held.execute(text(f"LOCK TABLE {table} IN ACCESS SHARE MODE"))
            await held.execute(text("SELECT * FROM store_locks FOR UPDATE"))

            async def a_works() -> Any:
                registered = await a_store.register(doc("payout", 3), author="owner")
                await a_store.activate("payout", registered.info.version, "owner")
                await a_store.rollback("payout", "owner")
                async with a_store.sync_lock("payout"):
                    pass
                row = await park_dead_letter(platform_db.session_factory, record(tenants.a))
                listed = await DeadLetterStore(platform_db.session_factory, tenants.a).list()
                return registered.info.version, row, [d.id for d in listed]

            version, row, listed = await asyncio.wait_for(a_works(), LIVENESS_S)
            await held.rollback()
    finally:
        await a_db.close()
        await platform_db.close()
    assert version == 3
    assert row in listed
