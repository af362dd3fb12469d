"""``WFA_PAYLOAD_STORE_RUN_INPUT=always``: every run's start input (definition, input, options) is
stored by reference whatever its size, so the history holds a reference instead of the definition;
everything else still goes by the threshold. A bad value, or ``always`` without a store, stops the
client and the worker with a message naming the variable; ``wfa payloads gc`` keeps the input of an
open run. On the session's dev server and the embedded PostgreSQL (the registry, for a subflow).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.store.database import Database
from interpreter.state import RunState
from starter.cli import EXIT_BAD_INPUT, EXIT_OK, main
from starter.client import FlowClient
from starter.codec import ENCODING, data_converter
from starter.payload_store import (
    RUN_INPUT_ENV,
    FilesystemDriver,
    PayloadStoreConfig,
    PayloadStoreConfigError,
    describe,
)
from tests.helpers.worker_process import exit_code, spawn_worker
from tests.test_payload_store import KEY, REFERENCE_TYPE, client_of, env_of, history_payloads, references
from tests.test_payload_store_gc import OLD, age, gc
from tests.workflows.support import definition, eventually, record, unique
from worker import build_worker

STARTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
CHILD_INITIATED = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED


def started_input(history: Any) -> Payload:
    """The run's start input, as its history holds it."""
    [payload] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    return payload


def referenced_by_event(history: Any) -> dict[int, int]:
    """How many references each event type of ``history`` holds."""
    counts: dict[int, int] = {}
    for event in history.events:
        found = references(history_payloads(type("H", (), {"events": [event]})()))
        if found:
            counts[event.event_type] = counts.get(event.event_type, 0) + len(found)
    return counts


def digest_of(reference: Payload) -> str:
    assert reference.metadata["encoding"] == b"json/protobuf"
    assert reference.metadata["messageType"] == REFERENCE_TYPE
    digest: str = json.loads(reference.data)["claimData"]["digest"]
    return digest


@asynccontextmanager
async def store_worker(client: Client, task_queue: str, database: Database) -> AsyncIterator[None]:
    from activities.dead_letters import build_store_activities

    async with (
        httpx.AsyncClient() as http,
        build_worker(
            client,
            task_queue,
            http,
            extra_activities=build_store_activities(database.session_factory),
            graceful_shutdown_timeout=timedelta(0),
        ),
    ):
        yield


# ------------------------------------------------------------------------------ configuration


def refused_naming_the_variable(name: str, what: str, store: str) -> None:
    """A bad value of the ``always`` setting ``name``, and ``always`` without a store, are refused
    with messages naming ``name`` (``what``: what it stores)."""
    for env in ({name: "yes"}, {name: "on", "WFA_PAYLOAD_STORE": store}):
        with pytest.raises(
            PayloadStoreConfigError, match=rf"^{name}: '(yes|on)' is not threshold or always$"
        ):
            data_converter(env)
    for env in ({name: "always"}, {name: "always", "WFA_PAYLOAD_STORE": "off"}):
        with pytest.raises(
            PayloadStoreConfigError,
            match=rf"^{name}=always stores every run's {what} in the payload store,"
            r" but WFA_PAYLOAD_STORE is (not set|'off'): set it",
        ):
            data_converter(env)


def test_a_bad_value_or_always_without_a_store_is_refused_naming_the_variable(tmp_path: Path) -> None:
    store = f"fs:{tmp_path}"
    refused_naming_the_variable(RUN_INPUT_ENV, "start input", store)
    # Without a store, the default (explicit or not) is no store at all, as before.
    assert PayloadStoreConfig.from_env({RUN_INPUT_ENV: "threshold"}) is None
    assert data_converter({RUN_INPUT_ENV: ""}).external_storage is None

    default = PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": store, "WFA_PAYLOAD_STORE_THRESHOLD": "5000"})
    assert default is not None
    assert describe(default)["run_input"] == "threshold"
    storage = default.external_storage("default")
    assert (storage.payload_size_threshold, storage.driver_selector) == (5000, None)

    always = PayloadStoreConfig.from_env(
        {"WFA_PAYLOAD_STORE": store, "WFA_PAYLOAD_STORE_THRESHOLD": "5000", RUN_INPUT_ENV: " Always "}
    )
    assert always is not None
    assert describe(always) == describe(default) | {"run_input": "always"}
    # The SDK asks the selector only from its own threshold: 0, the selector applies 5000 itself.
    storage = always.external_storage("default")
    assert storage.payload_size_threshold == 0
    assert storage.driver_selector is not None


