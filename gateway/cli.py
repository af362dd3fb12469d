"""The gateway's ``wfa`` commands: ``serve``, ``keys api ...`` and ``triggers install/uninstall``.

:mod:`starter.cli` adds them to its parser (:func:`add_commands`, :func:`add_api_key_commands`) and
dispatches to :func:`run_serve`, :func:`api_keys` and :func:`triggers`; errors follow the CLI's exit
codes (2 bad input, 3 unreachable, 4 not found). Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from interpreter.sizes import text_problem

__all__ = ["add_api_key_commands", "add_commands", "api_keys", "port_number", "run_serve", "triggers"]

AddOptions = Callable[..., None]


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535: one out of range was an internal error on binding."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def add_commands(command: Callable[[str, str], argparse.ArgumentParser], add_options: AddOptions) -> None:
    """Adds ``serve`` and ``triggers`` to the CLI (``command`` makes a top-level command)."""
    from gateway.serve import DEFAULT_HOST, DEFAULT_PORT

    p = command("serve", "serve the gateway (webhooks, events, health; OpenAPI docs at /docs)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")

    trig = command("triggers", "row-change triggers on a PostgreSQL table: install, uninstall")
    sub = trig.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text_ in (
        ("install", "put a trigger on TABLE writing each change to the outbox the gateway drains"),
        ("uninstall", "remove the trigger of DEFINITION from TABLE (pending changes are still started)"),
    ):
        p = sub.add_parser(action, help=text_, description=text_)
        add_options(p, defaults=False)
        p.add_argument(
            "--connection",
            required=True,
            metavar="NAME",
            help="the tenant's secret holding the database URL (as in the definition's row_change trigger)",
        )
        p.add_argument("--table", required=True, metavar="T", help="TABLE or SCHEMA.TABLE")
        p.add_argument("--definition", required=True, metavar="D", help="the definition whose runs start")
        p.add_argument("--json", action="store_true", help="machine-readable output")


def add_api_key_commands(keys_sub: Any, add_options: AddOptions) -> None:
    """Adds ``keys api create/list/revoke`` under the existing ``keys`` command."""
    api = keys_sub.add_parser(
        "api", help="API keys of the gateway's /events endpoint", description="API keys of /events"
    )
    sub = api.add_subparsers(dest="api_action", metavar="ACTION", required=True)
    p = sub.add_parser("create", help="create a key of the tenant and print it (once)")
    add_options(p, defaults=False)
    p.add_argument("--name", default="default", metavar="N", help="a label for the key (default 'default')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("list", help="list the tenant's keys (never the keys themselves)")
    add_options(p, defaults=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("revoke", help="revoke one of the tenant's keys by id")
    add_options(p, defaults=False)
    p.add_argument("key_id", type=int, metavar="ID")


def run_serve(args: argparse.Namespace) -> int:
    """``wfa serve``: blocks until interrupted."""
    from gateway.serve import serve

    if args.address:
        os.environ["TEMPORAL_ADDRESS"] = args.address
    if getattr(args, "database_url", None):
        os.environ["DATABASE_URL"] = args.database_url
    return serve(args.host, args.port)


def _actor() -> str:
    """Who makes an API key: ``WFA_ACTOR``, else the login name, as every other ``wfa`` command.

    Raises:
        ValueError: It holds a NUL or bytes that are not UTF-8 (the database's words before).
    """
    name = os.environ.get("WFA_ACTOR") or os.environ.get("USER") or os.environ.get("USERNAME") or "cli"
    problem = text_problem(name)
    if problem is not None:
        raise ValueError(f"the actor (WFA_ACTOR, else USER) has {problem}")
    return name


async def api_keys(args: argparse.Namespace, out: TextIO, usage_error: type[Exception]) -> int:
    """``wfa keys api create|list|revoke``."""
    from activities.store.database import open_database
    from gateway import apikeys

    database = await open_database(getattr(args, "database_url", None) or None)
    try:
        factory = database.session_factory
        if args.api_action == "create":
            try:
                key, info = await apikeys.create_key(factory, args.tenant, args.name, _actor())
            except ValueError as err:
                raise usage_error(str(err)) from None
            if args.json:
                print(json.dumps({"key": key, **info.model_dump(mode="json")}), file=out)
            else:
                print(key, file=out)
                print(
                    f"# API key {info.id} ({info.name}) of tenant {info.tenant}: shown only now, stored"
                    " hashed; send it as 'Authorization: Bearer <key>' to POST /events",
                    file=out,
                )
            return 0
        if args.api_action == "list":
            rows = await apikeys.list_keys(factory, args.tenant)
            if args.json:
                print(json.dumps([row.model_dump(mode="json") for row in rows], indent=2), file=out)
            elif not rows:
                print(f"tenant {args.tenant} has no API keys", file=out)
            for row in [] if args.json else rows:
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                print(
                    f"{row.id}\t{row.name}\t{state}\tcreated {row.created_at:%Y-%m-%d %H:%M} by {row.created_by}",
                    file=out,
                )
            return 0
        if not await apikeys.revoke_key(factory, args.tenant, args.key_id):
            from starter.errors import ApiKeyNotFoundError

            raise ApiKeyNotFoundError(args.tenant, args.key_id)  # exit 4, as for other ids
        print(f"API key {args.key_id} of tenant {args.tenant} revoked", file=out)
        return 0
    finally:
        await database.close()


async def triggers(args: argparse.Namespace, out: TextIO, usage_error: type[Exception]) -> int:
    """``wfa triggers install|uninstall``: the definition's active version must declare a
    ``row_change`` trigger on this connection and table (its operations are installed)."""
    import asyncpg  # type: ignore[import-untyped]

    from activities.store.database import open_database
    from activities.store.repository import DefinitionStore
    from gateway import rowchanges
    from interpreter.model import RowChangeTrigger
    from starter.errors import ServerUnavailableError

    @contextlib.contextmanager
    def user_database() -> Iterator[None]:
        """The connection's database's refusals in words (exit 2), or unreachable (exit 3)."""
        try:
            yield
        except rowchanges.RowChangeError as err:
            raise usage_error(str(err)) from None
        except asyncpg.PostgresError as err:
            raise usage_error(f"the database {args.connection} refused: {err}") from None
        except (OSError, asyncpg.InterfaceError) as err:
            raise ServerUnavailableError(
                f"cannot reach the database of connection {args.connection}: {err}", args.connection
            ) from None

    tenant: str = args.tenant
    try:
        url = rowchanges.connection_url(tenant, args.connection)
    except rowchanges.RowChangeError as err:
        raise usage_error(str(err)) from None
    operations: list[str] = []
    if args.action == "install":
        if "@" in args.definition:
            # Changes start the active version (a probe: name@1 wired a version that was not, for
            # ever): the trigger names the definition.
            raise usage_error(
                f"--definition takes a name, not a version ({args.definition!r}): changes start the"
                " active version"
            )
        database = await open_database(getattr(args, "database_url", None) or None)
        try:
            resolved = await DefinitionStore(database.session_factory, tenant).resolve(args.definition)
        finally:
            await database.close()
        wanted = args.table.split(".")[-1]
        declared = [
            trigger
            for trigger in resolved.definition.triggers
            if isinstance(trigger, RowChangeTrigger)
            and trigger.connection == args.connection
            and trigger.table.split(".")[-1] == wanted
        ]
        if declared:
            # As the changes are recorded (schema.name): a trigger declared on sales.orders was
            # installed on public.orders, and every change failed (a probe).
            with user_database():
                qualified = await rowchanges.qualified_table(url, args.table)
            matching = [t for t in declared if t.table in {qualified, qualified.rpartition(".")[2]}]
            if not matching:
                raise usage_error(
                    f"{args.table!r} is {qualified} in that database, but the active version of"
                    f" {args.definition} declares its row_change trigger on"
                    f" {', '.join(t.table for t in declared)}"
                )
            operations = [op.value for op in matching[-1].operations]
        if not operations:
            raise usage_error(
                f"the active version of {args.definition} (v{resolved.version}) declares no row_change"
                f" trigger on connection {args.connection!r} and table {args.table!r}"
            )
    with user_database():
        if args.action == "install":
            name = await rowchanges.install(
                url, args.table, tenant, args.definition, operations, connection=args.connection
            )
            existed = True
        else:
            name = rowchanges.trigger_name(tenant, args.definition)
            existed = await rowchanges.uninstall(url, args.table, tenant, args.definition)
    if args.json:
        print(
            json.dumps({"trigger": name, "table": args.table, "operations": operations, "existed": existed}),
            file=out,
        )
    elif args.action == "install":
        print(
            f"Trigger {name} on {args.table} ({', '.join(operations)}) writes each change to {rowchanges.OUTBOX};"
            f" the gateway starts {args.definition} once per change (WFA_GATEWAY_ROW_CHANGES={tenant}:{args.connection})",
            file=out,
        )
    else:
        print(f"Trigger {name} {'removed from' if existed else 'was not on'} {args.table}", file=out)
    return 0
