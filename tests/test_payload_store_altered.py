"""A run whose stored payload was altered, or whose history holds a reference that is not one of
this store's, fails with a message naming the problem; it does not stick with its workflow task
failing on every retry (the trust model: nothing gets stuck).

The adversary: someone with write access to the store who swaps a run's stored input for another
valid payload (the digest check refuses it), and a raw client that starts a run whose input is a
forged reference to another namespace's blob. On the session's dev server, a directory store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.common import RawValue
from temporalio.converter import StorageDriverStoreContext, StorageDriverWorkflowInfo
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from interpreter.state import RunState
from starter.client import ALTERED_PAYLOAD, FlowClient
from starter.payload_store import FilesystemDriver, PayloadStoreAltered, PayloadStoreError
from tests.helpers.wfa_process import run_wfa, wfa_env
from tests.test_payload_store import REFERENCE_TYPE, client_of, env_of, run_with_worker
from tests.test_payload_store_run_input import digest_of, started_input
from tests.workflows.support import definition, eventually, unique
from workflows.generic import WORKFLOW_NAME

FAILS_WITHIN = 60.0
"""Seconds: a run that has not failed by then is stuck (its workflow task retried for ever)."""


async def failure_of(
    client: Client, task_queue: str, handle: WorkflowHandle[object, object]
) -> ApplicationError:
    """The application error the run failed with, a worker running; fails the test if the run
    does not fail within :data:`FAILS_WITHIN` (stuck)."""
    with pytest.raises(WorkflowFailureError) as failed:
        await run_with_worker(client, task_queue, asyncio.wait_for(handle.result(), FAILS_WITHIN))
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    return cause


async def started_to_failure(
    client: Client, task_queue: str, payload: Payload, name: str
) -> ApplicationError:
    """The error a run a raw client starts with ``payload`` as its input fails with (see
    :func:`failure_of`)."""
    handle = await client.start_workflow(
        WORKFLOW_NAME, RawValue(payload), id=unique(name), task_queue=task_queue
    )
    return await failure_of(client, task_queue, handle)


async def test_a_run_whose_stored_input_was_swapped_fails_naming_it(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    store = tmp_path / "payloads"
    env = env_of(store=f"fs:{store}", WFA_PAYLOAD_STORE_RUN_INPUT="always")
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue)
    doc = definition(
        unique("altered"), [{"id": "greet", "type": "task", "action": "echo", "input": {"v": 1}}]
    )
    run = await flows.start_run(doc, {})  # no worker yet: the run waits for its first task
    handle = client.get_workflow_handle(run.workflow_id)
    digest = digest_of(started_input(await handle.fetch_history()))
    blob = FilesystemDriver(store).path(temporal_env.client.namespace, digest)
    assert blob.is_file()
    # Another valid payload under the run's digest: without the check, the run would run it.
    blob.write_bytes(Payload(metadata={"encoding": b"json/plain"}, data=b'{"x": 1}').SerializeToString())

    cause = await failure_of(client, task_queue, handle)
    assert cause.type == "PayloadStoreAltered"
    assert cause.non_retryable
    assert f"{digest[:16]}..." in cause.message
    assert "does not match its digest (altered)" in cause.message
    described = await handle.describe()
    assert described.status is not None
    assert described.status.name == "FAILED"
    # The client reads the ended run as failed, naming the problem, with or without a worker.
    result = await flows.result(run.workflow_id, timeout=30)
    assert (result.state, result.error_type) == (RunState.FAILED, "PayloadStoreAltered")
    assert "does not match its digest (altered)" in (result.error or "")
    status = await run_with_worker(client, task_queue, flows.status(run.workflow_id))
    assert (status.state, status.error_type, status.error) == (result.state, result.error_type, result.error)


def first_task_completed(history: WorkflowHistory) -> bool:
    return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events)


def reference_of(driver: str, claim: dict[str, str]) -> Payload:
    """A reference payload naming ``driver``, as a raw client can write it."""
    return Payload(
        metadata={"encoding": b"json/protobuf", "messageType": REFERENCE_TYPE},
        data=json.dumps({"driverName": driver, "claimData": claim}).encode(),
    )


async def forged_reference(store: Path) -> Payload:
    """A reference to a real blob of another namespace (``globex``), as a raw client can write it."""
    elsewhere = FilesystemDriver(store, namespace="globex")
    [claim] = await elsewhere.store(
        StorageDriverStoreContext(target=StorageDriverWorkflowInfo(namespace="globex", id="w")),
        [Payload(metadata={"encoding": b"json/plain"}, data=b'{"secret": "of globex"}')],
    )
    return reference_of(FilesystemDriver.NAME, claim.claim_data)


async def test_a_run_started_with_a_forged_reference_fails_naming_it(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    store = tmp_path / "payloads"
    client = await client_of(temporal_env, env_of(store=f"fs:{store}"))
    forged = await forged_reference(store)
    cause = await started_to_failure(client, task_queue, forged, "forged")
    assert cause.type == "PayloadStoreAltered"
    assert "a reference to namespace 'globex'" in cause.message


async def test_a_signal_carrying_a_forged_reference_fails_the_run_as_it_arrives(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """A running run (waiting at an approval, a worker holding it in its cache) that a raw client
    signals with a forged reference fails naming it, instead of failing every later task."""
    store = tmp_path / "payloads"
    client = await client_of(temporal_env, env_of(store=f"fs:{store}"))
    cause = await signalled_while_waiting(client, task_queue, await forged_reference(store))
    assert cause.type == "PayloadStoreAltered"
    assert "a reference to namespace 'globex'" in cause.message


async def signalled_while_waiting(client: Client, task_queue: str, payload: Payload) -> ApplicationError:
    """The error a run waiting at an approval (a worker holding it in its cache) fails with once a
    raw client signals it ``approve`` with ``payload``."""
    flows = FlowClient(client, task_queue=task_queue)
    doc = definition(
        unique("signalled"), [{"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"}]
    )
    run = await flows.start_run(doc, {})
    handle = client.get_workflow_handle(run.workflow_id)

    async def signal_once_waiting() -> ApplicationError:
        # The run is in the worker's cache once its first workflow task completed.
        await eventually(handle.fetch_history, first_task_completed, timeout=FAILS_WITHIN, what="first task")
        await handle.signal("approve", RawValue(payload))
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), FAILS_WITHIN)
        assert isinstance(failed.value.cause, ApplicationError)
        return failed.value.cause

    return await run_with_worker(client, task_queue, signal_once_waiting())


def test_the_error_is_both_a_store_error_and_a_non_retryable_application_error() -> None:
    err = PayloadStoreAltered("fs: the stored payload does not match its digest (altered)")
    assert isinstance(err, PayloadStoreError)  # every caller that reports store errors reports it
    assert isinstance(err, ApplicationError)
    assert err.non_retryable
    assert err.type == "PayloadStoreAltered" == ALTERED_PAYLOAD  # what FlowClient.status looks for
    assert str(err) == err.message == "fs: the stored payload does not match its digest (altered)"


async def test_a_reference_no_store_of_the_product_reads_fails_the_run(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """A driver name no ``WFA_PAYLOAD_STORE`` configures: the SDK's "No driver found" failed the
    workflow task on every retry (an attacker's probe: still running at attempt 4). A start and a
    signal both fail the run naming it."""
    store = tmp_path / "payloads"
    client = await client_of(temporal_env, env_of(store=f"fs:{store}"))
    forged = reference_of("nope", {"namespace": "default", "digest": "0" * 64})
    cause = await started_to_failure(client, task_queue, forged, "nope")
    assert cause.type == "PayloadStoreAltered"
    assert "not a reference of any store this product configures (driver 'nope')" in cause.message

    cause = await signalled_while_waiting(client, task_queue, forged)
    assert cause.type == "PayloadStoreAltered"
    assert "(driver 'nope')" in cause.message


async def test_bytes_planted_under_their_own_digest_fail_the_run(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """Bytes that match their digest but are no payload: the parse error failed the workflow task
    on every retry (an attacker's probe); now the run fails naming it."""
    store = tmp_path / "payloads"
    client = await client_of(temporal_env, env_of(store=f"fs:{store}"))
    garbage = b"\xff\xff\xff\xff-not-a-payload"
    digest = hashlib.sha256(garbage).hexdigest()
    blob = FilesystemDriver(store).path(temporal_env.client.namespace, digest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(garbage)
    planted = reference_of(
        FilesystemDriver.NAME, {"namespace": temporal_env.client.namespace, "digest": digest}
    )
    cause = await started_to_failure(client, task_queue, planted, "planted")
    assert cause.type == "PayloadStoreAltered"
    assert "the stored bytes are not a payload" in cause.message


async def test_a_reader_with_a_store_of_another_kind_is_told_to_set_it(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, database_url: str
) -> None:
    """A run whose result the worker stored in ``fs:``, read with ``WFA_PAYLOAD_STORE=postgres:...``:
    ``FlowClient`` raised the SDK's bare ``ValueError`` and ``wfa`` said "internal error" (exit 70,
    an attacker's probe); now a store error naming both stores, ``wfa`` exit 2, as for a process
    with no store."""
    store = tmp_path / "payloads"
    env = env_of(store=f"fs:{store}", WFA_PAYLOAD_STORE_RUN_RESULT="always")
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue)
    doc = definition(
        unique("kinds"), [{"id": "greet", "type": "task", "action": "echo", "input": {"v": "x" * 600}}]
    )
    run = await flows.start_run(doc, {})
    assert (
        await run_with_worker(client, task_queue, flows.result(run.workflow_id, timeout=60))
    ).state == RunState.COMPLETED

    postgres = database_url
    other = FlowClient(
        await client_of(temporal_env, env_of(store=f"postgres:{postgres}")), task_queue=task_queue
    )
    with pytest.raises(
        PayloadStoreError, match=r"stored by the wfa\.fs store, read with this process's wfa\.postgres"
    ):
        await other.result(run.workflow_id, timeout=30)
    address = temporal_env.client.service_client.config.target_host
    done = await run_wfa(
        "result", run.workflow_id, env=wfa_env(address, task_queue, WFA_PAYLOAD_STORE=f"postgres:{postgres}")
    )
    assert done.code == 2, done.describe()
    assert "set WFA_PAYLOAD_STORE as the process that stored it has it" in done.err
    assert "internal error" not in done.err
