"""Connecting to the store's PostgreSQL: URLs, engines, the schema check and migrations.

::

    db = await open_database()             # $DATABASE_URL, else the embedded server under .state/
    store = DefinitionStore(db.session_factory, tenant="acme")
    ...
    await db.close()

``open_database`` checks once that the server answers, that the database exists and that its schema
is at the revision this code needs, and turns each failure into a :class:`StoreError` that names the
URL (never its password). With an explicit URL the schema is only checked (``wfa db upgrade``, i.e.
:func:`upgrade_database`, applies migrations); the embedded server is this machine's own, so its
schema is upgraded on open.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from activities.store.errors import (
    AccessDeniedError,
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    InvalidDatabaseUrlError,
    MigrationsNotAppliedError,
    StoreError,
    UnstorableDataError,
)
from interpreter.sizes import text_problem

__all__ = [
    "DATABASE_URL_ENV",
    "Database",
    "SessionFactory",
    "alembic_config",
    "create_engine",
    "current_revision",
    "db_errors",
    "head_revision",
    "normalize_url",
    "open_database",
    "safe_url",
    "upgrade_database",
]

DATABASE_URL_ENV = "DATABASE_URL"
"""Environment variable naming the PostgreSQL server; without it the embedded server is used."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
CONNECT_TIMEOUT_S = 10.0

SessionFactory = async_sessionmaker[AsyncSession]


