"""The example definitions in ``examples/``: every one validates, and every one runs to its expected
end on a real server with a worker, its ``http`` steps answered by a local :class:`RecordingServer`.

Runs go through :class:`starter.client.FlowClient`, so this also exercises the client API. The
examples with days-long timers (intervention, expense approval with escalation) run on the
time-skipping test server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from interpreter.model import TaskStep, children
from interpreter.state import RunResult, RunState, RunStatus, StepStatus
from starter.client import FlowClient
from starter.errors import DecisionRefusedError
from tests.conftest import fresh_database
from tests.helpers.http_server import RecordedRequest, RecordingServer, Response
from worker import build_worker

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
RUN_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------------------ helpers


@pytest_asyncio.fixture(loop_scope="session")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """The ``http`` action's client for this test's worker."""
    async with httpx.AsyncClient() as client:
        yield client


@asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, http_client: httpx.AsyncClient
) -> AsyncIterator[None]:
    """An in-process worker without a shutdown grace period (nothing should be left running)."""
    async with build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)):
        yield


@asynccontextmanager
async def time_skipping(env: WorkflowEnvironment) -> AsyncIterator[None]:
    """Lets the test server skip time while the block waits (as the SDK does around ``result()``
    of a handle it started itself; FlowClient looks runs up by id, so the test unlocks it)."""
    await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
    try:
        yield
    finally:
        await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())


def example(name: str) -> Path:
    return EXAMPLES / f"{name}.json"


def key(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def step(result: RunResult | RunStatus, path: str) -> Any:
    found = [s for s in result.steps if s.path == path]
    assert found, f"no step {path!r} in {[s.path for s in result.steps]}"
    return found[-1]


def paths(result: RunResult) -> list[str]:
    return [s.path for s in result.steps if s.status != StepStatus.SKIPPED]


async def wait_for_approval(flows: FlowClient, workflow_id: str, timeout: float = 20.0) -> RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await flows.status(workflow_id)
        if status.pending_approvals:
            return status
        assert status.state not in (RunState.COMPLETED, RunState.FAILED), status
        assert time.monotonic() < deadline, f"no approval pending after {timeout}s: {status}"
        await asyncio.sleep(0.1)


async def wait_until(
    probe: Callable[[], Awaitable[RunStatus]], accept: Callable[[RunStatus], bool], timeout: float = 20.0
) -> RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        assert time.monotonic() < deadline, f"not reached after {timeout}s: {value}"
        await asyncio.sleep(0.1)


def bodies(server: RecordingServer, method: str, path: str) -> list[Any]:
    return [r.json for r in server.requests(method, path)]


# ------------------------------------------------------------------------------------- validation


def test_there_are_examples() -> None:
    names = {p.stem for p in EXAMPLE_FILES}
    assert {
        "intervention",
        "lead-nurture",
        "order-fulfilment",
        "expense-approval",
        "uptime-check",
        "review-analysis",
    } <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_validates(path: Path) -> None:
    definition = FlowClient.validate(path)
    assert definition.name == path.stem
    assert definition.description


def _tasks(steps: list[Any]) -> Iterator[TaskStep]:
    for s in steps:
        if isinstance(s, TaskStep):
            yield s
        for _suffix, nested, _boundary in children(s):
            yield from _tasks(nested)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_http_step_uses_the_api_base_url(path: Path) -> None:
    definition = FlowClient.validate(path)
    http_steps = [t for t in _tasks(definition.steps) if t.action == "http"]
    assert http_steps
    for task in http_steps:
        assert str(task.input["url"]).startswith("{{ input.api }}"), (task.id, task.input["url"])


# ----------------------------------------------------------------------- intervention (time-skipping)

FAMILY = {"id": "F17", "name": "Martinez family", "email": "martinez@example.org", "phone": "+13125550100"}


def family() -> dict[str, str]:
    """FAMILY with an id of its own: an event mailbox (one per family id) outlives a test."""
    return {**FAMILY, "id": key("F17")}


async def answer_when_waiting(flows: FlowClient, workflow_id: str, step_path: str, family_id: str) -> None:
    """Publishes the family's answer once the run waits at ``step_path`` (subscribed to its mailbox)."""
    await wait_until(
        lambda: flows.status(workflow_id),
        lambda s: any(w.path == step_path and w.subscribed for w in s.waiting_events),
    )
    await flows.publish_event(
        "family.answered", family_id, {"channel": "sms", "message": "All fine, thanks"}, start_triggers=False
    )


