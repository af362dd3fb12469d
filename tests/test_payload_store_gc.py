"""``wfa payloads gc``: a blob an open (waiting) run or a schedule references is kept however old, an old blob no
open run references is deleted (listed only with ``--dry-run``), a young one is kept; the waiting
run then finishes on a new worker that reads its input from the store. With ``fs:`` and
``postgres``, on the session's dev server and the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeScheduleRequest, DescribeWorkflowExecutionRequest
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.converter import StorageDriverClaim, StorageDriverRetrieveContext, StorageDriverStoreContext
from temporalio.testing import WorkflowEnvironment

from interpreter.state import RunState
from starter.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE, main
from starter.client import FlowClient
from starter.devserver import EPHEMERAL_STARTUP_TIMEOUT, find_temporal_cli
from starter.payload_gc import collect
from starter.payload_store import FilesystemDriver, PayloadStoreConfig, PayloadStoreError, PostgresDriver
from tests.test_payload_store import client_of, history_payloads, references, run_with_worker
from tests.workflows.support import definition, eventually, record, unique


def history_payloads_of(message: Any) -> list[Payload]:
    """Every payload in one protobuf message (a schedule's description)."""
    from starter.payload_gc import _payloads

    return list(_payloads(message))


OLD = 400 * 86400  # seconds: far past any retention


async def age(config: PayloadStoreConfig, digests: list[str], seconds: int) -> None:
    """Makes blobs look last stored ``seconds`` ago (the clock cannot be moved)."""
    if config.kind == "fs":
        driver = config.driver("default")
        assert isinstance(driver, FilesystemDriver)
        when = time.time() - seconds
        for digest in digests:
            os.utime(driver.path("default", digest), (when, when))
        return
    from sqlalchemy import text

    from activities.store.database import Database

    async with Database(config.location) as db, db.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE payload_blobs SET created_at = now() - make_interval(secs => :s)"
                " WHERE namespace = 'default' AND digest = ANY(:d)"
            ),
            {"s": seconds, "d": digests},
        )


async def exists(config: PayloadStoreConfig, digest: str) -> bool:
    driver = config.driver("default")
    claim = StorageDriverClaim({"namespace": "default", "digest": digest, "hash_algorithm": "sha256"})
    try:
        await driver.retrieve(StorageDriverRetrieveContext(), [claim])
        return True
    except PayloadStoreError:
        return False
    finally:
        if isinstance(driver, PostgresDriver):
            await driver.close()


