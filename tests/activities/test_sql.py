"""The ``sql`` action against the embedded PostgreSQL: bound parameters, read-only, timeout, rows."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.pool import NullPool
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.connections import Connections, configure_connections
from activities.sql import SqlActions
from activities.store.database import create_engine
from interpreter.actions import ActionRequest, ActionResult
from interpreter.validate import DefinitionError, load_definition
from tests.conftest import fresh_database

INJECTION = "x'); DROP TABLE notes; --"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sql_url(postgres_server_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_server_url, "wfa_sql", migrate=False) as url:
        engine = create_engine(url, poolclass=NullPool)
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL UNIQUE)"))
            await conn.execute(
                text("INSERT INTO notes (body) SELECT 'seed ' || n FROM generate_series(1, 30) n")
            )
        await engine.dispose()
        yield url


@pytest.fixture
def configured(sql_url: str) -> Iterator[None]:
    configure_connections(
        Connections.parse(
            {
                "default": {
                    "sql": {
                        "main": {"url": sql_url},
                        "reports": {"url": sql_url, "read_only": True},
                        "quick": {"url": sql_url, "statement_timeout_s": 0.3},
                    }
                },
                "other": {
                    "sql": {
                        "theirs": {"url": sql_url},
                        "their_reports": {"url": sql_url, "read_only": True},
                    }
                },
            }
        )
    )
    yield
    configure_connections(None)


@pytest_asyncio.fixture(loop_scope="session")
async def actions() -> AsyncIterator[SqlActions]:
    holder = SqlActions()
    yield holder
    await holder.close()


async def run(actions: SqlActions, data: dict[str, Any], tenant: str = "default") -> ActionResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=1)
    request = ActionRequest(step_id="q", idempotency_key="run/q", input=data, tenant=tenant)
    return await env.run(actions.sql, request)


async def fails(actions: SqlActions, data: dict[str, Any], tenant: str = "default") -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run(actions, data, tenant)
    return info.value


@pytest.mark.usefixtures("configured")
async def test_an_injection_attempt_in_a_value_is_stored_as_data(actions: SqlActions) -> None:
    inserted = await run(
        actions,
        {
            "connection": "main",
            "statement": "INSERT INTO notes (body) VALUES (:body) RETURNING id, body",
            "parameters": {"body": INJECTION},
        },
    )
    assert inserted.output["rows"][0]["body"] == INJECTION
    found = await run(
        actions,
        {
            "connection": "main",
            "statement": "SELECT body FROM notes WHERE body = :body",
            "parameters": {"body": INJECTION},
        },
    )
    assert found.output["rows"] == [{"body": INJECTION}]
    count = await run(actions, {"connection": "main", "statement": "SELECT count(*) AS n FROM notes"})
    assert count.output["rows"] == [{"n": 31}]  # the table survived, with the value as one more row


@pytest.mark.usefixtures("configured")
async def test_data_that_looks_like_a_reference_is_bound_as_its_text(actions: SqlActions) -> None:
    """A parameter is data: the engine sends data's ``${secret:X}`` escaped (``$${secret:X}``,
    interpreter/inert.py); it is stored as the text it stands for, and nothing is resolved (no
    secret of that name exists: resolving would fail the action). Before, the escape was stored."""
    sent = "note $${secret:NOTE_KEY} and ${secret:NOTE_KEY}"
    inserted = await run(
        actions,
        {
            "connection": "main",
            "statement": "INSERT INTO notes (body) VALUES (:body) RETURNING body",
            "parameters": {"body": sent},
        },
    )
    assert inserted.output["rows"] == [{"body": "note ${secret:NOTE_KEY} and ${secret:NOTE_KEY}"}]
    await run(
        actions,
        {
            "connection": "main",
            "statement": "DELETE FROM notes WHERE body LIKE :p",
            "parameters": {"p": "note %"},
        },
    )


@pytest.mark.usefixtures("configured")
async def test_rows_are_limited_and_the_output_says_so(actions: SqlActions) -> None:
    result = await run(
        actions,
        {
            "connection": "main",
            "statement": "SELECT id, body FROM notes WHERE body LIKE 'seed %' ORDER BY id",
            "max_rows": 5,
        },
    )
    assert result.output["row_count"] == 5
    assert result.output["truncated"] is True
    assert result.output["columns"] == ["id", "body"]
    whole = await run(
        actions, {"connection": "main", "statement": "SELECT 1 AS one, now() AS at, 2.5::numeric AS x"}
    )
    assert whole.output["truncated"] is False
    assert whole.output["rows"][0]["one"] == 1
    assert whole.output["rows"][0]["x"] == 2.5
    assert isinstance(whole.output["rows"][0]["at"], str)
    types = await run(
        actions,
        {
            "connection": "main",
            "statement": "SELECT 'NaN'::numeric AS nan, gen_random_uuid() AS id, '\\x0102'::bytea AS raw,"
            """ ARRAY[1, 2] AS list, '{"a": 1}'::jsonb AS doc""",
        },
    )
    row = types.output["rows"][0]
    assert (row["nan"], row["raw"], row["list"], row["doc"]) == ("NaN", "AQI=", [1, 2], {"a": 1})
    assert len(row["id"]) == 36
    # A numeric past a float's range is its text, not Infinity (no JSON number; found by a probe).
    huge = await run(actions, {"connection": "main", "statement": "SELECT 10::numeric ^ 400 AS big"})
    big = huge.output["rows"][0]["big"]
    assert isinstance(big, str)
    assert Decimal(big) == Decimal(10) ** 400
    json.dumps(huge.output, allow_nan=False)  # valid JSON throughout


@pytest.mark.usefixtures("configured")
async def test_rows_past_the_limit_are_never_read(actions: SqlActions) -> None:
    """A probe: ``max_rows: 1`` of 3,000,000 rows answered one row, but the driver had read them
    all into the worker's memory first; rows over the output budget were read whole as well."""
    tracemalloc.start()
    try:
        one = await run(
            actions,
            {
                "connection": "reports",
                "statement": "SELECT g FROM generate_series(1, 1000000) g",
                "max_rows": 1,
            },
        )
        many_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        error = await fails(
            actions,
            {
                "connection": "reports",
                "statement": "SELECT repeat('x', 10000) AS text FROM generate_series(1, 10000)",
                "max_rows": 10_000,
            },
        )
        wide_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (one.output["rows"], one.output["truncated"]) == ([{"g": 1}], True)
    assert many_peak < 8 << 20, f"{many_peak:,} bytes allocated at the peak for one row"
    assert (error.type, error.non_retryable) == ("ActionOutputTooLarge", True)
    assert "the rows read are over" in error.message
    assert wide_peak < 16 << 20, f"{wide_peak:,} bytes allocated at the peak for 512 KiB of rows"
    # The row past max_rows says there were more; it is not in the output, nor in its budget.
    kept = await run(
        actions,
        {
            "connection": "reports",
            "statement": "SELECT repeat('x', 300000) AS r FROM generate_series(1, 2)",
            "max_rows": 1,
        },
    )
    assert (kept.output["row_count"], kept.output["truncated"]) == (1, True)
    # A statement without rows still runs once and says how many rows it changed.
    changed = await run(
        actions,
        {
            "connection": "main",
            "statement": "UPDATE notes SET body = body WHERE body LIKE :p",
            "parameters": {"p": "seed 1%"},
        },
    )
    assert (changed.output["rows"], changed.output["rows_affected"]) == ([], 11)


