"""Dead letters end to end: a real run parks, its dead letter row is in PostgreSQL, and an operator's
redrive, skip or abort (through the client API) resolves it in the same run; a park without a
decision times out as the definition says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities import build_activities
from activities.dead_letters import build_store_activities
from activities.store.database import Database
from activities.store.errors import DeadLetterResolvedError
from activities.store.models import DeadLetterStatus
from interpreter.state import RunState, StepStatus
from starter.client import FlowClient
from starter.errors import DecisionRefusedError
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import eventually, record, unique
from worker import build_worker, tolerate_slow_activations, workflow_runner
from workflows.generic import WORKFLOWS


@pytest_asyncio.fixture(loop_scope="session")
async def flows(client: Client, database: Database, task_queue: str) -> AsyncIterator[FlowClient]:
    """A client with the store, and a worker serving the dead-letter activities."""
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(client, task_queue, http_client, session_factory=database.session_factory),
    ):
        yield FlowClient(client, task_queue=task_queue, database=database, tenant="acme")


def payment_flow(api: str, **charge: Any) -> dict[str, Any]:
    return {
        "name": unique("payment"),
        "steps": [
            {
                "id": "reserve",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{api}/reserve"},
                "compensate": [
                    {
                        "id": "release",
                        "type": "task",
                        "action": "http",
                        "input": {"method": "POST", "url": f"{api}/release"},
                    }
                ],
            },
            {
                "id": "charge",
                "type": "task",
                "action": "http",
                "input": {"method": "POST", "url": f"{api}/charge", "json": {"card": "{{ input.card }}"}},
                "retry": {"maximum_attempts": 2, "preset": "constant", "initial_interval": "1s"},
                "on_failure": "dead_letter",
                **charge,
            },
            {"id": "done", "type": "succeed", "output": {"charge": "{{ steps.charge.output }}"}},
        ],
    }


def card_service(http_server: RecordingServer) -> None:
    """/charge declines any card but 'good' (a non-retryable 402), like a real payment service."""

    def charge(request: Any) -> tuple[int, dict[str, str], Any]:
        card = (request.json or {}).get("card")
        if card == "good":
            return 200, {}, {"charge_id": "ch-1"}
        return 402, {}, {"error": f"card {card} declined"}

    http_server.route("POST", "/charge", charge)


async def parked_row(flows: FlowClient, workflow_id: str) -> Any:
    rows = await eventually(
        lambda: flows.list_dead_letters(workflow_id=workflow_id),
        lambda found: len(found) == 1,
        timeout=30,
        what="the dead letter row",
    )
    return rows[0]


async def test_a_failed_step_parks_and_redrive_with_corrected_input_finishes_the_run(
    flows: FlowClient, http_server: RecordingServer
) -> None:
    card_service(http_server)
    run = await flows.start_run(payment_flow(http_server.url), {"card": "expired"})
    row = await parked_row(flows, run.workflow_id)
    assert (row.tenant, row.step_id, row.error_type, row.attempts, row.status) == (
        "acme",
        "charge",
        "HttpClientError",
        1,  # a 402 is not retried
        DeadLetterStatus.OPEN,
    )
    assert row.input["json"] == {"card": "expired"}
    status = await flows.status(run.workflow_id)
    assert status.state == RunState.PARKED
    assert [p.dead_letter_id for p in status.parked] == [row.id]

    corrected = {**row.input, "json": {"card": "good"}}
    await flows.redrive(row.id, "ops-alice", corrected, reason="customer updated the card")
    result = await flows.result(run.workflow_id, timeout=30)
    assert result.state == RunState.COMPLETED
    assert (result.output["charge"]["status_code"], result.output["charge"]["body"]) == (
        200,
        {"charge_id": "ch-1"},
    )
    charges = http_server.requests("POST", "/charge")
    assert [c.json for c in charges] == [{"card": "expired"}, {"card": "good"}]
    assert charges[1].idempotency_key == f"{charges[0].idempotency_key}~r1"
    resolved = await flows.show_dead_letter(row.id)
    assert (resolved.status, resolved.resolved_by) == (DeadLetterStatus.REDRIVEN, "ops-alice")
    assert resolved.resolved_at is not None
    assert resolved.resolution is not None
    assert resolved.resolution["reason"] == "customer updated the card"


async def test_skip_supplies_the_output(flows: FlowClient, http_server: RecordingServer) -> None:
    card_service(http_server)
    run = await flows.start_run(payment_flow(http_server.url), {"card": "expired"})
    row = await parked_row(flows, run.workflow_id)
    await flows.skip(row.id, "ops-bob", {"charge_id": "paid-by-phone"})
    result = await flows.result(run.workflow_id, timeout=30)
    assert result.state == RunState.COMPLETED
    assert result.output == {"charge": {"charge_id": "paid-by-phone"}}
    assert record(result, "charge").status == StepStatus.COMPLETED
    assert (await flows.show_dead_letter(row.id)).status == DeadLetterStatus.SKIPPED


async def test_abort_fails_the_run_with_compensation(flows: FlowClient, http_server: RecordingServer) -> None:
    card_service(http_server)
    run = await flows.start_run(payment_flow(http_server.url), {"card": "expired"})
    row = await parked_row(flows, run.workflow_id)
    await flows.abort(row.id, "ops-carol", "fraud suspected")
    result = await flows.result(run.workflow_id, timeout=30)
    assert (result.state, result.error_type) == (RunState.FAILED, "DeadLetterAborted")
    assert len(http_server.requests("POST", "/release")) == 1
    aborted = await flows.show_dead_letter(row.id)
    assert (aborted.status, aborted.resolved_by) == (DeadLetterStatus.ABORTED, "ops-carol")
    with pytest.raises(
        DeadLetterResolvedError, match=f"dead letter {row.id} is already aborted by ops-carol"
    ):
        await flows.redrive(row.id, "ops-alice")


RACING_RUNS = 20


async def test_a_decision_taken_the_moment_the_row_appears_is_accepted(
    client: Client, database: Database, http_server: RecordingServer
) -> None:
    """An operator's script that polls the table without pause and acts on a row the moment it
    appears is never refused. The row is written by an activity; the run hears of it only in its
    next workflow task, which waits for a free slot on a busy worker (here: one that runs one
    workflow task at a time, with twenty runs parking at once). The run must accept the decision
    from the moment its row is visible, and still record it in that row."""
    card_service(http_server)
    task_queue = unique("tq-busy")
    async with (
        httpx.AsyncClient() as http_client,
        tolerate_slow_activations(  # the product's deadlock limit: twenty runs share one task slot
            Worker(
                client,
                task_queue=task_queue,
                workflows=list(WORKFLOWS),
                activities=[
                    *build_activities(http_client),
                    *build_store_activities(database.session_factory),
                ],
                workflow_runner=workflow_runner(),
                max_concurrent_workflow_tasks=1,
                max_cached_workflows=0,  # no sticky queue: one poller would stall on it between tasks
                graceful_shutdown_timeout=timedelta(0),
            )
        ),
    ):
        flows = FlowClient(client, task_queue=task_queue, database=database, tenant=unique("racing"))
        runs = await asyncio.gather(
            *(flows.start_run(payment_flow(http_server.url), {"card": "expired"}) for _ in range(RACING_RUNS))
        )
        unseen = {run.workflow_id for run in runs}
        refused: list[str] = []

        async def act(row: Any) -> None:
            try:
                await flows.skip(row.id, "ops-script", {"charge_id": f"manual-{row.id}"})
            except DecisionRefusedError as err:
                refused.append(err.reason)

        acting: list[asyncio.Task[None]] = []
        try:
            # A hang guard only (the loop has no pause by design): twenty runs through one
            # workflow slot without a cache replay every history in full, which takes minutes
            # on a loaded 2-core machine.
            async with asyncio.timeout(600):
                while unseen:
                    for row in await flows.list_dead_letters(limit=1000):
                        if row.workflow_id in unseen:
                            unseen.discard(row.workflow_id)
                            acting.append(asyncio.create_task(act(row)))
                await asyncio.gather(*acting)
        except TimeoutError:
            pytest.fail(f"runs never parked: {await where_runs_are(client, sorted(unseen))}")
        assert refused == []

        for run in runs:
            result = await flows.result(run.workflow_id, timeout=60)
            assert result.state == RunState.COMPLETED, result
            [row] = await flows.list_dead_letters(status=None, workflow_id=run.workflow_id)
            assert result.output == {"charge": {"charge_id": f"manual-{row.id}"}}
            # Recorded in the row, although the run may have taken it before it knew the row's id.
            assert (row.status, row.resolved_by) == (DeadLetterStatus.SKIPPED, "ops-script")


async def where_runs_are(client: Client, workflow_ids: list[str]) -> dict[str, Any]:
    """For a hang guard's message: how far each run got, and its failed workflow tasks."""
    found: dict[str, Any] = {}
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        failures = [
            e.workflow_task_failed_event_attributes.failure.message
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        last = [EventType.Name(e.event_type) for e in history.events[-3:]]
        found[workflow_id] = {"events": len(history.events), "last": last, "task_failures": failures}
    return found


async def test_a_park_without_decision_times_out_as_the_definition_says(
    flows: FlowClient, http_server: RecordingServer
) -> None:
    card_service(http_server)
    doc = payment_flow(http_server.url, park_timeout="2s", on_park_timeout="compensate")
    run = await flows.start_run(doc, {"card": "expired"})
    result = await flows.result(run.workflow_id, timeout=60)
    assert (result.state, result.error_type) == (RunState.COMPENSATED, "HttpClientError")
    assert len(http_server.requests("POST", "/release")) == 1
    rows = await flows.list_dead_letters(status=None, workflow_id=run.workflow_id)
    assert [(r.status, r.resolved_by) for r in rows] == [(DeadLetterStatus.TIMED_OUT, "timeout")]


async def test_cancel_while_the_dead_letter_cannot_be_recorded_still_compensates(
    client: Client, http_server: RecordingServer
) -> None:
    """A worker without a database cannot record the dead letter (the activity is retried); a
    cancel then ends the run as cancelled, with its compensations, instead of an unhandled error."""
    card_service(http_server)
    task_queue = unique("tq-no-store")
    async with httpx.AsyncClient() as http_client, build_worker(client, task_queue, http_client):
        flows = FlowClient(client, task_queue=task_queue)
        run = await flows.start_run(payment_flow(http_server.url), {"card": "expired"})

        async def recording_retried() -> int:
            pending = (await flows.describe(run.workflow_id)).raw_description.pending_activities
            return max((p.attempt for p in pending if p.activity_type.name == "dead_letter_park"), default=0)

        await eventually(recording_retried, lambda attempt: attempt >= 2, timeout=30, what="park retried")
        await flows.cancel(run.workflow_id, "ops", "no database today")
        result = await flows.result(run.workflow_id, timeout=30)
    assert (result.state, result.error_type) == (RunState.CANCELLED, "RunCancelled")
    assert len(http_server.requests("POST", "/release")) == 1


@pytest.mark.parametrize("replace_input", [False, True], ids=["merged", "replaced"])
async def test_a_redrive_keeps_the_definitions_secret_and_the_datas_text(
    flows: FlowClient,
    http_server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
    replace_input: bool,
) -> None:
    """The victim: an operator corrects a parked step's card and redrives it. The step's header
    holds the definition's own ``${secret:PAY_TOKEN}`` and its note a customer's text that looks
    like one. The redrive must send the token again (not the reference's text) and the note as the
    text the customer wrote (not with a ``$`` more); what the operator typed stays inert."""
    monkeypatch.setenv("WFA_SECRET_PAY_TOKEN", "tok-of-the-tenant")
    card_service(http_server)
    doc = payment_flow(
        http_server.url,
        input={
            "method": "POST",
            "url": f"{http_server.url}/charge",
            "headers": {"Authorization": "Bearer ${secret:PAY_TOKEN}"},
            "json": {"card": "{{ input.card }}", "note": "{{ input.note }}"},
        },
    )
    note = "paid ${secret:PAY_TOKEN} $${secret:PAY_TOKEN}"
    # The tenant ``default``: its secrets come from the environment (activities.secrets).
    tenant_flows = FlowClient(flows.client, task_queue=flows.task_queue, database=await flows.database())
    run = await tenant_flows.start_run(doc, {"card": "expired", "note": note})
    row = await parked_row(tenant_flows, run.workflow_id)
    typed = "${secret:PAY_TOKEN}"
    correction = {"json": {"card": "good", "note": row.input["json"]["note"], "typed": typed}}
    await tenant_flows.redrive(
        row.id,
        "ops-alice",
        {**row.input, **correction} if replace_input else correction,
        replace_input=replace_input,
    )
    result = await tenant_flows.result(run.workflow_id, timeout=30)
    assert result.state == RunState.COMPLETED, result.error
    first, again = http_server.requests("POST", "/charge")
    assert first.headers["authorization"] == again.headers["authorization"] == "Bearer tok-of-the-tenant"
    assert first.json == {"card": "expired", "note": note}
    assert again.json == {"card": "good", "note": note, "typed": typed}
