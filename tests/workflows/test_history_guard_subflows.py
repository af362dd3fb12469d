"""The history guard counts what a ``subflow`` step brings into its run's history beside a waited-for
child's result (patch ``history-guard-subflows``): a detached child's result, which lands when the
child closes while the parent is open, and the definition the resolving activity returns.

The adversaries are definitions with nothing hostile in them. A foreach of detached subflows whose
children each answer 250 KB (500 KB with their step records), the parent then waiting for a person:
before, the eight results landed in the waiting parent's history and took it past the (lowered)
ceiling; at Temporal's own 50 MiB the server then terminates the run, its compensations never run.
And eight subflows of a 450 KB definition at once: the eight resolved definitions landed together
past the ceiling. Now a detached child holds room as a waited-for one does (it may return 512 KiB,
an action's output) until it closes, a step that finds the room held by detached children fails in
words rather than wait for them (they may stay open for days), and a definition is counted as a
task's result, one larger than an action's output refused.

Real dev server, the product's worker and registry (embedded PostgreSQL), a local HTTP server. The
ceiling is 46 MiB; these tests lower it to 3 MiB (the workflow runs outside the sandbox, so the
module's constant is what the worker reads).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.worker import Worker

import workflows.generic
from interpreter.sizes import ACTION_OUTPUT_BUDGET
from interpreter.state import RunInput, RunResult, RunState
from starter.client import FlowClient, RunHandle
from starter.errors import RunNotFoundError
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import eventually
from workflows.generic import ENGINE_LEVEL, PATCH_HISTORY_GUARD_SUBFLOWS, PATCH_LEVELS

CEILING = 3 * 1024 * 1024
"""The lowered ceiling, in bytes of history."""

BEFORE = PATCH_LEVELS[PATCH_HISTORY_GUARD_SUBFLOWS] - 1
"""The generation before the patch."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


@pytest.fixture
def lowered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The history guard's ceiling lowered to :data:`CEILING` for the test."""
    monkeypatch.setattr(workflows.generic, "HISTORY_SEND_CEILING", CEILING)


@pytest.fixture
async def gated_child(flows: FlowClient, http_server: RecordingServer) -> str:
    """A stored definition that waits for ``manager`` and then returns a 250 KB answer (its step
    record holds it again)."""
    http_server.route("GET", "/answer", lambda request: (200, {}, {"blob": "y" * 250_000}))
    name = unique("gated")
    await flows.register(
        {
            "name": name,
            "steps": [
                {"id": "go", "type": "approval", "approvers": ["manager"]},
                {
                    "id": "get",
                    "type": "task",
                    "action": "http",
                    "input": {"url": f"{http_server.url}/answer"},
                },
            ],
            "output": "{{ steps.get.output.body.blob }}",
        },
        author="ann",
    )
    return name


def _detached(step: str, child: str) -> dict[str, Any]:
    return {"id": step, "type": "subflow", "definition": child, "wait": False}


def _hold(step: str) -> dict[str, Any]:
    return {"id": step, "type": "approval", "approvers": ["manager"]}


async def _waits_at(run: RunHandle, step: str) -> None:
    async def pending() -> tuple[list[str], str, str | None]:
        try:
            status = await run.status()
        except RunNotFoundError:
            return [], "not started", None
        return [p.step_id for p in status.pending_approvals], status.state.value, status.error

    await eventually(pending, lambda seen: step in seen[0], timeout=60, what=f"waiting at {step!r}")


async def _children(run: RunHandle) -> list[str]:
    """The workflow ids of the children the run's detached subflow steps started, in order."""
    return [
        r.output["workflow_id"]
        for r in (await run.status()).steps
        if isinstance(r.output, dict) and r.output.get("state") == "started"
    ]


async def _approve_all(flows: FlowClient, children: list[str]) -> None:
    for child in children:
        run = flows.get_run(child)
        await _waits_at(run, "go")
        await run.approve("manager")
    for child in children:
        result = await flows.get_run(child).result(timeout=120)
        assert result.state == RunState.COMPLETED, result.error


async def _history_size(client: Client, workflow_id: str, *, closed: bool) -> int:
    """The run's history (up to its last event when ``closed``: its result, in the room above)."""
    events = list((await client.get_workflow_handle(workflow_id).fetch_history()).events)
    return History(events=events[:-1] if closed else events).ByteSize()


async def _child_result_limit(client: Client, workflow_id: str) -> int | None:
    events = (await client.get_workflow_handle(workflow_id).fetch_history()).events
    payload = events[0].workflow_execution_started_event_attributes.input.payloads[0]
    return RunInput.model_validate_json(payload.data).options.result_limit


def _fan(child: str, items: int) -> dict[str, Any]:
    return {
        "name": unique("spawner"),
        "steps": [
            {
                "id": "spawn",
                "type": "foreach",
                "items": f"range({items}) | list",
                "steps": [_detached("start", child)],
            },
            _hold("hold"),
        ],
    }