async def gc(address: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--address", address, "payloads", "gc", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("kind", ["fs", "postgres"])
async def test_gc_keeps_what_a_waiting_run_needs_and_deletes_old_garbage(
    kind: str,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = f"fs:{tmp_path / 'payloads'}" if kind == "fs" else f"postgres:{database_url}"
    env = {"WFA_PAYLOAD_STORE": store, "WFA_PAYLOAD_STORE_THRESHOLD": "1000", "DATABASE_URL": database_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = PayloadStoreConfig.from_env(env)
    assert config is not None
    address = temporal_env.client.service_client.config.target_host

    # A run whose input is stored, waiting at an approval.
    document = definition(
        unique("gcwait"),
        [
            {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "{{ input.doc[-10:] }}"}},
        ],
    )
    first = await client_of(temporal_env, env)
    flows = FlowClient(first, task_queue=task_queue, database=database_url)
    tail = unique("end")[-10:]
    started = await flows.start_run(document, {"doc": "w" * 5000 + tail})

    async def until_waiting() -> Any:
        return await eventually(
            lambda: flows.status(started.workflow_id),
            lambda s: "review" in s.current_steps,
            what="the run waiting at review",
            timeout=300,
            interval=1.0,
        )

    await run_with_worker(first, task_queue, until_waiting())
    history = await first.get_workflow_handle(started.workflow_id).fetch_history()
    [input_ref, *_] = references(history_payloads(history))
    needed = json.loads(input_ref.data)["claimData"]["digest"]

    # A (paused) schedule whose runs' input is stored: what it will start needs it too.
    schedule_id = unique("gcsched")
    schedule = await first.create_schedule(
        schedule_id,
        Schedule(
            action=ScheduleActionStartWorkflow(
                "RunDefinition", {"doc": "s" * 5000 + schedule_id}, id=schedule_id, task_queue=task_queue
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(days=1))]),
            state=ScheduleState(paused=True),
        ),
    )
    described = await first.workflow_service.describe_schedule(
        DescribeScheduleRequest(namespace="default", schedule_id=schedule_id)
    )
    [schedule_ref] = references(history_payloads_of(described))
    scheduled = json.loads(schedule_ref.data)["claimData"]["digest"]

    async def listed() -> list[str]:
        return [s.id async for s in await first.list_schedules()]

    await eventually(listed, lambda ids: schedule_id in ids, what="the schedule listed", timeout=60)

    # Garbage: a payload no run refers to (a status answer, a run long gone), and a young one.
    driver = config.driver("default")
    [old_claim, young_claim] = await driver.store(
        StorageDriverStoreContext(),
        [
            Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"g" * 3000 + b'"'),
            Payload(metadata={"encoding": b"json/plain"}, data=b'"' + unique("young").encode() * 100 + b'"'),
        ],
    )
    if isinstance(driver, PostgresDriver):
        await driver.close()
    garbage, young = old_claim.claim_data["digest"], young_claim.claim_data["digest"]
    await age(config, [needed, garbage, scheduled], OLD)

    # Dry run: lists the old garbage only, deletes nothing.
    code, out, err = await gc(address, capsys, "--older-than", "30d", "--dry-run", "--json")
    assert code == EXIT_OK, err
    report = json.loads(out)
    assert report["dry_run"] is True
    assert report["open_runs"] >= 1
    listed = {b["digest"] for b in report["deleted"]}
    assert garbage in listed
    assert needed not in listed
    assert young not in listed
    assert scheduled not in listed
    assert {needed, scheduled} <= {b["digest"] for b in report["kept_referenced"]}
    assert await exists(config, garbage)

    # For real (text output): the garbage goes, the referenced and the young blobs stay.
    code, out, err = await gc(address, capsys, "--older-than", "30d")
    assert code == EXIT_OK, err
    assert "deleted" in out
    assert garbage in out
    assert not await exists(config, garbage)
    assert await exists(config, needed)
    assert await exists(config, young)
    assert await exists(config, scheduled)
    await schedule.delete()

    # A new worker and client (no cache: the run is replayed, its input read from the store).
    second = await client_of(temporal_env, env)
    flows2 = FlowClient(second, task_queue=task_queue, database=database_url)

    async def approve_and_finish() -> Any:
        await flows2.approve(started.workflow_id, "alice")
        return await flows2.result(started.workflow_id, timeout=300)

    result = await run_with_worker(second, task_queue, approve_and_finish())
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert record(result, "after").output == tail

    # Closed a moment ago, the run still protects its input for the age given (its status is read
    # by replaying its history from the store: found by a probe, the default age deleted the input
    # of a run that had waited longer than it, at its first collection after it closed).
    await age(config, [needed], OLD)
    code, out, err = await gc(address, capsys, "--older-than", "30d", "--json")
    assert code == EXIT_OK, err
    assert needed not in {b["digest"] for b in json.loads(out)["deleted"]}
    assert (await flows2.status(started.workflow_id)).state == RunState.COMPLETED
    # Closed longer ago than the age (a collection 31 days on), it protects nothing: the input goes.
    later = await collect(
        second,
        config,
        older_than=timedelta(days=30),
        dry_run=True,
        now=datetime.now(UTC) + timedelta(days=31),
    )
    assert needed in {b.digest for b in later.deleted}


