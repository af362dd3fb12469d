"""A run is pinned to its definition by its content hash: the run input carries the definition in
compact form (without the fields that hold their default), the worker fills the defaults back in
and the generic workflow checks the result against the ``DefinitionHash`` the run was started with.

Attacker first: a run whose input is not the definition its hash names is refused before any step;
a registry row altered after the start does not change a running run; a tenant cannot start
another tenant's definition. Then: the old input shape (every default written out) still runs, and
the compact shape reads back to the same definition for every example.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.store.database import Database
from activities.store.errors import DefinitionNotFoundError
from interpreter.state import Decision, RunInput, RunResult, RunState
from interpreter.validate import definition_hash, load_definition
from starter.client import FlowClient
from tests.property.support import checks
from tests.property.test_definitions import valid
from workflows.generic import WORKFLOW_NAME, RunDefinitionWorkflow
from workflows.search_attributes import DEFINITION_HASH, DEFINITION_NAME, DEFINITION_VERSION

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def echo_chain(name: str, marker: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "a", "type": "task", "action": "echo", "input": {"value": marker}},
            {"id": "done", "type": "succeed", "output": {"marker": "{{ steps.a.output }}"}},
        ],
    }


def identity(doc_hash: str, name: str, version: int = 1) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(DEFINITION_NAME, name),
            SearchAttributePair(DEFINITION_VERSION, version),
            SearchAttributePair(DEFINITION_HASH, doc_hash),
        ]
    )


# ------------------------------------------------------------------------------------ attacker


async def test_an_input_other_than_the_pinned_definition_is_refused_before_any_step(
    client: Client, task_queue: str, worker: Worker
) -> None:
    name = unique("forged")
    pinned = load_definition(echo_chain(name, "pinned"))
    forged = load_definition(echo_chain(name, "forged"))
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(definition=forged, input={}),
        id=unique("forged-run"),
        task_queue=task_queue,
        search_attributes=identity(definition_hash(pinned), name),
        execution_timeout=timedelta(minutes=2),
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "DefinitionHashMismatch"
    assert definition_hash(pinned)[:16] in cause.message
    history = await handle.fetch_history()
    kinds = {e.event_type for e in history.events}
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds  # no step ran


async def test_a_full_input_whose_defaults_were_edited_is_refused(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """The old input shape spells every default out: changing one (here the retry attempts of every
    task) is a different definition, whatever the search attributes claim."""
    name = unique("edited")
    pinned = load_definition(echo_chain(name, "x"))
    full = RunInput(definition=pinned).model_dump(mode="json")
    full["definition"] = pinned.model_dump(mode="json")
    full["definition"]["defaults"]["retry"]["maximum_attempts"] = 9
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        full,
        id=unique("edited-run"),
        task_queue=task_queue,
        search_attributes=identity(definition_hash(pinned), name),
        result_type=RunResult,
        execution_timeout=timedelta(minutes=2),
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "DefinitionHashMismatch"


async def test_registry_row_altered_after_start_does_not_change_the_run(
    client: Client, task_queue: str, database: Database, store_worker: Worker
) -> None:
    tenant, name = unique("tenant"), unique("altered")
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    doc = {
        "name": name,
        "steps": [
            {"id": "ok", "type": "approval", "approvers": ["manager"]},
            {"id": "done", "type": "succeed", "output": {"marker": "registered"}},
        ],
    }
    registered = await flows.register(doc, author="ann")
    run = await flows.start_run(name)
    assert run.definition_hash == registered.info.content_hash
    handle = client.get_workflow_handle(run.workflow_id, result_type=RunResult)
    # Someone with write access to the database rewrites the stored body mid-run.
    tampered = json.loads(json.dumps(doc))
    tampered["steps"][1]["output"] = {"marker": "tampered"}
    tampered.pop("name")
    async with database.session_factory() as session, session.begin():
        changed = await session.execute(
            text("UPDATE definitions SET body = CAST(:body AS jsonb) WHERE tenant = :t AND name = :n"),
            {"body": json.dumps(tampered), "t": tenant, "n": name},
        )
        assert changed.rowcount == 1  # type: ignore[attr-defined]
    status = await flows.status(run.workflow_id)
    for _ in range(200):
        if status.pending_approvals:
            break
        status = await flows.status(run.workflow_id)
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="manager"))
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"marker": "registered"}


async def test_another_tenants_definition_cannot_be_started(
    client: Client, task_queue: str, database: Database
) -> None:
    owner = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("owner"))
    other = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("other"))
    name = unique("private")
    await owner.register(echo_chain(name, "mine"), author="ann")
    with pytest.raises(DefinitionNotFoundError):
        await other.start_run(name)


# ----------------------------------------------------------------------------- compatibility


async def test_the_old_full_input_shape_still_runs(client: Client, task_queue: str, worker: Worker) -> None:
    name = unique("full")
    pinned = load_definition(echo_chain(name, "old shape"))
    full = RunInput(definition=pinned, input={}).model_dump(mode="json")
    full["definition"] = pinned.model_dump(mode="json")  # every default written out
    result = await client.execute_workflow(
        WORKFLOW_NAME,
        full,
        id=unique("full-run"),
        task_queue=task_queue,
        search_attributes=identity(definition_hash(pinned), name),
        result_type=RunResult,
        execution_timeout=timedelta(minutes=2),
    )
    assert result.state == RunState.COMPLETED
    assert result.output == {"marker": "old shape"}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_the_compact_input_reads_back_to_the_same_definition(path: Path) -> None:
    definition = load_definition(json.loads(path.read_text()))
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([RunInput(definition=definition, input={"n": 1})])
    [back] = converter.from_payloads([payload], [RunInput])
    assert isinstance(back, RunInput)
    assert back.definition == definition
    assert definition_hash(back.definition) == definition_hash(definition)
    full = len(json.dumps(definition.model_dump(mode="json"), separators=(",", ":")))
    assert len(payload.data) < full  # the defaults do not travel


@checks(150)
@given(valid())
def test_the_compact_input_reads_back_for_generated_definitions(
    case: tuple[str, list[str], dict[str, Any]],
) -> None:
    """Examples changed at random (labels, loops, set steps, retries, delays, guards): the compact
    form always reads back to the same definition, hash included."""
    _, _, document = case
    definition = load_definition(document)
    converter = pydantic_data_converter.payload_converter
    [back] = converter.from_payloads(converter.to_payloads([RunInput(definition=definition)]), [RunInput])
    assert isinstance(back, RunInput)
    assert back.definition == definition
    assert definition_hash(back.definition) == definition_hash(definition)
