"""The Temporal Web UI in a real headless browser, showing the runs of real definitions.

A dev server with its Web UI (``starter.devserver.DevServer``, as ``make demo`` starts it), a worker,
and runs of three definitions in two tenants that end every way a run can: completed, compensated
(Failed, ``RunCompensated``), cancelled (Canceled), and one waiting at an approval (Running). Then
Chromium opens the list of runs, a list filtered by the product's search attributes (the query in
the URL, as the UI's own filter writes it) and one run's page, and the tests check what a person
sees there: the definitions' names as workflow types, the statuses, only the matching runs, and the
run's steps by their own names.

The screenshots in ``docs/screenshots/webui-*.png`` (shown in the README's "Web UI" section) are
written by these tests when ``WFA_UPDATE_SCREENSHOTS=1``; otherwise they go to a temporary
directory, so an ordinary test run leaves the repository as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from activities.outbound import OutboundPolicy, build_http_client
from interpreter.state import RunState
from starter.client import FlowClient
from starter.devserver import DevServer
from tests.helpers.browser import chromium
from tests.helpers.http_server import RecordingServer
from tests.helpers.screenshots import screenshot_dir
from tests.workflows.support import eventually
from worker import build_worker

TASK_QUEUE = "webui-screenshots"
# The UI polls and renders client-side; on a busy machine a page can take a while to settle.
expect.set_options(timeout=60_000)


def order_fulfilment(shop: str) -> dict[str, Any]:
    """Reserve, charge, ship; a failed shipment compensates the charge and the reservation."""

    def http(step_id: str, path: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": step_id,
            "type": "task",
            "action": "http",
            "input": {"method": "POST", "url": f"{shop}/{path}/{{{{ input.order }}}}"},
            **extra,
        }

    return {
        "name": "order-fulfilment",
        "description": "Reserve stock, charge the card, ship the parcel",
        "steps": [
            http("reserve_stock", "reserve", compensate=[http("release_stock", "release")]),
            http("charge_card", "charge", compensate=[http("refund_card", "refund")]),
            http("ship_parcel", "ship", retry={"maximum_attempts": 1}, on_failure="compensate"),
            {"id": "confirm", "type": "set", "vars": {"shipped": True}},
        ],
    }


EMPLOYEE_ONBOARDING: dict[str, Any] = {
    "name": "employee-onboarding",
    "steps": [
        {
            "id": "create_account",
            "type": "task",
            "action": "echo",
            "input": {"value": {"login": "{{ input.login }}"}},
            "compensate": [
                {"id": "delete_account", "type": "task", "action": "echo", "input": {"value": "deleted"}}
            ],
        },
        {"id": "first_day", "type": "delay", "duration": "7d"},
        {"id": "welcome", "type": "task", "action": "echo", "input": {"value": "welcome"}},
    ],
}

EXPENSE_APPROVAL: dict[str, Any] = {
    "name": "expense-approval",
    "steps": [
        {"id": "check_policy", "type": "task", "action": "echo", "input": {"value": {"within_policy": True}}},
        {
            "id": "manager_approval",
            "type": "approval",
            "approvers": ["alice"],
            "message": "Expense of {{ input.amount }} EUR by {{ input.employee }}",
            "timeout": "3d",
        },
        {"id": "pay_out", "type": "task", "action": "echo", "input": {"value": "paid"}},
    ],
}


@dataclass
class WebUI:
    """The served Web UI and the runs it shows."""

    url: str
    client: Client


async def _wait_state(flows: FlowClient, workflow_id: str, state: RunState) -> None:
    await eventually(
        lambda: flows.status(workflow_id),
        lambda s: s.state == state,
        timeout=60,
        what=f"{workflow_id} {state}",
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def webui(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WebUI]:
    """A dev server with its UI, a worker, and runs of every outcome (ids are the business keys)."""
    server = DevServer(tmp_path_factory.mktemp("webui-state"), port=0, log_level="error")
    await server.astart()
    shop = RecordingServer().start()
    # Order 1003's carrier refuses the parcel: a permanent 4xx, so the order is compensated.
    shop.route("POST", "/ship/1003", [(422, {}, {"error": "carrier refused the parcel: address unknown"})])
    try:
        # A fixed identity: the UI shows it in the history (the default names this machine).
        client = await Client.connect(
            server.address, data_converter=pydantic_data_converter, identity="worker-1"
        )
        async with (
            build_http_client(OutboundPolicy.loopback()) as http_client,
            build_worker(
                client,
                TASK_QUEUE,
                http_client,
                graceful_shutdown_timeout=timedelta(0),
                outbound_policy=OutboundPolicy.loopback(),
            ),
        ):
            acme = FlowClient(client, task_queue=TASK_QUEUE, tenant="acme")
            globex = FlowClient(client, task_queue=TASK_QUEUE, tenant="globex")
            orders = order_fulfilment(shop.url)
            for flows, order in ((acme, "1001"), (acme, "1002"), (globex, "2001")):
                run = await flows.start_run(orders, {"order": order}, workflow_id=f"order-{order}")
                assert (await flows.result(run.workflow_id, timeout=120)).state == RunState.COMPLETED
            run = await acme.start_run(orders, {"order": "1003"}, workflow_id="order-1003")
            result = await acme.result(run.workflow_id, timeout=120)
            assert (result.state, result.error_type) == (RunState.COMPENSATED, "HttpClientError")
            with pytest.raises(WorkflowFailureError) as closed:
                await client.get_workflow_handle(run.workflow_id).result()
            assert isinstance(closed.value.cause, ApplicationError)
            assert closed.value.cause.type == "RunCompensated"

            onboarding = await globex.start_run(
                EMPLOYEE_ONBOARDING, {"login": "jdoe"}, workflow_id="onboarding-jdoe"
            )
            await _wait_state(globex, onboarding.workflow_id, RunState.RUNNING)
            await eventually(
                lambda: globex.status(onboarding.workflow_id),
                lambda s: "create_account" in {r.id for r in s.steps},
                timeout=60,
                what="the account created",
            )
            await globex.cancel(onboarding.workflow_id, "hr-admin", "offer withdrawn")
            assert (await globex.result(onboarding.workflow_id, timeout=120)).state == RunState.CANCELLED

            expense = await acme.start_run(
                EXPENSE_APPROVAL, {"amount": 1250, "employee": "Sam Lee"}, workflow_id="expense-sam-0412"
            )
            await _wait_state(acme, expense.workflow_id, RunState.AWAITING_APPROVAL)

            statuses = {
                "order-1001": WorkflowExecutionStatus.COMPLETED,
                "order-1002": WorkflowExecutionStatus.COMPLETED,
                "order-2001": WorkflowExecutionStatus.COMPLETED,
                "order-1003": WorkflowExecutionStatus.FAILED,
                "onboarding-jdoe": WorkflowExecutionStatus.CANCELED,
                "expense-sam-0412": WorkflowExecutionStatus.RUNNING,
            }
            for workflow_id, expected in statuses.items():
                assert (await client.get_workflow_handle(workflow_id).describe()).status == expected
            # Visibility is eventually consistent: the list shows every run once they are indexed.
            await eventually(
                lambda: _count(client, 'RunState = "awaiting_approval"'), lambda n: n == 1, timeout=60
            )
            await eventually(lambda: _count(client, ""), lambda n: n == len(statuses), timeout=60)
            yield WebUI(server.ui_url, client)
    finally:
        shop.stop()
        await server.astop()


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query or None)).count


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """Where the screenshots go: the repository's docs when asked for, else a temporary directory."""
    return screenshot_dir()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1700, "height": 760}, color_scheme="light")
    try:
        yield await context.new_page()
    finally:
        await context.close()


