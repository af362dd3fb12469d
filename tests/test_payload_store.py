"""Large payloads by reference (``WFA_PAYLOAD_STORE``): runs whose outputs and input add up past
Temporal's 2 MiB payload limit complete, with history holding references only; later steps read the
big outputs; the budgets still bound what a run keeps; a new worker reads what an earlier one stored;
with encryption on, neither history nor the stored blobs hold the data in clear.

Everything runs on the session's dev server (``temporal_env``) and the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import StorageDriverClaim, StorageDriverRetrieveContext, StorageDriverStoreContext
from temporalio.converter import StorageDriverWorkflowInfo as WorkflowTarget
from temporalio.testing import WorkflowEnvironment

from gateway.codec import codec_router_from_env
from interpreter.sizes import ACTION_OUTPUT_BUDGET, RUN_STATE_BUDGET
from interpreter.state import RunState, StepStatus
from starter.cli import EXIT_BAD_INPUT, EXIT_OK, main
from starter.client import FlowClient
from starter.codec import ENCODING, data_converter
from starter.connection import connect_client
from starter.errors import InvalidInputError
from starter.payload_store import (
    DEFAULT_STATE_BUDGET,
    RESOLVE_LIMIT,
    RESOLVE_MAX_REFERENCES,
    FilesystemDriver,
    PayloadStoreConfig,
    PayloadStoreConfigError,
    PayloadStoreError,
    PostgresDriver,
    ReferenceResolver,
    state_budget_for,
)
from tests.workflows.support import definition, eventually, record, unique
from worker import build_worker

ITEMS = 600
CHUNK = 4000  # 600 outputs of 4 KB: 2.4 MB of step outputs, past Temporal's 2 MiB
BIG_INPUT = 2_500_000
KEY = base64.b64encode(b"K" * 32).decode()
TOKEN = "payload-store-token-0123456789"
REFERENCE_TYPE = b"temporal.api.sdk.v1.ExternalStorageReference"


def big_foreach(name: str, items: int = ITEMS, *, blob: bool = True) -> dict[str, Any]:
    """A foreach whose collected outputs exceed 2 MiB, then a step whose templates read them and the
    big input."""
    return definition(
        name,
        [
            {
                "id": "each",
                "type": "foreach",
                "items": f"range({items}) | list",
                "concurrency": 50,
                "steps": [
                    {
                        "id": "item",
                        "type": "task",
                        "action": "echo",
                        "input": {"value": "{{ input.chunk }}{{ item }}"},
                    }
                ],
            },
            {
                "id": "summary",
                "type": "task",
                "action": "echo",
                "input": {
                    "value": {
                        "count": "{{ steps.each.output | length }}",
                        "last": "{{ steps.each.output[-1][-8:] }}",
                        "first_length": "{{ steps.each.output[0] | length }}",
                    }
                    | (
                        {"input_head": "{{ input.blob[:4] }}", "input_tail": "{{ input.blob[-12:] }}"}
                        if blob
                        else {}
                    )
                },
            },
        ],
        limits={"max_foreach_items": 1000, "max_step_executions": 2000},
    )


def env_of(*, store: str | None = None, keys: str | None = None, **more: str) -> dict[str, str]:
    env = dict(more.items())
    if store:
        env["WFA_PAYLOAD_STORE"] = store
    if keys:
        env["WFA_PAYLOAD_KEYS"] = keys
    return env


async def client_of(temporal_env: WorkflowEnvironment, env: Mapping[str, str]) -> Client:
    return await connect_client(address=temporal_env.client.service_client.config.target_host, env=env)


def history_payloads(history: Any) -> list[Payload]:
    """Every payload of every event (inputs, results, query-free)."""
    found: list[Payload] = []

    def walk(message: Any) -> None:
        for descriptor, value in message.ListFields():
            if descriptor.message_type is None:
                continue
            items = (
                [value]
                if hasattr(value, "ListFields")
                else list(value.values())
                if hasattr(value, "values")
                else list(value)
            )
            for item in items:
                if isinstance(item, Payload):
                    found.append(item)
                elif hasattr(item, "ListFields"):
                    walk(item)

    for event in history.events:
        walk(event)
    return found


def references(payloads: list[Payload]) -> list[Payload]:
    return [p for p in payloads if p.metadata.get("messageType") == REFERENCE_TYPE]


async def run_with_worker(client: Client, task_queue: str, coro: Any) -> Any:
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        return await coro


# ------------------------------------------------------------------------------ configuration


def test_configuration_and_its_errors(tmp_path: Path) -> None:
    assert PayloadStoreConfig.from_env({}) is None
    assert PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": "off"}) is None
    fs = PayloadStoreConfig.from_env(
        {"WFA_PAYLOAD_STORE": f"fs:{tmp_path}", "WFA_PAYLOAD_STORE_THRESHOLD": "1000"}
    )
    assert fs is not None
    assert fs.kind == "fs"
    assert fs.threshold == 1000
    assert fs.state_budget == DEFAULT_STATE_BUDGET
    pg = PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": "postgres", "DATABASE_URL": "postgresql://u@h/db"})
    assert pg is not None
    assert pg.kind == "postgres"
    assert pg.location == "postgresql://u@h/db"
    for env, message in (
        ({"WFA_PAYLOAD_STORE": "gcs:bucket"}, "is not fs:<directory>, postgres, postgres:<url> or s3://"),
        ({"WFA_PAYLOAD_STORE": "fs:"}, "fs needs a directory"),
        (
            {"WFA_PAYLOAD_STORE": "postgres", "WFA_PAYLOAD_STORE_THRESHOLD": "big"},
            "THRESHOLD: 'big' is not a number",
        ),
        ({"WFA_PAYLOAD_STORE": "postgres", "WFA_PAYLOAD_STORE_THRESHOLD": "3000000"}, "not between 0 and"),
        (
            {"WFA_PAYLOAD_STORE": "postgres", "WFA_PAYLOAD_STORE_STATE_BUDGET": "10"},
            "STATE_BUDGET: 10 is not between",
        ),
    ):
        with pytest.raises(PayloadStoreConfigError, match=message):
            data_converter(env)
    converter = data_converter(
        {"WFA_PAYLOAD_STORE": f"fs:{tmp_path}", "WFA_PAYLOAD_STORE_STATE_BUDGET": "5000000"}
    )
    assert converter.external_storage is not None
    assert state_budget_for(converter) == 5_000_000
    assert state_budget_for(data_converter({})) is None


async def test_forged_or_altered_references_are_refused(tmp_path: Path, database_url: str) -> None:
    """A reference comes from history, which a client writes: it must not reach outside the store,
    into another namespace, or hand back altered bytes."""
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"s" * 1000 + b'"')
    context = StorageDriverStoreContext(target=WorkflowTarget(namespace="acme", id="w"))
    (tmp_path / "secret").write_bytes(b"not a payload")
    for driver in (
        FilesystemDriver(tmp_path / "store", namespace="acme"),
        PostgresDriver(database_url, namespace="acme"),
    ):
        [claim] = await driver.store(context, [payload])
        assert claim.claim_data["namespace"] == "acme"
        [again] = await driver.store(context, [payload])
        assert again == claim  # content-addressed: stored once
        [back] = await driver.retrieve(StorageDriverRetrieveContext(), [claim])
        assert back == payload
        forged = [
            {**claim.claim_data, "digest": "../../secret"},
            {**claim.claim_data, "digest": "0" * 64},
            {**claim.claim_data, "namespace": "globex"},
            {**claim.claim_data, "hash_algorithm": "md5"},
        ]
        for data in forged:
            with pytest.raises(PayloadStoreError) as err:
                await driver.retrieve(StorageDriverRetrieveContext(), [StorageDriverClaim(data)])
            assert any(
                word in str(err.value) for word in ("not a reference", "is not in", "namespace 'globex'")
            )
        if isinstance(driver, PostgresDriver):
            await driver.close()
    # A blob changed on disk is refused, not served.
    fs = FilesystemDriver(tmp_path / "store", namespace="acme")
    [claim] = await fs.store(context, [payload])
    fs.path("acme", claim.claim_data["digest"]).write_bytes(Payload(data=b'"other"').SerializeToString())
    with pytest.raises(PayloadStoreError, match="does not match its digest"):
        await fs.retrieve(StorageDriverRetrieveContext(), [claim])
    # Namespaces are path segments that cannot climb out of the directory.
    assert FilesystemDriver(tmp_path).path("..", "a" * 64).parent.parent.name == "%2E%2E"


# ------------------------------------------------------------------------------ attackers
def as_role(url: str, role: str) -> str:
    """``url`` with another user (the embedded server trusts socket logins)."""
    from activities.store.database import normalize_url

    return normalize_url(url).set(username=role).render_as_string(hide_password=False)


def reference_to(claim: StorageDriverClaim, driver: str) -> Payload:
    return Payload(
        metadata={"encoding": b"json/protobuf", "messageType": REFERENCE_TYPE},
        data=json.dumps({"driverName": driver, "claimData": claim.claim_data}).encode(),
    )


async def test_a_tenant_login_cannot_read_or_plant_payload_blobs(database_url: str) -> None:
    """payload_blobs is keyed by namespace, not tenant: a tenant's database login must reach no
    row of it (neither read another namespace's payloads nor plant a row under a digest)."""
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError
    from sqlalchemy.pool import NullPool

    from activities.store.database import create_engine
    from activities.store.roles import grant_platform, grant_tenant

    suffix = hashlib.sha256(unique("blobs").encode()).hexdigest()[:8]
    tenant_role, platform_role = f"bravo_blobs_{suffix}", f"worker_blobs_{suffix}"
    await grant_tenant(database_url, f"bravo-{suffix}", tenant_role)
    await grant_platform(database_url, platform_role)

    # The victim's worker (a platform login) stores a payload.
    secret = Payload(metadata={"encoding": b"json/plain"}, data=b'{"card":"4111 1111 1111 1111"}')
    victim = PostgresDriver(as_role(database_url, platform_role), namespace="acme-prod")
    [claim] = await victim.store(StorageDriverStoreContext(), [secret])
    later = Payload(metadata={"encoding": b"json/plain"}, data=b'{"approved":true}')
    digest = hashlib.sha256(later.SerializeToString()).hexdigest()

    engine = create_engine(as_role(database_url, tenant_role), poolclass=NullPool)
    try:
        for statement, values in (
            ("SELECT namespace, digest, data FROM payload_blobs", {}),
            ("INSERT INTO payload_blobs VALUES ('acme-prod', :d, 'x', 1)", {"d": digest}),
        ):
            async with engine.begin() as conn:
                with pytest.raises(ProgrammingError, match="permission denied"):
                    await conn.execute(text(statement), values)
    finally:
        await engine.dispose()
    # Through the driver: a clear refusal naming the rule, not a traceback.
    tenant_driver = PostgresDriver(as_role(database_url, tenant_role), namespace="acme-prod")
    with pytest.raises(PayloadStoreError, match="platform logins only"):
        await tenant_driver.retrieve(StorageDriverRetrieveContext(), [claim])
    with pytest.raises(PayloadStoreError, match="platform logins only"):
        await tenant_driver.store(StorageDriverStoreContext(), [later])
    await tenant_driver.close()
    [back] = await victim.retrieve(StorageDriverRetrieveContext(), [claim])
    assert back == secret
    await victim.close()


async def test_a_planted_blob_cannot_break_a_later_store(tmp_path: Path, database_url: str) -> None:
    """A row or file planted in advance under the digest of a payload a run will store later (by
    anyone who could write the store) is replaced by the store, so the run reads its payload."""
    from sqlalchemy import text

    from activities.store.database import Database

    later = Payload(
        metadata={"encoding": b"json/plain"}, data=b'{"approved":"' + unique("p").encode() + b'"}'
    )
    digest = hashlib.sha256(later.SerializeToString()).hexdigest()
    admin = Database(database_url)
    try:
        async with admin.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO payload_blobs VALUES ('acme-prod', :d, 'junk', 4)"), {"d": digest}
            )
        fs = FilesystemDriver(tmp_path / "store", namespace="acme-prod")
        fs.path("acme-prod", digest).parent.mkdir(parents=True)
        fs.path("acme-prod", digest).write_bytes(b"junk")
        for driver in (fs, PostgresDriver(namespace="acme-prod", database=admin)):
            [claim] = await driver.store(StorageDriverStoreContext(), [later])
            assert claim.claim_data["digest"] == digest
            [back] = await driver.retrieve(StorageDriverRetrieveContext(), [claim])
            assert back == later
        async with admin.engine.connect() as conn:
            query = text("SELECT size_bytes FROM payload_blobs WHERE digest = :d")
            size = (await conn.execute(query, {"d": digest})).scalar_one()
        assert size == later.ByteSize()
    finally:
        await admin.close()


