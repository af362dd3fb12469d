"""Cancelling a run during a 3-day delay runs its compensations: the ``cancel`` signal, Temporal's
own cancellation, and ``FlowClient.cancel`` (the validating ``cancel_run`` update followed by
Temporal's cancellation, so the run closes as Canceled)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from interpreter.state import CancelRequest, RunInput, RunResult, RunState, StepStatus
from starter.client import FlowClient
from starter.errors import DecisionRefusedError, RunClosedError
from tests.helpers.http_server import RecordedRequest, RecordingServer
from tests.workflows.support import (
    Handle,
    definition,
    events,
    eventually,
    failure_of,
    record,
    settled,
    start,
    status,
    unique,
)
from worker import tolerate_slow_activations
from workflows.generic import ENGINE_LEVEL, WORKFLOW_NAME, RunDefinitionWorkflow


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
    cause, _ = await failure_of(handle)

    # The signal asks Temporal to cancel the run (an activity): it closes as Canceled, as the Web
    # UI shows, with who and why in its status.
    assert isinstance(cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    final = await status(handle)
    assert final.state == RunState.CANCELLED
    assert final.error == "cancelled by ops: customer changed mind"
    assert record(final, "wait").status == StepStatus.CANCELLED
    assert record(final, "compensate/reserve/release").status == StepStatus.COMPLETED
    assert [r.path for r in http_server.requests("POST")] == ["/reserve", "/release"]
    assert http_server.requests("POST", "/release")[0].json == {"id": "R-7"}
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

    signal_cause, _ = await failure_of(signalled)
    temporal_cause, _ = await failure_of(temporal)
    assert isinstance(signal_cause, CancelledError)
    assert isinstance(temporal_cause, CancelledError)
    assert record(await status(signalled), "slow").status == StepStatus.CANCELLED
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


async def test_flow_client_cancel_closes_as_canceled_with_who_and_why(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/reserve", [(200, {}, {"id": "R-10"})])
    handle = await start(client, task_queue, _doc(unique("cancel-client"), http_server.url))
    await _in_delay(handle)
    flows = FlowClient(client, task_queue=task_queue)

    await flows.cancel(handle.id, "ops", "customer changed mind")

    with pytest.raises(WorkflowFailureError) as closed:
        await handle.result()
    assert isinstance(closed.value.cause, CancelledError)  # Temporal's own: Canceled in the Web UI
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    result = await flows.result(handle.id)
    assert (result.state, result.error_type) == (RunState.CANCELLED, "RunCancelled")
    assert result.error == "cancelled by ops: customer changed mind"
    assert record(result, "compensate/reserve/release").status == StepStatus.COMPLETED
    assert [r.path for r in http_server.requests("POST")] == ["/reserve", "/release"]
    final = await status(handle)
    assert final.cancelled_by == CancelRequest(actor="ops", reason="customer changed mind")
    cancel_requested = await events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
    assert len(cancel_requested) == 1

    with pytest.raises(RunClosedError):  # the server refuses an update to a closed run
        await flows.cancel(handle.id, "ops")


async def test_cancel_is_refused_at_once_while_the_run_is_cancelling(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("cancel-twice"),
        [
            {
                "id": "reserve",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
                "compensate": [
                    {"id": "undo", "type": "approval", "approvers": ["ops"], "timeout": "1h"},
                ],
            },
            {"id": "wait", "type": "delay", "duration": "3d"},
        ],
    )
    handle = await start(client, task_queue, doc)
    await _in_delay(handle)
    flows = FlowClient(client, task_queue=task_queue)
    await flows.cancel(handle.id, "ops", "first")
    # The compensation waits for a person: the run stays cancelling until then.
    await eventually(
        lambda: status(handle),
        lambda s: s.error_type == "RunCancelled" and bool(s.pending_approvals),
        what="the run compensating",
    )

    with pytest.raises(DecisionRefusedError) as again:
        await flows.cancel(handle.id, "bob", "second")
    assert again.value.reason == "the run is already ending (RunCancelled: cancelled by ops: first)"
    await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="carol"))
    refused = await eventually(
        lambda: status(handle), lambda s: bool(s.refused_messages), what="the late cancel signal refused"
    )
    assert [(m.name, m.actor, m.reason) for m in refused.refused_messages] == [
        ("cancel", "carol", "the run is already cancelling (requested by 'ops')")
    ]
    assert refused.cancelled_by == CancelRequest(actor="ops", reason="first")

    await flows.approve(handle.id, "ops")
    assert (await flows.result(handle.id)).state == RunState.CANCELLED
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_cancel_run_without_temporal_cancellation_cancels_the_run_itself(
    ts_client: Client, task_queue: str, ts_worker: Worker
) -> None:
    # A caller that dies between the update and the cancellation request must not leave the run
    # going: after CANCEL_HANDOFF_S (virtual time here) it cancels itself, as the signal does.
    doc = definition(
        unique("cancel-handoff"),
        [
            {"id": "prep", "type": "task", "action": "echo", "input": {"value": 1}},
            {"id": "wait", "type": "delay", "duration": "3d"},
        ],
    )
    handle = await start(ts_client, task_queue, doc)
    await settled(handle, step="wait")
    accepted = await handle.execute_update(
        RunDefinitionWorkflow.cancel_run, CancelRequest(actor="ops", reason="x" * 2000)
    )
    assert accepted.reason == f"{'x' * 500}… (2000 characters)"
    cause, result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "RunCancelled"
    assert result is not None
    assert result.state == RunState.CANCELLED
    assert record(result, "wait").status == StepStatus.CANCELLED


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class _WorkflowBeforeCancelRun:
    """The generic workflow as a worker deployed before ``cancel_run`` knows it: a cancel signal."""

    def __init__(self) -> None:
        self.cancelled_by: str | None = None

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        await workflow.wait_condition(lambda: self.cancelled_by is not None)
        return RunResult(state=RunState.CANCELLED, error=f"cancelled by {self.cancelled_by}")

    @workflow.signal
    def cancel(self, request: CancelRequest) -> None:
        self.cancelled_by = request.actor


async def test_flow_client_cancel_falls_back_to_the_signal_on_a_worker_without_cancel_run(
    client: Client, task_queue: str
) -> None:
    doc = definition(unique("cancel-old-worker"), [{"id": "wait", "type": "delay", "duration": "3d"}])
    async with tolerate_slow_activations(
        Worker(client, task_queue=task_queue, workflows=[_WorkflowBeforeCancelRun])
    ):
        handle = await start(client, task_queue, doc)
        await FlowClient(client, task_queue=task_queue).cancel(handle.id, "ops", "rolling deploy")
        assert (await handle.result()).error == "cancelled by ops"


@pytest.mark.parametrize("level", [0, ENGINE_LEVEL])
async def test_a_cancel_signal_while_the_run_fails_and_compensates_is_refused_and_the_run_ends(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    # Before, the signal held the compensations left for a Temporal cancellation that the running
    # compensation absorbed: the run stayed `compensating` for ever.
    document = definition(
        unique("cancel-while-ending"),
        [
            {
                "id": "book",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
                "compensate": [
                    {"id": "cool_off", "type": "delay", "duration": "8s"},
                    {"id": "unbook", "type": "task", "action": "echo", "input": {"value": "undone"}},
                ],
            },
            {"id": "boom", "type": "fail", "message": "out of stock", "error_type": "NoStock"},
        ],
    )
    handle = await start(client, task_queue, document, engine_level=level)
    await eventually(
        lambda: status(handle),
        lambda s: s.state == RunState.COMPENSATING and "compensate/book/cool_off" in s.current_steps,
        timeout=30,
        what="the compensation waiting in its delay",
    )
    await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="ops", reason="stop it"))
    async with asyncio.timeout(60):
        cause, _ = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == ("NoStock", "out of stock")
    final = await status(handle)
    assert final.state == RunState.FAILED
    assert record(final, "compensate/book/unbook").output == "undone"
    assert [(m.name, m.actor, m.reason) for m in final.refused_messages] == [
        ("cancel", "ops", "the run is already ending (NoStock: out of stock)")
    ]
