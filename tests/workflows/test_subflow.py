"""The ``subflow`` step on the dev server with the registry (embedded PostgreSQL): a child run of
another stored definition, pinned or active, waited for or detached, in the parent's tenant only,
nested at most ``MAX_SUBFLOW_DEPTH`` deep, cancelled with its parent (each running its own
compensations), and visible as the parent's child in Temporal."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

import workflows.generic
from activities.store.database import Database
from interpreter.model import MAX_SUBFLOW_DEPTH
from interpreter.sizes import ACTION_OUTPUT_BUDGET
from interpreter.state import RunInput, RunOptions, RunState, StepStatus
from starter.client import FlowClient, RunHandle
from starter.errors import RunNotFoundError
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import eventually
from workflows.priority import DEFAULT_PRIORITY, PRIORITY_TENANTS_ENV
from workflows.search_attributes import DEFINITION_NAME, DEFINITION_VERSION, TENANT


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def _child(name: str, marker: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "work", "type": "task", "action": "echo", "input": {"value": "{{ input.n * 2 }}"}},
            {
                "id": "done",
                "type": "succeed",
                "output": {
                    "marker": marker,
                    "doubled": "{{ steps.work.output }}",
                    "version": "{{ run.version }}",
                },
            },
        ],
    }


def _parent(name: str, child: str, **subflow: Any) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "sub", "type": "subflow", "definition": child, "input": {"n": "{{ input.n }}"}, **subflow},
        ],
        "output": {"child": "{{ steps.sub.output }}"},
    }


async def _waiting(run: RunHandle) -> bool:
    """Whether the run waits for an approval (False: not started yet)."""
    try:
        return bool((await run.status()).pending_approvals)
    except RunNotFoundError:
        return False


async def test_a_subflow_runs_the_active_or_pinned_version_as_a_child_of_the_parent(
    flows: FlowClient, client: Client, store_worker: Worker, tenant: str
) -> None:
    child = unique("child")
    await flows.register(_child(child, "one"), author="ann")
    await flows.register(_child(child, "two"), author="ann")  # version 2, not active

    active = await flows.start_run(_parent(unique("parent"), child), {"n": 21})
    result = await active.result(timeout=60)
    assert result.state == RunState.COMPLETED
    out = result.output["child"]
    assert out["state"] == "completed"
    assert out["output"] == {"marker": "one", "doubled": 42, "version": 1}
    assert out["workflow_id"] == f"{active.workflow_id}/sub"

    pinned = await flows.start_run(_parent(unique("parent"), child, version=2), {"n": 1})
    assert (await pinned.result(timeout=60)).output["child"]["output"]["marker"] == "two"

    # The child is the parent's child in Temporal (the Web UI lists it under the parent), and it
    # is the parent's tenant's run, with the definition's identity.
    described = await client.get_workflow_handle(out["workflow_id"]).describe()
    assert described.parent_id == active.workflow_id
    attrs = described.typed_search_attributes
    assert attrs.get(TENANT) == tenant
    assert (attrs.get(DEFINITION_NAME), attrs.get(DEFINITION_VERSION)) == (child, 1)
    assert (await flows.status(out["workflow_id"])).state == RunState.COMPLETED  # same tenant sees it


async def test_a_detached_subflow_outlives_its_parent(
    flows: FlowClient, client: Client, store_worker: Worker
) -> None:
    child = unique("waiting")
    await flows.register(
        {"name": child, "steps": [{"id": "ok", "type": "approval", "approvers": ["manager"]}]}, author="ann"
    )
    parent = await flows.start_run(_parent(unique("parent"), child, wait=False), {"n": 1})
    result = await parent.result(timeout=60)
    out = result.output["child"]
    assert out["state"] == "started"
    child_run = flows.get_run(out["workflow_id"])
    await eventually(child_run.status, lambda s: bool(s.pending_approvals), timeout=30, what="child waiting")
    await child_run.approve("manager")
    assert (await child_run.result(timeout=60)).state == RunState.COMPLETED


async def _child_options(client: Client, workflow_id: str) -> RunOptions:
    """The options a child run was started with, read from its history's first event."""
    events = (await client.get_workflow_handle(workflow_id).fetch_history()).events
    payload = events[0].workflow_execution_started_event_attributes.input.payloads[0]
    return RunInput.model_validate_json(payload.data).options


