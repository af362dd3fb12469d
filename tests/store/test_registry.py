"""The definition registry on a real PostgreSQL: register (validated, idempotent on identical bodies),
list, show, diff, activate, rollback, archive, resolve, and tenant isolation."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import func, select

from activities.store.database import Database
from activities.store.errors import (
    ActiveVersionError,
    DefinitionNotFoundError,
    InvalidReferenceError,
    InvalidTenantError,
    NothingToRollBackError,
    VersionArchivedError,
    VersionNotFoundError,
)
from activities.store.models import ActivationKind, DefinitionRow
from activities.store.repository import DefinitionStore, content_hash, parse_ref
from interpreter.validate import DefinitionError, load_definition


def unique(prefix: str = "flow") -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def doc(name: str, value: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "a", "type": "set", "vars": {"x": value}}], **extra}


@pytest.fixture
def store(database: Database, tenant: str) -> DefinitionStore:
    return DefinitionStore(database.session_factory, tenant)


async def count_rows(database: Database, tenant: str) -> int:
    async with database.session_factory() as session:
        return int(await session.scalar(select(func.count()).where(DefinitionRow.tenant == tenant)) or 0)


# ------------------------------------------------------------------------------------------ helpers


def test_parse_ref() -> None:
    assert parse_ref("intervention") == ("intervention", None)
    assert parse_ref("lead-nurture@12") == ("lead-nurture", 12)
    for bad in ("", "Intervention", "a@", "a@0", "a@x", "a b", "@3", "a@1@2"):
        with pytest.raises(InvalidReferenceError, match="NAME@VERSION"):
            parse_ref(bad)


def test_content_hash_ignores_version_key_order_and_spelled_out_defaults() -> None:
    a = {"name": "x", "version": 1, "steps": [{"id": "a", "type": "set", "vars": {"v": 1}}]}
    b = {
        "steps": [{"vars": {"v": 1}, "type": "set", "id": "a"}],
        "version": 9,
        "name": "x",
        "description": "",
    }
    assert content_hash(load_definition(a)) == content_hash(load_definition(b))
    assert content_hash(load_definition(a)) != content_hash(load_definition({**a, "description": "changed"}))


def test_tenant_names_are_checked(database: Database) -> None:
    for bad in ("", " ", "a b", "x" * 101, "-lead"):
        with pytest.raises(InvalidTenantError):
            DefinitionStore(database.session_factory, bad)


# ------------------------------------------------------------------------------------------ register


async def test_register_assigns_versions_and_the_first_is_active(store: DefinitionStore) -> None:
    name = unique()
    first = await store.register(doc(name, 1, version=7), "ann")
    assert (first.info.version, first.created, first.activated, first.active_version) == (1, True, True, 1)
    assert first.info.author == "ann"
    assert first.info.active
    assert first.info.tenant == store.tenant
    second = await store.register(doc(name, 2), "bob")
    assert (second.info.version, second.created, second.activated, second.active_version) == (
        2,
        True,
        False,
        1,
    )
    assert not second.info.active

    resolved = await store.resolve(name)
    assert (resolved.version, resolved.definition.version, resolved.definition.name) == (1, 1, name)
    pinned = await store.resolve(f"{name}@2")
    assert (pinned.version, pinned.definition.version) == (2, 2)
    assert pinned.content_hash == second.info.content_hash
    assert pinned.definition.steps[0].vars == {"x": 2}  # type: ignore[union-attr]


async def test_registering_an_identical_body_returns_the_existing_version(
    store: DefinitionStore, database: Database
) -> None:
    name = unique()
    first = await store.register(doc(name, 1), "ann")
    before = await count_rows(database, store.tenant)
    # Same body: other version number, other key order, JSON text instead of a dict.
    text = json.dumps({"steps": [{"vars": {"x": 1}, "type": "set", "id": "a"}], "version": 5, "name": name})
    again = await store.register(text, "bob")
    assert (again.created, again.activated, again.info.version) == (False, False, 1)
    assert again.info.content_hash == first.info.content_hash
    assert again.info.author == "ann"  # the existing row, untouched
    assert await count_rows(database, store.tenant) == before
    assert [e.kind for e in await store.history(name)] == [ActivationKind.REGISTER, ActivationKind.ACTIVATE]


async def test_register_with_activate(store: DefinitionStore) -> None:
    name = unique()
    await store.register(doc(name, 1), "ann")
    second = await store.register(doc(name, 2), "ann", activate=True)
    assert (second.activated, second.active_version, second.info.active) == (True, 2, True)
    assert (await store.resolve(name)).version == 2
    # The identical body with activate: activates the existing version (no new row).
    again = await store.register(doc(name, 1), "ann", activate=True)
    assert (again.created, again.activated, again.info.version, again.active_version) == (False, True, 1, 1)


async def test_an_invalid_definition_is_refused_and_nothing_is_stored(
    store: DefinitionStore, database: Database
) -> None:
    name = unique()
    bad = {
        "name": name,
        "steps": [
            {"id": "send", "type": "task", "action": "smtp"},
            {"id": "route", "type": "condition", "if": "true", "then": {"goto": "nowhere"}},
        ],
    }
    with pytest.raises(DefinitionError) as caught:
        await store.register(bad, "ann")
    paths = {p.path for p in caught.value.problems}
    assert {"$.steps[0].action", "$.steps[1].then.goto"} <= paths
    with pytest.raises(DefinitionError, match=r"\$: not valid JSON"):
        await store.register('{"name": ', "ann")
    with pytest.raises(DefinitionError, match=r"\$\.steps\[0\]\.colour: unknown field"):
        await store.register({"name": name, "steps": [{"id": "a", "type": "set", "colour": "red"}]}, "ann")
    assert await count_rows(database, store.tenant) == 0
    with pytest.raises(DefinitionNotFoundError):
        await store.resolve(name)


async def test_concurrent_registrations_of_one_name_get_distinct_versions(store: DefinitionStore) -> None:
    name = unique()
    results = await asyncio.gather(*(store.register(doc(name, i), f"author{i}") for i in range(6)))
    assert sorted(r.info.version for r in results) == [1, 2, 3, 4, 5, 6]
    assert sum(r.activated for r in results) == 1


# ------------------------------------------------------------------------------ list, show, diff


async def test_list_show_and_diff(store: DefinitionStore) -> None:
    a, b = unique("alpha"), unique("beta")
    await store.register(doc(a, 1, description="first"), "ann")
    await store.register(doc(a, 2, description="second"), "bob")
    await store.register(doc(b, 1), "cy")

    names = await store.list_names()
    assert [(n.name, n.active_version, n.latest_version, n.versions) for n in names] == [
        (a, 1, 2, 2),
        (b, 1, 1, 1),
    ]
    versions = await store.list_versions(a)
    assert [(v.version, v.active, v.author) for v in versions] == [(1, True, "ann"), (2, False, "bob")]

    shown = await store.show(f"{a}@2")
    assert (shown.version, shown.active, shown.body["description"]) == (2, False, "second")
    assert "version" not in shown.body
    assert shown.definition().version == 2
    assert (await store.show(a)).version == 1  # the active one

    diff = await store.diff(a, 1, 2)
    assert diff.startswith(f"--- {a}@1\n+++ {a}@2\n")
    assert '-  "description": "first",' in diff
    assert '+  "description": "second",' in diff
    assert '-        "x": 1' in diff
    assert '+        "x": 2' in diff
    assert await store.diff(a, 2, 2) == ""


async def test_unknown_names_and_versions(store: DefinitionStore) -> None:
    name = unique()
    await store.register(doc(name), "ann")
    with pytest.raises(
        DefinitionNotFoundError, match=f"no definition named 'nope' in tenant '{store.tenant}'"
    ):
        await store.resolve("nope")
    with pytest.raises(
        VersionNotFoundError,
        match=rf"'{name}' in tenant '{store.tenant}' has no version 4 \(versions 1 to 1\)",
    ):
        await store.resolve(f"{name}@4")
    for call in (
        store.show(f"{name}@9"),
        store.diff(name, 1, 9),
        store.activate(name, 9, "ops"),
        store.archive(name, 9, "ops"),
    ):
        with pytest.raises(VersionNotFoundError):
            await call
    for call in (store.list_versions("nope"), store.rollback("nope", "ops"), store.history("nope")):
        with pytest.raises(DefinitionNotFoundError):
            await call


# --------------------------------------------------------------------- activate, rollback, archive


async def test_activate_and_rollback_walk_back_through_the_log(store: DefinitionStore) -> None:
    name = unique()
    for value in (1, 2, 3):
        await store.register(doc(name, value), "ann")
    assert (await store.activate(name, 1, "ops")).changed is False  # already active
    assert (await store.activate(name, 2, "ops")).model_dump(include={"version", "previous", "changed"}) == {
        "version": 2,
        "previous": 1,
        "changed": True,
    }
    await store.activate(name, 3, "ops")
    back = await store.rollback(name, "ops")
    assert (back.version, back.previous) == (2, 3)
    back = await store.rollback(name, "ops")  # keeps going back, no flip-flop to 3
    assert (back.version, back.previous) == (1, 2)
    with pytest.raises(NothingToRollBackError, match="v1 is active"):
        await store.rollback(name, "ops")
    assert (await store.resolve(name)).version == 1
    kinds = [(e.kind.value, e.version, e.actor) for e in await store.history(name)]
    assert kinds[-4:] == [
        ("activate", 2, "ops"),
        ("activate", 3, "ops"),
        ("rollback", 2, "ops"),
        ("rollback", 1, "ops"),
    ]


async def test_archive(store: DefinitionStore) -> None:
    name = unique()
    for value in (1, 2, 3):
        await store.register(doc(name, value), "ann")
    await store.activate(name, 2, "ops")
    await store.activate(name, 3, "ops")
    with pytest.raises(ActiveVersionError, match=f"{name}@3 is the active version"):
        await store.archive(name, 3, "ops")
    archived = await store.archive(name, 2, "ops")
    assert archived.archived_at is not None
    assert not archived.active
    assert (await store.archive(name, 2, "ops")).archived_at == archived.archived_at  # idempotent

    with pytest.raises(VersionArchivedError, match="archived: it cannot be activated"):
        await store.activate(name, 2, "ops")
    with pytest.raises(VersionArchivedError, match="archived: it cannot be started"):
        await store.resolve(f"{name}@2")
    assert (await store.show(f"{name}@2")).archived_at is not None  # still visible
    back = await store.rollback(name, "ops")  # passes over the archived v2
    assert (back.version, back.skipped_archived) == (1, [2])
    with pytest.raises(VersionArchivedError):
        await store.register(doc(name, 2), "ann", activate=True)
    assert [v.archived_at is not None for v in await store.list_versions(name)] == [False, True, False]
    assert (await store.list_names())[0].archived == 1


# -------------------------------------------------------------------------------------- tenancy


async def test_tenants_cannot_see_each_others_definitions(database: Database) -> None:
    a = DefinitionStore(database.session_factory, unique("a"))
    b = DefinitionStore(database.session_factory, unique("b"))
    name = unique()
    await a.register(doc(name, 1), "ann")
    await a.register(doc(name, 2), "ann")

    for call in (
        b.resolve(name),
        b.resolve(f"{name}@1"),
        b.show(name),
        b.list_versions(name),
        b.diff(name, 1, 2),
        b.activate(name, 2, "mallory"),
        b.rollback(name, "mallory"),
        b.archive(name, 2, "mallory"),
    ):
        with pytest.raises(DefinitionNotFoundError) as caught:
            await call
        assert (caught.value.tenant, caught.value.name) == (b.tenant, name)
        assert f"tenant '{b.tenant}'" in str(caught.value)
    assert await b.list_names() == []

    # The same name in tenant B is its own definition, with its own versions.
    own = await b.register(doc(name, 2), "bea")
    assert (own.info.version, own.created) == (1, True)
    assert (await a.resolve(name)).version == 1
    assert [n.versions for n in await a.list_names()] == [2]


@pytest.mark.parametrize("name", ["na\x00me", "na\udc80me"], ids=["nul", "lone-surrogate"])
async def test_a_name_postgresql_cannot_hold_is_bad_input_not_a_driver_error(
    store: DefinitionStore, name: str
) -> None:
    """An attacker's probe: a name holding a NUL or a lone surrogate, given to the Python API's
    registry methods, ended in a raw ``sqlalchemy`` ``DBAPIError`` (PostgreSQL's "invalid byte
    sequence", asyncpg's "can't encode"). Every method now says it is data PostgreSQL cannot hold,
    as a store error a caller can catch (``wfa``: exit 2), and the store serves on."""
    from activities.store.errors import UnstorableDataError

    for call in (
        lambda: store.activate(name, 1, "ops"),
        lambda: store.rollback(name, "ops"),
        lambda: store.list_versions(name),
        lambda: store.history(name),
        lambda: store.get(name),
    ):
        with pytest.raises(UnstorableDataError, match="cannot hold"):
            await call()
    fine = unique()
    await store.register(doc(fine), author="ann")
    assert [v.version for v in await store.list_versions(fine)] == [1]
