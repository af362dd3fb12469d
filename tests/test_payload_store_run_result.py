"""``WFA_PAYLOAD_STORE_RUN_RESULT=always``: a run's result (state, output, step records; a failed
run's record in its error's details) of 512 bytes or more is stored by reference whatever the
threshold, so the history holds a reference instead of the step records; everything else still
goes by the threshold, and the run's ``status`` answer stays inline. A bad value, or ``always``
without a store, stops the client with a message naming the variable. References name no
``hash_algorithm`` (SHA-256, what every build of the store reads when a claim names none), and a
claim written before, naming it, reads the same. On the session's dev server.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.converter import StorageDriverClaim
from temporalio.testing import WorkflowEnvironment

from activities.store.database import Database
from interpreter.state import RunResult, RunState
from starter.cli import EXIT_BAD_INPUT, main
from starter.client import FlowClient
from starter.codec import ENCODING, data_converter
from starter.errors import PayloadUnreadableError
from starter.operations import run_stats
from starter.payload_store import (
    RUN_RESULT_ENV,
    RUN_RESULT_MIN,
    FilesystemDriver,
    PayloadStoreConfig,
    describe,
)
from tests.test_payload_store import KEY, client_of, env_of, history_payloads, references
from tests.test_payload_store_run_input import digest_of, refused_naming_the_variable, store_worker
from tests.workflows.support import definition, eventually, record, unique

COMPLETED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
FAILED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED


def _steps(name: str, *, fail_last: bool = False) -> dict[str, Any]:
    last: dict[str, Any] = {"value": "{{ steps.two.output }}-three"}
    if fail_last:
        last |= {"fail": "Broken", "non_retryable": True}
    return definition(
        name,
        [
            {"id": "one", "type": "task", "action": "echo", "input": {"value": "{{ input.word }}-one"}},
            {"id": "two", "type": "task", "action": "echo", "input": {"value": "{{ steps.one.output }}-two"}},
            {"id": "three", "type": "task", "action": "echo", "input": last},
        ],
        output="{{ steps.three.output }}",
    )


# ------------------------------------------------------------------------------ configuration


def test_a_bad_value_or_always_without_a_store_is_refused_naming_the_variable(tmp_path: Path) -> None:
    store = f"fs:{tmp_path}"
    refused_naming_the_variable(RUN_RESULT_ENV, "result", store)
    assert PayloadStoreConfig.from_env({RUN_RESULT_ENV: "threshold"}) is None

    default = PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": store})
    always = PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": store, RUN_RESULT_ENV: " Always "})
    assert default is not None
    assert always is not None
    assert describe(default)["run_result"] == "threshold"
    assert describe(always) == describe(default) | {"run_result": "always"}
    assert default.external_storage("default").driver_selector is None
    storage = always.external_storage("default")
    assert storage.payload_size_threshold == 0  # the selector applies the threshold itself
    assert storage.driver_selector is not None


async def test_only_results_of_runs_are_selected(tmp_path: Path) -> None:
    """The selector: a result-shaped payload of a running workflow (the target names its run: the
    SDK's target for a run's own completion, and for a child's, its parent's run), from
    RUN_RESULT_MIN bytes; not a smaller one, not the run's status answer, not the input or result
    of an activity it runs (the SDK gives those the workflow's target too: their shape tells them
    apart), not a run being started, not a JSON object with other fields; encrypted, looked into
    with the keys; anything from the threshold on, whatever it is."""
    from temporalio.converter import StorageDriverSelectContext, StorageDriverWorkflowInfo

    from interpreter.actions import ActionRequest, ActionResult

    env = {
        "WFA_PAYLOAD_STORE": f"fs:{tmp_path}",
        "WFA_PAYLOAD_STORE_THRESHOLD": "100000",
        RUN_RESULT_ENV: "always",
    }
    plain = data_converter(env).external_storage
    encrypting = data_converter(env | {"WFA_PAYLOAD_KEYS": f"k={KEY}"})
    assert plain is not None
    assert plain.driver_selector is not None
    assert encrypting.external_storage is not None
    assert encrypting.payload_codec is not None

    def picks(storage: Any, payload: Payload, target: Any = None) -> bool:
        target = target or StorageDriverWorkflowInfo(namespace="default", id="w", type="x", run_id="r")
        return storage.driver_selector(StorageDriverSelectContext(target=target), payload) is not None

    def payload(value: dict[str, Any]) -> Payload:
        return Payload(
            metadata={"encoding": b"json/plain"}, data=json.dumps(value, separators=(",", ":")).encode()
        )

    steps = [
        {"step_id": f"s{i}", "path": f"s{i}", "status": "completed", "output": "x" * 40} for i in range(6)
    ]
    result = payload({"state": "completed", "output": "done", "steps": steps})
    failed = payload({"state": "failed", "error": "boom", "error_type": "Broken", "steps": steps})
    small = payload({"state": "completed", "output": "done"})
    status = payload({"definition": "x", "version": 1, "state": "completed", "steps": steps})
    other = payload({"state": "completed", "steps": steps, "secret": 1})
    assert result.ByteSize() >= RUN_RESULT_MIN > small.ByteSize()
    assert picks(plain, result)
    assert picks(plain, failed)  # a failed run's record, in its error's details
    assert not picks(plain, small)  # a reference would be about as large
    assert not picks(plain, status)
    assert not picks(plain, other)
    # An activity's input and result, as the generic workflow sends and gets them, large enough.
    request = ActionRequest(step_id="s", idempotency_key="k", input={"state": "x" * 600})
    answer = ActionResult(output={"state": "completed", "steps": steps})
    for model in (request, answer):
        sent = payload(model.model_dump(mode="json"))
        assert sent.ByteSize() >= RUN_RESULT_MIN
        assert not picks(plain, sent)
    assert not picks(plain, result, StorageDriverWorkflowInfo(namespace="default", id="c", type="x"))
    # The threshold still applies to anything.
    big = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 100000 + b'"')
    assert picks(plain, big)

    [result_encrypted, status_encrypted] = await encrypting.payload_codec.encode([result, status])
    assert picks(encrypting.external_storage, result_encrypted)
    assert not picks(encrypting.external_storage, status_encrypted)
    assert not picks(plain, result_encrypted)  # without the keys: inline


async def test_a_claim_names_no_hash_algorithm_and_one_that_does_reads_the_same(tmp_path: Path) -> None:
    from temporalio.converter import StorageDriverRetrieveContext, StorageDriverStoreContext

    driver = FilesystemDriver(tmp_path, namespace="default")
    stored = Payload(metadata={"encoding": b"json/plain"}, data=b'"kept"')
    [claim] = await driver.store(StorageDriverStoreContext(), [stored])
    assert claim.claim_data == {"namespace": "default", "digest": claim.claim_data["digest"]}
    earlier = StorageDriverClaim({**claim.claim_data, "hash_algorithm": "sha256"})  # as written before
    read = await driver.retrieve(StorageDriverRetrieveContext(), [claim, earlier])
    assert read == [stored, stored]


# ------------------------------------------------------------------------------ on the server


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_always_stores_a_run_s_result_and_readers_get_its_records(
    encrypted: bool,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database: Database,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 3-step run with ``always`` and a large threshold: its completion holds a reference to a
    blob with the result and every step record, and every other payload stays inline; the client
    reads the records back; the status answer of the closed run is inline. A
    failed run's record, in its failure's details, goes by reference too and reads back."""
    store = tmp_path / "payloads"
    env = env_of(
        store=f"fs:{store}",
        keys=f"k={KEY}" if encrypted else None,
        WFA_PAYLOAD_STORE_THRESHOLD="1000000",
        WFA_PAYLOAD_STORE_RUN_RESULT="always",
    )
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue, database=database)
    driver = FilesystemDriver(store)
    async with store_worker(client, task_queue, database):
        flow_name = unique("runresult")
        started = await flows.start_run(_steps(flow_name), {"word": "ada"})
        result = await flows.result(started.workflow_id, timeout=300)
        assert result.state == RunState.COMPLETED, (result.error_type, result.error)
        assert result.output == "ada-one-two-three"
        assert [r.path for r in result.steps] == ["one", "two", "three"]
        assert record(result, "two").output == "ada-one-two"

        handle = client.get_workflow_handle(started.workflow_id)
        history = await handle.fetch_history()
        [completed] = [e for e in history.events if e.event_type == COMPLETED]
        [reference] = completed.workflow_execution_completed_event_attributes.result.payloads
        digest = digest_of(reference)
        assert "hash_algorithm" not in json.loads(reference.data)["claimData"]
        assert len(references(history_payloads(history))) == 1  # the result alone
        blob = Payload.FromString(driver.path("default", digest).read_bytes())
        if encrypted:
            assert blob.metadata["encoding"] == ENCODING
            assert b"ada-one-two" not in blob.data
        else:
            stored = RunResult.model_validate_json(blob.data)
            assert [r.path for r in stored.steps] == ["one", "two", "three"]

        blobs = sorted(p for p in store.rglob("*") if p.is_file())
        status = await flows.status(started.workflow_id)  # answered by a worker replaying it
        assert [r.path for r in status.steps] == ["one", "two", "three"]
        if not encrypted:
            # The answer is inline: no new blob (the replay stores the result again, the same
            # bytes under the same digest). Encrypted, that result is a new blob every time, as
            # every encryption differs: the README says so, gc removes those no run refers to.
            assert sorted(p for p in store.rglob("*") if p.is_file()) == blobs
        else:
            codec = client.data_converter.payload_codec
            assert codec is not None
            for path in sorted({p for p in store.rglob("*") if p.is_file()} - set(blobs)):
                [again] = await codec.decode([Payload.FromString(path.read_bytes())])
                assert RunResult.model_validate_json(again.data).steps == result.steps  # not the answer

        failing = await flows.start_run(_steps(unique("runresult-failed"), fail_last=True), {"word": "bob"})
        with pytest.raises(WorkflowFailureError):
            await client.get_workflow_handle(failing.workflow_id).result()
        failed = await flows.result(failing.workflow_id, timeout=60)
    assert failed.state == RunState.FAILED
    assert failed.error_type == "Broken"
    assert [r.path for r in failed.steps] == ["one", "two", "three"]
    history = await client.get_workflow_handle(failing.workflow_id).fetch_history()
    [closed] = [e for e in history.events if e.event_type == FAILED]
    details = closed.workflow_execution_failed_event_attributes.failure.application_failure_info.details
    assert len(references(list(details.payloads))) == 1

    # A client without the store (or, for encrypted runs, without the key) is told what to set,
    # through the client API and the CLI (exit 2), never an internal error; no worker is running.
    lacking = [("WFA_PAYLOAD_STORE", {k: v for k, v in env.items() if k == "WFA_PAYLOAD_KEYS"})]
    if encrypted:
        lacking.append(("WFA_PAYLOAD_KEYS", {k: v for k, v in env.items() if k != "WFA_PAYLOAD_KEYS"}))
    for variable, partial in lacking:
        reader = FlowClient(await client_of(temporal_env, partial), task_queue=task_queue, database=database)
        for read in (reader.result, reader.status):
            with pytest.raises(PayloadUnreadableError, match=f"set {variable}.* as the worker has it"):
                await read(started.workflow_id)
        # wfa stats says why a run's step figures were unavailable.
        stats = await eventually(
            lambda reader=reader: run_stats(reader, flow_name, timedelta(hours=1)),  # type: ignore[misc]
            lambda s: s.closed == 1,
            what="the closed run in visibility",
            timeout=60,
        )
        assert stats.details_unavailable == 1
        assert stats.unavailable_because is not None
        assert f"set {variable}" in stats.unavailable_because
        for name in ("WFA_PAYLOAD_STORE", "WFA_PAYLOAD_KEYS", "WFA_PAYLOAD_STORE_THRESHOLD", RUN_RESULT_ENV):
            monkeypatch.delenv(name, raising=False)
        for name, value in partial.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DATABASE_URL", database_url)
        address = temporal_env.client.service_client.config.target_host
        for command in ("result", "status"):
            capsys.readouterr()
            code = await asyncio.to_thread(main, ["--address", address, command, started.workflow_id])
            err = capsys.readouterr().err
            assert code == EXIT_BAD_INPUT, err
            assert f"set {variable}" in err
            assert "as the worker has it" in err
            assert "internal error" not in err


async def test_a_closed_runs_status_reads_while_the_store_cannot_be_written(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker answering a closed run's ``status`` replays it, and the replay stores the run's
    result again: while the store cannot be written (a full disk, a read-only mount) the query
    failed and ``wfa status`` exited 1 where ``wfa result`` read (an attacker's probe). The status
    is now rebuilt from the result, and the log says why."""
    store = tmp_path / "payloads"
    env = env_of(store=f"fs:{store}", WFA_PAYLOAD_STORE_RUN_RESULT="always")
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue, database=database)
    async with store_worker(client, task_queue, database):
        started = await flows.start_run(_steps(unique("unwritable")), {"word": "eve"})
        assert (await flows.result(started.workflow_id, timeout=120)).state == RunState.COMPLETED

        def full_disk(*_: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(FilesystemDriver, "_write", full_disk)
        with caplog.at_level("WARNING", logger="starter.client"):
            status = await flows.status(started.workflow_id)
    assert (status.state, status.output) == (RunState.COMPLETED, "eve-one-two-three")
    assert [r.path for r in status.steps] == ["one", "two", "three"]
    assert any(
        "could not answer the status query" in r.getMessage()
        and "rebuilt from the run's result" in r.getMessage()
        for r in caplog.records
    )
