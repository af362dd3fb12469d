"""The ``wfa`` command line, run in-process through :func:`starter.cli.main`.

Offline checks (validation, bad input, unreachable server) need no Temporal. The rest run against
the session's dev server with an in-process worker; ``main`` runs ``asyncio.run`` itself, so it is
called in a thread while the worker keeps running on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from interpreter.state import ResultSteps
from starter.cli import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_RUN_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    RESULT_STEPS,
    main,
)
from starter.client import FlowClient
from tests.helpers.http_server import RecordingServer
from worker import build_worker

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPENSE = EXAMPLES / "expense-approval.json"
UNREACHABLE = "127.0.0.1:1"


class Run:
    """Runs ``wfa`` in-process and captures what it printed."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], address: str | None, task_queue: str | None
    ) -> None:
        self._capsys = capsys
        self._prefix = []
        if address:
            self._prefix += ["--address", address]
        if task_queue:
            self._prefix += ["--task-queue", task_queue]

    def sync(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main([*self._prefix, *args])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(self.sync, *args)


@pytest.fixture
def offline(capsys: pytest.CaptureFixture[str]) -> Run:
    """``wfa`` pointed at an address where nothing listens."""
    return Run(capsys, UNREACHABLE, None)


@pytest.fixture
def wfa(capsys: pytest.CaptureFixture[str], temporal_env: WorkflowEnvironment, task_queue: str) -> Run:
    """``wfa`` pointed at the session's dev server and the test's task queue."""
    return Run(capsys, temporal_env.client.service_client.config.target_host, task_queue)


def expense_input(api: str, amount: int = 640) -> str:
    return json.dumps(
        {
            "api": api,
            "expense": {"id": "EXP-1", "employee": "sam", "email": "sam@example.org", "amount": amount},
        }
    )


def fields(out: str) -> dict[str, str]:
    """The ``Key  value`` block at the top of ``status`` / ``result`` output."""
    block = {}
    for line in out.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition("  ")
        block[key] = value.strip()
    return block


async def eventually(probe: Callable[[], Any], accept: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        assert time.monotonic() < deadline, f"not reached after {timeout}s: {value}"
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------- offline


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_validate_accepts_every_example(offline: Run, path: Path) -> None:
    code, out, err = offline.sync("validate", str(path))
    assert code == EXIT_OK, err
    assert out.startswith(f"{path}: valid — {path.stem} v1")
    assert err == ""


def test_validate_json_output(offline: Run) -> None:
    code, out, _ = offline.sync("validate", str(EXPENSE), "--json")
    assert code == EXIT_OK
    doc = json.loads(out)
    assert doc["valid"] is True
    assert doc["name"] == "expense-approval"
    assert len(doc["hash"]) == 64


def test_validate_lists_every_problem_with_its_json_path(offline: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "bad",
                "steps": [
                    {"id": "send", "type": "task", "action": "smtp"},
                    {"id": "pause", "type": "delay", "duration": "3 fortnights"},
                    {"id": "route", "type": "condition", "if": "true", "then": {"goto": "nowhere"}},
                    {"id": "extra", "type": "set", "vars": {"x": 1}, "colour": "red"},
                ],
            }
        )
    )
    code, out, err = offline.sync("validate", str(bad))
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err.startswith(f"{bad}: invalid workflow definition")
    assert "$.steps[1].duration:" in err
    assert "$.steps[3].colour: unknown field" in err
    assert "Traceback" not in err


def test_validate_reports_whole_tree_problems(offline: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "bad",
                "steps": [
                    {"id": "send", "type": "task", "action": "smtp"},
                    {"id": "route", "type": "condition", "if": "true", "then": {"goto": "nowhere"}},
                ],
            }
        )
    )
    code, _, err = offline.sync("validate", str(bad))
    assert code == EXIT_BAD_INPUT
    assert "$.steps[0].action: unknown action 'smtp'" in err
    assert "$.steps[1].then.goto: jump to unknown step 'nowhere'" in err
    assert "(2 problems)" in err


