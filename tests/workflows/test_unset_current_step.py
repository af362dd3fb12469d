"""Patch ``unset-current-step`` (generation 26): a run starts without ``CurrentStep`` among its
search attributes, where runs of earlier generations started with ``CurrentStep = ""``.

Nothing else may change: the run upserts ``CurrentStep`` exactly where a run of generation 25 does
(at its waits by default, at every step when asked), ``FlowClient`` lists and reads it the same,
and both histories replay. Real dev server, the product's worker.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities.store.database import Database
from interpreter.state import UNSET_CURRENT_STEP_LEVEL, CurrentStepTracking, Decision, RunState
from interpreter.validate import definition_hash, load_definition
from starter.client import FlowClient
from tests.workflows.support import (
    Handle,
    definition,
    events,
    replays_as_recorded,
    start,
    unique,
    wait_state,
)
from workflows.generic import (
    ENGINE_LEVEL,
    NEVER_ASKED_PATCHES,
    PATCH_LEVELS,
    PATCH_UNSET_CURRENT_STEP,
    RunDefinitionWorkflow,
)
from workflows.search_attributes import AWAITING_APPROVAL, CURRENT_STEP, RUN_STATE, start_attributes

LEVELS = [ENGINE_LEVEL, UNSET_CURRENT_STEP_LEVEL - 1]


def _document() -> dict[str, Any]:
    return definition(
        unique("unset-step"),
        [
            {"id": "prep", "type": "task", "action": "echo", "input": {"value": "{{ input.n }}"}},
            {"id": "review", "type": "approval", "approvers": ["alice"]},
            {
                "id": "done",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ steps.prep.output }}-done"},
            },
        ],
        output="{{ steps.done.output }}",
    )


def test_the_patch_belongs_to_the_generation_the_model_names() -> None:
    assert PATCH_LEVELS[PATCH_UNSET_CURRENT_STEP] == UNSET_CURRENT_STEP_LEVEL <= ENGINE_LEVEL
    assert PATCH_UNSET_CURRENT_STEP in NEVER_ASKED_PATCHES  # never a marker in an earlier run


@pytest.mark.parametrize("level", [0, UNSET_CURRENT_STEP_LEVEL - 1, UNSET_CURRENT_STEP_LEVEL, ENGINE_LEVEL])
def test_a_run_starts_with_current_step_only_below_the_generation(level: int) -> None:
    attributes = start_attributes("n", 1, "h" * 64, "acme", engine_level=level)
    names = {pair.key.name for pair in attributes}
    assert {
        "DefinitionName",
        "DefinitionVersion",
        "DefinitionHash",
        "RunState",
        "AwaitingApproval",
        "Tenant",
    } <= names
    if level >= UNSET_CURRENT_STEP_LEVEL:
        assert attributes.get(CURRENT_STEP) is None
    else:
        assert attributes.get(CURRENT_STEP) == ""


async def _upserted_steps(handle: Handle) -> list[str]:
    upserts = await events(handle, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)
    fields = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields for e in upserts
    ]
    return [json.loads(f["CurrentStep"].data) for f in fields if "CurrentStep" in f]


async def _started_attributes(handle: Handle) -> set[str]:
    started = await events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    return set(started[0].workflow_execution_started_event_attributes.search_attributes.indexed_fields)


async def _waiting_step(handle: Handle) -> str | None:
    await wait_state(handle, RunState.AWAITING_APPROVAL, timeout=30)
    for _ in range(100):
        step = (await handle.describe()).typed_search_attributes.get(CURRENT_STEP)
        if step:
            return step
        await asyncio.sleep(0.1)
    return None


@pytest.mark.parametrize("mode", [CurrentStepTracking.WAITS, CurrentStepTracking.EVERY_STEP])
async def test_a_run_of_the_generation_upserts_current_step_where_an_earlier_one_does(
    mode: CurrentStepTracking, client: Client, task_queue: str, worker: Worker
) -> None:
    document = _document()
    digest = definition_hash(load_definition(document))
    handles = {
        level: await start(
            client,
            task_queue,
            document,
            {"n": 7},
            engine_level=level,
            current_step=mode,
            search_attributes=start_attributes(document["name"], 1, digest, "default", engine_level=level),
        )
        for level in LEVELS
    }
    waiting = {level: await _waiting_step(handle) for level, handle in handles.items()}
    assert waiting == dict.fromkeys(LEVELS, "review")
    for handle in handles.values():
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
    results = {level: await handle.result() for level, handle in handles.items()}
    assert all(r.state == RunState.COMPLETED and r.output == "7-done" for r in results.values())

    new, old = (handles[level] for level in LEVELS)
    assert "CurrentStep" not in await _started_attributes(new)
    assert "CurrentStep" in await _started_attributes(old)
    # The same upserts of CurrentStep, the same count of upsert events.
    assert await _upserted_steps(new) == await _upserted_steps(old)
    if mode == CurrentStepTracking.WAITS:
        assert await _upserted_steps(new) == ["review", ""]
    else:
        assert (await _upserted_steps(new))[0] == "prep"
    upserts = [
        len(await events(h, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)) for h in (new, old)
    ]
    assert upserts[0] == upserts[1]
    described = [(await h.describe()).typed_search_attributes for h in (new, old)]
    assert [(d.get(RUN_STATE), d.get(AWAITING_APPROVAL), d.get(CURRENT_STEP)) for d in described] == [
        ("completed", False, "")
    ] * 2
    await replays_as_recorded(new, old)


@pytest.mark.parametrize("mode", [CurrentStepTracking.WAITS, CurrentStepTracking.EVERY_STEP])
async def test_a_run_that_never_has_a_step_to_show_upserts_what_an_earlier_one_does(
    mode: CurrentStepTracking, client: Client, task_queue: str, worker: Worker
) -> None:
    """Its only step skipped (``when`` false): the run's first publish has no step active, where the
    missing CurrentStep must read as ``""`` (a run of 25 started with it) or the run of 26 would
    upsert ``CurrentStep = ""`` beside its state: the same upserts, value for value."""
    document = definition(
        unique("unset-step-skip"),
        [{"id": "never", "type": "task", "action": "echo", "when": "1 == 2", "input": {"value": 1}}],
    )
    digest = definition_hash(load_definition(document))
    upserts = {}
    for level in LEVELS:
        handle = await start(
            client,
            task_queue,
            document,
            engine_level=level,
            current_step=mode,
            search_attributes=start_attributes(document["name"], 1, digest, "default", engine_level=level),
        )
        assert (await handle.result()).state == RunState.COMPLETED
        found = await events(handle, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)
        upserts[level] = [
            {
                k: json.loads(v.data)
                for k, v in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields.items()
            }
            for e in found
        ]
        await replays_as_recorded(handle)
    assert upserts[ENGINE_LEVEL] == upserts[UNSET_CURRENT_STEP_LEVEL - 1] == [{"RunState": "completed"}]


async def test_a_client_of_the_generation_starts_runs_without_current_step_and_lists_them_the_same(
    client: Client, task_queue: str, database: Database, tenant: str, worker: Worker
) -> None:
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    started = await flows.start_run(_document(), {"n": 7})
    handle = client.get_workflow_handle(started.workflow_id)
    assert "CurrentStep" not in await _started_attributes(handle)  # unset until it has a step to show
    assert await _waiting_step(handle) == "review"
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="alice"))
    result = await flows.result(started.workflow_id, timeout=60)
    assert result.state == RunState.COMPLETED
    assert result.output == "7-done"
    await replays_as_recorded(handle)