async def test_always_without_a_store_stops_the_cli_and_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WFA_PAYLOAD_STORE", raising=False)
    monkeypatch.setenv(RUN_INPUT_ENV, "always")
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--address", "127.0.0.1:1", "list"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert "WFA_PAYLOAD_STORE_RUN_INPUT=always" in err
    assert "WFA_PAYLOAD_STORE is not set" in err
    assert "Traceback" not in err

    config = tmp_path / "temporal.toml"
    config.write_text('[profile.nowhere]\naddress = "127.0.0.1:1"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "WFA_", "OTEL_"))}
    env |= {
        "TEMPORAL_CONFIG_FILE": str(config),
        "TEMPORAL_PROFILE": "nowhere",
        "TEMPORAL_TASK_QUEUE": "tq-none",
        "PYTHONUNBUFFERED": "1",
        RUN_INPUT_ENV: "always",
    }
    log = tmp_path / "worker.log"
    assert await exit_code(spawn_worker(env, log), timeout=60) == 2
    text = log.read_text()
    assert "WFA_PAYLOAD_STORE_RUN_INPUT=always stores every run's start input" in text
    assert "payload encryption" not in text
    assert "Traceback" not in text


# ------------------------------------------------------------------------------ on the server


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_always_stores_each_run_start_input_and_gc_keeps_it_while_the_run_is_open(
    encrypted: bool,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A small run (and the subflow it starts) with ``always`` and a large threshold: both start
    inputs are references to blobs in the store, every other payload (step inputs and outputs, the
    result) stays inline; gc keeps the open run's input however old; the run completes."""
    store = tmp_path / "payloads"
    env = env_of(
        store=f"fs:{store}",
        keys=f"k={KEY}" if encrypted else None,
        WFA_PAYLOAD_STORE_THRESHOLD="1000000",
        WFA_PAYLOAD_STORE_RUN_INPUT="always",
    )
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue, database=database)
    child = unique("runinput-child")
    await flows.register(
        definition(
            child,
            [{"id": "double", "type": "task", "action": "echo", "input": {"value": "{{ input.n * 2 }}"}}],
            output={"doubled": "{{ steps.double.output }}"},
        ),
        author="ann",
    )
    parent = unique("runinput")
    document = definition(
        parent,
        [
            {"id": "greet", "type": "task", "action": "echo", "input": {"value": "hello {{ input.name }}"}},
            {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
            {"id": "sub", "type": "subflow", "definition": child, "input": {"n": "{{ input.n }}"}},
        ],
    )
    started = await flows.start_run(document, {"name": "ada", "n": 21})
    handle = client.get_workflow_handle(started.workflow_id)
    driver = FilesystemDriver(store)

    # Stored at the start, before any worker: the history holds a reference, the store the input.
    digest = digest_of(started_input(await handle.fetch_history()))
    blob = Payload.FromString(driver.path("default", digest).read_bytes())
    if encrypted:
        assert blob.metadata["encoding"] == ENCODING
        assert parent.encode() not in blob.data
    else:
        assert json.loads(blob.data)["definition"]["name"] == parent
        assert json.loads(blob.data)["input"] == {"name": "ada", "n": 21}

    async with store_worker(client, task_queue, database):
        await eventually(
            lambda: flows.status(started.workflow_id),
            lambda s: "review" in s.current_steps,
            what="the run waiting at review",
            timeout=300,
            interval=0.5,
        )

        # gc: the open run's input is kept however old.
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = PayloadStoreConfig.from_env(env)
        assert config is not None
        await age(config, [digest], OLD)
        address = temporal_env.client.service_client.config.target_host
        code, out, err = await gc(address, capsys, "--older-than", "30d", "--json")
        assert code == EXIT_OK, err
        report = json.loads(out)
        assert digest in {b["digest"] for b in report["kept_referenced"]}
        assert digest not in {b["digest"] for b in report["deleted"]}
        assert driver.path("default", digest).exists()

        await flows.approve(started.workflow_id, "alice")
        result = await flows.result(started.workflow_id, timeout=300)
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert record(result, "greet").output == "hello ada"
    assert record(result, "sub").output["output"] == {"doubled": 42}

    # The parent's history: its start input and the subflow's (the command starting the child) are
    # references; the step's input and output, the approval, the result are inline.
    history = await handle.fetch_history()
    assert referenced_by_event(history) == {STARTED: 1, CHILD_INITIATED: 1}
    assert digest_of(started_input(history)) == digest
    child_history = await client.get_workflow_handle(f"{started.workflow_id}/sub").fetch_history()
    assert referenced_by_event(child_history) == {STARTED: 1}
    child_digest = digest_of(started_input(child_history))
    assert driver.path("default", child_digest).exists()
    if not encrypted:
        child_blob = Payload.FromString(driver.path("default", child_digest).read_bytes())
        assert json.loads(child_blob.data)["definition"]["name"] == child


async def test_by_default_a_small_run_input_stays_inline(
    temporal_env: WorkflowEnvironment, task_queue: str, database: Database, tmp_path: Path
) -> None:
    store = tmp_path / "payloads"
    client = await client_of(temporal_env, env_of(store=f"fs:{store}", WFA_PAYLOAD_STORE_THRESHOLD="1000000"))
    flows = FlowClient(client, task_queue=task_queue, database=database)
    name = unique("runinput-default")
    started = await flows.start_run(
        definition(name, [{"id": "greet", "type": "task", "action": "echo", "input": {"value": "hi"}}]),
        {"n": 1},
    )
    handle = client.get_workflow_handle(started.workflow_id)
    payload = started_input(await handle.fetch_history())
    assert payload.metadata["encoding"] == b"json/plain"
    assert json.loads(payload.data)["definition"]["name"] == name
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))
    await handle.terminate("not run: only its start was looked at")