@pytest.mark.usefixtures("configured")
async def test_rows_of_large_values_are_read_one_at_a_time(actions: SqlActions) -> None:
    """A probe: rows were read 100 at a time (and the SQLAlchemy cursor fetched 50 ahead of any
    read), each decoded before the output budget was checked: rows of 8 MB took 770 MiB of the
    worker's memory; a value may be up to 1 GB. Now the worker holds one row past the budget, and
    the server computes no more rows than those read (a sequence counts them)."""
    await run(actions, {"connection": "main", "statement": "CREATE SEQUENCE IF NOT EXISTS computed"})
    tracemalloc.start()
    try:
        error = await fails(
            actions,
            {
                "connection": "main",
                "statement": "SELECT nextval('computed') AS n, repeat('x', 8000000) AS t FROM generate_series(1, 1000)",
                "max_rows": 10_000,
            },
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (error.type, error.non_retryable) == ("ActionOutputTooLarge", True)
    assert peak < 64 << 20, f"{peak:,} bytes allocated at the peak for rows of 8 MB"
    computed = await run(actions, {"connection": "main", "statement": "SELECT last_value FROM computed"})
    assert computed.output["rows"][0]["last_value"] <= 2
    # Many small rows still come back whole.
    many = await run(
        actions,
        {
            "connection": "reports",
            "statement": "SELECT g FROM generate_series(1, 10000) g",
            "max_rows": 10_000,
        },
    )
    assert (many.output["row_count"], many.output["truncated"]) == (10_000, False)
    assert many.output["rows"][-1] == {"g": 10_000}


@pytest.mark.usefixtures("configured")
async def test_copy_is_refused_before_it_waits_for_data_no_step_sends(actions: SqlActions) -> None:
    """A probe: ``COPY notes (body) FROM STDIN`` on a connection with a 0.3 s statement timeout
    held its pooled connection for 17 s (47 s with the default timeout) and then failed as a
    retryable connection error: the server does not cancel a COPY that waits for its client."""
    for statement in (
        "COPY notes (body) FROM STDIN",
        "  /* a /* nested */ comment */ -- and a line\n copy notes TO STDOUT",
        "(COPY (SELECT 1) TO STDOUT)",
    ):
        error = await fails(actions, {"connection": "quick", "statement": statement})
        assert (error.type, error.non_retryable) == ("SqlStatementError", True), statement
        assert "COPY is not supported" in error.message
    # A statement that only mentions copy runs.
    named = await run(actions, {"connection": "quick", "statement": "SELECT 'copy' AS copy_of"})
    assert named.output["rows"] == [{"copy_of": "copy"}]


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("depth", [900, 3000])
async def test_a_value_nested_past_the_reader_fails_once_as_too_deep(actions: SqlActions, depth: int) -> None:
    """A probe: jsonb nested 900 deep raised a RecursionError in the worker's conversion (3,000 in
    the driver's JSON decoder), a retryable failure: every attempt ran the statement again."""
    before = await run(actions, {"connection": "main", "statement": "SELECT count(*) AS n FROM notes"})
    error = await fails(
        actions,
        {
            "connection": "main",
            "statement": "INSERT INTO notes (body) VALUES (:body)"
            f" RETURNING (repeat('[', {depth}) || repeat(']', {depth}))::jsonb AS d",
            "parameters": {"body": f"deep {depth}"},
        },
    )
    assert (error.type, error.non_retryable) == ("ActionOutputTooDeep", True)
    after = await run(actions, {"connection": "main", "statement": "SELECT count(*) AS n FROM notes"})
    assert after.output["rows"] == before.output["rows"]  # rolled back: nothing written


@pytest.mark.usefixtures("configured")
async def test_a_read_only_connection_refuses_a_write_in_the_database(actions: SqlActions) -> None:
    error = await fails(
        actions,
        {"connection": "reports", "statement": "DELETE FROM notes WHERE id = :id", "parameters": {"id": 1}},
    )
    assert error.type == "SqlReadOnlyViolation"
    assert error.non_retryable
    assert "read-only" in error.message
    # Reading works there, and the row is still present.
    row = await run(actions, {"connection": "reports", "statement": "SELECT id FROM notes WHERE id = 1"})
    assert row.output["rows"] == [{"id": 1}]


@pytest.mark.usefixtures("configured")
async def test_the_statement_timeout_fires_in_the_database(actions: SqlActions) -> None:
    error = await fails(actions, {"connection": "quick", "statement": "SELECT pg_sleep(30)"})
    assert error.type == "SqlStatementTimeout"
    assert not error.non_retryable
    error = await fails(actions, {"connection": "main", "statement": "SELECT pg_sleep(30)", "timeout_s": 0.2})
    assert error.type == "SqlStatementTimeout"


@pytest.mark.usefixtures("configured")
async def test_errors_are_classified_by_sqlstate(actions: SqlActions) -> None:
    error = await fails(actions, {"connection": "main", "statement": "SELEC 1"})
    assert (error.type, error.non_retryable) == ("SqlStatementError", True)
    error = await fails(
        actions,
        {
            "connection": "main",
            "statement": "INSERT INTO notes (body) VALUES (:b)",
            "parameters": {"b": "seed 1"},
        },
    )
    assert (error.type, error.non_retryable) == ("SqlConstraintViolation", True)
    error = await fails(
        actions, {"connection": "main", "statement": "SELECT :n::int", "parameters": {"n": "x"}}
    )
    assert error.non_retryable
    error = await fails(actions, {"connection": "main", "statement": "SELECT :missing"})
    assert (error.type, error.non_retryable) == ("SqlParameterError", True)


@pytest.mark.usefixtures("configured")
async def test_connections_are_the_tenants_own(actions: SqlActions) -> None:
    error = await fails(actions, {"connection": "theirs", "statement": "SELECT 1"})
    assert (error.type, error.non_retryable) == ("SqlConnectionNotConfigured", True)
    assert (
        await run(actions, {"connection": "theirs", "statement": "SELECT 1 AS x"}, tenant="other")
    ).output["rows"]


@pytest.mark.usefixtures("configured")
async def test_a_temp_table_of_one_tenant_never_captures_another_tenants_rows(actions: SqlActions) -> None:
    """Tenants ``default`` and ``other`` name the same URL. ``other`` shadows ``notes`` with a temp
    table; ``default``'s insert must still reach the real table, and ``other`` must find nothing of
    it. Before, one pool served both tenants and kept the temp table on the reused connection: the
    insert landed in it and ``other`` read it back from ``pg_temp.notes``."""
    await run(
        actions,
        {"connection": "theirs", "statement": "CREATE TEMP TABLE notes (id int, body text)"},
        tenant="other",
    )
    inserted = await run(
        actions,
        {
            "connection": "main",
            "statement": "INSERT INTO notes (body) VALUES (:body) RETURNING id",
            "parameters": {"body": "victim secret"},
        },
    )
    assert isinstance(inserted.output["rows"][0]["id"], int)  # the real table's serial, not NULL
    # No temp table survives the step: the read finds no such relation (before: the victim's row).
    error = await fails(
        actions, {"connection": "theirs", "statement": "SELECT body FROM pg_temp.notes"}, "other"
    )
    assert (error.type, error.details[0]["sqlstate"]) == ("SqlStatementError", "42P01")
    found = await run(
        actions,
        {
            "connection": "reports",
            "statement": "SELECT count(*) AS n FROM public.notes WHERE body = :body",
            "parameters": {"body": "victim secret"},
        },
    )
    assert found.output["rows"] == [{"n": 1}]
    await run(
        actions,
        {
            "connection": "main",
            "statement": "DELETE FROM notes WHERE body = :body",
            "parameters": {"body": "victim secret"},
        },
    )


@pytest.mark.usefixtures("configured")
async def test_session_settings_of_a_read_only_step_do_not_reach_another_tenant(actions: SqlActions) -> None:
    """``SET search_path`` is allowed in a read-only transaction and, without a reset, outlives it on
    the pooled connection; another tenant on the same URL then resolved its names through it."""
    default_path = await run(actions, {"connection": "main", "statement": "SHOW search_path"})
    await run(
        actions,
        {"connection": "their_reports", "statement": "SET search_path = pg_catalog"},
        tenant="other",
    )
    for connection in ("main", "reports"):
        shown = await run(actions, {"connection": connection, "statement": "SHOW search_path"})
        assert shown.output["rows"] == default_path.output["rows"]


@pytest.mark.usefixtures("configured")
async def test_a_pooled_connection_is_reset_between_steps(actions: SqlActions) -> None:
    """Within one tenant too: the next step on the same server process (same backend pid) finds no
    temp table, default settings and no advisory lock of the step before."""
    first = await run(
        actions,
        {
            "connection": "main",
            "statement": "SELECT pg_backend_pid() AS pid, current_setting('work_mem') AS mem",
        },
    )
    await run(actions, {"connection": "main", "statement": "CREATE TEMP TABLE scratch (x int)"})
    await run(actions, {"connection": "main", "statement": "SET work_mem = '7777kB'"})
    await run(actions, {"connection": "main", "statement": "SELECT pg_advisory_lock(4242)"})
    after = await run(
        actions,
        {
            "connection": "main",
            "statement": "SELECT pg_backend_pid() AS pid, to_regclass('pg_temp.scratch') AS t,"
            " current_setting('work_mem') AS mem,"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid()) AS locks",
        },
    )
    assert after.output["rows"] == [{**first.output["rows"][0], "t": None, "locks": 0}]
    default_path = await run(actions, {"connection": "reports", "statement": "SHOW search_path"})
    await run(actions, {"connection": "reports", "statement": "SET search_path = pg_catalog"})
    shown = await run(actions, {"connection": "reports", "statement": "SHOW search_path"})
    assert shown.output["rows"] == default_path.output["rows"]


