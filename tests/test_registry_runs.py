"""Runs started from the definition registry on the dev server: by name (the active version) and by
``name@N``, with the definition's name, version and hash in the search attributes (the memo says
where it came from: what the attributes hold is not repeated there, each field a payload); a
run stays pinned to its version when another is activated mid-run; a tenant cannot start another
tenant's definitions. Also the registry's CLI (``wfa definitions``, ``wfa db``, ``wfa dead-letters``).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.dead_letters import DeadLetterActivities
from activities.store.database import Database, head_revision
from activities.store.errors import (
    DeadLetterResolvedError,
    DefinitionNotFoundError,
    VersionArchivedError,
    VersionNotFoundError,
)
from interpreter.state import DeadLetterAction, DeadLetterRecord, DeadLetterResolution, RunState
from starter.cli import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, main
from starter.client import FlowClient, is_registry_ref
from starter.errors import DefinitionFileNotFoundError, RunAlreadyExistsError, RunNotFoundError
from tests.conftest import fresh_database
from workflows.search_attributes import DEFINITION_HASH, DEFINITION_NAME, DEFINITION_VERSION, TENANT

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def unique(prefix: str = "reg") -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def marked(name: str, marker: str, *, approval: bool = False) -> dict[str, Any]:
    """A definition whose output says which body ran (and which version the run was started as)."""
    steps: list[dict[str, Any]] = []
    if approval:
        steps.append({"id": "ok", "type": "approval", "approvers": ["manager"]})
    steps.append(
        {"id": "done", "type": "succeed", "output": {"marker": marker, "version": "{{ run.version }}"}}
    )
    return {"name": name, "steps": steps}


async def wait_for_approval(flows: FlowClient, workflow_id: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (await flows.status(workflow_id)).pending_approvals:
        assert time.monotonic() < deadline, f"no approval pending after {timeout}s"
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------------- references


def test_which_strings_are_registry_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert is_registry_ref("intervention")
    assert is_registry_ref("lead-nurture@3")
    assert not is_registry_ref("missing.json")  # a mistyped file still says "file not found"
    assert not is_registry_ref("examples/intervention")
    assert not is_registry_ref('{"name": "x"}')
    assert not is_registry_ref("Not A Name")
    assert not is_registry_ref(Path("intervention"))
    (tmp_path / "local").write_text("{}")
    assert not is_registry_ref("local")  # an existing file wins


# ------------------------------------------------------------------------------------- starting


async def test_start_by_name_and_by_pinned_version(
    flows: FlowClient, client: Client, store_worker: Worker, tenant: str
) -> None:
    name = unique()
    first = await flows.register(marked(name, "one"), author="ann")
    second = await flows.register(marked(name, "two"), author="bob")
    assert (first.info.version, second.info.version, second.active_version) == (1, 2, 1)

    by_name = await flows.start_run(name)
    pinned = await flows.start_run(f"{name}@2")
    assert (by_name.definition, by_name.version, by_name.definition_hash) == (
        name,
        1,
        first.info.content_hash,
    )
    assert (pinned.version, pinned.definition_hash) == (2, second.info.content_hash)

    assert (await by_name.result(timeout=30)).output == {"marker": "one", "version": 1}
    assert (await pinned.result(timeout=30)).output == {"marker": "two", "version": 2}

    description = await flows.describe(pinned.workflow_id)
    assert await description.memo() == {"source": "registry"}
    attributes = description.typed_search_attributes
    assert attributes.get(TENANT) == tenant
    assert attributes.get(DEFINITION_NAME) == name
    assert attributes.get(DEFINITION_VERSION) == 2
    assert attributes.get(DEFINITION_HASH) == second.info.content_hash
    assert attributes.get(TENANT) == tenant

    # Operators find the runs of a version in the Web UI (visibility is eventually consistent).
    query = f'DefinitionName = "{name}" AND DefinitionVersion = 2 AND Tenant = "{tenant}"'
    deadline = time.monotonic() + 15
    while not (found := [w.id async for w in client.list_workflows(query)]):
        assert time.monotonic() < deadline, f"no run found for {query}"
        await asyncio.sleep(0.2)
    assert found == [pinned.workflow_id]


async def test_a_run_keeps_its_version_when_another_is_activated_mid_run(
    flows: FlowClient, store_worker: Worker
) -> None:
    name = unique()
    await flows.register(marked(name, "one", approval=True), author="ann")
    run = await flows.start_run(name, workflow_id=unique("pinned"))
    assert run.version == 1
    await wait_for_approval(flows, run.workflow_id)

    v2 = await flows.register(marked(name, "two", approval=True), author="bob", activate=True)
    assert (v2.info.version, v2.activated) == (2, True)
    await flows.approve(run.workflow_id, "manager")
    result = await flows.result(run.workflow_id, timeout=30)
    assert result.state == RunState.COMPLETED
    assert result.output == {"marker": "one", "version": 1}  # finished as v1
    assert (await flows.status(run.workflow_id)).version == 1

    later = await flows.start_run(name)
    assert later.version == 2
    await wait_for_approval(flows, later.workflow_id)
    await flows.approve(later.workflow_id, "manager")
    assert (await later.result(timeout=30)).output == {"marker": "two", "version": 2}

    await flows.rollback(name, actor="ops")
    assert (await flows.resolve(name)).version == 1


async def test_a_retried_start_finds_its_run_after_its_version_was_archived(
    client: Client, task_queue: str, database: Database, flows: FlowClient, store_worker: Worker
) -> None:
    """A service retries ``start name@1 --id K`` (its first answer was lost) after v1 was archived
    and v2 activated: it gets the run it started, not "archived" (exit 5 before: a probe)."""
    name = unique()
    await flows.register(marked(name, "one", approval=True), author="ann")
    key = unique("order")
    first = await flows.start_run(f"{name}@1", workflow_id=key)
    await flows.register(marked(name, "two", approval=True), author="bob", activate=True)
    await flows.archive(name, 1, actor="ops")
    again = await flows.start_run(f"{name}@1", workflow_id=key)
    assert (again.started, again.run_id, again.version, again.definition_hash) == (
        False,
        first.run_id,
        1,
        first.definition_hash,
    )
    await flows.deactivate(name, actor="ops")  # by name, with no active version: the same
    assert (await flows.start_run(name, workflow_id=key)).run_id == first.run_id
    # Not for another id, another version, another tenant's run, or a dry run: the error stands.
    with pytest.raises(VersionArchivedError):
        await flows.start_run(f"{name}@1", workflow_id=unique("order"))
    await flows.archive(name, 2, actor="ops")
    with pytest.raises(VersionArchivedError):
        await flows.start_run(f"{name}@2", workflow_id=key)
    other = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("b"))
    await other.register(marked(name, "b's"), author="bob")
    await other.register(marked(name, "b's too"), author="bob", activate=True)
    await other.archive(name, 1, actor="ops")
    with pytest.raises(VersionArchivedError):
        await other.start_run(f"{name}@1", workflow_id=key)
    with pytest.raises(VersionArchivedError):
        await flows.start_run(f"{name}@1", workflow_id=key, dry_run=True)
    await flows.approve(key, "manager")
    assert (await first.result(timeout=30)).output == {"marker": "one", "version": 1}
    with pytest.raises(VersionArchivedError):  # the run has ended: a new start would need v1
        await flows.start_run(f"{name}@1", workflow_id=key)


async def test_a_tenant_can_neither_read_nor_start_another_tenants_definitions(
    client: Client, task_queue: str, database: Database, store_worker: Worker
) -> None:
    a = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("a"))
    b = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("b"))
    name = unique()
    await a.register(marked(name, "a's"), author="ann")

    for ref in (name, f"{name}@1"):
        with pytest.raises(
            DefinitionNotFoundError, match=f"no definition named '{name}' in tenant '{b.tenant}'"
        ):
            await b.start_run(ref)
    with pytest.raises(DefinitionNotFoundError):
        await b.show_definition(name)
    with pytest.raises(DefinitionNotFoundError):
        await b.list_definitions(name)
    assert await b.list_definitions() == []

    run = await a.start_run(name)
    assert (await run.result(timeout=30)).output["marker"] == "a's"
    assert (await a.describe(run.workflow_id)).typed_search_attributes.get(TENANT) == a.tenant


async def test_a_tenant_cannot_see_or_touch_another_tenants_runs(
    client: Client, task_queue: str, database: Database, store_worker: Worker
) -> None:
    a = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("a"))
    b = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("b"))
    name = unique()
    await a.register(marked(name, "a's", approval=True), author="ann")
    await b.register(marked(name, "b's", approval=True), author="bob")
    key = unique("order")
    run = await a.start_run(name, workflow_id=key)
    for operation in (
        b.describe(key),
        b.status(key),
        b.result(key, timeout=5),
        b.approve(key, "manager"),
        b.reject(key, "manager", wait=False),
        b.cancel(key, "mallory"),
    ):
        with pytest.raises(RunNotFoundError):
            await operation
    # The same business key in another tenant is refused, not handed a's run.
    with pytest.raises(RunAlreadyExistsError, match=f"the workflow id '{key}' is in use"):
        await b.start_run(name, workflow_id=key)
    await a.approve(key, "manager")
    assert (await run.result(timeout=30)).output["marker"] == "a's"


async def test_start_errors_name_the_problem(flows: FlowClient, tmp_path: Path) -> None:
    name = unique()
    await flows.register(marked(name, "one"), author="ann")
    await flows.register(marked(name, "two"), author="ann", activate=True)
    await flows.archive(name, 1, actor="ops")
    with pytest.raises(
        DefinitionNotFoundError, match=f"no definition named 'nope' in tenant '{flows.tenant}'"
    ):
        await flows.start_run("nope")
    with pytest.raises(VersionNotFoundError, match=r"has no version 9 \(versions 1 to 2\)"):
        await flows.start_run(f"{name}@9")
    with pytest.raises(VersionArchivedError, match="archived: it cannot be started"):
        await flows.start_run(f"{name}@1")
    with pytest.raises(DefinitionFileNotFoundError):
        await flows.start_run(str(tmp_path / "nope.json"))


async def test_client_registry_operations(flows: FlowClient) -> None:
    registered = await flows.register(EXAMPLES / "intervention.json", author="ann")
    assert (registered.info.name, registered.info.version, registered.created) == ("intervention", 1, True)
    again = await flows.register(str(EXAMPLES / "intervention.json"), author="ann")
    assert again.created is False
    document = json.loads((EXAMPLES / "intervention.json").read_text())
    document["description"] = "changed"
    await flows.register(document, author="bob")
    assert '+  "description": "changed",' in await flows.diff("intervention", 1, 2)
    assert (await flows.activate("intervention", 2, actor="ops")).changed
    assert [v.version for v in await flows.list_definitions("intervention")] == [1, 2]
    assert (await flows.show_definition("intervention")).version == 2
    assert (await flows.rollback("intervention", actor="ops")).version == 1
    assert (await flows.archive("intervention", 2, actor="ops")).archived_at is not None
    assert [e.kind.value for e in await flows.history("intervention")] == [
        "register",
        "activate",
        "register",
        "activate",
        "rollback",
        "archive",
    ]


# ---------------------------------------------------------------------------- dead letters (client)


async def test_deciding_a_resolved_or_orphaned_dead_letter(flows: FlowClient, database: Database) -> None:
    activities = DeadLetterActivities(database.session_factory)
    record = DeadLetterRecord(
        tenant=flows.tenant,
        workflow_id=unique("gone"),
        run_id=str(uuid4()),
        definition="order",
        version=1,
        park_id="charge",
        step_id="charge",
        path="charge",
        action="http",
        input={},
        error="boom",
        error_type="HttpServerError",
        attempts=3,
        parked_at=datetime.now(UTC),
    )
    row_id = await activities.park(record)
    assert [r.id for r in await flows.list_dead_letters()] == [row_id]
    assert (await flows.show_dead_letter(row_id)).park_id == "charge"
    with pytest.raises(RunNotFoundError):  # the row's run does not exist on this server
        await flows.skip(row_id, "ops", {"charged": False})
    await activities.resolve(
        DeadLetterResolution(
            dead_letter_id=row_id,
            tenant=flows.tenant,
            action=DeadLetterAction.ABORT,
            actor="ops",
            resolved_at=datetime.now(UTC),
        )
    )
    with pytest.raises(DeadLetterResolvedError, match=f"dead letter {row_id} is already aborted by ops"):
        await flows.redrive(row_id, "ops")


# -------------------------------------------------------------------------------------------- CLI


class Wfa:
    """Runs ``wfa`` in-process (in a thread: it runs its own event loop) and captures its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str], *prefix: str) -> None:
        self._capsys = capsys
        self._prefix = list(prefix)

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = await asyncio.to_thread(main, [*self._prefix, *args])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def wfa(
    capsys: pytest.CaptureFixture[str],
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tenant: str,
) -> Wfa:
    address = temporal_env.client.service_client.config.target_host
    return Wfa(
        capsys,
        "--address",
        address,
        "--task-queue",
        task_queue,
        "--database-url",
        database_url,
        "--tenant",
        tenant,
    )


