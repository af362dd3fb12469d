"""Cancelling a run during a 3-day delay runs its compensations: the ``cancel`` signal and
Temporal's own cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from interpreter.state import CancelRequest, RunState, StepStatus
from tests.helpers.http_server import RecordedRequest, RecordingServer
from tests.workflows.support import Handle, definition, eventually, failure_of, record, start, status, unique
from workflows.generic import RunDefinitionWorkflow


def _doc(name: str, base: str) -> dict[str, Any]:
    return definition(
        name,
        [
            {
                "id": "reserve",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{base}/reserve", "json": {"sku": "S"}},
                "compensate": [
                    {
                        "id": "release",
                        "type": "task",
                        "action": "http",
                        "input": {
                            "method": "POST",
                            "url": f"{base}/release",
                            "json": {"id": "{{ steps.reserve.output.body.id }}"},
                        },
                    }
                ],
            },
            {"id": "wait", "type": "delay", "duration": "3d"},
            {
                "id": "ship",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{base}/ship"},
            },
        ],
    )


async def _in_delay(handle: Handle) -> None:
    await eventually(
        lambda: status(handle), lambda s: s.current_steps == ["wait"], what="the run inside its delay"
    )


async def test_cancel_signal_compensates_and_ends_as_cancelled(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/reserve", [(200, {}, {"id": "R-7"})])
    handle = await start(client, task_queue, _doc(unique("cancel-signal"), http_server.url))
    await _in_delay(handle)

    await handle.signal(
        RunDefinitionWorkflow.cancel, CancelRequest(actor="ops", reason="customer changed mind")
    )
    cause, result = await failure_of(handle)

    assert isinstance(cause, ApplicationError)
    assert cause.type == "RunCancelled"
    assert cause.message == "cancelled by ops: customer changed mind"
    assert result is not None
    assert result.state == RunState.CANCELLED
    assert record(result, "wait").status == StepStatus.CANCELLED
    assert record(result, "compensate/reserve/release").status == StepStatus.COMPLETED
    assert [r.path for r in http_server.requests("POST")] == ["/reserve", "/release"]
    assert http_server.requests("POST", "/release")[0].json == {"id": "R-7"}
    final = await status(handle)
    assert final.state == RunState.CANCELLED
    assert final.cancelled_by == CancelRequest(actor="ops", reason="customer changed mind")


async def test_temporal_cancellation_compensates(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/reserve", [(200, {}, {"id": "R-8"})])
    handle = await start(client, task_queue, _doc(unique("cancel-temporal"), http_server.url))
    await _in_delay(handle)

    await handle.cancel()
    cause, _ = await failure_of(handle)

    assert isinstance(cause, CancelledError)
    assert [r.path for r in http_server.requests("POST")] == ["/reserve", "/release"]
    final = await status(handle)
    assert final.state == RunState.CANCELLED
    assert final.error_type == "RunCancelled"
    assert record(final, "compensate/reserve/release").status == StepStatus.COMPLETED


async def test_cancel_during_a_running_activity_cancels_it_and_compensates(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/reserve", [(200, {}, {"id": "R-9"})])
    doc = definition(
        unique("cancel-activity"),
        [
            *_doc("unused", http_server.url)["steps"][:1],
            {
                "id": "slow",
                "type": "task",
                "action": "echo",
                "input": {"sleep_s": 60},
                "timeouts": {"heartbeat": "2s"},
            },
            {
                "id": "ship",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{http_server.url}/ship"},
            },
        ],
    )
    signalled = await start(client, task_queue, doc)
    temporal = await start(client, task_queue, doc)
    for handle in (signalled, temporal):
        await eventually(
            lambda h=handle: status(h), lambda s: s.current_steps == ["slow"], what="slow step running"
        )
    await signalled.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="ops"))
    await temporal.cancel()

    signal_cause, signal_result = await failure_of(signalled)
    temporal_cause, _ = await failure_of(temporal)
    assert isinstance(signal_cause, ApplicationError)
    assert signal_cause.type == "RunCancelled"
    assert isinstance(temporal_cause, CancelledError)
    assert signal_result is not None
    assert record(signal_result, "slow").status == StepStatus.CANCELLED
    for handle in (signalled, temporal):
        final = await status(handle)
        assert final.state == RunState.CANCELLED
        assert record(final, "compensate/reserve/release").status == StepStatus.COMPLETED
    assert len(http_server.requests("POST", "/release")) == 2
    assert http_server.requests("POST", "/ship") == []


async def test_a_step_in_flight_at_cancel_time_is_compensated(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    arrived = threading.Event()

    def slow_charge(request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        arrived.set()
        time.sleep(1.0)
        return 200, {}, {"charge": "C-1"}

    http_server.route("POST", "/charge", slow_charge)
    doc = definition(
        unique("cancel-in-flight"),
        [
            {
                "id": "charge",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{http_server.url}/charge", "json": {"amount": 5}},
                "compensate": [
                    {
                        "id": "refund",
                        "type": "task",
                        "action": "http",
                        "input": {
                            "method": "POST",
                            "url": f"{http_server.url}/refund",
                            "json": {"amount": 5},
                        },
                    }
                ],
            },
        ],
    )
    handle = await start(client, task_queue, doc)
    await asyncio.to_thread(arrived.wait, 10)
    await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="ops"))
    await failure_of(handle)
    await asyncio.sleep(1.5)  # the charge completes at the receiver
    assert http_server.requests("POST", "/charge"), "the charge was applied"
    assert http_server.requests("POST", "/refund"), "so it must be refunded"
