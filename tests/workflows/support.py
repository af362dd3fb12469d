"""Helpers shared by the end-to-end workflow tests (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar
from uuid import uuid4

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError, TerminatedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, WorkflowReplayResult

from interpreter.state import CurrentStepTracking, RunInput, RunOptions, RunResult, RunState, RunStatus
from interpreter.validate import load_definition
from starter.client import query_status
from workflows.generic import RunDefinitionWorkflow

T = TypeVar("T")

Handle = WorkflowHandle[Any, RunResult]


def unique(prefix: str) -> str:
    """A definition name / id unique to this call (lower case, valid as a definition name)."""
    return f"{prefix}-{uuid4().hex[:10]}"


def definition(name: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A definition document (validated when the run starts)."""
    return {"name": name, "steps": steps, **extra}


def compensated_echo(step_id: str, value: Any, undo_id: str, undo_value: Any) -> dict[str, Any]:
    """An ``echo`` task answering ``value`` whose compensation ``undo_id`` echoes ``undo_value``."""
    return {
        "id": step_id,
        "type": "task",
        "action": "echo",
        "input": {"value": value},
        "compensate": [{"id": undo_id, "type": "task", "action": "echo", "input": {"value": undo_value}}],
    }


def counting_loop(prefix: str, var: str, turns: int) -> list[dict[str, Any]]:
    """Steps that call ``echo`` ``turns`` times, counting in ``vars.<var>`` (set it to 0 first):
    a ``goto`` loop of three steps, each bounded by ``max_visits``."""
    return [
        {
            "id": f"{prefix}_work",
            "type": "task",
            "action": "echo",
            "input": {"value": f"{{{{ vars.{var} }}}}"},
            "max_visits": turns,
        },
        {
            "id": f"{prefix}_bump",
            "type": "set",
            "vars": {var: f"{{{{ vars.{var} + 1 }}}}"},
            "max_visits": turns,
        },
        {
            "id": f"{prefix}_again",
            "type": "condition",
            "if": f"vars.{var} < {turns}",
            "then": {"goto": f"{prefix}_work"},
            "max_visits": turns,
        },
    ]


async def start(
    client: Client,
    task_queue: str,
    document: Mapping[str, Any],
    run_input: Mapping[str, Any] | None = None,
    *,
    workflow_id: str | None = None,
    track_current_step: bool = True,
    current_step: CurrentStepTracking = CurrentStepTracking.WAITS,
    engine_level: int = 0,
    **kwargs: Any,
) -> Handle:
    """Validates ``document`` and starts a run of it on ``task_queue`` (at interpreter generation
    ``engine_level``: 0, every patch asked, as a raw client's run)."""
    run = RunInput(
        definition=load_definition(dict(document)),
        input=dict(run_input or {}),
        options=RunOptions(
            track_current_step=track_current_step, current_step=current_step, engine_level=engine_level
        ),
    )
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        run,
        id=workflow_id or unique(str(document["name"])),
        task_queue=task_queue,
        # A broken test must fail, not hang on a workflow task that keeps failing.
        execution_timeout=kwargs.pop("execution_timeout", timedelta(minutes=2)),
        **kwargs,
    )


async def status(handle: Handle) -> RunStatus:
    """The run's ``status`` query, asked as the product's client asks it (again when the worker's
    replay for it failed on a busy machine: :func:`starter.client.query_status`)."""
    return await query_status(handle)


async def signal(handle: Handle, name: str, arg: Any) -> None:
    """Signals the run's chain as a careful client does: again when the server says the run it
    resolved "already completed" (a signal racing a continue-as-new can meet the closing run; the
    server refused it, so sending it again delivers it once, to the run that carries on)."""
    for attempt in range(10):
        try:
            await handle.signal(name, arg)
            return
        except RPCError as err:
            if (
                err.status != RPCStatusCode.NOT_FOUND
                or "already completed" not in err.message
                or attempt == 9
            ):
                raise
            await asyncio.sleep(0.1)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    timeout: float = 15.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Polls ``probe()`` until ``accept(value)``; fails with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(interval)


async def wait_state(handle: Handle, *states: RunState, timeout: float = 15.0) -> RunStatus:
    """Polls the status query until the run is in one of ``states``."""
    return await eventually(
        lambda: status(handle), lambda s: s.state in states, timeout=timeout, what=f"state in {states}"
    )


