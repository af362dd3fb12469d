"""Large payloads by reference in S3 (``WFA_PAYLOAD_STORE=s3://bucket/prefix``): the SDK's S3
driver under this product's read checks, against a real S3 HTTP API on localhost (moto's server,
``moto[server]``), with the session's dev server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import server as moto_server  # the dev extra: a real S3 HTTP API on localhost
from temporalio.api.common.v1 import Payload
from temporalio.converter import StorageDriverClaim, StorageDriverRetrieveContext, StorageDriverStoreContext
from temporalio.converter import StorageDriverWorkflowInfo as WorkflowTarget
from temporalio.testing import WorkflowEnvironment

from gateway.codec import codec_server_from_env
from interpreter.state import RunState
from starter.cli import EXIT_UNAVAILABLE, _exit_code_of
from starter.client import FlowClient
from starter.payload_store import (
    PayloadStoreAltered,
    PayloadStoreConfig,
    PayloadStoreConfigError,
    PayloadStoreError,
    PayloadStoreUnavailableError,
    S3Driver,
)
from tests.test_payload_store import (
    BIG_INPUT,
    REFERENCE_TYPE,
    client_of,
    history_payloads,
    references,
    run_with_worker,
)
from tests.workflows.support import definition, record, unique

BUCKET = "wfa-payloads"
KEY = base64.b64encode(b"S" * 32).decode()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP API on localhost (moto's threaded server), with the bucket created."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket="elsewhere")
    s3.put_object(Bucket="elsewhere", Key="secret", Body=b"not for runs")
    try:
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the local S3 server (moto accepts any credentials)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def s3_env(endpoint: str, **more: str) -> dict[str, str]:
    return {
        "WFA_PAYLOAD_STORE": f"s3://{BUCKET}/wfa",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        **more,
    }


def objects(endpoint: str, prefix: str = "") -> dict[str, int]:
    s3 = s3_client(endpoint)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listed}


def test_s3_configuration() -> None:
    config = PayloadStoreConfig.from_env(
        {"WFA_PAYLOAD_STORE": "s3://wfa-payloads/team/a", "AWS_REGION": "eu-west-1"}
    )
    assert config is not None
    assert (config.kind, config.location) == ("s3", "wfa-payloads/team/a/")
    driver = config.driver("acme")
    assert isinstance(driver, S3Driver)
    assert (driver.bucket, driver.prefix, driver.namespace) == ("wfa-payloads", "team/a/", "acme")
    for spec in ("s3://", "s3://Bad_Bucket", "s3:"):
        with pytest.raises(PayloadStoreConfigError, match="s3 needs a bucket name"):
            PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": spec})


async def test_forged_s3_references_are_refused(s3_endpoint: str) -> None:
    """The SDK's claims name a bucket and a key: a reference forged into a run's input must not
    read another bucket, a key outside the SDK's shape, or another namespace's payload."""
    config = PayloadStoreConfig.from_env(s3_env(s3_endpoint))
    assert config is not None
    acme = config.driver("acme")
    assert isinstance(acme, S3Driver)
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"s" * 1000 + b'"')
    [claim] = await acme.store(
        StorageDriverStoreContext(target=WorkflowTarget(namespace="acme", id="w")), [payload]
    )
    assert claim.claim_data["key"].startswith("v0/ns/acme/")
    assert f"wfa/{claim.claim_data['key']}" in objects(s3_endpoint, "wfa/")
    [back] = await acme.retrieve(StorageDriverRetrieveContext(), [claim])
    assert back == payload
    data = dict(claim.claim_data)
    digest = data["hash_value"]
    for forged, message in (
        ({**data, "bucket": "elsewhere", "key": "secret"}, "another bucket"),
        ({**data, "key": "secret"}, "not a reference of this store"),
        ({**data, "key": f"v0/ns/acme/../../secret/d/sha256/{digest}"}, "not a reference of this store"),
        ({**data, "hash_value": "0" * 64}, "not a reference of this store"),
    ):
        with pytest.raises(PayloadStoreError, match=message) as refused:
            await acme.retrieve(StorageDriverRetrieveContext(), [StorageDriverClaim(forged)])
        # Forged: the run fails naming it. Another bucket: more likely a worker's mistyped
        # setting, so the workflow task is retried until it is corrected.
        assert isinstance(refused.value, PayloadStoreAltered) == (message != "another bucket")
    with pytest.raises(PayloadStoreAltered, match="namespace 'acme'"):
        await config.driver("globex").retrieve(StorageDriverRetrieveContext(), [claim])
    # An object changed in the bucket is refused (the SDK's digest check, as our message).
    s3_client(s3_endpoint).put_object(
        Bucket=BUCKET, Key=f"wfa/{claim.claim_data['key']}", Body=Payload(data=b'"x"').SerializeToString()
    )
    with pytest.raises(PayloadStoreAltered, match="integrity check failed"):
        await acme.retrieve(StorageDriverRetrieveContext(), [claim])
    # An unreachable endpoint: a clear error naming the store.
    down = PayloadStoreConfig.from_env(s3_env("http://127.0.0.1:9"))
    assert down is not None
    with pytest.raises(
        PayloadStoreUnavailableError, match=r"cannot write to s3://wfa-payloads/wfa/ at http://127.0.0.1:9"
    ):
        await down.driver("acme").store(StorageDriverStoreContext(), [payload])
    # ... which wfa reports as unreachable (exit 3, as an unreachable database), not as bad input.
    with pytest.raises(PayloadStoreUnavailableError, match="cannot read from") as unreachable:
        await down.driver("acme").retrieve(StorageDriverRetrieveContext(), [claim])
    assert _exit_code_of(unreachable.value) == EXIT_UNAVAILABLE


async def test_a_big_run_through_s3_and_the_codec_reads_it(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, s3_endpoint: str
) -> None:
    """A 2.5 MB input goes to the bucket under the prefix, encrypted; history
    holds references; the run's steps read the input; the codec server resolves the input's
    reference for the Web UI in the run's namespace only."""
    env = s3_env(s3_endpoint, WFA_PAYLOAD_KEYS=f"s={KEY}", WFA_CODEC_TOKENS="s3-codec-token-0123456789")
    client = await client_of(temporal_env, env)
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    blob = "b" * (BIG_INPUT - 12) + "input-ends-x"
    document = definition(
        unique("s3run"),
        [
            {
                "id": "ends",
                "type": "task",
                "action": "echo",
                "input": {"value": {"tail": "{{ input.blob[-12:] }}"}},
            },
            {"id": "back", "type": "task", "action": "echo", "input": {"value": "{{ input.blob[:200000] }}"}},
        ],
    )
    before = set(objects(s3_endpoint))
    started = await flows.start_run(document, {"blob": blob})
    result = await run_with_worker(client, task_queue, started.result(timeout=300))
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert record(result, "ends").output == {"tail": "input-ends-x"}

    history = await client.get_workflow_handle(started.workflow_id).fetch_history()
    payloads = history_payloads(history)
    assert max(p.ByteSize() for p in payloads) < 256 * 1024
    stored = references(payloads)
    drivers = {json.loads(p.data)["driverName"] for p in stored}
    assert drivers == {"wfa.s3"}
    new = {k: v for k, v in objects(s3_endpoint).items() if k not in before}
    assert new
    assert all(k.startswith("wfa/v0/ns/default/") for k in new)
    assert max(new.values()) > BIG_INPUT  # the input, encrypted
    raw = s3_client(s3_endpoint)
    for key in new:
        body = raw.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert b"input-ends-x" not in body  # ciphertext only
        assert Payload.FromString(body).metadata["encoding"] == b"binary/encrypted"

    # The codec server: the Web UI's request for the input reference gets the decrypted input.
    server = codec_server_from_env(env)
    assert server is not None
    _, resolver = server
    assert resolver is not None
    [reference] = [
        p for p in stored if p.external_payloads and p.external_payloads[0].size_bytes > BIG_INPUT
    ][:1]
    try:
        [resolved] = await resolver.resolve([reference], "default")
        assert resolved.metadata["encoding"] == b"binary/encrypted"
        [other] = await resolver.resolve([reference], "globex")
        assert other.metadata.get("messageType") == REFERENCE_TYPE
    finally:
        await resolver.close()
    from starter.codec import codec_from_env

    codec = codec_from_env(env)
    assert codec is not None
    [decoded] = await codec.decode([resolved])
    assert json.loads(decoded.data)["input"]["blob"] == blob
