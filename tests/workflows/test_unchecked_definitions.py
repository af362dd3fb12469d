"""Runs started by a raw Temporal client with a definition the registry would refuse (its structure
parses, its whole-tree checks were skipped): the worker must end them in words, never leave a
workflow task failing for ever."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.model import parse_definition
from interpreter.state import ForeachBatch, RunInput, RunOptions, RunState, StepStatus
from tests.workflows.support import failure_of, record, unique, wait_state
from workflows.generic import RunDefinitionWorkflow
from workflows.search_attributes import CURRENT_STEP


async def _start_unchecked(client: Client, task_queue: str, document: dict[str, Any]) -> Any:
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(definition=parse_definition(document), options=RunOptions()),
        id=unique("unchecked"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=2),  # a stuck run fails the test rather than hang it
    )


async def test_a_task_without_any_timeout_fails_as_a_step_the_definition_handles(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """Temporal needs start_to_close or schedule_to_close on every activity; the SDK refuses to
    schedule one without, which failed the workflow task for ever."""
    document = {
        "name": unique("no-timeouts"),
        "defaults": {"timeouts": {}},
        "steps": [
            {
                "id": "tolerated",
                "type": "task",
                "action": "echo",
                "input": {"value": 1},
                "on_failure": "continue",
            },
            {
                "id": "timed",
                "type": "task",
                "action": "echo",
                "input": {"value": 2},
                "timeouts": {"start_to_close": "10s"},
            },
            {"id": "fatal", "type": "task", "action": "echo", "input": {"value": 3}},
        ],
    }
    handle = await _start_unchecked(client, task_queue, document)
    cause, result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "MissingTimeout"
    assert "'fatal'" in cause.message
    assert "start_to_close" in cause.message
    assert result is not None
    tolerated = record(result, "tolerated")
    assert (tolerated.status, tolerated.error_type) == (StepStatus.FAILED, "MissingTimeout")
    assert record(result, "timed").output == 2


async def test_a_run_input_that_is_not_one_fails_the_run_in_words(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """Under either workflow type (``RunDefinition``, or the definition's name), an input the
    worker cannot read as a run input fails the run, saying so; the SDK's own decoding failed the
    workflow task for ever."""
    for workflow_type in ("RunDefinition", unique("named")):
        for bad in ({"definition": {"name": "x"}}, "not a run input", [1, 2]):
            handle = await client.start_workflow(
                workflow_type,
                bad,
                id=unique("bad-input"),
                task_queue=task_queue,
                execution_timeout=timedelta(minutes=2),
            )
            cause, _ = await failure_of(handle)
            assert isinstance(cause, ApplicationError), (workflow_type, bad, cause)
            assert (cause.type, cause.non_retryable) == ("InvalidRunInput", True)
            assert cause.message.startswith("the run input is not a run input: ")
    # No argument at all, or two, under either type (a start of ``RunDefinition`` with two failed
    # its task for ever: the SDK called a one-argument class with both).
    for workflow_type, args in (
        ("RunDefinition", []),
        (unique("named"), []),
        (unique("named"), [{}, {}]),
        ("RunDefinition", [{}, {}]),
    ):
        handle = await client.start_workflow(
            workflow_type,
            args=args,
            id=unique("bad-arity"),
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=2),
        )
        cause, _ = await failure_of(handle)
        assert isinstance(cause, ApplicationError), (workflow_type, args, cause)
        assert cause.type == "InvalidRunInput"
        assert cause.message == f"a run takes one argument (the run input), not {len(args)}"


async def test_a_forged_fan_out_slice_fails_the_run_before_any_item(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """A run started as if it were a fanned-out foreach's child, with a slice no parent sends:
    5,000 items, all at once. It scheduled 5,000 activities in one workflow task, past the server's
    limit of pending activities per run, and the task failed on every retry."""
    document = {
        "name": unique("forged-slice"),
        "limits": {"max_step_executions": 20_000},
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": "input.numbers",
                "concurrency": 10,
                "steps": [{"id": "say", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}],
            }
        ],
    }
    for items, concurrency, problem in (
        (5000, 5000, "has 5000 items; a fanned-out foreach's child runs at most 1000"),
        (100, 100, "runs 100 items at once; its step runs at most 10 (concurrency)"),
    ):
        handle = await client.start_workflow(
            RunDefinitionWorkflow.run,
            RunInput(
                definition=parse_definition(document),
                options=RunOptions(),
                batch=ForeachBatch(
                    step_id="each", path="each", offset=0, items=list(range(items)), concurrency=concurrency
                ),
            ),
            id=unique("forged-slice"),
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=2),
        )
        cause, result = await failure_of(handle)
        assert isinstance(cause, ApplicationError), cause
        assert (cause.type, cause.message) == ("InvalidBatch", f"the foreach 'each' slice {problem}")
        assert result is not None
        assert result.steps == []


async def test_a_current_step_past_the_search_attribute_limit_is_fitted_not_fatal(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """A step path longer than Temporal's 2,048 bytes for a search attribute value (a forged slice's
    path here; deep nesting in a valid definition, or ``every_step`` tracking, reaches it too) made
    the ``CurrentStep`` upsert fail the workflow task (``BadSearchAttributes``) and the server
    terminate the run: no compensation, no message of ours. The value is now fitted."""
    path = "p" * 5000
    document = {
        "name": unique("long-current-step"),
        "steps": [
            {
                "id": "f",
                "type": "foreach",
                "items": "[1, 2]",
                "steps": [{"id": "a", "type": "approval", "approvers": ["alice"], "timeout": "1h"}],
            }
        ],
    }
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(
            definition=parse_definition(document),
            options=RunOptions(),
            batch=ForeachBatch(step_id="f", path=path, offset=0, items=[1], concurrency=1),
        ),
        id=unique("long-current-step"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=2),
    )
    seen = await wait_state(handle, RunState.AWAITING_APPROVAL, timeout=60)
    assert [p.path for p in seen.pending_approvals] == [f"{path}[0].a"]
    published = (await handle.describe()).typed_search_attributes.get(CURRENT_STEP)
    assert published is not None
    # Cut to the 255 characters the SQL visibility stores keep (patch current-step-short).
    assert published == "p" * 254 + "…"
    assert len(json.dumps(published)) <= 2048
    await handle.signal("approve", {"actor": "alice"})
    result = await handle.result()
    assert result.state == RunState.COMPLETED
