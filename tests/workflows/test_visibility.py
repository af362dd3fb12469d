"""What operators see: search attributes for list queries, activity summaries and ids in history."""

from __future__ import annotations

import contextlib

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecution, WorkflowFailureError
from temporalio.worker import Worker

from interpreter.state import Decision, RunState
from interpreter.validate import definition_hash, load_definition
from tests.workflows.support import definition, events, eventually, start, unique, wait_state
from workflows.generic import RunDefinitionWorkflow
from workflows.search_attributes import CURRENT_STEP, DEFINITION_HASH, DEFINITION_NAME, DEFINITION_VERSION


async def _listed(client: Client, query: str, workflow_id: str) -> list[WorkflowExecution]:
    """Polls a visibility query (eventually consistent) until it lists the workflow; bounded."""

    async def probe() -> list[WorkflowExecution]:
        return [w async for w in client.list_workflows(query)]

    return await eventually(
        probe,
        lambda found: any(w.id == workflow_id for w in found),
        timeout=20,
        interval=0.25,
        what=f"list_workflows({query!r}) to find {workflow_id}",
    )


async def test_search_attributes_while_waiting_and_after_completion(
    client: Client, task_queue: str, worker: Worker
) -> None:
    name = unique("visible")
    doc = definition(
        name,
        [
            {"id": "prep", "type": "task", "action": "echo", "input": {"value": 1}},
            {"id": "review", "type": "approval", "approvers": ["alice"]},
        ],
        version=3,
    )
    handle = await start(client, task_queue, doc)
    await wait_state(handle, RunState.AWAITING_APPROVAL)

    [waiting] = await _listed(client, f'DefinitionName = "{name}" AND AwaitingApproval = true', handle.id)
    assert waiting.typed_search_attributes.get(CURRENT_STEP) == "review"
    await _listed(
        client,
        f'DefinitionName = "{name}" AND RunState = "awaiting_approval" AND CurrentStep = "review"',
        handle.id,
    )

    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
    await handle.result()
    [done] = await _listed(client, f'DefinitionName = "{name}" AND RunState = "completed"', handle.id)
    attrs = done.typed_search_attributes
    assert attrs.get(DEFINITION_NAME) == name
    assert attrs.get(DEFINITION_VERSION) == 3
    assert attrs.get(DEFINITION_HASH) == definition_hash(load_definition(doc))
    await _listed(
        client, f'DefinitionName = "{name}" AND AwaitingApproval = false AND DefinitionVersion = 3', handle.id
    )
    found = [w async for w in client.list_workflows(f'DefinitionName = "{name}" AND AwaitingApproval = true')]
    assert found == []


async def test_failed_runs_are_listed_as_failed(client: Client, task_queue: str, worker: Worker) -> None:
    name = unique("visible-failed")
    handle = await start(
        client, task_queue, definition(name, [{"id": "no", "type": "fail", "message": "no"}])
    )
    with contextlib.suppress(WorkflowFailureError):  # the failure itself is tested elsewhere
        await handle.result()
    await _listed(
        client, f'DefinitionName = "{name}" AND RunState = "failed" AND ExecutionStatus = "Failed"', handle.id
    )


async def test_activities_carry_step_summaries_and_path_ids(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("summaries"),
        [
            {
                "id": "fetch",
                "name": "Fetch the order",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
            },
            {
                "id": "loop",
                "type": "foreach",
                "items": "[1, 2]",
                "steps": [{"id": "work", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}],
            },
            {"id": "init", "type": "set", "vars": {"i": 0}},
            {
                "id": "tick",
                "name": "Tick",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ vars.i }}"},
                "max_visits": 3,
            },
            {"id": "inc", "type": "set", "vars": {"i": "{{ vars.i + 1 }}"}, "max_visits": 3},
            {
                "id": "again",
                "type": "condition",
                "if": "vars.i < 3",
                "then": {"goto": "tick"},
                "max_visits": 3,
            },
        ],
    )
    handle = await start(client, task_queue, doc)
    result = await handle.result()
    assert result.output == {"i": 3}

    scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    converter = client.data_converter.payload_converter
    seen = [
        (
            e.activity_task_scheduled_event_attributes.activity_id,
            converter.from_payload(e.user_metadata.summary, str),
        )
        for e in scheduled
    ]
    assert seen == [
        ("fetch", "Fetch the order (echo)"),
        ("loop[0].work", "work (echo)"),
        ("loop[1].work", "work (echo)"),
        ("tick", "Tick (echo)"),
        ("tick#2", "Tick (echo)"),
        ("tick#3", "Tick (echo)"),
    ]
    assert {e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled} == {"echo"}
