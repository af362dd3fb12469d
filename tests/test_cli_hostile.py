"""Hostile input to every ``wfa`` command, as real processes: NUL characters, numbers too large for
any column, wrong JSON types, 100,000-character strings, bytes that are not UTF-8. Each must end
with a documented exit code (nearly all: 2, bad input) and a message, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.store.database import Database
from starter.client import FlowClient
from tests.helpers.wfa_process import run_many, run_wfa, wfa_env

HUGE = "9" * 30  # beyond int8
INT4_PLUS = "9999999999"  # beyond int4 (versions), within int8
LONG = "x" * 100_000
NOT_UTF8 = os.fsdecode(b"run-\xff\xfe")  # what a shell passes for bytes that are not UTF-8


@pytest.fixture
def flows(client: Client, database: Database, task_queue: str, store_worker: Worker) -> FlowClient:
    """A client with the store (no tenant), and a worker with the store's activities on its queue."""
    return FlowClient(client, task_queue=task_queue, database=database)


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


async def test_hostile_arguments_get_a_message_and_a_documented_exit_code(
    temporal_env: WorkflowEnvironment, flows: FlowClient, database_url: str, tmp_path: Path
) -> None:
    step = {"id": "s", "type": "set", "vars": {"x": 1}}
    ok = write(tmp_path / "ok.json", json.dumps({"name": "hostile-ok", "steps": [step]}))
    await flows.register(ok, author="setup")
    waiting = {"name": "hostile-wait", "steps": [{"id": "ok", "type": "approval", "approvers": ["boss"]}]}
    run_id = f"hostile-{uuid4()}"
    await flows.start_run(waiting, workflow_id=run_id)
    files = {
        "raw_nul": write(tmp_path / "raw-nul.json", b'{"name": "a\x00b", "steps": []}'),
        "escaped_nul": write(
            tmp_path / "nul.json",
            json.dumps({"name": "hostile-nul", "steps": [{**step, "name": "a\u0000b"}]}),
        ),
        "digits": write(
            tmp_path / "digits.json",
            '{"name": "d", "steps": [{"id": "s", "type": "set", "vars": {"x": ' + "9" * 5000 + "}}]}",
        ),
        "deep": write(
            tmp_path / "deep.json",
            '{"name": "d", "steps": [{"id": "s", "type": "set", "vars": {"x": '
            + "[" * 100_000
            + "]" * 100_000
            + "}}]}",
        ),
        "huge_version": write(
            tmp_path / "version.json", json.dumps({"name": "hostile-v", "version": 10**30, "steps": [step]})
        ),
        "array": write(tmp_path / "array.json", "[1, 2]"),
        "nul_input": write(tmp_path / "input.json", '{"a": "\\u0000"}'),
        "not_utf8": write(tmp_path / "not-utf8.json", b'{"a": "\xff\xfe"}'),
        # Over the server's 4 MiB gRPC limit: the caller's input (2), not a failed run (1).
        "over_grpc": write(tmp_path / "big.json", json.dumps({"a": "x" * (5 * 1024 * 1024)})),
    }
    # A FIFO no process writes, /dev/zero: read without hanging or filling memory (a probe: 3.5 GB
    # and a hang past Ctrl-C).
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    nul_json = '{"a": "\\u0000"}'
    digits_json = '{"a": ' + "9" * 5000 + "}"
    # One argument may not exceed 128 KiB (the kernel's limit): the deep document goes in a file.
    deep_json = "@" + write(tmp_path / "deep-input.json", "[" * 100_000 + "]" * 100_000)

    def expected_for(kind: str, name: str) -> set[int]:
        # A version of 10**30 passes the definition model today (starting refuses it); a stricter
        # model refuses it (2). A NUL in a step's name is refused by validate too (it passed, and
        # the store refused it).
        if name == "huge_version" and kind == "validate":
            return {0, 2}
        return {2}

    # (exit codes it may end with, arguments)
    cases: list[tuple[set[int], tuple[str, ...]]] = [
        # validate / start: files
        *((expected_for(kind, name), (kind, path)) for name, path in files.items() for kind in ["validate"]),
        *((expected_for(kind, name), (kind, path)) for name, path in files.items() for kind in ["start"]),
        ({2}, ("validate", LONG)),
        ({2}, ("validate", "--json", files["array"])),
        ({2}, ("start", LONG)),
        ({2}, ("start", "hostile-ok@" + HUGE)),
        ({4}, ("start", "hostile-ok@999999999")),
        # start: inputs and options
        ({2}, ("start", ok, "--input", "[1]")),
        ({2}, ("start", ok, "--input", '"x"')),
        ({2}, ("start", ok, "--input", nul_json)),
        ({2}, ("start", ok, "--input", digits_json)),
        ({2}, ("start", ok, "--input", deep_json)),
        ({2}, ("start", ok, "--input", '{"a": 1e999}')),
        ({2}, ("start", ok, "--input", '{"a": NaN}')),
        ({2}, ("start", ok, "--input", "@" + files["nul_input"])),
        ({2}, ("start", ok, "--input", "@" + files["raw_nul"])),
        ({2}, ("start", ok, "--input", "@" + LONG)),
        ({2}, ("start", ok, "--id", LONG)),
        # control characters in a business key would reach every operator's terminal (a probe)
        ({2}, ("start", ok, "--id", "x\x1b[2J\x1b]0;pwned\x07y")),
        ({2}, ("start", ok, "--id", "a\nb")),
        ({2}, ("start", ok, "--id", "")),
        ({2}, ("start", ok, "--input", "@" + files["not_utf8"])),
        ({2}, ("start", ok, "--input", "@" + files["over_grpc"])),
        ({2}, ("start", ok, "--input", "@/dev/zero")),
        ({2}, ("start", ok, "--input", f"@{fifo}")),
        ({2}, ("validate", "/dev/zero")),
        ({2}, ("validate", str(fifo))),
        ({2}, ("approve", run_id, "--actor", "boss", "--data", "@" + files["not_utf8"])),
        ({2}, ("start", ok, "--wait", "--timeout", HUGE)),
        ({2}, ("start", ok, "--wait", "--timeout", "1e400")),
        ({2}, ("start", ok, "--wait", "--timeout", "nan")),
        ({2}, ("start", ok, "--wait", "--timeout", "-1")),
        # runs
        ({4}, ("status", LONG)),
        ({2}, ("status", NOT_UTF8)),
        ({2}, ("status", run_id, "--json", "--address", "a:b:c")),
        ({2}, ("result", run_id, "--timeout", HUGE)),
        ({2}, ("result", run_id, "--timeout", "inf")),
        ({4}, ("result", LONG, "--timeout", "1")),
        ({2}, ("list", "--definition", LONG)),
        ({2}, ("list", "--definition", "a'b OR 1=1")),
        ({2}, ("list", "--version", HUGE)),
        ({2}, ("list", "--limit", HUGE)),
        ({2}, ("list", "--limit", "-1")),
        ({2}, ("list", "--state", LONG)),
        ({2}, ("approve", run_id, "--actor", "")),
        ({2}, ("approve", run_id, "--actor", LONG)),
        ({2}, ("approve", run_id, "--actor", "boss", "--data", '"x"')),
        ({2}, ("approve", run_id, "--actor", "boss", "--data", "[1]")),
        ({2}, ("approve", run_id, "--actor", "boss", "--data", nul_json)),
        ({2}, ("approve", run_id, "--actor", "boss", "--data", digits_json)),
        ({2}, ("approve", run_id, "--actor", "boss", "--data", deep_json)),
        # Too large for any run to accept: refused before it is sent (the run refused them, 5).
        ({2}, ("approve", run_id, "--actor", "boss", "--step", LONG)),
        ({2}, ("reject", run_id, "--actor", "boss", "--reason", LONG, "--step", "nope")),
        ({2}, ("reject", run_id, "--actor", "boss", "--no-wait", "--data", "1")),
        ({4}, ("cancel", LONG, "--actor", "ops")),
        ({2}, ("cancel", run_id, "--actor", "")),
        # registry
        ({2}, ("definitions", "register", files["escaped_nul"], "--author", "ann")),
        ({2}, ("definitions", "register", files["digits"], "--author", "ann")),
        ({2}, ("definitions", "register", ok, "--author", LONG)),
        ({2}, ("definitions", "register", ok, "--author", "")),
        ({2}, ("definitions", "show", "hostile-ok@" + HUGE)),
        ({2}, ("definitions", "show", LONG)),
        ({4}, ("definitions", "list", LONG)),
        ({2}, ("definitions", "diff", "hostile-ok", "1", HUGE)),
        ({2}, ("definitions", "diff", "hostile-ok", "1", INT4_PLUS)),
        ({2}, ("definitions", "diff", "hostile-ok", "-1", "0")),
        ({2}, ("definitions", "activate", "hostile-ok", INT4_PLUS)),
        ({2}, ("definitions", "activate", "hostile-ok", "1", "--actor", LONG)),
        ({2}, ("definitions", "archive", "hostile-ok", HUGE)),
        ({4}, ("definitions", "rollback", LONG)),
        # dead letters
        ({2}, ("dead-letters", "show", HUGE)),
        ({2}, ("dead-letters", "show", "-5")),
        ({2}, ("dead-letters", "list", "--limit", HUGE)),
        ({2}, ("dead-letters", "list", "--limit", "-1")),
        ({0}, ("dead-letters", "list", "--run", LONG)),
        ({2}, ("dead-letters", "redrive", HUGE)),
        ({2}, ("dead-letters", "redrive", "1", "--input", "[1]")),
        ({2}, ("dead-letters", "redrive", "1", "--input", nul_json)),
        ({2}, ("dead-letters", "redrive", "1", "--replace-input")),
        ({2}, ("dead-letters", "skip", "1", "--output", nul_json)),
        ({2}, ("dead-letters", "skip", "1", "--output", digits_json)),
        ({2}, ("dead-letters", "abort", INT4_PLUS, "--actor", LONG)),
        # global options
        ({2}, ("--tenant", LONG, "status", run_id)),
        ({2}, ("--tenant", "a\u0000b".replace("\u0000", "\\u0000"), "definitions", "list")),
        ({2}, ("--namespace", LONG, "status", run_id)),
        ({2}, ("--task-queue", LONG, "start", ok)),
        ({3}, ("--address", LONG, "status", run_id)),
    ]
    env = wfa_env(
        temporal_env.client.service_client.config.target_host,
        flows.task_queue,
        DATABASE_URL=database_url,
    )
    outcomes = await run_many([args for _, args in cases], env, concurrency=3)
    broken = [outcome for outcome in outcomes if not outcome.clean]
    assert broken == [], "\n".join(outcome.describe() for outcome in broken)
    wrong = [
        outcome
        for (allowed, _), outcome in zip(cases, outcomes, strict=True)
        # A refusal says why: on stderr, or in the JSON document `validate --json` prints.
        if outcome.code not in allowed
        or (outcome.code != 0 and not (outcome.err.strip() or '"problems"' in outcome.out))
    ]
    assert wrong == [], "\n".join(outcome.describe() for outcome in wrong)
    for outcome in outcomes:
        assert len(outcome.err) < 4000, outcome.describe()  # a 100k argument is not echoed whole
    # None of the refused starts started a run.
    assert not [r async for r in temporal_env.client.list_workflows("WorkflowId STARTS_WITH 'x'")]
    # The run that all of this was thrown at still waits, unharmed.
    status = await flows.status(run_id)
    assert [a.step_id for a in status.pending_approvals] == ["ok"]


