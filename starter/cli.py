"""``wfa``: the command line of the workflow-automation service.

::

    wfa validate examples/order-fulfilment.json
    wfa start examples/expense-approval.json --input '{"amount": 250}' --id expense-4711
    wfa status expense-4711
    wfa approve expense-4711 --actor manager --reason "within budget"
    wfa result expense-4711 --timeout 60

Global options (before or after the command): ``--address`` (``$TEMPORAL_ADDRESS``, default
``127.0.0.1:7233``), ``--namespace`` (``$TEMPORAL_NAMESPACE``, default ``default``) and
``--task-queue`` (``$TEMPORAL_TASK_QUEUE``, default ``workflow-automation``).

Output is for people by default; ``--json`` prints one JSON document for scripts.

Exit codes:

== ==========================================================================================
0  ok
1  the run did not complete: failed, compensated (a handled failure) or cancelled (``result``,
   ``start --wait``)
2  bad input: invalid definition (its problems are printed with JSON paths), bad JSON, missing
   file, bad arguments
3  the Temporal server is unreachable or unusable (unknown namespace, search attributes not
   registered), or no worker answered
4  no run with that id
5  refused: decision not allowed (actor not an approver, nothing pending, ...), the run has
   already ended, or the business key was already used by a completed run
6  ``--timeout`` passed before the run ended (it is still running)
== ==========================================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from interpreter.durations import format_duration
from interpreter.model import Definition, children
from interpreter.state import FINAL_STATES, RunResult, RunState, RunStatus, StepRecord
from interpreter.validate import DefinitionError, definition_hash
from starter.client import (
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    DEFAULT_TASK_QUEUE,
    FlowClient,
    RunHandle,
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (environment defaults are read when it is built)."""
    parser = argparse.ArgumentParser(
        prog="wfa",
        description="Run JSON workflow definitions on Temporal: validate, start, approve, inspect.",
        epilog="Exit codes: 0 ok, 1 run failed/cancelled, 2 bad input, 3 server unreachable or no "
        "worker, 4 unknown run, 5 refused, 6 timed out waiting.",
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
    p.add_argument("file", metavar="FILE", help="definition JSON file")
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
    return parser


def _json_object(text: str | None, option: str) -> dict[str, Any]:
    """Parses ``--input``/``--data``: inline JSON or ``@path``; must be a JSON object."""
    if text is None:
        return {}
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
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{source} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{source} must be a JSON object, not {type(value).__name__}")
    return value


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
        print("\nDecisions", file=out)
        for d in status.decisions:
            verdict = "accepted" if d.accepted else f"REFUSED: {d.refusal}"
            step = f" at {d.step_id}" if d.step_id else ""
            reason = f" ({d.reason})" if d.reason else ""
            print(f"  {_when(d.at)}  {d.decision} by {d.actor}{step}{reason}: {verdict}", file=out)
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


async def _connect(args: argparse.Namespace) -> FlowClient:
    return await FlowClient.connect(args.address, args.namespace, args.task_queue)


async def _start(args: argparse.Namespace, out: TextIO) -> int:
    definition: Definition = load(Path(args.file))  # before connecting: bad input is exit 2 offline
    run_input = _json_object(args.input, "--input")
    flows = await _connect(args)
    run: RunHandle = await flows.start_run(definition, run_input, workflow_id=args.id)
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
            if run.definition_hash != definition_hash(definition):
                print(
                    f"  note: it runs {run.definition} v{run.version} (hash {run.definition_hash[:12]}),"
                    f" not the {definition.name} v{definition.version} in {args.file}",
                    file=out,
                )
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


_ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]] = {
    "start": _start,
    "approve": _decide,
    "reject": _decide,
    "cancel": _cancel,
    "status": _status,
    "result": _result,
}


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

    def fail(code: int, message: str) -> int:
        print(f"wfa {args.command}: {message}", file=err_out)
        return code

    try:
        if args.command == "validate":
            return _validate(args, out)
        return asyncio.run(_ASYNC_COMMANDS[args.command](args, out))
    except DefinitionError as err:
        _print_definition_error(getattr(args, "file", "definition"), err, err_out)
        return EXIT_BAD_INPUT
    except (DefinitionFileNotFoundError, UsageError) as err:
        return fail(EXIT_BAD_INPUT, str(err))
    except (ServerUnavailableError, NoWorkerError) as err:
        return fail(EXIT_UNAVAILABLE, str(err))
    except RunNotFoundError as err:
        return fail(EXIT_NOT_FOUND, str(err))
    except (DecisionRefusedError, RunClosedError, RunAlreadyExistsError) as err:
        return fail(EXIT_REFUSED, str(err))
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