def test_validate_checks_a_schedules_fixed_input_against_the_schema(offline: Run, tmp_path: Path) -> None:
    """Checked in a separate process (activities.input_check), not by the pure validator that
    runs wherever a stored definition is loaded."""
    bad = tmp_path / "scheduled.json"
    bad.write_text(
        json.dumps(
            {
                "name": "scheduled",
                "input_schema": {"type": "object", "properties": {"who": {"type": "integer"}}},
                "triggers": [{"type": "schedule", "every": "1h", "input": {"who": "ann"}}],
                "steps": [{"id": "wait", "type": "delay", "duration": "1s"}],
            }
        )
    )
    code, out, err = offline.sync("validate", str(bad))
    assert code == EXIT_BAD_INPUT, err
    assert out == ""
    assert "$.triggers[0].input.who: does not match input_schema: 'ann' is not of type 'integer'" in err
    assert "Traceback" not in err


def test_validate_refuses_a_definition_whose_templates_hold_too_many_tokens(
    offline: Run, tmp_path: Path
) -> None:
    """Refused without compiling them (an attacker's 1.5 MB of templates took 24 s to read)."""
    heavy = tmp_path / "heavy.json"
    template = "{{ input.a }}x" * 107_000
    heavy.write_text(
        json.dumps({"name": "heavy", "steps": [{"id": "s", "type": "set", "vars": {"v": template}}]})
    )
    code, out, err = offline.sync("validate", str(heavy))
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert "$.steps[0].vars.v:" in err
    assert "hold more than 10,000 tokens together" in err
    assert "Traceback" not in err


def test_validate_bad_json_and_missing_file(offline: Run, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "steps": [')
    code, _, err = offline.sync("validate", str(broken))
    assert code == EXIT_BAD_INPUT
    assert "$: not valid JSON" in err

    missing = tmp_path / "nope.json"
    code, _, err = offline.sync("validate", str(missing))
    assert code == EXIT_BAD_INPUT
    assert err.strip() == f"wfa validate: definition file not found: {missing}"


def test_start_refuses_bad_input_before_connecting(offline: Run, tmp_path: Path) -> None:
    # The address is unreachable: exit 2 (not 3) shows nothing was sent.
    code, _, err = offline.sync("start", str(EXPENSE), "--input", "{not json")
    assert code == EXIT_BAD_INPUT
    assert "--input is not valid JSON" in err

    code, _, err = offline.sync("start", str(EXPENSE), "--input", "[1, 2]")
    assert code == EXIT_BAD_INPUT
    assert "--input must be a JSON object, not list" in err

    code, _, err = offline.sync("start", str(EXPENSE), "--input", f"@{tmp_path / 'input.json'}")
    assert code == EXIT_BAD_INPUT
    assert "--input: file not found" in err

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "Bad Name", "steps": []}))
    code, _, err = offline.sync("start", str(bad))
    assert code == EXIT_BAD_INPUT
    assert "$.name:" in err
    assert "$.steps:" in err


def test_input_from_a_file(offline: Run, tmp_path: Path) -> None:
    data = tmp_path / "input.json"
    data.write_text(expense_input("http://127.0.0.1:9"))
    code, _, err = offline.sync("start", str(EXPENSE), "--input", f"@{data}")
    assert code == EXIT_UNAVAILABLE  # the input was fine; only then did it try the server
    assert UNREACHABLE in err


@pytest.mark.parametrize(
    "args",
    [
        ["status", "some-run"],
        ["result", "some-run"],
        ["approve", "some-run", "--actor", "a"],
        ["cancel", "some-run", "--actor", "a"],
        ["start", str(EXPENSE)],
    ],
    ids=lambda a: a[0],
)
def test_unreachable_server_exits_3_naming_the_address(offline: Run, args: list[str]) -> None:
    code, out, err = offline.sync(*args)
    assert code == EXIT_UNAVAILABLE
    assert out == ""
    assert f"cannot reach the Temporal server at {UNREACHABLE}" in err
    assert "Traceback" not in err


def test_connection_options_after_the_command_and_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = main(["status", "x", "--address", "127.0.0.1:2"])
    assert code == EXIT_UNAVAILABLE
    assert "127.0.0.1:2" in capsys.readouterr().err
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:3")
    assert main(["status", "x"]) == EXIT_UNAVAILABLE
    assert "127.0.0.1:3" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["result", "x"], ["watch", "x"], ["start", str(EXPENSE), "--wait"]])
