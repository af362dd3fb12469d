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
change with the workflow id of :func:`change_workflow_id` and the reuse policy
``REJECT_DUPLICATE``, and marks the row started only after the start succeeded or was a
duplicate. Killed at any point, it loses nothing (the row stays pending) and starts nothing twice
(the next start of that id is a duplicate). It also drains every few seconds without a
notification (one may be missed while the connection is down).

A row that no retry can start (its definition deactivated, or no longer declaring the trigger; row
data Python cannot parse; an input the definition refuses) is settled with its ``error``, and the
drain goes on. A start that may heal (Temporal or the store unavailable, or anything unforeseen)
leaves the row pending: the drain commits the rows settled before it and reports
:class:`ChangeDeferredError`, the listener waits (doubling, up to 30 s) and that row waits longer
(:class:`Deferrals`) while the rows behind it are drained, so no row holds the others.

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
import time
from collections.abc import Callable, Sequence
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
    "ChangeDeferredError",
    "Deferrals",
    "change_workflow_id",
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
DEFER_FIRST_S = 5.0
DEFER_MAX_S = 60.0
"""A row whose start may heal is tried again after 5 s, then after twice as long each time, at most
a minute (longer than the listener's own wait, so the rows behind it go first)."""

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
ALTER TABLE {OUTBOX} ADD COLUMN IF NOT EXISTS connection text;
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {OUTBOX} (tenant, definition, connection, table_name, operation, old_row, new_row)
    VALUES (TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, lower(TG_OP),
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
        RowChangeError: The tenant has no such secret, or it holds no PostgreSQL URL (a setting to
            correct: it was "cannot reach", and a byte that is not UTF-8 an internal error).
    """
    from activities.secrets import secret_store
    from activities.store.database import normalize_url
    from activities.store.errors import InvalidDatabaseUrlError

    secret = secret_store().get(tenant, connection)
    if secret is None or not secret.value:
        raise RowChangeError(
            f"tenant {tenant!r} has no secret {connection!r} holding the database URL"
            " (WFA_SECRETS_FILE, or WFA_SECRET_<NAME> for the default tenant)"
        )
    try:
        normalize_url(secret.value)
    except InvalidDatabaseUrlError as err:
        raise RowChangeError(f"the secret {connection!r} of tenant {tenant!r}: {err}") from None
    return secret.value.replace("postgresql+asyncpg://", "postgresql://", 1)


async def install(
    url: str,
    table: str,
    tenant: str,
    definition: str,
    operations: Sequence[str] = ("insert",),
    *,
    connection: str | None = None,
) -> str:
    """Creates the outbox (if missing) and the trigger on ``table``; returns the trigger's name.

    Idempotent: installing again replaces the trigger (e.g. with other operations). Its changes
    name ``connection``, whose listener alone drains them: two connection names of one database
    each drained the other's changes and settled them as errors (a probe). A trigger installed
    before names none; any listener of its tenant takes its changes, as before.

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
                f" EXECUTE FUNCTION {FUNCTION}({_literal(tenant)}, {_literal(definition)}"
                + (f", {_literal(connection)})" if connection is not None else ")")
            )
    finally:
        await conn.close()
    return name


async def qualified_table(url: str, table: str) -> str:
    """``table`` as the database resolves it, ``schema.name`` (the name a change is recorded
    under), so a trigger is checked against the table it goes on.

    Raises:
        RowChangeError: A malformed name, or no such table.
        asyncpg errors: The database refused.
    """
    import asyncpg

    target = _table(table)
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass($1)",
            target,
        )
    finally:
        await conn.close()
    if found is None:
        raise RowChangeError(f"no table {table[:120]!r} in that database")
    return str(found)


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
    """The workflow id of one change: a restart can never start it twice.

    ``rowchange-{tenant}-{connection}-{change id}-{digest}``, the digest of all three: the parts are
    there to be read, the digest tells the changes apart. Before, ``row-{tenant}-{connection}-{change
    id}`` joined parts that may hold ``-``: in a namespace shared by tenants, the first change of
    tenant ``acme-x``'s connection ``y`` and of tenant ``acme``'s connection ``x-y`` had one id, and
    the second was marked started while its run never happened (found by an attacker's probe). No
    old id is a new one: an old one ends in a change id, at most 19 digits, a new one in 32
    hexadecimal digits (and the prefixes differ).
    """
    from interpreter.events import parts_digest

    return f"rowchange-{tenant}-{connection}-{change_id}-{parts_digest(tenant, connection, change_id)}"


class ChangeDeferredError(Exception):
    """A change's start failed in a way that may heal (Temporal or the store unavailable, or an
    error nobody foresaw): its row stays pending, and the rows settled before it in the batch are
    committed.

    Attributes:
        change_id: The row's change id.
        cause: The error of the start.
    """

    def __init__(self, change_id: int, cause: Exception) -> None:
        super().__init__(f"change {change_id} not started yet: {type(cause).__name__}: {str(cause)[:300]}")
        self.change_id = change_id
        self.cause = cause


