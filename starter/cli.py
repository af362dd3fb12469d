"""``wfa``: the command line of the workflow-automation service.

::

    wfa validate examples/order-fulfilment.json
    wfa start examples/expense-approval.json --input '{"amount": 250}' --id expense-4711
    wfa status expense-4711
    wfa approve expense-4711 --actor manager --reason "within budget"
    wfa result expense-4711 --timeout 60

    wfa definitions register examples/intervention.json --author ann [--activate]
    wfa definitions list [NAME]  |  show NAME[@V]  |  diff NAME V1 V2
    wfa definitions activate NAME V  |  rollback NAME  |  archive NAME V
    wfa start intervention@2 --input '{...}'       # a registry reference instead of a file
    wfa dead-letters list  |  show ID  |  redrive ID [--input JSON]  |  skip ID --output JSON  |  abort ID
    wfa db upgrade

Global options (before or after the command): ``--address`` (``$TEMPORAL_ADDRESS``, default
``127.0.0.1:7233``), ``--namespace`` (``$TEMPORAL_NAMESPACE``, default ``default``),
``--task-queue`` (``$TEMPORAL_TASK_QUEUE``, default ``workflow-automation``), ``--tenant``
(``$WFA_TENANT``, default ``default``) and ``--database-url`` (``$DATABASE_URL``, default the embedded
PostgreSQL server under ``.state/``).

Output is for people by default; ``--json`` prints one JSON document for scripts.

Exit codes:

== ==========================================================================================
0  ok
1  the run did not complete: failed, compensated (a handled failure) or cancelled (``result``,
   ``start --wait``)
2  bad input: invalid definition (its problems are printed with JSON paths), bad JSON, missing
   file, bad arguments
3  the Temporal server or the database is unreachable or unusable (unknown namespace, search
   attributes not registered, missing database, migrations not applied), or no worker answered
4  no run with that id, no such definition, version or dead letter (in the tenant)
5  refused: decision not allowed (actor not an approver, nothing pending, ...), the run has
   already ended, the business key was already used by a completed run, an archived version
   activated or started, the active version archived, nothing to roll back, a dead letter
   already resolved
6  ``--timeout`` passed before the run ended (it is still running)
== ==========================================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from activities.store.database import DATABASE_URL_ENV, Database, open_database, safe_url, upgrade_database
from activities.store.embedded import data_dir, start_embedded
from activities.store.errors import (
    ActiveVersionError,
    DatabaseUnavailableError,
    DeadLetterNotFoundError,
    DeadLetterResolvedError,
    DefinitionNotFoundError,
    InvalidReferenceError,
    InvalidTenantError,
    MigrationsNotAppliedError,
    NothingToRollBackError,
    StoreError,
    VersionArchivedError,
)
from activities.store.repository import (
    DeadLetter,
    DeadLetterStore,
    DefinitionInfo,
    DefinitionStore,
    NameSummary,
    parse_ref,
    pretty,
)
from interpreter.durations import format_duration
from interpreter.model import Definition, children
from interpreter.state import FINAL_STATES, RunResult, RunState, RunStatus, StepRecord
from interpreter.validate import DefinitionError, definition_hash
from starter.client import (
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    DEFAULT_TASK_QUEUE,
    DEFAULT_TENANT,
    TENANT_ENV,
    FlowClient,
    RunHandle,
    is_registry_ref,
    load,
)
from starter.errors import (
    DecisionRefusedError,
    DefinitionFileNotFoundError,
    NoWorkerError,
    ResultTimeoutError,
    RunAlreadyExistsError,
    RunClosedError,
    RunNotFoundError,
    ServerUnavailableError,
    StarterError,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_RUN_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "main",
]

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5
EXIT_TIMEOUT = 6
EXIT_INTERRUPTED = 130

_ERROR_WIDTH = 90
_KEY_WIDTH = 12


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


# ------------------------------------------------------------------------------------- arguments


def _add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    # On subcommands the defaults are SUPPRESS, so `wfa status X --address A` and
    # `wfa --address A status X` both work and neither overrides the other with a default.
    address = os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS
    namespace = os.environ.get("TEMPORAL_NAMESPACE") or DEFAULT_NAMESPACE
    task_queue = os.environ.get("TEMPORAL_TASK_QUEUE") or DEFAULT_TASK_QUEUE
    suppress = argparse.SUPPRESS
    parser.add_argument(
        "--address",
        default=address if defaults else suppress,
        help=f"Temporal frontend host:port (env TEMPORAL_ADDRESS, now {address})",
    )
    parser.add_argument(
        "--namespace",
        default=namespace if defaults else suppress,
        help=f"namespace (env TEMPORAL_NAMESPACE, now {namespace})",
    )
    parser.add_argument(
        "--task-queue",
        default=task_queue if defaults else suppress,
        help=f"task queue the workers poll (env TEMPORAL_TASK_QUEUE, now {task_queue})",
    )
    tenant = os.environ.get(TENANT_ENV) or DEFAULT_TENANT
    database_url = os.environ.get(DATABASE_URL_ENV) or None
    parser.add_argument(
        "--tenant",
        default=tenant if defaults else suppress,
        help=f"tenant of the stored definitions, dead letters and new runs (env {TENANT_ENV}, now {tenant})",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=database_url if defaults else suppress,
        help="PostgreSQL of the definition registry and dead letters (env DATABASE_URL, now "
        + (safe_url(database_url) if database_url else "unset: the embedded server under .state/")
        + ")",
    )


def _default_actor() -> str:
    try:
        return os.environ.get("WFA_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "cli"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (environment defaults are read when it is built)."""
    parser = argparse.ArgumentParser(
        prog="wfa",
        description="Run JSON workflow definitions on Temporal: validate, store, start, approve, inspect.",
        epilog="Exit codes: 0 ok, 1 run failed/cancelled, 2 bad input, 3 server or database unreachable "
        "or no worker, 4 unknown run, definition, version or dead letter, 5 refused, 6 timed out waiting.",
    )
    _add_connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_connection_options(sub, defaults=False)
        return sub

    p = command("validate", "check a definition file and list every problem with its JSON path")
    p.add_argument("file", metavar="FILE", help="definition JSON file")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("start", "validate a definition and start a run of it")
    p.add_argument(
        "file",
        metavar="FILE|REF",
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
    p.add_argument("--timeout", type=float, metavar="S", help="with --wait: give up after S seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    for name, verb in (("approve", "approve"), ("reject", "reject")):
        p = command(name, f"{verb} a run's pending approval")
        p.add_argument("workflow_id", metavar="ID", help="the run's workflow id")
        p.add_argument("--actor", required=True, help="who decides (must be one of the step's approvers)")
        p.add_argument("--step", metavar="S", help="approval step id (needed when several are pending)")
        p.add_argument("--reason", default="", metavar="R", help="free text, recorded")
        p.add_argument("--data", metavar="JSON|@FILE", help="form fields as a JSON object, or @path")
        p.add_argument(
            "--no-wait",
            action="store_true",
            help="send a signal and return at once (a refusal is then only visible in `status`)",
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("cancel", "cancel a run: compensations run, then it ends as cancelled")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--actor", required=True, help="who cancels (recorded)")
    p.add_argument("--reason", default="", metavar="R", help="why (recorded)")

    p = command("status", "show a run's state, steps, pending approvals and decisions")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("result", "wait for a run to end and show how it ended")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (exit code 6)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    _add_definitions_commands(
        command(
            "definitions", "the definition registry: register, list, show, diff, activate, rollback, archive"
        )
    )
    _add_dead_letter_commands(command("dead-letters", "parked steps: list, show, redrive, skip, abort"))
    db = command("db", "the store's database: apply migrations")
    sub = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "upgrade",
        help="apply the schema migrations (idempotent)",
        description="apply the schema migrations (idempotent)",
    )
    _add_connection_options(p, defaults=False)
    return parser


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
        help=f"who {what} (recorded; default env WFA_ACTOR or the login name)",
    )


def _add_definitions_commands(parser: argparse.ArgumentParser) -> None:
    action = _subcommands(parser)
    p = action("register", "validate a definition file and store it as its name's next version")
    p.add_argument(
        "file",
        metavar="FILE",
        help="definition JSON file (its 'version' is ignored: the registry numbers versions)",
    )
    p.add_argument("--author", required=True, help="who registers it (recorded)")
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

    p = action("archive", "archive a version: it can no longer be activated or started")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="V", type=_version)
    _add_actor(p, "archives it")
    p.add_argument("--json", action="store_true", help="machine-readable output")


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
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("show", "show a dead letter: the step, its input, the error, the decision")
    p.add_argument("id", metavar="ID", type=_dead_letter_id)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = action("redrive", "run the parked step again in the same run")
    p.add_argument("id", metavar="ID", type=_dead_letter_id)
    p.add_argument("--input", metavar="JSON|@FILE", help="corrected input for the step (a JSON object)")
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


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, not {value}")
    return value