def list_url(ui: WebUI, query: str | None = None) -> str:
    url = f"{ui.url}/namespaces/default/workflows"
    return url if query is None else f"{url}?query={quote(query)}"


async def _show_columns(page: Page) -> None:
    """The columns an operator would pick (the UI keeps them per browser): the product's search
    attributes Tenant, RunState and CurrentStep instead of the run id and the end time."""
    await page.get_by_role("button", name="Configure Columns").click()
    for name in ("Run ID", "End"):
        await page.get_by_role("button", name=f"Remove {name} column").click()
    for name in ("Tenant", "RunState", "CurrentStep"):
        await page.get_by_role("button", name=f"Add {name} column").click()
    await page.get_by_role("button", name="Close Workflows Table configuration").click()
    await expect(page.locator("table thead")).to_contain_text("CurrentStep")


async def _rows(page: Page) -> dict[str, dict[str, str]]:
    """The list's rows by workflow id, each as ``{column: text}``."""
    table = page.locator("table")
    headers = [h.strip() for h in await table.locator("thead th").all_inner_texts()]
    rows = {}
    for row in await table.locator("tbody tr").all():
        cells = dict(
            zip(headers, (c.strip() for c in await row.locator("td").all_inner_texts()), strict=True)
        )
        rows[cells["Workflow ID"]] = cells
    return rows