async def settled(*handles: Handle, step: str) -> None:
    """Waits until each run is inside ``step`` (its first workflow task is done).

    On the time-skipping server, awaiting a result unlocks time skipping: a workflow task still in
    flight then expires as virtual time jumps ahead, so wait for the runs to park on their timer first.
    """
    await asyncio.gather(
        *(
            eventually(lambda h=h: status(h), lambda s: step in s.current_steps, what=f"run inside {step!r}")
            for h in handles
        )
    )


async def start_bystander(client: Client, task_queue: str) -> Handle:
    """A run of one ``echo`` step: another tenant's run on the same worker, which must complete
    while a hostile one fails."""
    steps = [{"id": "hello", "type": "task", "action": "echo", "input": {"value": 1}}]
    return await start(client, task_queue, definition(unique("other"), steps))


async def patch_ids(client: Client, workflow_id: str, run_id: str | None = None) -> list[str]:
    """The patch marker details in the run's history (the JSON of each asked patch); the latest
    run's, or ``run_id``'s."""
    return patches_in(await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history())


def patches_in(history: WorkflowHistory) -> list[str]:
    """The patch marker details in ``history`` (the JSON of each asked patch)."""
    return [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data.decode()
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"  # not a local activity's
    ]


async def hostile_beside_a_bystander(
    client: Client,
    task_queue: str,
    document: dict[str, Any],
    run_input: dict[str, Any] | None = None,
    *,
    engine_level: int,
) -> tuple[BaseException, RunResult, list[str]]:
    """Starts a hostile run and a bystander on the same worker; the bystander completes while the
    hostile run fails: the failure's cause, the failed run's result and its patch markers."""
    hostile = await start(client, task_queue, document, run_input, engine_level=engine_level)
    other = await start_bystander(client, task_queue)
    (cause, failed), done = await asyncio.wait_for(
        asyncio.gather(failure_of(hostile), other.result()), timeout=120
    )
    assert done.state == RunState.COMPLETED
    assert failed is not None
    assert failed.state == RunState.FAILED
    return cause, failed, await patch_ids(client, hostile.id)


async def failure_of(handle: Handle) -> tuple[BaseException, RunResult | None]:
    """Awaits a run expected to fail: the failure's cause and the RunResult in its details."""
    try:
        result = await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        run_result = None
        if isinstance(cause, ApplicationError) and cause.details:
            run_result = RunResult.model_validate(cause.details[0])
        assert cause is not None
        return cause, run_result
    raise AssertionError(f"the run did not fail: {result!r}")


async def terminated_too_large(handle: WorkflowHandle[Any, Any]) -> None:
    """Awaits a run the server is expected to terminate for a workflow task completion over its
    4 MiB gRPC limit (``GrpcMessageTooLarge``): no compensation, no ``on_failure``. The finding a
    patch fixes, kept for runs of the generation before it."""
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, TerminatedError), repr(failed.value.cause)
    assert "GrpcMessageTooLarge" in str(failed.value.cause)


async def events(handle: Handle, *types: EventType.ValueType) -> list[HistoryEvent]:
    """The run's history events, optionally only of the given types."""
    history = await handle.fetch_history()
    return [e for e in history.events if not types or e.event_type in types]


async def task_failures(handle: Handle) -> list[HistoryEvent]:
    """The run's failed workflow tasks, but those the server failed as ``UnhandledCommand``: a
    completion that closed the run while a new event (an activity's result) arrived, which the
    server refuses and the worker retries with that event. On a busy machine it can happen in any
    run whose activities finish close together (a CI run met it once in a 12-call fan-out); it is
    Temporal's own retry, not a failure of the worker's code."""
    unhandled = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
    return [
        e
        for e in await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
        if e.workflow_task_failed_event_attributes.cause != unhandled
    ]


async def chain_histories(handle: WorkflowHandle[Any, Any]) -> list[WorkflowHistory]:
    """The histories of every run of the handle's workflow id that the latest run continued from
    (a run continues as new when its history grows large), oldest run first."""
    client = handle._client
    histories = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        histories.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return list(reversed(histories))
        run_id = started.continued_execution_run_id


async def chain_events(handle: Handle, *types: EventType.ValueType) -> list[HistoryEvent]:
    """The history events of every run of the handle's chain (:func:`chain_histories`), oldest
    run first."""
    return [e for h in await chain_histories(handle) for e in h.events if not types or e.event_type in types]