def _dead_letter_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a dead letter id: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a dead letter id: {text!r}")
    return value


def _json_object(text: str | None, option: str) -> dict[str, Any]:
    """Parses ``--input``/``--data``: inline JSON or ``@path``; must be a JSON object."""
    if text is None:
        return {}
    value = _json_value(text, option)
    if not isinstance(value, dict):
        source = f"{option} file {text[1:]}" if text.startswith("@") else option
        raise UsageError(f"{source} must be a JSON object, not {type(value).__name__}")
    return value


def _json_value(text: str, option: str) -> Any:
    """Parses an option's inline JSON or ``@path`` (any JSON value)."""
    source = f"{option}"
    if text.startswith("@"):
        path = Path(text[1:])
        source = f"{option} file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{option}: file not found: {path}") from None
        except OSError as err:
            raise UsageError(f"{option}: cannot read {path}: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{source} is not valid JSON: {err}") from None


# ---------------------------------------------------------------------------------------- output


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, sort_keys=False, default=str), file=out)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
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
    if status.state in FINAL_STATES and status.output is not None:
        pairs.append(("Output", _compact(status.output)))
    _fields(pairs, out)
    print("\nSteps", file=out)
    _steps_table(status.steps, out)
    if status.pending_approvals:
        print("\nPending approvals", file=out)
        for approval in status.pending_approvals:
            print(f"  {approval.path}: approvers {', '.join(approval.approvers)}", file=out)
            details = [
                ("message", _clip(approval.message, 200) if approval.message else ""),
                ("form fields", ", ".join(approval.fields or [])),
                ("waiting since", _when(approval.since)),
                ("deadline", _when(approval.deadline) if approval.deadline else ""),
                ("escalations", str(approval.escalations) if approval.escalations else ""),
            ]
            for label, value in details:
                if value:
                    print(f"    {label:<14}{value}", file=out)
        print(f"  decide with: wfa approve {workflow_id} --actor NAME  (or reject)", file=out)
    if status.decisions:
        older = f" ({status.decisions_dropped} older refusals not kept)" if status.decisions_dropped else ""
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
    total = 0
    for step in steps:
        total += 1
        for _suffix, nested, _boundary in children(step):
            total += _count_steps(nested)
    return total


