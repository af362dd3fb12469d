"""What a raw Temporal client can send as an update's argument, bounded before history (found by an
attacker's probe). The client API checks these (``FlowClient``), but the run's own validators did
not: a ``resolve_dead_letter`` skip output nested 198 levels was accepted and every ``status`` query
failed from then on (a subflow's parent could not read the child's result, its workflow task
failing for ever); a 1.4 MB actor went out three times in one workflow task completion and the
server terminated the run; any argument near 2 MiB failed the workflow task at every attempt (the
SDK writes it back when it accepts the update) until the server aborted the update."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.state import RunState
from tests.workflows.support import definition, events, eventually, start, status, unique

NEAR_LIMIT = 2 * 1024 * 1024 - 4096  # under Temporal's 2 MiB request limit, as a raw client may send


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def _parking() -> dict[str, Any]:
    """A definition whose first step parks at once (a task failing, ``on_failure: dead_letter``)."""
    parking = {
        "id": "charge",
        "type": "task",
        "action": "echo",
        "input": {"fail": "Down", "non_retryable": True},
        "on_failure": "dead_letter",
    }
    return definition(unique("bounds"), [parking, {"id": "done", "type": "succeed", "output": {"ok": 1}}])


async def _parked(handle: Any) -> None:
    await eventually(
        lambda: status(handle),
        lambda s: bool(s.parked) and s.parked[0].dead_letter_id is not None,
        timeout=30,
        what="the park",
    )


async def _refused(handle: Any, update: str, argument: dict[str, Any], error_type: str) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(update, argument)
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == error_type, (cause.type, cause.message[:300])
    return cause.message


@pytest.mark.parametrize(
    ("argument", "says"),
    [
        ({"action": "skip", "output": _deep(198)}, "output is nested"),
        ({"action": "redrive", "input": {"a": _deep(198)}}, "input is nested"),
        ({"action": "skip", "actor": "o" * 1_400_000}, "actor is 1400000 characters"),
        ({"action": "skip", "reason": "r" * 5000}, "reason is 5000 characters"),
        ({"action": "skip", "output": "x" * 600_000}, "output is 600,002 bytes"),
        ({"action": "skip", "output": ["x"] * (NEAR_LIMIT // 4)}, "output is"),
        ({"action": "redrive", "input": {"value": "x" * 1_100_000}}, "the decision with its input is"),
    ],
    ids=[
        "deep-output",
        "deep-input",
        "huge-actor",
        "long-reason",
        "large-output",
        "near-2-mib",
        "large-input",
    ],
)
async def test_a_dead_letter_decision_out_of_bounds_is_refused_before_history(
    client: Client, task_queue: str, store_worker: Worker, argument: dict[str, Any], says: str
) -> None:
    handle = await start(client, task_queue, _parking(), execution_timeout=timedelta(seconds=90))
    await _parked(handle)
    message = await _refused(handle, "resolve_dead_letter", {"actor": "ops", **argument}, "DeadLetterRefused")
    assert says in message, message[:300]
    # Nothing was written: the step is still parked, and an operator's decision in bounds resolves it.
    assert (await status(handle)).parked
    await handle.execute_update("resolve_dead_letter", {"action": "skip", "actor": "ops", "output": "ok"})
    result = await handle.result()
    assert (result.state, result.output) == (RunState.COMPLETED, {"ok": 1})
    assert await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) == []


@pytest.mark.parametrize(
    ("update", "argument", "error_type"),
    [
        ("cancel_run", {"actor": "ops", "reason": "r" * NEAR_LIMIT}, "CancelRefused"),
        ("decide", {"decision": "approve", "actor": "ann", "token": "t" * NEAR_LIMIT}, "DecisionRefused"),
    ],
    ids=["cancel-reason", "decide-token"],
)
async def test_an_update_argument_near_the_payload_limit_is_refused_before_history(
    client: Client, task_queue: str, worker: Worker, update: str, argument: dict[str, Any], error_type: str
) -> None:
    wait = {"id": "ok", "type": "approval", "approvers": ["ann"]}
    document = definition(unique("near"), [wait, {"id": "done", "type": "succeed", "output": {"ok": 1}}])
    handle = await start(client, task_queue, document, execution_timeout=timedelta(seconds=90))
    await eventually(lambda: status(handle), lambda s: bool(s.pending_approvals), what="the approval")
    message = await _refused(handle, update, argument, error_type)
    assert "its argument is" in message, message[:300]
    await handle.execute_update("decide", {"decision": "approve", "actor": "ann"})
    result = await handle.result()
    assert (result.state, result.output) == (RunState.COMPLETED, {"ok": 1})
    assert await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) == []


async def test_a_redrive_with_a_corrected_input_over_an_actions_output_is_accepted(
    client: Client, task_queue: str, store_worker: Worker
) -> None:
    # (A review: a first version bounded a redrive's input at an action's output, 512 KiB, and
    # refused a correction of a step whose input is larger; the decision as a whole is bounded.)
    handle = await start(client, task_queue, _parking(), execution_timeout=timedelta(seconds=90))
    await _parked(handle)
    corrected = {"value": "charged", "pad": "x" * 600_000}
    await handle.execute_update(
        "resolve_dead_letter", {"action": "redrive", "actor": "ops", "input": corrected}
    )
    result = await handle.result()
    assert (result.state, result.output) == (RunState.COMPLETED, {"ok": 1})
    assert [r.output for r in result.steps if r.id == "charge"][-1] == "charged"
    assert await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) == []