async def test_output_that_cannot_be_written_loses_no_run_and_shows_no_traceback(
    temporal_env: WorkflowEnvironment, flows: FlowClient, database_url: str, tmp_path: Path
) -> None:
    """A probe: ``wfa start > /dev/full`` started a run and exited 70 ("a bug") with its generated
    id printed nowhere (a retry starts a duplicate); ``wfa status X >&-`` printed a traceback."""
    ok = write(
        tmp_path / "ok.json",
        json.dumps({"name": "hostile-full", "steps": [{"id": "s", "type": "set", "vars": {"x": 1}}]}),
    )
    env = wfa_env(
        temporal_env.client.service_client.config.target_host, flows.task_queue, DATABASE_URL=database_url
    )
    code, _, message = await _wfa_in_shell('start "$1" > /dev/full', env, ok)
    assert code == 3, message
    started = re.search(r"started (hostile-full-\S+) \(run id ", message)
    assert started is not None, message
    assert (await flows.status(started.group(1))).definition == "hostile-full"  # the run is there
    code, _, err = await _wfa_in_shell("--address 127.0.0.1:1 status nothing >&-", env)
    assert code == 3, err
    assert "Traceback" not in err, err
    # Nothing to print but a verdict: a closed stdout is no failure (a review: it became exit 70).
    assert await _wfa_in_shell('validate "$1" >&-', env, ok) == (0, "", "")
    # With stderr closed, an error is said nowhere, not into stdout's JSON (a review).
    code, out, _ = await _wfa_in_shell("--address 127.0.0.1:1 status nothing --json 2>&-", env)
    assert (code, out) == (3, ""), out


