"""Runs that wait for people are found by the inbox whichever way they started.

The inbox finds work through the ``WfaAssignees`` search attribute, which a run keeps only when its
options say so (``RunOptions.publish_assignees``). Every start path of the product goes through
``FlowClient.run_start`` (which sets it) or inherits the options of a run that did: ``start_run``
(CLI, gateway webhooks, events and row-change triggers, the demo), the registry's Temporal Schedules,
a ``subflow`` step's child (the parent's options) and continue-as-new (the run's own options). Here,
on a real server and store: a scheduled run, a run started by a signed webhook delivery to the
gateway and a subflow's child, each waiting for an approval, are listed by the inbox's own query
for the approver.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any
from uuid import uuid4

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.store.database import Database
from gateway.config import GatewayConfig
from gateway.inbox.auth import Person
from gateway.inbox.router import find_work
from interpreter.state import RunState
from starter.client import FlowClient
from tests.gateway.support import running_gateway, standard_headers
from tests.workflows.support import eventually
from workflows.search_attributes import ASSIGNEES


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def _approval(approver: str) -> dict[str, Any]:
    return {
        "id": "sign_off",
        "type": "approval",
        "approvers": [approver],
        "message": "Sign off",
        "timeout": "1h",
    }


async def _listed_for(flows: FlowClient, person: Person, run_id: str) -> bool:
    return any(item.run == run_id for item in (await find_work(flows, person, 50)).items)


async def _waiting(flows: FlowClient, name: str) -> str:
    """The id of the one run of ``name`` once it waits for an approval."""

    async def runs() -> list[Any]:
        return [
            r
            for r in await flows.list_runs(definition=name, limit=10)
            if r.state == RunState.AWAITING_APPROVAL
        ]

    found = await eventually(runs, lambda rs: len(rs) == 1, timeout=60, what=f"a run of {name} waiting")
    run_id: str = found[0].workflow_id
    return run_id


async def test_a_scheduled_run_waiting_for_a_person_is_in_the_inbox(
    client: Client, task_queue: str, database: Database, store_worker: Worker
) -> None:
    tenant = _unique("tenant")
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    name = _unique("nightly-review")
    document = {
        "name": name,
        "triggers": [{"type": "schedule", "id": "nightly", "every": "24h"}],
        "steps": [_approval("alice")],
    }
    await flows.register(document, author="ann")
    try:
        await eventually(
            lambda: flows.list_schedules(name), lambda s: len(s) == 1, timeout=30, what="schedule"
        )
        await flows.trigger_schedule(name)
        run_id = await _waiting(flows, name)
        description = await client.get_workflow_handle(run_id).describe()
        assert list(description.typed_search_attributes.get(ASSIGNEES) or []) == ["user:alice"]
        alice = Person(tenant, "alice")
        await eventually(lambda: _listed_for(flows, alice, run_id), bool, timeout=30, what="in alice's inbox")
        await client.get_workflow_handle(run_id).terminate("test over")
    finally:
        for schedule in await flows.list_schedules(name):
            await client.get_schedule_handle(schedule.id).delete()


async def test_a_subflows_child_waiting_for_a_person_is_in_the_inbox(
    client: Client, task_queue: str, database: Database, store_worker: Worker
) -> None:
    tenant = _unique("tenant")
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    child, parent = _unique("sign-off"), _unique("onboarding")
    await flows.register({"name": child, "steps": [_approval("group:hr")]}, author="ann")
    await flows.register(
        {"name": parent, "steps": [{"id": "hr", "type": "subflow", "definition": child}]}, author="ann"
    )
    started = await flows.start_run(parent, {})
    child_id = await _waiting(flows, child)
    description = await client.get_workflow_handle(child_id).describe()
    assert list(description.typed_search_attributes.get(ASSIGNEES) or []) == ["group:hr"]
    member = Person(tenant, "bob", groups=("hr",))
    await eventually(lambda: _listed_for(flows, member, child_id), bool, timeout=30, what="in bob's inbox")
    await flows.approve(child_id, "bob", groups=["hr"])
    result = await started.result(timeout=60)
    assert result.state == RunState.COMPLETED


async def test_a_webhook_started_run_waiting_for_a_person_is_in_the_inbox(
    client: Client,
    task_queue: str,
    database: Database,
    database_url: str,
    store_worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    monkeypatch.setenv("WFA_SECRET_INBOX_HOOK_KEY", secret)
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant="default")
    name = _unique("purchase-request")
    await flows.register(
        {
            "name": name,
            "triggers": [{"type": "webhook", "id": "in", "secret": "INBOX_HOOK_KEY"}],
            "steps": [_approval("alice")],
        },
        author="ann",
    )
    config = GatewayConfig(
        tenants=("default",),
        address=client.service_client.config.target_host,
        database_url=database_url,
        task_queue=task_queue,
    )
    body = json.dumps({"item": "laptop"}).encode()
    async with running_gateway(config) as url, httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(
            f"{url}/hooks/default/{name}/in",
            content=body,
            headers=standard_headers(secret, body, _unique("msg")),
        )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["workflow_id"]
    assert await _waiting(flows, name) == run_id
    alice = Person("default", "alice")
    await eventually(lambda: _listed_for(flows, alice, run_id), bool, timeout=30, what="in alice's inbox")
    await client.get_workflow_handle(run_id).terminate("test over")
