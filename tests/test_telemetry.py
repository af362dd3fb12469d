"""Metrics on the worker's Prometheus endpoint after real runs, and the spans of a real run.

The endpoint is scraped over HTTP and parsed as Prometheus text; the spans are collected by an
in-memory exporter behind the SDK's replay-safe tracer provider (the one the worker installs
when an OTLP endpoint is configured).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client, WorkflowFailureError
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from activities.store.database import Database
from interpreter.state import Decision, RunState
from starter.client import FlowClient
from starter.connection import connect_client
from starter.telemetry import GaugeSampler, build_runtime, configure_tracing
from tests.workflows.support import definition, eventually, start, status, unique
from worker import build_worker
from workflows.generic import RunDefinitionWorkflow

Sample = tuple[str, dict[str, str], float]
DASHBOARD = Path(__file__).resolve().parents[1] / "ops" / "grafana" / "dashboard.json"
ONLY_ON_FAILURE = {"temporal_workflow_task_execution_failed"}
"""SDK series the dashboard shows that exist only once a workflow task has failed."""
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[Sample]:
    """Prometheus text exposition -> (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def metrics_runtime() -> tuple[Runtime, str]:
    address = f"127.0.0.1:{free_port()}"
    runtime = build_runtime({}, address=address)
    assert runtime is not None
    return runtime, address


@pytest_asyncio.fixture(loop_scope="session")
async def metered_client(temporal_env: WorkflowEnvironment, metrics_runtime: tuple[Runtime, str]) -> Client:
    runtime, _ = metrics_runtime
    return await connect_client(
        address=temporal_env.client.service_client.config.target_host, runtime=runtime, env={}
    )


async def scrape(address: str) -> list[Sample]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{address}/metrics")
    response.raise_for_status()
    return parse(response.text)


async def test_metrics_after_real_runs(
    metered_client: Client, metrics_runtime: tuple[Runtime, str], task_queue: str
) -> None:
    runtime, address = metrics_runtime
    client = metered_client
    ok, failing, waiting = unique("m-ok"), unique("m-fail"), unique("m-wait")
    retry = {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 5}
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        flaky = {"fail": "Flaky", "succeed_on_attempt": 3, "value": "ok"}
        for _ in range(2):
            handle = await start(
                client,
                task_queue,
                definition(
                    ok, [{"id": "flaky", "type": "task", "action": "echo", "input": flaky, "retry": retry}]
                ),
            )
            assert (await handle.result()).state == RunState.COMPLETED
        fatal = {"fail": "Fatal", "non_retryable": True}
        handle = await start(
            client,
            task_queue,
            definition(
                failing, [{"id": "boom", "type": "task", "action": "echo", "input": fatal, "retry": retry}]
            ),
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        approval = await start(
            client,
            task_queue,
            definition(
                waiting, [{"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"}]
            ),
        )
        await eventually(lambda: status(approval), lambda s: "review" in s.current_steps, what="run waits")

        # The sampled gauges: one approval waiting, with an age.
        sampler = GaugeSampler(runtime.metric_meter, [client], task_queue)

        async def sampled() -> list[Sample]:
            await sampler.sample()
            return await scrape(address)

        samples = await eventually(
            sampled,
            lambda s: value(s, "wfa_approvals_waiting", definition=waiting) == 1,
            timeout=30,
            what="the waiting approval in the gauge",
        )
        assert value(samples, "wfa_approval_oldest_wait_seconds", definition=waiting, tenant="default") > 0
        assert value(samples, "wfa_dead_letters_open", definition=waiting) == 0

        await approval.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
        assert (await approval.result()).state == RunState.COMPLETED
        samples = await eventually(
            sampled,
            lambda s: value(s, "wfa_approvals_waiting", definition=waiting) == 0,
            timeout=30,
            what="the decided approval gone from the gauge",
        )

    common = {"tenant": "default", "version": "1", "workflow_type": "RunDefinition", "task_queue": task_queue}
    assert value(samples, "wfa_runs_started", definition=ok, **common) == 2
    assert value(samples, "wfa_runs_ended", definition=ok, outcome="completed", **common) == 2
    assert value(samples, "wfa_runs_ended", definition=failing, outcome="failed", **common) == 1
    assert value(samples, "wfa_runs_ended", definition=waiting, outcome="completed", **common) == 1
    assert value(samples, "wfa_run_duration_seconds_count", definition=ok, outcome="completed") == 2
    step = {"definition": ok, "step": "flaky", "action": "echo"}
    assert value(samples, "wfa_step_attempts", **step) == 6
    assert value(samples, "wfa_step_retries", **step) == 4
    assert value(samples, "wfa_step_duration_seconds_count", outcome="completed", **step) == 2
    # Three attempts 100 ms apart: each execution took at least 0.2 s.
    assert value(samples, "wfa_step_duration_seconds_sum", outcome="completed", **step) >= 0.4
    boom = {"definition": failing, "step": "boom", "action": "echo"}
    assert value(samples, "wfa_step_duration_seconds_count", outcome="failed", **boom) == 1
    assert value(samples, "wfa_step_retries", **boom) == 0
    assert value(samples, "wfa_approval_wait_seconds_count", definition=waiting) == 1
    # Every series the Grafana dashboard draws exists under that name.
    exported = {n for n, _, _ in samples}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:wfa|temporal)_[a-z_]+)\b", target["expr"])
    }
    assert queried - exported <= ONLY_ON_FAILURE, queried - exported
    assert {"wfa_runs_ended", "wfa_approvals_waiting", "wfa_dead_letters_open"} <= queried
    # The SDK's own metrics are on the same endpoint.
    assert value(samples, "temporal_workflow_completed", task_queue=task_queue) == 3
    assert value(samples, "temporal_workflow_failed", task_queue=task_queue) == 1


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    plugins = configure_tracing({}, processor=SimpleSpanProcessor(exporter))
    assert plugins
    _PLUGINS.extend(plugins)
    return exporter