class Deferrals:
    """Rows whose start failed in a way that may heal, by change id, with when to try them again:
    after :data:`DEFER_FIRST_S`, doubling up to :data:`DEFER_MAX_S`. Meanwhile a drain leaves them
    out, so one such row does not hold the rows behind it. One per listener (in memory: a restart
    tries every pending row at once)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rows: dict[int, tuple[int, float]] = {}  # change id: (failures, not before)

    def waiting(self) -> list[int]:
        """The change ids a drain leaves out now (and forgets rows long due: another listener may
        have settled them)."""
        now = self._clock()
        for change_id, (_, due) in list(self._rows.items()):
            if due + 2 * DEFER_MAX_S < now:
                del self._rows[change_id]
        return [change_id for change_id, (_, due) in self._rows.items() if due > now]

    def failed(self, change_id: int) -> float:
        """Records a failed start; returns how long the row waits."""
        failures = self._rows.get(change_id, (0, 0.0))[0] + 1
        delay = min(DEFER_FIRST_S * (1 << min(failures - 1, 16)), DEFER_MAX_S)
        self._rows[change_id] = (failures, self._clock() + delay)
        return delay

    def settled(self, change_id: int) -> None:
        self._rows.pop(change_id, None)


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


def _text(message: str) -> str:
    """``message`` as PostgreSQL ``text`` takes it (no NUL, valid UTF-8), at most 1,000 characters."""
    return message[:1000].replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


async def _start_change(flows: FlowClient, connection: str, row: Any) -> tuple[str, str | None]:
    """Starts the run of one outbox row; returns (workflow id, error). Errors that a retry cannot
    fix (no such definition or no active version, row data that cannot be parsed, an input the
    definition refuses) are returned to be recorded on the row; others (that may heal) raise."""
    from temporalio.common import WorkflowIDReusePolicy

    from activities.store.errors import (
        DefinitionNotFoundError,
        InvalidReferenceError,
        InvalidTenantError,
        NoActiveVersionError,
        VersionArchivedError,
    )
    from interpreter.validate import DefinitionError
    from starter.errors import InvalidInputError, RunAlreadyExistsError

    workflow_id = change_workflow_id(flows.tenant, connection, row["change_id"])
    try:
        change = {
            "change_id": row["change_id"],
            "table": row["table_name"],
            "operation": row["operation"],
            "old": json.loads(row["old_row"]) if row["old_row"] is not None else None,
            "new": json.loads(row["new_row"]) if row["new_row"] is not None else None,
            "changed_at": row["changed_at"].isoformat(),
        }
    except (ValueError, RecursionError, OverflowError) as err:
        # E.g. a numeric of over 4,300 digits ("Exceeds the limit"), JSON nested too deep.
        return workflow_id, f"the row cannot be read as JSON: {type(err).__name__}: {err}"
    try:
        # The active version: a trigger installed with ``name@1`` before install refused it
        # (a probe) started that version for ever.
        resolved = await flows.resolve(str(row["definition"]).partition("@")[0])
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
        InvalidTenantError,
        NoActiveVersionError,
        VersionArchivedError,
        DefinitionError,
        InvalidInputError,
        RecursionError,
    ) as err:
        return workflow_id, f"{type(err).__name__}: {err}"
    return workflow_id, None


async def drain_once(
    conn: asyncpg.Connection, flows: FlowClient, connection: str, deferrals: Deferrals | None = None
) -> int:
    """Starts the runs of up to :data:`BATCH` pending changes of the client's tenant; returns how
    many rows were settled (0: nothing pending). Rows ``deferrals`` holds back are left out.

    Raises:
        ChangeDeferredError: A start that may heal failed: that row stays pending (and waits in
            ``deferrals``); the rows settled before it are committed.
    """
    deferrals = deferrals if deferrals is not None else Deferrals()
    deferred: ChangeDeferredError | None = None
    async with conn.transaction():
        rows = await conn.fetch(
            f"SELECT change_id, definition, table_name, operation, old_row::text AS old_row,"
            f" new_row::text AS new_row, changed_at FROM {OUTBOX}"
            " WHERE tenant = $1 AND started_at IS NULL AND error IS NULL AND change_id <> ALL($2::bigint[])"
            " AND (connection IS NULL OR connection = $3)"
            f" ORDER BY change_id LIMIT {BATCH} FOR UPDATE SKIP LOCKED",
            flows.tenant,
            deferrals.waiting(),
            connection,
        )
        for row in rows:
            try:
                workflow_id, error = await _start_change(flows, connection, row)
            except Exception as err:  # may heal: the row stays pending, the rows before it are kept
                delay = deferrals.failed(row["change_id"])
                deferred = ChangeDeferredError(row["change_id"], err)
                log.warning("%s (%s); it waits %.0fs", deferred, connection, delay)
                break
            deferrals.settled(row["change_id"])
            if error is None:
                await conn.execute(
                    f"UPDATE {OUTBOX} SET started_at = now(), workflow_id = $2 WHERE change_id = $1",
                    row["change_id"],
                    workflow_id,
                )
            else:
                error = _text(error)
                log.warning("change %s of %s not started: %s", row["change_id"], connection, error)
                await conn.execute(
                    f"UPDATE {OUTBOX} SET error = $2, workflow_id = $3 WHERE change_id = $1",
                    row["change_id"],
                    error,
                    workflow_id,
                )
    if deferred is not None:
        raise deferred
    return len(rows)


async def run_listener(flows: FlowClient, source: RowChangeSource, *, poll_s: float = POLL_S) -> None:
    """Listens to one database's outbox and drains it until cancelled, reconnecting on errors."""
    import asyncpg

    backoff = 1.0
    deferrals = Deferrals()
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
            while True:
                try:
                    while await drain_once(conn, flows, source.connection, deferrals) == BATCH:
                        pass
                except ChangeDeferredError:
                    # Logged by drain_once; the rows behind the deferred one are next.
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 1.0
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
