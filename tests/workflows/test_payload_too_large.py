"""A run without the payload store whose child run's or activity's input is over Temporal's payload
limit (2 MiB) fails the step with ``PayloadTooLarge`` (naming the child or action, the size and the
limit), which the definition handles, on the dev server. Before, the SDK refused the payload
("TMPRL1103 ... exceeded the error limit") and the workflow task failed on every retry: the run
stayed running for ever and its ``on_failure`` never applied (found by an attacker's probe).

Each run has an execution timeout and each wait a deadline, so a regression fails the test (the
run is terminated) instead of hanging it."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from interpreter.actions import known_actions
from interpreter.state import RunInput, RunOptions, RunResult, RunState, StepStatus
from interpreter.validate import load_definition
from starter.client import FlowClient
from tests.workflows.support import Handle, events, failure_of, unique
from workflows.generic import INLINE_INPUT_MAX_BYTES, PAYLOAD_TOO_LARGE, RunDefinitionWorkflow

WAIT_S = 60
BIG = ["x" * 3000 for _ in range(300)]
"""About 0.9 MB: a run input under the limit, three times over it when a step's input reads it thrice."""
THRICE = {"a": "{{ input.big }}", "b": "{{ input.big }}", "c": "{{ input.big }}"}
"""A ``{{ expr }}`` template keeps the list's type: no 256 KB string bound applies to it."""


async def _start(client: Client, task_queue: str, doc: dict[str, Any], run_input: dict[str, Any]) -> Handle:
    definition = load_definition(doc, known_actions=known_actions())
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(definition=definition, input=run_input, options=RunOptions()),
        id=unique(doc["name"]),
        task_queue=task_queue,
        execution_timeout=timedelta(seconds=120),
    )


async def _no_stuck_task(handle: Handle) -> None:
    """The run closed, and no workflow task of it failed (the SDK refused no payload)."""
    described = await handle.describe()
    assert described.status != WorkflowExecutionStatus.RUNNING
    failed = await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    assert not failed, [e.workflow_task_failed_event_attributes.failure.message for e in failed]


