"""``wfa``: the command line of the workflow-automation service.

::

    wfa validate examples/order-fulfilment.json
    wfa start examples/expense-approval.json --input '{"amount": 250}' --id expense-4711
    wfa status expense-4711
    wfa approve expense-4711 --actor manager --reason "within budget"
    wfa result expense-4711 --timeout 60          # meanwhile prints what the run waits on (stderr)
    wfa list --definition expense-approval --state awaiting_approval [--json]

    wfa definitions register examples/intervention.json --author ann [--activate]
    wfa definitions list [NAME]  |  show NAME[@V]  |  diff NAME V1 V2
    wfa definitions activate NAME V  |  rollback NAME  |  deactivate NAME  |  archive NAME V
    wfa schedules list [NAME]  |  pause S  |  unpause S  |  trigger S  |  backfill S --start T --end T  |  sync [NAME]
    wfa start intervention@2 --input '{...}'       # a registry reference instead of a file
    wfa dead-letters list  |  show ID  |  redrive ID [--input JSON]  |  skip ID --output JSON  |  abort ID
    wfa db upgrade  |  grant-tenant TENANT --role ROLE  |  grant-platform --role ROLE  |  revoke-tenant --role ROLE  |  roles
    wfa keys generate --private FILE --jwks FILE [--kid K]
    wfa token mint --run ID [--step S] --actor A --decisions approve,reject [--ttl 1h]
    wfa approve ID --actor A --token T            # proof, when the run or the worker requires it

Global options (before or after the command): ``--tenant`` (``$WFA_TENANT``, default ``default``),
which selects the tenant's namespace and Temporal credentials (:mod:`starter.tenancy`) and grants
nothing; ``--address`` (default the tenant's configuration profile, ``$TEMPORAL_ADDRESS`` or
``127.0.0.1:7233``), ``--namespace`` (default the tenant's; another is refused when tenants have
namespaces of their own), ``--profile`` and ``--config-file`` (Temporal's environment configuration:
``$TEMPORAL_PROFILE``, ``$TEMPORAL_CONFIG_FILE``; address, namespace, API key, TLS and mTLS, with
``TEMPORAL_*`` overrides: :mod:`starter.connection`), ``--task-queue`` (``$TEMPORAL_TASK_QUEUE``, default
``workflow-automation``) and ``--database-url`` (``$DATABASE_URL``, default the embedded PostgreSQL
server under ``.state/``).

Output is for people by default; ``--json`` prints one JSON document for scripts.

Exit codes:

== ==========================================================================================
0  ok
1  the run did not complete: failed, compensated (a handled failure) or cancelled (``result``,
   ``start --wait``)
2  bad input: invalid definition (its problems are printed with JSON paths), a run input that
   does not match the definition's input_schema (JSON paths too), bad JSON, missing file, bad
   arguments, an unusable connection profile or payload keys, a payload encrypted with a key not
   configured here
3  the Temporal server, the database or the payload store (an S3 endpoint) is unreachable or
   unusable (unknown namespace, search attributes not registered, missing database, migrations not
   applied), or no worker answered (also: the run's workflow task keeps failing on its worker);
   also a registry change made whose schedules could not be written (``wfa schedules sync``), and a
   run input that could not be checked against its input_schema now (every checking slot busy);
   also standard output that could not be written once ``start`` started a run (its ids go to
   stderr), or by any command (what it did is done)
4  no run with that id, no such definition, version, dead letter or schedule (in the tenant)
5  refused: decision not allowed (actor not an approver, nothing pending, ...), the run has
   already ended, the business key was already used by a completed run, an archived version
   activated or started, the active version archived, a deactivated name started, nothing to
   roll back, a dead letter
   already resolved, a write the database refused to this role (another tenant's rows under
   row-level security), a role that cannot be a tenant's
6  ``--timeout`` passed before the run ended (it is still running)
70 internal error: a bug (one line; ``WFA_DEBUG=1`` shows the traceback)
130 interrupted (Ctrl-C): what the command started goes on (a started run is named)
== ==========================================================================================

As a program (no ``argv`` given to :func:`main`), ``wfa`` flushes its output and leaves with
``os._exit``: the Temporal SDK's native threads can otherwise abort or hang the interpreter at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast
from urllib.parse import urlsplit, urlunsplit

# Only light modules at import time: `wfa --help` and `wfa validate` must not load the Temporal SDK
# or the database driver (every command is a new process; scripts call it in loops).
from starter.config import (
    ADDRESS_ENV,
    DATABASE_URL_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    DEFAULT_TASK_QUEUE,
    DEFAULT_TENANT,
    NAMESPACE_ENV,
    TASK_QUEUE_ENV,
    TENANT_ENV,
)
from starter.errors import DefinitionFileNotFoundError, InvalidInputError, unreadable_payload
from starter.inputs import brief, check_json, read_text_file, text_problem

RESULT_STEPS = ("full", "compact", "none")
"""``wfa start --result-steps``: the values of :class:`interpreter.state.ResultSteps` (not imported
here: pydantic is not loaded at import time)."""

if TYPE_CHECKING:
    from activities.store.database import Database
    from activities.store.repository import (
        DeadLetter,
        DefinitionInfo,
        DefinitionStore,
        NameSummary,
    )
    from interpreter.model import Definition
    from interpreter.state import RunResult, RunStatus, StepRecord
    from interpreter.validate import DefinitionError
    from starter.client import FlowClient, RunHandle

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_RUN_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "main",
    "run",
]

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5
EXIT_TIMEOUT = 6
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70

MAX_VERSION = 2**31 - 1  # the registry's integer column
MAX_DEAD_LETTER_ID = 2**63 - 1  # a bigint identity
MAX_LIST_LIMIT = 10_000
MAX_ACTOR_LENGTH = 200  # the store's column width
MAX_TIMEOUT_S = 10**9

_ERROR_WIDTH = 90
_KEY_WIDTH = 12


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages bounded (they quote the offending argument)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {_clip_message(message, 500)}\n")


# ------------------------------------------------------------------------------------- arguments


def _add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    # On subcommands the defaults are SUPPRESS, so `wfa status X --address A` and
    # `wfa --address A status X` both work and neither overrides the other with a default.
    address = os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    namespace = os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
    task_queue = os.environ.get(TASK_QUEUE_ENV) or DEFAULT_TASK_QUEUE
    suppress = argparse.SUPPRESS
    # Address and namespace default to the tenant's (its Temporal configuration profile, its
    # namespace in WFA_TENANT_NAMESPACES): only an explicit value is passed on.
    parser.add_argument(
        "--address",
        default=None if defaults else suppress,
        type=_setting,
        help=f"Temporal frontend host:port (default: the tenant's configuration profile, else env"
        f" TEMPORAL_ADDRESS, now {address})",
    )
    parser.add_argument(
        "--namespace",
        default=None if defaults else suppress,
        type=_setting,
        help=f"namespace (default: the tenant's, WFA_TENANT_NAMESPACES / WFA_NAMESPACE_PER_TENANT,"
        f" else env TEMPORAL_NAMESPACE, now {namespace})",
    )
    parser.add_argument(
        "--profile",
        default=None if defaults else suppress,
        type=_setting,
        help="Temporal configuration profile: address, namespace, API key, TLS/mTLS (default env"
        " TEMPORAL_PROFILE, else the tenant's profile or 'default'); TEMPORAL_* variables override it",
    )
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        default=None if defaults else suppress,
        type=_path,
        help="Temporal configuration file (TOML profiles; default env TEMPORAL_CONFIG_FILE, else"
        " ~/.config/temporalio/temporal.toml)",
    )
    parser.add_argument(
        "--task-queue",
        default=task_queue if defaults else suppress,
        type=_setting,
        help=f"task queue the workers poll (env TEMPORAL_TASK_QUEUE, now {task_queue})",
    )
    tenant = os.environ.get(TENANT_ENV) or DEFAULT_TENANT
    database_url = os.environ.get(DATABASE_URL_ENV) or None
    parser.add_argument(
        "--tenant",
        default=tenant if defaults else suppress,
        help=f"tenant of the stored definitions, dead letters and runs; selects its namespace and"
        f" credentials, grants nothing (env {TENANT_ENV}, now {tenant})",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=database_url if defaults else suppress,
        help="PostgreSQL of the definition registry and dead letters (env DATABASE_URL, now "
        + (_hide_password(database_url) if database_url else "unset: the embedded server under .state/")
        + ")",
    )


def _setting(text: str) -> str:
    """A connection setting given on the command line: never empty or blank (an unset variable in a
    script, ``--address "$ADDR"``, must not fall back to another server or tenant) nor holding a
    control character."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or blank")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError(f"must not hold a control character: {brief(text)}")
    return text