async def test_a_waited_for_subflow_may_return_at_most_the_room_its_parent_holds(
    flows: FlowClient, client: Client, store_worker: Worker
) -> None:
    # Patch history-guard-children: the parent holds room in its history for the result of a child
    # it waits for, and the child carries it (RunOptions.result_limit: 512 KiB, as an action's
    # output); a detached child, whose result its step does not wait for, carries none.
    child = unique("child")
    await flows.register(_child(child, "one"), author="ann")
    document = {
        "name": unique("parent"),
        "steps": [
            {"id": "sub", "type": "subflow", "definition": child, "input": {"n": 1}},
            {"id": "off", "type": "subflow", "definition": child, "input": {"n": 2}, "wait": False},
        ],
    }
    run = await flows.start_run(document)
    assert (await run.result(timeout=60)).state == RunState.COMPLETED
    waited = await _child_options(client, f"{run.workflow_id}/sub")
    assert waited.result_limit == ACTION_OUTPUT_BUDGET
    assert (await _child_options(client, f"{run.workflow_id}/off")).result_limit is None


async def test_waited_for_subflows_hold_room_for_their_results(
    flows: FlowClient,
    client: Client,
    store_worker: Worker,
    http_server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Patch history-guard-children through subflows: a waited-for child holds room in its parent's
    # history for what it may return (512 KiB, as an action, and the result's fields), and children
    # hold at most half of the room left. Under a ceiling lowered to 3 MiB that is two at a time:
    # seven subflows started at once by a parallel step, each returning 100 KB (its step's output,
    # in its step records), all complete, at most two running at once, the history under the
    # ceiling (before, all seven ran at once, nothing counted).
    ceiling = 3 * 1024 * 1024
    monkeypatch.setattr(workflows.generic, "HISTORY_SEND_CEILING", ceiling)
    http_server.route("GET", "/answer", lambda request: (200, {}, {"blob": "y" * 100_000}))
    child = unique("large")
    await flows.register(
        {
            "name": child,
            "steps": [
                {"id": "get", "type": "task", "action": "http", "input": {"url": f"{http_server.url}/answer"}}
            ],
            "output": "{{ steps.get.output.body.blob | length }}",
        },
        author="ann",
    )
    branches = [
        {"id": n, "steps": [{"id": f"sub_{n}", "type": "subflow", "definition": child}]} for n in "abcdefg"
    ]
    run = await flows.start_run(
        {"name": unique("parent"), "steps": [{"id": "all", "type": "parallel", "branches": branches}]}
    )
    result = await run.result(timeout=120)
    assert result.state == RunState.COMPLETED, result.error
    spans = []
    for n in "abcdefg":
        described = await client.get_workflow_handle(f"{run.workflow_id}/sub_{n}").describe()
        assert described.close_time is not None
        spans.append((described.start_time, described.close_time))
        assert (
            await _child_options(client, f"{run.workflow_id}/sub_{n}")
        ).result_limit == ACTION_OUTPUT_BUDGET
    for started, _ in spans:
        running = sum(1 for begin, end in spans if begin <= started < end)
        assert running <= 2, spans
    events = (await client.get_workflow_handle(run.workflow_id).fetch_history()).events
    size = History(events=events[:-1]).ByteSize()
    assert size <= ceiling, f"{size:,} bytes of history, over the ceiling of {ceiling:,}"


async def test_another_tenants_definition_does_not_exist_for_a_subflow(
    flows: FlowClient, client: Client, task_queue: str, database: Database, store_worker: Worker
) -> None:
    other = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("other"))
    child = unique("theirs")
    await other.register(_child(child, "theirs"), author="eve")
    parent = await flows.start_run(_parent(unique("parent"), child), {"n": 1})
    result = await parent.result(timeout=60)
    assert result.state == RunState.FAILED
    assert result.error_type == "SubflowDefinitionNotFound"
    assert child in (result.error or "")


async def test_a_subflow_version_past_the_registry_numbering_is_not_found(
    flows: FlowClient, store_worker: Worker
) -> None:
    # Found by an attacker's probe: a version of ten digits (which the step's model accepts) failed
    # the step with the type ``InvalidTenant``, naming a problem the run does not have.
    child = unique("child")
    await flows.register(_child(child, "one"), author="ann")
    document = _parent(unique("parent"), child, version=10**12)
    document["steps"][0]["on_failure"] = "continue"
    document["output"] = {"error": "{{ steps.sub.error_type }}"}
    result = await (await flows.start_run(document, {"n": 1})).result(timeout=60)
    assert result.output == {"error": "SubflowDefinitionNotFound"}
    failed = next(r for r in result.steps if r.id == "sub")
    assert f"no version {10**12}" in (failed.error or "")
    assert child in (failed.error or "")