async def test_detached_children_hold_room_and_a_step_finding_none_fails_under_the_ceiling(
    flows: FlowClient, client: Client, store_worker: Worker, gated_child: str, lowered: None
) -> None:
    run = await flows.start_run(_fan(gated_child, 8))
    result = await run.result(timeout=120)
    assert result.state == RunState.FAILED
    assert result.error_type == "HistoryLimit", result.error
    assert result.error is not None
    assert "detached child runs hold" in result.error  # it did not wait for them: days, maybe
    # Two children fit in the half of the 3 MiB that children may hold; the third step failed.
    children = await _children(run)
    assert len(children) == 2, children
    for child in children:
        assert await _child_result_limit(client, child) == ACTION_OUTPUT_BUDGET
    await _approve_all(flows, children)  # each returns its 250 KB within its room
    size = await _history_size(client, run.workflow_id, closed=True)
    assert size <= CEILING, f"{size:,} bytes of history, over the ceiling of {CEILING:,}"


async def test_before_the_patch_detached_results_took_a_waiting_run_past_the_ceiling(
    flows: FlowClient, client: Client, store_worker: Worker, gated_child: str, lowered: None
) -> None:
    # The adversary's finding, kept: at the generation before, all eight start, and their results
    # land in the parent's history while it waits at its approval.
    flows.engine_level = BEFORE
    run = await flows.start_run(_fan(gated_child, 8))
    await _waits_at(run, "hold")
    children = await _children(run)
    assert len(children) == 8, children
    assert await _child_result_limit(client, children[0]) is None
    await _approve_all(flows, children)
    size = await eventually(
        lambda: _history_size(client, run.workflow_id, closed=False),
        lambda size: size > CEILING,
        timeout=60,
        what="the results landed",
    )
    assert size > CEILING
    await run.approve("manager")
    assert (await run.result(timeout=60)).state == RunState.COMPLETED


async def test_a_detached_childs_room_is_given_back_when_it_closes(
    flows: FlowClient, client: Client, store_worker: Worker, gated_child: str, lowered: None
) -> None:
    # Two at a time fit: once the first two closed (their results, 500 KB each, landed), a third
    # starts (held for still, it would not: three would hold more than half of the room left).
    document = {
        "name": unique("spawner"),
        "steps": [
            _detached("a", gated_child),
            _detached("b", gated_child),
            _hold("gate"),
            _detached("c", gated_child),
            _hold("hold"),
        ],
    }
    run = await flows.start_run(document)
    await _waits_at(run, "gate")
    first = await _children(run)
    assert len(first) == 2
    await _approve_all(flows, first)
    await run.approve("manager")
    await _waits_at(run, "hold")
    second = [c for c in await _children(run) if c not in first]
    assert len(second) == 1, second
    await _approve_all(flows, second)
    await run.approve("manager")
    result: RunResult = await run.result(timeout=60)
    assert result.state == RunState.COMPLETED, result.error
    size = await _history_size(client, run.workflow_id, closed=True)
    assert size <= CEILING, f"{size:,} bytes of history, over the ceiling of {CEILING:,}"


@pytest.fixture
async def large_child(flows: FlowClient) -> str:
    """A stored definition of about 450 KB (a long literal output): under an action's 512 KiB."""
    name = unique("large")
    await flows.register(
        {"name": name, "steps": [{"id": "done", "type": "succeed", "output": "z" * 450_000}]}, author="ann"
    )
    return name


def _parallel(child: str, count: int) -> dict[str, Any]:
    branches = [
        {"id": f"b{n}", "steps": [{"id": f"sub_{n}", "type": "subflow", "definition": child}]}
        for n in range(count)
    ]
    return {
        "name": unique("parent"),
        "steps": [{"id": "all", "type": "parallel", "branches": branches}],
        "output": "done",
    }


@pytest.mark.parametrize("level", [BEFORE, ENGINE_LEVEL])
async def test_resolved_definitions_are_counted(
    flows: FlowClient, client: Client, store_worker: Worker, large_child: str, lowered: None, level: int
) -> None:
    # Eight subflows of a 450 KB definition at once: before, the eight resolved definitions landed
    # together (3.6 MB) past the ceiling; now each holds a task's room, and what does not fit
    # waits or fails in words.
    flows.engine_level = level
    run = await flows.start_run(_parallel(large_child, 8))
    result = await run.result(timeout=120)
    size = await _history_size(client, run.workflow_id, closed=True)
    if level == BEFORE:
        assert size > CEILING  # the adversary's finding, kept
        return
    assert size <= CEILING, f"{size:,} bytes of history, over the ceiling of {CEILING:,}"
    if result.state != RunState.COMPLETED:
        assert result.error_type == "HistoryLimit", result.error


async def test_a_definition_larger_than_an_actions_output_is_refused_in_words(
    flows: FlowClient, store_worker: Worker
) -> None:
    name = unique("huge")
    await flows.register(
        {"name": name, "steps": [{"id": "done", "type": "succeed", "output": "z" * 600_000}]}, author="ann"
    )
    run = await flows.start_run(
        {"name": unique("parent"), "steps": [{"id": "sub", "type": "subflow", "definition": name}]}
    )
    result = await run.result(timeout=60)
    assert result.state == RunState.FAILED
    assert result.error_type == "HistoryLimit", result.error
    assert result.error is not None
    assert f"more than the {ACTION_OUTPUT_BUDGET:,}" in result.error
    assert "WFA_PAYLOAD_STORE" in result.error
