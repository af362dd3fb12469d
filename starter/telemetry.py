"""The worker's telemetry: a Prometheus endpoint, gauges sampled from Temporal, OTLP traces.

- ``WFA_METRICS_ADDRESS`` (e.g. ``0.0.0.0:9464``): serve the SDK's metrics and the product's
  (:mod:`workflows.telemetry`) on ``http://ADDRESS/metrics``. Unset: no endpoint.
- ``WFA_METRICS_SAMPLE_S`` (default 30): how often the gauges below are sampled from Temporal's
  visibility and the waiting runs' status queries, at most ``WFA_METRICS_SAMPLE_LIMIT`` (default
  500) runs per namespace each time:

  ``wfa_approvals_waiting{definition,tenant}``, ``wfa_approval_oldest_wait_seconds{definition,
  tenant}`` (age of the oldest undecided approval) and ``wfa_dead_letters_open{definition,tenant}``
  (parked steps of running runs). Every worker samples the same runs: aggregate with ``max``.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): export traces by
  OTLP over HTTP (the standard ``OTEL_*`` variables apply: headers, service name, ...). Spans: the
  SDK's (``StartWorkflow``, ``RunWorkflow``, ``StartActivity``, ``RunActivity``) and a span per task
  step, ``step <path>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from temporalio.client import Client
    from temporalio.common import MetricMeter
    from temporalio.plugin import SimplePlugin

__all__ = [
    "METRICS_ADDRESS_ENV",
    "SAMPLE_INTERVAL_ENV",
    "SAMPLE_LIMIT_ENV",
    "GaugeSampler",
    "build_runtime",
    "configure_tracing",
    "shutdown_tracing",
    "tracing_enabled",
]

METRICS_ADDRESS_ENV = "WFA_METRICS_ADDRESS"
SAMPLE_INTERVAL_ENV = "WFA_METRICS_SAMPLE_S"
SAMPLE_LIMIT_ENV = "WFA_METRICS_SAMPLE_LIMIT"
OTLP_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_QUERY_TIMEOUT = timedelta(seconds=5)

log = logging.getLogger("worker.telemetry")


def build_runtime(env: Mapping[str, str] | None = None, *, address: str | None = None) -> Runtime | None:
    """A Temporal runtime serving Prometheus metrics, or None when no address is configured.

    Args:
        env: Default ``os.environ``.
        address: ``host:port`` instead of ``WFA_METRICS_ADDRESS``.

    Raises:
        ValueError: The address is malformed or cannot be bound.
    """
    source = os.environ if env is None else env
    bind = address or source.get(METRICS_ADDRESS_ENV, "").strip()
    if not bind:
        return None
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{METRICS_ADDRESS_ENV}: {bind[:100]!r} is not host:port")
    try:
        return Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=bind, durations_as_seconds=True),
            )
        )
    except Exception as err:  # the native runtime reports a bind failure as a bare exception
        raise ValueError(f"{METRICS_ADDRESS_ENV}: cannot serve metrics on {bind}: {err}") from None


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether an OTLP endpoint is configured."""
    source = os.environ if env is None else env
    return any(source.get(name) for name in OTLP_ENDPOINT_ENVS)


def configure_tracing(
    env: Mapping[str, str] | None = None, *, processor: SpanProcessor | None = None
) -> list[SimplePlugin]:
    """Sets the process's tracer provider and returns the client plugins that trace Temporal calls.

    The provider is the SDK's replay-safe one (workflow spans are not emitted again on replay);
    spans go to ``processor`` if given, else to an OTLP/HTTP exporter when an endpoint is
    configured. Nothing configured: no plugin, no provider (OpenTelemetry stays a no-op).

    Args:
        env: Default ``os.environ``.
        processor: A span processor (tests: an in-memory exporter).
    """
    if processor is None and not tracing_enabled(env):
        return []
    from opentelemetry import trace
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider

    if processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        processor = BatchSpanProcessor(OTLPSpanExporter())
    provider = create_tracer_provider()
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return [OpenTelemetryPlugin(add_temporal_spans=True)]


