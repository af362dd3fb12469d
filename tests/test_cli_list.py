"""``wfa list`` / ``FlowClient.list_runs`` against the dev server's visibility store, and
``wfa validate --json`` on an invalid file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from uuid import uuid4

import pytest
from temporalio.client import Client

from starter.cli import EXIT_BAD_INPUT, EXIT_OK, main
from starter.client import FlowClient
from starter.errors import InvalidInputError
from tests.workflows.support import eventually

LIST_WAIT_S = 60.0
"""How long visibility may take to show a change (eventually consistent; a hang detector)."""


def wfa(capsys: pytest.CaptureFixture[str], flows: FlowClient, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    address = flows.client.service_client.config.target_host
    code = main(["--address", address, "--task-queue", flows.task_queue, "--tenant", flows.tenant, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_list_filters_runs_of_the_tenant(
    client: Client, task_queue: str, worker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = uuid4().hex[:8]
    acme = FlowClient(client, task_queue=task_queue, tenant=f"acme-{marker}")
    other = FlowClient(client, task_queue=task_queue, tenant=f"other-{marker}")
    waits = {"name": f"wait-{marker}", "steps": [{"id": "ok", "type": "approval", "approvers": ["boss"]}]}
    quick = {"name": f"quick-{marker}", "steps": [{"id": "s", "type": "set", "vars": {"x": 1}}]}
    waiting = await acme.start_run(waits, workflow_id=f"wait-{marker}")
    done = await acme.execute_run(quick, workflow_id=f"quick-{marker}", timeout=60)
    assert done.state == "completed"
    # A rehearsal: listed only when asked for (it used to be listed among the runs).
    rehearsal = await acme.execute_run(quick, workflow_id=f"quick-{marker}", dry_run=True, timeout=60)
    assert rehearsal.state == "completed"
    await other.start_run(waits, workflow_id=f"other-wait-{marker}")

    runs = await eventually(
        lambda: acme.list_runs(awaiting_approval=True),
        lambda found: [r.workflow_id for r in found] == [waiting.workflow_id],
        timeout=LIST_WAIT_S,
        interval=0.2,
    )
    assert (runs[0].definition, runs[0].version, runs[0].state, runs[0].tenant) == (
        f"wait-{marker}",
        1,
        "awaiting_approval",
        acme.tenant,
    )
    await eventually(
        lambda: acme.list_runs(state="completed"),
        lambda found: [r.workflow_id for r in found] == [f"quick-{marker}"],
        timeout=LIST_WAIT_S,
        interval=0.2,
    )
    assert [r.workflow_id for r in await acme.list_runs(definition=f"quick-{marker}", version=1)] == [
        f"quick-{marker}"
    ]
    assert await acme.list_runs(definition=f"quick-{marker}", version=2) == []
    assert {r.workflow_id for r in await acme.list_runs()} == {waiting.workflow_id, f"quick-{marker}"}
    await eventually(
        lambda: acme.list_runs(dry_runs=True, state="completed"),
        lambda found: [r.workflow_id for r in found] == [f"dry-run-quick-{marker}"],
        timeout=LIST_WAIT_S,
        interval=0.2,
    )
    code, out, _ = await asyncio.to_thread(wfa, capsys, acme, "list", "--dry-runs", "--json")
    assert [(r["workflow_id"], r["state"]) for r in json.loads(out)] == [
        (f"dry-run-quick-{marker}", "completed")
    ]
    code, out, _ = await asyncio.to_thread(wfa, capsys, other, "list", "--dry-runs")
    assert (code, out.strip()) == (EXIT_OK, f"no dry runs in tenant {other.tenant!r} match")
    assert [r.workflow_id for r in await other.list_runs()] == [f"other-wait-{marker}"]

    code, out, err = await asyncio.to_thread(
        wfa, capsys, acme, "list", "--state", "awaiting_approval", "--json"
    )
    assert code == EXIT_OK, err
    assert [r["workflow_id"] for r in json.loads(out)] == [waiting.workflow_id]
    code, out, _ = await asyncio.to_thread(wfa, capsys, acme, "list", "--definition", f"quick-{marker}")
    assert code == EXIT_OK
    header, row = out.splitlines()
    assert header.split()[:3] == ["RUN", "DEFINITION", "STATE"]
    assert row.split()[:4] == [f"quick-{marker}", f"quick-{marker}", "v1", "completed"]
    code, out, _ = await asyncio.to_thread(wfa, capsys, other, "list", "--definition", f"quick-{marker}")
    assert (code, out.strip()) == (EXIT_OK, f"no runs in tenant {other.tenant!r} match")

    # Cancelled through Temporal: the workflow never recorded a final state; the list says cancelled.
    await client.get_workflow_handle(waiting.workflow_id).terminate("test")
    await eventually(
        lambda: acme.list_runs(state="cancelled"),
        lambda found: [r.workflow_id for r in found] == [waiting.workflow_id],
        timeout=LIST_WAIT_S,
        interval=0.2,
    )
    with pytest.raises(InvalidInputError):
        await acme.list_runs(definition="x' OR DefinitionName != '")
    with pytest.raises(InvalidInputError):
        await acme.list_runs(state="sleeping")
    with pytest.raises(InvalidInputError, match="dry_runs must be"):
        await acme.list_runs(dry_runs="yes")  # type: ignore[arg-type]


def test_validate_json_prints_the_problems_of_an_invalid_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"name": "bad", "steps": [{"id": "p", "type": "delay", "duration": "3 fortnights"}]})
    )
    code = main(["validate", str(bad), "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_BAD_INPUT
    document = json.loads(out)
    assert (document["valid"], document["file"]) == (False, str(bad))
    assert [p["path"] for p in document["problems"]] == ["$.steps[0].duration"]
    code = main(["validate", str(tmp_path / "missing.json"), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == EXIT_BAD_INPUT
    assert document["problems"] == [
        {"path": "$", "message": f"definition file not found: {tmp_path / 'missing.json'}"}
    ]
