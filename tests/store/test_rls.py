"""Tenants kept apart by PostgreSQL itself: row-level security bound to the connecting role.

The attacker holds tenant B's database credentials and writes SQL by hand against tenant A's rows
in every table of the store (definitions, definition_heads, activations, dead_letters): reads see
nothing, updates and deletes change nothing, and writing A's tenant value is refused by PostgreSQL.
The same credentials through the product's repository, with ``tenant`` set to A, find nothing and
write nothing. The platform role sees both tenants; tenant B's own work goes on.

The embedded server authenticates Unix-socket logins by ``trust`` (initdb ``--auth-local=trust``),
so most tests log in as the tenant roles without their passwords: what they test is what PostgreSQL
enforces once a role is connected, whatever it authenticated with. The last test starts a server of
its own that requires passwords (SCRAM) and checks that a role logs in with its own password only.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from activities.store.database import Database, create_engine, normalize_url, upgrade_database
from activities.store.embedded import data_dir, start_embedded, stop_embedded
from activities.store.errors import (
    AccessDeniedError,
    DatabaseUnavailableError,
    DeadLetterNotFoundError,
    DefinitionNotFoundError,
    InvalidRoleError,
    RoleConflictError,
)
from activities.store.repository import (
    DeadLetterStore,
    DefinitionStore,
    active_definitions_of_every_tenant,
    park_dead_letter,
    resolve_dead_letter,
)
from activities.store.roles import grant_platform, grant_tenant, list_tenant_roles, revoke_tenant
from interpreter.state import DeadLetterAction, DeadLetterRecord, DeadLetterResolution
from interpreter.validate import DefinitionError
from starter.cli import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, main

PARKED_AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
TABLES = ("definitions", "definition_heads", "activations", "dead_letters")


def doc(name: str, value: Any = 1) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "a", "type": "set", "vars": {"x": value}}]}


def record(tenant: str, **changes: Any) -> DeadLetterRecord:
    values: dict[str, Any] = {
        "tenant": tenant,
        "workflow_id": f"order-{uuid4().hex[:8]}",
        "run_id": str(uuid4()),
        "definition": "payout",
        "version": 1,
        "park_id": "charge",
        "step_id": "charge",
        "path": "charge",
        "action": "http",
        "input": {"url": "http://pay/charge"},
        "error": "HTTP 503",
        "error_type": "HttpServerError",
        "attempts": 5,
        "parked_at": PARKED_AT,
    }
    return DeadLetterRecord(**{**values, **changes})


def resolution(row_id: int, tenant: str, actor: str = "mallory") -> DeadLetterResolution:
    return DeadLetterResolution(
        dead_letter_id=row_id,
        tenant=tenant,
        action=DeadLetterAction.SKIP,
        actor=actor,
        output={"paid": True},
        resolved_at=PARKED_AT + timedelta(hours=1),
    )


def as_role(url: str, role: str) -> str:
    """``url`` with another user (the embedded server trusts socket logins; see the docstring)."""
    return normalize_url(url).set(username=role).render_as_string(hide_password=False)


@dataclass
class Tenants:
    admin_url: str
    a: str
    b: str
    role_a: str
    role_b: str
    role_platform: str
    name_a: str
    name_b: str
    dead_letter_a: int
    dead_letter_b: int
    engines: list[AsyncEngine] = field(default_factory=list)

    def url(self, role: str) -> str:
        return as_role(self.admin_url, role)

    def engine(self, role: str) -> AsyncEngine:
        engine = create_engine(self.url(role), poolclass=NullPool)
        self.engines.append(engine)
        return engine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenants(database_url: str) -> AsyncIterator[Tenants]:
    """Tenants A and B with a definition (two versions, the second activated) and a dead letter
    each, written by the superuser; a login role for each tenant and one for the platform."""
    async with tenant_pair(database_url) as state:
        yield state


@asynccontextmanager
async def tenant_pair(database_url: str) -> AsyncIterator[Tenants]:
    """What :func:`tenants` gives (other modules' fixtures use it), its roles dropped at the end."""
    suffix = uuid4().hex[:8]
    a, b = f"acme-{suffix}", f"bravo-{suffix}"
    role_a, role_b, role_platform = f"acme_{suffix}", f"bravo_{suffix}", f"platform_{suffix}"
    assert (await grant_tenant(database_url, a, role_a, password="a-secret")).created
    assert (await grant_tenant(database_url, b, role_b, password="b-s'ecr\\et")).created
    assert (await grant_platform(database_url, role_platform, password="p-secret")).created
    admin = Database(database_url)
    ids: dict[str, int] = {}
    try:
        for tenant in (a, b):
            store = DefinitionStore(admin.session_factory, tenant)
            await store.register(doc("payout", 1), author="owner")
            await store.register(doc("payout", 2), author="owner", activate=True)
            ids[tenant] = await park_dead_letter(admin.session_factory, record(tenant))
    finally:
        await admin.close()
    state = Tenants(database_url, a, b, role_a, role_b, role_platform, "payout", "payout", ids[a], ids[b])
    try:
        yield state
    finally:
        for engine in state.engines:
            await engine.dispose()
        drop = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with drop.connect() as conn:
                for role in (role_a, role_b, role_platform):
                    await conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        finally:
            await drop.dispose()


async def count(engine: AsyncEngine, table: str, tenant: str | None = None) -> int:
    where = " WHERE tenant = :tenant" if tenant is not None else ""
    async with engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}{where}"), {"tenant": tenant}) or 0)