def shutdown_tracing() -> None:
    """Exports the spans still buffered and stops the exporter (before the process leaves with
    ``os._exit``, which skips OpenTelemetry's own exit hook)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


@dataclass
class GaugeSampler:
    """Samples the gauges that no single run can report (see the module docstring).

    Attributes:
        meter: The runtime's metric meter (``runtime.metric_meter``).
        clients: One client per namespace the worker serves.
        task_queue: Only runs on this queue are counted (the ones this worker serves).
        limit: At most this many runs per namespace and sample.
    """

    meter: MetricMeter
    clients: Sequence[Client]
    task_queue: str
    limit: int = 500
    _reported: set[tuple[str, str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._waiting = self.meter.create_gauge(
            "wfa_approvals_waiting", "Approval steps waiting for a decision"
        )
        self._oldest = self.meter.create_gauge_float(
            "wfa_approval_oldest_wait_seconds", "Age of the oldest approval waiting for a decision", "s"
        )
        self._open = self.meter.create_gauge("wfa_dead_letters_open", "Parked steps (open dead letters)")

    async def sample(self) -> None:
        """One sample: lists the waiting and parked runs, queries their status, sets the gauges."""
        from interpreter.state import RunStatus
        from workflows.generic import RunDefinitionWorkflow
        from workflows.search_attributes import DEFINITION_NAME, TENANT

        now = datetime.now(UTC)
        waiting: dict[tuple[str, str, str], int] = {}
        oldest: dict[tuple[str, str, str], float] = {}
        parked: dict[tuple[str, str, str], int] = {}
        query = (
            f'ExecutionStatus = "Running" AND TaskQueue = "{self.task_queue}"'
            ' AND (AwaitingApproval = true OR RunState = "parked")'
        )
        for client in self.clients:
            seen = 0
            async for execution in client.list_workflows(query, limit=self.limit):
                seen += 1
                attrs = execution.typed_search_attributes
                key = (client.namespace, attrs.get(DEFINITION_NAME) or "?", attrs.get(TENANT) or "?")
                try:
                    status: RunStatus = await client.get_workflow_handle(execution.id).query(
                        RunDefinitionWorkflow.status, rpc_timeout=_QUERY_TIMEOUT
                    )
                except Exception as err:  # a run that cannot answer now: counted at the next sample
                    log.debug("metrics sample: status of %s: %s", execution.id, err)
                    continue
                pending = list(status.pending_approvals)
                if pending or status.pending_approvals_dropped:  # (those the answer had to cut)
                    waiting[key] = waiting.get(key, 0) + len(pending) + status.pending_approvals_dropped
                if pending:
                    age = max((now - a.since).total_seconds() for a in pending)
                    oldest[key] = max(oldest.get(key, 0.0), age)
                if status.parked:
                    parked[key] = parked.get(key, 0) + len(status.parked)
            if seen >= self.limit:
                log.warning(
                    "metrics sample: more than %d waiting runs in %s, counted the first",
                    self.limit,
                    client.namespace,
                )
        for key in self._reported | waiting.keys() | parked.keys():
            labels = {"namespace": key[0], "definition": key[1], "tenant": key[2]}
            self._waiting.set(waiting.get(key, 0), labels)
            self._oldest.set(oldest.get(key, 0.0), labels)
            self._open.set(parked.get(key, 0), labels)
        self._reported |= waiting.keys() | parked.keys()

    async def run(self, interval_s: float) -> None:
        """Samples every ``interval_s`` seconds until cancelled (errors are logged, not raised)."""
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # visibility unavailable: the next sample tries again
                log.warning("metrics sample failed: %s", err)
            await asyncio.sleep(interval_s)


def sample_settings(env: Mapping[str, str] | None = None) -> tuple[float, int]:
    """``(interval_s, limit)`` from ``WFA_METRICS_SAMPLE_S`` and ``WFA_METRICS_SAMPLE_LIMIT``.

    Raises:
        ValueError: Not positive numbers.
    """
    source = os.environ if env is None else env
    try:
        interval = float(source.get(SAMPLE_INTERVAL_ENV) or 30)
        limit = int(source.get(SAMPLE_LIMIT_ENV) or 500)
    except ValueError:
        raise ValueError(f"{SAMPLE_INTERVAL_ENV} / {SAMPLE_LIMIT_ENV}: not numbers") from None
    if interval <= 0 or limit <= 0:
        raise ValueError(f"{SAMPLE_INTERVAL_ENV} / {SAMPLE_LIMIT_ENV}: must be positive")
    return interval, limit


@contextlib.asynccontextmanager
async def sampling(sampler: GaugeSampler | None, interval_s: float) -> Any:
    """Runs ``sampler`` in the background for the duration of the block (None: nothing)."""
    if sampler is None:
        yield
        return
    task = asyncio.create_task(sampler.run(interval_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
