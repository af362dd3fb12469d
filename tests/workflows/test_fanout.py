"""A foreach over a large list runs its items in child workflows (``fan_out_above``, ``batch_size``),
on the dev server with a real worker: outputs in item order, ``concurrency`` bounding the items in
flight across children (counted by the activity itself), an item's failure handled by its
``on_failure`` (continue, or fail the run naming the item and the child), and a cancelled parent
cancelling its children. Small lists keep running in the run (no child, no patch marker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.base import action
from interpreter.actions import ActionRequest, known_actions
from interpreter.engine import PATCH_FOREACH_CHILDREN
from interpreter.state import RunInput, RunOptions, RunResult, RunState
from interpreter.validate import load_definition
from tests.workflows.support import Handle, events, eventually, failure_of, status, unique
from worker import build_worker
from workflows.generic import ENGINE_LEVEL, RunDefinitionWorkflow

PROBE = "fanout_probe"


class _Counter:
    """Items in flight right now and the most seen at once, counted by the activity."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.calls = 0
        self.seen: dict[str, list[Any]] = {}
        """The items each run's probes saw, in the order they started (by the input's ``tag``)."""


COUNTER = _Counter()


@action(PROBE)
async def probe(request: ActionRequest) -> Any:
    """Counts itself in flight, yields a moment so others overlap, fails on ``fail_on``, or holds
    (heartbeating) until cancelled when ``hold`` is set."""
    data = request.input
    COUNTER.now += 1
    COUNTER.calls += 1
    COUNTER.peak = max(COUNTER.peak, COUNTER.now)
    if data.get("tag"):
        COUNTER.seen.setdefault(data["tag"], []).append(data.get("item"))
    try:
        if data.get("hold"):
            for _ in range(600):
                activity.heartbeat()
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.05)
        if data.get("item") == data.get("fail_on"):
            raise ApplicationError(f"item {data['item']} refused", type="ItemRefused", non_retryable=True)
        return {"value": data.get("item")}
    finally:
        COUNTER.now -= 1


@pytest_asyncio.fixture(loop_scope="session")
async def probe_worker(
    client: Client, task_queue: str, http_client: httpx.AsyncClient
) -> AsyncIterator[Worker]:
    async with build_worker(
        client, task_queue, http_client, extra_activities=[probe], graceful_shutdown_timeout=timedelta(0)
    ) as running:
        yield running


def _foreach(name: str, body: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "limits": {"max_foreach_items": 10000},
        "steps": [{"id": "loop", "type": "foreach", "items": "input.items", "steps": body, **options}],
        "output": "{{ steps.loop.output }}",
    }


def _probe(**extra: Any) -> dict[str, Any]:
    return {
        "id": "p",
        "type": "task",
        "action": PROBE,
        "input": {"item": "{{ item }}", "fail_on": "{{ input.fail_on }}", "hold": "{{ input.hold }}"},
        "retry": {"maximum_attempts": 1},
        "timeouts": {"start_to_close": "120s", "heartbeat": "5s"},
        **extra,
    }


async def _start(
    client: Client, task_queue: str, doc: dict[str, Any], run_input: dict[str, Any], engine_level: int = 0
) -> Handle:
    definition = load_definition(doc, known_actions=[*known_actions(), PROBE])
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(definition=definition, input=run_input, options=RunOptions(engine_level=engine_level)),
        id=unique(doc["name"]),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=15),
    )


