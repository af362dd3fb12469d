"""The product's metrics and step spans, emitted from workflow code (replay-safe).

Metrics go through ``workflow.metric_meter()``, which records nothing while history is replayed,
so a run is counted once however often a worker rebuilds it. They reach the worker's Prometheus
endpoint (``WFA_METRICS_ADDRESS``, :mod:`starter.telemetry`) with the SDK's own metrics, labelled
with ``namespace``, ``task_queue`` and ``workflow_type`` by the SDK and ``definition``, ``version``
and ``tenant`` here. Names (Prometheus adds ``_total`` to counters and ``_bucket``/``_sum``/``_count``
to histograms):

================================ ========= ==================================================
``wfa_runs_started``             counter   definition, version, tenant
``wfa_runs_ended``               counter   ... + outcome (completed, failed, compensated, cancelled)
``wfa_run_duration_seconds``     histogram ... + outcome
``wfa_step_duration_seconds``    histogram ... + step (id), action, outcome (completed, failed,
                                           cancelled): one observation per task step execution
``wfa_step_attempts``            counter   ... + step, action: activity attempts
``wfa_step_retries``             counter   ... + step, action: attempts after the first
``wfa_approval_wait_seconds``    histogram definition, version, tenant: how long the run waited for
                                           decisions (each wait, from its start to its end)
``wfa_dead_letters_parked``      counter   ... + step
``wfa_dead_letters_resolved``    counter   ... + action (redrive, skip, abort)
================================ ========= ==================================================

Spans: with tracing configured (``OpenTelemetryPlugin``), each task step execution is a span
``step <path>`` (attributes ``wfa.step``, ``wfa.action``, ``wfa.definition``, ``wfa.attempts``)
inside the run's ``RunWorkflow`` span; the activity's spans are its children. Without tracing the
tracer is OpenTelemetry's no-op one.

Nothing here adds a command to history: metrics and spans leave the worker, not the workflow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import MetricCounter, MetricHistogramFloat, MetricMeter

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace

__all__ = ["TRACER_NAME", "RunTelemetry"]

TRACER_NAME = "wfa.workflow"


class RunTelemetry:
    """Metrics and spans of one run (labels fixed at construction)."""

    def __init__(self, definition: str, version: int, tenant: str) -> None:
        self._labels = {"definition": definition, "version": str(version), "tenant": tenant}
        self._definition = definition
        self._meter: MetricMeter | None = None
        self._counters: dict[str, MetricCounter] = {}
        self._histograms: dict[str, MetricHistogramFloat] = {}
        self._waiting_since: datetime | None = None

    def _base(self) -> MetricMeter:
        if self._meter is None:
            self._meter = workflow.metric_meter().with_additional_attributes(self._labels)
        return self._meter

    def _count(self, name: str, description: str, value: int, labels: dict[str, str] | None = None) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = self._base().create_counter(name, description)
        if value > 0:
            counter.add(value, labels or {})

    def _observe(
        self, name: str, description: str, seconds: float, labels: dict[str, str] | None = None
    ) -> None:
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self._histograms[name] = self._base().create_histogram_float(name, description, "s")
        histogram.record(max(seconds, 0.0), labels or {})

    def run_started(self) -> None:
        """The run began (its first workflow task)."""
        self._count("wfa_runs_started", "Runs started", 1)

    def run_ended(self, outcome: str, started_at: datetime) -> None:
        """The run ended with ``outcome`` (a final RunState value)."""
        self._count("wfa_runs_ended", "Runs ended, by outcome", 1, {"outcome": outcome})
        seconds = (workflow.now() - started_at).total_seconds()
        self._observe("wfa_run_duration_seconds", "Run duration", seconds, {"outcome": outcome})

    def step_ended(self, step: str, action: str, outcome: str, started_at: datetime, attempts: int) -> None:
        """A task step execution ended (completed, failed for good, or cancelled)."""
        labels = {"step": step, "action": action}
        seconds = (workflow.now() - started_at).total_seconds()
        self._observe(
            "wfa_step_duration_seconds", "Task step duration", seconds, {**labels, "outcome": outcome}
        )
        self._count("wfa_step_attempts", "Task step activity attempts", attempts, labels)
        self._count("wfa_step_retries", "Task step retries (attempts after the first)", attempts - 1, labels)

    def waiting_for_approval(self, waiting: bool) -> None:
        """The run's approval wait began or ended (called on every state change)."""
        if waiting and self._waiting_since is None:
            self._waiting_since = workflow.now()
        elif not waiting and self._waiting_since is not None:
            seconds = (workflow.now() - self._waiting_since).total_seconds()
            self._waiting_since = None
            self._observe("wfa_approval_wait_seconds", "How long runs waited for approval decisions", seconds)

    def dead_letter_parked(self, step: str) -> None:
        """A step was parked as a dead letter."""
        self._count("wfa_dead_letters_parked", "Steps parked as dead letters", 1, {"step": step})

    def dead_letter_resolved(self, action: str) -> None:
        """A dead letter was resolved (redrive, skip, abort)."""
        self._count("wfa_dead_letters_resolved", "Dead letters resolved", 1, {"action": action})

    @contextmanager
    def step_span(self, path: str, step: str, action: str) -> Iterator[Any]:
        """A span ``step <path>`` around one task step execution."""
        tracer = trace.get_tracer(TRACER_NAME)
        attributes = {
            "wfa.step": step,
            "wfa.step_path": path,
            "wfa.action": action,
            "wfa.definition": self._definition,
        }
        with tracer.start_as_current_span(f"step {path}", attributes=attributes) as span:
            yield span