async def test_the_list_shows_definitions_as_types_and_outcomes_as_statuses(
    webui: WebUI, page: Page, screenshots: Path
) -> None:
    await page.goto(list_url(webui))
    await _show_columns(page)
    table = page.locator("table")
    await expect(table.get_by_role("link", name="expense-sam-0412")).to_be_visible()
    await expect(table.locator("tbody tr")).to_have_count(6)
    rows = await _rows(page)
    shown = {k: (v["Status"], v["Type"], v["Tenant"], v["RunState"]) for k, v in rows.items()}
    assert shown == {
        "order-1001": ("COMPLETED", "order-fulfilment", "acme", "completed"),
        "order-1002": ("COMPLETED", "order-fulfilment", "acme", "completed"),
        "order-2001": ("COMPLETED", "order-fulfilment", "globex", "completed"),
        "order-1003": ("FAILED", "order-fulfilment", "acme", "compensated"),
        "onboarding-jdoe": ("CANCELED", "employee-onboarding", "globex", "cancelled"),
        "expense-sam-0412": ("RUNNING", "expense-approval", "acme", "awaiting_approval"),
    }
    assert rows["expense-sam-0412"]["CurrentStep"] == "manager_approval"
    await page.screenshot(path=str(screenshots / "webui-list.png"))


async def test_a_list_filtered_by_definition_and_tenant_shows_only_those_runs(
    webui: WebUI, page: Page, screenshots: Path
) -> None:
    query = 'DefinitionName = "order-fulfilment" AND Tenant = "acme"'
    await page.goto(list_url(webui, query))
    await _show_columns(page)
    table = page.locator("table")
    await expect(table.get_by_role("link", name="order-1003")).to_be_visible()
    await expect(table.locator("tbody tr")).to_have_count(3)
    rows = await _rows(page)
    assert {k: (v["Status"], v["Tenant"]) for k, v in rows.items()} == {
        "order-1001": ("COMPLETED", "acme"),
        "order-1002": ("COMPLETED", "acme"),
        "order-1003": ("FAILED", "acme"),
    }
    await expect(page.get_by_text('DefinitionName = "order-fulfilment"')).to_be_visible()
    await page.screenshot(path=str(screenshots / "webui-filtered.png"))


async def test_a_run_page_shows_its_steps_by_name_and_its_summary(
    webui: WebUI, page: Page, screenshots: Path
) -> None:
    """The cancelled onboarding: its account created, the week's wait cut short by the cancel
    update, the account deleted by compensation, the run Canceled; each step under its own name."""
    run_id = (await webui.client.get_workflow_handle("onboarding-jdoe").describe()).run_id
    await page.set_viewport_size({"width": 1600, "height": 1050})
    await page.goto(f"{webui.url}/namespaces/default/workflows/onboarding-jdoe/{run_id}/history")
    await expect(page.get_by_role("heading", name="onboarding-jdoe")).to_be_visible()
    await expect(page.get_by_role("link", name="employee-onboarding")).to_be_visible()
    await page.get_by_role("button", name="Compact").click()
    history = page.locator("table").last
    for shown in ("create_account (echo)", "first_day: wait 7d", "cancel_run", "delete_account (echo)"):
        await expect(history.get_by_text(shown, exact=True)).to_be_visible()
    assert "CANCELED" in await page.locator("main").inner_text()
    await page.screenshot(path=str(screenshots / "webui-run.png"))

    # The static summary and details, rendered by the UI as Markdown (each in a frame of its own).
    await page.get_by_role("tab", name="User Metadata").click()
    summary, details = page.frame_locator("iframe").nth(0), page.frame_locator("iframe").nth(1)
    await expect(
        summary.get_by_text("employee-onboarding v1 · tenant globex · onboarding-jdoe")
    ).to_be_visible()
    await expect(details.locator("body")).to_contain_text("Tenant globex")
    await page.screenshot(path=str(screenshots / "webui-run-summary.png"))