async def test_timeout_bounds_connecting_to_a_server_that_never_answers(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A probe: ``wfa result X --timeout 3`` against a server that accepts the connection and never
    answers waited for the SDK's own 30 s connect timeout. Connecting is now bounded by
    ``--timeout`` too, given at least 10 s (a slow server must still be reached): exit 3
    (unreachable) naming it."""
    silent = await asyncio.start_server(lambda r, w: asyncio.sleep(3600), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        code, _, err = await Run(capsys, f"127.0.0.1:{port}", None)(*command, "--timeout", "1")
    finally:
        silent.close()
    assert code == EXIT_UNAVAILABLE, err
    assert f"cannot reach the Temporal server at 127.0.0.1:{port} within 10 s (--timeout 1;" in err, err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_BAD_INPUT
    assert main(["approve", "x"]) == EXIT_BAD_INPUT  # --actor is required
    assert "--actor" in capsys.readouterr().err
    assert main(["--help"]) == EXIT_OK
    for command in ("validate", "start", "approve", "reject", "cancel", "status", "result"):
        assert main([command, "--help"]) == EXIT_OK
    assert "--address" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--address", "--namespace", "--task-queue"])
@pytest.mark.parametrize("value", ["", "  ", "a\nb"], ids=["empty", "blank", "newline"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_an_empty_connection_option_exits_2_instead_of_falling_back(
    capsys: pytest.CaptureFixture[str], option: str, value: str, where: str
) -> None:
    """A probe: ``wfa --address '' status X`` asked the default server, as if nothing had been
    said (a script whose variable was unset reached another server or namespace). An empty
    ``--tenant`` is refused as an invalid tenant (``tests/test_registry_runs.py``)."""
    args = [option, value, "status", "x"] if where == "before" else ["status", "x", option, value]
    assert main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert option in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        (["definitions", "list", "--database-url", "notaurl"], {}, "not a database URL: 'notaurl'"),
        (
            ["definitions", "list", "--database-url", "mysql://x/y"],
            {},
            "the store needs PostgreSQL, not 'mysql'",
        ),
        (
            ["payloads", "gc", "--dry-run"],
            {"WFA_PAYLOAD_STORE": "postgres:notaurl"},
            "WFA_PAYLOAD_STORE: not a database URL: 'notaurl'",
        ),
    ],
    ids=["definitions", "definitions-mysql", "payloads-gc"],
)
def test_a_database_url_that_is_not_one_exits_2(
    offline: Run, monkeypatch: pytest.MonkeyPatch, args: list[str], settings: dict[str, str], message: str
) -> None:
    # A setting to correct (exit 2), not a failed run (exit 1, as it was: found by a probe).
    for variable, value in settings.items():
        monkeypatch.setenv(variable, value)
    code, _out, err = offline.sync(*args)
    assert code == EXIT_BAD_INPUT, err
    assert message in err
    assert "Traceback" not in err


# -------------------------------------------------------------------------- against a dev server


async def test_unknown_run_exits_4(wfa: Run) -> None:
    run_id = f"no-such-run-{uuid4().hex[:6]}"
    for args in (
        ["status", run_id],
        ["result", run_id],
        ["approve", run_id, "--actor", "x"],
        ["cancel", run_id, "--actor", "x"],
    ):
        code, out, err = await wfa(*args)
        assert code == EXIT_NOT_FOUND, (args, err)
        assert out == ""
        assert f"no run with id {run_id!r}" in err


async def test_an_unknown_interpreter_generation_is_refused_naming_the_variable(
    wfa: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WFA_ENGINE_LEVEL`` pins the generation runs are started at; one this build does not know
    would start runs no worker of it runs: refused before anything starts (exit 2)."""
    for bad in ("abc", "-1", "99"):
        monkeypatch.setenv("WFA_ENGINE_LEVEL", bad)
        code, out, err = await wfa("start", str(EXPENSE), "--input", expense_input("http://127.0.0.1:1"))
        assert code == EXIT_BAD_INPUT, (bad, err)
        assert out == ""
        assert "WFA_ENGINE_LEVEL" in err
        assert "Traceback" not in err


def _echo_definition(path: Path) -> Path:
    """A two-step definition of ``echo`` tasks (no service needed), written to ``path``."""
    steps = [
        {"id": "a", "type": "task", "action": "echo", "input": {"value": "{{ input.n }}"}},
        {"id": "b", "type": "task", "action": "echo", "input": {"value": "{{ steps.a.output }}-b"}},
    ]
    path.write_text(
        json.dumps({"name": "result-steps-cli", "steps": steps, "output": "{{ steps.b.output }}"})
    )
    return path


async def _recorded_options(client: Client, workflow_id: str) -> dict[str, Any]:
    """The options of the run's input as its history recorded them."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    options: dict[str, Any] = json.loads(started.input.payloads[0].data)["options"]
    return options


async def test_result_steps_from_the_command_line_or_the_environment(
    wfa: Run, worker: None, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wfa start --result-steps`` (else ``$WFA_RESULT_STEPS``) names what the run's result keeps of
    its step records; a dry run keeps them whatever the variable says (it reports its path from
    them)."""
    assert tuple(s.value for s in ResultSteps) == RESULT_STEPS
    definition = str(_echo_definition(tmp_path / "two.json"))
    code, out, err = await wfa(
        "start", definition, "--input", '{"n": 4}', "--result-steps", "none", "--wait", "--json"
    )
    assert code == EXIT_OK, (out, err)
    started = json.loads(out)
    assert started["result"]["state"] == "completed"
    assert started["result"]["output"] == "4-b"
    assert started["result"]["steps"] == []  # none in a completed run's result
    assert (await _recorded_options(client, started["workflow_id"]))["result_steps"] == "none"

    monkeypatch.setenv("WFA_RESULT_STEPS", "compact")
    code, out, err = await wfa("start", definition, "--input", '{"n": 5}', "--wait", "--json")
    assert code == EXIT_OK, err
    started = json.loads(out)
    assert [s["path"] for s in started["result"]["steps"]] == ["a", "b"]  # compact reads back whole
    assert (await _recorded_options(client, started["workflow_id"]))["result_steps"] == "compact"

    monkeypatch.setenv("WFA_RESULT_STEPS", "none")
    code, out, err = await wfa("start", definition, "--input", '{"n": 6}', "--dry-run", "--wait", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["path"] == ["a", "b"]
    assert "result_steps" not in await _recorded_options(client, json.loads(out)["workflow_id"])  # full


async def test_result_steps_refused_before_anything_starts(
    wfa: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown value of ``$WFA_RESULT_STEPS`` or ``--result-steps``, or ``none`` with a dry run
    (whose path comes from the records): exit 2 naming the problem, nothing started."""
    definition = str(_echo_definition(tmp_path / "two.json"))
    code, out, err = await wfa("start", definition, "--result-steps", "some")
    assert code == EXIT_BAD_INPUT
    assert "--result-steps" in err
    assert "'some'" in err
    code, out, err = await wfa("start", definition, "--dry-run", "--result-steps", "none")
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert "dry run" in err
    monkeypatch.setenv("WFA_RESULT_STEPS", "brief")
    code, out, err = await wfa("start", definition)
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert "WFA_RESULT_STEPS" in err
    assert "full, compact, none" in err
    assert "Traceback" not in err


async def test_start_approve_status_result(wfa: Run, worker: None, http_server: RecordingServer) -> None:
    business_key = f"expense-{uuid4().hex[:6]}"
    code, out, err = await wfa(
        "start", str(EXPENSE), "--input", expense_input(http_server.url), "--id", business_key
    )
    assert code == EXIT_OK, err
    assert out.startswith(f"Started {business_key} (expense-approval v1, task queue ")

    # The same business key while it runs: the existing run, no duplicate.
    code, out, _ = await wfa(
        "start", str(EXPENSE), "--input", expense_input(http_server.url), "--id", business_key, "--json"
    )
    assert code == EXIT_OK
    assert json.loads(out)["started"] is False

    # Even with another definition: the running one is returned, and the CLI says so.
    other = EXAMPLES / "uptime-check.json"
    code, out, _ = await wfa(
        "start", str(other), "--input", '{"api": "http://127.0.0.1:1"}', "--id", business_key
    )
    assert code == EXIT_OK
    assert f"{business_key} is already running" in out
    assert "note: it runs expense-approval v1" in out
    assert f"not the uptime-check v1 in {other}" in out

    status = await eventually(
        lambda: wfa("status", business_key, "--json"), lambda r: json.loads(r[1])["pending_approvals"]
    )
    assert json.loads(status[1])["state"] == "awaiting_approval"

    code, out, _ = await wfa("status", business_key)
    assert code == EXIT_OK
    assert fields(out)["State"] == "awaiting_approval"
    assert fields(out)["Current"] == "route, manager_approval"
    assert fields(out)["Definition"] == "expense-approval v1"
    assert "manager_approval: approvers manager" in out
    assert "    message       sam claims 640 for an expense" in out
    assert "notify_manager" in out  # the steps table
    assert "STEP" in out
    assert "ATTEMPTS" in out

    code, out, err = await wfa("approve", business_key, "--actor", "mallory")
    assert code == EXIT_REFUSED
    assert out == ""
    assert "'mallory' may not decide step 'manager_approval' (approvers: manager)" in err

    code, out, err = await wfa(
        "approve", business_key, "--actor", "manager", "--data", '{"comment": "fine"}', "--reason", "ok"
    )
    assert code == EXIT_OK, err
    assert out.strip() == f"Approved {business_key} as manager"

    code, out, _ = await wfa("result", business_key, "--timeout", "30")
    assert code == EXIT_OK
    assert fields(out)["State"] == "completed"
    assert '"approved_by": "manager"' in fields(out)["Output"]
    assert "reimburse" in out

    code, out, _ = await wfa("result", business_key, "--json")
    assert json.loads(out)["output"] == {
        "expense_id": "EXP-1",
        "status": "approved",
        "approved_by": "manager",
    }

    code, out, _ = await wfa("status", business_key)
    assert "approve by manager (ok): accepted" in out

    # Once completed, the business key cannot start another run.
    code, _, err = await wfa(
        "start", str(EXPENSE), "--input", expense_input(http_server.url), "--id", business_key
    )
    assert code == EXIT_REFUSED
    assert "already completed" in err

    # Deciding on an ended run is refused too.
    code, _, err = await wfa("approve", business_key, "--actor", "manager")
    assert code == EXIT_REFUSED
    assert "has already ended (completed)" in err


async def test_start_wait_returns_the_result(wfa: Run, worker: None, http_server: RecordingServer) -> None:
    code, out, err = await wfa(
        "start", str(EXPENSE), "--input", expense_input(http_server.url, amount=20), "--wait"
    )
    assert code == EXIT_OK, err
    assert fields(out.split("\n\n", 1)[1])["State"] == "completed"
    assert '"approved_by": "policy"' in out


async def test_reject_without_waiting_then_result(
    wfa: Run, worker: None, http_server: RecordingServer
) -> None:
    code, out, _ = await wfa("start", str(EXPENSE), "--input", expense_input(http_server.url), "--json")
    run_id = json.loads(out)["workflow_id"]
    assert run_id.startswith("expense-approval-")
    await eventually(lambda: wfa("status", run_id, "--json"), lambda r: json.loads(r[1])["pending_approvals"])

    # A signal cannot answer: a refused one is only on record in the status.
    code, out, _ = await wfa("reject", run_id, "--actor", "mallory", "--no-wait")
    assert code == EXIT_OK
    assert "reject signal sent" in out
    code, out, _ = await eventually(lambda: wfa("status", run_id), lambda r: "REFUSED" in r[1])
    assert "reject by mallory: REFUSED: 'mallory' may not decide step 'manager_approval'" in out

    code, out, _ = await wfa("reject", run_id, "--actor", "manager", "--reason", "no receipt", "--no-wait")
    assert code == EXIT_OK

    code, out, _ = await wfa("result", run_id, "--json", "--timeout", "30")
    assert code == EXIT_OK
    assert json.loads(out)["output"]["status"] == "rejected"
    assert json.loads(out)["output"]["reason"] == "no receipt"


async def test_cancel_and_result_exit_1(wfa: Run, worker: None, http_server: RecordingServer) -> None:
    code, out, _ = await wfa("start", str(EXPENSE), "--input", expense_input(http_server.url), "--json")
    run_id = json.loads(out)["workflow_id"]
    await eventually(lambda: wfa("status", run_id, "--json"), lambda r: json.loads(r[1])["pending_approvals"])

    code, out, _ = await wfa("result", run_id, "--timeout", "0.5")
    assert code == EXIT_TIMEOUT

    code, out, _ = await wfa("cancel", run_id, "--actor", "ops", "--reason", "duplicate claim")
    assert code == EXIT_OK
    assert f"Cancel requested for {run_id} by ops" in out

    code, out, _ = await wfa("result", run_id, "--timeout", "30")
    assert code == EXIT_RUN_FAILED
    assert fields(out)["State"] == "cancelled"
    assert fields(out)["Error"] == "RunCancelled: cancelled by ops: duplicate claim"

    code, out, _ = await wfa("status", run_id)
    assert fields(out)["Cancelled by"] == "ops (duplicate claim)"


async def test_failed_run_result_exit_1(
    wfa: Run, worker: None, http_server: RecordingServer, tmp_path: Path
) -> None:
    http_server.route("POST", "/fail", [(400, {}, {"error": "nope"})])
    definition = tmp_path / "fails.json"
    definition.write_text(
        json.dumps(
            {
                "name": "fails",
                "steps": [
                    {
                        "id": "call",
                        "type": "task",
                        "action": "http",
                        "input": {"method": "POST", "url": "{{ input.api }}/fail"},
                    }
                ],
            }
        )
    )
    business_key = f"fails-{uuid4().hex[:6]}"
    run_input = json.dumps({"api": http_server.url})
    code, out, err = await wfa("start", str(definition), "--input", run_input, "--id", business_key, "--wait")
    assert code == EXIT_RUN_FAILED, err
    assert fields(out.split("\n\n", 1)[1])["State"] == "failed"
    assert "HttpClientError" in fields(out.split("\n\n", 1)[1])["Error"]
    assert "call" in out

    # A failed run's business key may be started again (unlike a completed one's).
    code, out, err = await wfa("start", str(definition), "--input", run_input, "--id", business_key, "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["started"] is True


async def test_what_a_remote_server_or_a_raw_client_wrote_cannot_drive_the_terminal(
    wfa: Run, worker: None, client: Client, task_queue: str, http_server: RecordingServer, tmp_path: Path
) -> None:
    """The attacker: a server a step calls answers with an error body holding terminal escape
    sequences (one sets the window title, one clears the screen and one swaps the text's direction),
    and a raw client starts a run whose id holds one. ``wfa status``, ``result`` and ``list`` show
    them as ``\\u001b`` text, on stdout and stderr, and ``--json`` stays the same JSON."""
    hostile = "\x1b]0;pwned\x07\x1b[2J\r\u202eevil\x7f\x9b"
    http_server.route("POST", "/fail", [(200, {}, {"error": hostile})])
    definition = tmp_path / "hostile.json"
    definition.write_text(
        json.dumps(
            {
                "name": "hostile-terminal",
                "steps": [
                    {
                        "id": "call",
                        "type": "task",
                        "action": "http",
                        "input": {"method": "POST", "url": "{{ input.api }}/fail"},
                    }
                ],
                "output": {"said": "{{ steps.call.output.body.error }}"},
            }
        )
    )
    code, out, err = await wfa(
        "start", str(definition), "--input", json.dumps({"api": http_server.url}), "--json"
    )
    assert code == EXIT_OK, err
    run_id = json.loads(out)["workflow_id"]
    raw_id = f"raw-\x1b[31m-{uuid4().hex[:6]}"
    await client.start_workflow(
        "hostile-terminal", id=raw_id, task_queue=f"{task_queue}-nobody", search_attributes=None
    )
    for args in (("result", run_id, "--timeout", "30"), ("list", "--limit", "50")):
        code, out, err = await wfa(*args)
        printed = out + err
        assert not any(c in printed for c in "\x1b\x07\r\u202e\x7f\x9b"), (args, printed)
        assert "\\u001b" in printed, (args, printed)
    code, out, _ = await wfa("result", run_id, "--json")
    assert json.loads(out)["output"] == {"said": hostile}


async def test_status_of_an_ended_run_without_a_worker(
    wfa: Run, client: Client, task_queue: str, http_server: RecordingServer
) -> None:
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
    ):
        code, out, _ = await wfa(
            "start", str(EXPENSE), "--input", expense_input(http_server.url, amount=10), "--wait", "--json"
        )
        assert code == EXIT_OK
    run_id = json.loads(out)["workflow_id"]
    # No worker answers the query now: the status is rebuilt from the run's result.
    code, out, err = await wfa("status", run_id)
    assert code == EXIT_OK, err
    assert fields(out)["State"] == "completed"
    assert "reimburse" in out


def test_a_version_too_large_is_named_as_such(offline: Run, tmp_path: Path) -> None:
    """``NAME@VERSION`` with a version of ten digits or more is a reference with a bad version, not
    a file that does not exist; a definition file whose version no run could carry (the
    ``DefinitionVersion`` attribute is an Int) fails ``validate`` as it fails ``start`` (both found
    by a probe: validate said valid)."""
    code, _out, err = offline.sync("start", "child@1000000000")
    assert code == EXIT_BAD_INPUT
    assert "invalid definition reference 'child@1000000000': no version has more than 9 digits" in err
    huge = tmp_path / "huge.json"
    huge.write_text(
        json.dumps(
            {"name": "huge", "version": 10**30, "steps": [{"id": "s", "type": "set", "vars": {"x": 1}}]}
        )
    )
    code, _out, err = offline.sync("validate", str(huge))
    assert code == EXIT_BAD_INPUT
    assert "$.version: Input should be less than or equal to 9223372036854775807" in err
    assert "Traceback" not in err


@workflow.defn(name="NotTheGenericWorkflow")
class _NotTheGenericWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None


async def test_status_of_a_run_whose_task_keeps_failing_says_so(
    wfa: Run, client: Client, task_queue: str
) -> None:
    """A run whose workflow task fails on every attempt (here: the worker polling its queue does
    not have the generic workflow) cannot answer a query; ``wfa status`` says so and why to look,
    exit 3, where it said "could not query the run: FAILED_PRECONDITION" with exit 1, the code of
    a failed run (found by a probe)."""
    started = await FlowClient(client, task_queue=task_queue).start_run(
        {"name": "cli-task-failing", "steps": [{"id": "s", "type": "set", "vars": {"x": 1}}]},
        workflow_id=f"cli-task-failing-{uuid4().hex[:8]}",
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[_NotTheGenericWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):

        async def ask() -> tuple[int, str, str]:
            return await wfa("status", started.workflow_id)

        # The first answers may be "no worker answered" (exit 3 too) until the task has failed.
        code, _out, err = await eventually(ask, lambda r: "keeps failing" in r[2], timeout=90)
    assert code == EXIT_UNAVAILABLE
    assert "its workflow task keeps failing on the worker" in err
    assert "WorkflowTaskFailed" in err
    assert "Traceback" not in err
    description = await client.get_workflow_handle(started.workflow_id).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING  # nothing lost: a worker can go on


def test_status_shows_data_as_it_was_written() -> None:
    """A probe: a ``${secret:...}`` inside data showed as ``$${secret:...}``, the escape the run
    keeps it in (data is inert). ``wfa status`` shows the text; ``--json`` what the run holds."""
    import io
    from datetime import UTC, datetime

    from interpreter.state import PendingApproval, RunState, RunStatus
    from starter.cli import print_status

    kept = "$${secret:PROBE}"
    waiting = PendingApproval(
        step_id="review", path="review", approvers=["ann"], message=f"Pay {kept}", since=datetime.now(UTC)
    )
    for status in (
        RunStatus(
            definition="d", version=1, state=RunState.AWAITING_APPROVAL, current_steps=["review"],
            steps=[], pending_approvals=[waiting], decisions=[], vars={},
        ),
        RunStatus(
            definition="d", version=1, state=RunState.COMPLETED, current_steps=[], steps=[],
            pending_approvals=[], decisions=[], vars={}, output={"payee": kept},
        ),
    ):  # fmt: skip
        shown = io.StringIO()
        print_status("run-1", status, shown)
        assert "${secret:PROBE}" in shown.getvalue()
        assert kept not in shown.getvalue()
