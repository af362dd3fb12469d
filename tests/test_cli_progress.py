"""What ``wfa`` says about a run that waits, against the dev server with a real worker and store.

* ``wfa status`` shows a retrying step's attempt and last error (from Temporal's pending activity),
  and that error is the action's own bounded message, not "Failure exceeds size limit", even when
  the failing service answers with a megabyte and the URL is 20,000 characters long.
* ``wfa result`` prints, once per change, what the run waits on: a retrying step, an approval, a
  parked dead letter with its id, a timer with its time. The test reacts to each line (nothing is
  timed): it fixes the service, approves, redrives, cancels.
* ``wfa dead-letters redrive --input`` merges into the recorded input: the method and body stay.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any
from uuid import uuid4

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.base import MAX_FAILURE_MESSAGE_BYTES
from activities.store.database import Database
from starter.cli import EXIT_OK, EXIT_RUN_FAILED, main
from starter.client import FlowClient
from tests.helpers.http_server import RecordedRequest, RecordingServer
from tests.helpers.wfa_process import ROOT, wfa_env
from tests.workflows.support import eventually

LINE_WAIT_S = 120.0
"""How long a line the test waits for may take at most (never expected: it is a hang detector)."""


@pytest.fixture
def flows(client: Client, database: Database, task_queue: str, store_worker: Worker) -> FlowClient:
    """A client with the store (no tenant), and a worker with the store's activities on its queue."""
    return FlowClient(client, task_queue=task_queue, database=database)


