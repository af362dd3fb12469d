"""Interpreter generations (``RunOptions.engine_level``): patches without markers for new runs.

A run started at this build's generation applies every change of it from its start, without asking
``workflow.patched``: its history has no patch marker and no ``TemporalChangeVersion`` upsert, and
it behaves exactly as a run that asked (and got ``True`` for) each of them. A run at level 0 (every
run started before the levels, and raw clients) asks as before. A worker refuses, in words, a run of
a generation it does not know. Real dev server, the product's worker.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

import interpreter.engine
import workflows.generic
from interpreter.state import Decision, RunOptions, RunState
from starter.client import ENGINE_LEVEL_ENV, FlowClient
from starter.errors import InvalidInputError
from tests.workflows.support import (
    Handle,
    chain_events,
    definition,
    events,
    replays_as_recorded,
    start,
    status,
    unique,
    wait_state,
)
from worker import build_worker
from workflows.generic import ENGINE_LEVEL, PATCH_LEVELS, RunDefinitionWorkflow
from workflows.search_attributes import CURRENT_STEP

PATCH_MARKER = "core_patch"
"""The marker name the SDK records for ``workflow.patched``."""


def _document() -> dict[str, Any]:
    return definition(
        unique("levels"),
        [
            {"id": "prep", "type": "task", "action": "echo", "input": {"value": "{{ input.n }}"}},
            {
                "id": "review",
                "type": "approval",
                "approvers": ["alice"],
                "escalation": {"after": "1s", "add_approvers": ["boss"]},
            },
            {"id": "pause", "type": "delay", "duration": "1s"},
            {
                "id": "done",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ steps.prep.output }}-done"},
            },
        ],
        output="{{ steps.done.output }}",
    )


async def _start(client: Client, task_queue: str, document: dict[str, Any], level: int) -> Handle:
    return await start(client, task_queue, document, {"n": 7}, engine_level=level)


def _patch_markers(history: list[HistoryEvent]) -> list[HistoryEvent]:
    return [
        e
        for e in history
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == PATCH_MARKER
    ]


def _change_version_upserts(history: list[HistoryEvent]) -> list[HistoryEvent]:
    return [
        e
        for e in history
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        and "TemporalChangeVersion"
        in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    ]


async def _current_step(handle: Handle) -> str | None:
    return (await handle.describe()).typed_search_attributes.get(CURRENT_STEP)


async def _drive(handle: Handle) -> tuple[str | None, Any]:
    """Approves the run once its approval escalated; returns CurrentStep while it waited, and the
    run's result."""
    await wait_state(handle, RunState.AWAITING_APPROVAL, timeout=30)
    waiting_at = None
    for _ in range(100):
        waiting_at = await _current_step(handle)
        if waiting_at:
            break
        await asyncio.sleep(0.1)
    for _ in range(300):
        if any(p.escalations >= 1 for p in (await status(handle)).pending_approvals):
            break
        await asyncio.sleep(0.1)
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="boss"))
    return waiting_at, await handle.result()


async def test_a_run_of_this_generation_behaves_the_same_without_a_patch_marker(
    client: Client, task_queue: str, worker: Worker
) -> None:
    document = _document()
    asked = await _start(client, task_queue, document, 0)
    levelled = await _start(client, task_queue, document, ENGINE_LEVEL)
    (asked_at, asked_result), (levelled_at, levelled_result) = await asyncio.gather(
        _drive(asked), _drive(levelled)
    )

    # The same behaviour: the patched branch of every change (CurrentStep is the wait, upserted only
    # at waits: current-step-on-waits), the same steps, the same output.
    assert asked_at == levelled_at == "review"
    assert asked_result.state == levelled_result.state == RunState.COMPLETED
    assert levelled_result.output == asked_result.output == "7-done"
    assert [(s.path, s.status) for s in levelled_result.steps] == [
        (s.path, s.status) for s in asked_result.steps
    ]

    asked_history = await events(asked)
    levelled_history = await events(levelled)
    # Level 0 asked (markers and their upserts: the test sees them where they are) ...
    asked_patches = {
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in _patch_markers(asked_history)
    }
    assert "current-step-on-waits" in asked_patches
    assert asked_patches <= set(PATCH_LEVELS)
    assert _change_version_upserts(asked_history)
    # ... this generation did not: two events fewer per change it met.
    assert _patch_markers(levelled_history) == []
    assert _change_version_upserts(levelled_history) == []
    assert len(levelled_history) == len(asked_history) - 2 * len(asked_patches)

    await replays_as_recorded(asked, levelled)


async def _task_failure(handle: Handle) -> str:
    """The message of the run's first failed workflow task (waits for it)."""
    for _ in range(300):
        failed = await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
        if failed:
            return str(failed[0].workflow_task_failed_event_attributes.failure.message)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id}: no workflow task failed")


