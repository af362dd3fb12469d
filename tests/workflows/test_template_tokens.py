"""A run whose definition's templates hold more tokens than a worker compiles for a run fails before
its first step, none compiled (found by an attacker's probe: reading a definition compiles every
template in it, and 1.5 MB of ``{{ input.a }}x`` held a worker's workflow task for 16 s, once for
every such definition). Started by a raw client, as an attacker would (``FlowClient`` refuses the
definition before it starts anything), on the dev server with the real worker: the run fails in
words, its status says so, and another run on the same worker completes meanwhile."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.state import RunState
from interpreter.validate import DefinitionError
from starter.client import FlowClient
from tests.workflows.support import definition, failure_of, patch_ids, start_bystander, unique
from workflows.generic import ENGINE_LEVEL, PATCH_TEMPLATE_TOKENS, WORKFLOW_NAME, RunDefinitionWorkflow

ATTACK = "{{ input.a }}x" * 107_000  # 1.5 MB, 642,000 tokens


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 0], ids=["this-generation", "patch-asked"])
async def test_a_definition_of_too_many_template_tokens_fails_the_run_before_its_first_step(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    document = definition(
        unique("tokens"),
        [
            {"id": "long", "type": "set", "vars": {"x": ATTACK}},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": 1}},
        ],
    )
    hostile = await client.start_workflow(
        WORKFLOW_NAME,
        {"definition": document, "input": {"a": 1}, "options": {"engine_level": level}},
        id=unique("tokens"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=2),  # a stuck run fails the test rather than hang it
    )
    other = await start_bystander(client, task_queue)
    (cause, _), done = await asyncio.wait_for(
        asyncio.gather(failure_of(hostile), other.result()), timeout=120
    )
    assert done.state == RunState.COMPLETED
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable) == ("InvalidRunInput", True)
    assert "hold more than 10,000 tokens together" in cause.message
    markers = await patch_ids(client, hostile.id)
    assert (f'"{PATCH_TEMPLATE_TOKENS}"' in " ".join(markers)) == (level == 0)
    history = await hostile.fetch_history()
    assert not [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    status = await client.get_workflow_handle(hostile.id).query(RunDefinitionWorkflow.status)
    assert status.state == RunState.FAILED  # (its placeholder answered "running" before)
    assert status.error_type == "InvalidRunInput"


async def test_flow_client_refuses_it_before_starting_anything(client: Client, task_queue: str) -> None:
    flows = FlowClient(client, task_queue=task_queue)
    document = definition(unique("tokens"), [{"id": "long", "type": "set", "vars": {"x": ATTACK}}])
    with pytest.raises(DefinitionError, match="hold more than 10,000 tokens together"):
        await flows.start_run(document, {"a": 1})


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 0], ids=["this-generation", "patch-asked"])
async def test_a_forged_continuation_whose_compensations_hold_too_many_tokens_fails_the_run(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    """The compensations a continue-as-new snapshot carries are steps, read as the run starts: a raw
    client's snapshot holding one of 1 MB of templates took 15 s and 1.1 GB to read (a review of
    the bound). Read bounded like the definition, it fails the run in words."""
    step = {"type": "task", "id": "c", "action": "echo", "input": {"v": "{{ input.a }}x" * 75_000}}
    continuation = {
        "version": 1,
        "started_at": "2026-01-01T00:00:00Z",
        "position": 0,
        "compensations": [{"step": step, "path": "c", "scope": {"root": True}}],
    }
    document = definition(
        unique("forged"), [{"id": "hello", "type": "task", "action": "echo", "input": {"value": 1}}]
    )
    hostile = await client.start_workflow(
        WORKFLOW_NAME,
        {
            "definition": document,
            "input": {"a": 1},
            "options": {"engine_level": level},
            "continuation": continuation,
        },
        id=unique("forged"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=2),
    )
    cause, _ = await asyncio.wait_for(failure_of(hostile), timeout=120)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ContinuationError"
    assert "template error in '{{ input.a }}x" in cause.message  # (the rest of it clipped)
    markers = await patch_ids(client, hostile.id)
    assert (f'"{PATCH_TEMPLATE_TOKENS}"' in " ".join(markers)) == (level == 0)