async def _wfa_in_shell(command: str, env: dict[str, str], *args: str) -> tuple[int | None, str, str]:
    """``wfa COMMAND`` run by ``sh`` (COMMAND holds its redirections; ``$1``... are ``args``):
    its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        f'exec "$0" -m starter {command}',
        sys.executable,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, out.decode(), err.decode()


async def test_start_json_stays_json_when_the_sdk_warns_about_a_large_input(
    temporal_env: WorkflowEnvironment, flows: FlowClient, database_url: str, tmp_path: Path
) -> None:
    """A probe: ``wfa start --json`` with a 600 KB input printed the SDK core's payload warning
    (``TMPRL1103``, with terminal colour codes) on stdout before the JSON, so a script reading the
    run's ids failed to parse them. Warnings belong on stderr."""
    ok = write(
        tmp_path / "ok.json",
        json.dumps({"name": "hostile-big", "steps": [{"id": "s", "type": "set", "vars": {"x": 1}}]}),
    )
    big = write(tmp_path / "big.json", json.dumps({"blob": "y" * 600_000}))
    env = wfa_env(
        temporal_env.client.service_client.config.target_host, flows.task_queue, DATABASE_URL=database_url
    )
    [outcome] = await run_many([("start", ok, "--input", f"@{big}", "--json")], env)
    assert outcome.code == 0, outcome.describe()
    started = json.loads(outcome.out)  # nothing but the JSON document
    assert (await flows.status(started["workflow_id"])).definition == "hostile-big"
    assert "TMPRL1103" in outcome.err, outcome.describe()  # said, on stderr
    assert "\x1b[" not in outcome.err, outcome.describe()