_PLUGINS: list[Any] = []


@pytest_asyncio.fixture(loop_scope="session")
async def traced_client(
    temporal_env: WorkflowEnvironment, spans: InMemorySpanExporter
) -> AsyncIterator[Client]:
    yield await connect_client(
        address=temporal_env.client.service_client.config.target_host, plugins=list(_PLUGINS), env={}
    )


async def test_spans_of_a_real_run(
    traced_client: Client, spans: InMemorySpanExporter, task_queue: str
) -> None:
    name = unique("traced")
    document = definition(
        name,
        [
            {"id": "first", "type": "task", "action": "echo", "input": {"value": 1}},
            {
                "id": "each",
                "type": "foreach",
                "items": "input.items",
                "as": "item",
                "steps": [
                    {"id": "inner", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}
                ],
            },
        ],
    )
    async with (
        httpx.AsyncClient() as http,
        build_worker(traced_client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        handle = await start(traced_client, task_queue, document, {"items": [1, 2]})
        assert (await handle.result()).state == RunState.COMPLETED
    finished = await eventually(
        lambda: _finished(spans),
        lambda items: any(s.name == "RunWorkflow:RunDefinition" for s in items if _in_run(s, handle.id)),
        what="the run's spans",
    )
    by_id = {s.context.span_id: s for s in finished}
    run_spans = [s for s in finished if s.name == "RunWorkflow:RunDefinition" and _in_run(s, handle.id)]
    assert len(run_spans) == 1
    run_span = run_spans[0]
    steps = sorted(
        (
            s
            for s in finished
            if s.name.startswith("step ") and s.context.trace_id == run_span.context.trace_id
        ),
        key=lambda s: s.name,
    )
    assert [s.name for s in steps] == ["step each[0].inner", "step each[1].inner", "step first"]
    for span in steps:
        assert span.parent is not None
        assert span.parent.span_id == run_span.context.span_id, span.name
        assert span.attributes is not None
        assert span.attributes["wfa.action"] == "echo"
        assert span.attributes["wfa.definition"] == name
        assert span.attributes["wfa.attempts"] == 1
        # The activity runs inside its step: StartActivity is the step's child, RunActivity its.
        children = [s for s in finished if s.parent is not None and s.parent.span_id == span.context.span_id]
        assert [c.name for c in children] == ["StartActivity:echo"], span.name
        runs = [
            s for s in finished if s.parent is not None and s.parent.span_id == children[0].context.span_id
        ]
        assert [r.name for r in runs] == ["RunActivity:echo"]
    assert run_span.parent is not None
    assert by_id[run_span.parent.span_id].name == "StartWorkflow:RunDefinition"


async def _finished(exporter: InMemorySpanExporter) -> list[Any]:
    return list(exporter.get_finished_spans())


def _in_run(span: Any, workflow_id: str) -> bool:
    return bool(span.attributes) and span.attributes.get("temporalWorkflowID") == workflow_id


async def test_dead_letter_metrics(
    metered_client: Client, metrics_runtime: tuple[Runtime, str], database: Database, task_queue: str
) -> None:
    runtime, address = metrics_runtime
    client = metered_client
    name = unique("m-park")
    document = definition(
        name,
        [
            {
                "id": "charge",
                "type": "task",
                "action": "echo",
                "input": {"fail": "Declined", "non_retryable": True},
                "on_failure": "dead_letter",
            }
        ],
    )
    sampler = GaugeSampler(runtime.metric_meter, [client], task_queue)

    async def sampled() -> list[Sample]:
        await sampler.sample()
        return await scrape(address)

    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, session_factory=database.session_factory),
    ):
        flows = FlowClient(client, task_queue=task_queue, database=database, tenant="default")
        run = await flows.start_run(document, {})
        rows = await eventually(
            lambda: flows.list_dead_letters(workflow_id=run.workflow_id),
            lambda found: len(found) == 1,
            timeout=30,
            what="the dead letter row",
        )
        await eventually(
            sampled,
            lambda s: value(s, "wfa_dead_letters_open", definition=name, tenant="default") == 1,
            timeout=30,
            what="the open dead letter in the gauge",
        )
        await flows.redrive(rows[0].id, "ops", {"value": "paid"}, reason="new card", replace_input=True)
        assert (await flows.result(run.workflow_id, timeout=30)).state == RunState.COMPLETED
        samples = await eventually(
            sampled,
            lambda s: value(s, "wfa_dead_letters_open", definition=name) == 0,
            timeout=30,
            what="the resolved dead letter gone from the gauge",
        )
    assert value(samples, "wfa_dead_letters_parked", definition=name, step="charge") == 1
    assert value(samples, "wfa_dead_letters_resolved", definition=name, action="redrive") == 1
    assert (
        value(samples, "wfa_step_duration_seconds_count", definition=name, step="charge", outcome="failed")
        == 1
    )
    assert (
        value(samples, "wfa_step_duration_seconds_count", definition=name, step="charge", outcome="completed")
        == 1
    )
    assert value(samples, "wfa_runs_ended", definition=name, outcome="completed") == 1