# ----------------------------------------------------------------------------------- the attacker


@dataclass
class Tally:
    """Cross-tenant SQL operations tried, and the ones that read or changed anything of A's."""

    attempts: int = 0
    succeeded: list[str] = field(default_factory=list)


async def rows_of(engine: AsyncEngine, sql: str, params: dict[str, Any]) -> list[Any]:
    async with engine.begin() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def rowcount(engine: AsyncEngine, sql: str, params: dict[str, Any]) -> int:
    async with engine.begin() as conn:
        return (await conn.execute(text(sql), params)).rowcount


async def refused(engine: AsyncEngine, *statements: str, params: dict[str, Any]) -> str | None:
    """None when PostgreSQL refused the statements (one transaction) with insufficient_privilege
    (42501), else what happened instead."""
    try:
        async with engine.begin() as conn:
            for sql in statements:
                result = await conn.execute(text(sql), params)
            return f"accepted ({result.rowcount} rows)"
    except sa_exc.DBAPIError as err:
        state = getattr(err.orig, "sqlstate", None) or getattr(
            getattr(err.orig, "__cause__", None), "sqlstate", None
        )
        return None if state == "42501" else f"failed otherwise ({state}: {err.orig})"


INSERTS = {
    "definitions": (
        "INSERT INTO definitions (tenant, name, version, body, content_hash, author)"
        " VALUES (:a, :name, 99, CAST('{\"name\": \"payout\", \"steps\": []}' AS jsonb), 'forged', 'mallory')"
    ),
    # Replace A's active version (the attack: A's next run would use B's definition).
    "definition_heads": (
        "INSERT INTO definition_heads (tenant, name, active_version, updated_by) VALUES (:a, :name, 1, 'mallory')"
        " ON CONFLICT (tenant, name) DO UPDATE SET active_version = 1, updated_by = 'mallory'"
    ),
    "activations": (
        "INSERT INTO activations (tenant, name, version, kind, actor) VALUES (:a, :name, 1, 'activate', 'mallory')"
    ),
    "dead_letters": (
        "INSERT INTO dead_letters (tenant, workflow_id, run_id, definition, version, park_id, step_id, path,"
        " action, input, error, error_type, attempts, parked_at, status)"
        " VALUES (:a, 'w', 'r', :name, 1, 'p', 's', 's', 'http', CAST('{}' AS jsonb), 'e', 'E', 1, now(), 'open')"
    ),
}
UPDATED_COLUMN = {
    "definitions": "author",
    "definition_heads": "updated_by",
    "activations": "actor",
    "dead_letters": "resolved_by",
}