async def test_only_start_inputs_of_runs_are_selected(tmp_path: Path) -> None:
    """The selector on the targets the SDK hands it: a run's start (any workflow type), a child's;
    not a signal's or an update's (no type), not a running workflow's own payloads (its run id),
    not an object without a definition (a memo field, a mailbox's state), encrypted or not;
    anything from the threshold on, whatever it is."""
    from temporalio.converter import StorageDriverSelectContext, StorageDriverWorkflowInfo

    from starter.codec import EncryptionCodec

    env = {
        "WFA_PAYLOAD_STORE": f"fs:{tmp_path}",
        "WFA_PAYLOAD_STORE_THRESHOLD": "2000",
        RUN_INPUT_ENV: "always",
    }
    plain = data_converter(env).external_storage
    encrypting = data_converter(env | {"WFA_PAYLOAD_KEYS": f"k={KEY}"})
    assert plain is not None
    assert encrypting.external_storage is not None
    assert isinstance(encrypting.payload_codec, EncryptionCodec)

    def picks(storage: Any, payload: Payload, **target: Any) -> bool:
        context = StorageDriverSelectContext(target=StorageDriverWorkflowInfo(namespace="default", **target))
        return storage.driver_selector(context, payload) is not None

    run = Payload(metadata={"encoding": b"json/plain"}, data=b'{"definition":{"name":"x"},"input":{}}')
    other = Payload(metadata={"encoding": b"json/plain"}, data=b'{"definition":"x","input":{}}')
    big = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 2000 + b'"')
    assert picks(plain, run, id="w", type="any-definition-name")
    assert not picks(plain, run, id="w")  # a signal, a query, an update
    assert not picks(plain, run, id="w", type="RunDefinition", run_id="r")  # the run's own payloads
    assert not picks(plain, other, id="w", type="RunDefinition")
    assert plain.driver_selector is not None
    assert plain.driver_selector(StorageDriverSelectContext(target=None), run) is None
    assert picks(plain, big, id="w", run_id="r")
    # The input a run continues as new with (its target is the running workflow): stored too.
    continued = Payload(
        metadata={"encoding": b"json/plain"},
        data=b'{"definition":{"name":"x"},"continuation":{"position":3}}',
    )
    assert picks(plain, continued, id="w", type="x", run_id="r")
    assert not picks(plain, continued, id="w", run_id="r")  # no type: not a workflow's own command
    # Anything else goes by the threshold, exactly: from 2,000 bytes on, not below.
    at = Payload(metadata={"encoding": b"json/plain"}, data=b"x" * 2000)
    at.data = b"x" * (2000 - (at.ByteSize() - 2000))
    assert at.ByteSize() == 2000
    below = Payload(metadata=at.metadata, data=at.data[:-1])
    assert picks(plain, at, id="w", type="x", run_id="r")
    assert not picks(plain, below, id="w", type="x", run_id="r")

    # Encrypted (the codec runs before the store): looked into with the keys.
    [run_encrypted, other_encrypted] = await encrypting.payload_codec.encode([run, other])
    assert picks(encrypting.external_storage, run_encrypted, id="w", type="x")
    assert not picks(encrypting.external_storage, other_encrypted, id="w", type="x")
    assert not picks(plain, run_encrypted, id="w", type="x")  # without the keys: inline