async def test_a_server_that_is_down_is_a_retryable_connection_error(actions: SqlActions) -> None:
    configure_connections(
        Connections.parse({"default": {"sql": {"gone": {"url": "postgresql://u:p@127.0.0.1:1/db"}}}})
    )
    try:
        error = await fails(actions, {"connection": "gone", "statement": "SELECT 1"})
    finally:
        configure_connections(None)
    assert error.type == "SqlConnectionError"
    assert not error.non_retryable


def test_validation_refuses_a_template_in_the_statement() -> None:
    document = {
        "name": "sql-template",
        "defaults": {"timeouts": {"start_to_close": "30s"}},
        "steps": [
            {
                "id": "q",
                "type": "task",
                "action": "sql",
                "input": {
                    "connection": "main",
                    "statement": "SELECT * FROM t WHERE name = '{{ input.name }}'",
                },
            }
        ],
    }
    with pytest.raises(DefinitionError) as info:
        load_definition(document)
    problem = info.value.problems[0]
    assert problem.path == "$.steps[0].input.statement"
    assert "static" in problem.message
    document["steps"][0]["input"] = {
        "connection": "main",
        "statement": "SELECT * FROM t WHERE name = :name",
        "parameters": {"name": "{{ input.name }}"},
    }
    load_definition(document)


