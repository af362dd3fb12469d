"""The ``sql`` action: one statement against a connection the worker's configuration names.

The statement text is static (``wfa validate`` refuses a template in it); run data reaches the
database only as bound parameters (``:name`` placeholders), never spliced into the text. Read-only
connections and statement timeouts are enforced by the database itself: the transaction is opened
with ``SET TRANSACTION READ ONLY`` and ``SET LOCAL statement_timeout``, not by parsing the SQL.
PostgreSQL (asyncpg) is the supported database.

Isolation: each (tenant, connection name, URL) has its own pool, never shared with another tenant even
when two tenants name the same URL, and every connection is reset with ``DISCARD ALL`` (after a
rollback, outside any transaction) when it goes back to its pool, so no temp table, ``SET`` (e.g.
``search_path``), advisory lock, ``LISTEN`` or prepared statement of one step reaches the next. A
connection whose reset fails is closed, not returned to the pool.

Classification (error ``type`` on the raised :class:`~temporalio.exceptions.ApplicationError`; SQLSTATE
classes as PostgreSQL reports them):

============================================  =========  ==============================
Situation                                     Retryable  Type
============================================  =========  ==============================
input fails validation                        no         ``InvalidActionInput``
connection not configured for the tenant      no         ``SqlConnectionNotConfigured``
cannot connect, connection lost (08, none)    yes        ``SqlConnectionError``
statement timeout (57014)                     yes        ``SqlStatementTimeout``
serialization failure, deadlock (40)          yes        ``SqlTransientError``
resources, shutdown, system (53, 57, 58)      yes        ``SqlTransientError``
write on a read-only connection (25006)       no         ``SqlReadOnlyViolation``
syntax error, unknown object, privilege (42)  no         ``SqlStatementError``
constraint violation (23)                     no         ``SqlConstraintViolation``
bad value for a type (22)                     no         ``SqlDataError``
a placeholder without a parameter             no         ``SqlParameterError``
any other SQLSTATE                            no         ``SqlError``
============================================  =========  ==============================
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import math
import re
import uuid
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from pydantic import ValidationError
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState
from temporalio.exceptions import ApplicationError

from activities.base import action, invalid_input, resolve_secrets
from activities.connections import configured_connection
from activities.store.database import create_engine, safe_url
from activities.store.errors import StoreError
from interpreter.actions import ActionRequest, SqlInput, parse_action_input
from interpreter.inert import as_text
from interpreter.sizes import ACTION_OUTPUT_BUDGET, VALUE_MAX_DEPTH, json_size

__all__ = ["CONNECT_GRACE_S", "SqlActions"]

CONNECT_GRACE_S = 15.0
"""Time allowed on top of the statement timeout for connecting and committing."""

POOL_SIZE = 2
"""Connections a pool keeps open between steps."""
POOL_MAX_OVERFLOW = 3
"""Connections a pool may open on top of :data:`POOL_SIZE` while steps run concurrently."""
RESET_TIMEOUT_S = 5.0
"""Time allowed for resetting a connection returned to its pool; past it the connection is closed."""

_RETRYABLE_CLASSES = {"08": "SqlConnectionError", "40": "SqlTransientError", "53": "SqlTransientError"}
_RETRYABLE_CLASSES |= {"57": "SqlTransientError", "58": "SqlTransientError"}
_PERMANENT_CLASSES = {"42": "SqlStatementError", "23": "SqlConstraintViolation", "22": "SqlDataError"}


def _jsonable(value: Any) -> Any:
    """A column value as JSON: numbers, strings, booleans, null, lists and objects as they are;
    timestamps as ISO 8601, numerics as numbers (as text past a float's range), UUIDs as text, bytes
    as base64."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)  # NaN and infinities are not JSON numbers
        if value == value.to_integral_value() and abs(value) < 2**53:
            return int(value)
        as_float = float(value)
        # Past a float's range (10::numeric ^ 400 was written as Infinity, no JSON number): the text.
        return as_float if math.isfinite(as_float) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _sqlstate(err: BaseException) -> str | None:
    original = getattr(err, "orig", None)
    for candidate in (original, getattr(original, "__cause__", None), err):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def _message(err: BaseException) -> str:
    original = getattr(err, "orig", None) or err
    cause = getattr(original, "__cause__", None)
    text_ = str(cause if cause is not None else original) or type(original).__name__
    return text_.split("\n", 1)[0].strip()


def _classify(err: Exception, what: str) -> ApplicationError:
    state = _sqlstate(err)
    message = f"{what}: {_message(err)}"
    details = {"sqlstate": state}
    if state is None:
        # No SQLSTATE: the driver lost or never had the connection.
        return ApplicationError(message, details, type="SqlConnectionError")
    if state == "57014":
        return ApplicationError(message, details, type="SqlStatementTimeout")
    if state == "25006":
        return ApplicationError(message, details, type="SqlReadOnlyViolation", non_retryable=True)
    if state[:2] in _RETRYABLE_CLASSES:
        return ApplicationError(message, details, type=_RETRYABLE_CLASSES[state[:2]])
    error_type = _PERMANENT_CLASSES.get(state[:2], "SqlError")
    return ApplicationError(message, details, type=error_type, non_retryable=True)


def _reset_session(
    dbapi_connection: Any, connection_record: ConnectionPoolEntry, reset_state: PoolResetState
) -> None:
    """The pool's ``reset`` event (the engine's own rollback-on-return is off): rolls back, then runs
    ``DISCARD ALL`` outside any transaction, so the next checkout sees a fresh session. An exception
    here makes the pool invalidate (close) the connection instead of returning it."""
    if reset_state.terminate_only:
        return  # the connection is being closed: nothing of it reaches a next step
    if not reset_state.asyncio_safe:
        # Cannot run the reset here: refusing makes the pool close the connection instead.
        raise RuntimeError("sql: a pooled connection cannot be reset outside its event loop")
    dbapi_connection.rollback()

    async def discard(connection: Any) -> None:
        if connection.is_in_transaction():
            await connection.execute("ROLLBACK", timeout=RESET_TIMEOUT_S)
        await connection.execute("DISCARD ALL", timeout=RESET_TIMEOUT_S)

    dbapi_connection.run_async(discard)


async def _prepared(conn: AsyncConnection, compiled: Any) -> Any:
    """The compiled statement prepared by the driver (nothing runs). Its attributes say whether it
    returns rows: a cursor runs a statement without rows at once but cannot say how many rows it
    changed."""
    driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
    return await driver.prepare(str(compiled))


def _arguments(compiled: Any, parameters: dict[str, Any]) -> list[Any]:
    """The parameters of the compiled statement (SQLAlchemy's ``SQLCompiler``) in the order of its
    placeholders (``$1``, ``$2``...).

    Raises:
        sqlalchemy.exc.InvalidRequestError: A placeholder has no parameter.
    """
    values = compiled.construct_params(parameters)
    return [values[name] for name in compiled.positiontup or ()]


_COPY = re.compile(r"copy\b", re.IGNORECASE)


def _leading_word_is_copy(statement: str) -> bool:
    """Whether the statement is a ``COPY`` (after whitespace, comments and parentheses)."""
    i, n = 0, len(statement)
    while i < n:
        if statement[i].isspace() or statement[i] == "(":
            i += 1
        elif statement.startswith("--", i):
            end = statement.find("\n", i)
            i = n if end < 0 else end + 1
        elif statement.startswith("/*", i):  # nested, as PostgreSQL reads them
            depth, i = 1, i + 2
            while i < n and depth:
                if statement.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif statement.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return bool(_COPY.match(statement, i))


async def _read_rows(cursor: Any, columns: list[str], most: int, what: str) -> list[dict[str, Any]]:
    """At most ``most`` rows of the driver's cursor (``max_rows`` and one more, which only says
    there were more), read one at a time; as soon as the rows the output keeps are over the budget
    of one action's output, ``ActionOutputTooLarge`` (the rest are never read). One at a time: the
    worker holds at most one row beyond the budget (a probe: rows read 100 at a time, and the
    SQLAlchemy cursor's 50 ahead, of 8 MB each took 770 MiB before the budget was checked)."""
    rows: list[dict[str, Any]] = []
    size = 0
    while len(rows) < most:
        record = await cursor.fetchrow()
        if record is None:
            break
        row = dict(zip(columns, map(_jsonable, record), strict=True))
        if len(rows) < most - 1:  # not the one past max_rows (a review)
            size += json_size(row) + 1
        if size > ACTION_OUTPUT_BUDGET:
            raise ApplicationError(
                f"{what}: the rows read are over {size} bytes, more than the budget of"
                f" {ACTION_OUTPUT_BUDGET} bytes for one action's output (lower max_rows, or"
                " select fewer or shorter columns)",
                type="ActionOutputTooLarge",
                non_retryable=True,
            )
        rows.append(row)
    return rows


class SqlActions:
    """Holder of the database engines; ``SqlActions().sql`` is the activity to register,
    :meth:`close` disposes the pools.

    One pool per (tenant, connection name, resolved URL): two tenants naming the same URL never share
    a connection. Each pool holds at most ``POOL_SIZE + POOL_MAX_OVERFLOW`` (5) connections, of which
    at most ``POOL_SIZE`` (2) stay open between steps, so a worker opens at most 5 connections per
    configured (tenant, connection) pair it has run a step on (and fewer when its activity slots are
    fewer). Connections are reset with ``DISCARD ALL`` on their way back (:func:`_reset_session`);
    since that also drops prepared statements, the driver's statement caches are off (each statement
    is prepared when it runs)."""

    def __init__(self) -> None:
        self._engines: dict[tuple[str, str, str], AsyncEngine] = {}

    async def close(self) -> None:
        """Closes every pool."""
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await engine.dispose()

    def _engine(self, tenant: str, connection: str, url: str) -> AsyncEngine:
        key = (tenant, connection, url)
        engine = self._engines.get(key)
        if engine is None:
            engine = create_engine(
                url,
                pool_size=POOL_SIZE,
                max_overflow=POOL_MAX_OVERFLOW,
                pool_pre_ping=True,
                pool_reset_on_return=None,  # _reset_session rolls back, then discards the session
                # DISCARD ALL deallocates prepared statements: no cache may refer to one afterwards.
                connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0},
            )
            event.listen(engine.sync_engine.pool, "reset", _reset_session)
            self._engines[key] = engine
        return engine

    @action("sql")
    async def sql(self, request: ActionRequest) -> dict[str, Any]:
        """Runs one statement described by ``request.input`` (an :class:`SqlInput`) in its own
        transaction, committed when it succeeds.

        Returns:
            ``{"rows": [{column: value}], "row_count": n, "truncated": bool, "columns": [...],
            "rows_affected": n | None}``; ``rows`` holds at most ``max_rows`` rows and
            ``truncated`` says whether there were more.

        Raises:
            ApplicationError: Classified as in the module docstring.
        """
        try:
            spec = parse_action_input(SqlInput, request.input)
        except ValidationError as exc:
            raise invalid_input("sql", request.input, exc) from None
        config = configured_connection("sql", request.tenant, spec.connection)
        url: str = resolve_secrets(config.url)
        try:
            engine = self._engine(request.tenant, spec.connection, url)
        except (StoreError, sa_exc.ArgumentError) as err:
            raise ApplicationError(
                f"sql connection {spec.connection!r}: unusable URL: {err}",
                type="SqlConnectionNotConfigured",
                non_retryable=True,
            ) from None
        timeout_s = spec.timeout_s
        if config.statement_timeout_s is not None:
            timeout_s = min(timeout_s, config.statement_timeout_s)
        what = f"sql on {spec.connection!r} ({safe_url(engine.url)})"
        try:
            async with (
                asyncio.timeout(timeout_s + CONNECT_GRACE_S),
                engine.connect() as conn,
                conn.begin(),
            ):
                # Enforced by the database for everything that follows in this transaction.
                if config.read_only:
                    await conn.execute(text("SET TRANSACTION READ ONLY"))
                milliseconds = max(1, math.ceil(timeout_s * 1000))
                await conn.execute(text(f"SET LOCAL statement_timeout = {milliseconds}"))
                # Parameters are data: bound as the text they stand for (a reference in them is
                # never resolved; an escaped one, data's inert form, is its literal text).
                statement, parameters = text(spec.statement), dict(as_text(spec.parameters))
                if _leading_word_is_copy(spec.statement):
                    # COPY ... FROM STDIN waited for data no step sends, past the statement
                    # timeout (the server does not cancel a COPY waiting for its client), holding
                    # a pooled connection until the step's own deadline (a probe).
                    raise ApplicationError(
                        f"{what}: COPY is not supported (it streams data over the connection); use"
                        " INSERT, or SELECT the rows",
                        type="SqlStatementError",
                        non_retryable=True,
                    )
                compiled = statement.compile(dialect=conn.dialect)
                prepared = await _prepared(conn, compiled)
                # Through a cursor: the rows past max_rows + 1 are never read (a probe: max_rows
                # 1 of 3,000,000 rows read them all into the worker's memory first).
                if attributes := prepared.get_attributes():
                    columns = [attribute.name for attribute in attributes]
                    cursor = await prepared.cursor(*_arguments(compiled, parameters))
                    rows = await _read_rows(cursor, columns, spec.max_rows + 1, what)
                    affected = None
                else:  # run as before: the driver's status says how many rows it changed
                    result = await conn.execute(statement, parameters)
                    columns, rows = [], []
                    affected = result.rowcount if result.rowcount >= 0 else None
        except (sa_exc.DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            # The driver's own errors come from reading the cursor, where the statement runs.
            raise _classify(err, what) from None
        except (sa_exc.StatementError, sa_exc.InvalidRequestError) as err:
            # Raised before anything reached the database: a placeholder with no parameter.
            raise ApplicationError(
                f"{what}: {_message(err)}", type="SqlParameterError", non_retryable=True
            ) from None
        except RecursionError:
            # A json or jsonb value nested past the reader's stack (a retryable bug before, the
            # statement run again on every attempt: a probe). Rolled back, nothing written.
            raise ApplicationError(
                f"{what}: a value nests lists and objects more than {VALUE_MAX_DEPTH} levels deep,"
                " more than a run keeps",
                type="ActionOutputTooDeep",
                non_retryable=True,
            ) from None
        except (OSError, TimeoutError) as err:
            raise ApplicationError(
                f"{what}: cannot connect or no answer: {type(err).__name__}: {err}", type="SqlConnectionError"
            ) from None
        truncated = len(rows) > spec.max_rows
        rows = rows[: spec.max_rows]
        return {
            "rows": rows,
            "row_count": len(rows),
            "truncated": truncated,
            "columns": columns,
            "rows_affected": affected,
        }
