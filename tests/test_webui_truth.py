"""What the Web UI shows of a run started through the client: the definition's name as the workflow
type, a summary naming definition, tenant and business key, and a Temporal status that matches the
outcome (a compensated run is not a green Completed)."""

from __future__ import annotations

from uuid import uuid4

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from interpreter.state import RunState
from starter.client import FlowClient
from tests.helpers.http_server import RecordingServer


async def test_a_run_is_listed_under_its_definitions_name_with_a_summary(
    client: Client, task_queue: str, worker: Worker
) -> None:
    flows = FlowClient(client, task_queue=task_queue, tenant="acme")
    name = f"webui-{uuid4().hex[:8]}"
    run = await flows.start_run(
        {"name": name, "steps": [{"id": "s", "type": "set", "vars": {"x": 1}}]}, workflow_id=f"{name}-key"
    )
    assert (await flows.result(run.workflow_id, timeout=60)).state == RunState.COMPLETED
    description = await client.get_workflow_handle(run.workflow_id).describe()
    assert description.workflow_type == name
    assert description.status == WorkflowExecutionStatus.COMPLETED
    summary = await description.static_summary()
    assert summary == f"{name} v1 · tenant acme · {name}-key"
    details = await description.static_details()
    assert details is not None
    assert "**Tenant** acme" in details


async def test_a_compensated_run_closes_as_failed_and_the_client_still_reads_its_result(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/ship", [(422, {}, {"error": "no stock"})])
    flows = FlowClient(client, task_queue=task_queue, tenant="acme")
    name = f"webui-comp-{uuid4().hex[:8]}"
    definition = {
        "name": name,
        "steps": [
            {
                "id": "reserve",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{http_server.url}/reserve"},
                "compensate": [
                    {
                        "id": "release",
                        "type": "task",
                        "action": "http",
                        "input": {"method": "POST", "url": f"{http_server.url}/release"},
                    }
                ],
            },
            {
                "id": "ship",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{http_server.url}/ship"},
                "retry": {"maximum_attempts": 1},
                "on_failure": "compensate",
            },
        ],
    }
    run = await flows.start_run(definition)
    result = await flows.result(run.workflow_id, timeout=60)
    assert result.state == RunState.COMPENSATED
    assert result.error_type == "HttpClientError"
    description = await client.get_workflow_handle(run.workflow_id).describe()
    assert description.status == WorkflowExecutionStatus.FAILED
    assert [r.path for r in http_server.requests("POST")] == ["/reserve", "/ship", "/release"]