async def test_an_actor_from_the_environment_that_is_not_utf8_is_bad_input(
    temporal_env: WorkflowEnvironment, flows: FlowClient, database_url: str
) -> None:
    """An attacker's probe: ``WFA_ACTOR`` holding bytes that are not UTF-8 (the arguments are
    checked, the variable was not) reached PostgreSQL, and ``definitions activate`` (rollback,
    archive, deactivate) exited 70, "a bug". It is bad input now, named, and nothing is written."""
    env = wfa_env(
        temporal_env.client.service_client.config.target_host, flows.task_queue, DATABASE_URL=database_url
    )
    env["WFA_ACTOR"] = os.fsdecode(b"ops\xff")
    for command in ("definitions activate hostile-actor 1", "definitions rollback hostile-actor"):
        code, _, err = await _wfa_in_shell(command, env)
        assert code == 2, err
        assert "actor has a lone surrogate" in err, err
        assert "WFA_ACTOR" in err, err
        assert "Traceback" not in err, err


async def test_a_variable_that_is_not_utf8_stops_only_what_reads_it(
    temporal_env: WorkflowEnvironment, flows: FlowClient, database_url: str
) -> None:
    """An attacker's probe (or a stray shell setting): every variable of the environment went to
    Temporal's configuration loader, so one holding bytes that are not UTF-8, of any other tool,
    stopped every command, "Temporal configuration profile 'default': 'utf-8' codec can't
    encode". Only Temporal's variables are its now, and one of those is bad input, named."""
    env = wfa_env(
        temporal_env.client.service_client.config.target_host, flows.task_queue, DATABASE_URL=database_url
    )
    env["SOME_OTHER_TOOL"] = os.fsdecode(b"caf\xe9")
    code, _, err = await _wfa_in_shell("status no-such-run", env)
    assert code == 4, err  # the server answered: no such run
    assert "no-such-run" in err, err
    for name in ("TEMPORAL_TASK_QUEUE", "TEMPORAL_ADDRESS", "TEMPORAL_TLS_SERVER_NAME"):
        code, _, err = await _wfa_in_shell("status no-such-run", {**env, name: os.fsdecode(b"q\xff")})
        assert code == 2, err
        assert f"{name} has a lone surrogate" in err, err
        assert "Traceback" not in err, err


