"""Cancelling a run during a 3-day delay runs its compensations: the ``cancel`` signal and
Temporal's own cancellation."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from interpreter.state import CancelRequest, RunState, StepStatus
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import Handle, definition, eventually, failure_of, record, start, status, unique
from workflows.generic import RunDefinitionWorkflow


def _doc(name: str, base: str) -> dict[str, Any]:
    return definition(
        name,
        [
            {"id": "reserve", "type": "task", "action": "http",
             "input": {"method": "POST", "url": f"{base}/reserve", "json": {"sku": "S"}},
             "compensate": [{"id": "release", "type": "task", "action": "http",
                             "input": {"method": "POST", "url": f"{base}/release",
                                       "json": {"id": "{{ steps.reserve.output.body.id }}"}}}]},
            {"id": "wait", "type": "delay", "duration": "3d"},
            {"id": "ship", "type": "task", "action": "http", "input": {"method": "POST", "url": f"{base}/ship"}},
        ],
    )


async def _in_delay(handle: Handle) -> None:
    await eventually(lambda: status(handle), lambda s: s.current_steps == ["wait"], what="the run inside its delay")


async def test_cancel_signal_compensates_and_ends_as_cancelled(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/reserve", [(200, {}, {"id": "R-7"})])
    handle = await start(client, task_queue, _doc(unique("cancel-signal"), http_server.url))
    await _in_delay(handle)

    await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="ops", reason="customer changed mind"))
    cause, result = await failure_of(handle)

    assert isinstance(cause, ApplicationError)
    assert cause.type == "RunCancelled"
    assert cause.message == "cancelled by ops: customer changed mind"
    assert result is not None and result.state == RunState.CANCELLED
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
