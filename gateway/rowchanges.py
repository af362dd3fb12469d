"""Row-change triggers: a PostgreSQL table's changes start runs, exactly once each.

``wfa triggers install --connection crm --table public.orders --definition new-order`` puts on the
user's table an ``AFTER ... FOR EACH ROW`` trigger that, in the same transaction as the change,
inserts one row into the outbox table ``wfa_outbox`` of that database (the operation, the old and
new row as JSON, a ``bigserial`` change id, the tenant and the definition) and sends
``NOTIFY wfa_outbox`` as a wake-up. A change that commits is in the outbox; one that rolls back
is not.

The listener (the gateway's lifespan with ``WFA_GATEWAY_ROW_CHANGES=tenant:connection``, or
``python -m gateway.rowchanges``) ``LISTEN``\\s, and drains: in one transaction it locks a batch of
pending rows (``FOR UPDATE SKIP LOCKED``, so several listeners share the work), starts one run per
change with the workflow id ``row-{tenant}-{connection}-{change id}`` and the reuse policy
``REJECT_DUPLICATE``, and marks the row started only after the start succeeded or was a
duplicate. Killed at any point, it loses nothing (the row stays pending) and starts nothing twice
(the next start of that id is a duplicate). It also drains every few seconds without a
notification (one may be missed while the connection is down).

``connection`` names a secret of the tenant (:mod:`activities.secrets`) whose value is the
database URL (``postgresql://user:password@host/db``); the trigger and the outbox live in that
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]

    from gateway.config import RowChangeSource
    from gateway.state import GatewayState
    from interpreter.model import Definition
    from starter.client import FlowClient

__all__ = [
    "CHANNEL",
    "OUTBOX",
    "connection_url",
    "drain_once",
    "install",
    "run_listener",
    "run_listeners",
    "uninstall",
]

log = logging.getLogger("gateway.rowchanges")

OUTBOX = "wfa_outbox"
CHANNEL = "wfa_outbox"
FUNCTION = "wfa_capture_change"
BATCH = 50
POLL_S = 5.0
"""Drain at least this often without a notification."""

_TABLE = re.compile(r"^(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,62})$")
_OPERATIONS = ("insert", "update", "delete")

_SETUP = f"""
CREATE TABLE IF NOT EXISTS {OUTBOX} (
    change_id bigserial PRIMARY KEY,
    tenant text NOT NULL,
    definition text NOT NULL,
    table_name text NOT NULL,
    operation text NOT NULL,
    old_row jsonb,
    new_row jsonb,
    changed_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    workflow_id text,
    error text
);
CREATE INDEX IF NOT EXISTS {OUTBOX}_pending ON {OUTBOX} (tenant, change_id)
    WHERE started_at IS NULL AND error IS NULL;
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {OUTBOX} (tenant, definition, table_name, operation, old_row, new_row)
    VALUES (TG_ARGV[0], TG_ARGV[1], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, lower(TG_OP),
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    PERFORM pg_notify('{CHANNEL}', TG_ARGV[0]);
    RETURN NULL;
END
$$;
"""


class RowChangeError(ValueError):
    """A bad table, operation or connection (the message names it)."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _table(table: str) -> str:
    match = _TABLE.match(table)
    if match is None:
        raise RowChangeError(f"{table[:120]!r} is not a table name (NAME or SCHEMA.NAME)")
    schema, name = match.groups()
    return f"{_ident(schema)}.{_ident(name)}" if schema else _ident(name)


def trigger_name(tenant: str, definition: str) -> str:
    """The trigger's name on the table: one per tenant and definition (at most 63 bytes)."""
    digest = hashlib.sha256(f"{tenant}\0{definition}".encode()).hexdigest()[:12]
    return f"wfa_{definition[:40]}_{digest}"


def connection_url(tenant: str, connection: str) -> str:
    """The database URL held by the tenant's secret ``connection``, for asyncpg.

    Raises:
        RowChangeError: The tenant has no such secret.
    """
    from activities.secrets import secret_store

    secret = secret_store().get(tenant, connection)
    if secret is None or not secret.value:
        raise RowChangeError(
            f"tenant {tenant!r} has no secret {connection!r} holding the database URL"
            " (WFA_SECRETS_FILE, or WFA_SECRET_<NAME> for the default tenant)"
        )
    return secret.value.replace("postgresql+asyncpg://", "postgresql://", 1)


async def install(
    url: str, table: str, tenant: str, definition: str, operations: Sequence[str] = ("insert",)
) -> str:
    """Creates the outbox (if missing) and the trigger on ``table``; returns the trigger's name.

    Idempotent: installing again replaces the trigger (e.g. with other operations).

    Raises:
        RowChangeError: A malformed table or operation.
        asyncpg errors: The database refused (no such table, no privilege).
    """
    import asyncpg

    target = _table(table)
    ops = [op.lower() for op in operations]
    if not ops or any(op not in _OPERATIONS for op in ops):
        raise RowChangeError(f"operations must be among {', '.join(_OPERATIONS)}")
    name = trigger_name(tenant, definition)
    events = " OR ".join(op.upper() for op in _OPERATIONS if op in ops)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(_SETUP)
            await conn.execute(f"DROP TRIGGER IF EXISTS {_ident(name)} ON {target}")
            await conn.execute(
                f"CREATE TRIGGER {_ident(name)} AFTER {events} ON {target} FOR EACH ROW"
                f" EXECUTE FUNCTION {FUNCTION}({_literal(tenant)}, {_literal(definition)})"
            )
    finally:
        await conn.close()
    return name


async def uninstall(url: str, table: str, tenant: str, definition: str) -> bool:
    """Drops the trigger of ``definition`` from ``table`` (the outbox and its rows stay, so pending
    changes are still started). Returns whether there was one."""
    import asyncpg

    target = _table(table)
    name = trigger_name(tenant, definition)
    conn = await asyncpg.connect(url)
    try:
        existed = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgname = $1 AND tgrelid = to_regclass($2)", name, target
        )
        await conn.execute(f"DROP TRIGGER IF EXISTS {_ident(name)} ON {target}")
    finally:
        await conn.close()
    return bool(existed)