async def test_tenant_b_cannot_read_or_change_tenant_a_rows_with_raw_sql(tenants: Tenants) -> None:
    """Every table, as tenant B's role: SELECT, UPDATE and DELETE of A's rows, INSERT of a row with
    A's tenant value, and moving one of B's rows into A. Then the ways out of the policies: another
    role, the platform role, turning row security off, disabling it, rewriting the role map."""
    b = tenants.engine(tenants.role_b)
    superuser = create_engine(tenants.admin_url, poolclass=NullPool)
    tenants.engines.append(superuser)
    before = {table: await count(superuser, table, tenants.a) for table in TABLES}
    assert all(before.values()), before  # A has rows in every table to attack
    params = {"a": tenants.a, "b": tenants.b, "name": tenants.name_a}
    tally = Tally()

    def check(what: str, outcome: str | None) -> None:
        tally.attempts += 1
        if outcome is not None:
            tally.succeeded.append(f"{what}: {outcome}")

    for table in TABLES:
        column = UPDATED_COLUMN[table]
        seen = await rows_of(b, f"SELECT * FROM {table} WHERE tenant = :a", params)
        check(f"SELECT A's {table}", f"read {len(seen)} rows" if seen else None)
        every = await rows_of(b, f"SELECT tenant FROM {table}", params)
        leaked = [row for row in every if row[0] != tenants.b]
        check(f"SELECT all {table}", f"read {len(leaked)} rows of others" if leaked else None)
        assert every, f"B sees its own {table}"
        changed = await rowcount(b, f"UPDATE {table} SET {column} = 'mallory' WHERE tenant = :a", params)
        check(f"UPDATE A's {table}", f"changed {changed} rows" if changed else None)
        check(
            f"DELETE A's {table}", await refused(b, f"DELETE FROM {table} WHERE tenant = :a", params=params)
        )
        check(f"INSERT into {table} as A", await refused(b, INSERTS[table], params=params))
        check(
            f"UPDATE B's {table} into A",
            await refused(b, f"UPDATE {table} SET tenant = :a WHERE tenant = :b", params=params),
        )

    escapes = {
        "SET ROLE to A's role": f'SET ROLE "{tenants.role_a}"',
        "SET ROLE wfa_platform": "SET ROLE wfa_platform",
        "GRANT wfa_platform to itself": f'GRANT wfa_platform TO "{tenants.role_b}"',
        "DISABLE ROW LEVEL SECURITY": "ALTER TABLE definitions DISABLE ROW LEVEL SECURITY",
        "DROP POLICY": "DROP POLICY tenant_isolation ON dead_letters",
        "map itself to A": "UPDATE tenant_roles SET tenant = :a WHERE role = current_user",
        "add a mapping to A": "INSERT INTO tenant_roles (role, tenant) VALUES (current_user, :a)",
    }
    for what, sql in escapes.items():
        check(what, await refused(b, sql, params=params))
    # row_security = off does not bypass the policies: a query they would filter is an error.
    check(
        "SET row_security = off",
        await refused(b, "SET LOCAL row_security = off", "SELECT * FROM definitions", params=params),
    )
    mappings = await rows_of(b, "SELECT role, tenant FROM tenant_roles", params)
    check("SELECT the role map", None if mappings == [(tenants.role_b, tenants.b)] else f"read {mappings}")

    assert tally.succeeded == [], tally.succeeded
    assert tally.attempts == 4 * 6 + 7 + 2 == 33
    print(f"\ncross-tenant SQL operations as tenant B's role: 0 of {tally.attempts} succeeded")
    after = {table: await count(superuser, table, tenants.a) for table in TABLES}
    assert after == before
    async with superuser.connect() as conn:
        touched = await conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM definitions WHERE author = 'mallory')"
                " + (SELECT count(*) FROM definition_heads WHERE updated_by = 'mallory')"
                " + (SELECT count(*) FROM activations WHERE actor = 'mallory')"
                " + (SELECT count(*) FROM dead_letters WHERE resolved_by = 'mallory')"
            )
        )
    assert touched == 0