def test_wfa_validate_names_the_templated_statement(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from starter.cli import run as wfa

    path = tmp_path / "flow.json"
    path.write_text(
        json.dumps(
            {
                "name": "sql-template",
                "defaults": {"timeouts": {"start_to_close": "30s"}},
                "steps": [
                    {
                        "id": "q",
                        "type": "task",
                        "action": "sql",
                        "input": {
                            "connection": "main",
                            "statement": "DELETE FROM t WHERE id = {{ input.id }}",
                        },
                    }
                ],
            }
        )
    )
    assert wfa(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "$.steps[0].input.statement: statement must be static text" in err


def test_the_published_schema_refuses_a_templated_statement_too() -> None:
    import jsonschema

    from interpreter.schema import definition_schema

    def step(statement: str) -> dict[str, Any]:
        return {
            "name": "s",
            "defaults": {"timeouts": {"start_to_close": "30s"}},
            "steps": [
                {
                    "id": "q",
                    "type": "task",
                    "action": "sql",
                    "input": {"connection": "c", "statement": statement},
                }
            ],
        }

    validator = jsonschema.Draft202012Validator(definition_schema())
    assert validator.is_valid(step("SELECT * FROM t WHERE id = :id"))
    assert not validator.is_valid(step("SELECT * FROM t WHERE id = {{ input.id }}"))