async def test_intervention_without_reply_texts_then_schedules_a_call(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
) -> None:
    http_server.route("POST", "/tasks", [(201, {}, {"id": "T-1"})])
    flows = FlowClient(time_skipping_env.client, task_queue=task_queue)
    who = family()
    async with running_worker(time_skipping_env.client, task_queue, http_client):
        run = await flows.start_run(
            example("intervention"),
            {"api": http_server.url, "family": who},
            workflow_id=key("intervention-f17"),
        )
        async with time_skipping(time_skipping_env):
            result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.state == RunState.COMPLETED, result
    assert result.output == {"family_id": who["id"], "outcome": "call_scheduled", "task": {"id": "T-1"}}
    assert paths(result)[:3] == ["send_email", "wait_for_email_reply", "replied_to_email"]
    assert "send_sms" in paths(result)
    assert paths(result)[-2:] == ["schedule_call", "call_scheduled"]
    # No answer: the waits time out after 3 days (after the email) and 4 days (after the text).
    for path, days in (("wait_for_email_reply", 3), ("wait_for_sms_reply", 4)):
        waited = step(result, path)
        assert waited.output["timed_out"] is True
        assert waited.duration_s >= days * 86400
    assert [r.path for r in http_server.requests("POST")] == [
        "/notifications/email",
        "/notifications/sms",
        "/tasks",
    ]
    assert bodies(http_server, "POST", "/notifications/sms")[0]["to"] == FAMILY["phone"]
    assert bodies(http_server, "POST", "/tasks")[0]["priority"] == "high"


async def test_intervention_stops_when_the_family_answers_the_email(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
) -> None:
    flows = FlowClient(time_skipping_env.client, task_queue=task_queue)
    who = family()
    async with running_worker(time_skipping_env.client, task_queue, http_client):
        run = await flows.start_run(
            example("intervention"),
            {"api": http_server.url, "family": who},
            workflow_id=key("intervention-f17"),
        )
        await answer_when_waiting(flows, run.workflow_id, "wait_for_email_reply", who["id"])
        async with time_skipping(time_skipping_env):
            result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.state == RunState.COMPLETED, result
    assert result.output == {
        "family_id": who["id"],
        "outcome": "responded",
        "after": "email",
        "answer": {"channel": "sms", "message": "All fine, thanks"},
    }
    assert step(result, "wait_for_email_reply").duration_s < 86400
    assert [r.path for r in http_server.requests("POST")] == ["/notifications/email"]


async def test_intervention_bounced_email_goes_straight_to_sms(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
) -> None:
    http_server.route("POST", "/notifications/email", [(422, {}, {"error": "mailbox does not exist"})])
    flows = FlowClient(time_skipping_env.client, task_queue=task_queue)
    who = family()
    async with running_worker(time_skipping_env.client, task_queue, http_client):
        run = await flows.start_run(
            example("intervention"),
            {"api": http_server.url, "family": who, "business_hours": False},
            workflow_id=key("intervention-f17"),
        )
        await answer_when_waiting(flows, run.workflow_id, "wait_for_sms_reply", who["id"])
        async with time_skipping(time_skipping_env):
            result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.state == RunState.COMPLETED, result
    assert result.output["after"] == "sms"
    assert step(result, "send_email").status == StepStatus.FAILED
    assert step(result, "send_email").error_type == "HttpClientError"
    assert "wait_for_email_reply" not in paths(result)
    assert [r.path for r in http_server.requests("POST")] == ["/notifications/email", "/notifications/sms"]


# ------------------------------------------------------------------------------ lead nurture (dev)