async def _terminate_if_running(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        await handle.terminate("test cleanup: the run is stuck")


def _record(result: RunResult, step_id: str) -> Any:
    return next(record for record in result.steps if record.id == step_id)


async def test_a_fanned_out_child_whose_input_is_over_the_limit_fails_the_foreach_naming_it(
    client: Client, task_queue: str, worker: Worker
) -> None:
    # 300 items (over fan_out_above 200) in children; the body reads {{ input.tag }}, so each child
    # gets the parent's input (~1.95 MB) beside its slice: over 2 MiB. In the run (fan_out_above
    # 10000) the same definition completes.
    doc = {
        "name": unique("bigfan"),
        "limits": {"max_foreach_items": 10000, "max_step_executions": 5000},
        "steps": [
            {
                "id": "loop",
                "type": "foreach",
                "items": "input.items",
                "concurrency": 5,
                "steps": [
                    {"id": "e", "type": "task", "action": "echo", "input": {"value": "{{ input.tag }}"}}
                ],
                "output": "{{ steps.e.output }}",
            }
        ],
        "output": {"n": "{{ steps.loop.output | length }}"},
    }
    run_input = {"items": ["x" * 3000 for _ in range(300)], "tag": "t", "pad": "p" * 1_050_000}
    handle = await _start(client, task_queue, doc, run_input)
    try:
        async with asyncio.timeout(WAIT_S):
            cause, result = await failure_of(handle)
    finally:
        await _terminate_if_running(client, handle.id)
    assert result is not None
    assert result.state == RunState.FAILED
    assert result.error_type == PAYLOAD_TOO_LARGE
    message = result.error or ""
    assert re.search(
        rf"step 'loop' \({re.escape(handle.id)}/loop/batch-\d+\): the child run's input", message
    )
    assert f"more than Temporal takes in one payload ({INLINE_INPUT_MAX_BYTES} bytes)" in message
    assert "WFA_PAYLOAD_STORE" in message
    assert re.search(r"is \d{7} bytes serialized", message)
    assert _record(result, "loop").status == StepStatus.FAILED
    assert PAYLOAD_TOO_LARGE in str(cause)
    # No child was started with it, and no workflow task failed.
    assert not await events(handle, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    await _no_stuck_task(handle)


async def test_a_subflow_whose_input_is_over_the_limit_fails_its_step_and_on_failure_continue_applies(
    flows: FlowClient, client: Client, store_worker: Worker
) -> None:
    child = unique("child")
    await flows.register(
        {"name": child, "steps": [{"id": "w", "type": "task", "action": "echo", "input": {"value": 1}}]},
        author="ann",
    )
    parent = {
        "name": unique("bigsub"),
        "steps": [
            {"id": "sub", "type": "subflow", "definition": child, "input": THRICE, "on_failure": "continue"},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "went on"}},
        ],
        "output": {"after": "{{ steps.after.output }}"},
    }
    run = await flows.start_run(parent, {"big": BIG})  # the child's input would be ~2.7 MB
    try:
        async with asyncio.timeout(WAIT_S):
            result = await run.result(timeout=WAIT_S)
    finally:
        await _terminate_if_running(client, run.workflow_id)
    assert result.state == RunState.COMPLETED, (result.error, result.error_type)
    assert result.output == {"after": "went on"}
    sub = _record(result, "sub")
    assert sub.status == StepStatus.FAILED
    assert sub.error_type == PAYLOAD_TOO_LARGE
    assert sub.error.startswith(f"subflow {child!r}: the input of its child run '{run.workflow_id}/sub' is ")
    assert "WFA_PAYLOAD_STORE" in sub.error
    handle = client.get_workflow_handle(run.workflow_id)
    assert not await events(handle, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    await _no_stuck_task(handle)


async def test_a_task_whose_rendered_input_is_over_the_limit_fails_its_step_and_on_failure_continue_applies(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = {
        "name": unique("bigtask"),
        "steps": [
            {"id": "big", "type": "task", "action": "echo", "input": THRICE, "on_failure": "continue"},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "went on"}},
        ],
        "output": {"after": "{{ steps.after.output }}"},
    }
    handle = await _start(client, task_queue, doc, {"big": BIG})  # rendered: ~2.7 MB
    try:
        async with asyncio.timeout(WAIT_S):
            result: RunResult = await handle.result()
    finally:
        await _terminate_if_running(client, handle.id)
    assert result.state == RunState.COMPLETED, (result.error, result.error_type)
    assert result.output == {"after": "went on"}
    big = _record(result, "big")
    assert big.status == StepStatus.FAILED
    assert big.error_type == PAYLOAD_TOO_LARGE
    assert big.error.startswith("the input of its action 'echo' is ")
    assert f"({INLINE_INPUT_MAX_BYTES} bytes" in big.error
    # Only 'after' scheduled an activity, and no workflow task failed.
    scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled] == ["echo"]
    await _no_stuck_task(handle)


async def test_a_task_over_the_limit_parked_as_a_dead_letter_fails_the_run_its_row_being_as_large(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = {
        "name": unique("bigpark"),
        "steps": [
            {"id": "big", "type": "task", "action": "echo", "input": THRICE, "on_failure": "dead_letter"}
        ],
    }
    handle = await _start(client, task_queue, doc, {"big": BIG})
    try:
        async with asyncio.timeout(WAIT_S):
            _cause, result = await failure_of(handle)
    finally:
        await _terminate_if_running(client, handle.id)
    assert result is not None
    assert result.state == RunState.FAILED
    assert result.error_type == PAYLOAD_TOO_LARGE
    assert "recording the dead letter failed: the dead letter of step 'big' is " in (result.error or "")
    assert not await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    await _no_stuck_task(handle)