def normalize_url(url: str | URL) -> URL:
    """The URL with the asyncpg driver (``postgres://`` and ``postgresql://`` are accepted too).

    Raises:
        InvalidDatabaseUrlError: Not a PostgreSQL URL, or another driver was named.
    """
    if isinstance(url, str) and (problem := text_problem(url)) is not None:
        # (bytes of DATABASE_URL that are not UTF-8: an internal error before)
        raise InvalidDatabaseUrlError(f"the database URL has {problem}: {_strip_password(url)!a}")
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (sa_exc.ArgumentError, ValueError):  # ValueError: a port that is not a number, several hosts
        raise InvalidDatabaseUrlError(
            f"not a database URL: {_strip_password(str(url))!r} (expected postgresql://USER:PASSWORD@HOST:PORT/DB)"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in ("postgresql", "postgres"):
        raise InvalidDatabaseUrlError(f"the store needs PostgreSQL, not {backend!r} ({safe_url(parsed)})")
    if driver and driver != "asyncpg":
        raise InvalidDatabaseUrlError(
            f"the store uses the asyncpg driver, not {driver!r} ({safe_url(parsed)})"
        )
    return parsed.set(drivername="postgresql+asyncpg")


def safe_url(url: str | URL) -> str:
    """The URL as text with its password hidden (``***``), for messages and logs."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa_exc.ArgumentError:
        return _strip_password(str(url))
    return unquote(parsed.render_as_string(hide_password=True))


def _strip_password(text_url: str) -> str:
    scheme, sep, rest = text_url.partition("://")
    if not sep or "@" not in rest:
        return text_url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else text_url


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine on asyncpg for ``url`` (a connect timeout unless given)."""
    connect_args = {"timeout": CONNECT_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    return create_async_engine(normalize_url(url), connect_args=connect_args, **kwargs)


# ------------------------------------------------------------------------------------------ errors


def _describe(err: BaseException) -> str:
    """The useful part of a driver error."""
    original = getattr(err, "orig", None) or err
    cause = getattr(original, "__cause__", None)
    text_ = str(cause if cause is not None and type(original).__name__ == "Error" else original)
    text_ = text_.split("\n", 1)[0].strip()
    if (
        "Connect call failed" in text_
        or "Connection refused" in text_
        or isinstance(err, ConnectionRefusedError)
    ):
        return "connection refused"
    return text_ or type(original).__name__


def _sqlstate(err: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str):
            return state
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


def translate_error(err: BaseException, url: str | URL, tenant: str | None = None) -> StoreError | None:
    """A :class:`StoreError` naming the problem for a driver/connection error, else None.

    ``tenant`` (the tenant the store acts for) is named when PostgreSQL refuses a write.
    """
    shown = safe_url(url)
    state = _sqlstate(err)
    if state == "42501":  # insufficient_privilege: a missing grant, or row-level security
        role = (make_url(url) if not isinstance(url, URL) else url).username or "the connecting role"
        detail = _describe(err)
        if "row-level security" in detail:
            whose = f"tenant {tenant!r}" if tenant is not None else "another tenant"
            message = (
                f"PostgreSQL refused to write a row of {whose} as the database role {role!r} ({detail}):"
                f" this role's credentials are not {whose}'s; use that tenant's DATABASE_URL"
                f" (--tenant selects the tenant, it grants nothing)"
            )
        else:
            message = f"PostgreSQL refused it to the database role {role!r} at {shown}: {detail}"
        return AccessDeniedError(message, shown, tenant)
    if (state is not None and state.startswith("22")) or isinstance(err, sa_exc.DataError):
        # data_exception (a NUL: "invalid byte sequence"), or the driver's own refusal to encode a
        # value (a lone surrogate): bad input, named without the value (which may not print).
        detail = _describe(err).encode("ascii", "backslashreplace").decode()[:300]
        return UnstorableDataError(detail, shown)
    if state == "3D000":  # invalid_catalog_name
        database = make_url(url).database if not isinstance(url, URL) else url.database
        return DatabaseNotFoundError(
            f"database {database!r} does not exist on the PostgreSQL server of {shown}; create it"
            f" (CREATE DATABASE {database}) and run `wfa db upgrade`",
            shown,
        )
    if state == "42P01":  # undefined_table: the schema is missing
        return MigrationsNotAppliedError(shown, None, head_revision())
    if state in ("28P01", "28000"):  # invalid password / authorization
        return DatabaseUnavailableError(
            f"the PostgreSQL server of {shown} refused the login: {_describe(err)}", shown
        )
    if state is not None and state.startswith(("08", "57P")):  # connection exceptions, shutdown
        return DatabaseUnavailableError(f"lost the PostgreSQL server at {shown}: {_describe(err)}", shown)
    if isinstance(err, OSError | TimeoutError | sa_exc.InterfaceError) or (
        isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated
    ):
        return DatabaseUnavailableError(
            f"cannot reach the PostgreSQL server at {shown}: {_describe(err)}", shown
        )
    if isinstance(err, sa_exc.OperationalError) or type(err).__name__ in ("ConnectionDoesNotExistError",):
        return DatabaseUnavailableError(
            f"cannot use the PostgreSQL server at {shown}: {_describe(err)}", shown
        )
    return None


@asynccontextmanager
async def db_errors(url: str | URL, tenant: str | None = None) -> AsyncIterator[None]:
    """Turns connection, schema and privilege errors inside the block into :class:`StoreError`
    subclasses (``tenant``: the tenant acted for, named in a refusal)."""
    try:
        yield
    except StoreError:
        raise
    except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as err:
        translated = translate_error(err, url, tenant)
        if translated is None:
            raise
        raise translated from None


# -------------------------------------------------------------------------------------- migrations


def alembic_config(connection: Connection | None = None) -> Any:
    """The alembic configuration of the store's migrations (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


_HEAD: str | None = None


def head_revision() -> str:
    """The schema revision this code needs (alembic's head)."""
    global _HEAD
    if _HEAD is None:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None, "the store has no migrations"
        _HEAD = head
    return _HEAD


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's schema revision; None when migrations were never applied."""
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass(:table) IS NOT NULL"), {"table": VERSION_TABLE})
        if not exists:
            return None
        revision: str | None = await conn.scalar(text(f"SELECT version_num FROM {VERSION_TABLE} LIMIT 1"))
        return revision


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


async def upgrade_database(url: str | URL, revision: str = "head") -> str:
    """Applies the migrations up to ``revision`` (idempotent: an up-to-date schema is left alone).

    Returns:
        The schema revision after the upgrade.

    Raises:
        DatabaseUnavailableError: The server cannot be reached or the database does not exist.
    """
    engine = create_engine(url, poolclass=_null_pool())
    try:
        async with db_errors(url):
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade, revision)
            return await current_revision(engine) or ""
    finally:
        await engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


# ---------------------------------------------------------------------------------------- database


class Database:
    """An engine and session factory on one PostgreSQL database.

    Args:
        url: The database URL (any PostgreSQL form; the asyncpg driver is used).
        embedded: Whether it is the embedded server (for messages).
        engine_kwargs: Passed to :func:`create_engine` (pool size and so on).
    """

    def __init__(self, url: str | URL, *, embedded: bool = False, **engine_kwargs: Any) -> None:
        self.url = normalize_url(url)
        self.embedded = embedded
        self.engine = create_engine(self.url, **engine_kwargs)
        self.session_factory: SessionFactory = async_sessionmaker(self.engine, expire_on_commit=False)
        self._checked = False

    @property
    def safe_url(self) -> str:
        """The URL with the password hidden."""
        return safe_url(self.url)

    async def check(self) -> None:
        """Checks the server, the database and the schema revision (once; later calls return).

        Raises:
            DatabaseUnavailableError: Unreachable server, refused login.
            DatabaseNotFoundError: The database does not exist.
            MigrationsNotAppliedError: The schema is missing, behind or ahead of this code.
        """
        if self._checked:
            return
        async with db_errors(self.url):
            current = await current_revision(self.engine)
        head = head_revision()
        if current != head:
            raise MigrationsNotAppliedError(self.safe_url, current, head)
        self._checked = True

    async def upgrade(self) -> str:
        """Applies the migrations (see :func:`upgrade_database`) and marks the schema checked."""
        revision = await upgrade_database(self.url)
        self._checked = False
        await self.check()
        return revision

    async def close(self) -> None:
        """Closes the connection pool."""
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_database(
    url: str | URL | None = None,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    check: bool = True,
    **engine_kwargs: Any,
) -> Database:
    """Opens the store's database.

    Args:
        url: The database URL; default ``$DATABASE_URL``; without either, the embedded PostgreSQL
            server is started (see :mod:`activities.store.embedded`) and its schema upgraded.
        state_dir: For the embedded server: the local state folder (default ``$WFA_STATE_DIR`` or
            ``./.state``); its data lives in ``<state_dir>/postgres``.
        check: Check the connection and the schema revision now.
        engine_kwargs: Passed to the engine.

    Raises:
        DatabaseUnavailableError, DatabaseNotFoundError, MigrationsNotAppliedError: See
            :meth:`Database.check`.
        EmbeddedPostgresError: The embedded server could not start.
    """
    url = url or os.environ.get(DATABASE_URL_ENV) or None
    embedded = url is None
    if url is None:
        from activities.store.embedded import start_embedded

        url = await asyncio.to_thread(start_embedded, state_dir)
        await upgrade_database(url)
    database = Database(url, embedded=embedded, **engine_kwargs)
    if check:
        try:
            await database.check()
        except BaseException:
            await database.close()
            raise
    return database