@pytest.mark.parametrize(
    ("score", "decision", "data", "outcome", "last_path"),
    [
        (
            85,
            "approve",
            {"next_action": "demo", "call_date": "2030-01-07T15:00:00Z", "notes": "budget ok"},
            "demo_scheduled",
            "/crm/tasks",
        ),
        (55, "approve", {"next_action": "nurture"}, "nurturing", "/crm/sequences/nurture/enrolments"),
        (90, "reject", {"notes": "student project"}, "disqualified", "/crm/leads/L9"),
    ],
    ids=["hot-demo", "warm-nurture", "rejected"],
)
async def test_lead_nurture_routes_by_score_after_qualification(
    client: Client,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
    score: int,
    decision: str,
    data: dict[str, Any],
    outcome: str,
    last_path: str,
) -> None:
    http_server.route("POST", "/crm/tasks", [(201, {}, {"id": "task-1"})])
    http_server.route("POST", "/crm/leads/L9/score", [(200, {}, {"score": score})])
    http_server.route(
        "GET", "/crm/leads/L9/enrichment", [(200, {}, {"employees": 120, "industry": "retail"})]
    )
    lead = {
        "id": "L9",
        "name": "Dana Lee",
        "email": "dana@acme.test",
        "company": "Acme",
        "owner": "sales-rep",
    }
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        run = await flows.start_run(example("lead-nurture"), {"api": http_server.url, "lead": lead})
        status = await wait_for_approval(flows, run.workflow_id)
        (pending,) = status.pending_approvals
        assert pending.step_id == "qualify"
        assert pending.approvers == ["sales-rep", "sales-manager"]
        assert pending.fields == ["next_action", "call_date", "notes"]
        assert f"score {score}" in pending.message
        assert "120 employees" in pending.message
        assert status.vars == {"score": score, "employees": 120}
        # The two research branches ran before the human task.
        assert {"score_lead", "enrich_lead"} <= {s.path for s in status.steps}

        decide = flows.approve if decision == "approve" else flows.reject
        with pytest.raises(DecisionRefusedError, match="unknown form fields"):
            await decide(run.workflow_id, "sales-rep", data={"discount": 50})
        with pytest.raises(DecisionRefusedError, match=r"must be one of \['demo', 'nurture'\], got 'call'"):
            await decide(run.workflow_id, "sales-rep", data={"next_action": "call"})
        await decide(run.workflow_id, "sales-rep", reason="checked", data=data)
        result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.state == RunState.COMPLETED, result
    assert result.output == {"lead_id": "L9", "score": score, "outcome": outcome, "qualified_by": "sales-rep"}
    assert http_server.requests()[-1].path == last_path
    if outcome == "demo_scheduled":
        demo = bodies(http_server, "POST", "/crm/tasks")[-1]
        assert demo["type"] == "demo"
        assert demo["when"] == data["call_date"]
        assert demo["notes"] == "budget ok"
    if outcome == "disqualified":
        assert bodies(http_server, "PATCH", "/crm/leads/L9") == [
            {"status": "disqualified", "reason": "checked"}
        ]


