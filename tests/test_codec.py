"""Payload encryption: nothing of a run's data in history or the server's database, the codec server
decodes it for the Web UI, and keys rotate without breaking runs that are in flight.

The server is a dev server of this module's own with its SQLite database in a temporary directory,
so the test can read the bytes the server stored. The same check on a run without keys finds the
canary: the search works, so its silence about the encrypted runs means something.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from gateway.codec import build_codec_router, codec_router_from_env
from interpreter.state import Decision, RunState
from starter.cli import EXIT_BAD_INPUT, EXIT_RUN_FAILED, main
from starter.client import FlowClient
from starter.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadKeys,
    PayloadKeysError,
    codec_from_env,
    data_converter,
)
from starter.connection import connect_client
from starter.devserver import EPHEMERAL_STARTUP_TIMEOUT, ensure_search_attributes, find_temporal_cli
from tests.workflows.support import definition, eventually, start, status, unique
from worker import build_worker
from workflows.generic import RunDefinitionWorkflow
from workflows.search_attributes import ALL_KEYS

CANARY = "4929520416361784"  # a Luhn-valid test card number, unique to this test
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(bytes(range(32))).decode()
TOKEN = "codec-test-token-0123456789"
UI_ORIGIN = "http://localhost:8233"


@pytest.fixture(scope="module")
def db_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="wfa-codec-"))
    yield directory
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def file_env(db_dir: Path) -> AsyncIterator[WorkflowEnvironment]:
    """A dev server persisting to a SQLite file in ``db_dir``."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
        dev_server_existing_path=find_temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
        dev_server_extra_args=["--db-filename", str(db_dir / "temporal.db"), "--headless"],
    )
    try:
        await ensure_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


def server_bytes(db_dir: Path) -> bytes:
    """Everything the server stored (the database and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in sorted(db_dir.iterdir()) if p.is_file())


async def keyed_client(env: WorkflowEnvironment, keys: str) -> Client:
    return await connect_client(
        address=env.client.service_client.config.target_host, env={"WFA_PAYLOAD_KEYS": keys} if keys else {}
    )


def order_definition(name: str) -> dict[str, Any]:
    """The demo's order, with a card number that ends up in an output and a failure message."""
    return definition(
        name,
        [
            {"id": "charge", "type": "task", "action": "echo", "input": {"value": "{{ input.order.card }}"}},
            {
                "id": "decline",
                "type": "fail",
                "message": "card {{ input.order.card }} declined",
                "error_type": "Declined",
            },
        ],
    )


