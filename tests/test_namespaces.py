"""One namespace per tenant, as the attacker sees it, on a real dev server and real worker.py processes.

The dev server has no authorizer, so it cannot refuse tenant B's credentials in A's namespace (on a
production server a namespace-scoped API key or an mTLS identity does: see the README's trust
model). What the local stack must prove, and this module does:

- the client, ``wfa --tenant`` and the worker agree on where a tenant's runs live;
- from tenant B's namespace, A's runs do not exist (describe, status, result, list, approve, cancel,
  raw signals, queries, updates, cancellation, termination, history: not found);
- a worker of B's namespace never receives A's tasks;
- a run started in B's namespace claiming to be tenant A cannot resolve A's secrets, even on a
  worker process holding the secrets of both (refused before anything is resolved or sent).

Each cross-tenant attempt is counted; the module asserts "0 of N succeeded".
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from interpreter.state import RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from starter.client import FlowClient
from starter.devserver import ensure_search_attributes, find_temporal_cli
from starter.errors import InvalidInputError, RunNotFoundError
from starter.tenancy import (
    Tenancy,
    TenancyConfigError,
    WorkerScope,
    connect_config,
)
from tests.helpers.http_server import RecordingServer
from tests.helpers.wfa_process import run_wfa, wfa_env
from tests.helpers.worker_process import spawn_worker
from tests.workflows.support import unique, wait_state
from workflows.generic import RunDefinitionWorkflow

ROOT = Path(__file__).resolve().parents[1]

ACME_CANARY = 'acme-token-" \\ é +/=?&'


# ------------------------------------------------------------------------------ the mapping alone


def test_default_is_one_namespace_for_every_tenant() -> None:
    tenancy = Tenancy.from_env({})
    assert not tenancy.isolated
    assert {tenancy.namespace_of(t) for t in ("default", "acme", "globex")} == {"default"}
    assert Tenancy.from_env({"TEMPORAL_NAMESPACE": "shared"}).namespace_of("acme") == "shared"


def test_explicit_and_per_tenant_namespaces() -> None:
    tenancy = Tenancy.from_env(
        {"WFA_TENANT_NAMESPACES": " acme=acme-prod , globex=globex", "TEMPORAL_NAMESPACE": "shared"}
    )
    assert tenancy.isolated
    assert tenancy.namespace_of("acme") == "acme-prod"
    assert tenancy.namespace_of("initech") == "shared"  # unmapped: the shared namespace
    per_tenant = Tenancy.from_env({"WFA_NAMESPACE_PER_TENANT": "1", "WFA_TENANT_NAMESPACES": "acme=a1"})
    assert per_tenant.namespace_of("acme") == "a1"
    assert per_tenant.namespace_of("initech") == "initech"
    assert per_tenant.namespace_of("default") == "default"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"WFA_TENANT_NAMESPACES": "acme"}, "is not tenant=namespace"),
        ({"WFA_TENANT_NAMESPACES": "acme=a,acme=b"}, "mapped twice"),
        ({"WFA_TENANT_NAMESPACES": "ac me=a"}, "is not a tenant name"),
        ({"WFA_TENANT_NAMESPACES": "acme=a/b"}, "is not a namespace name"),
        ({"WFA_NAMESPACE_PER_TENANT": "maybe"}, "is neither 1 nor 0"),
        ({"WFA_WORKER_TENANTS": "acme,bad name"}, "is not a tenant name"),
    ],
)
def test_malformed_configuration_is_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(TenancyConfigError, match=words):
        WorkerScope.from_env(env)


def test_worker_scope_refuses_a_tenant_outside_its_namespace_or_its_tenants() -> None:
    env = {"WFA_TENANT_NAMESPACES": "acme=ns-a,globex=ns-b,initech=ns-b", "WFA_WORKER_TENANTS": "globex"}
    scope = WorkerScope.from_env(env)
    assert scope.namespaces == ("ns-b",)
    assert scope.refusal("globex", "ns-b") is None
    assert "does not belong to namespace 'ns-b'" in (scope.refusal("acme", "ns-b") or "")
    assert "not served by this worker" in (scope.refusal("initech", "ns-b") or "")
    assert "does not serve namespace 'ns-a'" in (scope.refusal("acme", "ns-a") or "")
    # Single namespace, tenants named: the list bounds whose secrets the worker resolves.
    single = WorkerScope.from_env({"WFA_WORKER_TENANTS": "acme"})
    assert single.namespaces == ("default",)
    assert single.refusal("acme", "default") is None
    assert single.refusal("globex", "default") is not None
    # Single namespace, no tenants named: every tenant (the deployment before namespaces).
    assert WorkerScope.from_env({}).refusal("anyone", "default") is None


def test_per_tenant_allowances_need_a_namespace_of_the_tenants_own() -> None:
    env = {
        "WFA_TENANT_NAMESPACES": "acme=ns-a,globex=ns-b",
        "WFA_WORKER_TENANTS": "acme,globex",
        "WFA_TENANT_OUTBOUND_ALLOW": "acme=10.1.0.0/16, crm.acme.internal",
    }
    assert WorkerScope.from_env(env).allowances(env) == {
        "ns-a": ["10.1.0.0/16", "crm.acme.internal"],
        "ns-b": [],
    }
    shared = {**env, "WFA_TENANT_NAMESPACES": ""}
    with pytest.raises(TenancyConfigError, match="shares namespace 'default' with globex"):
        WorkerScope.from_env(shared).allowances(shared)
    foreign = {**env, "WFA_WORKER_TENANTS": "globex"}
    with pytest.raises(TenancyConfigError, match="not one of this worker's tenants"):
        WorkerScope.from_env(foreign).allowances(foreign)


def test_a_tenants_profile_selects_its_credentials(tmp_path: Path) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.default]\naddress = "127.0.0.1:7233"\n'
        '[profile.acme]\naddress = "acme.example:7233"\nnamespace = "ns-a"\napi_key = "key-a"\n'
    )
    tenancy = Tenancy.from_env({"WFA_TENANT_NAMESPACES": "acme=ns-a,globex=ns-b"})
    env = {"TEMPORAL_CONFIG_FILE": str(config)}
    acme = connect_config("acme", tenancy, env)
    assert (acme["target_host"], acme["namespace"], acme["api_key"]) == ("acme.example:7233", "ns-a", "key-a")
    globex = connect_config("globex", tenancy, env)  # no profile of its own: the default, no key
    assert (globex["target_host"], globex["namespace"], globex.get("api_key")) == (
        "127.0.0.1:7233",
        "ns-b",
        None,
    )
    moved = Tenancy.from_env({"WFA_TENANT_NAMESPACES": "acme=ns-x"})
    with pytest.raises(TenancyConfigError, match="names namespace 'ns-a'"):
        connect_config("acme", moved, env)
    with pytest.raises(TenancyConfigError, match="no such file"):
        connect_config("acme", tenancy, {"TEMPORAL_CONFIG_FILE": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"WFA_NAMESPACE_PER_TENANT": "maybe"}, "WFA_NAMESPACE_PER_TENANT: 'maybe' is neither 1 nor 0"),
        (
            {"WFA_WORKER_TENANTS": "acme,globex", "WFA_TENANT_OUTBOUND_ALLOW": "acme=10.0.0.0/8"},
            "shares namespace 'default' with globex",
        ),
        ({"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}, "no such file"),
    ],
)
def test_worker_refuses_a_tenancy_it_cannot_honour(env: dict[str, str], words: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WFA_", "TEMPORAL_"))}
    # Nothing listens there: the configuration is refused before any connection is tried.
    done = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env={**base, "TEMPORAL_ADDRESS": "127.0.0.1:9", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- on the dev server


async def _create_namespace(address: str, namespace: str) -> Client:
    proc = await asyncio.create_subprocess_exec(
        find_temporal_cli(),
        "operator",
        "namespace",
        "create",
        "--namespace",
        namespace,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")
    client = await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)
    # The frontend learns of a new namespace from its cache's next refresh.
    for _ in range(300):
        try:
            await ensure_search_attributes(client, namespace)
            await client.count_workflows()
            return client
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"namespace {namespace} never became usable")


class Stack:
    """Two tenants in two namespaces of one dev server."""

    def __init__(self, address: str, ns_a: str, ns_b: str, client_a: Client, client_b: Client) -> None:
        self.address = address
        self.ns_a, self.ns_b = ns_a, ns_b
        self.client_a, self.client_b = client_a, client_b
        self.env = {"WFA_TENANT_NAMESPACES": f"acme={ns_a},globex={ns_b}"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(temporal_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    address = temporal_env.client.service_client.config.target_host
    suffix = uuid4().hex[:8]
    ns_a, ns_b = f"acme-{suffix}", f"globex-{suffix}"
    client_a = await _create_namespace(address, ns_a)
    client_b = await _create_namespace(address, ns_b)
    yield Stack(address, ns_a, ns_b, client_a, client_b)


@pytest.fixture
def tenancy_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TEMPORAL_ADDRESS", stack.address)
    monkeypatch.delenv("TEMPORAL_NAMESPACE", raising=False)
    monkeypatch.delenv("TEMPORAL_CONFIG_FILE", raising=False)
    return stack


def _worker(
    stack: Stack, task_queue: str, tenants: str, secrets: Path, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **stack.env,
        "TEMPORAL_ADDRESS": stack.address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "WFA_WORKER_TENANTS": tenants,
        "WFA_SECRETS_FILE": str(secrets),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("TEMPORAL_NAMESPACE", None)
    env.pop("DATABASE_URL", None)
    return spawn_worker(env, log)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    secrets = tmp_path / "secrets.json"
    # Both tenants' secrets in the file: what keeps a run of one from the other's is the scope.
    secrets.write_text(json.dumps({"acme": {"ACME_TOKEN": ACME_CANARY}, "globex": {"GLOBEX_TOKEN": "g"}}))

    def start(stack: Stack, task_queue: str, tenants: str, **extra: str) -> subprocess.Popen[bytes]:
        proc = _worker(stack, task_queue, tenants, secrets, tmp_path / f"worker-{len(started)}.log", **extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _approval(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "hello", "type": "task", "action": "echo", "input": {"value": "hi"}},
            {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
        ],
    }


async def _started_workflow_tasks(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)


async def test_the_client_and_wfa_put_each_tenant_in_its_namespace(
    tenancy_env: Stack, task_queue: str, tmp_path: Path
) -> None:
    stack = tenancy_env
    acme = await FlowClient.connect(tenant="acme", task_queue=task_queue)
    globex = await FlowClient.connect(tenant="globex", task_queue=task_queue)
    assert (acme.namespace, globex.namespace) == (stack.ns_a, stack.ns_b)
    run_id = unique("acme-run")
    await acme.start_run(_approval(unique("mapped")), workflow_id=run_id)
    assert (await stack.client_a.get_workflow_handle(run_id).describe()).id == run_id
    with pytest.raises(RPCError) as missing:
        await stack.client_b.get_workflow_handle(run_id).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND

    # `--tenant` picks the namespace (and nothing else): A's run is found as acme, not as globex.
    env = wfa_env(stack.address, task_queue, **stack.env)
    env.pop("TEMPORAL_NAMESPACE", None)
    as_acme = await run_wfa("--tenant", "acme", "list", env=env)
    assert as_acme.code == 0, as_acme.describe()
    assert run_id in as_acme.out
    as_globex = await run_wfa("--tenant", "globex", "list", env=env)
    assert as_globex.code == 0, as_globex.describe()
    assert run_id not in as_globex.out
    not_found = await run_wfa("--tenant", "globex", "status", run_id, env=env)
    assert not_found.code == 4, not_found.describe()
    assert stack.ns_b in not_found.err
    # A tenant's namespace cannot be swapped for another's on the command line or the API.
    swapped = await run_wfa("--tenant", "acme", "--namespace", stack.ns_b, "status", run_id, env=env)
    assert swapped.code == 2, swapped.describe()
    assert f"lives in namespace '{stack.ns_a}'" in swapped.err
    with pytest.raises(InvalidInputError, match="lives in namespace"):
        await FlowClient.connect(tenant="acme", namespace=stack.ns_b)
    with pytest.raises(InvalidInputError, match="lives in namespace"):
        FlowClient(stack.client_b, tenant="acme")
    await stack.client_a.get_workflow_handle(run_id).terminate("test over")


async def test_tenant_b_cannot_reach_tenant_a(
    tenancy_env: Stack,
    task_queue: str,
    workers: Callable[..., subprocess.Popen[bytes]],
    http_server: RecordingServer,
    tmp_path: Path,
) -> None:
    stack = tenancy_env
    attempts: list[tuple[str, bool]] = []  # (what, succeeded)

    # A worker of globex only, then a run of each tenant on the same task queue name.
    workers(stack, task_queue, "globex")
    acme = await FlowClient.connect(tenant="acme", task_queue=task_queue)
    globex = await FlowClient.connect(tenant="globex", task_queue=task_queue)
    a_id, b_id = unique("acme-run"), unique("globex-run")
    await acme.start_run(_approval(unique("isolated")), workflow_id=a_id)
    await globex.start_run(_approval(unique("isolated")), workflow_id=b_id)
    await wait_state(stack.client_b.get_workflow_handle(b_id), RunState.AWAITING_APPROVAL, timeout=60)
    # B's run, started after A's, has been served; A's never reached B's worker.
    a_tasks = await _started_workflow_tasks(stack.client_a, a_id)
    attempts.append(("globex's worker takes a task of acme's run", a_tasks > 0))

    # Through the project's client of tenant globex.
    async def refused(what: str, call: Any, *errors: type[BaseException]) -> None:
        try:
            await call
        except errors:
            attempts.append((what, False))
        else:
            attempts.append((what, True))

    await refused("client: describe", globex.describe(a_id), RunNotFoundError)
    await refused("client: status", globex.status(a_id), RunNotFoundError)
    await refused("client: result", globex.result(a_id, timeout=5), RunNotFoundError)
    await refused("client: approve", globex.approve(a_id, "alice"), RunNotFoundError)
    await refused("client: reject", globex.reject(a_id, "alice"), RunNotFoundError)
    await refused("client: cancel", globex.cancel(a_id, "alice"), RunNotFoundError)
    listed = [run.workflow_id for run in await globex.list_runs()]
    attempts.append(("client: list", a_id in listed))

    # Through a raw Temporal client of globex's namespace.
    handle = stack.client_b.get_workflow_handle(a_id)
    raw = RPCError
    await refused("raw: describe", handle.describe(), raw)
    await refused("raw: query status", handle.query(RunDefinitionWorkflow.status), raw)
    await refused("raw: signal approve", handle.signal("approve", "alice"), raw)
    await refused(
        "raw: update decide", handle.execute_update("decide", {"decision": "approve", "actor": "alice"}), raw
    )
    await refused("raw: cancel", handle.cancel(), raw)
    await refused("raw: terminate", handle.terminate("mine now"), raw)
    await refused("raw: history", handle.fetch_history(), raw)
    a_description = await stack.client_a.get_workflow_handle(a_id).describe()
    attempts.append(
        ("A's run touched from B", a_description.status is None or a_description.status.name != "RUNNING")
    )

    # The CLI as tenant globex.
    env = wfa_env(stack.address, task_queue, **stack.env)
    env.pop("TEMPORAL_NAMESPACE", None)
    for args in (
        ("status", a_id),
        ("approve", a_id, "--actor", "alice"),
        ("cancel", a_id, "--actor", "alice"),
    ):
        outcome = await run_wfa("--tenant", "globex", *args, env=env)
        assert outcome.clean, outcome.describe()
        attempts.append((f"wfa --tenant globex {args[0]}", outcome.code != 4))

    # A run in globex's namespace claiming to be acme, on a worker holding both tenants' secrets
    # and serving both namespaces; loopback is an allowance of acme's alone.
    workers(
        stack,
        task_queue,
        "acme,globex",
        WFA_TENANT_OUTBOUND_ALLOW="acme=127.0.0.0/8",
        # The process's figures, split between its two namespaces' workers (worker.per_namespace).
        WFA_WORKFLOW_TASK_SLOTS="8",
        WFA_MAX_CACHED_RUNS="100",
    )
    server_url = http_server.url
    claim = RunInput(
        definition=load_definition(
            {
                "name": unique("claim"),
                "steps": [
                    {
                        "id": "steal",
                        "type": "task",
                        "action": "http",
                        "input": {
                            "method": "POST",
                            "url": f"{server_url}/steal",
                            "json": {"t": "${secret:ACME_TOKEN}"},
                        },
                        "retry": {"maximum_attempts": 1},
                    }
                ],
            }
        ),
        input={},
        options=RunOptions(tenant="acme"),
    )
    claimed = await stack.client_b.start_workflow(
        RunDefinitionWorkflow.run, claim, id=unique("claim"), task_queue=task_queue
    )
    try:
        outcome = await asyncio.wait_for(claimed.result(), 60)
    except WorkflowFailureError as err:
        outcome = err
    result_text = (
        json.dumps(outcome.model_dump(mode="json"))
        if hasattr(outcome, "model_dump")
        else f"{outcome} {outcome.__cause__} {getattr(outcome.__cause__, '__cause__', '')}"
    )
    print(result_text[:2000])
    attempts.append(
        (
            "a run of globex's namespace claiming acme resolves acme's secret",
            "TenantRefused" not in result_text,
        )
    )
    attempts.append(("... and reaches the network", bool(http_server.requests())))
    history = await claimed.fetch_history()
    assert ACME_CANARY not in json.dumps([str(e) for e in history.events])

    # Globex's own run cannot reach acme's allowance; acme's run, on the same worker, can.
    http_server.route("POST", "/internal", [(200, {}, {"ok": True})])
    reach = {
        "name": unique("reach"),
        "steps": [
            {
                "id": "call",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{server_url}/internal", "json": {}},
                "retry": {"maximum_attempts": 1},
            }
        ],
    }
    from_b = await (await globex.start_run(reach)).result(timeout=60)
    attempts.append(("globex's run reaches acme's allowance", from_b.state != RunState.FAILED))
    assert "OutboundRefused" in json.dumps(from_b.model_dump(mode="json")), from_b
    assert not http_server.requests("POST", "/internal")
    from_a = await (await acme.start_run(reach)).result(timeout=60)
    assert from_a.state == RunState.COMPLETED, from_a
    assert len(http_server.requests("POST", "/internal")) == 1

    # A's run, meanwhile, reached acme's side of the worker and waits as it should.
    await wait_state(stack.client_a.get_workflow_handle(a_id), RunState.AWAITING_APPROVAL, timeout=60)
    await acme.client.get_workflow_handle(a_id).terminate("test over")
    await globex.client.get_workflow_handle(b_id).terminate("test over")
    # One process serving two namespaces runs 8 workflow tasks at once and caches 100 runs in all,
    # not 8 and 100 in each.
    both = (tmp_path / "worker-1.log").read_text()
    for namespace in (stack.ns_a, stack.ns_b):
        assert f"(namespace {namespace}, tenants" in both, both[-3000:]
    assert (
        both.count("workflow task slots 4, cached runs 50; the process's 8 and 100 shared by 2 namespaces")
        == 2
    )

    succeeded = [what for what, ok in attempts if ok]
    print(f"cross-tenant attempts: {len(succeeded)} of {len(attempts)} succeeded")
    assert not succeeded, f"{len(succeeded)} of {len(attempts)} succeeded: {succeeded}"