async def test_lead_nurture_goes_on_without_enrichment(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/crm/leads/L9/score", [(200, {}, {"score": 30})])
    http_server.route("GET", "/crm/leads/L9/enrichment", [(503, {}, {"error": "down"})])
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        run = await flows.start_run(
            example("lead-nurture"),
            {"api": http_server.url, "lead": {"id": "L9", "name": "X", "email": "x@y.test", "company": "Y"}},
        )
        status = await wait_for_approval(flows, run.workflow_id)
        assert status.vars == {"score": 30, "employees": None}
        await flows.approve(run.workflow_id, "sales-manager")
        result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.state == RunState.COMPLETED
    assert result.output["outcome"] == "disqualified"  # score under 40
    assert step(result, "enrich_lead").status == StepStatus.FAILED
    assert step(result, "enrich_lead").attempts == 2


# -------------------------------------------------------------------------- order fulfilment (dev)

ORDER = {
    "id": "SO-1001",
    "email": "buyer@example.org",
    "currency": "EUR",
    "payment_token": "tok_visa",
    "address": {"street": "1 Main St", "city": "Springfield"},
    "items": [{"sku": "MUG", "qty": 2, "unit_price": 9.99}, {"sku": "TEE", "qty": 1, "unit_price": 20}],
}


def _order_routes(server: RecordingServer, *, charge: list[Response], shipment: list[Response]) -> None:
    server.route("POST", "/inventory/reservations", [(201, {}, {"reservation_id": "R-7"})])
    server.route("POST", "/payments/charges", charge)
    server.route("POST", "/shipments", shipment)


async def test_order_fulfilment_happy_path(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    _order_routes(
        http_server, charge=[(201, {}, {"charge_id": "ch_1"})], shipment=[(201, {}, {"tracking": "1Z999"})]
    )
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        result = await flows.execute_run(
            example("order-fulfilment"), {"api": http_server.url, "order": ORDER}, timeout=RUN_TIMEOUT_S
        )

    assert result.state == RunState.COMPLETED, result
    assert result.output == {
        "order_id": "SO-1001",
        "total": 39.98,
        "reservation_id": "R-7",
        "charge_id": "ch_1",
        "tracking": "1Z999",
    }
    charge = bodies(http_server, "POST", "/payments/charges")[0]
    assert charge == {"order_id": "SO-1001", "amount": 39.98, "currency": "EUR", "token": "tok_visa"}
    assert bodies(http_server, "POST", "/shipments")[0]["address"] == ORDER["address"]
    assert len(http_server.requests("POST", "/notifications/email")) == 1
    assert not http_server.requests("POST", "/payments/refunds")
    assert not http_server.requests("POST", "/inventory/reservations/R-7/release")


async def test_order_fulfilment_declined_payment_releases_inventory(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    _order_routes(http_server, charge=[(402, {}, {"error": "card_declined"})], shipment=[(201, {}, {})])
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        result = await flows.execute_run(
            example("order-fulfilment"), {"api": http_server.url, "order": ORDER}, timeout=RUN_TIMEOUT_S
        )

    assert result.state == RunState.COMPENSATED, result
    assert result.error_type == "HttpClientError"
    assert "402" in (result.error or "")
    assert step(result, "charge_payment").attempts == 1  # a 4xx is not retried
    assert [r.path for r in http_server.requests("POST")] == [
        "/inventory/reservations",
        "/payments/charges",
        "/inventory/reservations/R-7/release",
    ]
    assert step(result, "compensate/reserve_inventory/release_inventory").status == StepStatus.COMPLETED


async def test_order_fulfilment_failed_shipment_refunds_and_releases_in_reverse_order(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    _order_routes(
        http_server,
        charge=[(201, {}, {"charge_id": "ch_9"})],
        shipment=[(500, {}, {"error": "carrier down"})],
    )
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        run = await flows.start_run(example("order-fulfilment"), {"api": http_server.url, "order": ORDER})
        result = await run.result(timeout=RUN_TIMEOUT_S)
        # A failed run's details carry the same result; status rebuilds it on the worker.
        status = await flows.status(run.workflow_id)

    assert result.state == RunState.FAILED, result
    assert result.error_type == "HttpServerError"
    assert step(result, "create_shipment").attempts == 3
    assert status.state == RunState.FAILED
    posts = [r.path for r in http_server.requests("POST")]
    assert posts[-2:] == ["/payments/refunds", "/inventory/reservations/R-7/release"]
    assert bodies(http_server, "POST", "/payments/refunds") == [{"charge_id": "ch_9", "amount": 39.98}]


async def test_order_fulfilment_refuses_an_empty_order(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        result = await flows.execute_run(
            example("order-fulfilment"),
            {"api": http_server.url, "order": {**ORDER, "items": []}},
            timeout=RUN_TIMEOUT_S,
        )
    assert result.state == RunState.FAILED
    assert result.error_type == "InvalidOrder"
    assert result.error == "order SO-1001 has no items"
    assert http_server.requests() == []


# ----------------------------------------------------------------- expense approval (time-skipping)

EXPENSE = {
    "id": "EXP-42",
    "employee": "sam",
    "email": "sam@example.org",
    "amount": 640,
    "description": "conference travel",
}


async def test_expense_under_the_limit_is_approved_by_policy(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
) -> None:
    flows = FlowClient(time_skipping_env.client, task_queue=task_queue)
    async with running_worker(time_skipping_env.client, task_queue, http_client):
        run = await flows.start_run(
            example("expense-approval"), {"api": http_server.url, "expense": {**EXPENSE, "amount": 45}}
        )
        async with time_skipping(time_skipping_env):
            result = await run.result(timeout=RUN_TIMEOUT_S)
    assert result.state == RunState.COMPLETED
    assert result.output == {"expense_id": "EXP-42", "status": "approved", "approved_by": "policy"}
    assert "manager_approval" not in paths(result)
    assert [r.path for r in http_server.requests()] == ["/payments/reimbursements", "/notifications/email"]


async def test_expense_approved_by_the_manager(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
) -> None:
    flows = FlowClient(time_skipping_env.client, task_queue=task_queue)
    async with running_worker(time_skipping_env.client, task_queue, http_client):
        run = await flows.start_run(example("expense-approval"), {"api": http_server.url, "expense": EXPENSE})
        status = await wait_for_approval(flows, run.workflow_id)
        assert status.pending_approvals[0].approvers == ["manager"]
        assert status.pending_approvals[0].message == "sam claims 640 for conference travel"
        with pytest.raises(DecisionRefusedError, match="'director' may not decide"):
            await flows.approve(run.workflow_id, "director")
        await flows.approve(run.workflow_id, "manager", reason="ok", data={"comment": "have fun"})
        async with time_skipping(time_skipping_env):
            result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.state == RunState.COMPLETED, result
    assert result.output == {"expense_id": "EXP-42", "status": "approved", "approved_by": "manager"}
    assert bodies(http_server, "POST", "/payments/reimbursements") == [
        {"expense_id": "EXP-42", "employee": "sam", "amount": 640}
    ]
    templates = [b["template"] for b in bodies(http_server, "POST", "/notifications/email")]
    assert templates == ["expense-approval-request", "expense-approved"]


async def test_expense_escalates_to_the_director_after_two_days_then_is_rejected_after_five(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
) -> None:
    flows = FlowClient(time_skipping_env.client, task_queue=task_queue)
    async with running_worker(time_skipping_env.client, task_queue, http_client):
        run = await flows.start_run(example("expense-approval"), {"api": http_server.url, "expense": EXPENSE})
        async with time_skipping(time_skipping_env):
            result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.state == RunState.COMPLETED, result
    assert result.output == {
        "expense_id": "EXP-42",
        "status": "rejected",
        "rejected_by": "timeout",
        "reason": "no decision within 5d",
    }
    approval = step(result, "manager_approval")
    assert approval.output["escalations"] == 1
    assert approval.duration_s == pytest.approx(5 * 86400, abs=60)
    assert step(result, "manager_approval/escalation1/notify_director").status == StepStatus.COMPLETED
    templates = [b["template"] for b in bodies(http_server, "POST", "/notifications/email")]
    assert templates == ["expense-approval-request", "expense-approval-escalated", "expense-rejected"]
    assert not http_server.requests("POST", "/payments/reimbursements")


async def test_expense_director_may_decide_once_escalated(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
) -> None:
    flows = FlowClient(time_skipping_env.client, task_queue=task_queue)
    async with running_worker(time_skipping_env.client, task_queue, http_client):
        run = await flows.start_run(example("expense-approval"), {"api": http_server.url, "expense": EXPENSE})
        await wait_for_approval(flows, run.workflow_id)
        await time_skipping_env.sleep(timedelta(days=2, hours=1))
        status = await wait_until(
            lambda: flows.status(run.workflow_id), lambda s: s.pending_approvals[0].escalations == 1
        )
        assert status.pending_approvals[0].approvers == ["manager", "director"]
        await flows.reject(run.workflow_id, "director", reason="not in budget")
        async with time_skipping(time_skipping_env):
            result = await run.result(timeout=RUN_TIMEOUT_S)

    assert result.output == {
        "expense_id": "EXP-42",
        "status": "rejected",
        "rejected_by": "director",
        "reason": "not in budget",
    }
    rejected = bodies(http_server, "POST", "/notifications/email")[-1]
    assert rejected["template"] == "expense-rejected"
    assert rejected["reason"] == "not in budget"


# ------------------------------------------------------------------------------ uptime check (dev)


@pytest.mark.parametrize(
    ("response", "up", "detail"),
    [
        ((200, {}, {"status": "ok"}), True, "HTTP 200 ok"),
        ((200, {}, "pong"), True, "HTTP 200"),
        ((200, {}, {"status": "degraded"}), False, "HTTP 200 degraded"),
        ((503, {}, {"status": "maintenance"}), False, "returned 503"),
    ],
    ids=["up", "up-text", "degraded", "down"],
)
async def test_uptime_check_alerts_only_when_down(
    client: Client,
    task_queue: str,
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
    response: Response,
    up: bool,
    detail: str,
) -> None:
    http_server.route("GET", "/health", [response])
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        result = await flows.execute_run(
            example("uptime-check"),
            {"api": http_server.url, "site": "shop.example.org"},
            timeout=RUN_TIMEOUT_S,
        )

    assert result.state == RunState.COMPLETED, result
    assert result.output["up"] is up
    assert result.output["alerted"] is not up
    assert detail in result.output["detail"]
    alerts = bodies(http_server, "POST", "/alerts/slack")
    if up:
        assert alerts == []
    else:
        assert len(alerts) == 1
        assert alerts[0]["text"].startswith("shop.example.org is DOWN: ")
    (log,) = bodies(http_server, "POST", "/uptime/log")
    assert log["up"] is up
    assert log["site"] == "shop.example.org"
    if response[0] >= 500:
        assert len(http_server.requests("GET", "/health")) == 2  # retried once, then reported


# --------------------------------------------------------------------------- review analysis (dev)


def _sentiment_service() -> tuple[Any, dict[str, int]]:
    """A scoring endpoint that takes a little while and records the peak concurrency."""
    lock = threading.Lock()
    seen = {"active": 0, "peak": 0}

    def respond(request: RecordedRequest) -> Response:
        with lock:
            seen["active"] += 1
            seen["peak"] = max(seen["peak"], seen["active"])
        try:
            time.sleep(0.3)
            text = str(request.json["text"]).lower()
            score = 0.9 if "great" in text else -0.8 if "broken" in text else 0.1
            label = "positive" if score > 0.5 else "negative" if score < -0.5 else "neutral"
            return 200, {}, {"score": score, "label": label}
        finally:
            with lock:
                seen["active"] -= 1

    return respond, seen


async def test_review_analysis_maps_three_at_a_time_and_reduces(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    respond, seen = _sentiment_service()
    http_server.route("POST", "/sentiment", respond)
    http_server.route("POST", "/reports", [(201, {}, {"id": "RPT-1"})])
    reviews = [
        {"id": "r1", "text": "Great mug"},
        {"id": "r2", "text": "Arrived broken"},
        {"id": "r3", "text": "ok I guess"},
        {"id": "r4", "text": "great value"},
        {"id": "r5", "text": "GREAT"},
        {"id": "r6", "text": "broken handle, broken promise"},
        {"id": "r7", "text": "fine"},
    ]
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        result = await flows.execute_run(
            example("review-analysis"), {"api": http_server.url, "reviews": reviews}, timeout=RUN_TIMEOUT_S
        )

    assert result.state == RunState.COMPLETED, result
    average = round((3 * 0.9 - 2 * 0.8 + 2 * 0.1) / 7, 2)
    assert result.output == {
        "count": 7,
        "average": average,
        "positive": 3,
        "negative": 2,
        "most_negative": "r2",
        "report": "RPT-1",
    }
    assert step(result, "analyse").output[1] == {"id": "r2", "score": -0.8, "label": "negative"}
    assert len(http_server.requests("POST", "/sentiment")) == 7
    assert 1 < seen["peak"] <= 3
    (report,) = bodies(http_server, "POST", "/reports")
    assert report["summary"] == {"count": 7, "average": average, "positive": 3, "negative": 2}


async def test_review_analysis_of_no_reviews(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    flows = FlowClient(client, task_queue=task_queue)
    async with running_worker(client, task_queue, http_client):
        result = await flows.execute_run(
            example("review-analysis"), {"api": http_server.url, "reviews": []}, timeout=RUN_TIMEOUT_S
        )
    assert result.state == RunState.COMPLETED, result
    assert result.output["count"] == 0
    assert result.output["average"] == 0
    assert json.dumps(result.output)


# ------------------------------------------------------------------------------ the demo (make demo)


async def test_demo_runs_every_example_and_exits(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo`` twice on one fresh state folder: its own dev server and (without DATABASE_URL)
    its own embedded PostgreSQL; every example registered, started by name and pinned; a version
    activated and rolled back; a dead letter parked and redriven; the second launch registers
    nothing new."""
    from starter import demo

    state = state_dir / "state"  # not under tmp_path: see the fixture
    monkeypatch.setenv("WFA_STATE_DIR", str(state))
    configured = os.environ.get("DATABASE_URL")
    async with contextlib.AsyncExitStack() as stack:
        if configured:  # that server, with a database of this test's own
            monkeypatch.setenv(
                "DATABASE_URL", await stack.enter_async_context(fresh_database(configured, "wfa_demo"))
            )
        argv = ["--exit", "--port", "0", "--task-queue", f"demo-{uuid4()}"]
        outputs = []
        for _launch in range(2):
            code = await asyncio.to_thread(demo.main, argv)
            out = capsys.readouterr().out
            assert code == 0, out
            outputs.append(out)
    first, second = outputs
    names = [path.stem for path in EXAMPLE_FILES]
    for out in outputs:
        assert "9/9 runs ended as expected" in out
        assert ("Store: PostgreSQL from DATABASE_URL" if configured else "Store: embedded PostgreSQL") in out
        assert (
            "mallory approves as mallory with no token -> refused: 'mallory' may not decide step 'manager_approval'"
            in out
        )
        assert "mallory approves as manager with a forged token -> refused: decision token refused" in out
        assert out.count("/namespaces/default/workflows/") == 10  # the 9 runs and the one left waiting
        # One expense run is left waiting, with the commands to decide it (run in tests/test_demo.py).
        waiting = re.search(
            r"^(expense-EXP-8-\S+) is awaiting_approval on expense-approval v1 \(approvers: manager\)\.$",
            out,
            re.M,
        )
        assert waiting, out
        assert f"--tenant demo approve {waiting.group(1)} --actor manager --reason 'within budget'" in out
        assert f"Stopping now (--exit, or stdin ended); {waiting.group(1)} stays waiting" in out
        assert "State         compensated" in out  # the declined card of the example itself
        # The registry listing: every example, v1 active, with a hash prefix.
        listing = out.split("Registry of tenant 'demo'", 1)[1].split("\n\n", 1)[0]
        for name in names:
            assert re.search(rf"^  {re.escape(name)} +v1 +\d+ +[0-9a-f]{{12}}  ", listing, re.M), listing
        # Every run started by name from the registry and pinned to that version.
        assert out.count("(registry, tenant demo)") == 9
        assert out.count("Pinned to     order-fulfilment v1, hash ") == 2
        assert out.count("Pinned to     order-fulfilment v2, hash ") == 1  # the dead-letter variant
        assert "Pinned to     expense-approval v1, hash " in out
        # Versioning while the v1 expense run waits for its approval.
        assert "activate expense-approval v2 by ops: new runs by name now use v2 (was v1)" in out
        assert "is still awaiting_approval on expense-approval v1 (pinned)" in out
        assert "rollback expense-approval by ops: v1 is active again (was v2)" in out
        # The dead letter: parked (open), redriven with another card, resolved by the operator.
        parked = re.search(r"^ +(\d+) +charge_payment +1 +open +- +HttpClientError: .*402", out, re.M)
        assert parked, out
        row = parked.group(1)
        assert re.search(rf"^ +{row} +charge_payment +1 +redriven +ops +HttpClientError", out, re.M), out
        assert f"ops redrives dead letter #{row} with the input's token tok_visa" in out
        assert f"note: dead letter #{row} parked at charge_payment" in out
        assert "Closed the store." in out
    assert first.count("registered, active") == len(names)
    assert "expense-approval (changed copy) v2  " in first
    assert "order-fulfilment (variant) v2  " in first
    # The second launch stores nothing new: the same versions, found by their content hash.
    assert second.count("already registered (same content hash), active") == len(names)
    assert "expense-approval (changed copy) v2  " in second
    assert second.count("already registered (same content hash), not active (v1 is)") == 2
    assert (state / "temporal.db").exists()
    assert (state / "postgres").is_dir() != bool(configured)