async def test_the_codec_resolver_is_bounded(tmp_path: Path, database_url: str) -> None:
    """A codec request cannot make the gateway read more than it will hand out: blobs over the
    limit are left as references without being read, only the first references of a request are
    resolved, and the per-namespace drivers are a small cache (evicted engines disposed)."""
    small = Payload(metadata={"encoding": b"json/plain"}, data=b'"small"')
    huge = Payload(metadata={"encoding": b"binary/plain"}, data=b"\0" * (RESOLVE_LIMIT + 1))
    for kind, location in (("fs", str(tmp_path / "store")), ("postgres", database_url)):
        config = PayloadStoreConfig(kind=kind, location=location)
        driver = config.driver("victim")
        [small_claim, huge_claim] = await driver.store(StorageDriverStoreContext(), [small, huge])
        if isinstance(driver, PostgresDriver):
            await driver.close()
        name = driver.name()
        resolver = ReferenceResolver(config)
        try:
            refs = [reference_to(huge_claim, name)] * 20 + [reference_to(small_claim, name)] * 32_000
            out = await resolver.resolve(refs, "victim")
            assert out[:20] == refs[:20]  # over the limit: left as references
            assert out[20:RESOLVE_MAX_REFERENCES] == [small] * (RESOLVE_MAX_REFERENCES - 20)
            assert out[RESOLVE_MAX_REFERENCES:] == refs[RESOLVE_MAX_REFERENCES:]  # past the cap
            assert await resolver.resolve(refs[20:22], "elsewhere") == refs[20:22]
            first = await resolver._driver("victim")
            for index in range(200):
                await resolver._driver(f"ns-{index}")
            assert len(resolver._drivers) <= resolver.max_drivers
            if isinstance(first, PostgresDriver):
                assert first._database is None  # evicted: its engine disposed
        finally:
            await resolver.close()


