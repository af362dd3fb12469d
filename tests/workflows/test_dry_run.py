"""Dry runs: the whole definition on the generic workflow with no action executed; canned outputs
steer the branches; the loopback servers prove that nothing was sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from interpreter.state import RunResult, StepStatus
from starter.cli import main
from starter.client import DRY_RUN_PREFIX, FlowClient
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import record, unique


def document(api: str) -> dict[str, Any]:
    return {
        "name": unique("dry-run"),
        "defaults": {"timeouts": {"start_to_close": "30s"}},
        "steps": [
            {
                "id": "check",
                "type": "task",
                "action": "http",
                "input": {
                    "method": "POST",
                    "url": f"{api}/orders",
                    "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
                    "json": {"order": "{{ input.order }}"},
                },
            },
            {"id": "cool-off", "type": "delay", "duration": "3d"},
            {
                "id": "route",
                "type": "condition",
                # A dry run's description has no status_code: without a canned output, 503.
                "if": "(steps.check.output.status_code | default(503)) == 200",
                "then": {
                    "steps": [
                        {
                            "id": "record",
                            "type": "task",
                            "action": "sql",
                            "input": {
                                "connection": "crm",
                                "statement": "INSERT INTO orders (id) VALUES (:id)",
                                "parameters": {"id": "{{ input.order }}"},
                            },
                        }
                    ]
                },
                "else": {
                    "steps": [
                        {
                            "id": "classify",
                            "type": "task",
                            "action": "llm",
                            "input": {"prompt": "Why did order {{ input.order }} fail?"},
                        }
                    ]
                },
            },
        ],
    }


def path_taken(result: RunResult) -> list[str]:
    return [step.path for step in result.steps if step.status != StepStatus.SKIPPED]


async def test_a_dry_run_sends_nothing_and_describes_every_action(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    flows = FlowClient(client, task_queue=task_queue)
    handle = await flows.start_run(document(http_server.url), {"order": "A-1"}, dry_run=True)
    assert handle.workflow_id.startswith(DRY_RUN_PREFIX)
    result = await handle.result()
    assert result.state == "completed", result.error
    assert path_taken(result) == ["check", "cool-off", "route", "classify"]
    check = record(result, "check").output
    assert check["dry_run"] is True
    assert check["action"] == "http"
    assert check["would_send"]["url"] == f"{http_server.url}/orders"
    assert check["would_send"]["json"] == {"order": "A-1"}
    # The secret reference stays a reference, nothing was resolved (escaped, as in every output:
    # outputs are inert data).
    assert check["would_send"]["headers"]["Authorization"] == "Bearer $${secret:API_TOKEN}"
    assert record(result, "classify").output["would_send"]["prompt"] == "Why did order A-1 fail?"
    assert http_server.requests() == []
    described = await client.get_workflow_handle(handle.workflow_id).describe()
    assert (await described.memo())["dry_run"] is True
    assert (await described.static_summary() or "").startswith("DRY RUN: ")


async def test_canned_outputs_take_the_other_branch(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    flows = FlowClient(client, task_queue=task_queue)
    canned = {"check": {"status_code": 200, "headers": {}, "body": {"ok": True}}}
    handle = await flows.start_run(
        document(http_server.url), {"order": "B-2"}, dry_run=True, canned_outputs=canned
    )
    result = await handle.result()
    assert path_taken(result) == ["check", "cool-off", "route", "record"]
    assert record(result, "check").output == canned["check"]
    sql = record(result, "record").output["would_send"]
    assert sql["statement"] == "INSERT INTO orders (id) VALUES (:id)"
    assert sql["parameters"] == {"id": "B-2"}
    assert http_server.requests() == []


async def test_wfa_start_dry_run_with_outputs_prints_the_path(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    worker: Worker,
    http_server: RecordingServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    definition = tmp_path / "flow.json"
    definition.write_text(json.dumps(document(http_server.url)))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"check": {"status_code": 200}}))
    address = temporal_env.client.service_client.config.target_host
    args = [
        "--address",
        address,
        "--task-queue",
        task_queue,
        "start",
        str(definition),
        "--input",
        '{"order": "C-3"}',
    ]

    def wfa(*extra: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*args, *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = await asyncio.to_thread(wfa, "--dry-run", "--outputs", str(outputs), "--wait", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["dry_run"] is True
    assert printed["workflow_id"].startswith(DRY_RUN_PREFIX)
    assert printed["path"] == ["check", "cool-off", "route", "record"]
    code, out, err = await asyncio.to_thread(wfa, "--dry-run", "--wait")
    assert code == 0, err
    assert "DRY RUN: no action ran. Path taken: check -> cool-off -> route -> classify" in out
    code, _, err = await asyncio.to_thread(wfa, "--outputs", str(outputs))
    assert code == 2
    assert "--outputs applies to dry runs only" in err
    assert http_server.requests() == []


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-fulfilment.json"
ORDER = {
    "id": "SO-1",
    "email": "buyer@example.org",
    "payment_token": "tok_visa",
    "address": {"city": "Springfield"},
    "items": [{"sku": "MUG", "qty": 2, "unit_price": 10}],
}


async def test_the_order_example_with_canned_outputs_and_a_canned_failure(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    flows = FlowClient(client, task_queue=task_queue)
    run_input = {"api": http_server.url, "order": ORDER}
    happy = {
        "reserve_inventory": {"body": {"reservation_id": "R-1"}},
        "charge_payment": {"body": {"charge_id": "ch_1"}},
        "create_shipment": {"body": {"tracking": "1Z"}},
    }
    result = await (
        await flows.start_run(str(EXAMPLE), run_input, dry_run=True, canned_outputs=happy)
    ).result()
    assert result.state == "completed", result.error
    assert result.output["tracking"] == "1Z"
    assert record(result, "send_confirmation").output["would_send"]["json"]["to"] == "buyer@example.org"
    declined = {
        **happy,
        "charge_payment": {"$error": {"type": "HttpClientError", "message": "402 card declined"}},
    }
    handle = await flows.start_run(str(EXAMPLE), run_input, dry_run=True, canned_outputs=declined)
    result = await handle.result()
    assert result.state == "compensated"
    assert result.error_type == "HttpClientError"
    release = record(result, "compensate/reserve_inventory/release_inventory").output["would_send"]
    assert release["url"] == f"{http_server.url}/inventory/reservations/R-1/release"
    assert path_taken(result) == [
        "validate_order",
        "price_order",
        "reserve_inventory",
        "charge_payment",
        "compensate/reserve_inventory/release_inventory",
    ]
    assert http_server.requests() == []


async def test_a_long_dry_run_spreads_over_workflow_tasks(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    # 40 tasks with heavy templates: in one workflow task they would pass the task's template
    # work budget (or the deadlock detector); each task's timer ends the workflow task instead.
    heavy = "{% for i in range(3000) %}{{ i }}{% endfor %}"
    doc = {
        "name": unique("dry-run-long"),
        "defaults": {"timeouts": {"start_to_close": "30s"}},
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": "range(40) | list",
                "concurrency": 1,
                "steps": [
                    {
                        "id": "call",
                        "type": "task",
                        "action": "http",
                        "input": {"url": f"{http_server.url}/x", "json": heavy},
                    }
                ],
            }
        ],
    }
    flows = FlowClient(client, task_queue=task_queue)
    # Without the per-task timers this dry run failed at each[23] (the template work budget of one
    # workflow task, 200,000 operations).
    result = await (await flows.start_run(doc, {}, dry_run=True)).result(timeout=240)
    assert result.state == "completed", result.error
    assert len([s for s in result.steps if s.id == "call"]) == 40
    assert http_server.requests() == []