def _path(text: str) -> str:
    """A file named on the command line: never empty or blank (``Path('')`` is the current
    directory: ``wfa validate ''`` said "cannot read '.': Is a directory", a probe)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or blank: name a file")
    return text


def _hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for help texts; no driver needed); one that
    is not a URL at all shows as such (a probe: ``[::1`` as its host stopped every command, even
    ``--help``, with a traceback, while the command would have said "not a database URL", exit 2)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "set, but not a URL"
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _default_actor() -> str:
    try:
        return os.environ.get("WFA_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "cli"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (environment defaults are read when it is built)."""
    parser = _Parser(
        prog="wfa",
        description="Run JSON workflow definitions on Temporal: validate, store, start, approve, inspect.",
        epilog="Exit codes: 0 ok, 1 run failed/cancelled, 2 bad input, 3 server, database or payload store unreachable "
        "or no worker (or schedules not written after a registry change), 4 unknown run, definition, version,"
        " dead letter or schedule, 5 refused, 6 timed out waiting,"
        " 70 internal error (a bug), 130 interrupted (Ctrl-C).",
    )
    _add_connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_connection_options(sub, defaults=False)
        return sub

    p = command("validate", "check a definition file and list every problem with its JSON path")
    p.add_argument("file", metavar="FILE", type=_path, help="definition JSON file")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("start", "validate a definition and start a run of it")
    p.add_argument(
        "file",
        metavar="FILE|REF",
        type=_path,
        help="definition JSON file, or a registry reference: NAME (the active version) or NAME@VERSION",
    )
    p.add_argument("--input", metavar="JSON|@FILE", help="run input: a JSON object, or @path of a JSON file")
    p.add_argument(
        "--id",
        metavar="KEY",
        help="workflow id / business key: while that run is going it is returned instead of a "
        "duplicate; once it completed the key cannot start another run",
    )
    p.add_argument("--wait", action="store_true", help="wait for the run to end and print its result")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="with --wait: give up after S seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run the definition without any action: each task returns what it would have sent"
        " (or its --outputs entry); the workflow id starts with dry-run-",
    )
    p.add_argument(
        "--outputs",
        metavar="FILE",
        type=_path,
        help="with --dry-run: a JSON object of task outputs by step path (or id), to exercise branches",
    )
    p.add_argument(
        "--result-steps",
        choices=RESULT_STEPS,
        help="what the run's result keeps of its step records: every field (full), the fields"
        " not at their default (compact), or none in a completed run (none: fewer history bytes;"
        " `wfa status` lists them while a worker answers); default $WFA_RESULT_STEPS, else compact"
        " (full for runs started at a generation before 24: $WFA_ENGINE_LEVEL)",
    )

    for name, verb in (("approve", "approve"), ("reject", "reject")):
        p = command(name, f"{verb} a run's pending approval")
        p.add_argument("workflow_id", metavar="ID", help="the run's workflow id")
        p.add_argument(
            "--actor", required=True, type=_name, help="who decides (must be one of the step's approvers)"
        )
        p.add_argument("--step", metavar="S", help="approval step id (needed when several are pending)")
        p.add_argument("--reason", default="", metavar="R", help="free text, recorded")
        p.add_argument("--data", metavar="JSON|@FILE", help="form fields as a JSON object, or @path")
        p.add_argument(
            "--no-wait",
            action="store_true",
            help="send a signal and return at once (a refusal is then only visible in `status`)",
        )
        p.add_argument(
            "--token", metavar="T", help="signed decision token (wfa token mint), when proof is required"
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("cancel", "cancel a run: compensations run, then it ends as cancelled")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--actor", required=True, type=_name, help="who cancels (recorded)")
    p.add_argument("--reason", default="", metavar="R", help="why (recorded)")
    p.add_argument(
        "--token", metavar="T", help="signed decision token (wfa token mint), when proof is required"
    )

    p = command("status", "show a run's state, steps, pending approvals and decisions")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("list", "list the tenant's runs, newest first (from Temporal's visibility store)")
    p.add_argument("--definition", metavar="NAME", help="only runs of this definition")
    p.add_argument("--version", type=_version, metavar="V", help="only runs pinned to this version")
    p.add_argument(
        "--state",
        choices=[
            "running",
            "awaiting_approval",
            "parked",
            "compensating",
            "completed",
            "compensated",
            "failed",
            "cancelled",
        ],
        help="only runs in this state",
    )
    p.add_argument("--awaiting-approval", action="store_true", help="only runs waiting for a person")
    p.add_argument("--dry-runs", action="store_true", help="only dry runs (left out otherwise)")
    p.add_argument("--limit", type=_limit, default=100, metavar="N", help="at most N (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("result", "wait for a run to end and show how it ended")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="give up after S seconds (exit code 6)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("stats", "a definition's runs over a window: outcomes, durations, failing steps, decisions")
    p.add_argument("definition", metavar="NAME", help="the definition's name")
    p.add_argument(
        "--since",
        type=_window,
        default=timedelta(days=7),
        metavar="DUR",
        help="runs started this long ago or less (default 7d)",
    )
    p.add_argument("--limit", type=_limit, default=1000, metavar="N", help="at most N runs (default 1000)")
    p.add_argument(
        "--details",
        type=_detail_limit,
        default=200,
        metavar="N",
        help="read the status of at most N runs for the step figures (default 200)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("watch", "follow a run live: steps, waits and decisions as they happen, until it ends")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="poll every S seconds (default 1)"
    )
    p.add_argument("--timeout", type=_seconds, metavar="S", help="give up after S seconds (exit code 6)")

    p = command("diagram", "a Mermaid flowchart of a definition, or of a run with the path it took")
    p.add_argument(
        "definition",
        nargs="?",
        metavar="FILE|REF",
        type=_path,
        help="definition JSON file, or a registry reference NAME or NAME@VERSION (omit with --run)",
    )
    p.add_argument("--run", metavar="ID", help="highlight the path this run took (its definition is drawn)")

    _add_event_commands(
        command("events", "business events: send one to the tenant's waiting runs and triggers")
    )

    _add_definitions_commands(
        command(
            "definitions",
            "the definition registry: register, list, show, diff, activate, rollback, deactivate, archive",
        )
    )
    _add_dead_letter_commands(command("dead-letters", "parked steps: list, show, redrive, skip, abort"))
    _add_schedule_commands(
        command(
            "schedules",
            "schedule triggers as Temporal Schedules: list, pause, unpause, trigger, backfill, sync",
        )
    )
    db = command("db", "the store's database: apply migrations, the database roles of tenants")
    sub = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "upgrade",
        help="apply the schema migrations (idempotent)",
        description="apply the schema migrations (idempotent)",
    )
    _add_connection_options(p, defaults=False)
    _add_db_role_commands(sub)
    _add_token_commands(command)
    _add_payload_commands(command)
    from gateway.cli import add_commands as add_gateway_commands

    add_gateway_commands(command, _add_connection_options)
    _add_task_commands(command)
    return parser


def _add_task_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``wfa task complete`` (a human task)."""
    task = command("task", "human tasks: complete one")
    sub = task.add_subparsers(dest="action", metavar="ACTION", required=True)
    text_ = "complete a run's pending human task with its form data"
    p = sub.add_parser("complete", help=text_, description=text_)
    _add_connection_options(p, defaults=False)
    p.add_argument("workflow_id", metavar="ID", help="the run's workflow id")
    p.add_argument("--actor", required=True, type=_name, help="who completes it (the assignee or a member)")
    p.add_argument("--step", metavar="S", help="task step id (needed when several are pending)")
    p.add_argument("--comment", default="", metavar="C", help="free text, recorded")
    p.add_argument("--data", metavar="JSON|@FILE", help="form fields as a JSON object, or @path")
    p.add_argument("--group", action="append", default=[], metavar="G", help="complete as a member of G")
    p.add_argument("--token", metavar="T", help="signed decision token allowing complete, when required")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_payload_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``wfa payloads gc``: delete stored payloads (WFA_PAYLOAD_STORE) no open run needs."""
    payloads = command("payloads", "large payloads stored by reference (WFA_PAYLOAD_STORE): collect garbage")
    sub = payloads.add_subparsers(dest="action", metavar="ACTION", required=True)
    text_ = (
        "delete the namespace's stored payloads that no open run references and that were last stored"
        " longer ago than --older-than (fs: and postgres stores; s3:// uses a bucket lifecycle rule)"
    )
    p = sub.add_parser("gc", help=text_, description=text_)
    _add_connection_options(p, defaults=False)
    p.add_argument(
        "--older-than",
        type=_window,
        metavar="DURATION",
        help="age from which an unreferenced payload is deleted (7d, 720h; at least 1h; default: the"
        " namespace's retention plus 7 days)",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_token_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``wfa keys generate`` and ``wfa token mint`` (decision tokens without an identity provider)."""
    keys = command("keys", "decision token keys: generate a signing key and its public key set")
    sub = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    text_ = "write a new private signing key (JWK) and add its public key to a key set (JWKS) for workers"
    p = sub.add_parser("generate", help=text_, description=text_)
    p.add_argument(
        "--private",
        required=True,
        metavar="FILE",
        type=_path,
        help="the private JWK to write (never overwritten)",
    )
    p.add_argument(
        "--jwks",
        required=True,
        metavar="FILE",
        type=_path,
        help="the public key set: created, or the key added",
    )
    p.add_argument("--kid", metavar="K", help="the key's id (default: generated)")
    p.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="T",
        help="the tenant this key signs for (repeatable); workers refuse its tokens for any other"
        " tenant. Production: one key per tenant. Without: any tenant (a demo's single key)",
    )
    from gateway.cli import add_api_key_commands

    add_api_key_commands(sub, _add_connection_options)
    token = command("token", "decision tokens: mint one for a person (needs the signing key)")
    sub = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    text_ = "print a signed token letting ACTOR take DECISIONS on one run (and step) until it expires"
    p = sub.add_parser("mint", help=text_, description=text_)
    _add_connection_options(p, defaults=False)
    p.add_argument("--run", required=True, metavar="ID", help="the run's workflow id")
    p.add_argument("--step", metavar="S", help="the approval step id or path (for approve and reject)")
    p.add_argument("--actor", required=True, type=_name, help="who decides (one of the step's approvers)")
    p.add_argument(
        "--decisions",
        required=True,
        metavar="LIST",
        help="comma-separated: approve, reject, cancel, complete",
    )
    p.add_argument("--ttl", default="1h", metavar="DURATION", help="how long it is valid (default 1h)")
    p.add_argument(
        "--signing-key", metavar="FILE", type=_path, help="private JWK (default $WFA_DECISION_SIGNING_KEY)"
    )


def _add_db_role_commands(sub: Any) -> None:
    """``wfa db grant-tenant | grant-platform | revoke-tenant | roles`` (row-level security)."""
    password = "read the role's password from this environment variable (never from the command line)"
    text_ = "make ROLE the database login of TENANT's services: it sees and writes only TENANT's rows"
    p = sub.add_parser("grant-tenant", help=text_, description=text_)
    p.add_argument("grant_tenant", metavar="TENANT")
    p.add_argument("--role", required=True, help="the login (created when missing)")
    p.add_argument("--password-env", metavar="VAR", help=password)
    _add_connection_options(p, defaults=False)
    text_ = "make ROLE a platform login (member of wfa_platform): it sees every tenant (the worker)"
    p = sub.add_parser("grant-platform", help=text_, description=text_)
    p.add_argument("--role", required=True, help="the login (created when missing)")
    p.add_argument("--password-env", metavar="VAR", help=password)
    _add_connection_options(p, defaults=False)
    text_ = "take ROLE's tenant away (the login is kept, it sees nothing)"
    p = sub.add_parser("revoke-tenant", help=text_, description=text_)
    p.add_argument("--role", required=True)
    _add_connection_options(p, defaults=False)
    text_ = "list the tenants' database roles (all for the platform, its own for a tenant's role)"
    p = sub.add_parser("roles", help=text_, description=text_)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_connection_options(p, defaults=False)


def _subcommands(parser: argparse.ArgumentParser) -> Callable[[str, str], argparse.ArgumentParser]:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_connection_options(p, defaults=False)
        return p

    return action


def _add_actor(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--actor",
        default=None,
        type=_name,
        help=f"who {what} (recorded; default env WFA_ACTOR or the login name)",
    )


def _add_definitions_commands(parser: argparse.ArgumentParser) -> None:
    action = _subcommands(parser)
    p = action("register", "validate a definition file and store it as its name's next version")
    p.add_argument(
        "file",
        metavar="FILE",
        type=_path,
        help="definition JSON file (its 'version' is ignored: the registry numbers versions)",
    )
    p.add_argument("--author", required=True, type=_name, help="who registers it (recorded)")
    p.add_argument(
        "--activate", action="store_true", help="make it the active version (the first version always is)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("list", "list the names with their active version, or the versions of one name")
    p.add_argument("name", metavar="NAME", nargs="?", help="list this name's versions")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("show", "show a stored version and its body")
    p.add_argument("ref", metavar="REF", help="NAME (the active version) or NAME@VERSION")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("diff", "unified diff of two versions")
    p.add_argument("name", metavar="NAME")
    p.add_argument("v1", metavar="V1", type=_version)
    p.add_argument("v2", metavar="V2", type=_version)

    p = action("activate", "make a version the active one (runs already going keep theirs)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="V", type=_version)
    _add_actor(p, "activates it")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("rollback", "activate the version that was active before the current one")
    p.add_argument("name", metavar="NAME")
    _add_actor(p, "rolls back")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action(
        "deactivate",
        "leave a name without an active version: its triggers stop, starts by name are refused"
        " (activate or rollback brings one back)",
    )
    p.add_argument("name", metavar="NAME")
    _add_actor(p, "deactivates it")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("archive", "archive a version: it can no longer be activated or started")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="V", type=_version)
    _add_actor(p, "archives it")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_event_commands(parser: argparse.ArgumentParser) -> None:
    action = _subcommands(parser)
    p = action(
        "send",
        "publish an event: runs waiting on its type and key resume, cancel_on matches cancel,"
        " event triggers start a run; the same --id again delivers and starts nothing new",
    )
    p.add_argument("type", metavar="TYPE", help="event type, e.g. family.answered")
    p.add_argument("key", metavar="KEY", help="correlation key, e.g. the family's id")
    p.add_argument("--data", metavar="JSON|@FILE", help="event data: a JSON object, or @path")
    p.add_argument(
        "--id", dest="event_id", metavar="ID", help="event id (default a new UUID): idempotency key"
    )
    p.add_argument("--source", default="cli", metavar="S", help="who publishes (recorded; default cli)")
    p.add_argument(
        "--no-triggers", action="store_true", help="deliver to waiting runs only (no registry needed)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_schedule_commands(parser: argparse.ArgumentParser) -> None:
    action = _subcommands(parser)
    ref_help = "DEFINITION (its only schedule), DEFINITION:TRIGGER, or the schedule id"
    p = action("list", "the schedule triggers of the active versions and their Temporal Schedules")
    p.add_argument("definition", metavar="DEFINITION", nargs="?", help="only this definition's")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for name, text_ in (
        ("pause", "pause a schedule: no fires until it is unpaused (a new active version keeps it paused)"),
        ("unpause", "unpause a schedule"),
    ):
        p = action(name, text_)
        p.add_argument("schedule", metavar="SCHEDULE", help=ref_help)
        p.add_argument("--note", default="", metavar="TEXT", help="why (shown in the Web UI)")
    p = action("trigger", "start one run of a schedule now (its overlap policy applies)")
    p.add_argument("schedule", metavar="SCHEDULE", help=ref_help)
    p = action("backfill", "run now the fires a schedule would have made between two times")
    p.add_argument("schedule", metavar="SCHEDULE", help=ref_help)
    p.add_argument(
        "--start", required=True, type=_moment, metavar="TIME", help="ISO 8601 with offset (exclusive)"
    )
    p.add_argument("--end", required=True, type=_moment, metavar="TIME", help="ISO 8601 with offset")
    p = action(
        "sync",
        "write the Temporal Schedules from the registry's active versions, delete the others (idempotent)",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="only this definition (default: every one)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


_DATE_WITH_OFFSET = re.compile(r"(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:?\d{2})", re.ASCII)


def _moment(text: str) -> datetime:
    stripped = text.strip()
    # A date with an offset is its midnight there: Python reads "2020-01-01Z" as a date without
    # one, and "2020-01-01+05:00" as 05:00 without one (a probe: refused as having no offset).
    dated = _DATE_WITH_OFFSET.fullmatch(stripped)
    if dated is not None:
        stripped = f"{dated.group(1)}T00:00{dated.group(2)}"
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {brief(text)}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time with its offset (e.g. Z or +01:00): {brief(text)}")
    return moment


def _add_dead_letter_commands(parser: argparse.ArgumentParser) -> None:
    action = _subcommands(parser)
    p = action("list", "list dead letters (open ones by default)")
    p.add_argument(
        "--status",
        default="open",
        choices=["open", "redriven", "skipped", "aborted", "timed_out", "cancelled", "all"],
        help="only this status (default open)",
    )
    p.add_argument("--run", metavar="ID", help="only this run's (workflow id)")
    p.add_argument("--limit", type=_limit, default=100, metavar="N", help="at most N (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("show", "show a dead letter: the step, its input, the error, the decision")
    p.add_argument("id", metavar="ID", type=_dead_letter_id)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("redrive", "run the parked step again in the same run")
    p.add_argument("id", metavar="ID", type=_dead_letter_id)
    p.add_argument(
        "--input",
        metavar="JSON|@FILE",
        help="corrections to the step's recorded input (a JSON object): its top-level keys replace those"
        " of the recorded input, the others are kept",
    )
    p.add_argument(
        "--replace-input",
        action="store_true",
        help="with --input: run the step with exactly this input instead of merging it",
    )
    _add_actor(p, "decides")
    p.add_argument("--reason", default="", metavar="R", help="why (recorded)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("skip", "go on as if the parked step had succeeded with OUTPUT")
    p.add_argument("id", metavar="ID", type=_dead_letter_id)
    p.add_argument("--output", required=True, metavar="JSON|@FILE", help="the step's output (any JSON value)")
    _add_actor(p, "decides")
    p.add_argument("--reason", default="", metavar="R", help="why (recorded)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("abort", "fail the run at the parked step (its compensations run)")
    p.add_argument("id", metavar="ID", type=_dead_letter_id)
    _add_actor(p, "decides")
    p.add_argument("--reason", default="", metavar="R", help="why (recorded)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("bulk", "decide many open dead letters at once, by filter: counts them and asks first")
    p.add_argument("decision", choices=["redrive", "skip", "abort"], help="what to do with each")
    # An empty filter matched nothing and was reported as "all open dead letters" (a probe).
    p.add_argument("--definition", type=_filter, metavar="NAME", help="only this definition's")
    p.add_argument("--step", type=_filter, metavar="S", help="only this step's (id or path)")
    p.add_argument(
        "--error-type", type=_filter, metavar="T", help="only those that failed with this error type"
    )
    p.add_argument("--older-than", type=_window, metavar="DUR", help="only those parked longer ago than DUR")
    p.add_argument("--output", metavar="JSON|@FILE", help="with skip: the output each skipped step gets")
    _add_actor(p, "decides")
    p.add_argument("--reason", default="", metavar="R", help="why (recorded)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="only count and list what would be decided")


def _filter(text: str) -> str:
    """A filter's value: not blank, and text the database takes."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or blank (leave the filter out to match all)")
    problem = text_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"has {problem}")
    return text


def _whole_number(text: str, what: str, low: int, high: int) -> int:
    # Range-checked here: a number the database column cannot hold must not reach the driver.
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:  # not "²" nor "٣"
        raise argparse.ArgumentTypeError(f"not {what}: {brief(text)} (a whole number from {low} to {high})")
    value = int(digits)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} must be from {low} to {high}, not {brief(text)}")
    return value