def ui_request(payloads: list[Payload]) -> dict[str, Any]:
    """The body the Web UI posts to a codec server."""
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def codec_app(keys: str) -> httpx.AsyncClient:
    app = FastAPI()
    codec = codec_from_env({"WFA_PAYLOAD_KEYS": keys})
    assert codec is not None
    app.include_router(build_codec_router(codec, tokens=[TOKEN], allowed_origins=[UI_ORIGIN]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


async def run_order(client: Client, task_queue: str, card: str) -> tuple[str, Any]:
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        handle = await start(client, task_queue, order_definition(unique("order")), {"order": {"card": card}})
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    return handle.id, failure.value


async def test_canary_is_nowhere_in_history_or_database_and_decodes_for_the_ui(
    file_env: WorkflowEnvironment, db_dir: Path, task_queue: str
) -> None:
    # Control: without keys the card is in history and in the database file.
    plain = await keyed_client(file_env, "")
    plain_card = "4716" + CANARY[4:][::-1]
    plain_id, _ = await run_order(plain, task_queue, plain_card)
    plain_history = (await plain.get_workflow_handle(plain_id).fetch_history()).to_json()
    assert plain_card in plain_history

    async def stored() -> bytes:
        return server_bytes(db_dir)

    await eventually(stored, lambda data: plain_card.encode() in data, what="the control run in the database")

    client = await keyed_client(file_env, f"a={KEY_A}")
    workflow_id, failure = await run_order(client, task_queue + "-enc", CANARY)
    # The client decodes everything, the failure message included.
    assert failure.cause is not None
    assert CANARY in str(failure.cause)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    text = history.to_json()
    assert CANARY not in text
    assert base64.b64encode(CANARY.encode()).decode() not in text
    assert "Encoded failure" in text
    # The run is in the database file (its workflow id is), its card is not.
    data = await eventually(stored, lambda data: workflow_id.encode() in data, what="the run in the database")
    assert CANARY.encode() not in data
    assert plain_card.encode() in data  # the same search, still finding the control

    # The codec server decodes the run's input the way the Web UI asks for it.
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert started[0].metadata["encoding"] == ENCODING
    assert started[0].metadata[KEY_ID_METADATA] == b"a"
    async with codec_app(f"a={KEY_A}") as http:
        headers = {"Origin": UI_ORIGIN, "X-Namespace": "default", "Content-Type": "application/json"}
        refused = await http.post("/codec/decode", json=ui_request(list(started)), headers=headers)
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == UI_ORIGIN
        wrong = await http.post(
            "/codec/decode",
            json=ui_request(list(started)),
            headers={**headers, "Authorization": "Bearer x" * 3},
        )
        assert wrong.status_code == 401
        response = await http.post(
            "/codec/decode",
            json=ui_request(list(started)),
            headers={**headers, "Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == UI_ORIGIN
        decoded = response.json()["payloads"][0]
        assert base64.b64decode(decoded["metadata"]["encoding"]) == b"json/plain"
        assert json.loads(base64.b64decode(decoded["data"]))["input"]["order"]["card"] == CANARY
        # Browser preflight: the Web UI's origin is allowed, another is not.
        preflight = await http.options(
            "/codec/decode",
            headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == UI_ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        other = await http.options(
            "/codec/decode",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers
        # Encode round trip, and a body that is not the Web UI's shape.
        encoded = await http.post(
            "/codec/encode", json=response.json(), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert encoded.status_code == 200
        assert base64.b64decode(encoded.json()["payloads"][0]["metadata"]["encoding"]) == ENCODING
        bad = await http.post("/codec/decode", content=b"[1]", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 400
        # Protobuf's reader took these as empty, answered 200 with nothing (a probe).
        for body in (b"[]", b'{"payloads": [{"metadata": {"encoding": "!!!"}, "data": "***"}]}'):
            lax = await http.post("/codec/decode", content=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert lax.status_code == 400, lax.text


async def test_rotation_keeps_in_flight_runs_and_new_runs_use_the_new_key(
    file_env: WorkflowEnvironment, task_queue: str
) -> None:
    document = definition(
        unique("rotate"),
        [
            {"id": "first", "type": "task", "action": "echo", "input": {"value": "{{ input.card }}"}},
            {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
            {"id": "last", "type": "task", "action": "echo", "input": {"value": "done {{ input.card }}"}},
        ],
    )
    only_a = await keyed_client(file_env, f"a={KEY_A}")
    async with (
        httpx.AsyncClient() as http,
        build_worker(only_a, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        old = await start(only_a, task_queue, document, {"card": CANARY})
        await eventually(lambda: status(old), lambda s: "review" in s.current_steps, what="old run waits")
    # Key B becomes current; A stays for decryption. The old run continues on the new worker.
    rotated = await keyed_client(file_env, f"b={KEY_B},a={KEY_A}")
    async with (
        httpx.AsyncClient() as http,
        build_worker(rotated, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        old_handle = rotated.get_workflow_handle_for(RunDefinitionWorkflow.run, old.id)
        await old_handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
        result = await old_handle.result()
        assert result.state == RunState.COMPLETED
        new = await start(rotated, task_queue, document, {"card": CANARY})
        await eventually(lambda: status(new), lambda s: "review" in s.current_steps, what="new run waits")
        await new.terminate("test over")
    old_events = (await rotated.get_workflow_handle(old.id).fetch_history()).events
    new_events = (await rotated.get_workflow_handle(new.id).fetch_history()).events

    def key_ids(events: Any) -> set[bytes]:
        ids = set()
        for event in events:
            for payload in _payloads(event):
                ids.add(payload.metadata.get(KEY_ID_METADATA, b"-"))
        return ids

    assert key_ids(new_events) == {b"b"}
    assert key_ids(old_events) == {b"a", b"b"}  # started under A, finished under B
    # Without A, the old run's payloads cannot be read, and the message names the key.
    only_b = codec_from_env({"WFA_PAYLOAD_KEYS": f"b={KEY_B}"})
    assert only_b is not None
    first_input = old_events[0].workflow_execution_started_event_attributes.input.payloads
    with pytest.raises(ValueError, match="key 'a', which is not configured"):
        await only_b.decode(list(first_input))


UNENCODED_FIELDS = {"search_attributes", "memo", "header", "marker_recorded_event_attributes"}
"""Payloads Temporal reads itself, and the SDK's patch markers (the patch id): never encrypted, and
never run data by design."""


def _payloads(event: Any) -> list[Payload]:
    """Every payload of an event's attributes (inputs, results, signal args)."""
    found: list[Payload] = []

    def walk(message: Any) -> None:
        for descriptor, value in message.ListFields():
            if descriptor.message_type is None or descriptor.name in UNENCODED_FIELDS:
                continue
            if hasattr(value, "ListFields"):
                items = [value]
            elif hasattr(value, "values"):  # a map field
                items = list(value.values())
            else:
                items = list(value)
            for item in items:
                if isinstance(item, Payload):
                    found.append(item)
                elif hasattr(item, "ListFields"):
                    walk(item)

    walk(event)
    return found


def test_keys_configuration(tmp_path: Path) -> None:
    keys = PayloadKeys.from_env({"WFA_PAYLOAD_KEYS": f"b={KEY_B},a={KEY_A}"})
    assert keys is not None
    assert keys.current == "b"
    assert set(keys.keys) == {"a", "b"}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"current": "a", "keys": {"a": KEY_A, "b": KEY_B}}))
    from_file = PayloadKeys.from_env({"WFA_PAYLOAD_KEYS_FILE": str(path)})
    assert from_file is not None
    assert from_file.current == "a"
    assert PayloadKeys.from_env({}) is None
    for env, message in (
        ({"WFA_PAYLOAD_KEYS": "a=notbase64!"}, "not base64"),
        ({"WFA_PAYLOAD_KEYS": "a=" + base64.b64encode(b"short").decode()}, "5 bytes, not 32"),
        ({"WFA_PAYLOAD_KEYS": f"a={KEY_A}", "WFA_PAYLOAD_KEY_CURRENT": "z"}, "current key 'z'"),
        ({"WFA_PAYLOAD_KEYS_FILE": str(tmp_path / "none.json")}, "cannot read"),
        ({"WFA_PAYLOAD_KEYS": "justtext"}, "not id=base64key"),
    ):
        with pytest.raises(PayloadKeysError, match=message) as err:
            PayloadKeys.from_env(env)
        assert KEY_A not in str(err.value)
    # The gateway's router needs a token as soon as keys are configured.
    assert codec_router_from_env({}) is None
    with pytest.raises(ValueError, match="bearer token"):
        codec_router_from_env({"WFA_PAYLOAD_KEYS": f"a={KEY_A}"})
    assert codec_router_from_env({"WFA_PAYLOAD_KEYS": f"a={KEY_A}", "WFA_CODEC_TOKENS": TOKEN}) is not None
    assert data_converter({}) is pydantic_data_converter


async def test_tampered_payload_is_refused() -> None:
    keys = PayloadKeys.parse({"a": KEY_A}, None, "test")
    codec = EncryptionCodec(keys)
    [encrypted] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
    tampered = Payload(
        metadata=dict(encrypted.metadata), data=encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1])
    )
    with pytest.raises(ValueError, match="does not decrypt"):
        await codec.decode([tampered])
    other_key = Payload(metadata={**encrypted.metadata, KEY_ID_METADATA: b"b"}, data=encrypted.data)
    with pytest.raises(ValueError, match="key 'b'"):
        await codec.decode([other_key])
    [again] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
    assert again.data != encrypted.data


async def test_status_shows_the_decrypted_error_of_a_retrying_step(
    file_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = await keyed_client(file_env, f"a={KEY_A}")
    flows = FlowClient(client, task_queue=task_queue)
    document = definition(
        unique("retrying"),
        [
            {
                "id": "flaky",
                "type": "task",
                "action": "echo",
                "input": {"fail": "Flaky"},
                "retry": {"preset": "constant", "initial_interval": "1s", "maximum_attempts": 100},
            }
        ],
    )
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        handle = await start(client, task_queue, document)
        described = await eventually(
            handle.describe,
            lambda d: any(p.attempt >= 2 for p in d.raw_description.pending_activities),
            what="a second attempt",
        )
        # What the server holds is encrypted ...
        assert described.raw_description.pending_activities[0].last_failure.message == "Encoded failure"
        # ... and what the client shows is not.
        step = next(s for s in (await flows.status(handle.id)).steps if s.path == "flaky")
        assert step.error_type == "Flaky"
        assert step.error is not None
        assert "Encoded failure" not in step.error
        assert "Flaky" in step.error
        await handle.terminate("test over")


async def test_temporal_cli_reads_the_history_through_the_codec_server(
    file_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The ``temporal`` CLI as a codec-server client: its own request shape, headers and auth."""
    client = await keyed_client(file_env, f"a={KEY_A}")
    workflow_id, _ = await run_order(client, task_queue, CANARY)
    app = FastAPI()
    codec = codec_from_env({"WFA_PAYLOAD_KEYS": f"a={KEY_A}"})
    assert codec is not None
    app.include_router(build_codec_router(codec, tokens=[TOKEN]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _async(server.started), bool, what="the codec server")
        port = server.servers[0].sockets[0].getsockname()[1]
        show = [
            find_temporal_cli(),
            "workflow",
            "show",
            "--address",
            file_env.client.service_client.config.target_host,
            "--workflow-id",
            workflow_id,
            "--output",
            "json",
            "--codec-endpoint",
            f"http://127.0.0.1:{port}/codec",
        ]

        async def run(*extra: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                *show, *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await proc.communicate()
            return proc.returncode or 0, out.decode(errors="replace")

        def started_input(out: str) -> Any:
            events = json.loads(out)["events"]
            payload = events[0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
            return base64.b64decode(payload["metadata"]["encoding"]), base64.b64decode(payload["data"])

        code, out = await run("--codec-auth", f"Bearer {TOKEN}")
        assert code == 0, out[-2000:]
        encoding, data = started_input(out)
        assert encoding == b"json/plain"
        assert json.loads(data)["input"]["order"]["card"] == CANARY
        code, out = await run("--codec-auth", "Bearer not-the-token-at-all")
        assert code != 0 or started_input(out)[0] == ENCODING, out[-2000:]
        assert CANARY not in out
    finally:
        server.should_exit = True
        await serving


async def _async(value: Any) -> Any:
    return value


async def test_wfa_reads_encrypted_runs_with_the_keys_only(
    file_env: WorkflowEnvironment,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = await keyed_client(file_env, f"a={KEY_A}")
    workflow_id, _ = await run_order(client, task_queue, CANARY)
    address = file_env.client.service_client.config.target_host
    monkeypatch.delenv("WFA_PAYLOAD_KEYS_FILE", raising=False)
    monkeypatch.setenv("WFA_PAYLOAD_KEYS", f"a={KEY_A}")
    code = await asyncio.to_thread(main, ["--address", address, "result", workflow_id, "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_RUN_FAILED, out
    assert f"card {CANARY} declined" in out
    monkeypatch.setenv("WFA_PAYLOAD_KEYS", f"b={KEY_B}")
    code = await asyncio.to_thread(main, ["--address", address, "result", workflow_id, "--json"])
    captured = capsys.readouterr()
    assert CANARY not in captured.out + captured.err
    assert code == EXIT_BAD_INPUT
    assert "payload encrypted with key 'a', which is not configured" in captured.err
    assert "internal error" not in captured.err
    monkeypatch.setenv("WFA_PAYLOAD_KEYS", "a=nope")
    code = await asyncio.to_thread(main, ["--address", address, "result", workflow_id])
    captured = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    assert "WFA_PAYLOAD_KEYS" in captured.err


async def test_a_worker_without_the_keys_leaves_an_encrypted_run_waiting_for_one_with_them(
    file_env: WorkflowEnvironment, task_queue: str
) -> None:
    """A probe: a client with payload keys started a run on a worker without them, and the run
    failed for good ("InvalidRunInput: ... Unknown payload encoding binary/encrypted"). Its
    workflow task now fails, naming what to set, and a worker with the keys finishes the run."""
    document = definition(
        unique("keyless"),
        [{"id": "card", "type": "task", "action": "echo", "input": {"value": "{{ input.card }}"}}],
    )
    keyed = await keyed_client(file_env, f"a={KEY_A}")
    plain = await keyed_client(file_env, "")
    async with (
        httpx.AsyncClient() as http,
        build_worker(plain, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        handle = await start(keyed, task_queue, document, {"card": CANARY})

        async def task_failures() -> list[str]:
            events = (await plain.get_workflow_handle(handle.id).fetch_history()).events
            return [
                e.workflow_task_failed_event_attributes.failure.message
                for e in events
                if e.HasField("workflow_task_failed_event_attributes")
            ]

        failures = await eventually(task_failures, bool, timeout=60, what="the workflow task failing")
        assert "PayloadKeysMissing" in failures[0], failures[0]
        assert "WFA_PAYLOAD_KEYS" in failures[0]
        assert (await handle.describe()).status is not None
        assert (await handle.describe()).status.name == "RUNNING"
    async with (
        httpx.AsyncClient() as http,
        build_worker(keyed, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        result = await asyncio.wait_for(handle.result(), 120)
    assert result.state == RunState.COMPLETED
    assert [step.output for step in result.steps] == [CANARY]