async def test_the_platform_role_sees_every_tenant(tenants: Tenants) -> None:
    platform = tenants.engine(tenants.role_platform)
    for table in TABLES:
        assert await count(platform, table, tenants.a) > 0
        assert await count(platform, table, tenants.b) > 0
    assert {row.tenant for row in await list_tenant_roles(tenants.url(tenants.role_platform))} >= {
        tenants.a,
        tenants.b,
    }


async def test_the_repository_through_b_credentials_finds_nothing_of_a(tenants: Tenants) -> None:
    """``--tenant A`` with B's credentials: the repository's own scoping says A, PostgreSQL says B."""
    db = Database(tenants.url(tenants.role_b))
    try:
        await db.check()  # the schema check works for a tenant role
        as_a = DefinitionStore(db.session_factory, tenants.a)
        with pytest.raises(DefinitionNotFoundError, match=tenants.a):
            await as_a.resolve(tenants.name_a)
        with pytest.raises(DefinitionNotFoundError):
            await as_a.show(f"{tenants.name_a}@1")
        assert await as_a.list_names() == []
        # A write to A's name: the lock row it takes first is A's, which PostgreSQL refuses B.
        with pytest.raises(AccessDeniedError, match=r"row-level security policy for table \"store_locks\""):
            await as_a.activate(tenants.name_a, 1, actor="mallory")
        with pytest.raises(
            AccessDeniedError, match=rf"row of tenant '{tenants.a}' as the database role '{tenants.role_b}'"
        ):
            await as_a.register(doc("takeover", 666), author="mallory")

        dead_a = DeadLetterStore(db.session_factory, tenants.a)
        assert await dead_a.list(status="all") == []
        with pytest.raises(DeadLetterNotFoundError):
            await dead_a.get(tenants.dead_letter_a)
        with pytest.raises(DeadLetterNotFoundError):
            await resolve_dead_letter(db.session_factory, resolution(tenants.dead_letter_a, tenants.a))
        with pytest.raises(DeadLetterNotFoundError):  # B's own tenant, A's row id
            await resolve_dead_letter(db.session_factory, resolution(tenants.dead_letter_a, tenants.b))
        with pytest.raises(AccessDeniedError, match="row-level security"):
            await park_dead_letter(db.session_factory, record(tenants.a))

        # B's own work goes on with the same credentials.
        as_b = DefinitionStore(db.session_factory, tenants.b)
        assert (await as_b.resolve(tenants.name_b)).version == 2
        registered = await as_b.register(doc("own", 1), author="bob")
        assert registered.created
        assert registered.info.tenant == tenants.b
        assert (await as_b.rollback(tenants.name_b, actor="bob")).version == 1
        own = await park_dead_letter(db.session_factory, record(tenants.b))
        resolved = await resolve_dead_letter(db.session_factory, resolution(own, tenants.b, actor="bob"))
        assert resolved.status == "skipped"
    finally:
        await db.close()

    admin = Database(tenants.admin_url)
    try:
        a_dead = await DeadLetterStore(admin.session_factory, tenants.a).get(tenants.dead_letter_a)
        assert a_dead.status == "open"
        assert a_dead.resolved_by is None
        assert (await DefinitionStore(admin.session_factory, tenants.a).resolve(tenants.name_a)).version == 2
        assert await DefinitionStore(admin.session_factory, tenants.a).list_names() != []
        assert [n.name for n in await DefinitionStore(admin.session_factory, tenants.a).list_names()] == [
            "payout"
        ]
    finally:
        await admin.close()


async def test_a_worker_on_a_platform_role_serves_every_tenant(tenants: Tenants) -> None:
    db = Database(tenants.url(tenants.role_platform))
    try:
        for tenant in (tenants.a, tenants.b):
            assert (
                await DefinitionStore(db.session_factory, tenant).resolve(tenants.name_a)
            ).name == "payout"
            row = await park_dead_letter(db.session_factory, record(tenant))
            done = await resolve_dead_letter(db.session_factory, resolution(row, tenant, actor="worker"))
            assert (done.tenant, done.status) == (tenant, "skipped")
    finally:
        await db.close()