async def _children(handle: Handle) -> list[str]:
    started = await events(handle, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    return [e.start_child_workflow_execution_initiated_event_attributes.workflow_id for e in started]


async def _statuses(client: Client, ids: list[str]) -> list[WorkflowExecutionStatus | None]:
    """Each child's status (None: not started yet)."""
    found: list[WorkflowExecutionStatus | None] = []
    for child_id in ids:
        try:
            found.append((await client.get_workflow_handle(child_id).describe()).status)
        except RPCError:  # not started yet
            found.append(None)
    return found


async def _four_children_running(
    client: Client, task_queue: str, name: str, engine_level: int = 0
) -> tuple[Handle, list[str]]:
    """A 400-item fan-out of held items, 4 children of 100 at once, once all 4 run: its handle and
    the children's ids."""
    doc = _foreach(unique(name), [_probe()], concurrency=4, batch_size=100)
    run_input = {"items": list(range(400)), "fail_on": -1, "hold": True}
    handle = await _start(client, task_queue, doc, run_input, engine_level)
    ids = [f"{handle.id}/loop/batch-{k}" for k in range(4)]
    await eventually(
        lambda: _statuses(client, ids),
        lambda s: all(x == WorkflowExecutionStatus.RUNNING for x in s),
        timeout=60,
        what="4 children",
    )
    return handle, ids


async def _patched(handle: Handle) -> bool:
    """Whether the run recorded the fan-out patch marker."""
    found = await events(handle, EventType.EVENT_TYPE_MARKER_RECORDED)
    return any(PATCH_FOREACH_CHILDREN.encode() in e.SerializeToString() for e in found)


async def test_two_thousand_items_run_in_children_with_outputs_in_order(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = _foreach(
        unique("fanout"),
        [{"id": "e", "type": "task", "action": "echo", "input": {"value": "{{ item * 2 }}"}}],
        concurrency=20,
        max_items=2000,
        output="{{ steps.e.output }}",
    )
    doc["limits"]["max_step_executions"] = 5000
    items = list(range(2000))
    handle = await _start(client, task_queue, doc, {"items": items})
    result: RunResult = await handle.result()

    assert result.state == RunState.COMPLETED
    assert result.output == [i * 2 for i in items]
    # 20 children of 100 items, named after the parent and the step; no item ran in the parent.
    assert await _children(handle) == [f"{handle.id}/loop/batch-{k}" for k in range(20)]
    assert not await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert [r.path for r in result.steps] == ["loop"]
    child = await client.get_workflow_handle(f"{handle.id}/loop/batch-7").describe()
    assert child.status == WorkflowExecutionStatus.COMPLETED
    assert child.parent_id == handle.id
    child_result = await client.get_workflow_handle(
        f"{handle.id}/loop/batch-7", result_type=RunResult
    ).result()
    assert child_result.output == {"results": [i * 2 for i in range(700, 800)]}
    assert child_result.steps == []  # the parent reads the output alone (patch slice-results-output)
    # Items keep their paths (and so their activity ids and idempotency keys) in the child.
    child_steps = (await status(client.get_workflow_handle(f"{handle.id}/loop/batch-7"))).steps
    assert [r.path for r in child_steps][:2] == ["loop[700].e", "loop[701].e"]
    # The child gets its slice and the context its body reads (here none): not the run's input.
    started = (await client.get_workflow_handle(f"{handle.id}/loop/batch-7").fetch_history()).events[0]
    payload = started.workflow_execution_started_event_attributes.input.payloads[0]
    batch = json.loads(payload.data)["batch"]
    assert batch["items"] == list(range(700, 800))
    assert batch["input"] == {}


async def test_concurrency_bounds_items_in_flight_across_children(
    client: Client, task_queue: str, probe_worker: Worker
) -> None:
    COUNTER.peak = COUNTER.now = COUNTER.calls = 0
    doc = _foreach(unique("fanout-bound"), [_probe()], concurrency=4, batch_size=30)
    handle = await _start(client, task_queue, doc, {"items": list(range(250)), "fail_on": -1, "hold": False})
    result = await handle.result()

    assert result.output == [{"value": i} for i in range(250)]
    assert len(await _children(handle)) == 9
    assert await _patched(handle)
    assert COUNTER.calls == 250
    assert COUNTER.peak <= 4, f"at most 4 items in flight across the children, saw {COUNTER.peak}"
    assert COUNTER.peak > 1, "items of several children overlapped"


async def test_a_small_list_stays_in_the_run(client: Client, task_queue: str, probe_worker: Worker) -> None:
    doc = _foreach(unique("fanout-small"), [_probe()], concurrency=3)
    handle = await _start(client, task_queue, doc, {"items": list(range(200)), "fail_on": -1, "hold": False})
    result = await handle.result()

    assert result.output == [{"value": i} for i in range(200)]
    assert not await _children(handle)
    assert not await _patched(handle)


async def test_a_failing_item_with_continue_keeps_its_place(
    client: Client, task_queue: str, probe_worker: Worker
) -> None:
    doc = _foreach(
        unique("fanout-continue"), [_probe(on_failure="continue")], concurrency=5, fan_out_above=10
    )
    handle = await _start(client, task_queue, doc, {"items": list(range(250)), "fail_on": 137, "hold": False})
    result = await handle.result()

    assert result.state == RunState.COMPLETED
    assert result.output[137] is None
    assert result.output[:137] == [{"value": i} for i in range(137)]
    assert result.output[138:] == [{"value": i} for i in range(138, 250)]
    assert len(await _children(handle)) == 3


async def test_a_failing_item_fails_the_run_and_cancels_the_other_children(
    client: Client, task_queue: str, probe_worker: Worker
) -> None:
    doc = _foreach(unique("fanout-fail"), [_probe()], concurrency=3, batch_size=50)
    # Item 60 fails in the second child (3 of the 6 children run at a time, one item each): the
    # run fails with the item's error, naming the item and the child; the others are cancelled.
    items = list(range(300))
    handle = await _start(client, task_queue, doc, {"items": items, "fail_on": 60, "hold": False})
    cause, run_result = await failure_of(handle)

    assert isinstance(cause, ApplicationError)
    assert cause.type == "ItemRefused"
    assert run_result is not None
    assert run_result.state == RunState.FAILED
    assert "loop[60].p" in cause.message
    assert f"{handle.id}/loop/batch-1" in cause.message
    children = await _children(handle)
    assert f"{handle.id}/loop/batch-1" in children
    failed = await client.get_workflow_handle(f"{handle.id}/loop/batch-1").describe()
    assert failed.status == WorkflowExecutionStatus.FAILED
    assert len(children) < 6, "no child starts after the failure"


async def test_cancelling_the_parent_cancels_its_children(
    client: Client, task_queue: str, probe_worker: Worker
) -> None:
    handle, ids = await _four_children_running(client, task_queue, "fanout-cancel")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, CancelledError)

    assert await _statuses(client, ids) == [WorkflowExecutionStatus.CANCELED] * 4


async def test_a_child_cancelled_by_someone_else_fails_the_step_not_the_parent(
    client: Client, task_queue: str, probe_worker: Worker
) -> None:
    # Nobody cancelled the parent: the foreach fails as for a terminated child, naming the child.
    # Before, the parent ended as cancelled (closing as failed with a cancellation), unnamed.
    handle, ids = await _four_children_running(client, task_queue, "fanout-child-cancel", ENGINE_LEVEL)
    await client.get_workflow_handle(ids[1]).cancel()
    cause, run_result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "CancelledError"
    assert ids[1] in cause.message
    assert run_result is not None
    assert run_result.state == RunState.FAILED
    # The failed step cancelled the other children, as for any failing item.
    assert await _statuses(client, ids) == [WorkflowExecutionStatus.CANCELED] * 4
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED


async def test_an_item_that_compensates_or_succeeds_ends_the_run_as_in_the_run(
    client: Client, task_queue: str, probe_worker: Worker
) -> None:
    doc = _foreach(
        unique("fanout-compensate"), [_probe(on_failure="compensate")], concurrency=2, fan_out_above=5
    )
    handle = await _start(client, task_queue, doc, {"items": list(range(12)), "fail_on": 7, "hold": False})
    cause, run_result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "RunCompensated"
    assert run_result is not None
    assert run_result.state == RunState.COMPENSATED
    assert run_result.error_type == "ItemRefused"

    doc = _foreach(
        unique("fanout-succeed"),
        [
            _probe(),
            {"id": "stop", "type": "succeed", "when": "index == 9", "output": {"stopped_at": "{{ index }}"}},
        ],
        concurrency=1,
        fan_out_above=5,
        batch_size=4,
    )
    handle = await _start(client, task_queue, doc, {"items": list(range(12)), "fail_on": -1, "hold": False})
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"stopped_at": 9}


