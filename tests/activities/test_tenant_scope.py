"""The worker's tenant scope at the activities: a run's tenant must belong to the namespace the
activity runs in, and be one of the worker's tenants, before anything is resolved, sent or recorded.

The activities run in the SDK's ``ActivityEnvironment`` with the namespace set as the server would
set it; the whole path (a dev server, namespaces, ``worker.py``) is ``tests/test_namespaces.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dead_letters import DeadLetterActivities
from activities.echo import echo
from activities.http import HttpActions
from activities.outbound import OutboundPolicy, build_http_client
from activities.run_control import priority_granted
from activities.secrets import FileSecretStore, Secret, configure_secret_store, configure_tenant_scope
from interpreter.actions import ActionRequest
from interpreter.state import DeadLetterAction, DeadLetterRecord, DeadLetterResolution
from starter.tenancy import WorkerScope
from tests.helpers.http_server import RecordingServer
from workflows.priority import PRIORITY_TENANTS_ENV

ENV = {"WFA_TENANT_NAMESPACES": "acme=ns-a,globex=ns-b", "WFA_WORKER_TENANTS": "acme,globex"}


@pytest.fixture(autouse=True)
def scope() -> Iterator[WorkerScope]:
    worker_scope = WorkerScope.from_env(ENV)
    configure_tenant_scope(worker_scope)
    configure_secret_store(FileSecretStore({"acme": {"TOKEN": Secret("acme-secret")}, "globex": {}}))
    yield worker_scope
    configure_tenant_scope(None)
    configure_secret_store(None)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(OutboundPolicy.loopback()) as shared:
        yield shared


def _in(namespace: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, namespace=namespace, workflow_namespace=namespace)
    return env


async def _refused(env: ActivityEnvironment, fn: Any, arg: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await env.run(fn, arg)
    assert info.value.type == "TenantRefused"
    assert info.value.non_retryable
    return info.value


async def test_a_run_claiming_another_tenant_resolves_nothing_and_sends_nothing(
    client: httpx.AsyncClient,
) -> None:
    with RecordingServer() as server:
        request = ActionRequest(
            step_id="steal",
            idempotency_key="k",
            tenant="acme",
            input={"method": "POST", "url": f"{server.url}/x", "json": {"t": "${secret:TOKEN}"}},
        )
        error = await _refused(_in("ns-b"), HttpActions(client).http, request)
        assert "tenant 'acme' does not belong to namespace 'ns-b'" in error.message
        assert "acme-secret" not in str(error)
        assert server.requests() == []
        # The same request in acme's own namespace goes out, with the secret.
        result = await _in("ns-a").run(HttpActions(client).http, request)
        assert result.output["status_code"] == 200, result.output
        assert server.requests()[0].json == {"t": "acme-secret"}


async def test_a_namespace_the_worker_does_not_serve_and_a_tenant_it_does_not_hold() -> None:
    request = ActionRequest(step_id="s", idempotency_key="k", tenant="initech", input={"value": 1})
    assert "does not serve namespace 'ns-c'" in (await _refused(_in("ns-c"), echo, request)).message
    only_acme = WorkerScope.from_env({**ENV, "WFA_WORKER_TENANTS": "acme"})
    configure_tenant_scope(only_acme)
    globex = request.model_copy(update={"tenant": "globex"})
    assert "does not serve namespace 'ns-b'" in (await _refused(_in("ns-b"), echo, globex)).message
    shared = WorkerScope.from_env({"WFA_WORKER_TENANTS": "acme"})  # one namespace, tenants named
    configure_tenant_scope(shared)
    assert "not served by this worker" in (await _refused(_in("default"), echo, globex)).message
    acme = request.model_copy(update={"tenant": "acme"})
    assert (await _in("default").run(echo, acme)).output == 1


async def test_dead_letters_of_another_tenant_are_neither_recorded_nor_resolved() -> None:
    # The refusal comes before the database: no session factory is needed to prove it.
    store = DeadLetterActivities(session_factory=None)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    record = DeadLetterRecord(
        tenant="acme",
        workflow_id="w",
        run_id="r",
        definition="d",
        version=1,
        park_id="p",
        step_id="s",
        path="steps.s",
        action="echo",
        input={},
        error="boom",
        error_type="Boom",
        attempts=1,
        parked_at=now,
    )
    await _refused(_in("ns-b"), store.park, record)
    resolution = DeadLetterResolution(
        dead_letter_id=1, tenant="acme", action=DeadLetterAction.ABORT, actor="ops", resolved_at=now
    )
    await _refused(_in("ns-b"), store.resolve, resolution)


async def test_a_run_claiming_a_granted_tenant_outside_its_namespace_gets_no_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``acme`` is granted priorities above the default; a run in ``ns-b`` that claims to be
    ``acme`` (its starter's claim) is not, nor is a tenant the worker does not serve."""
    monkeypatch.setenv(PRIORITY_TENANTS_ENV, "acme,initech")
    assert await _in("ns-a").run(priority_granted, "acme") is True
    assert await _in("ns-b").run(priority_granted, "acme") is False
    assert await _in("ns-b").run(priority_granted, "globex") is False  # in its namespace, not granted
    assert await _in("ns-c").run(priority_granted, "initech") is False  # granted, not served here
    configure_tenant_scope(None)  # no scope (one namespace, tenants not named): the list alone
    assert await _in("default").run(priority_granted, "acme") is True
