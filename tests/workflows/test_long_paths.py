"""A valid definition whose step paths run past Temporal's id limit (1,000 bytes for an activity
id, a workflow id, ...): up to 20 levels of nesting of 64-character step ids are valid, and such a
run must not stick on a workflow task Temporal refuses for ever."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionResponse
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.worker import Worker

from interpreter.sizes import temporal_id
from interpreter.state import RunState, RunStatus, StepRecord, StepStatus
from starter.client import FlowClient, _with_pending_activities
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, eventually, record, start, unique

DEPTH = 16  # 16 levels of a foreach with a 64-character id: past 1,000 bytes of path


def _nested(leaf: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``leaf`` inside ``DEPTH`` nested one-item foreach steps (a path of ``level00_xxx[0].``...)."""
    steps = leaf
    for level in range(DEPTH):
        steps = [{"id": f"level{level:02d}_" + "x" * 56, "type": "foreach", "items": "[1]", "steps": steps}]
    return steps


LEAF: list[dict[str, Any]] = [
    {"id": "call_" + "c" * 59, "type": "task", "action": "echo", "input": {"value": "deep"}},
    {"id": "nap_" + "n" * 60, "type": "delay", "duration": "1s"},
    {
        "id": "hear_" + "h" * 59,
        "type": "wait_for_event",
        "event": "deep.heard",
        "key": "k",
        "timeout": "1s",
        "on_timeout": "continue",
    },
    {
        "id": "each_" + "e" * 59,
        "type": "foreach",
        "items": "[1, 2]",
        "steps": [
            {"id": "item_" + "i" * 59, "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}
        ],
    },
]


async def test_a_run_whose_step_paths_pass_temporals_id_limit_completes(
    client: Client, task_queue: str, worker: Worker
) -> None:
    document = definition(unique("deep"), _nested(LEAF), limits={"max_depth": 20})
    handle = await start(client, task_queue, document)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    calls = [r for r in result.steps if r.id.startswith(("call_", "item_"))]

    assert [r.status for r in calls] == [StepStatus.COMPLETED] * 3
    assert all(len(r.path.encode()) > 1000 for r in calls)
    assert [r.output for r in calls] == ["deep", 1, 2]


async def test_a_run_with_a_long_workflow_id_starts_its_children_and_waits_for_events(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """The workflow id (a business key: up to 1,000 bytes) is part of the ids of the run's fan-out
    children and of its event subscriptions."""
    name = unique("long-id")
    steps: list[dict[str, Any]] = [
        LEAF[2],
        {
            "id": "each",
            "type": "foreach",
            "items": "[1, 2]",
            "fan_out_above": 1,
            "batch_size": 1,
            "steps": [{"id": "item", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}],
        },
    ]
    workflow_id = name + "-" + "k" * (995 - len(name))
    handle = await start(client, task_queue, definition(name, steps), workflow_id=workflow_id)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert record(result, "each").output == [1, 2]
    heard = [r for r in result.steps if r.id == LEAF[2]["id"]]
    assert heard[0].status == StepStatus.COMPLETED
    assert heard[0].output["timed_out"] is True


async def test_the_status_of_a_step_whose_id_was_fitted_shows_its_attempts_and_last_error(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    """``FlowClient.status`` reads a running task's attempt and last error from its pending activity,
    found by the step's path: for a fitted id, by its first and last bytes."""
    http_server.route("GET", "/down", [(503, {}, "down")] * 3 + [(200, {}, {"up": True})])
    flaky = {
        "id": "call_" + "c" * 59,
        "type": "task",
        "action": "http",
        "input": {"method": "GET", "url": f"{http_server.url}/down"},
        "retry": {"maximum_attempts": 5, "initial_interval": "2s", "preset": "constant"},
    }
    document = definition(unique("deep-status"), _nested([flaky]), limits={"max_depth": 20})
    handle = await start(client, task_queue, document)
    flows = FlowClient(client, task_queue=task_queue)
    seen = await eventually(
        lambda: flows.status(handle.id),
        lambda s: any(r.id == flaky["id"] and r.attempts >= 2 for r in s.steps),
        timeout=30,
        what="the deep step's second attempt in its status",
    )
    running = next(r for r in seen.steps if r.id == flaky["id"])
    assert len(running.path.encode()) > 1000
    assert running.status == StepStatus.RUNNING
    assert running.error_type == "HttpServerError"
    result = await handle.result()
    assert record(result, running.path).attempts == 4


def test_two_items_whose_long_paths_differ_only_where_the_digest_stands_get_their_own_attempts() -> None:
    """Fitted ids keep the first 600 and last 300 bytes: two foreach items deep in a long path
    differ only in the bytes the digest stands for; each step still gets its own activity."""
    prefix = "level_" + "x" * 700
    paths = [f"{prefix}[{i}].{'y' * 400}.call" for i in (1, 2)]
    ids = [temporal_id(paths[0] + "#2"), temporal_id(paths[1])]
    assert ids[0][:600] == ids[1][:600]
    now = datetime.now(UTC)
    steps = [
        StepRecord(id="call", path=path, type="task", name="call", status=StepStatus.RUNNING, started_at=now)
        for path in paths
    ]
    status = RunStatus(
        definition="d",
        version=1,
        state=RunState.RUNNING,
        current_steps=paths,
        steps=steps,
        pending_approvals=[],
        decisions=[],
        vars={},
    )
    pending = [
        PendingActivityInfo(activity_id=ids[0], attempt=3),
        PendingActivityInfo(activity_id=ids[1], attempt=7),
    ]
    description = SimpleNamespace(
        raw_description=DescribeWorkflowExecutionResponse(pending_activities=pending)
    )
    shown = _with_pending_activities(status, cast(WorkflowExecutionDescription, description))
    assert [r.attempts for r in shown.steps] == [3, 7]