# ------------------------------------------------------------------------------ runs on a server


async def test_without_the_store_the_big_run_fails_clearly(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str
) -> None:
    """Today's behaviour, kept: the foreach fails as a step with the state budget's message, and a
    run input over 2 MiB is refused at the start."""
    client = await client_of(temporal_env, env_of())
    assert client.data_converter.external_storage is None
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    started = await flows.start_run(big_foreach(unique("nostore"), blob=False), {"chunk": "x" * CHUNK})
    result = await run_with_worker(client, task_queue, started.result(timeout=300))
    assert result.state == RunState.FAILED
    assert result.error_type == "StateBudgetExceeded"
    assert f"over its budget of {RUN_STATE_BUDGET} bytes" in (result.error or "")
    assert "WFA_PAYLOAD_STORE" in (result.error or "")
    with pytest.raises(InvalidInputError, match="refused to start the run: Blob data size exceeds limit"):
        await flows.start_run(
            big_foreach(unique("nostore-input"), 1), {"chunk": "x", "blob": "b" * BIG_INPUT}
        )


async def test_big_outputs_and_input_by_reference_in_a_directory(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "payloads"
    env = env_of(store=f"fs:{store}")
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    blob = "b" * (BIG_INPUT - 12) + "input-ends-x"
    started = await flows.start_run(big_foreach(unique("fsstore")), {"chunk": "x" * CHUNK, "blob": blob})

    async def finish() -> Any:
        result = await started.result(timeout=600)
        return result, await flows.status(started.workflow_id)

    result, status = await run_with_worker(client, task_queue, finish())
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    summary = record(result, "summary").output
    assert summary == {
        "count": ITEMS,
        "last": "xxxxx599",
        "first_length": CHUNK + 1,
        "input_head": "bbbb",
        "input_tail": "input-ends-x",
    }
    # The status query (answered over 2 MiB) works too.
    assert status.state == RunState.COMPLETED
    assert record(status, "summary").output == summary

    # History holds references only: every payload that stayed inline is under the threshold.
    history = await client.get_workflow_handle(started.workflow_id).fetch_history()
    payloads = history_payloads(history)
    assert max(p.ByteSize() for p in payloads) < 256 * 1024
    stored = references(payloads)
    assert len(stored) >= 2  # the run's input and its result (and the summary step's input)
    assert sum(p.external_payloads[0].size_bytes for p in stored) > 2 * 1024 * 1024
    files = [p for p in store.rglob("*") if p.is_file()]
    assert files
    assert all(p.name == hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    assert all(p.parent.parent.name == "default" for p in files)  # under the run's namespace
    for event in history.events:
        for p in references(history_payloads(type("H", (), {"events": [event]})())):
            print("stored:", event.event_type, p.external_payloads[0].size_bytes)
    print(
        f"{len(stored)} references in history, {len(files)} blobs, {sum(f.stat().st_size for f in files)} bytes"
    )

    capsys.readouterr()
    # The CLI reads the run (status and result) through the same configuration.
    address = temporal_env.client.service_client.config.target_host
    monkeypatch.setenv("WFA_PAYLOAD_STORE", f"fs:{store}")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("WFA_PAYLOAD_KEYS", raising=False)
    monkeypatch.delenv("WFA_PAYLOAD_KEYS_FILE", raising=False)
    code = await asyncio.to_thread(main, ["--address", address, "result", started.workflow_id, "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out[-2000:]
    assert json.loads(out)["state"] == "completed"
    assert "input-ends-x" in out
    code = await asyncio.to_thread(main, ["--address", address, "status", started.workflow_id])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err[-2000:]
    assert "completed" in captured.out
    # Without the store configured, the CLI says why it cannot read the run (no traceback).
    monkeypatch.delenv("WFA_PAYLOAD_STORE")
    code = await asyncio.to_thread(main, ["--address", address, "result", started.workflow_id])
    captured = capsys.readouterr()
    assert code == EXIT_BAD_INPUT, captured.err
    assert (
        "its payloads are in the payload store and this process has none: set WFA_PAYLOAD_STORE"
        in captured.err
    )
    assert "internal error" not in captured.err


async def test_budgets_still_bound_the_run_with_the_store(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, tmp_path: Path
) -> None:
    """With the store on, the state budget is the configured one (recorded in the run's options),
    and one action's output is still bounded as before."""
    env = env_of(store=f"fs:{tmp_path}", WFA_PAYLOAD_STORE_STATE_BUDGET=str(2 * 1024 * 1024))
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    over = await flows.start_run(big_foreach(unique("budget"), blob=False), {"chunk": "x" * CHUNK})
    huge = await flows.start_run(
        definition(
            unique("huge"),
            [{"id": "huge", "type": "task", "action": "echo", "input": {"value": "{{ input.parts }}"}}],
        ),
        {"parts": ["w" * 200_000] * 3},
    )

    async def both() -> Any:
        return await over.result(timeout=300), await huge.result(timeout=300)

    over_result, huge_result = await run_with_worker(client, task_queue, both())
    assert over_result.state == RunState.FAILED
    assert over_result.error_type == "StateBudgetExceeded"
    assert f"over its budget of {2 * 1024 * 1024} bytes" in (over_result.error or "")
    assert "WFA_PAYLOAD_STORE_STATE_BUDGET" in (over_result.error or "")
    step = record(huge_result, "huge")
    assert step.status == StepStatus.FAILED
    assert step.error_type == "ActionOutputTooLarge"
    assert str(ACTION_OUTPUT_BUDGET) in (step.error or "")


async def test_a_new_worker_reads_what_an_earlier_one_stored_in_postgres(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str
) -> None:
    """Durability: the first worker stores the outputs and stops while the run waits; a new worker
    (new process state, new driver) continues from the references in history."""
    env = env_of(store="postgres", DATABASE_URL=database_url)
    document = big_foreach(unique("pgstore"), 60, blob=False)
    document["steps"][0]["steps"][0]["input"]["value"] = "{{ input.chunk }}{{ item }}"
    document["steps"].insert(1, {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"})
    first = await client_of(temporal_env, env)
    flows = FlowClient(first, task_queue=task_queue, database=database_url)
    started = await flows.start_run(document, {"chunk": "y" * 40_000})  # 60 x 40 KB = 2.4 MB

    async def until_waiting() -> Any:
        return await eventually(
            lambda: flows.status(started.workflow_id),
            lambda s: "review" in s.current_steps,
            what="the run waiting at review",
            timeout=300,
            interval=1.0,
        )

    await run_with_worker(first, task_queue, until_waiting())
    from sqlalchemy import text

    from activities.store.database import Database

    async with Database(database_url) as db, db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(  # other tests of this module store under these namespaces
                    "SELECT namespace, size_bytes FROM payload_blobs"
                    " WHERE namespace NOT IN ('acme', 'acme-prod', 'victim')"
                )
            )
        ).all()
    assert rows
    assert all(ns == "default" for ns, _ in rows)
    assert max(size for _, size in rows) > 2 * 1024 * 1024
    second = await client_of(temporal_env, env)
    flows2 = FlowClient(second, task_queue=task_queue, database=database_url)

    async def approve_and_finish() -> Any:
        await flows2.approve(started.workflow_id, "alice")
        return await flows2.result(started.workflow_id, timeout=300)

    result = await run_with_worker(second, task_queue, approve_and_finish())
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    summary = record(result, "summary").output
    assert summary["count"] == 60
    assert summary["last"] == "yyyyyy59"


async def test_encrypted_payloads_are_stored_encrypted_and_the_codec_server_still_decodes(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, tmp_path: Path
) -> None:
    canary = "4485913721937510"  # a Luhn-valid test card number, unique to this test
    store = tmp_path / "payloads"
    client = await client_of(temporal_env, env_of(store=f"fs:{store}", keys=f"k={KEY}"))
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    document = big_foreach(unique("encrypted"), 60)
    started = await flows.start_run(
        document, {"chunk": f"card {canary} " + "z" * 40_000, "blob": canary * 40_000}
    )
    result = await run_with_worker(client, task_queue, started.result(timeout=300))
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert canary in record(result, "each[59].item").output  # the client decodes

    history = await client.get_workflow_handle(started.workflow_id).fetch_history()
    text = history.to_json()
    assert canary not in text
    assert base64.b64encode(canary.encode()).decode()[:16] not in text
    files = [p for p in store.rglob("*") if p.is_file()]
    assert len(files) >= 2
    for path in files:
        blob = path.read_bytes()
        assert canary.encode() not in blob
        assert Payload.FromString(blob).metadata["encoding"] == ENCODING  # stored encrypted
    # The control: the same search finds the canary in the blobs of a run without keys.
    plain_store = tmp_path / "plain"
    plain = await client_of(temporal_env, env_of(store=f"fs:{plain_store}"))
    plain_run = await FlowClient(plain, task_queue=task_queue + "-plain", database=database_url).start_run(
        big_foreach(unique("plain"), 1), {"chunk": "c", "blob": canary * 40_000}
    )
    await run_with_worker(plain, task_queue + "-plain", plain_run.result(timeout=300))
    assert any(canary.encode() in p.read_bytes() for p in plain_store.rglob("*") if p.is_file())

    # What the Web UI shows: references and encrypted inline payloads. The gateway's codec server,
    # with the store configured, answers a reference with the stored payload decrypted (for the
    # request's namespace only); without the store it passes references through.
    # The outputs' history passed Temporal's suggestion (4 MiB), so the run continued as new: its
    # first run's start holds the input; the latest run's start the snapshot (over 4 MiB).
    first_run = history.events[0].workflow_execution_started_event_attributes.first_execution_run_id
    first = await client.get_workflow_handle(started.workflow_id, run_id=first_run).fetch_history()
    assert canary not in first.to_json()
    payloads = history_payloads(first)
    shown = references(payloads)[:1] + [p for p in payloads if p.metadata.get("encoding") == ENCODING][:3]
    assert len(shown) == 4
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in shown
        ]
    }
    keys = {"WFA_PAYLOAD_KEYS": f"k={KEY}", "WFA_CODEC_TOKENS": TOKEN}
    with_store = codec_router_from_env({**keys, "WFA_PAYLOAD_STORE": f"fs:{store}"})
    without_store = codec_router_from_env(keys)
    assert with_store is not None
    assert without_store is not None

    async def decode(router: Any, namespace: str) -> list[dict[str, Any]]:
        app = FastAPI()
        app.include_router(router)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as http:
            response = await http.post(
                "/codec/decode",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}", "X-Namespace": namespace},
            )
        assert response.status_code == 200, response.text
        decoded: list[dict[str, Any]] = response.json()["payloads"]
        for item in decoded[1:]:
            assert base64.b64decode(item["metadata"]["encoding"]) != ENCODING
        return decoded

    resolved = await decode(with_store, "default")
    assert base64.b64decode(resolved[0]["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(resolved[0]["data"]))["input"]["blob"].startswith(canary)
    for passed in (await decode(with_store, "globex"), await decode(without_store, "default")):
        reference = json.loads(base64.b64decode(passed[0]["data"]))
        assert reference["driverName"] == "wfa.fs"
        assert set(reference["claimData"]) == {"namespace", "digest"}  # SHA-256 unnamed: the default
