"""Failure handling: compensation order, the failed run's error, on_failure compensate/continue/goto."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.state import RunState, StepStatus
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, failure_of, record, start, unique

NO_RETRY = {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 1}


def _post(step_id: str, url: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "task",
        "action": "http",
        "input": {"method": "POST", "url": url, "json": body},
        "retry": NO_RETRY,
        **extra,
    }


def order_definition(name: str, base: str, ship_on_failure: Any = "fail") -> dict[str, Any]:
    """reserve -> charge -> ship, where reserve and charge have compensations."""
    return definition(
        name,
        [
            _post(
                "reserve",
                f"{base}/reserve",
                {"sku": "{{ input.sku }}"},
                compensate=[
                    _post(
                        "release",
                        f"{base}/release",
                        {"reservation": "{{ steps.reserve.output.body.reservation }}"},
                    )
                ],
            ),
            _post(
                "charge",
                f"{base}/charge",
                {"amount": "{{ input.amount }}"},
                compensate=[
                    _post("refund", f"{base}/refund", {"charge": "{{ steps.charge.output.body.charge }}"})
                ],
            ),
            _post("ship", f"{base}/ship", {"sku": "{{ input.sku }}"}, on_failure=ship_on_failure),
            _post("notify", f"{base}/notify", {"done": True}),
        ],
    )


def _program(server: RecordingServer) -> None:
    server.route("POST", "/reserve", [(200, {}, {"reservation": "R-1"})])
    server.route("POST", "/charge", [(200, {}, {"charge": "C-9"})])
    server.route("POST", "/ship", [(422, {}, {"error": "no stock"})])


async def test_failed_step_compensates_in_reverse_order_and_fails_the_run(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    _program(http_server)
    handle = await start(
        client, task_queue, order_definition(unique("order"), http_server.url), {"sku": "X", "amount": 5}
    )
    cause, result = await failure_of(handle)

    # The workflow fails with the failing step's error type, carrying the RunResult in its details.
    assert isinstance(cause, ApplicationError)
    assert cause.type == "HttpClientError"
    assert "ship" in cause.message
    assert cause.non_retryable
    assert result is not None
    assert (result.state, result.error_type) == (RunState.FAILED, "HttpClientError")
    assert record(result, "ship").status == StepStatus.FAILED
    assert "notify" not in {r.path for r in result.steps}

    paths = [r.path for r in http_server.requests("POST")]
    assert paths == ["/reserve", "/charge", "/ship", "/refund", "/release"]
    refund, release = http_server.requests("POST", "/refund")[0], http_server.requests("POST", "/release")[0]
    # Compensations see the outputs of the steps they undo.
    assert refund.json == {"charge": "C-9"}
    assert release.json == {"reservation": "R-1"}
    prefix = f"{handle.id}/{handle.result_run_id}"
    assert refund.idempotency_key == f"{prefix}/compensate/charge/refund"
    assert release.idempotency_key == f"{prefix}/compensate/reserve/release"
    assert record(result, "compensate/charge/refund").status == StepStatus.COMPLETED
    assert record(result, "compensate/reserve/release").status == StepStatus.COMPLETED


async def test_on_failure_compensate_ends_the_run_as_compensated(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    _program(http_server)
    doc = order_definition(unique("order-comp"), http_server.url, ship_on_failure="compensate")
    handle = await start(client, task_queue, doc, {"sku": "X", "amount": 5})
    cause, result = await failure_of(handle)

    # Not a green success in the Web UI: the execution failed, its type saying it was compensated.
    assert isinstance(cause, ApplicationError)
    assert cause.type == "RunCompensated"
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    assert result is not None
    assert result.state == RunState.COMPENSATED
    assert result.error_type == "HttpClientError"
    assert [r.path for r in http_server.requests("POST")] == [
        "/reserve",
        "/charge",
        "/ship",
        "/refund",
        "/release",
    ]


async def test_a_failing_compensation_does_not_stop_the_others(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    _program(http_server)
    http_server.route("POST", "/refund", [(400, {}, {"error": "already refunded"})])
    cause, result = await failure_of(
        await start(
            client,
            task_queue,
            order_definition(unique("order-badcomp"), http_server.url),
            {"sku": "X", "amount": 5},
        )
    )
    assert isinstance(cause, ApplicationError)
    assert cause.type == "HttpClientError"
    assert result is not None
    assert record(result, "compensate/charge/refund").status == StepStatus.FAILED
    assert record(result, "compensate/reserve/release").status == StepStatus.COMPLETED
    assert [r.path for r in http_server.requests("POST")][-2:] == ["/refund", "/release"]


async def test_on_failure_continue_and_goto(client: Client, task_queue: str, worker: Worker) -> None:
    failing = {"fail": "Unavailable", "non_retryable": True}
    doc = definition(
        unique("onfailure"),
        [
            {"id": "optional", "type": "task", "action": "echo", "input": failing, "on_failure": "continue"},
            {
                "id": "note",
                "type": "set",
                "vars": {
                    "optional_status": "{{ steps.optional.status }}",
                    "optional_error": "{{ steps.optional.error_type }}",
                },
            },
            {
                "id": "primary",
                "type": "task",
                "action": "echo",
                "input": failing,
                "on_failure": {"goto": "fallback"},
            },
            {"id": "skipped", "type": "set", "vars": {"skipped": True}},
            {"id": "fallback", "type": "task", "action": "echo", "input": {"value": "plan B"}},
            {"id": "finish", "type": "set", "vars": {"used": "{{ steps.fallback.output }}"}},
        ],
    )
    result = await (await start(client, task_queue, doc)).result()

    assert result.state == RunState.COMPLETED
    assert result.output == {"optional_status": "failed", "optional_error": "Unavailable", "used": "plan B"}
    assert record(result, "optional").status == StepStatus.FAILED
    assert record(result, "primary").status == StepStatus.FAILED
    assert "skipped" not in {r.path for r in result.steps}