def _result_exit(result: RunResult) -> int:
    return EXIT_OK if result.state == RunState.COMPLETED else EXIT_RUN_FAILED


# -------------------------------------------------------------------------------------- commands


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    definition = load(Path(args.file))
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


async def _connect(args: argparse.Namespace) -> FlowClient:
    flows = await FlowClient.connect(
        args.address,
        args.namespace,
        args.task_queue,
        database_url=getattr(args, "database_url", None),
        tenant=getattr(args, "tenant", None),
    )
    _OPEN_CLIENTS.append(flows)
    return flows


@contextlib.asynccontextmanager
async def _database(args: argparse.Namespace) -> AsyncIterator[Database]:
    database = await open_database(args.database_url or None)
    try:
        yield database
    finally:
        await database.close()


async def _start(args: argparse.Namespace, out: TextIO) -> int:
    reference = is_registry_ref(args.file)
    # Before connecting: a bad file or a malformed reference is exit 2 without a server.
    definition: Definition | None = None
    if reference:
        name, pinned = parse_ref(args.file)
    else:
        definition = load(Path(args.file))
    run_input = _json_object(args.input, "--input")
    flows = await _connect(args)
    run: RunHandle = await flows.start_run(
        args.file if definition is None else definition, run_input, workflow_id=args.id
    )
    summary = {
        "workflow_id": run.workflow_id,
        "run_id": run.run_id,
        "started": run.started,
        "definition": run.definition,
        "version": run.version,
        "hash": run.definition_hash,
        "task_queue": flows.task_queue,
    }
    if not args.json:
        if run.started:
            print(
                f"Started {run.workflow_id} ({run.definition} v{run.version}, task queue {flows.task_queue})",
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
        return EXIT_OK
    result = await flows.result(run.workflow_id, timeout=args.timeout)
    if args.json:
        _print_json({**summary, "result": result.model_dump(mode="json")}, out)
    else:
        print(file=out)
        print_result(run.workflow_id, result, out)
    return _result_exit(result)


async def _decide(args: argparse.Namespace, out: TextIO) -> int:
    data = _json_object(args.data, "--data")
    flows = await _connect(args)
    decide = flows.approve if args.command == "approve" else flows.reject
    record = await decide(
        args.workflow_id, args.actor, step_id=args.step, reason=args.reason, data=data, wait=not args.no_wait
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
    await flows.cancel(args.workflow_id, args.actor, args.reason)
    print(
        f"Cancel requested for {args.workflow_id} by {args.actor}; compensations run before it ends"
        f" (wfa result {args.workflow_id} waits for that)",
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


async def _result(args: argparse.Namespace, out: TextIO) -> int:
    flows = await _connect(args)
    result = await flows.result(args.workflow_id, timeout=args.timeout)
    if args.json:
        _print_json(result.model_dump(mode="json"), out)
    else:
        print_result(args.workflow_id, result, out)
    return _result_exit(result)


# -------------------------------------------------------------------------- definitions registry


def _read_definition(file: str) -> str:
    """A definition file's text, validated (DefinitionError with JSON paths otherwise)."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionFileNotFoundError(file) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    load(text)
    return text


def _actor(args: argparse.Namespace) -> str:
    return args.actor or _default_actor()


def _short_hash(digest: str) -> str:
    return digest[:12]


async def _definitions(args: argparse.Namespace, out: TextIO) -> int:
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
    elif registration.active_version != info.version:
        print(
            f"  active version: v{registration.active_version}"
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
                    f"v{n.active_version}",
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
            f"Activated {result.name} v{result.version} (was v{result.previous}); runs already going keep their version",
            file=out,
        )
    else:
        print(f"{result.name} v{result.version} was already active", file=out)
    return EXIT_OK


async def _definitions_rollback(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    result = await store.rollback(args.name, _actor(args))
    if args.json:
        _print_json(result.model_dump(mode="json"), out)
        return EXIT_OK
    skipped = (
        f"; passed over archived {', '.join(f'v{v}' for v in result.skipped_archived)}"
        if result.skipped_archived
        else ""
    )
    print(f"Rolled back {result.name} to v{result.version} (was v{result.previous}){skipped}", file=out)
    return EXIT_OK


async def _definitions_archive(args: argparse.Namespace, store: DefinitionStore, out: TextIO) -> int:
    info = await store.archive(args.name, args.version, _actor(args))
    if args.json:
        _print_json(info.model_dump(mode="json"), out)
    else:
        print(f"Archived {info.name} v{info.version}: it can no longer be activated or started", file=out)
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


async def _dead_letters(args: argparse.Namespace, out: TextIO) -> int:
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
    new_input = (
        _json_object(args.input, "--input") if args.action == "redrive" and args.input is not None else None
    )
    output = _json_value(args.output, "--output") if args.action == "skip" else None
    flows = await _connect(args)
    actor = _actor(args)
    if args.action == "redrive":
        parked = await flows.redrive(args.id, actor, new_input, reason=args.reason)
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
    url = args.database_url or None
    if url is None:
        url = await asyncio.to_thread(start_embedded, None)
        where = f"the embedded server in {data_dir()}"
    else:
        where = safe_url(url)
    revision = await upgrade_database(url)
    print(f"Schema of {where} is at revision {revision} (up to date)", file=out)
    return EXIT_OK


_ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]] = {
    "start": _start,
    "approve": _decide,
    "reject": _decide,
    "cancel": _cancel,
    "status": _status,
    "result": _result,
    "definitions": _definitions,
    "dead-letters": _dead_letters,
    "db": _db,
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
    print(
        f"{source}: invalid workflow definition ({count} problem{'s' if count != 1 else ''}):", file=err_out
    )
    for problem in err.problems:
        print(f"  {problem.path}: {problem.message}", file=err_out)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code (see the module docstring).
    """
    out, err_out = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT

    label = " ".join(filter(None, [args.command, getattr(args, "action", None)]))

    def fail(code: int, message: str) -> int:
        print(f"wfa {label}: {message}", file=err_out)
        return code

    try:
        if args.command == "validate":
            return _validate(args, out)
        return asyncio.run(_run_command(args, out))
    except DefinitionError as err:
        _print_definition_error(getattr(args, "file", "definition"), err, err_out)
        return EXIT_BAD_INPUT
    except (DefinitionFileNotFoundError, UsageError, InvalidReferenceError, InvalidTenantError) as err:
        return fail(EXIT_BAD_INPUT, str(err))
    except (
        ServerUnavailableError,
        NoWorkerError,
        DatabaseUnavailableError,
        MigrationsNotAppliedError,
    ) as err:
        return fail(EXIT_UNAVAILABLE, str(err))
    except (RunNotFoundError, DefinitionNotFoundError, DeadLetterNotFoundError) as err:
        return fail(EXIT_NOT_FOUND, str(err))
    except (
        DecisionRefusedError,
        RunClosedError,
        RunAlreadyExistsError,
        VersionArchivedError,
        ActiveVersionError,
        NothingToRollBackError,
        DeadLetterResolvedError,
    ) as err:
        return fail(EXIT_REFUSED, str(err))
    except StoreError as err:
        return fail(EXIT_RUN_FAILED, str(err))
    except ResultTimeoutError as err:
        return fail(EXIT_TIMEOUT, str(err))
    except StarterError as err:
        return fail(EXIT_RUN_FAILED, str(err))
    except BrokenPipeError:  # `wfa status X | head`: the reader left, nothing more to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        hint = (
            f"; the run goes on (wfa status {args.workflow_id})" if getattr(args, "workflow_id", None) else ""
        )
        return fail(EXIT_INTERRUPTED, f"interrupted{hint}")


if __name__ == "__main__":
    sys.exit(main())