async def test_cli_definitions(wfa: Wfa, tmp_path: Path, store_worker: Worker) -> None:
    name = unique()
    v1, v2 = tmp_path / "v1.json", tmp_path / "v2.json"
    v1.write_text(json.dumps(marked(name, "one")))
    v2.write_text(json.dumps(marked(name, "two")))

    code, out, err = await wfa("definitions", "register", str(v1), "--author", "ann")
    assert (code, err) == (EXIT_OK, "")
    assert f"Registered {name} v1" in out
    assert f"v1 is now the active version of {name}" in out
    code, out, _ = await wfa("definitions", "register", str(v1), "--author", "ann")
    assert f"{name} v1 has the same body" in out
    assert "nothing stored" in out
    code, out, _ = await wfa("definitions", "register", str(v2), "--author", "bob", "--json")
    registration = json.loads(out)
    assert (registration["info"]["version"], registration["created"], registration["active_version"]) == (
        2,
        True,
        1,
    )

    code, out, _ = await wfa("definitions", "list")
    assert code == EXIT_OK
    assert out.splitlines()[0].split() == [
        "NAME",
        "ACTIVE",
        "LATEST",
        "VERSIONS",
        "ARCHIVED",
        "CHANGED",
        "BY",
    ]
    assert out.splitlines()[1].split()[:5] == [name, "v1", "v2", "2", "0"]
    code, out, _ = await wfa("definitions", "list", name)
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["v1", "active"],
        ["v2", registration["info"]["content_hash"][:12]],
    ]

    code, out, _ = await wfa("definitions", "show", f"{name}@2")
    assert code == EXIT_OK
    assert f"{name} v2" in out
    body = json.loads(out[out.index("{") :])
    assert body["version"] == 2
    assert body["steps"][0]["output"]["marker"] == "two"

    code, out, _ = await wfa("definitions", "diff", name, "1", "2")
    assert code == EXIT_OK
    assert out.startswith(f"--- {name}@1\n+++ {name}@2\n")
    assert '-        "marker": "one",' in out
    assert '+        "marker": "two",' in out

    code, out, _ = await wfa("definitions", "activate", name, "2", "--actor", "ops")
    assert (code, out.strip()) == (
        EXIT_OK,
        f"Activated {name} v2 (was v1); runs already going keep their version",
    )

    code, out, _ = await wfa("start", name, "--wait", "--json")
    started = json.loads(out)
    assert (code, started["version"], started["result"]["output"]["marker"]) == (EXIT_OK, 2, "two")
    code, out, _ = await wfa("start", f"{name}@1", "--wait", "--json")
    assert json.loads(out)["result"]["output"] == {"marker": "one", "version": 1}

    code, out, _ = await wfa("definitions", "rollback", name, "--actor", "ops")
    assert (code, out.strip()) == (EXIT_OK, f"Rolled back {name} to v1 (was v2)")
    code, out, _ = await wfa("definitions", "archive", name, "2", "--actor", "ops")
    assert (code, out.strip()) == (EXIT_OK, f"Archived {name} v2: it can no longer be activated or started")


