"""Secrets stay where they were sent: a canary with awkward characters goes through success, an
echoing 5xx, an echoing 4xx, a timeout, a refused connection and a dead letter, on a dev server that
persists to a file and a real ``worker.py``; then every place a copy could land is searched in
every encoding a server may echo: the full histories, the status queries, the results, the dead
letter rows, the dev server's database file and the worker's log. Zero copies.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from uuid import uuid4

import pytest
from sqlalchemy import text
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.secrets import encoded_forms
from activities.store.database import Database
from interpreter.state import RunInput, RunOptions, RunState, RunStatus
from interpreter.validate import load_definition
from starter.devserver import EPHEMERAL_STARTUP_TIMEOUT, ensure_search_attributes, find_temporal_cli
from tests.helpers.http_server import RecordedRequest, RecordingServer, Response
from workflows.generic import RunDefinitionWorkflow
from workflows.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parents[1]
CANARY = 'L34k-c4n4ry-" \\ é +/=?&-end'


def _echo(request: RecordedRequest) -> Response:
    token = str((request.json or {}).get("token", ""))
    status = int(request.path.rsplit("/", 1)[1])
    if status == 0:  # the timeout path: answer too late
        time.sleep(3)
        status = 200
    body = {
        "raw": token,
        "url": quote(token, safe=""),
        "plus": quote_plus(token),
        "json": json.dumps({"t": token}),
        "basic": base64.b64encode(f"user:{token}".encode()).decode(),
    }
    return status, {"X-Echo": quote(token, safe="")}, body


@pytest.fixture
def receiver() -> Iterator[RecordingServer]:
    with RecordingServer("127.0.0.2") as server:
        for status in (200, 503, 400, 0):
            server.route("POST", f"/echo/{status}", _echo)
        yield server


def _start_worker(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], Any]:
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return proc, out


def _read_all(folder: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob(pattern)))


def _task(step_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "task",
        "action": "http",
        "input": {
            "method": "POST",
            "url": url,
            "params": {"q": "${secret:TOKEN}"},
            "json": {"token": "${secret:TOKEN}"},
            "timeout_s": 1,
        },
        "retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 2},
        **extra,
    }


async def test_a_canary_secret_leaves_no_copy_anywhere(
    receiver: RecordingServer, database_url: str, tmp_path: Path
) -> None:
    db_file = tmp_path / "temporal.db"
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
        dev_server_existing_path=find_temporal_cli(),
        dev_server_database_filename=str(db_file),
        data_converter=pydantic_data_converter,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"acme": {"TOKEN": {"value": CANARY, "hosts": ["127.0.0.2"]}}}))
    log = tmp_path / "worker.log"
    task_queue = f"leaks-{uuid4().hex[:8]}"
    worker, out = _start_worker(
        {
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "DATABASE_URL": database_url,
            "WFA_SECRETS_FILE": str(secrets),
            "WFA_OUTBOUND_ALLOW": "127.0.0.2/32",
            "LOG_LEVEL": "DEBUG",  # the most the worker would ever log
            "PYTHONUNBUFFERED": "1",
        },
        log,
    )
    client: Client = env.client
    paths = {
        "success": [_task("call", f"{receiver.url}/echo/200")],
        "5xx": [_task("call", f"{receiver.url}/echo/503")],
        "4xx": [_task("call", f"{receiver.url}/echo/400")],
        "timeout": [_task("call", f"{receiver.url}/echo/0")],
        "refused": [_task("call", "http://127.0.0.2:9/closed")],
        "dead letter": [
            _task("call", f"{receiver.url}/echo/503", on_failure="dead_letter", park_timeout="1s")
        ],
    }
    try:
        await ensure_search_attributes(client)
        handles = {}
        for name, steps in paths.items():
            definition = load_definition({"name": "leaks", "steps": steps})
            handles[name] = await client.start_workflow(
                RunDefinitionWorkflow.run,
                RunInput(definition=definition, options=RunOptions(tenant="acme")),
                id=f"leaks-{name.replace(' ', '-')}-{uuid4().hex[:6]}",
                task_queue=task_queue,
            )
        texts: list[str] = []
        outcomes: dict[str, str] = {}
        for name, handle in handles.items():
            try:
                result = await handle.result()
                texts.append(result.model_dump_json())
                outcomes[name] = result.state.value
            except WorkflowFailureError as err:
                texts.append(str(err.cause))
                texts.append(json.dumps([str(d) for d in getattr(err.cause, "details", ())]))
                outcomes[name] = "failed"
            status: RunStatus = await handle.query(RunDefinitionWorkflow.status)
            texts.append(status.model_dump_json())
            history = await handle.fetch_history()
            texts.append(history.to_json())
        assert outcomes == {
            "success": RunState.COMPLETED.value,
            "5xx": "failed",
            "4xx": "failed",
            "timeout": "failed",
            "refused": "failed",
            "dead letter": "failed",  # parked, then the park timeout's default (fail)
        }
        # The secret did reach the receiver on every path that got there.
        reached = {r.path for r in receiver.requests() if (r.json or {}).get("token") == CANARY}
        assert reached >= {"/echo/200", "/echo/503", "/echo/400"}
        db = Database(database_url)
        try:
            async with db.session_factory() as session:
                rows = (await session.execute(text("SELECT row_to_json(d)::text FROM dead_letters d"))).all()
        finally:
            await db.close()
        assert rows, "the dead-letter path recorded a row"
        texts.extend(row[0] for row in rows)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        out.close()
        await env.shutdown()
    texts.append(log.read_text(encoding="utf-8", errors="replace"))
    stored = _read_all(tmp_path, "temporal.db*")
    assert stored, "the dev server wrote its database file"
    forms = encoded_forms(CANARY)
    leaks = {form for form in forms for blob in texts if form in blob}
    leaks |= {form for form in forms if form.encode("utf-8") in stored}
    assert leaks == set(), f"copies of the secret found as {sorted(leaks)}"
    # The run's own record does say which secret a step used, by name.
    assert any("[REDACTED:TOKEN]" in blob or "${secret:TOKEN}" in blob for blob in texts)