async def test_a_content_hash_a_tenant_writes_on_its_rows_gets_it_no_other_tenants_definition(
    tenants: Tenants,
) -> None:
    """The attacker: tenant A's own login (row-level security lets it write its own rows) puts
    tenant B's content hash on rows of A's, under the name and version of B's definition. The
    worker (one process, the platform role, every tenant) must give A neither B's parsed definition
    nor B's body's pass of the whole-tree checks, and give B its own definition whichever tenant's
    row it read first: A's rows are refused, naming the hash that does not match."""
    suffix = uuid4().hex[:8]
    admin, platform = Database(tenants.admin_url), Database(tenants.url(tenants.role_platform))
    engine_a = tenants.engine(tenants.role_a)
    names = [f"payroll-{order}-{suffix}" for order in ("b-first", "a-first")]
    try:
        for order, name in zip(("b-first", "a-first"), names, strict=True):
            theirs = await DefinitionStore(admin.session_factory, tenants.b).register(
                doc(name, "bravo"), author="bob"
            )
            await DefinitionStore(admin.session_factory, tenants.a).register(
                doc(name, "acme"), author="alice"
            )
            forged = await rowcount(
                engine_a,
                "UPDATE definitions SET content_hash = :h WHERE tenant = :a AND name = :name",
                {"h": theirs.info.content_hash, "a": tenants.a, "name": name},
            )
            # And a body the whole-tree checks refuse (a duplicate step id) with B's hash, as version
            # 2 of another name (a name holds a hash once).
            invalid = {"name": name, "steps": [doc(name)["steps"][0], doc(name, 2)["steps"][0]]}
            inserted = await rowcount(
                engine_a,
                "INSERT INTO definitions (tenant, name, version, body, content_hash, author)"
                " VALUES (:a, :name, 2, CAST(:body AS jsonb), :h, 'mallory')",
                {
                    "a": tenants.a,
                    "name": f"{name}-x",
                    "body": json.dumps(invalid),
                    "h": theirs.info.content_hash,
                },
            )
            assert (forged, inserted) == (1, 1)  # PostgreSQL lets A write its own rows

            a_store = DefinitionStore(platform.session_factory, tenants.a)
            b_store = DefinitionStore(platform.session_factory, tenants.b)
            theirs_first = [(b_store, name), (a_store, f"{name}@1"), (a_store, f"{name}-x@2")]
            tries = theirs_first if order == "b-first" else theirs_first[1:] + theirs_first[:1]
            for store, ref in tries:
                if store is b_store:
                    resolved = await b_store.resolve(ref)
                    assert resolved.definition.steps[0].model_dump()["vars"] == {"x": "bravo"}, order
                    continue
                # Refused for its hash, or (read before B's) for what the checks find in it.
                with pytest.raises(DefinitionError, match=r"content hash|duplicate step id") as refusal:
                    await a_store.resolve(ref)
                if "duplicate" not in str(refusal.value):
                    assert theirs.info.content_hash in str(refusal.value), (order, ref)
            # A service of every tenant (the gateway's listeners) leaves A's row out, not B's.
            every = await active_definitions_of_every_tenant(platform.session_factory, name)
            assert [(tenant, r.definition.steps[0].model_dump()["vars"]) for tenant, r in every] == [
                (tenants.b, {"x": "bravo"})
            ]
        # A body equal to B's for Python (1 == True) but not as JSON: still not B's definition.
        name = f"payroll-equal-{suffix}"
        theirs = await DefinitionStore(admin.session_factory, tenants.b).register(
            doc(name, True), author="bob"
        )
        await DefinitionStore(admin.session_factory, tenants.a).register(doc(name, 1), author="alice")
        await rowcount(
            engine_a,
            "UPDATE definitions SET content_hash = :h WHERE tenant = :a AND name = :name",
            {"h": theirs.info.content_hash, "a": tenants.a, "name": name},
        )
        assert (await b_store.resolve(name)).definition.steps[0].model_dump()["vars"] == {"x": True}
        with pytest.raises(DefinitionError, match="content hash"):
            await a_store.resolve(name)
    finally:
        # The forged rows go: later tests listing every tenant's active versions must not meet them.
        owner = tenants.engine(normalize_url(tenants.admin_url).username or "")
        for table in ("definition_heads", "activations", "definitions"):
            await rowcount(
                owner,
                f"DELETE FROM {table} WHERE tenant = :a AND name LIKE :names",
                {"a": tenants.a, "names": f"payroll-%-{suffix}%"},
            )
        await admin.close()
        await platform.close()