async def test_a_subflow_of_a_deactivated_definition_fails_its_step_at_once(
    flows: FlowClient, store_worker: Worker
) -> None:
    # Found by an attacker's probe: the lookup's "no active version" was retried for ever (a minute
    # apart), the step waiting and its on_failure never applied, for every parent of the child.
    child = unique("gone")
    await flows.register(_child(child, "gone"), author="ann")
    await flows.deactivate(child, "ann")
    document = _parent(unique("parent"), child)
    document["steps"][0]["on_failure"] = "continue"
    document["output"] = {"error": "{{ steps.sub.error_type }}"}
    result = await (await flows.start_run(document, {"n": 1})).result(timeout=60)
    assert result.state == RunState.COMPLETED
    assert result.output == {"error": "SubflowNoActiveVersion"}
    failed = next(r for r in result.steps if r.id == "sub")
    assert child in (failed.error or "")
    assert "no active version" in (failed.error or "")


@pytest.mark.parametrize("engine_level", ["current", 0])
async def test_a_subflow_input_its_childs_input_schema_refuses_fails_the_step(
    flows: FlowClient, client: Client, store_worker: Worker, engine_level: str | int
) -> None:
    """The attacker: a parent definition feeds a stored definition an input its ``input_schema``
    refuses (a string where it requires an integer; a missing field). Every other start checks the
    input first; a subflow's child must not start either. The step fails (``InvalidRunInput``,
    each problem with its path) and its ``on_failure`` applies; an input the schema accepts starts
    the child. A run of generation 0 (a client of an earlier build) asks for the check by a patch."""
    if engine_level == 0:
        flows.engine_level = 0
    child = unique("typed")
    typed = _child(child, "typed")
    typed["input_schema"] = {
        "type": "object",
        "required": ["n"],
        "properties": {"n": {"type": "integer"}},
    }
    await flows.register(typed, author="ann")
    document = _parent(unique("parent"), child, on_failure="continue")
    document["output"] = {"child": "{{ steps.sub.output }}", "error": "{{ steps.sub.error_type }}"}
    cases = (
        ({"n": "{{ input.n }}"}, {"n": "not a number"}, "$.n: 'not a number' is not of type 'integer'"),
        ({}, {}, "$: 'n' is a required property"),
    )
    for step_input, given, problem in cases:
        document["steps"][0]["input"] = step_input
        run = await flows.start_run(document, given)
        result = await run.result(timeout=60)
        assert result.state == RunState.COMPLETED, result.error
        assert result.output["error"] == "InvalidRunInput", result.output
        failed = next(r for r in result.steps if r.id == "sub")
        assert problem in (failed.error or ""), failed.error
        assert f"input_schema of {child} v1" in (failed.error or "")
        history = await client.get_workflow_handle(run.workflow_id).fetch_history()
        assert not any(
            e.HasField("start_child_workflow_execution_initiated_event_attributes") for e in history.events
        )
        patches = " ".join(
            e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data.decode()
            for e in history.events
            if e.HasField("marker_recorded_event_attributes")
            and e.marker_recorded_event_attributes.marker_name == "core_patch"
        )
        assert (workflows.generic.PATCH_SUBFLOW_INPUT_SCHEMA in patches) is (engine_level == 0), patches

    document["steps"][0]["input"] = {"n": "{{ input.n }}"}
    accepted = await (await flows.start_run(document, {"n": 21})).result(timeout=60)
    assert accepted.output["child"]["output"]["doubled"] == 42, accepted.output

    # A compensation's child is not checked: compensations always go, as the README says.
    undoing = {
        "name": unique("undoing"),
        "steps": [
            {
                "id": "charge",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
                "compensate": [{"id": "undo", "type": "subflow", "definition": child, "input": {"n": "x"}}],
            },
            {"id": "boom", "type": "fail", "message": "no stock"},
        ],
    }
    undone = await (await flows.start_run(undoing)).result(timeout=60)
    assert undone.state == RunState.FAILED
    undo = next(r for r in undone.steps if r.id == "undo")
    assert undo.status == StepStatus.COMPLETED, undo.error