async def test_settings_that_are_not_text_or_out_of_range_are_named_not_internal_errors(
    tmp_path: Path,
) -> None:
    """A probe's exit-70s (a bug, the CLI says): a database URL, a state folder, a password or a
    row-change connection's secret holding bytes that are not UTF-8, a port out of range; and an
    empty ``--password-env`` made the role without a password, a connection secret that is no URL
    was "cannot reach" (3). Each is bad input now (2), named, and nothing is written."""
    env = {k: v for k, v in wfa_env("127.0.0.1:1", "tq").items() if k != "DATABASE_URL"}
    nowhere = "postgresql://u@127.0.0.1:1/x"  # a command that connected would be 3, not 2
    not_utf8 = os.fsdecode(b"\xff")
    state = tmp_path / f"state{not_utf8}"
    role = ("db", "grant-tenant", "acme", "--role", "acme_app", "--database-url", nowhere)
    uninstall = ("triggers", "uninstall", "--connection", "CRM", "--table", "t", "--definition", "d")
    cases = [
        (
            ("definitions", "list"),
            {"DATABASE_URL": f"postgresql://u@h{not_utf8}/x"},
            "database URL has a lone",
        ),
        (("definitions", "list"), {"WFA_STATE_DIR": str(state)}, "state folder (WFA_STATE_DIR) has a lone"),
        ((*role, "--password-env", "PW"), {"PW": f"pw{not_utf8}"}, "the password has a lone surrogate"),
        ((*role, "--password-env", ""), {}, "--password-env '': that environment variable is not set"),
        (uninstall, {"WFA_SECRET_CRM": f"postgresql://u@h{not_utf8}/x"}, "'CRM' of tenant 'default': the"),
        (uninstall, {"WFA_SECRET_CRM": "not a url"}, "not a database URL"),
        (("serve", "--port", "99999"), {}, "a port is 0 to 65535, not 99999"),
    ]
    outcomes = [await run_wfa(*args, env={**env, **extra}) for args, extra, _ in cases]
    for (_, _, expected), outcome in zip(cases, outcomes, strict=True):
        assert outcome.clean, outcome.describe()
        assert outcome.code == 2, outcome.describe()
        assert expected in outcome.err, outcome.describe()
    assert not state.exists()  # no PostgreSQL data folder made under a name it then failed on


async def test_register_reads_a_file_as_validate_does(tmp_path: Path) -> None:
    """A probe: ``definitions register`` took a file's text for a path unless it began with ``{``,
    so a file with a byte-order mark was "definition file not found: {...", and an empty one
    "cannot read '.': Is a directory". It says what ``validate`` says, before any connection."""
    env = {**wfa_env("127.0.0.1:1", "tq"), "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"name": "x", "steps": [{"id": "s", "type": "delay", "duration": "1s"}]}')
    empty = tmp_path / "empty.json"
    empty.write_text("")
    for path, expected in ((bom, "Unexpected UTF-8 BOM"), (empty, "not valid JSON: Expecting value")):
        for command in ("validate", "definitions register"):
            outcome = await run_wfa(*command.split(), str(path), *(["--author", "ann"] if "register" in command else []), env=env)  # fmt: skip
            assert outcome.clean, outcome.describe()
            assert outcome.code == 2, outcome.describe()
            assert expected in outcome.err, outcome.describe()
            assert "not found" not in outcome.err, outcome.describe()