def _version(text: str) -> int:
    return _whole_number(text, "a version number", 1, MAX_VERSION)


def _dead_letter_id(text: str) -> int:
    return _whole_number(text, "a dead letter id", 1, MAX_DEAD_LETTER_ID)


def _limit(text: str) -> int:
    return _whole_number(text, "a limit", 1, MAX_LIST_LIMIT)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {brief(text)}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"seconds must be from 0 to {MAX_TIMEOUT_S:g}, not {brief(text)}")
    return value


def _window(text: str) -> timedelta:
    """A duration option (``7d``, ``12h``, ``PT30M``), at least a second and at most ten years."""
    from interpreter.durations import DurationError, DurationTooLargeError, parse_duration

    try:
        value = parse_duration(text)
    except DurationTooLargeError:  # the parser's own bound is ten times this option's
        raise argparse.ArgumentTypeError(f"must be from 1s to 3650d, not {brief(text)}") from None
    except DurationError as err:
        raise argparse.ArgumentTypeError(f"not a duration: {brief(text)} ({err})") from None
    if not timedelta(seconds=1) <= value <= timedelta(days=3650):
        raise argparse.ArgumentTypeError(f"must be from 1s to 3650d, not {brief(text)}")
    return value


def _detail_limit(text: str) -> int:
    return _whole_number(text, "a number of runs", 0, 1000)


def _name(text: str) -> str:
    """An actor or author: recorded in the store, so non-empty and at most 200 characters."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty name (it is recorded)")
    if len(text) > MAX_ACTOR_LENGTH:
        raise argparse.ArgumentTypeError(f"is longer than {MAX_ACTOR_LENGTH} characters: {brief(text)}")
    return text


def _json_object(text: str | None, option: str) -> dict[str, Any]:
    """Parses ``--input``/``--data``: inline JSON or ``@path``; must be a JSON object."""
    if text is None:
        return {}
    value = _json_value(text, option)
    if not isinstance(value, dict):
        source = f"{option} file {text[1:]}" if text.startswith("@") else option
        raise UsageError(f"{source} must be a JSON object, not {type(value).__name__}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {brief(text)} is too large")
    return value


def _json_value(text: str, option: str) -> Any:
    """Parses an option's inline JSON or ``@path`` (any JSON value the server and store can keep)."""
    source = f"{option}"
    if text.startswith("@"):
        if not text[1:].strip():  # Path("") is the current folder: "cannot read .: Is a directory"
            raise UsageError(f"{option}: @ needs a file name (@FILE)")
        path = Path(text[1:])
        source = f"{option} file {path}"
        try:
            text = read_text_file(path)
        except FileNotFoundError:
            raise UsageError(f"{option}: file not found: {path}") from None
        except OSError as err:
            raise UsageError(f"{option}: cannot read {path}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise UsageError(f"{option}: cannot read {path}: not UTF-8 text ({err.reason})") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, an integer of over 4300 digits
        raise UsageError(f"{source} is not valid JSON: {err}") from None
    except RecursionError:
        raise UsageError(f"{source} is nested too deeply") from None
    check_json(value, source)
    return value


# ---------------------------------------------------------------------------------------- output


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, sort_keys=False, default=str), file=out)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    from interpreter.durations import format_duration

    return format_duration(timedelta(seconds=round(seconds)))


