"""worker.py with the operations settings: an mTLS profile, payload keys and a metrics endpoint.

The worker runs as operators run it (a process configured by the environment); the test talks to
the same dev server through the same TLS proxy, checks the result payload the worker wrote is
encrypted with the configured key, and scrapes the worker's Prometheus endpoint.
"""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from interpreter.state import RunState
from starter.codec import KEY_ID_METADATA
from starter.connection import connect_client
from tests.helpers.http_server import RecordingServer
from tests.helpers.tls import Pki, TlsProxy, make_pki, tls_proxy
from tests.helpers.worker_process import exit_code, spawn_worker
from tests.test_telemetry import free_port, parse, value
from tests.workflows.support import definition, eventually, start, unique

ROOT = Path(__file__).resolve().parents[1]
KEY = base64.b64encode(b"k" * 32).decode()


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(tmp_path: Path, temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[TlsProxy, Pki]]:
    pki = make_pki(tmp_path)
    async with tls_proxy(
        pki, temporal_env.client.service_client.config.target_host, require_client_cert=True
    ) as running:
        yield running, pki


def _env(config: Path, task_queue: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "WFA_", "OTEL_"))}
    env.update(
        {
            "TEMPORAL_CONFIG_FILE": str(config),
            "TEMPORAL_PROFILE": "secure",
            "TEMPORAL_TASK_QUEUE": task_queue,
            "WFA_PAYLOAD_KEYS": f"ops={KEY}",
            "WORKER_SHUTDOWN_GRACE_S": "0",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


async def test_worker_with_profile_keys_metrics_and_traces(
    proxy: tuple[TlsProxy, Pki], tmp_path: Path, http_server: RecordingServer
) -> None:
    running, pki = proxy
    http_server.route("POST", "/v1/traces", [(200, {"Content-Type": "application/x-protobuf"}, b"")] * 100)
    config = tmp_path / "temporal.toml"
    config.write_text(
        f"""[profile.secure]
address = "{running.address}"
[profile.secure.tls]
server_ca_cert_path = "{pki.server_ca}"
server_name = "localhost"
client_cert_path = "{pki.client.cert}"
client_key_path = "{pki.client.key}"
""",
        encoding="utf-8",
    )
    task_queue = unique("tq-ops")
    metrics = f"127.0.0.1:{free_port()}"
    env = _env(
        config,
        task_queue,
        WFA_METRICS_ADDRESS=metrics,
        WFA_METRICS_SAMPLE_S="0.5",
        OTEL_EXPORTER_OTLP_ENDPOINT=http_server.url,
        OTEL_SERVICE_NAME="wfa-worker-test",
    )
    log = tmp_path / "worker.log"
    worker = spawn_worker(env, log)
    try:
        client = await connect_client(env=env)
        name = unique("ops")
        handle = await start(
            client,
            task_queue,
            definition(name, [{"id": "hello", "type": "task", "action": "echo", "input": {"value": "hi"}}]),
        )
        assert (await handle.result()).state == RunState.COMPLETED
        history = await handle.fetch_history()
        completed = [
            e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        ]
        result = completed[0].workflow_execution_completed_event_attributes.result.payloads[0]
        assert result.metadata[KEY_ID_METADATA] == b"ops"  # written by the worker, encrypted

        async def scrape() -> str:
            async with httpx.AsyncClient() as http:
                try:
                    return (await http.get(f"http://{metrics}/metrics")).text
                except httpx.TransportError:
                    return ""

        text = await eventually(
            scrape, lambda t: f'definition="{name}"' in t, timeout=30, what="the run in the worker's metrics"
        )
        samples = parse(text)
        assert (
            value(samples, "wfa_runs_ended", definition=name, outcome="completed", task_queue=task_queue) == 1
        )
        assert set(running.handshakes) == {"wfa-worker"}
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await exit_code(worker, timeout=30)
    assert code == 0, log.read_text()[-2000:]
    assert f"metrics on http://{metrics}/metrics" in log.read_text()
    # The spans reached the OTLP/HTTP endpoint (flushed at shutdown at the latest).
    names = set()
    services = set()
    for request in http_server.requests("POST", "/v1/traces"):
        export = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in export.resource_spans:
            services |= {
                a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
            }
            names |= {span.name for scope in resource_spans.scope_spans for span in scope.spans}
    assert {"RunWorkflow:RunDefinition", "step hello", "RunActivity:echo"} <= names, names
    assert services == {"wfa-worker-test"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"WFA_PAYLOAD_KEYS": "ops=tooshort"},
            "payload encryption: WFA_PAYLOAD_KEYS: key 'ops' has 6 bytes, not 32",
        ),
        ({"WFA_METRICS_ADDRESS": "nowhere"}, "WFA_METRICS_ADDRESS: 'nowhere' is not host:port"),
        ({"TEMPORAL_PROFILE": "missing"}, "'missing'"),
    ],
)
async def test_bad_operations_settings_are_clear_errors(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text('[profile.secure]\naddress = "127.0.0.1:1"\n', encoding="utf-8")
    log = tmp_path / "worker.log"
    worker = spawn_worker(_env(config, "tq-none", **extra), log)
    assert await exit_code(worker, timeout=60) == 2
    text = log.read_text()
    assert message in text
    assert "Traceback" not in text
    assert KEY not in text