def _differential(name: str, on_failure: str, stop_at: int | None, fan_out_above: int) -> dict[str, Any]:
    """A step with a compensation, then a 12-item foreach of ``concurrency: 1`` whose items are
    probes handling their failure with ``on_failure``, and a ``succeed`` at item ``stop_at``: in the
    run (``fan_out_above`` 10000) or in children of 4 items (5)."""
    tagged = {"tag": "{{ input.tag }}", "fail_on": "{{ input.fail_on }}"}
    body: list[dict[str, Any]] = [
        {
            "id": "p",
            "type": "task",
            "action": PROBE,
            "input": {"item": "{{ item }}", **tagged},
            "retry": {"maximum_attempts": 1},
            "on_failure": on_failure,
        }
    ]
    if stop_at is not None:
        body.append({"id": "stop", "type": "succeed", "when": f"index == {stop_at}", "output": "{{ index }}"})
    undo = {"id": "undo", "type": "task", "action": PROBE, "input": {"item": "undo", **tagged}}
    return {
        "name": name,
        "steps": [
            {
                "id": "first",
                "type": "task",
                "action": PROBE,
                "input": {"item": "first", **tagged},
                "compensate": [undo],
            },
            {
                "id": "loop",
                "type": "foreach",
                "items": "input.items",
                "concurrency": 1,
                "fan_out_above": fan_out_above,
                "batch_size": 4,
                "steps": body,
            },
        ],
        "output": "{{ steps.loop.output }}",
    }