def change_workflow_id(tenant: str, connection: str, change_id: int) -> str:
    """The workflow id of one change: a restart can never start it twice."""
    return f"row-{tenant}-{connection}-{change_id}"


def _declares(definition: Definition, connection: str, table: str, operation: str) -> bool:
    """Whether ``definition`` has a live ``row_change`` trigger for this change (the outbox is
    written by the database's users; a row naming another definition starts nothing)."""
    from interpreter.model import RowChangeTrigger

    name = table.rpartition(".")[2]
    for trigger in definition.triggers:
        if not isinstance(trigger, RowChangeTrigger) or trigger.connection != connection:
            continue
        if trigger.table not in {name, table} or operation not in {op.value for op in trigger.operations}:
            continue
        return True
    return False


async def _start_change(flows: FlowClient, connection: str, row: Any) -> tuple[str, str | None]:
    """Starts the run of one outbox row; returns (workflow id, error). Errors that a retry cannot
    fix (unknown definition, invalid input) are returned to be recorded on the row; others raise."""
    from temporalio.common import WorkflowIDReusePolicy

    from activities.store.errors import DefinitionNotFoundError, InvalidReferenceError, VersionArchivedError
    from interpreter.validate import DefinitionError
    from starter.errors import InvalidInputError, RunAlreadyExistsError

    workflow_id = change_workflow_id(flows.tenant, connection, row["change_id"])
    change = {
        "change_id": row["change_id"],
        "table": row["table_name"],
        "operation": row["operation"],
        "old": json.loads(row["old_row"]) if row["old_row"] is not None else None,
        "new": json.loads(row["new_row"]) if row["new_row"] is not None else None,
        "changed_at": row["changed_at"].isoformat(),
    }
    try:
        resolved = await flows.resolve(row["definition"])
        if not _declares(resolved.definition, connection, row["table_name"], row["operation"]):
            return workflow_id, (
                f"the active version of {row['definition']} (v{resolved.version}) declares no row_change"
                f" trigger for {row['operation']} on {row['table_name']} of connection {connection}"
            )
        await flows.start_run(
            f"{resolved.name}@{resolved.version}",
            change,  # inert: the run escapes its input where it starts (interpreter/inert.py)
            workflow_id=workflow_id,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except RunAlreadyExistsError:
        pass  # started before (a listener died after the start): done
    except (
        DefinitionNotFoundError,
        InvalidReferenceError,
        VersionArchivedError,
        DefinitionError,
        InvalidInputError,
    ) as err:
        return workflow_id, f"{type(err).__name__}: {str(err)[:1000]}"
    return workflow_id, None


async def drain_once(conn: asyncpg.Connection, flows: FlowClient, connection: str) -> int:
    """Starts the runs of up to :data:`BATCH` pending changes of the client's tenant; returns how
    many rows were settled (0: nothing pending)."""
    async with conn.transaction():
        rows = await conn.fetch(
            f"SELECT change_id, definition, table_name, operation, old_row::text AS old_row,"
            f" new_row::text AS new_row, changed_at FROM {OUTBOX}"
            " WHERE tenant = $1 AND started_at IS NULL AND error IS NULL"
            f" ORDER BY change_id LIMIT {BATCH} FOR UPDATE SKIP LOCKED",
            flows.tenant,
        )
        for row in rows:
            workflow_id, error = await _start_change(flows, connection, row)
            if error is None:
                await conn.execute(
                    f"UPDATE {OUTBOX} SET started_at = now(), workflow_id = $2 WHERE change_id = $1",
                    row["change_id"],
                    workflow_id,
                )
            else:
                log.warning("change %s of %s not started: %s", row["change_id"], connection, error)
                await conn.execute(
                    f"UPDATE {OUTBOX} SET error = $2, workflow_id = $3 WHERE change_id = $1",
                    row["change_id"],
                    error,
                    workflow_id,
                )
    return len(rows)


async def run_listener(flows: FlowClient, source: RowChangeSource, *, poll_s: float = POLL_S) -> None:
    """Listens to one database's outbox and drains it until cancelled, reconnecting on errors."""
    import asyncpg

    backoff = 1.0
    while True:
        conn: asyncpg.Connection | None = None
        try:
            url = connection_url(source.tenant, source.connection)
            conn = await asyncpg.connect(url)
            wake = asyncio.Event()

            def notified(*_: object, wake: asyncio.Event = wake) -> None:
                wake.set()

            await conn.add_listener(CHANNEL, notified)
            log.info("listening to the outbox of %s (tenant %s)", source.connection, source.tenant)
            backoff = 1.0
            while True:
                while await drain_once(conn, flows, source.connection) == BATCH:
                    pass
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=poll_s)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning(
                "row-change listener of %s: %s: %s; retrying in %.0fs",
                source.connection,
                type(err).__name__,
                str(err)[:300],
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()


async def run_listeners(state: GatewayState) -> None:
    """Runs a listener per configured source (``GatewayConfig.row_changes``) until cancelled."""
    async with asyncio.TaskGroup() as group:
        for source in state.config.row_changes:
            group.create_task(_listen_with_client(state, source))


async def _listen_with_client(state: GatewayState, source: RowChangeSource) -> None:
    backoff = 1.0
    while True:
        try:
            flows = await state.client(source.tenant)
            break
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("row-change listener: tenant %s: %s; retrying", source.tenant, str(err)[:300])
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
    await run_listener(flows, source)


async def _main() -> int:
    from gateway.config import GatewayConfig, GatewayConfigError
    from gateway.state import GatewayState

    try:
        config = GatewayConfig.from_env()
    except GatewayConfigError as err:
        sys.stderr.write(f"gateway.rowchanges: {err}\n")
        return 2
    if not config.row_changes:
        sys.stderr.write("gateway.rowchanges: WFA_GATEWAY_ROW_CHANGES names no tenant:connection\n")
        return 2
    state = GatewayState(config)
    try:
        await run_listeners(state)
    finally:
        await state.close()
    return 0


def main() -> int:
    """``python -m gateway.rowchanges``: only the listener, without the HTTP service."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_main())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
