"""Both test servers accept the product's search attributes: typed ones at start and upserts of each."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows.search_attributes import (
    ALL_KEYS,
    ASSIGNEES,
    AWAITING_APPROVAL,
    CLI_TYPES,
    CURRENT_STEP,
    DEFINITION_HASH,
    DEFINITION_NAME,
    DEFINITION_VERSION,
    RUN_STATE,
    TENANT,
)

AT_START: dict[str, Any] = {
    DEFINITION_NAME.name: "at-start",
    DEFINITION_VERSION.name: 1,
    DEFINITION_HASH.name: "sha256:start",
    CURRENT_STEP.name: "first",
    RUN_STATE.name: "starting",
    AWAITING_APPROVAL.name: False,
    TENANT.name: "acme",
    ASSIGNEES.name: ["user:alice", "group:finance"],
}
UPSERTED: dict[str, Any] = {
    DEFINITION_NAME.name: "upserted",
    DEFINITION_VERSION.name: 7,
    DEFINITION_HASH.name: "sha256:upserted",
    CURRENT_STEP.name: "approve",
    RUN_STATE.name: "waiting",
    AWAITING_APPROVAL.name: True,
    TENANT.name: "globex",
    ASSIGNEES.name: ["user:bob"],
}


@workflow.defn
class UpsertEverySearchAttribute:
    """Reports the search attributes it started with, upserts each key one by one, reports again."""

    @workflow.run
    async def run(self) -> dict[str, dict[str, Any]]:
        initial = {key.name: workflow.info().typed_search_attributes.get(key) for key in ALL_KEYS}
        for key in ALL_KEYS:
            workflow.upsert_search_attributes([key.value_set(UPSERTED[key.name])])
            # A timer ends the workflow task, so each upsert is committed by the server on its own.
            await workflow.sleep(timedelta(seconds=1))
        final = {key.name: workflow.info().typed_search_attributes.get(key) for key in ALL_KEYS}
        return {"initial": initial, "final": final}


async def _run_and_check(client: Client, task_queue: str) -> str:
    # Here, not at the top: the sandbox imports this module, and the worker module brings httpx.
    from worker import tolerate_slow_activations

    workflow_id = f"sa-{uuid4()}"
    start_attributes = TypedSearchAttributes(
        [SearchAttributePair(key, AT_START[key.name]) for key in ALL_KEYS]
    )
    # The product's deadlock limit: the sandbox's first activation can pass 2 s on a busy machine.
    async with tolerate_slow_activations(
        Worker(client, task_queue=task_queue, workflows=[UpsertEverySearchAttribute])
    ):
        handle = await client.start_workflow(
            UpsertEverySearchAttribute.run,
            id=workflow_id,
            task_queue=task_queue,
            search_attributes=start_attributes,
            # An unregistered attribute fails every workflow task; end the run instead of hanging.
            execution_timeout=timedelta(seconds=60),
        )
        result = await handle.result()
        assert result == {"initial": AT_START, "final": UPSERTED}
        description = await handle.describe()
    for key in ALL_KEYS:
        assert description.typed_search_attributes.get(key) == UPSERTED[key.name], key.name
    return workflow_id


async def test_dev_server_accepts_search_attributes(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    workflow_id = await _run_and_check(temporal_env.client, task_queue)

    # And they are queryable, which is what operators use in the Web UI.
    query = (
        f"WorkflowId = '{workflow_id}' AND DefinitionName = 'upserted' AND DefinitionVersion = 7 "
        "AND RunState = 'waiting' AND CurrentStep = 'approve' AND AwaitingApproval = true "
        "AND DefinitionHash = 'sha256:upserted'"
    )
    found: list[str] = []
    for _ in range(50):  # visibility is eventually consistent
        found = [execution.id async for execution in temporal_env.client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found == [workflow_id]


async def test_time_skipping_server_accepts_search_attributes(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    await _run_and_check(time_skipping_env.client, task_queue)


def test_docker_compose_registers_every_search_attribute() -> None:
    """The production stack's one-shot registration job lists exactly CLI_TYPES."""
    compose = (Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text()
    registered = dict(
        re.findall(r"^\s+([A-Za-z]+)=(Keyword|Int|Bool|Double|Datetime|Text|KeywordList)\b", compose, re.M)
    )
    assert registered == CLI_TYPES