async def test_a_run_of_a_generation_the_worker_does_not_know_waits_for_a_worker_that_knows_it(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer client's run on older workers (or a rollback below the run's generation): the worker
    cannot tell which changes the run expects (it would take old branches a newer worker's replay
    would not), so it runs nothing of it: its workflow task fails naming both generations, and the
    run waits, untouched, until a worker of a build that knows the generation takes it."""
    handle = await _start(
        client,
        task_queue,
        definition(unique("future"), [{"id": "a", "type": "task", "action": "echo", "input": {"value": 1}}]),
        ENGINE_LEVEL + 1,
    )
    async with build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)):
        message = await _task_failure(handle)
    assert "EngineLevelUnknown" in message
    assert f"generation {ENGINE_LEVEL + 1}" in message
    assert f"up to {ENGINE_LEVEL}" in message
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING  # waiting, not lost

    # A build that knows the generation (this one, one generation later) takes the run.
    monkeypatch.setattr(workflows.generic, "ENGINE_LEVEL", ENGINE_LEVEL + 1)
    async with build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)):
        result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.state == RunState.COMPLETED
    assert [(s.path, s.output) for s in result.steps] == [("a", 1)]


async def test_the_client_starts_runs_at_its_generation(
    client: Client, task_queue: str, worker: Worker, flows: FlowClient
) -> None:
    """``FlowClient`` starts runs at this build's generation (no markers); set to 0, as before."""
    document = definition(
        unique("client-level"), [{"id": "a", "type": "task", "action": "echo", "input": {"value": 1}}]
    )
    started = await flows.start_run(document, {})
    assert (await started.result(timeout=60)).state == RunState.COMPLETED
    handle = client.get_workflow_handle(started.workflow_id)
    first = (await events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED))[0]
    recorded = json.loads(first.workflow_execution_started_event_attributes.input.payloads[0].data)
    assert recorded["options"]["engine_level"] == ENGINE_LEVEL
    assert _patch_markers(await events(handle)) == []

    flows.engine_level = 0
    started = await flows.start_run(document, {})
    assert (await started.result(timeout=60)).state == RunState.COMPLETED
    handle = client.get_workflow_handle(started.workflow_id)
    first = (await events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED))[0]
    recorded = json.loads(first.workflow_execution_started_event_attributes.input.payloads[0].data)
    assert "engine_level" not in recorded["options"]  # an input as before the levels
    assert _patch_markers(await events(handle))


async def test_wfa_engine_level_pins_the_generation_a_client_starts_runs_at(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a rollout, clients keep starting runs the older workers can take."""
    monkeypatch.delenv(ENGINE_LEVEL_ENV, raising=False)
    assert FlowClient(client).engine_level == ENGINE_LEVEL
    monkeypatch.setenv(ENGINE_LEVEL_ENV, "0")
    assert FlowClient(client).engine_level == 0
    for bad in ("one", "-1", str(ENGINE_LEVEL + 1), "1.5"):
        monkeypatch.setenv(ENGINE_LEVEL_ENV, bad)
        with pytest.raises(InvalidInputError, match=ENGINE_LEVEL_ENV):
            FlowClient(client)


async def test_children_and_continued_runs_keep_their_parents_generation(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """A fanned-out foreach's slices and the next run of a chain are started at the run's own
    generation (a worker that knows it runs them; a run of generation 0 keeps asking its patches)."""
    for level in (0, ENGINE_LEVEL):
        document = definition(
            unique("levels-children"),
            [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "range(4) | list",
                    "fan_out_above": 2,
                    "batch_size": 2,
                    "steps": [
                        {"id": "ping", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}
                    ],
                },
                {
                    "id": "count",
                    "type": "set",
                    "vars": {"n": "{{ (vars.n | default(0)) + 1 }}"},
                    "max_visits": 200,
                },
                {
                    "id": "beat",
                    "type": "task",
                    "action": "echo",
                    "input": {"value": "{{ vars.n }}"},
                    "max_visits": 200,
                },
                {"id": "loop", "type": "condition", "if": "vars.n < 30", "then": {"goto": "count"}},
            ],
            limits={"history_budget": 100},
        )
        handle = await _start(client, task_queue, document, level)
        assert (await handle.result()).state == RunState.COMPLETED
        history = await chain_events(handle)
        started = [e for e in history if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED]
        assert len(started) >= 2  # the run continued as new
        children = [
            e.child_workflow_execution_started_event_attributes.workflow_execution
            for e in history
            if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
        ]
        assert len(children) == 2
        inputs = [e.workflow_execution_started_event_attributes.input.payloads[0].data for e in started]
        for child in children:
            child_history = await client.get_workflow_handle(
                child.workflow_id, run_id=child.run_id
            ).fetch_history()
            first = child_history.events[0].workflow_execution_started_event_attributes
            inputs.append(first.input.payloads[0].data)
        for data in inputs:
            assert json.loads(data)["options"].get("engine_level", 0) == level


def test_every_patch_has_a_generation_and_the_build_is_at_the_highest() -> None:
    """A patch missing from PATCH_LEVELS would still be asked (safe, a marker); this keeps the table
    complete, so a new patch is placed at a level on purpose."""
    declared = {
        value
        for module in (interpreter.engine, workflows.generic)
        for name, value in vars(module).items()
        if name.startswith("PATCH_") and isinstance(value, str)
    }
    assert declared == set(PATCH_LEVELS)
    assert max(PATCH_LEVELS.values()) == ENGINE_LEVEL
    assert all(1 <= level <= ENGINE_LEVEL for level in PATCH_LEVELS.values())
    # Level 0 is left out of the payload: the input of a run started before the levels reads the same.
    assert "engine_level" not in RunOptions().model_dump(mode="json")
    assert RunOptions(engine_level=ENGINE_LEVEL).model_dump(mode="json")["engine_level"] == ENGINE_LEVEL