def _elapsed(started: datetime) -> str:
    """Time since a step that is still going started (by this machine's clock), marked with "…"."""
    return _duration(max((datetime.now(UTC) - started).total_seconds(), 0.0)) + "…"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _clip(text: str, width: int = _ERROR_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(value: Any, width: int = 300) -> str:
    return _clip(json.dumps(value, sort_keys=True, default=str), width)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, indent: str = "  ") -> None:
    # Cells as they are shown (a raw client's id may hold controls, a newline too), so columns align.
    rows = [[_CELL_UNSHOWN.sub(_escape_char, cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    numeric = {"ATTEMPTS", "DURATION"}

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if header in numeric else cell.ljust(width)
            for cell, width, header in zip(cells, widths, headers, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    print(line(headers), file=out)
    for row in rows:
        print(line(row), file=out)


def _steps_table(steps: Sequence[StepRecord], out: TextIO) -> None:
    if not steps:
        print("  (no steps yet)", file=out)
        return
    rows = [
        [
            s.path,
            s.type,
            str(s.status),
            str(s.attempts) if s.type == "task" else "",
            _duration(s.duration_s) if s.finished_at else _elapsed(s.started_at),
            _clip(f"{s.error_type}: {s.error}" if s.error_type and s.error else (s.error or "")),
        ]
        for s in steps
    ]
    _table(["STEP", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "ERROR"], rows, out)


def _fields(pairs: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(_KEY_WIDTH, *(len(k) for k, _ in pairs))  # same column in every command's output
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}", file=out)


def print_status(workflow_id: str, status: RunStatus, out: TextIO) -> None:
    """Prints a run's status for people."""
    pairs = [
        ("Run", workflow_id),
        ("Definition", f"{status.definition} v{status.version}"),
        ("State", str(status.state)),
        ("Current", ", ".join(status.current_steps) or "-"),
    ]
    if status.error:
        pairs.append(("Error", f"{status.error_type}: {status.error}" if status.error_type else status.error))
    if status.cancelled_by is not None:
        pairs.append(
            ("Cancelled by", f"{status.cancelled_by.actor} ({status.cancelled_by.reason or 'no reason'})")
        )
    from interpreter.inert import as_text
    from interpreter.state import FINAL_STATES

    # Data as it was written, not in the escape the run keeps a `${secret:` of data in (`--json`
    # shows what the run holds); nothing is resolved.
    if status.state in FINAL_STATES and status.output is not None:
        pairs.append(("Output", _compact(as_text(status.output))))
    _fields(pairs, out)
    print("\nSteps", file=out)
    _steps_table(status.steps, out)
    if status.pending_approvals or status.pending_approvals_dropped:
        print("\nPending approvals", file=out)
        for approval in status.pending_approvals:
            print(f"  {approval.path}: approvers {', '.join(approval.approvers)}", file=out)
            details = [
                ("message", _clip(as_text(approval.message), 200) if approval.message else ""),
                ("form fields", ", ".join(approval.fields or [])),
                ("waiting since", _when(approval.since)),
                ("deadline", _when(approval.deadline) if approval.deadline else ""),
                ("escalations", str(approval.escalations) if approval.escalations else ""),
            ]
            for label, value in details:
                if value:
                    print(f"    {label:<14}{value}", file=out)
        if status.pending_approvals_dropped:
            print(
                f"  … and {status.pending_approvals_dropped} more, not listed (too many for one answer)",
                file=out,
            )
        print(f"  decide with: wfa approve {workflow_id} --actor NAME  (or reject)", file=out)
    if status.waiting_events:
        print("\nWaiting for events", file=out)
        for waiting in status.waiting_events:
            deadline = f", deadline {_when(waiting.deadline)}" if waiting.deadline else ""
            print(
                f"  {waiting.path}: {waiting.event} with key {_clip(waiting.key, 100)}"
                f" since {_when(waiting.since)}{deadline}",
                file=out,
            )
        print("  send with: wfa events send TYPE KEY --data JSON", file=out)
    if status.decisions:
        older = f" ({status.decisions_dropped} older ones not kept)" if status.decisions_dropped else ""
        print(f"\nDecisions{older}", file=out)
        for d in status.decisions:
            verdict = "accepted" if d.accepted else f"REFUSED: {d.refusal}"
            step = f" at {d.step_id}" if d.step_id else ""
            reason = f" ({d.reason})" if d.reason else ""
            print(f"  {_when(d.at)}  {d.decision} by {d.actor}{step}{reason}: {verdict}", file=out)
    if status.refused_messages:
        older = (
            f" ({status.refused_messages_dropped} older not kept)" if status.refused_messages_dropped else ""
        )
        print(f"\nRefused messages{older}", file=out)
        for m in status.refused_messages:
            sender = f" from {m.actor}" if m.actor else ""
            print(f"  {_when(m.at)}  {m.name}{sender}: {m.reason}", file=out)
    if status.vars:
        print(f"\nVars  {_compact(status.vars)}", file=out)
    if status.left_out:
        print(
            f"\nLeft out of this answer (too large for Temporal's payload limit): {', '.join(status.left_out)}",
            file=out,
        )


def print_result(workflow_id: str, result: RunResult, out: TextIO) -> None:
    """Prints how a run ended, for people."""
    pairs = [("Run", workflow_id), ("State", str(result.state))]
    if result.error:
        pairs.append(("Error", f"{result.error_type}: {result.error}" if result.error_type else result.error))
    if result.output is not None:
        pairs.append(("Output", _compact(result.output, 1000)))
    _fields(pairs, out)
    if result.steps:
        print("\nSteps", file=out)
        _steps_table(result.steps, out)


def _count_steps(steps: Sequence[Any]) -> int:
    from interpreter.model import children

    total = 0
    for step in steps:
        total += 1
        for _suffix, nested, _boundary in children(step):
            total += _count_steps(nested)
    return total


def _result_exit(result: RunResult) -> int:
    return EXIT_OK if result.state == "completed" else EXIT_RUN_FAILED


# -------------------------------------------------------------------------------------- commands


async def _validate(args: argparse.Namespace, out: TextIO) -> int:
    from activities.input_check import schedule_input_problems
    from interpreter.validate import DefinitionError, definition_hash
    from starter.definitions import load

    try:
        definition = load(Path(args.file))
        fixed = await schedule_input_problems(definition)  # in a separate process, with a deadline
        if fixed:
            raise DefinitionError(fixed, definition.name)
    except (DefinitionError, DefinitionFileNotFoundError) as err:
        if not args.json:
            raise
        problems = (
            [{"path": problem.path, "message": problem.message} for problem in err.problems]
            if isinstance(err, DefinitionError)
            else [{"path": "$", "message": str(err)}]
        )
        _print_json({"valid": False, "file": args.file, "problems": problems}, out)
        return EXIT_BAD_INPUT
    if args.json:
        _print_json(
            {
                "valid": True,
                "file": args.file,
                "name": definition.name,
                "version": definition.version,
                "hash": definition_hash(definition),
                "steps": _count_steps(definition.steps),
            },
            out,
        )
    else:
        print(
            f"{args.file}: valid — {definition.name} v{definition.version},"
            f" {_count_steps(definition.steps)} steps",
            file=out,
        )
    return EXIT_OK


_OPEN_CLIENTS: list[FlowClient] = []
"""Clients a command connected (their store connections are closed when the command ends)."""


_PROCESS = {"owned": False}
"""Whether ``wfa`` owns this process (:func:`main` without arguments, the console script)."""

_INTERRUPTED: dict[str, str] = {}
"""What a Ctrl-C says in a process ``wfa`` owns: the command (``label``), the run it named
(``named``) and the run it started (``started``)."""


def _interrupt_hint(started: str | None, named: str | None) -> str:
    """What an interruption adds about the run: the one the command started, or the one it named."""
    if started:
        return f"; the run goes on (wfa status {started})"
    if named:
        return f"; a run it named is not stopped by this (wfa status {named})"
    return ""


def _on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C in a process ``wfa`` owns: says so, naming the run, and leaves at once (exit 130).
    Nothing needs cleaning up (see :func:`main`), and cleaning up is what could hang: asyncio's
    shutdown waits for every cancelled task, a second Ctrl-C in it printed a traceback (a probe), a
    busy machine left it waiting for good (a CI run)."""
    del signum, frame
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hint = _interrupt_hint(_INTERRUPTED.get("started"), _INTERRUPTED.get("named"))
    with contextlib.suppress(OSError, ValueError):
        print(
            f"wfa {_INTERRUPTED.get('label', '')}".rstrip() + f": interrupted{hint}", file=_shown(sys.stderr)
        )
    _flush_and_exit(EXIT_INTERRUPTED)


class _CoreLogLines(logging.Handler):
    """Writes the SDK core's log lines to this process's stderr as ``wfa: Temporal SDK ...``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:  # (a closed stderr, ``2>&-``, is written nowhere by _shown, not to stdout)
            print(
                f"wfa: Temporal SDK {record.levelname.lower()}: {record.getMessage()}",
                file=_shown(sys.stderr),
            )
        except Exception:
            self.handleError(record)


@functools.cache
def _core_logs_on_stderr() -> None:
    """Sends the SDK core's own log lines (a warning that a payload is large, ``TMPRL1103``) to
    stderr through Python logging. By default the core writes them to stdout, with terminal colour
    codes, in the middle of ``--json`` output. Once per process, before the first client."""
    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logger = logging.getLogger("wfa.temporal_sdk")
    logger.propagate = False
    logger.addHandler(_CoreLogLines())
    logger.setLevel(logging.WARNING)
    forwarding = LogForwardingConfig(
        logger=logger, append_target_to_name=False, prepend_target_on_message=False
    )
    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forwarding
    )
    Runtime.set_default(
        Runtime(telemetry=TelemetryConfig(logging=logging_config)), error_if_already_set=False
    )


MIN_CONNECT_S = 10.0
"""The least time ``--timeout`` leaves for connecting to the server: a distant server, or TLS with
an API key, may take a few seconds, and ``--timeout 0`` (look once) must still reach it."""


async def _connect(args: argparse.Namespace) -> FlowClient:
    from starter.client import FlowClient

    if _PROCESS["owned"]:  # (not in a test or an embedding: the default runtime is theirs)
        _core_logs_on_stderr()
    # ``--timeout`` bounds connecting too: a server that accepts and never answers held the
    # command for the SDK's own 30 s (found by a probe). At least MIN_CONNECT_S.
    timeout = getattr(args, "timeout", None)
    if args.command == "start" and not getattr(args, "wait", False):
        timeout = None  # start's --timeout bounds its --wait only
    bound = None if timeout is None else max(timeout, MIN_CONNECT_S)
    try:
        async with asyncio.timeout(bound):
            flows = await FlowClient.connect(
                args.address,
                args.namespace,
                args.task_queue,
                database_url=getattr(args, "database_url", None),
                tenant=getattr(args, "tenant", None),
                profile=getattr(args, "profile", None),
                config_file=getattr(args, "config_file", None),
            )
    except TimeoutError:
        if bound is None:  # not this bound's (the SDK raised it)
            raise
        from starter.connection import connect_options

        target = connect_options(
            tenant=getattr(args, "tenant", None),
            namespace=args.namespace,
            profile=getattr(args, "profile", None),
            config_file=getattr(args, "config_file", None),
            address=args.address,
        )["target_host"]
        from starter.errors import ServerUnavailableError

        raise ServerUnavailableError(
            f"cannot reach the Temporal server at {target} within {bound:g} s"
            f" (--timeout {timeout:g}; connecting is given at least {MIN_CONNECT_S:g} s)",
            target,
        ) from None
    _OPEN_CLIENTS.append(flows)
    return flows


@contextlib.asynccontextmanager
async def _database(args: argparse.Namespace) -> AsyncIterator[Database]:
    from activities.store.database import open_database

    database = await open_database(args.database_url or None)
    try:
        yield database
    finally:
        await database.close()


async def _start(args: argparse.Namespace, out: TextIO) -> int:
    from activities.store.repository import parse_ref
    from interpreter.state import ResultSteps
    from starter.client import is_registry_ref
    from starter.definitions import load

    reference = is_registry_ref(args.file)
    # Before connecting: a bad file or a malformed reference is exit 2 without a server.
    definition: Definition | None = None
    name: str | None = None
    pinned: int | None = None
    if reference:
        name, pinned = parse_ref(args.file)
    else:
        definition = load(Path(args.file))
    run_input = _json_object(args.input, "--input")
    if args.outputs is not None and not args.dry_run:
        raise UsageError("--outputs applies to dry runs only (add --dry-run)")
    if args.timeout is not None and not args.wait:  # (was ignored: a probe)
        raise UsageError("--timeout bounds --wait only (add --wait)")
    if args.dry_run and args.result_steps == ResultSteps.NONE:
        raise UsageError("--result-steps none leaves out the step records a dry run reports its path from")
    canned = _json_object(f"@{args.outputs}", "--outputs") if args.outputs is not None else None
    # A dry run reports the path its steps took: their records, whatever $WFA_RESULT_STEPS says.
    result_steps = args.result_steps or (ResultSteps.FULL if args.dry_run else None)
    flows = await _connect(args)
    run: RunHandle = await flows.start_run(
        args.file if definition is None else definition,
        run_input,
        workflow_id=args.id,
        dry_run=args.dry_run,
        canned_outputs=canned,
        result_steps=None if result_steps is None else ResultSteps(result_steps),
    )
    args.started = _INTERRUPTED["started"] = run.workflow_id  # what a Ctrl-C names (--json lost it: a probe)
    summary = {
        "workflow_id": run.workflow_id,
        "run_id": run.run_id,
        "started": run.started,
        "definition": run.definition,
        "version": run.version,
        "hash": run.definition_hash,
        "task_queue": flows.task_queue,
    }
    if args.dry_run:
        summary["dry_run"] = True
    try:
        code = await _report_start(
            args, out, flows, run, summary=summary, definition=definition, name=name, pinned=pinned
        )
        out.flush()
    except OSError as err:  # stdout full or gone: the run is started, its id must not be lost
        raise OutputUnwritableError(
            f"started {run.workflow_id} (run id {run.run_id}), but could not write to standard"
            f" output: {err.strerror or err}"
        ) from None
    return code


class OutputUnwritableError(Exception):
    """A run was started but standard output could not be written (exit 3); the message holds the
    run's ids (found by a probe: ``wfa start > /dev/full`` started a run whose generated id was
    printed nowhere, and exited 70, "a bug")."""


async def _report_start(
    args: argparse.Namespace,
    out: TextIO,
    flows: FlowClient,
    run: RunHandle,
    *,
    summary: dict[str, Any],
    definition: Definition | None,
    name: str | None,
    pinned: int | None,
) -> int:
    """What ``wfa start`` prints once the run is started (and, with ``--wait``, its result)."""
    from interpreter.validate import definition_hash

    if not args.json:
        if run.started:
            print(
                f"Started {'a DRY RUN ' if args.dry_run else ''}{run.workflow_id} ({run.definition}"
                f" v{run.version}, task queue {flows.task_queue})",
                file=out,
            )
        else:
            print(
                f"{run.workflow_id} is already running: returned the existing run, started no duplicate",
                file=out,
            )
            if definition is not None and run.definition_hash != definition_hash(definition):
                print(
                    f"  note: it runs {run.definition} v{run.version} (hash {run.definition_hash[:12]}),"
                    f" not the {definition.name} v{definition.version} in {args.file}",
                    file=out,
                )
            elif definition is None and (run.definition != name or pinned not in (None, run.version)):
                print(f"  note: it runs {run.definition} v{run.version}, not {args.file}", file=out)
    if not args.wait:
        if args.json:
            _print_json(summary, out)
        else:
            print(f"  wfa status {run.workflow_id}    wfa result {run.workflow_id}", file=out)
        out.flush()
        return EXIT_OK
    result = await _result_watching(flows, run.workflow_id, args.timeout)
    path_taken = [step.path for step in result.steps if step.status != "skipped"]
    if args.json:
        extra = {"path": path_taken} if args.dry_run else {}
        _print_json({**summary, **extra, "result": result.model_dump(mode="json")}, out)
    else:
        print(file=out)
        print_result(run.workflow_id, result, out)
        if args.dry_run:
            print(f"DRY RUN: no action ran. Path taken: {' -> '.join(path_taken) or '(no step)'}", file=out)
    return _result_exit(result)


async def _decide(args: argparse.Namespace, out: TextIO) -> int:
    data = _json_object(args.data, "--data")
    flows = await _connect(args)
    decide = flows.approve if args.command == "approve" else flows.reject
    record = await decide(
        args.workflow_id,
        args.actor,
        step_id=args.step,
        reason=args.reason,
        data=data,
        wait=not args.no_wait,
        token=args.token,
    )
    if args.json:
        _print_json(
            record.model_dump(mode="json")
            if record
            else {"sent": args.command, "workflow_id": args.workflow_id},
            out,
        )
    elif record is None:
        print(
            f"{args.command} signal sent to {args.workflow_id} as {args.actor}; if it is not allowed the"
            f" refusal shows in `wfa status {args.workflow_id}`",
            file=out,
        )
    else:
        verb = "Approved" if args.command == "approve" else "Rejected"
        step = f" step {record.step_id} of" if record.step_id else ""
        print(f"{verb}{step} {args.workflow_id} as {record.actor}", file=out)
    return EXIT_OK


async def _cancel(args: argparse.Namespace, out: TextIO) -> int:
    flows = await _connect(args)
    await flows.cancel(args.workflow_id, args.actor, args.reason, token=args.token)
    print(
        f"Cancel requested for {args.workflow_id} by {args.actor}; compensations run before it ends"
        f" (wfa result {args.workflow_id} waits for that)",
        file=out,
    )
    return EXIT_OK


async def _task(args: argparse.Namespace, out: TextIO) -> int:
    data = _json_object(args.data, "--data")
    flows = await _connect(args)
    record = await flows.complete_task(
        args.workflow_id,
        args.actor,
        step_id=args.step,
        comment=args.comment,
        data=data,
        token=args.token,
        groups=args.group,
    )
    if args.json:
        _print_json(record.model_dump(mode="json"), out)
    else:
        step = f" step {record.step_id} of" if record.step_id else ""
        print(f"Completed{step} {args.workflow_id} as {record.actor}", file=out)
    return EXIT_OK


async def _token(args: argparse.Namespace, out: TextIO) -> int:
    from interpreter.durations import parse_duration
    from starter import tokens

    try:
        ttl = parse_duration(args.ttl).total_seconds()
    except ValueError as err:
        raise InvalidInputError(f"--ttl: {err}") from None
    decisions = [d.strip() for d in args.decisions.split(",") if d.strip()]
    tokens.check_request(decisions, args.step, ttl)  # bad arguments are named before connecting
    tokens.load_signing_key(args.signing_key)
    flows = await _connect(args)
    token = await flows.mint_decision_token(
        args.run, args.actor, decisions, step_id=args.step, ttl_s=ttl, signing_key=args.signing_key
    )
    print(token, file=out)
    return EXIT_OK


def _keys(args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "api":  # the gateway's API keys (in the store)
        from gateway.cli import api_keys

        return asyncio.run(api_keys(args, out, UsageError))
    from starter import tokens

    kid = tokens.write_keys(args.private, args.jwks, args.kid, tenants=args.tenant)
    print(
        f"Key {kid}: private signing key in {args.private} (keep it secret: WFA_DECISION_SIGNING_KEY),"
        f" public key added to {args.jwks} (the workers' WFA_DECISION_KEYS)",
        file=out,
    )
    return EXIT_OK


async def _status(args: argparse.Namespace, out: TextIO) -> int:
    flows = await _connect(args)
    status = await flows.status(args.workflow_id)
    if args.json:
        _print_json(status.model_dump(mode="json"), out)
    else:
        print_status(args.workflow_id, status, out)
    return EXIT_OK


WATCH_INTERVAL_S = 1.0
"""How soon ``result`` and ``start --wait`` look at what a waiting run waits on, and again after
each change; while nothing changes the interval doubles up to :data:`WATCH_MAX_INTERVAL_S` (a run
may wait for days: its server is not asked every second meanwhile)."""

WATCH_MAX_INTERVAL_S = 10.0


async def _result_watching(flows: FlowClient, workflow_id: str, timeout: float | None) -> RunResult:
    """The run's result; meanwhile, each change in what it waits on is printed to stderr."""
    watcher = asyncio.create_task(_watch(flows, workflow_id, _shown(sys.stderr)))
    try:
        return await flows.result(workflow_id, timeout=timeout)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _watch(flows: FlowClient, workflow_id: str, err_out: TextIO) -> None:
    shown: set[str] = set()
    timers: dict[tuple[str, ...], list[str]] = {}
    interval = WATCH_INTERVAL_S
    while True:
        await asyncio.sleep(interval)
        interval = min(interval * 2, WATCH_MAX_INTERVAL_S)
        try:
            lines = await waiting_on(flows, workflow_id, timers)
        except Exception:  # a courtesy: the result, awaited beside it, reports the errors that matter
            continue
        for line in lines:
            if line not in shown:
                print(f"wfa: {workflow_id}: {line}", file=err_out, flush=True)
        if set(lines) != shown:
            interval = WATCH_INTERVAL_S
        shown = set(lines)


async def waiting_on(
    flows: FlowClient, workflow_id: str, timers: dict[tuple[str, ...], list[str]] | None = None
) -> list[str]:
    """What a run waits on now, one line each: approvals, parked dead letters, retrying steps, timers.

    Args:
        flows: The client.
        workflow_id: The run.
        timers: A cache of the timer lines per set of running delay steps: the run's history is
            read again only when that set changes.
    """
    status = await flows.status(workflow_id)
    lines = []
    for approval in await flows.every_pending_approval(workflow_id, status):
        deadline = f", deadline {_when(approval.deadline)}" if approval.deadline else ""
        lines.append(
            f"waiting for approval at {approval.path} from {', '.join(approval.approvers)}{deadline}"
            f" (wfa approve {workflow_id} --actor NAME)"
        )
    for waiting in status.waiting_events:
        deadline = f", deadline {_when(waiting.deadline)}" if waiting.deadline else ""
        lines.append(
            f"waiting for event {waiting.event} with key {_clip(waiting.key, 100)} at {waiting.path}{deadline}"
            f" (wfa events send {waiting.event} KEY)"
        )
    for parked in status.parked:
        letter = (
            f"dead letter {parked.dead_letter_id}" if parked.dead_letter_id is not None else "a dead letter"
        )
        lines.append(
            f"parked at {parked.path} as {letter} after {parked.attempts} attempt(s):"
            f" {parked.error_type}: {_clip(parked.error, 200)}"
            + (
                f" (wfa dead-letters show {parked.dead_letter_id})"
                if parked.dead_letter_id is not None
                else ""
            )
        )
    for step in status.steps:
        if step.type == "task" and step.status == "running" and step.error:
            lines.append(
                f"step {step.path} is retrying: attempt {step.attempts},"
                f" last error {step.error_type}: {_clip(step.error, 200)}"
            )
    delays = tuple(
        f"{step.path}@{step.started_at.isoformat()}"
        for step in status.steps
        if step.type == "delay" and step.status in ("running", "waiting")
    )
    if delays:
        cache = {} if timers is None else timers
        if delays not in cache:
            cache.clear()
            cache[delays] = [
                f"timer {timer.summary or '(unnamed)'} until {_when(timer.fires_at)}"
                for timer in await flows.pending_timers(workflow_id)
            ]
        lines.extend(cache[delays])
    return lines


async def _list(args: argparse.Namespace, out: TextIO) -> int:
    flows = await _connect(args)
    runs = await flows.list_runs(
        definition=args.definition,
        version=args.version,
        state=args.state,
        awaiting_approval=True if args.awaiting_approval else None,
        limit=args.limit,
        dry_runs=args.dry_runs,
    )
    if args.json:
        _print_json([run.model_dump(mode="json") for run in runs], out)
    elif not runs:
        print(f"no {'dry ' if args.dry_runs else ''}runs in tenant {flows.tenant!r} match", file=out)
    else:
        rows = [
            [
                run.workflow_id,
                f"{run.definition} v{run.version}" if run.definition else "-",
                run.state
                + (" (approval)" if run.awaiting_approval and run.state != "awaiting_approval" else ""),
                run.current_step or "-",
                _when(run.started_at),
                _when(run.closed_at),
            ]
            for run in runs
        ]
        _table(["RUN", "DEFINITION", "STATE", "WAITING AT", "STARTED", "ENDED"], rows, out, indent="")
    return EXIT_OK


async def _result(args: argparse.Namespace, out: TextIO) -> int:
    flows = await _connect(args)
    result = await _result_watching(flows, args.workflow_id, args.timeout)
    if args.json:
        _print_json(result.model_dump(mode="json"), out)
    else:
        print_result(args.workflow_id, result, out)
    return _result_exit(result)


async def _stats(args: argparse.Namespace, out: TextIO) -> int:
    from starter.operations import print_stats, run_stats

    flows = await _connect(args)
    stats = await run_stats(flows, args.definition, args.since, limit=args.limit, detail_limit=args.details)
    if args.json:
        _print_json(stats.model_dump(mode="json"), out)
    else:
        print_stats(stats, out)
    return EXIT_OK


async def _watch_run(args: argparse.Namespace, out: TextIO) -> int:
    from starter.errors import ResultTimeoutError
    from starter.operations import watch

    flows = await _connect(args)
    try:
        status = await watch(
            flows, args.workflow_id, out, interval=max(args.interval, 0.2), timeout=args.timeout
        )
    except TimeoutError:
        raise ResultTimeoutError(args.workflow_id, args.timeout or 0.0) from None
    return EXIT_OK if status.state == "completed" else EXIT_RUN_FAILED


async def _diagram(args: argparse.Namespace, out: TextIO) -> int:
    from starter.operations import mermaid, run_path

    if args.definition is None and args.run is None:
        raise InvalidInputError("give a definition (FILE or NAME[@VERSION]) or --run ID")
    taken: list[str] = []
    failed: list[str] = []
    definition = None
    ran: str | None = None  # the content hash of the definition the run ran, as it recorded it
    if args.run is not None:
        from workflows.search_attributes import DEFINITION_HASH

        flows = await _connect(args)
        status = await flows.status(args.run)
        taken, failed = run_path(status)
        ran = (await flows.describe(args.run)).typed_search_attributes.get(DEFINITION_HASH)
        if args.definition is None:
            definition = (await flows.resolve(f"{status.definition}@{status.version}")).definition
    if definition is None:
        from starter.client import is_registry_ref

        if is_registry_ref(args.definition) and not await asyncio.to_thread(Path(args.definition).exists):
            flows = await _connect(args)
            definition = (await flows.resolve(args.definition)).definition
        else:
            from starter.definitions import load

            definition = load(Path(args.definition))
    if ran is not None:
        from interpreter.validate import definition_hash

        drawn = definition_hash(definition)
        if drawn != ran:  # its path through another body would be nonsense
            ran_what = f"{status.definition} v{status.version}" if status.definition else "another definition"
            raise InvalidInputError(
                f"run {args.run!r} ran {ran_what} ({ran}), not the {definition.name} v{definition.version}"
                f" to draw ({drawn}): give the definition it ran, as a FILE or NAME@VERSION"
            )
    print(mermaid(definition, taken=taken, failed=failed), end="", file=out)
    return EXIT_OK


# -------------------------------------------------------------------------- definitions registry


def _read_definition(file: str) -> str:
    """A definition file's text, validated (DefinitionError with JSON paths otherwise)."""
    path = Path(file)
    try:
        text = read_text_file(path)
    except FileNotFoundError:
        raise DefinitionFileNotFoundError(file) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    from interpreter.validate import DEFINITION_MAX_DEPTH
    from starter.definitions import parse

    definition = parse(text)
    check_json(definition.model_dump(mode="json"), f"definition {file}", max_depth=DEFINITION_MAX_DEPTH)
    return text


def _actor(args: argparse.Namespace) -> str:
    return args.actor or _default_actor()


def _short_hash(digest: str) -> str:
    return digest[:12]


async def _definitions(args: argparse.Namespace, out: TextIO) -> int:
    from activities.store.repository import DefinitionStore

    if args.action == "register":
        # Read and validate before opening the database: bad input is exit 2 without a server.
        args.document = _read_definition(args.file)
    async with _database(args) as database:
        store = DefinitionStore(database.session_factory, args.tenant)
        handler = _DEFINITION_ACTIONS[args.action]
        return await handler(args, store, out)


async def _definitions_register(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    registration = await store.register(args.document, args.author, activate=args.activate)
    info = registration.info
    if args.json:
        _print_json(registration.model_dump(mode="json"), out)
        if registration.activated:
            await _sync_after(
                args, store, info.name, f"{info.name} v{info.version} is registered and active", out
            )
        return EXIT_OK
    if registration.created:
        print(
            f"Registered {info.name} v{info.version} (hash {_short_hash(info.content_hash)}) by {info.author}",
            file=out,
        )
    else:
        archived = " (archived)" if info.archived_at else ""
        print(
            f"{info.name} v{info.version}{archived} has the same body (hash {_short_hash(info.content_hash)});"
            " nothing stored",
            file=out,
        )
    if registration.activated:
        print(f"  v{info.version} is now the active version of {info.name}", file=out)
        await _sync_after(
            args, store, info.name, f"{info.name} v{info.version} is registered and active", out
        )
    elif registration.active_version != info.version:
        print(
            f"  active version: {_was(registration.active_version)}"
            f" (wfa definitions activate {info.name} {info.version} to use this one)",
            file=out,
        )
    return EXIT_OK


async def _definitions_list(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    if args.name is None:
        names: list[NameSummary] = await store.list_names()
        if args.json:
            _print_json([n.model_dump(mode="json") for n in names], out)
        elif not names:
            print(f"no definitions in tenant {store.tenant!r}", file=out)
        else:
            rows = [
                [
                    n.name,
                    _was(n.active_version) if n.active_version is None else f"v{n.active_version}",
                    f"v{n.latest_version}",
                    str(n.versions),
                    str(n.archived),
                    _when(n.updated_at),
                    n.updated_by,
                ]
                for n in names
            ]
            _table(
                ["NAME", "ACTIVE", "LATEST", "VERSIONS", "ARCHIVED", "CHANGED", "BY"], rows, out, indent=""
            )
        return EXIT_OK
    versions: list[DefinitionInfo] = await store.list_versions(args.name)
    if args.json:
        _print_json([v.model_dump(mode="json") for v in versions], out)
        return EXIT_OK
    rows = [
        [
            f"v{v.version}",
            "active" if v.active else ("archived" if v.archived_at else ""),
            _short_hash(v.content_hash),
            v.author,
            _when(v.created_at),
        ]
        for v in versions
    ]
    _table(["VERSION", "STATE", "HASH", "AUTHOR", "REGISTERED"], rows, out, indent="")
    return EXIT_OK


async def _definitions_show(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    stored = await store.show(args.ref)
    if args.json:
        _print_json(stored.model_dump(mode="json"), out)
        return EXIT_OK
    state = (
        "active"
        if stored.active
        else ("archived " + _when(stored.archived_at) if stored.archived_at else "inactive")
    )
    _fields(
        [
            ("Definition", f"{stored.name} v{stored.version}"),
            ("Tenant", stored.tenant),
            ("State", state),
            ("Hash", stored.content_hash),
            ("Author", stored.author),
            ("Registered", _when(stored.created_at)),
        ],
        out,
    )
    print(file=out)
    from activities.store.repository import pretty

    out.write(pretty({**stored.body, "version": stored.version}))
    return EXIT_OK


async def _definitions_diff(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    diff = await store.diff(args.name, args.v1, args.v2)
    if diff:
        out.write(diff)
    else:
        print(f"no differences between {args.name}@{args.v1} and {args.name}@{args.v2}", file=out)
    return EXIT_OK


async def _definitions_activate(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    result = await store.activate(args.name, args.version, _actor(args))
    if args.json:
        _print_json(result.model_dump(mode="json"), out)
    elif result.changed:
        print(
            f"Activated {result.name} v{result.version} (was {_was(result.previous)}); runs already going keep their version",
            file=out,
        )
    else:
        print(f"{result.name} v{result.version} was already active", file=out)
    await _sync_after(args, store, result.name, f"{result.name} v{result.version} is active", out)
    return EXIT_OK


async def _definitions_rollback(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    result = await store.rollback(args.name, _actor(args))
    done = f"{result.name} is rolled back to v{result.version}"
    if args.json:
        _print_json(result.model_dump(mode="json"), out)
        await _sync_after(args, store, result.name, done, out)
        return EXIT_OK
    skipped = (
        f"; passed over archived {', '.join(f'v{v}' for v in result.skipped_archived)}"
        if result.skipped_archived
        else ""
    )
    print(f"Rolled back {result.name} to v{result.version} (was {_was(result.previous)}){skipped}", file=out)
    await _sync_after(args, store, result.name, done, out)
    return EXIT_OK


async def _definitions_archive(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    info = await store.archive(args.name, args.version, _actor(args))
    if args.json:
        _print_json(info.model_dump(mode="json"), out)
    else:
        print(f"Archived {info.name} v{info.version}: it can no longer be activated or started", file=out)
    await _sync_after(args, store, info.name, f"{info.name} v{info.version} is archived", out)
    return EXIT_OK


def _was(version: int | None) -> str:
    return f"v{version}" if version is not None else "deactivated"


async def _sync_after(
    args: argparse.Namespace, store: DefinitionStore, name: str, done: str, out: TextIO
) -> None:
    """After a registry change: the name's schedules follow its active version. Temporal is only
    contacted when some version of the name declares a schedule."""
    from starter.errors import ScheduleSyncError, ServerUnavailableError
    from starter.schedules import describe_sync

    if not await store.trigger_ids(name, "schedule"):
        return
    try:
        flows = await _connect(args)
    except ServerUnavailableError as err:
        raise ScheduleSyncError(name, done, str(err)) from None
    result = await flows._sync_triggers(name, done)
    if not getattr(args, "json", False):
        for line in describe_sync([result]):
            print(f"  {line}", file=out)


async def _definitions_deactivate(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    result = await store.deactivate(args.name, _actor(args))
    if args.json:
        _print_json(result.model_dump(mode="json") if result is not None else None, out)
    elif result is None:
        print(f"{args.name} was already deactivated", file=out)
    else:
        print(
            f"Deactivated {args.name} (was v{result.previous}): its triggers stop and starts by name are"
            " refused; runs already going keep their version",
            file=out,
        )
    await _sync_after(args, store, args.name, f"{args.name} is deactivated", out)
    return EXIT_OK


_DEFINITION_ACTIONS: dict[
    str, Callable[[argparse.Namespace, DefinitionStore, TextIO], Coroutine[Any, Any, int]]
] = {
    "register": _definitions_register,
    "list": _definitions_list,
    "show": _definitions_show,
    "diff": _definitions_diff,
    "activate": _definitions_activate,
    "rollback": _definitions_rollback,
    "archive": _definitions_archive,
    "deactivate": _definitions_deactivate,
}


# ----------------------------------------------------------------------------------- dead letters


def print_dead_letter(row: DeadLetter, out: TextIO) -> None:
    """Prints one dead letter for people."""
    pairs = [
        ("Dead letter", str(row.id)),
        ("Status", str(row.status)),
        ("Run", f"{row.workflow_id} ({row.run_id})"),
        ("Definition", f"{row.definition} v{row.version}"),
        ("Step", f"{row.path} (action {row.action})"),
        ("Error", f"{row.error_type}: {row.error}"),
        ("Attempts", str(row.attempts)),
        ("Parked", _when(row.parked_at)),
        ("Input", _compact(row.input, 1000)),
    ]
    if row.resolved_by:
        resolution = row.resolution or {}
        pairs.append(("Resolved", f"{row.status} by {row.resolved_by} at {_when(row.resolved_at)}"))
        if resolution.get("reason"):
            pairs.append(("Reason", str(resolution["reason"])))
        if "input" in resolution:
            pairs.append(("New input", _compact(resolution["input"], 1000)))
        if "output" in resolution:
            pairs.append(("Output", _compact(resolution["output"], 1000)))
    _fields(pairs, out)
    if row.status == "open":
        print(
            f"\n  decide with: wfa dead-letters redrive {row.id} [--input JSON] | skip {row.id} --output JSON"
            f" | abort {row.id}",
            file=out,
        )


async def _dead_letters_bulk(args: argparse.Namespace, out: TextIO) -> int:
    """``wfa dead-letters bulk``: the open dead letters a filter selects, counted and listed, then
    (after ``--yes`` or a typed confirmation on a terminal) decided one by one."""
    from activities.store.errors import DeadLetterNotFoundError, DeadLetterResolvedError
    from starter.errors import StarterError
    from starter.operations import DeadLetterFilter, select_dead_letters

    if args.decision == "skip" and args.output is None:
        raise UsageError("bulk skip needs --output (the output each skipped step gets)")
    if args.decision != "skip" and args.output is not None:
        raise UsageError("--output is only for bulk skip")
    output = _json_value(args.output, "--output") if args.output is not None else None
    where = DeadLetterFilter(
        definition=args.definition, step=args.step, error_type=args.error_type, older_than=args.older_than
    )
    flows = await _connect(args)
    rows = select_dead_letters(
        await flows.list_dead_letters("open", limit=MAX_LIST_LIMIT), where, datetime.now(UTC)
    )
    print(f"{len(rows)} open dead letters in tenant {flows.tenant!r} match ({where.describe()})", file=out)
    for row in rows[:20]:
        print(
            f"  {row.id}  {row.workflow_id}  {row.path}  {_clip(f'{row.error_type}: {row.error}', 60)}",
            file=out,
        )
    if len(rows) > 20:
        print(f"  ... and {len(rows) - 20} more", file=out)
    if not rows or args.dry_run:
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{args.decision} {len(rows)} dead letters: confirm with --yes (no terminal to ask)"
            )
        answer = await asyncio.to_thread(
            input, f"{args.decision} these {len(rows)} dead letters? type {len(rows)} to confirm: "
        )
        if answer.strip() != str(len(rows)):
            print("nothing decided", file=out)
            return EXIT_REFUSED
    actor = _actor(args)
    done = 0
    refused: list[str] = []
    for row in rows:
        try:
            if args.decision == "redrive":
                await flows.redrive(row.id, actor, None, reason=args.reason)
            elif args.decision == "skip":
                await flows.skip(row.id, actor, output, reason=args.reason)
            else:
                await flows.abort(row.id, actor, reason=args.reason)
            done += 1
        except (StarterError, DeadLetterResolvedError, DeadLetterNotFoundError) as err:
            # (A row resolved meanwhile, by another operator or its timeout, is one refusal: a
            # review found it ending the whole command, the rows after it never decided.)
            refused.append(f"{row.id}: {err}")
    print(f"{args.decision}: {done} decided, {len(refused)} refused", file=out)
    for line in refused[:20]:
        print(f"  {_clip(line, 200)}", file=out)
    return EXIT_OK if not refused else EXIT_REFUSED


async def _dead_letters(args: argparse.Namespace, out: TextIO) -> int:
    from activities.store.repository import DeadLetterStore

    if args.action in ("list", "show"):
        async with _database(args) as database:
            store = DeadLetterStore(database.session_factory, args.tenant)
            if args.action == "show":
                row = await store.get(args.id)
                if args.json:
                    _print_json(row.model_dump(mode="json"), out)
                else:
                    print_dead_letter(row, out)
                return EXIT_OK
            rows = await store.list(args.status, workflow_id=args.run, limit=args.limit)
        if args.json:
            _print_json([r.model_dump(mode="json") for r in rows], out)
        elif not rows:
            print(
                f"no {'' if args.status == 'all' else args.status + ' '}dead letters in tenant {args.tenant!r}",
                file=out,
            )
        else:
            table = [
                [
                    str(r.id),
                    r.workflow_id,
                    r.path,
                    str(r.status),
                    str(r.attempts),
                    _when(r.parked_at),
                    _clip(f"{r.error_type}: {r.error}", 60),
                ]
                for r in rows
            ]
            _table(["ID", "RUN", "STEP", "STATUS", "ATTEMPTS", "PARKED", "ERROR"], table, out, indent="")
        return EXIT_OK
    if args.action == "bulk":
        return await _dead_letters_bulk(args, out)
    new_input = (
        _json_object(args.input, "--input") if args.action == "redrive" and args.input is not None else None
    )
    if args.action == "redrive" and args.replace_input and new_input is None:
        raise UsageError("--replace-input needs --input")
    output = _json_value(args.output, "--output") if args.action == "skip" else None
    flows = await _connect(args)
    actor = _actor(args)
    if args.action == "redrive":
        parked = await flows.redrive(
            args.id, actor, new_input, reason=args.reason, replace_input=args.replace_input
        )
    elif args.action == "skip":
        parked = await flows.skip(args.id, actor, output, reason=args.reason)
    else:
        parked = await flows.abort(args.id, actor, reason=args.reason)
    if args.json:
        _print_json(
            {
                "dead_letter_id": args.id,
                "action": args.action,
                "actor": actor,
                "step": parked.model_dump(mode="json"),
            },
            out,
        )
    else:
        done = {"redrive": "Redriving", "skip": "Skipped", "abort": "Aborting the run at"}[args.action]
        print(
            f"{done} step {parked.path} (dead letter {args.id}) as {actor}; the run records the decision",
            file=out,
        )
    return EXIT_OK


# ------------------------------------------------------------------------------------------- db


async def _db(args: argparse.Namespace, out: TextIO) -> int:
    from activities.store.database import safe_url, upgrade_database
    from activities.store.embedded import data_dir, start_embedded

    url: str | None = args.database_url or None
    if url is None:
        url = await asyncio.to_thread(start_embedded, None)
        where = f"the embedded server in {data_dir()}"
    else:
        where = safe_url(url)
    if args.action != "upgrade":
        return await _db_roles(args, url, out)
    revision = await upgrade_database(url)
    print(f"Schema of {where} is at revision {revision} (up to date)", file=out)
    return EXIT_OK


async def _db_roles(args: argparse.Namespace, url: str, out: TextIO) -> int:
    from sqlalchemy.engine import make_url

    from activities.store import roles

    secret: str | None = None
    if getattr(args, "password_env", None) is not None:  # '' too: it names no variable
        secret = os.environ.get(args.password_env) if args.password_env else None
        if not secret:
            raise UsageError(f"--password-env {args.password_env!r}: that environment variable is not set")
        problem = text_problem(secret)
        if problem is not None:  # (not UTF-8: an internal error before)
            raise UsageError(f"--password-env {args.password_env}: the password has {problem}")
    if args.action == "grant-tenant":
        grant = await roles.grant_tenant(url, args.grant_tenant, args.role, password=secret)
    elif args.action == "grant-platform":
        grant = await roles.grant_platform(url, args.role, password=secret)
    elif args.action == "revoke-tenant":
        tenant = await roles.revoke_tenant(url, args.role)
        print(
            f"Role {args.role} " + (f"no longer belongs to tenant {tenant}" if tenant else "had no tenant"),
            file=out,
        )
        return EXIT_OK
    else:
        rows = await roles.list_tenant_roles(url)
        if args.json:
            print(json.dumps([row.model_dump(mode="json") for row in rows], indent=2), file=out)
        elif not rows:
            print("no tenant roles (that this login may see)", file=out)
        for row in [] if args.json else rows:
            print(
                f"{row.tenant}\t{row.role}\tgranted by {row.granted_by} at {row.granted_at:%Y-%m-%d %H:%M}",
                file=out,
            )
        return EXIT_OK
    whose = f"tenant {grant.tenant}'s" if grant.tenant else "a platform (every tenant)"
    done = "created" if grant.created else "existing"
    login = make_url(url).set(username=grant.role, password=None).render_as_string(hide_password=True)
    print(
        f"Role {grant.role} ({done}) is {whose} database login; its services connect with {login}", file=out
    )
    return EXIT_OK


async def _events(args: argparse.Namespace, out: TextIO) -> int:
    data = _json_object(args.data, "--data")
    flows = await _connect(args)
    published = await flows.publish_event(
        args.type,
        args.key,
        data,
        event_id=args.event_id,
        source=args.source,
        start_triggers=not args.no_triggers,
    )
    if args.json:
        print(json.dumps(published.model_dump(mode="json"), indent=2), file=out)
        return EXIT_REFUSED if published.refused else EXIT_OK
    if published.duplicate:
        print(f"Event {published.event_id} was published before: nothing delivered again", file=out)
    else:
        print(
            f"Published event {published.event_id} ({published.type}, key {_clip(published.key, 100)});"
            f" resumed {len(published.delivered_to)} waiting run(s)",
            file=out,
        )
    for workflow_id in published.delivered_to:
        print(f"  delivered to {workflow_id}", file=out)
    for workflow_id in published.started:
        print(f"  started {workflow_id}", file=out)
    for workflow_id in published.existing:
        print(f"  already started for this event: {workflow_id}", file=out)
    for workflow_id, reason in published.refused.items():
        print(f"  not started {workflow_id}: {_clip(reason, 500)}", file=out)
    # The event was delivered either way; a trigger's refusal is the publisher's to fix.
    return EXIT_REFUSED if published.refused else EXIT_OK


async def _schedules(args: argparse.Namespace, out: TextIO) -> int:
    from starter.schedules import describe_sync

    flows = await _connect(args)
    if args.action == "list":
        schedules = await flows.list_schedules(args.definition)
        if args.json:
            _print_json([item.model_dump(mode="json") for item in schedules], out)
        elif not schedules:
            print(f"no schedule triggers in the active versions of tenant {flows.tenant!r}", file=out)
        else:
            rows = [
                [
                    item.id,
                    f"v{item.version}" if item.version is not None else "-",
                    item.spec,
                    "paused" if item.paused else ("active" if item.in_sync else "OUT OF SYNC"),
                    _when(item.next_fires[0]) if item.next_fires and not item.paused else "-",
                    str(item.actions),
                ]
                for item in schedules
            ]
            _table(["SCHEDULE", "RUNS", "SPEC", "STATE", "NEXT", "FIRED"], rows, out, indent="")
            if any(not item.in_sync for item in schedules):
                print("some schedules do not follow the active version: wfa schedules sync", file=out)
        return EXIT_OK
    if args.action == "sync":
        results = await flows.sync_schedules(args.name)
        if args.json:
            _print_json([result.model_dump(mode="json") for result in results], out)
        else:
            lines = describe_sync(results)
            for line in lines or ["no schedule triggers: nothing to write"]:
                print(line, file=out)
        return EXIT_OK
    if args.action == "pause":
        sid = await flows.pause_schedule(args.schedule, args.note)
        print(f"Paused schedule {sid}", file=out)
    elif args.action == "unpause":
        sid = await flows.unpause_schedule(args.schedule, args.note)
        print(f"Unpaused schedule {sid}", file=out)
    elif args.action == "trigger":
        sid = await flows.trigger_schedule(args.schedule)
        print(f"Triggered schedule {sid}: one run starts now (wfa list --definition ...)", file=out)
    else:
        sid = await flows.backfill_schedule(args.schedule, args.start, args.end)
        print(f"Backfilled schedule {sid} from {args.start.isoformat()} to {args.end.isoformat()}", file=out)
    return EXIT_OK


async def _payloads(args: argparse.Namespace, out: TextIO) -> int:
    from starter.payload_gc import check_collectable, collect
    from starter.payload_store import STORE_ENV, PayloadStoreConfig

    config = PayloadStoreConfig.from_env()
    if config is None:
        raise UsageError(f"{STORE_ENV} is not set: there is no payload store to collect")
    check_collectable(config, args.older_than)  # before connecting: exit 2 whether a server answers or not
    flows = await _connect(args)
    from temporalio.service import RPCError

    try:
        report = await collect(flows.client, config, older_than=args.older_than, dry_run=args.dry_run)
    except RPCError as err:
        raise flows._rpc_error(err, None, "collect stored payloads") from None
    if args.json:
        print(json.dumps(report.as_json(), indent=2), file=out)
        return EXIT_OK
    verb = "would delete" if report.dry_run else "deleted"
    size = sum(b.size for b in report.deleted)
    print(
        f"{report.store}, namespace {report.namespace}: {verb} {len(report.deleted)} payload(s), {size}"
        f" bytes, last stored before {report.cutoff:%Y-%m-%d %H:%M} UTC ({_duration(report.older_than.total_seconds())}"
        f" ago); kept {len(report.kept_referenced)} as old that {report.open_runs} open or recently closed run(s) still reference",
        file=out,
    )
    for blob in report.deleted:
        print(f"  {blob.digest}  {blob.size:>10}  {blob.stored_at:%Y-%m-%d %H:%M:%S}", file=out)
    return EXIT_OK


_ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]] = {
    "start": _start,
    "approve": _decide,
    "reject": _decide,
    "cancel": _cancel,
    "status": _status,
    "list": _list,
    "result": _result,
    "definitions": _definitions,
    "dead-letters": _dead_letters,
    "events": _events,
    "schedules": _schedules,
    "db": _db,
    "token": _token,
    "stats": _stats,
    "watch": _watch_run,
    "diagram": _diagram,
    "task": _task,
    "payloads": _payloads,
}


async def _run_command(args: argparse.Namespace, out: TextIO) -> int:
    """Runs an async command and closes the store connections it opened."""
    try:
        return await _ASYNC_COMMANDS[args.command](args, out)
    finally:
        while _OPEN_CLIENTS:
            await _OPEN_CLIENTS.pop().close()


# ------------------------------------------------------------------------------------------ main


def _print_definition_error(source: str, err: DefinitionError, err_out: TextIO) -> None:
    count = len(err.problems)
    source = _clip_message(source, 300)
    print(
        f"{source}: invalid workflow definition ({count} problem{'s' if count != 1 else ''}):", file=err_out
    )
    for problem in err.problems:
        print(f"  {_clip_message(problem.path, 300)}: {_clip_message(problem.message, 1000)}", file=err_out)


# Exit code of each error type, by module and class name, most specific first. Looked up in
# sys.modules: an error of a module that was never imported cannot have been raised, and importing
# the store or the SDK only to classify an error would slow every command down.
_EXIT_CODES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    # Payload encryption (starter.codec): keys unusable, or a payload of a key not configured here.
    ("starter.codec", ("PayloadKeysError", "PayloadDecryptError"), EXIT_BAD_INPUT),
    # Large payloads by reference (starter.payload_store): the store unreachable (an S3
    # endpoint), or a stored payload missing or altered.
    ("starter.payload_store", ("PayloadStoreUnavailableError",), EXIT_UNAVAILABLE),
    ("starter.payload_store", ("PayloadStoreError",), EXIT_BAD_INPUT),
    (
        "starter.errors",
        ("DefinitionFileNotFoundError", "InvalidInputError", "PayloadUnreadableError"),
        EXIT_BAD_INPUT,
    ),
    ("interpreter.actions", ("ActionPluginError",), EXIT_BAD_INPUT),
    (
        "activities.store.errors",
        (
            "InvalidReferenceError",
            "InvalidTenantError",
            "InvalidRoleError",
            "InvalidDatabaseUrlError",
            "InvalidActorError",
            "UnstorableDataError",
        ),
        EXIT_BAD_INPUT,
    ),
    (
        "starter.errors",
        ("ServerUnavailableError", "NoWorkerError", "ScheduleSyncError", "InputCheckUnavailableError"),
        EXIT_UNAVAILABLE,
    ),
    ("activities.input_check", ("InputCheckBusyError", "InputCheckFailedError"), EXIT_UNAVAILABLE),
    ("activities.store.errors", ("DatabaseUnavailableError", "MigrationsNotAppliedError"), EXIT_UNAVAILABLE),
    ("starter.errors", ("RunNotFoundError", "ScheduleNotFoundError", "ApiKeyNotFoundError"), EXIT_NOT_FOUND),
    ("activities.store.errors", ("DefinitionNotFoundError", "DeadLetterNotFoundError"), EXIT_NOT_FOUND),
    ("starter.errors", ("DecisionRefusedError", "RunClosedError", "RunAlreadyExistsError"), EXIT_REFUSED),
    (
        "activities.store.errors",
        (
            "VersionArchivedError",
            "ActiveVersionError",
            "NoActiveVersionError",
            "NothingToRollBackError",
            "DeadLetterResolvedError",
            "AccessDeniedError",
            "RoleConflictError",
        ),
        EXIT_REFUSED,
    ),
    ("starter.errors", ("ResultTimeoutError",), EXIT_TIMEOUT),
    ("activities.store.errors", ("StoreError",), EXIT_RUN_FAILED),
    ("starter.errors", ("StarterError",), EXIT_RUN_FAILED),
)


def _exit_code_of(err: BaseException) -> int | None:
    """The documented exit code of an error the client or the store raises on purpose, else None."""
    if isinstance(err, UsageError):
        return EXIT_BAD_INPUT
    if isinstance(err, OutputUnwritableError):
        return EXIT_UNAVAILABLE
    for module_name, class_names, code in _EXIT_CODES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        classes = tuple(getattr(module, name) for name in class_names)
        if isinstance(err, classes):
            return code
    return None


def _definition_error(err: BaseException) -> DefinitionError | None:
    validate = sys.modules.get("interpreter.validate")
    if validate is not None and isinstance(err, validate.DefinitionError):
        found: DefinitionError = err
        return found
    return None


_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on instead of showing: C0 controls but tab and newline (escape
sequences, carriage return), DEL, C1 controls, the line and paragraph separators and the
bidirectional marks and overrides."""


_CELL_UNSHOWN = re.compile(f"[\n\t{_UNSHOWN.pattern[1:-1]}]")
"""In a table cell, tab and newline too (a cell never holds one; a run id could fake a row)."""


def _escape_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class _Shown:
    """A text stream that writes each character a terminal would act on as ``\\uXXXX``.

    What ``wfa`` prints comes from elsewhere too: a run id a raw client chose, an HTTP response
    a step read, a reason a person typed. Written as is, an escape sequence in it could retitle the
    window, clear the screen or rewrite the lines above (found by an attacker's probe: ``wfa list``
    printed a raw client's run id with its escapes). In JSON, where such a character can only
    stand inside a string, ``\\uXXXX`` is the same character, so ``--json`` output parses the same.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with _writing():
            self._stream.write(_UNSHOWN.sub(_escape_char, text))
        return len(text)

    def flush(self) -> None:
        with _writing():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class OutputFailedError(OSError):
    """Standard output could not be written (full, an I/O error; a reader that left is a
    ``BrokenPipeError``, which stays one): exit 3, saying so, where it was exit 70, "a bug", even
    after ``wfa approve`` had applied its decision (a probe)."""


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputFailedError(err.errno, err.strerror or str(err)) from None


class _Nowhere:
    """Where a stream the process was started without (``2>&-``) is written: nowhere (``print``
    given None would write to stdout, into ``--json`` output)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


def _shown(stream: TextIO | None) -> TextIO:
    """``stream`` through :class:`_Shown`, or :class:`_Nowhere` for a closed one."""
    return cast("TextIO", _Nowhere() if stream is None else _Shown(stream))


def run(argv: Sequence[str]) -> int:
    """Runs the CLI in this process and returns its exit code (see the module docstring).

    Every error becomes a one-line message on stderr (an invalid definition: one line per problem)
    and its documented exit code; an unexpected one (a bug) exits 70 without a traceback unless
    ``WFA_DEBUG`` is set. An interruption (Ctrl-C) is exit 130, wherever it comes.
    """
    err_out = _shown(sys.stderr)
    try:
        return _run(argv, err_out)
    except KeyboardInterrupt:  # before a command began (building the parser), or a second Ctrl-C
        with contextlib.suppress(OSError, KeyboardInterrupt):
            print("wfa: interrupted", file=err_out)
        return EXIT_INTERRUPTED


def _run(argv: Sequence[str], err_out: TextIO) -> int:
    out = _shown(sys.stdout)
    for index, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as lone surrogates
            print(f"wfa: argument {index} is not valid UTF-8: {brief(arg)}", file=err_out)
            return EXIT_BAD_INPUT
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT

    label = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    _INTERRUPTED["label"] = label
    if isinstance(getattr(args, "workflow_id", None), str):
        _INTERRUPTED["named"] = args.workflow_id

    def fail(code: int, message: str) -> int:
        print(f"wfa {label}: {_clip_message(message)}", file=err_out)
        return code

    try:
        if args.command in ("validate", "start", "definitions"):
            # Teams' own actions: validation checks their inputs like the built-in ones'.
            from starter.plugins import load_configured_action_plugins

            load_configured_action_plugins()
        if args.command == "validate":
            code = asyncio.run(_validate(args, out))
        elif args.command == "keys":
            code = _keys(args, out)
        elif args.command == "serve":
            from gateway.cli import run_serve

            code = run_serve(args)
        elif args.command == "triggers":
            from gateway.cli import triggers

            code = asyncio.run(triggers(args, out, UsageError))
        else:
            code = asyncio.run(_run_command(args, out))
        out.flush()  # here, where a full disk is said (at exit, nothing could say it)
        return code
    except BrokenPipeError:  # `wfa status X | head`: the reader left, nothing more to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OutputFailedError as err:
        return fail(
            EXIT_UNAVAILABLE,
            f"could not write to standard output ({err.strerror}): what the command did is done,"
            " its output is lost",
        )
    except KeyboardInterrupt:  # (run in a process wfa does not own: _on_interrupt's otherwise)
        hint = _interrupt_hint(getattr(args, "started", None), getattr(args, "workflow_id", None))
        return fail(EXIT_INTERRUPTED, f"interrupted{hint}")
    except Exception as err:
        definition_error = _definition_error(err)
        if definition_error is not None:
            _print_definition_error(getattr(args, "file", "definition"), definition_error, err_out)
            return EXIT_BAD_INPUT
        problem = unreadable_payload(err)  # no WFA_PAYLOAD_STORE or _KEYS: the SDK's words name neither
        if problem is not None:
            return fail(EXIT_BAD_INPUT, problem)
        known = _exit_code_of(err)
        if known is not None:
            return fail(known, str(err))
        if os.environ.get("WFA_DEBUG"):
            raise
        return fail(
            EXIT_INTERNAL,
            f"internal error ({type(err).__name__}: {err}); this is a bug, please report it"
            " (WFA_DEBUG=1 shows the traceback)",
        )


def _clip_message(message: str, limit: int = 2000) -> str:
    """An error message bounded in size (it may quote a huge argument back)."""
    return (
        message if len(message) <= limit else f"{message[:limit]}… ({len(message) - limit} more characters)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``wfa`` program.

    Args:
        argv: Arguments without the program name. Given (tests, embedding): runs :func:`run` and
            returns its exit code. Omitted (the console script, ``python -m starter``): runs with
            ``sys.argv[1:]``, flushes stdout and stderr and leaves the process with
            ``os._exit(code)``, never returning.

    Returns:
        The exit code (see the module docstring), when ``argv`` is given.

    Why ``os._exit``: a process that used a Temporal client can abort ("Fatal Python error:
    PyGILState_Release", exit 134) or hang for good while the interpreter finalises, when the SDK's
    native threads still hold work (temporalio/sdk-python#300; ``result --timeout`` leaves its
    cancelled long poll there). Nothing is left to clean up once the command has returned:
    the command closed its clients and its store connections itself.
    """
    if argv is None:
        _PROCESS["owned"] = True
        with contextlib.suppress(ValueError):  # (not the main thread: an embedding)
            signal.signal(signal.SIGINT, _on_interrupt)
        _flush_and_exit(run(sys.argv[1:]))
    return run(argv)


CORE_LOG_GRACE_S = 0.05
"""Before leaving, how long a process that connected a client gives the SDK core to hand over its
last log lines (it forwards them every 10 ms, from a thread of its own): ``os._exit`` drops them."""


def _flush_and_exit(code: int) -> NoReturn:
    with contextlib.suppress(ValueError):  # (not the main thread: an embedding)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # leaving: a Ctrl-C now has nothing to stop
    if _core_logs_on_stderr.cache_info().currsize:
        time.sleep(CORE_LOG_GRACE_S)
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with the descriptor closed (``>&-``)
            continue
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