async def test_granting_roles_refuses_what_would_not_isolate(tenants: Tenants) -> None:
    admin = tenants.admin_url
    with pytest.raises(InvalidRoleError):
        await grant_tenant(admin, tenants.a, 'x"; DROP TABLE definitions; --')
    with pytest.raises(InvalidRoleError):
        await grant_tenant(admin, tenants.a, "wfa_platform")
    with pytest.raises(RoleConflictError, match="superuser"):
        await grant_tenant(admin, tenants.a, "postgres")
    with pytest.raises(RoleConflictError, match=f"already belongs to tenant '{tenants.b}'"):
        await grant_tenant(admin, tenants.a, tenants.role_b)
    with pytest.raises(RoleConflictError, match="wfa_platform"):
        await grant_tenant(admin, tenants.a, tenants.role_platform)
    with pytest.raises(RoleConflictError, match=f"belongs to tenant '{tenants.a}'"):
        await grant_platform(admin, tenants.role_a)
    again = await grant_tenant(admin, tenants.a, tenants.role_a)  # idempotent
    assert (again.created, again.tenant) == (False, tenants.a)
    # A tenant role cannot grant roles (nor see the other tenants' mappings).
    with pytest.raises(AccessDeniedError):
        await grant_tenant(tenants.url(tenants.role_b), tenants.b, f"extra_{uuid4().hex[:8]}")
    assert [r.role for r in await list_tenant_roles(tenants.url(tenants.role_b))] == [tenants.role_b]


async def test_a_revoked_role_sees_nothing(database_url: str) -> None:
    tenant, role = f"gone-{uuid4().hex[:8]}", f"gone_{uuid4().hex[:8]}"
    await grant_tenant(database_url, tenant, role)
    admin = Database(database_url)
    try:
        await DefinitionStore(admin.session_factory, tenant).register(doc("kept"), author="owner")
    finally:
        await admin.close()
    engine = create_engine(as_role(database_url, role), poolclass=NullPool)
    try:
        assert await count(engine, "definitions") == 1
        assert await revoke_tenant(database_url, role) == tenant
        with pytest.raises(sa_exc.DBAPIError, match="permission denied"):
            await count(engine, "definitions")
    finally:
        await engine.dispose()
        drop = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        async with drop.connect() as conn:
            await conn.execute(text(f'DROP ROLE "{role}"'))
        await drop.dispose()


# ------------------------------------------------------------------------------------------ the CLI