def wfa_in_process(capsys: pytest.CaptureFixture[str], flows: FlowClient, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    address = flows.client.service_client.config.target_host
    code = main(["--address", address, "--task-queue", flows.task_queue, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_status_shows_a_retrying_steps_attempt_and_its_bounded_error(
    flows: FlowClient, http_server: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = "/flaky/" + "a" * 20_000
    http_server.route("GET", path, [(500, {}, "x" * 1_000_000)])
    definition = {
        "name": "cli-flaky",
        "steps": [
            {
                "id": "call",
                "type": "task",
                "action": "http",
                "input": {"url": f"{http_server.url}{path}"},
                "retry": {"preset": "constant", "initial_interval": "1s", "maximum_attempts": 100},
            }
        ],
    }
    run = await flows.start_run(definition, workflow_id=f"cli-flaky-{uuid4()}")
    try:
        described = await eventually(
            lambda: flows.describe(run.workflow_id),
            lambda d: any(p.attempt >= 2 for p in d.raw_description.pending_activities),
            timeout=LINE_WAIT_S,
            interval=0.2,
        )
        (pending,) = described.raw_description.pending_activities
        failure = pending.last_failure
        assert failure.message != "Failure exceeds size limit."
        assert failure.message.startswith(f"GET {http_server.url}/flaky/aaaa")
        assert failure.message.endswith("more characters)")
        assert len(failure.message.encode()) <= MAX_FAILURE_MESSAGE_BYTES
        assert failure.application_failure_info.type == "HttpServerError"
        assert failure.ByteSize() <= 4096  # the server's limit for a pending activity's failure

        code, out, _ = await asyncio.to_thread(
            wfa_in_process, capsys, flows, "status", run.workflow_id, "--json"
        )
        assert code == EXIT_OK
        (step,) = json.loads(out)["steps"]
        assert step["status"] == "running"
        assert step["attempts"] >= 2
        assert (step["error_type"], step["error"]) == ("HttpServerError", failure.message)

        code, out, _ = await asyncio.to_thread(wfa_in_process, capsys, flows, "status", run.workflow_id)
        assert code == EXIT_OK
        row = next(line for line in out.splitlines() if line.strip().startswith("call "))
        assert "running" in row
        assert "HttpServerError: GET" in row
        assert int(row.split()[3]) >= 2  # STEP TYPE STATUS ATTEMPTS
    finally:
        await flows.client.get_workflow_handle(run.workflow_id).terminate("test over")


class StderrLines:
    """The stderr of a running ``wfa`` process, line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[str] = []

    async def until(self, *needles: str) -> str:
        """Reads lines until one contains every needle; returns it."""
        assert self.process.stderr is not None
        while True:
            raw = await asyncio.wait_for(self.process.stderr.readline(), LINE_WAIT_S)
            assert raw, f"wfa ended before printing {needles}; it printed: {self.seen}"
            line = raw.decode().rstrip("\n")
            self.seen.append(line)
            if all(needle in line for needle in needles):
                return line


async def test_result_says_what_the_run_waits_on_and_redrive_merges_the_input(
    temporal_env: WorkflowEnvironment,
    flows: FlowClient,
    database_url: str,
    http_server: RecordingServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    healthy = threading.Event()

    def inventory(request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        return (200, {}, {"ok": True}) if healthy.is_set() else (503, {}, {"error": "warming up"})

    http_server.route("GET", "/inventory", inventory)
    http_server.route("POST", "/charge", [(402, {}, {"error": "card declined"})])
    http_server.route("POST", "/charge-v2", [(200, {}, {"charged": True})])
    definition = {
        "name": "cli-waits",
        "steps": [
            {
                "id": "inventory",
                "type": "task",
                "action": "http",
                "input": {"url": f"{http_server.url}/inventory"},
                "retry": {"preset": "constant", "initial_interval": "1s", "maximum_attempts": 1000},
            },
            {"id": "ok", "type": "approval", "approvers": ["boss", "deputy"]},
            {
                "id": "charge",
                "type": "task",
                "action": "http",
                "input": {
                    "method": "POST",
                    "url": f"{http_server.url}/charge",
                    "headers": {"X-Shop": "cli"},
                    "json": {"card": "{{ input.card }}", "amount": 42},
                },
                "retry": {"maximum_attempts": 1},
                "on_failure": "dead_letter",
            },
            {"id": "nap", "type": "delay", "duration": "1h", "name": "cool-off"},
        ],
    }
    run = await flows.start_run(definition, {"card": "4242"}, workflow_id=f"cli-waits-{uuid4()}")
    env = wfa_env(
        temporal_env.client.service_client.config.target_host, flows.task_queue, DATABASE_URL=database_url
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter",
        "result",
        run.workflow_id,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stderr = StderrLines(process)
        line = await stderr.until("step inventory is retrying: attempt", "HttpServerError")
        assert "503" in line
        healthy.set()
        line = await stderr.until("waiting for approval at ok from boss, deputy")
        assert f"wfa approve {run.workflow_id} --actor NAME" in line
        await flows.approve(run.workflow_id, "boss")

        line = await stderr.until("parked at charge as dead letter")
        (row,) = await flows.list_dead_letters(workflow_id=run.workflow_id)
        assert f"dead letter {row.id} after 1 attempt(s): HttpClientError" in line
        assert f"wfa dead-letters show {row.id}" in line

        # As the README shows: correct only the URL; method, headers and body are kept.
        code, _, err = await asyncio.to_thread(
            wfa_in_process,
            capsys,
            flows,
            "--database-url",
            database_url,
            "dead-letters",
            "redrive",
            str(row.id),
            "--input",
            json.dumps({"url": f"{http_server.url}/charge-v2"}),
            "--actor",
            "ops",
        )
        assert code == EXIT_OK, err
        line = await stderr.until("timer", "until")
        assert "cool-off" in line
        (retried,) = http_server.requests(path="/charge-v2")
        assert retried.method == "POST"
        assert retried.json == {"card": "4242", "amount": 42}
        assert retried.headers["x-shop"] == "cli"
        resolved = await flows.show_dead_letter(row.id)
        assert resolved.resolution is not None
        assert resolved.resolution["input"]["method"] == "POST"

        await flows.cancel(run.workflow_id, "ops", "test over")
        out_bytes, _ = await asyncio.wait_for(process.communicate(), LINE_WAIT_S)
        assert process.returncode == EXIT_RUN_FAILED
        assert "cancelled" in out_bytes.decode()
        # Each situation was announced once (no line repeated while it did not change).
        waits = [s for s in stderr.seen if "waiting for approval" in s or "parked at" in s or "timer" in s]
        assert len(waits) == len(set(waits))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_redrive_replace_input_replaces_it(
    flows: FlowClient, database_url: str, http_server: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.route("POST", "/charge", [(402, {}, {"error": "card declined"})])
    definition = {
        "name": "cli-replace",
        "steps": [
            {
                "id": "charge",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{http_server.url}/charge", "json": {"card": "1"}},
                "retry": {"maximum_attempts": 1},
                "on_failure": "dead_letter",
            }
        ],
    }
    run = await flows.start_run(definition, workflow_id=f"cli-replace-{uuid4()}")
    (row,) = await eventually(
        lambda: flows.list_dead_letters(workflow_id=run.workflow_id),
        lambda rows: len(rows) == 1,
        timeout=LINE_WAIT_S,
        interval=0.2,
    )
    code, _, err = await asyncio.to_thread(
        wfa_in_process,
        capsys,
        flows,
        "--database-url",
        database_url,
        "dead-letters",
        "redrive",
        str(row.id),
        "--replace-input",
        "--input",
        json.dumps({"url": f"{http_server.url}/ping"}),
        "--actor",
        "ops",
    )
    assert code == EXIT_OK, err
    result = await flows.result(run.workflow_id, timeout=LINE_WAIT_S)
    assert result.state == "completed"
    (ping,) = http_server.requests(path="/ping")
    assert (ping.method, ping.body) == ("GET", b"")