@pytest.mark.parametrize(
    ("on_failure", "fail_on", "stop_at"),
    [("continue", 6, None), ("fail", 6, None), ("compensate", 6, None), ("fail", -1, 9), ("fail", -1, None)],
)
async def test_with_concurrency_one_a_fanned_out_foreach_ends_as_in_the_run(
    client: Client, task_queue: str, probe_worker: Worker, on_failure: str, fail_on: int, stop_at: int | None
) -> None:
    """The differential test of the two paths: the same definition and input, the list in the run
    and in children; the state, output, error type, the items that ran and their order, and the
    compensations agree (README *Fan-out*, where they differ with ``concurrency`` above 1)."""
    outcomes = []
    for fan_out_above in (10000, 5):
        doc = _differential(unique("fanout-diff"), on_failure, stop_at, fan_out_above)
        tag = unique("tag")
        handle = await _start(
            client, task_queue, doc, {"items": list(range(12)), "fail_on": fail_on, "tag": tag}
        )
        try:
            result = await handle.result()
        except WorkflowFailureError:
            _, failed = await failure_of(handle)
            assert failed is not None
            result = failed
        outcomes.append(
            {
                "state": result.state,
                "output": result.output,
                "error_type": result.error_type,
                "ran": COUNTER.seen.pop(tag),
                "children": len(await _children(handle)),
            }
        )
    in_run, fanned = outcomes
    assert in_run["children"] == 0
    assert fanned["children"] > 0
    in_run.pop("children")
    fanned.pop("children")
    assert fanned == in_run
    expected_state = {
        "continue": RunState.COMPLETED,
        "fail": RunState.FAILED,
        "compensate": RunState.COMPENSATED,
    }
    assert in_run["state"] == (RunState.COMPLETED if fail_on < 0 else expected_state[on_failure])
    if on_failure == "compensate":
        assert in_run["ran"][-1] == "undo"