async def test_a_schema_that_makes_the_check_slow_fails_the_step_and_stops_the_check(
    flows: FlowClient, store_worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker: a child's ``input_schema`` with ``uniqueItems`` (every pair of items compared)
    given thousands of objects, enough CPU for tens of seconds. The check runs in a process of its
    own and is stopped at its deadline: the step fails with ``SubflowInputUnchecked`` naming it,
    and the next check runs in a new process."""
    child = unique("unique")
    document = _child(child, "unique")
    document["input_schema"] = {
        "type": "object",
        "properties": {"rows": {"type": "array", "uniqueItems": True}},
    }
    await flows.register(document, author="ann")
    parent = _parent(unique("parent"), child, on_failure="continue")
    parent["steps"][0]["input"] = {"n": 1, "rows": "{{ input.rows }}"}
    parent["output"] = {"child": "{{ steps.sub.output }}", "error": "{{ steps.sub.error_type }}"}

    small = await (await flows.start_run(parent, {"rows": [{"i": i} for i in range(10)]})).result(timeout=60)
    assert small.output["child"]["output"]["doubled"] == 2, small.output  # the checking process is up

    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "2")
    rows = [{"i": i, "tag": f"row-{i}"} for i in range(6000)]
    slow = await (await flows.start_run(parent, {"rows": rows})).result(timeout=120)
    assert slow.output is not None, (slow.state, slow.error)
    assert slow.output["error"] == "SubflowInputUnchecked", slow.output
    failed = next(r for r in slow.steps if r.id == "sub")
    assert "took more than 2 s" in (failed.error or ""), failed.error

    monkeypatch.delenv("WFA_INPUT_CHECK_DEADLINE")
    again = await (await flows.start_run(parent, {"rows": [{"i": 1}, {"i": 1}]})).result(timeout=60)
    assert again.output["error"] == "InvalidRunInput", again.output  # a new process answers
    assert "has non-unique elements" in (next(r for r in again.steps if r.id == "sub").error or "")


async def test_a_subflow_that_calls_itself_stops_at_the_depth_limit(
    flows: FlowClient, store_worker: Worker
) -> None:
    name = unique("recurse")
    await flows.register(
        {"name": name, "steps": [{"id": "again", "type": "subflow", "definition": name}]}, author="ann"
    )
    run = await flows.start_run(name)
    result = await run.result(timeout=120)
    assert result.state == RunState.FAILED
    assert result.error_type == "SubflowDepthExceeded"
    deepest = run.workflow_id + "/again" * MAX_SUBFLOW_DEPTH
    assert (await flows.status(deepest)).error_type == "SubflowDepthExceeded"


async def test_cancelling_the_parent_cancels_the_child_and_both_compensate(
    flows: FlowClient, client: Client, store_worker: Worker
) -> None:
    def undo(step: str) -> list[dict[str, Any]]:
        return [{"id": f"undo_{step}", "type": "task", "action": "echo", "input": {"value": f"undo {step}"}}]

    child = unique("held")
    await flows.register(
        {
            "name": child,
            "steps": [
                {
                    "id": "book",
                    "type": "task",
                    "action": "echo",
                    "input": {"value": 1},
                    "compensate": undo("book"),
                },
                {"id": "ok", "type": "approval", "approvers": ["manager"]},
            ],
        },
        author="ann",
    )
    parent_doc = {
        "name": unique("parent"),
        "steps": [
            {
                "id": "charge",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
                "compensate": undo("charge"),
            },
            {"id": "sub", "type": "subflow", "definition": child},
        ],
    }
    parent = await flows.start_run(parent_doc)
    child_run = flows.get_run(f"{parent.workflow_id}/sub")

    await eventually(lambda: _waiting(child_run), bool, timeout=30, what="child waiting for approval")
    await parent.cancel("ops", "no longer needed")
    parent_result = await parent.result(timeout=60)
    child_result = await child_run.result(timeout=60)
    assert parent_result.state == RunState.CANCELLED
    assert child_result.state == RunState.CANCELLED
    child_undo = [r for r in child_result.steps if r.id == "undo_book"]
    parent_undo = [r for r in parent_result.steps if r.id == "undo_charge"]
    assert [r.status for r in child_undo] == [StepStatus.COMPLETED]
    assert [r.status for r in parent_undo] == [StepStatus.COMPLETED]
    # The parent waited for the child's cancellation (and its compensation) before its own.
    assert child_undo[0].finished_at is not None
    assert parent_undo[0].started_at >= child_undo[0].finished_at
    child_desc = await client.get_workflow_handle(child_run.workflow_id).describe()
    assert child_desc.status == WorkflowExecutionStatus.CANCELED


@pytest.mark.parametrize("on_failure", ["continue", "fail"])
async def test_a_child_cancelled_by_someone_else_fails_the_step_not_the_parent(
    flows: FlowClient, client: Client, store_worker: Worker, on_failure: str
) -> None:
    # Nobody cancelled the parent: its step fails as for a terminated child, and on_failure applies.
    # Before, the parent ended as cancelled (closing as failed with a cancellation), next step unrun.
    child = unique("held")
    await flows.register(
        {"name": child, "steps": [{"id": "ok", "type": "approval", "approvers": ["manager"]}]}, author="ann"
    )
    parent_doc = {
        "name": unique("parent"),
        "steps": [
            {
                "id": "charge",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
                "compensate": [{"id": "refund", "type": "task", "action": "echo", "input": {"value": 2}}],
            },
            {"id": "sub", "type": "subflow", "definition": child, "on_failure": on_failure},
            {
                "id": "after",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ steps.sub.error_type }}"},
            },
        ],
    }
    parent = await flows.start_run(parent_doc)
    child_run = flows.get_run(f"{parent.workflow_id}/sub")

    await eventually(lambda: _waiting(child_run), bool, timeout=30, what="child waiting for approval")
    await client.get_workflow_handle(child_run.workflow_id).cancel()  # Temporal's cancel, of the child only
    result = await parent.result(timeout=60)
    sub = next(r for r in result.steps if r.id == "sub")
    assert sub.status == StepStatus.FAILED
    assert sub.error_type == "Subflow.CancelledError"
    assert sub.error is not None
    assert child_run.workflow_id in sub.error
    refunds = [r for r in result.steps if r.id == "refund"]
    if on_failure == "continue":
        assert result.state == RunState.COMPLETED
        assert next(r for r in result.steps if r.id == "after").output == "Subflow.CancelledError"
        assert refunds == []
    else:
        assert (result.state, result.error_type) == (RunState.FAILED, "Subflow.CancelledError")
        assert [r.status for r in refunds] == [StepStatus.COMPLETED]  # a failure's compensations
    described = await client.get_workflow_handle(parent.workflow_id).describe()
    assert described.status == (
        WorkflowExecutionStatus.COMPLETED if on_failure == "continue" else WorkflowExecutionStatus.FAILED
    )


async def test_a_parent_run_again_under_its_business_key_starts_its_subflow_again(
    flows: FlowClient, store_worker: Worker
) -> None:
    child = unique("child")
    await flows.register(_child(child, "one"), author="ann")
    doc = _parent(unique("parent"), child)
    doc["steps"].append({"id": "maybe", "type": "fail", "message": "asked to fail", "when": "input.fail"})
    key = unique("order")
    first = await flows.start_run(doc, {"n": 1, "fail": True}, workflow_id=key)
    assert (await first.result(timeout=60)).state == RunState.FAILED  # after its child completed
    again = await flows.start_run(doc, {"n": 2, "fail": False}, workflow_id=key)
    result = await again.result(timeout=60)
    assert result.state == RunState.COMPLETED
    assert result.output["child"]["output"]["doubled"] == 4
    assert result.output["child"]["workflow_id"] == f"{key}/sub"


async def test_a_subflows_priority_above_the_default_is_the_platforms_to_grant(
    flows: FlowClient, client: Client, store_worker: Worker, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's definition declares priority 1: its run and its steps get it only when the
    worker grants the tenant priorities above the default (``WFA_PRIORITY_TENANTS``)."""
    child = unique("urgent")
    await flows.register({**_child(child, "urgent"), "priority": 1}, author="ann")
    for grants, expected in (("someone-else", DEFAULT_PRIORITY), (tenant, 1)):
        monkeypatch.setenv(PRIORITY_TENANTS_ENV, grants)
        parent = await flows.start_run(_parent(unique("parent"), child), {"n": 1})
        out = (await parent.result(timeout=60)).output["child"]
        assert out["state"] == "completed"
        history = await client.get_workflow_handle(out["workflow_id"]).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes.priority.priority_key
        scheduled = [
            e.activity_task_scheduled_event_attributes.priority.priority_key
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert (started, scheduled) == (expected, [expected]), grants