async def test_cli_errors_and_exit_codes(wfa: Wfa, tmp_path: Path, tenant: str) -> None:
    name = unique()
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(marked(name, "one")))
    assert (await wfa("definitions", "register", str(path), "--author", "ann"))[0] == EXIT_OK

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": name, "steps": [{"id": "a", "type": "task", "action": "smtp"}]}))
    code, out, err = await wfa("definitions", "register", str(bad), "--author", "ann")
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert "$.steps[0].action: unknown action 'smtp'" in err
    code, _, err = await wfa("definitions", "register", str(tmp_path / "nope.json"), "--author", "ann")
    assert code == EXIT_BAD_INPUT
    assert "definition file not found" in err
    code, _, err = await wfa("definitions", "show", "Bad Name")
    assert code == EXIT_BAD_INPUT
    assert "invalid definition reference" in err
    code, _, err = await wfa("definitions", "diff", name, "1", "x")
    assert code == EXIT_BAD_INPUT
    for command in (["definitions", "list"], ["start", name], ["dead-letters", "list"]):
        code, _, err = await wfa("--tenant", "", *command)
        assert code == EXIT_BAD_INPUT
        assert "invalid tenant ''" in err

    code, _, err = await wfa("definitions", "show", "nope")
    assert (code, err.strip()) == (
        EXIT_NOT_FOUND,
        f"wfa definitions show: no definition named 'nope' in tenant '{tenant}'",
    )
    code, _, err = await wfa("definitions", "show", f"{name}@3")
    assert code == EXIT_NOT_FOUND
    assert f"'{name}' in tenant '{tenant}' has no version 3 (versions 1 to 1)" in err
    code, _, err = await wfa("--tenant", "someone-else", "definitions", "show", name)
    assert code == EXIT_NOT_FOUND
    assert "in tenant 'someone-else'" in err
    code, _, err = await wfa("start", f"{name}@3")
    assert code == EXIT_NOT_FOUND
    code, _, err = await wfa("definitions", "archive", name, "1")
    assert code == EXIT_REFUSED
    assert "is the active version" in err
    code, _, err = await wfa("definitions", "rollback", name)
    assert code == EXIT_REFUSED
    assert "cannot roll back" in err

    code, out, _ = await wfa("dead-letters", "list")
    assert (code, out.strip()) == (EXIT_OK, f"no open dead letters in tenant '{tenant}'")
    code, _, err = await wfa("dead-letters", "show", "987654321")
    assert (code, err.strip()) == (
        EXIT_NOT_FOUND,
        f"wfa dead-letters show: no dead letter with id 987654321 in tenant '{tenant}'",
    )
    code, _, err = await wfa("dead-letters", "skip", "987654321", "--output", "{not json")
    assert code == EXIT_BAD_INPUT
    assert "--output is not valid JSON" in err


async def test_cli_database_problems(capsys: pytest.CaptureFixture[str], postgres_server_url: str) -> None:
    wfa = Wfa(capsys)
    code, _, err = await wfa(
        "--database-url", "postgresql://ops:hunter2@127.0.0.1:1/app", "definitions", "list"
    )
    assert code == EXIT_UNAVAILABLE
    assert "cannot reach the PostgreSQL server at postgresql+asyncpg://ops:***@127.0.0.1:1/app" in err
    assert "hunter2" not in err
    async with fresh_database(postgres_server_url, "wfa_cli", migrate=False) as url:
        code, _, err = await wfa("--database-url", url, "definitions", "list")
        assert code == EXIT_UNAVAILABLE
        assert "has no schema (migrations were never applied); run `wfa db upgrade`" in err
        code, out, _ = await wfa("--database-url", url, "db", "upgrade")
        assert code == EXIT_OK
        assert f"is at revision {head_revision()}" in out
        code, out, _ = await wfa("--database-url", url, "definitions", "list")
        assert (code, out.strip()) == (EXIT_OK, "no definitions in tenant 'default'")