async def test_cli_tenant_flag_grants_nothing(
    tenants: Tenants, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """``wfa --tenant A`` with B's DATABASE_URL: not found (exit 4), a write refused (exit 5)."""

    async def wfa(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    b_url = tenants.url(tenants.role_b)
    code, _, err = await wfa(
        "definitions", "show", tenants.name_a, "--tenant", tenants.a, "--database-url", b_url
    )
    assert code == EXIT_NOT_FOUND, err
    path = tmp_path / "takeover.json"
    path.write_text('{"name": "payout", "steps": [{"id": "a", "type": "set", "vars": {"x": 9}}]}')
    code, _, err = await wfa(
        "definitions",
        "register",
        str(path),
        "--author",
        "mallory",
        "--tenant",
        tenants.a,
        "--database-url",
        b_url,
    )
    assert code == EXIT_REFUSED, err
    assert f"as the database role '{tenants.role_b}'" in err
    assert "Traceback" not in err

    role = f"cli_{uuid4().hex[:8]}"
    code, out, err = await wfa(
        "db", "grant-tenant", tenants.a, "--role", role, "--database-url", tenants.admin_url
    )
    assert code == EXIT_OK, err
    assert role in out
    assert tenants.a in out
    code, _, err = await wfa(
        "db", "grant-tenant", tenants.a, "--role", "Bad-Name", "--database-url", tenants.admin_url
    )
    assert code == EXIT_BAD_INPUT
    assert "invalid database role name" in err
    code, _, err = await wfa(
        "db", "grant-tenant", tenants.b, "--role", role, "--database-url", tenants.admin_url
    )
    assert code == EXIT_REFUSED
    assert "already belongs to tenant" in err
    code, out, err = await wfa("db", "roles", "--json", "--database-url", tenants.admin_url)
    assert code == EXIT_OK, err
    assert {(row["role"], row["tenant"]) for row in json.loads(out)} >= {
        (role, tenants.a),
        (tenants.role_b, tenants.b),
    }
    code, out, err = await wfa(
        "db", "roles", "--json", "--database-url", b_url
    )  # B sees its own mapping only
    assert code == EXIT_OK, err
    assert [(row["role"], row["tenant"]) for row in json.loads(out)] == [(tenants.role_b, tenants.b)]
    code, out, err = await wfa("db", "roles", "--database-url", tenants.admin_url)
    assert f"{tenants.a}\t{role}\tgranted by postgres" in out
    code, _, err = await wfa(
        "db",
        "grant-platform",
        "--role",
        role,
        "--password-env",
        f"UNSET_{uuid4().hex}",
        "--database-url",
        tenants.admin_url,
    )
    assert code == EXIT_BAD_INPUT
    assert "that environment variable is not set" in err
    code, out, err = await wfa("db", "revoke-tenant", "--role", role, "--database-url", tenants.admin_url)
    assert code == EXIT_OK, err
    assert f"no longer belongs to tenant {tenants.a}" in out
    code, out, err = await wfa("db", "grant-platform", "--role", role, "--database-url", tenants.admin_url)
    assert code == EXIT_OK, err
    assert "a platform (every tenant) database login" in out
    drop = create_engine(tenants.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with drop.connect() as conn:
        await conn.execute(text(f'DROP ROLE "{role}"'))
    await drop.dispose()


# ----------------------------------------------------------------------------- the credentials


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="needs an embedded server of its own whose pg_hba.conf this test rewrites to require passwords",
)
async def test_a_tenant_role_logs_in_with_its_own_password_only(tmp_path: Path) -> None:
    """On a server that asks Unix-socket logins for a password (SCRAM), a tenant's role logs in
    only with the password ``grant_tenant`` set (computed into a SCRAM verifier client-side, or
    sent for the server to hash), and then reaches only its tenant's rows."""
    state = tmp_path / "auth"
    url = await asyncio.to_thread(start_embedded, state, "workflow_automation")
    try:
        await upgrade_database(url)
        passwords = {"acme_app": "acme's p@ss:word\\1", "bravo_app": "bräv0 :pass wörd"}  # ASCII, and not
        await grant_tenant(url, "acme", "acme_app", password=passwords["acme_app"])
        await grant_tenant(url, "bravo", "bravo_app", password=passwords["bravo_app"])
        admin = Database(url)
        try:
            for tenant in ("acme", "bravo"):
                await DefinitionStore(admin.session_factory, tenant).register(
                    doc(f"{tenant}-flow"), author="owner"
                )
        finally:
            await admin.close()
        # The superuser keeps its trusted socket login; every other role must give its password.
        (data_dir(state) / "pg_hba.conf").write_text(
            "local all postgres trust\nlocal all all scram-sha-256\n"
        )
        await asyncio.to_thread(stop_embedded, state)
        url = await asyncio.to_thread(start_embedded, state, "workflow_automation")

        def login(role: str, password: str | None) -> Database:
            return Database(normalize_url(url).set(username=role, password=password))

        for role, password in [
            ("acme_app", None),
            ("acme_app", passwords["bravo_app"]),
            ("acme_app", passwords["acme_app"] + "x"),
            ("bravo_app", passwords["acme_app"]),
        ]:
            db = login(role, password)
            try:
                with pytest.raises(DatabaseUnavailableError, match=f"refused the login.*{role}") as caught:
                    await db.check()
                assert all(secret not in str(caught.value) for secret in passwords.values())
            finally:
                await db.close()
        for role, tenant, other in [("acme_app", "acme", "bravo"), ("bravo_app", "bravo", "acme")]:
            db = login(role, passwords[role])
            try:
                await db.check()
                own = await DefinitionStore(db.session_factory, tenant).list_names()
                assert [summary.name for summary in own] == [f"{tenant}-flow"]
                assert await DefinitionStore(db.session_factory, other).list_names() == []
            finally:
                await db.close()
    finally:
        await asyncio.to_thread(stop_embedded, state)


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="needs a server of its own on which the product's roles do not exist yet",
)
async def test_a_non_superuser_owner_runs_the_migrations_and_administers_tenants(tmp_path: Path) -> None:
    """Production: the schema's owner is not a superuser (it has CREATEROLE). The migration creates
    the product's roles and makes the owner a platform member (the tables force row security on
    their owner too); it can grant tenants' roles, and it sees every tenant. The downgrade undoes
    the policies and the upgrade redoes them. A second owner, without the right to the platform
    role that now exists, is told what to ask an administrator for."""
    state = tmp_path / "owner"
    server = await asyncio.to_thread(start_embedded, state, "postgres")
    superuser = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with superuser.connect() as conn:
            for owner in ("owner_one", "owner_two"):
                await conn.execute(text(f"CREATE ROLE {owner} LOGIN CREATEROLE"))
                await conn.execute(text(f"CREATE DATABASE {owner}_db OWNER {owner}"))
        url = normalize_url(server).set(username="owner_one", database="owner_one_db")
        await upgrade_database(url)
        await grant_tenant(url, "acme", "acme_owned")
        owner = Database(url)
        try:
            for tenant in ("acme", "bravo"):
                await DefinitionStore(owner.session_factory, tenant).register(
                    doc(f"{tenant}-flow"), author="owner"
                )
            assert [s.name for s in await DefinitionStore(owner.session_factory, "bravo").list_names()] == [
                "bravo-flow"
            ]
        finally:
            await owner.close()
        tenant_db = Database(url.set(username="acme_owned"))
        try:
            assert await DefinitionStore(tenant_db.session_factory, "bravo").list_names() == []
            assert len(await DefinitionStore(tenant_db.session_factory, "acme").list_names()) == 1
        finally:
            await tenant_db.close()

        def migrate(connection: Any, revision: str, down: bool) -> None:
            from alembic import command

            from activities.store.database import alembic_config

            (command.downgrade if down else command.upgrade)(alembic_config(connection), revision)

        engine = create_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(migrate, "0001", True)
            async with engine.connect() as conn:
                forced = await conn.scalar(
                    text("SELECT count(*) FROM pg_class WHERE relrowsecurity AND relname = 'definitions'")
                )
            assert forced == 0
            async with engine.begin() as conn:
                await conn.run_sync(migrate, "head", False)
        finally:
            await engine.dispose()
        tenant_db = Database(url.set(username="acme_owned"))
        try:  # the role map went with the downgrade: the role sees nothing until granted again
            assert await DefinitionStore(tenant_db.session_factory, "acme").list_names() == []
        finally:
            await tenant_db.close()

        with pytest.raises(AccessDeniedError, match="GRANT wfa_platform TO owner_two"):
            await upgrade_database(normalize_url(server).set(username="owner_two", database="owner_two_db"))
    finally:
        await superuser.dispose()
        await asyncio.to_thread(stop_embedded, state)
