"""Operator commands against real runs: ``wfa stats``, ``wfa watch``, ``wfa diagram`` and bulk
dead-letter decisions, on the dev server with the store on the embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from activities.store.database import Database
from interpreter.model import children
from interpreter.validate import load_definition
from starter.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_REFUSED, EXIT_RUN_FAILED, main
from starter.client import FlowClient
from starter.errors import InvalidInputError
from starter.operations import mermaid, run_stats, watch
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import eventually
from worker import build_worker

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LIST_WAIT_S = 60.0


@pytest_asyncio.fixture(loop_scope="session")
async def flows(client: Client, database: Database, task_queue: str) -> AsyncIterator[FlowClient]:
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(client, task_queue, http_client, session_factory=database.session_factory),
    ):
        tenant = f"ops-{uuid4().hex[:8]}"
        DATABASE_URLS[tenant] = database.url.render_as_string(hide_password=False)
        yield FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)


DATABASE_URLS: dict[str, str] = {}
"""Tenant of a test's client -> the store's URL, for the CLI's --database-url."""


def wfa(capsys: pytest.CaptureFixture[str], flows: FlowClient, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    address = flows.client.service_client.config.target_host
    code = main(
        [
            "--address",
            address,
            "--task-queue",
            flows.task_queue,
            "--tenant",
            flows.tenant,
            "--database-url",
            DATABASE_URLS[flows.tenant],
            *args,
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def flaky_flow(name: str, api: str) -> dict[str, Any]:
    """Charges a card (declined unless 'good'), after an approval when the amount is large."""
    return {
        "name": name,
        "steps": [
            {
                "id": "review",
                "type": "condition",
                "if": "input.amount > 100",
                "then": {"steps": [{"id": "ok", "type": "approval", "approvers": ["boss"]}]},
            },
            {
                "id": "charge",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{api}/charge", "json": {"card": "{{ input.card }}"}},
                "retry": {"maximum_attempts": 1},
            },
        ],
    }


def card_service(http_server: RecordingServer) -> None:
    def charge(request: Any) -> tuple[int, dict[str, str], Any]:
        card = (request.json or {}).get("card")
        return (200, {}, {"charged": True}) if card == "good" else (402, {}, {"error": "declined"})

    http_server.route("POST", "/charge", charge)


async def test_stats_count_outcomes_failing_steps_and_time_to_decision(
    flows: FlowClient, http_server: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    card_service(http_server)
    name = f"pay-{uuid4().hex[:8]}"
    definition = flaky_flow(name, http_server.url)
    for _ in range(3):
        assert (
            await flows.execute_run(definition, {"card": "good", "amount": 5}, timeout=120)
        ).state == "completed"
    for i in range(2):
        assert (
            await flows.execute_run(definition, {"card": f"bad{i}", "amount": 5}, timeout=120)
        ).state == "failed"
    waiting = await flows.start_run(definition, {"card": "good", "amount": 500})
    await eventually(
        lambda: flows.status(waiting.workflow_id), lambda s: bool(s.pending_approvals), timeout=60
    )
    await flows.approve(waiting.workflow_id, "boss")
    assert (await flows.result(waiting.workflow_id, timeout=120)).state == "completed"
    # A rehearsal is no run of the definition's: dry runs counted and raised the rate (a probe).
    rehearsal = await flows.execute_run(definition, {"card": "good", "amount": 5}, dry_run=True, timeout=120)
    assert rehearsal.state == "completed"

    stats = await eventually(
        lambda: run_stats(flows, name, timedelta(hours=1)),
        lambda s: s.closed == 6,
        timeout=LIST_WAIT_S,
        what="six closed runs in visibility",
    )
    assert stats.by_state == {"completed": 4, "failed": 2}
    assert stats.success_rate == pytest.approx(4 / 6)
    assert stats.duration_p50_s is not None
    assert stats.duration_p95_s is not None
    assert stats.duration_p95_s >= stats.duration_p50_s
    assert [(f.step, f.failures) for f in stats.failing_steps] == [("charge", 2)]
    assert stats.decisions == 1
    assert stats.decision_p50_s is not None
    assert stats.details_unavailable == 0
    assert stats.unavailable_because is None

    code, out, err = await asyncio.to_thread(wfa, capsys, flows, "stats", name, "--since", "1h", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["failing_steps"][0]["step"] == "charge"
    code, out, _ = await asyncio.to_thread(wfa, capsys, flows, "stats", name)
    assert "success rate (completed / closed): 66.7% of 6 closed" in out
    assert "charge" in out
    code, _, err = await asyncio.to_thread(wfa, capsys, flows, "stats", name, "--since", "3 fortnights")
    assert code == EXIT_BAD_INPUT
    assert "not a duration" in err


async def test_watch_follows_a_run_to_its_end(
    flows: FlowClient, http_server: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    card_service(http_server)
    definition = flaky_flow(f"watch-{uuid4().hex[:8]}", http_server.url)
    run = await flows.start_run(definition, {"card": "good", "amount": 500})
    out = io.StringIO()
    watching = asyncio.create_task(watch(flows, run.workflow_id, out, interval=0.3, timeout=120))
    # The person decides only once the watcher has shown the wait: it then shows the decision too.
    await eventually(lambda: asyncio.sleep(0, out.getvalue()), lambda text: "waiting:" in text, timeout=60)
    await flows.approve(run.workflow_id, "boss")
    status = await watching
    assert status.state == "completed"
    text = out.getvalue()
    assert "waiting: approval ok by boss" in text
    assert "approve by boss: accepted" in text
    assert "charge [task] completed" in text
    assert text.index("waiting:") < text.index("approve by boss") < text.index("charge [task] completed")

    failing = await flows.start_run(definition, {"card": "bad", "amount": 1})
    code, out, _ = await asyncio.to_thread(
        wfa, capsys, flows, "watch", failing.workflow_id, "--interval", "0.3"
    )
    assert code == EXIT_RUN_FAILED
    assert "charge [task] failed" in out


def test_diagram_of_every_example_names_every_step() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        definition = load_definition(path.read_text())
        chart = mermaid(definition)
        assert chart.startswith("flowchart TD\n")
        for step_id in step_ids(definition.steps):
            assert f'"{step_id} (' in chart, (path.name, step_id)


async def test_diagram_of_a_run_highlights_the_path_it_took(
    flows: FlowClient, http_server: RecordingServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    card_service(http_server)
    definition = flaky_flow(f"diag-{uuid4().hex[:8]}", http_server.url)
    run = await flows.start_run(definition, {"card": "bad", "amount": 1})
    assert (await flows.result(run.workflow_id, timeout=120)).state == "failed"
    file = tmp_path / "flow.json"
    file.write_text(json.dumps(definition))
    code, out, err = await asyncio.to_thread(
        wfa, capsys, flows, "diagram", str(file), "--run", run.workflow_id
    )
    assert code == EXIT_OK, err
    nodes = node_ids(out)
    assert "class " in out
    failed_line = next(
        line for line in out.splitlines() if line.strip().startswith("class ") and "failed" in line
    )
    assert nodes["charge"] in failed_line
    taken_line = next(
        line for line in out.splitlines() if line.strip().startswith("class ") and "taken" in line
    )
    assert nodes["review"] in taken_line
    assert nodes["ok"] not in taken_line  # the approval branch was not taken


async def test_a_diagram_of_a_run_is_drawn_only_from_the_definition_it_ran(
    flows: FlowClient, http_server: RecordingServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A probe: ``wfa diagram --run X`` drew the registry's ``name@version`` even when the run had
    run another body of that name and version (started from a file), highlighting a path through
    steps the run never had. It now checks the content hash the run records, with a file too."""
    card_service(http_server)
    name = f"diag-{uuid4().hex[:8]}"
    registered = flaky_flow(name, http_server.url)
    await flows.register(registered, "ann")
    ran = {**registered, "steps": [{"id": "only", "type": "set", "vars": {"x": 1}}], "output": None}
    run = await flows.start_run(ran, {})
    assert (await flows.result(run.workflow_id, timeout=120)).state == "completed"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(registered))
    for args in ((), (str(other),)):
        code, out, err = await asyncio.to_thread(
            wfa, capsys, flows, "diagram", *args, "--run", run.workflow_id
        )
        assert (code, out) == (EXIT_BAD_INPUT, ""), err
        assert f"run {run.workflow_id!r} ran {name} v1 (" in err, err  # the run's own definition
        assert f"not the {name} v1 to draw" in err, err
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(ran))
    code, out, err = await asyncio.to_thread(
        wfa, capsys, flows, "diagram", str(mine), "--run", run.workflow_id
    )
    assert code == EXIT_OK, err
    assert '"only (' in out


def step_ids(steps: Any) -> list[str]:
    found: list[str] = []
    for step in steps:
        found.append(step.id)
        for _, nested, _ in children(step):
            found.extend(step_ids(nested))
    return found


def node_ids(chart: str) -> dict[str, str]:
    """Step id -> Mermaid node id, from the node lines of a chart (``s3["charge (task)"]``)."""
    found: dict[str, str] = {}
    for line in chart.splitlines():
        match = re.match(r'^\s+(s\d+)\W+"([^" ]+) \(', line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def parking_flow(name: str, api: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {
                "id": "charge",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{api}/charge", "json": {"card": "{{ input.card }}"}},
                "retry": {"maximum_attempts": 1},
                "on_failure": "dead_letter",
            }
        ],
    }


async def test_bulk_dead_letter_decisions_count_first_then_decide_by_filter(
    flows: FlowClient, http_server: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    card_service(http_server)
    name = f"park-{uuid4().hex[:8]}"
    other = f"other-{uuid4().hex[:8]}"
    runs = [await flows.start_run(parking_flow(name, http_server.url), {"card": f"bad{i}"}) for i in range(3)]
    kept = await flows.start_run(parking_flow(other, http_server.url), {"card": "bad"})
    await eventually(
        lambda: flows.list_dead_letters("open"),
        lambda rows: len(rows) == 4,
        timeout=60,
        what="4 dead letters",
    )

    code, out, err = await asyncio.to_thread(
        wfa,
        capsys,
        flows,
        "dead-letters",
        "bulk",
        "abort",
        "--definition",
        name,
        "--actor",
        "ops",
        "--dry-run",
    )
    assert code == EXIT_OK, err
    assert out.startswith(f"3 open dead letters in tenant {flows.tenant!r} match (definition {name})")
    assert len(await flows.list_dead_letters("open")) == 4  # a dry run decides nothing

    # No terminal to ask and no --yes: refused as bad input, nothing decided.
    code, _, err = await asyncio.to_thread(
        wfa, capsys, flows, "dead-letters", "bulk", "abort", "--definition", name, "--actor", "ops"
    )
    assert code == EXIT_BAD_INPUT
    assert "--yes" in err
    assert len(await flows.list_dead_letters("open")) == 4

    code, out, err = await asyncio.to_thread(
        wfa,
        capsys,
        flows,
        "dead-letters",
        "bulk",
        "abort",
        "--definition",
        name,
        "--error-type",
        "HttpClientError",
        "--actor",
        "ops",
        "--yes",
    )
    assert code == EXIT_OK, err + out
    assert "abort: 3 decided, 0 refused" in out
    for run in runs:
        assert (await flows.result(run.workflow_id, timeout=120)).state == "failed"
    open_rows = await flows.list_dead_letters("open")
    assert [row.workflow_id for row in open_rows] == [kept.workflow_id]
    # A status the store does not know was a bare ValueError of the enum.
    with pytest.raises(
        InvalidInputError, match=r"status must be one of open, redriven, .* or all, not 'opne'"
    ):
        await flows.list_dead_letters("opne")
    with pytest.raises(InvalidInputError, match="the workflow id has a NUL character"):
        await flows.list_dead_letters("all", workflow_id="x\x00")


async def test_bulk_dead_letter_decisions_go_on_past_a_row_resolved_meanwhile(
    flows: FlowClient,
    http_server: RecordingServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A review: a row resolved between the listing and its decision (another operator, its
    # timeout) raised a store error the loop did not catch, ending the command at that row: the
    # rows after it were never decided and no summary printed. Now it is one refusal.
    import starter.operations

    card_service(http_server)
    name = f"park-{uuid4().hex[:8]}"
    for i in range(2):
        await flows.start_run(parking_flow(name, http_server.url), {"card": f"bad{i}"})
    rows = await eventually(
        lambda: flows.list_dead_letters("open"),
        lambda rows: len(rows) == 2,
        timeout=60,
        what="2 dead letters",
    )
    first = sorted(rows, key=lambda row: row.id)[0]
    await flows.abort(first.id, "another-operator")
    listed = first.model_copy(update={"status": "open"})  # as the listing saw it, a moment before
    selected = starter.operations.select_dead_letters
    monkeypatch.setattr(
        starter.operations,
        "select_dead_letters",
        lambda rows, where, now: [listed, *selected(rows, where, now)],
    )
    code, out, err = await asyncio.to_thread(
        wfa, capsys, flows, "dead-letters", "bulk", "abort", "--definition", name, "--actor", "ops", "--yes"
    )
    assert code == EXIT_REFUSED, err + out
    assert "abort: 1 decided, 1 refused" in out
    assert f"{first.id}: " in out
    # (The run records its decision in the row once it took it: a moment later.)
    await eventually(
        lambda: flows.list_dead_letters("open"), lambda rows: rows == [], timeout=60, what="no open row"
    )


async def test_a_run_ended_from_outside_reads_as_ended_and_its_dead_letter_closes(
    flows: FlowClient, http_server: RecordingServer
) -> None:
    """A probe: a run terminated while a step was parked (or while it waited for a person) still
    read as waiting in ``status`` (its replayed answer), so ``wfa watch`` waited for ever; its dead
    letter stayed open for ever, each decision refused; ``result(timeout=0)`` of a run that had
    ended long ago said it was still running, and NaN waited for ever."""
    from activities.store.models import DeadLetterStatus
    from interpreter.state import RunState
    from starter.errors import RunClosedError

    card_service(http_server)
    run = await flows.start_run(parking_flow(f"ended-{uuid4().hex[:8]}", http_server.url), {"card": "bad"})
    [row] = await eventually(
        lambda: flows.list_dead_letters("open", workflow_id=run.workflow_id),
        lambda rows: len(rows) == 1,
        timeout=60,
        what="the dead letter",
    )
    assert (await flows.status(run.workflow_id)).state == RunState.PARKED
    await flows.client.get_workflow_handle(run.workflow_id).terminate("ops: stuck for a week")
    status = await flows.status(run.workflow_id)
    assert (status.state, status.error_type) == (RunState.CANCELLED, "WorkflowTerminated")
    assert status.parked == []
    assert status.pending_approvals == []
    assert [record.id for record in status.steps] == ["charge"]  # what it did is still there
    with pytest.raises(RunClosedError, match=f"dead letter {row.id} is closed as cancelled"):
        await flows.redrive(row.id, "ops")
    closed = await flows.show_dead_letter(row.id)
    assert (closed.status, closed.resolved_by) == (DeadLetterStatus.CANCELLED, "ops")
    assert await flows.list_dead_letters("open", workflow_id=run.workflow_id) == []

    assert (await flows.result(run.workflow_id, timeout=0)).error_type == "WorkflowTerminated"
    for timeout in (float("nan"), float("inf"), -1, "5", True):
        with pytest.raises(InvalidInputError, match="timeout must be a number of seconds"):
            await flows.result(run.workflow_id, timeout=timeout)  # type: ignore[arg-type]


async def test_start_run_refuses_arguments_of_other_types_in_words(flows: FlowClient) -> None:
    """A probe: through the API an int definition or id was a TypeError or an AttributeError,
    ``""`` a folder's read error, ``dry_run="no"`` a dry run, a NUL in the task queue a run no
    worker polls, a number of 5,000 digits a run failing at once, a ``dry-run-`` business key a
    real run a dry run of the same key was then taken for."""
    plain = {"name": f"args-{uuid4().hex[:8]}", "steps": [{"id": "s", "type": "set", "vars": {"x": 1}}]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"definition": 5}, "definition must be a registered name"),
        ({"definition": ""}, "definition must be a registered name"),
        ({"workflow_id": 5}, "workflow_id must be a string, not a number"),
        ({"workflow_id": "dry-run-x"}, "may not start with 'dry-run-'"),
        ({"task_queue": "q\x00"}, "task_queue must be a name without control characters"),
        ({"task_queue": 5}, "task_queue must be a name"),
        ({"dry_run": "no"}, "dry_run must be True or False"),
        ({"id_reuse_policy": "x"}, "id_reuse_policy must be a WorkflowIDReusePolicy"),
        ({"result_steps": "bogus"}, "result_steps must be one of full, compact, none"),
        ({"input": {"n": 10**5000}}, r"the run input has a number of 16,610 bits at \$\.n"),
    ]
    for arguments, said in cases:
        call = {"definition": plain, **arguments}
        with pytest.raises(InvalidInputError, match=said):
            await flows.start_run(**call)
    listed = [run async for run in flows.client.list_workflows(f"WorkflowType = '{plain['name']}'")]
    assert listed == []  # nothing started
    dry = await flows.start_run(plain, dry_run=True, workflow_id="dry-run-x")  # a dry run may name it
    assert dry.workflow_id == "dry-run-x"


async def test_registry_calls_refuse_names_of_other_types_in_words(flows: FlowClient) -> None:
    """A probe: ``list_definitions(5)``, ``rollback(5, ...)`` and ``history(5)`` passed the database
    driver's words through, ``diff(None, 1, 2)`` said "no definition named None", ``register(5)``
    raised a TypeError."""
    from activities.store.errors import InvalidReferenceError
    from interpreter.validate import DefinitionError

    for call in (
        lambda: flows.list_definitions(5),  # type: ignore[arg-type]
        lambda: flows.rollback(5, "ops"),  # type: ignore[arg-type]
        lambda: flows.history(5),  # type: ignore[arg-type]
        lambda: flows.diff(None, 1, 2),  # type: ignore[arg-type]
        lambda: flows.history(""),
    ):
        with pytest.raises(InvalidReferenceError, match="a definition name is non-empty text"):
            await call()
    for definition in (5, None, ""):
        with pytest.raises(DefinitionError, match="a definition is a file path, JSON text"):
            await flows.register(definition, "ann")  # type: ignore[arg-type]