async def test_gc_refuses_unsafe_or_impossible_requests(
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = temporal_env.client.service_client.config.target_host
    monkeypatch.delenv("WFA_PAYLOAD_STORE", raising=False)
    code, _, err = await gc(address, capsys)
    assert code == EXIT_BAD_INPUT
    assert "WFA_PAYLOAD_STORE is not set" in err
    monkeypatch.setenv("WFA_PAYLOAD_STORE", f"fs:{tmp_path}")
    code, _, err = await gc(address, capsys, "--older-than", "10m")
    assert code == EXIT_BAD_INPUT
    assert "--older-than must be at least 60 minutes" in err
    code, _, err = await gc(address, capsys, "--older-than", "soon")
    assert code == EXIT_BAD_INPUT
    assert "not a duration" in err
    monkeypatch.setenv("WFA_PAYLOAD_STORE", "s3://wfa-payloads/x")
    code, _, err = await gc(address, capsys)
    assert code == EXIT_BAD_INPUT
    assert "bucket lifecycle rule" in err
    # Both are refused before connecting: the same exit 2 with no server answering (they were 3,
    # "cannot reach the Temporal server", found by a review of the README).
    code, _, err = await gc("127.0.0.1:1", capsys)
    assert code == EXIT_BAD_INPUT
    assert "bucket lifecycle rule" in err
    monkeypatch.setenv("WFA_PAYLOAD_STORE", f"fs:{tmp_path}")
    code, _, err = await gc("127.0.0.1:1", capsys, "--older-than", "30m")
    assert code == EXIT_BAD_INPUT
    assert "--older-than must be at least 60 minutes" in err
    # The default age: the namespace's retention plus 7 days (a dry run on an empty store).
    monkeypatch.setenv("WFA_PAYLOAD_STORE", f"fs:{tmp_path}")
    code, out, err = await gc(address, capsys, "--dry-run", "--json")
    assert code == EXIT_OK, err
    report = json.loads(out)
    assert report["older_than_s"] > 7 * 86400
    assert report["deleted"] == []
    # A namespace the server does not have: a clear error and its exit code, not "internal error".
    code, _, err = await gc(address, capsys, "--namespace", "nosuch-namespace", "--dry-run")
    assert code == EXIT_UNAVAILABLE, err
    assert "namespace 'nosuch-namespace' does not exist" in err


async def test_gc_keeps_what_a_paused_run_needs(tmp_path: Path) -> None:
    """A paused run (Temporal's workflow pause) is open: it is neither Running nor closed, and when
    it is unpaused it reads its input from the store. Found by an attacker's review: gc listed only
    Running runs and deleted a paused run's input."""
    from temporalio.api.workflowservice.v1 import PauseWorkflowExecutionRequest
    from temporalio.client import Client
    from temporalio.converter import DataConverter

    from starter.payload_gc import collect

    env = {"WFA_PAYLOAD_STORE": f"fs:{tmp_path / 'payloads'}", "WFA_PAYLOAD_STORE_THRESHOLD": "1000"}
    config = PayloadStoreConfig.from_env(env)
    assert config is not None
    server = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
        dev_server_existing_path=find_temporal_cli(),
        dev_server_extra_args=["--dynamic-config-value", "frontend.WorkflowPauseEnabled=true"],
    )
    try:
        address = server.client.service_client.config.target_host
        converter = DataConverter(external_storage=config.external_storage("default"))
        client = await Client.connect(address, data_converter=converter)
        # No worker: the run stays open with its stored input.
        handle = await client.start_workflow(
            "AnyWorkflow", "p" * 5000, id=unique("paused"), task_queue=unique("tq-nobody")
        )
        [reference] = references(history_payloads(await handle.fetch_history()))
        digest = json.loads(reference.data)["claimData"]["digest"]
        await age(config, [digest], OLD)
        await client.workflow_service.pause_workflow_execution(
            PauseWorkflowExecutionRequest(
                namespace="default", workflow_id=handle.id, identity="ops", reason="maintenance"
            )
        )

        async def status() -> int:
            described = await client.workflow_service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(
                    namespace="default", execution=WorkflowExecution(workflow_id=handle.id)
                )
            )
            return int(described.workflow_execution_info.status)

        await eventually(status, lambda s: s == 8, what="the run paused (status 8)", timeout=60)
        report = await collect(client, config, older_than=timedelta(hours=2))
        assert report.open_runs == 1
        assert report.deleted == []
        assert await exists(config, digest)
    finally:
        await server.shutdown()


async def test_gc_leaves_a_stray_directory_named_like_a_blob_as_it_was(
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Something in the store that is not a blob file (a directory named like a digest) is neither
    deleted nor moved aside; before, gc moved it to ``.<digest>.gc.<pid>``, failed to unlink it
    and stopped with "internal error" (exit 70) (found by a probe of bad inputs)."""
    address = temporal_env.client.service_client.config.target_host
    monkeypatch.setenv("WFA_PAYLOAD_STORE", f"fs:{tmp_path}")
    config = PayloadStoreConfig.from_env()
    assert config is not None
    driver = config.driver("default")
    assert isinstance(driver, FilesystemDriver)
    stray = driver.path("default", "cd" * 32)
    stray.mkdir(parents=True)
    (stray / "inside").write_text("not a blob")
    when = time.time() - OLD
    os.utime(stray, (when, when))
    code, out, err = await gc(address, capsys, "--older-than", "2h", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["deleted"] == []
    assert stray.is_dir()
    assert (stray / "inside").read_text() == "not a blob"
    assert sorted(p.name for p in stray.parent.iterdir()) == [stray.name]  # nothing moved aside
    # An age past the option's bound names the option's bound (not the duration parser's).
    code, _, err = await gc(address, capsys, "--older-than", "99999999d")
    assert code == EXIT_BAD_INPUT
    assert "must be from 1s to 3650d" in err
