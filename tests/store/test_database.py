"""Connecting to the store: clear errors for a missing database, an unreachable server and a schema
that is missing or behind; migrations that agree with the models; the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from activities.store import embedded
from activities.store.database import (
    Database,
    current_revision,
    head_revision,
    normalize_url,
    open_database,
    safe_url,
    upgrade_database,
)
from activities.store.embedded import data_dir
from activities.store.errors import (
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    MigrationsNotAppliedError,
    StoreError,
)
from activities.store.models import Base
from activities.store.repository import DefinitionStore
from tests.conftest import fresh_database


def test_urls_use_asyncpg_and_hide_passwords() -> None:
    for given in (
        "postgresql://u:pw@db:5432/app",
        "postgres://u:pw@db:5432/app",
        "postgresql+asyncpg://u:pw@db/app",
    ):
        assert normalize_url(given).drivername == "postgresql+asyncpg"
    assert safe_url("postgresql://u:s3cret@db:5432/app") == "postgresql://u:***@db:5432/app"
    assert "s3cret" not in safe_url("postgresql://u:s3cret@db:5432/app?host=/tmp/x")
    with pytest.raises(StoreError, match="needs PostgreSQL"):
        normalize_url("mysql://u:pw@db/app")
    with pytest.raises(StoreError, match="asyncpg driver, not 'psycopg2'"):
        normalize_url("postgresql+psycopg2://u:pw@db/app")


async def test_unreachable_server_names_the_url_without_password() -> None:
    with pytest.raises(DatabaseUnavailableError) as caught:
        await open_database("postgresql://ops:hunter2@127.0.0.1:1/app")
    message = str(caught.value)
    assert "cannot reach the PostgreSQL server at postgresql+asyncpg://ops:***@127.0.0.1:1/app" in message
    assert "connection refused" in message
    assert "hunter2" not in message


async def test_missing_database(postgres_server_url: str) -> None:
    url = (
        normalize_url(postgres_server_url)
        .set(database="wfa_no_such_db")
        .render_as_string(hide_password=False)
    )
    with pytest.raises(DatabaseNotFoundError, match="database 'wfa_no_such_db' does not exist") as caught:
        await open_database(url)
    assert "CREATE DATABASE wfa_no_such_db" in str(caught.value)
    with pytest.raises(DatabaseNotFoundError):
        await upgrade_database(url)


async def test_migrations_not_applied_then_upgraded(postgres_server_url: str) -> None:
    async with fresh_database(postgres_server_url, "wfa_nomigr", migrate=False) as url:
        with pytest.raises(MigrationsNotAppliedError, match="has no schema") as caught:
            await open_database(url)
        assert "wfa db upgrade" in str(caught.value)
        assert caught.value.current is None
        assert caught.value.head == head_revision()

        # A store used without the check says the same when it meets the missing tables.
        db = Database(url)
        try:
            with pytest.raises(MigrationsNotAppliedError, match="wfa db upgrade"):
                await DefinitionStore(db.session_factory, "t").resolve("anything")
        finally:
            await db.close()

        assert await upgrade_database(url) == head_revision()
        assert await upgrade_database(url) == head_revision()  # idempotent
        db = await open_database(url)
        try:
            assert await current_revision(db.engine) == head_revision()
            # A schema behind this code (or unknown to it) is refused too.
            async with db.engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
            with pytest.raises(
                MigrationsNotAppliedError, match=f"is at schema revision '0000', not '{head_revision()}'"
            ):
                await Database(url).check()
        finally:
            await db.close()


async def test_the_models_agree_with_the_migrations(database: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def compare(connection: object) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, Base.metadata))

    async with database.engine.connect() as conn:
        assert await conn.run_sync(compare) == []


def test_embedded_data_dir_follows_the_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WFA_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_dir() == tmp_path / ".state" / "postgres"
    monkeypatch.setenv("WFA_STATE_DIR", str(tmp_path / "elsewhere"))
    assert data_dir() == tmp_path / "elsewhere" / "postgres"
    assert data_dir(tmp_path / "given") == tmp_path / "given" / "postgres"


def test_database_url_from_the_environment_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example:5432/app")
    assert embedded.database_url(tmp_path) == "postgresql://u@db.example:5432/app"
    assert not (tmp_path / "postgres").exists()


async def test_open_database_uses_database_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    db = await open_database()
    try:
        assert not db.embedded
        assert db.url.database == normalize_url(database_url).database
    finally:
        await db.close()


async def test_without_database_url_the_embedded_server_starts_with_its_schema(
    monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("WFA_STATE_DIR", str(state_dir))
    db = await open_database()
    try:
        assert db.embedded
        assert db.url.database == embedded.DATABASE_NAME
        assert (state_dir / "postgres" / "PG_VERSION").is_file()
        assert await current_revision(db.engine) == head_revision()  # upgraded on open
        store = DefinitionStore(db.session_factory, "t")
        await store.register(
            {"name": "hello", "steps": [{"id": "a", "type": "set", "vars": {"x": 1}}]}, "ann"
        )
        assert (await store.resolve("hello")).version == 1
    finally:
        await db.close()
        embedded.stop_embedded(state_dir)