def record(result: RunResult | RunStatus, path: str) -> Any:
    """The (last) step record at ``path``."""
    matches = [r for r in result.steps if r.path == path]
    assert matches, f"no step record at {path!r}; have {[r.path for r in result.steps]}"
    return matches[-1]


def gaps(times: list[float]) -> list[float]:
    """Differences between consecutive timestamps."""
    return [b - a for a, b in itertools.pairwise(times)]


REPLAY_ATTEMPTS = 3
UNCHECKED_REPLAY_S = 300.0
"""How long the last attempt, without the deadlock check, may take."""


async def replay(replayer: Replayer, history: WorkflowHistory) -> WorkflowReplayResult:
    """Replays ``history``; replays it again when the failure was the SDK's deadlock check.

    That check is wall-clock (an activation that has not yielded within two seconds; the product's
    worker allows 8, ``worker.DEADLOCK_TIMEOUT_S``, which a replayer cannot be given): on a busy
    2-core box a replay's largest activation can take that long without any code being wrong. It
    says nothing of determinism, so the replay is repeated (:data:`REPLAY_ATTEMPTS` times in all),
    the last time without the check (the SDK's debug mode: beside a CI run and two probes, all
    three replays of a history whose recorded task did seconds of template work failed so); any other
    failure, a nondeterminism error above all, is returned at once.
    """
    for _ in range(REPLAY_ATTEMPTS - 1):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is None or "[TMPRL1101]" not in str(result.replay_failure):
            return result
    unchecked = Replayer(**{**replayer.config(), "debug_mode": True})

    def replay_apart() -> WorkflowReplayResult:
        return asyncio.run(unchecked.replay_workflow(history, raise_on_replay_failure=False))

    # Debug mode runs the activations on the calling thread's loop, with no check at all: a thread
    # of its own and a deadline, so a replay that never yields fails instead of hanging the suite.
    try:
        return await asyncio.wait_for(asyncio.to_thread(replay_apart), UNCHECKED_REPLAY_S)
    except TimeoutError:
        raise AssertionError(
            f"the replay did not end within {UNCHECKED_REPLAY_S:g} s without the deadlock check"
        ) from None


async def recorded_input_and_result(handle: Handle) -> tuple[dict[str, Any], bytes]:
    """The run's input as its started event holds it (parsed), and its result payload as its
    completed event holds it."""
    started = await events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    completed = await events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    run_input = started[0].workflow_execution_started_event_attributes.input.payloads[0].data
    result = completed[0].workflow_execution_completed_event_attributes.result.payloads[0].data
    return json.loads(run_input), result


async def replays_as_recorded(*handles: WorkflowHandle[Any, Any]) -> None:
    """Each handle's history replays on the product's workflows and runner without a failure."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from worker import workflow_runner
    from workflows.generic import WORKFLOWS

    replayer = Replayer(
        workflows=list(WORKFLOWS), data_converter=pydantic_data_converter, workflow_runner=workflow_runner()
    )
    for handle in handles:
        outcome = await replay(replayer, await handle.fetch_history())
        assert outcome.replay_failure is None, repr(outcome.replay_failure)


def foreach_branches(count: int, step: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """A ``parallel`` step of ``count`` branches, each a 100-item-wide ``foreach`` over
    ``input.items`` of ``step(n)``: up to ``100 * count`` of them at once."""
    branches = [
        {
            "id": f"b{n}",
            "steps": [
                {
                    "id": f"each{n}",
                    "type": "foreach",
                    "items": "input.items",
                    "concurrency": 100,
                    "steps": [step(n)],
                }
            ],
        }
        for n in range(count)
    ]
    return {"id": "all", "type": "parallel", "branches": branches}


def approvals_in_a_foreach(prefix: str) -> dict[str, Any]:
    """A definition that waits in a ``foreach`` of three approvals (branches of a join)."""
    return definition(
        unique(prefix),
        [
            {
                "id": "fan",
                "type": "foreach",
                "items": "range(3) | list",
                "steps": [{"id": "review", "type": "approval", "approvers": ["alice"]}],
            }
        ],
    )


@contextmanager
def collector_held() -> Iterator[None]:
    """The garbage collector runs only where it is called meanwhile (``gc.collect()``): a dropped
    run's coroutines are closed there."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
