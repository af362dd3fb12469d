"""The approvals inbox in a real browser: sign in, see the pending approval, an invalid form and its
messages next to the fields, a valid decision that completes the run (proven by a minted token),
a group member deciding, and another tenant's user who sees nothing of this tenant.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, Page, expect
from temporalio.client import Client, WorkflowHandle

from interpreter.state import RunInput, RunOptions, RunResult, RunState
from interpreter.validate import load_definition
from starter.tokens import mint
from tests.helpers.screenshots import screenshot_dir
from tests.inbox.conftest import PASSWORD, Inbox
from tests.workflows.support import eventually, unique, wait_state
from workflows.generic import RunDefinitionWorkflow

SCREENSHOTS = screenshot_dir()
"""docs/screenshots with WFA_UPDATE_SCREENSHOTS=1 (the README's), else a temporary directory."""


def _expense(name: str, approvers: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {
                "id": "manager_approval",
                "type": "approval",
                "approvers": approvers,
                "message": "Expense of {{ input.amount }} EUR by {{ input.employee }}: {{ input.purpose }}",
                "timeout": "3d",
                "fields": [
                    {"name": "approved_amount", "type": "number", "required": True},
                    {"name": "cost_center", "type": "enum", "values": ["ops", "sales"], "required": True},
                    "note",
                ],
                "on_reject": "continue",
            }
        ],
    }


async def _start(
    client: Client, task_queue: str, tenant: str, approvers: list[str]
) -> WorkflowHandle[Any, Any]:
    document = _expense(unique("expense"), approvers)
    run = RunInput(
        definition=load_definition(document),
        input={"amount": 1250, "employee": "Sam Lee", "purpose": "Client visit in Lyon"},
        options=RunOptions(tenant=tenant, decision_proof=True, publish_assignees=True),
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run, run, id=unique("expense-run"), task_queue=task_queue
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    return handle


async def _sign_in(page: Page, inbox: Inbox, tenant: str, username: str) -> None:
    """Signs in with the keyboard only, finding each input by its label."""
    await page.goto(f"{inbox.url}/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Organisation").focus()
    await page.keyboard.type(tenant)
    await page.keyboard.press("Tab")
    await page.keyboard.type(username)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Waiting for you")).to_be_visible()


async def _listed(page: Page, text: str) -> bool:
    await page.reload()
    return await page.get_by_role("link", name=text).count() > 0


async def test_sign_in_decide_with_messages_and_complete(
    client: Client, task_queue: str, inbox: Inbox, browser: Browser
) -> None:
    handle = await _start(client, task_queue, "acme", ["alice"])
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    try:
        await _sign_in(page, inbox, "acme", "alice")
        title = "Expense of 1250 EUR by Sam Lee: Client visit in Lyon"
        # Visibility is eventually consistent: the run shows up once its attributes are indexed.
        await eventually(lambda: _listed(page, title), bool, timeout=30, what="the approval listed")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "inbox.png"), full_page=True)

        await page.get_by_role("link", name=title).click()
        await expect(page.get_by_role("heading", name=title)).to_be_visible()
        # An amount that is not a number: the message is next to the field, tied to it.
        await page.get_by_label("Approved amount").fill("twelve hundred")
        await page.get_by_role("button", name="Approve").click()
        amount = page.get_by_label("Approved amount")
        await expect(amount).to_have_attribute("aria-invalid", "true")
        await expect(amount).to_have_attribute("aria-describedby", "f-approved_amount-error")
        await expect(page.locator("#f-approved_amount-error")).to_contain_text("is not a number")
        await expect(page.get_by_role("alert")).to_contain_text("correct the fields")
        await expect(amount).to_have_value("twelve hundred")  # what was typed is kept

        # A number now, but the required cost center left out: the run's own refusal, at the field.
        await amount.fill("1200")
        await page.get_by_role("button", name="Approve").click()
        cost = page.get_by_label("Cost center")
        await expect(cost).to_have_attribute("aria-describedby", "f-cost_center-error")
        await expect(page.locator("#f-cost_center-error")).to_contain_text("is required")
        await page.screenshot(path=str(SCREENSHOTS / "inbox-form-errors.png"), full_page=True)

        await cost.select_option("ops")
        await page.get_by_label("Comment (optional)").fill("Within the travel policy")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("status")).to_contain_text("Approved")

        result: RunResult = await handle.result()
        assert result.state == RunState.COMPLETED
        output = result.steps[0].output
        assert output["decision"] == "approved"
        assert output["actor"] == "alice"
        assert output["data"] == {"approved_amount": 1200, "cost_center": "ops"}
        assert output["reason"] == "Within the travel policy"

        # The run required proof: the accepted decision carried the token the inbox minted. The
        # step is gone from the inbox, and opening it again says it was decided.
        await eventually(lambda: _listed(page, title), lambda listed: not listed, timeout=30, what="unlisted")
        await page.goto(f"{inbox.url}/item?run={handle.id}&step=manager_approval")
        await expect(page.get_by_role("heading", name="Already decided")).to_be_visible()
        await expect(page.get_by_role("status")).to_contain_text("approved by alice")
    finally:
        await context.close()


async def test_group_member_rejects_on_a_phone(
    client: Client, task_queue: str, inbox: Inbox, browser: Browser
) -> None:
    handle = await _start(client, task_queue, "acme", ["group:finance"])
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = await context.new_page()
    try:
        await _sign_in(page, inbox, "acme", "carol")
        title = "Expense of 1250 EUR by Sam Lee: Client visit in Lyon"
        await eventually(lambda: _listed(page, title), bool, timeout=30, what="the approval listed")
        await page.get_by_role("link", name=title).click()
        # The item's page has loaded (measured mid-navigation, the document can be null under load).
        await expect(page.get_by_role("heading", name=title)).to_be_visible()
        # Readable on a phone: nothing wider than the screen.
        width = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert width <= 0, f"the page is {width}px wider than the phone's screen"
        await page.screenshot(path=str(SCREENSHOTS / "inbox-item-phone.png"), full_page=True)
        await page.get_by_label("Comment (optional)").fill("No receipt attached")
        await page.get_by_role("button", name="Reject").click()
        await expect(page.get_by_role("status")).to_contain_text("Rejected")
        result: RunResult = await handle.result()
        output = result.steps[0].output
        assert (output["decision"], output["actor"]) == ("rejected", "carol")
    finally:
        await context.close()


async def test_another_tenants_user_sees_nothing(
    client: Client, task_queue: str, inbox: Inbox, browser: Browser
) -> None:
    # Globex's alice has the same user name as an approver of acme's run, and is in a group of
    # the same name: she sees nothing of acme's run, neither listed nor opened by its address.
    handle = await _start(client, task_queue, "acme", ["alice", "group:finance"])
    context = await browser.new_context()
    page = await context.new_page()
    try:
        # Acme's alice sees it (so the listing below is not empty merely because of visibility lag).
        await _sign_in(page, inbox, "acme", "alice")
        await eventually(lambda: _listed(page, "Expense of 1250 EUR"), bool, timeout=30, what="listed")
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

        await _sign_in(page, inbox, "globex", "alice")
        await expect(page.get_by_text("Nothing is waiting for you.")).to_be_visible()
        await page.goto(f"{inbox.url}/item?run={handle.id}&step=manager_approval")
        await expect(page.get_by_role("heading", name="Nothing here")).to_be_visible()
        assert "Sam Lee" not in await page.content()
        status = await inbox.clients["acme"].status(handle.id)
        assert status.state == RunState.AWAITING_APPROVAL
        assert status.decisions == []
    finally:
        await context.close()
        await handle.terminate("test over")


async def test_sign_in_refused_and_forms_need_the_session_token(inbox: Inbox, browser: Browser) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{inbox.url}/login")
        await page.get_by_label("Organisation").fill("acme")
        await page.get_by_label("User name").fill("alice")
        await page.get_by_label("Password").fill("wrong")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_contain_text("not right")
        # A POST without the session's CSRF token is refused (another site's form cannot decide).
        response = await page.request.post(
            f"{inbox.url}/login", form={"tenant": "acme", "username": "alice", "password": PASSWORD}
        )
        assert response.status == 400
        cookies = await context.cookies()
        session = next(c for c in cookies if c["name"] == "wfa_inbox")
        assert session["httpOnly"]
        assert session["sameSite"] == "Lax"
    finally:
        await context.close()


async def test_a_human_task_completed_in_the_inbox(
    client: Client, task_queue: str, inbox: Inbox, browser: Browser
) -> None:
    document = {
        "name": unique("follow-up"),
        "steps": [
            {
                "id": "call_family",
                "type": "human_task",
                "title": "Call {{ input.family }}",
                "description": "They did not answer the reminder SMS.",
                "candidate_groups": ["finance"],
                "fields": [
                    {"name": "reached", "type": "boolean", "required": True},
                    {"name": "callback_on", "type": "date"},
                ],
                "due": "2d",
            }
        ],
    }
    run = RunInput(
        definition=load_definition(document),
        input={"family": "the Nguyen family"},
        options=RunOptions(tenant="acme", decision_proof=True, publish_assignees=True),
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run, run, id=unique("task-run"), task_queue=task_queue
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await _sign_in(page, inbox, "acme", "carol")
        await eventually(
            lambda: _listed(page, "Call the Nguyen family"), bool, timeout=30, what="task listed"
        )
        await page.get_by_role("link", name="Call the Nguyen family").click()
        await expect(page.get_by_text("They did not answer the reminder SMS.")).to_be_visible()
        await page.get_by_role("button", name="Complete task").click()  # 'reached' left out
        await expect(page.locator("#f-reached-error")).to_contain_text("Reached is required")
        await page.get_by_label("Reached").select_option("true")
        await page.get_by_label("Callback on").fill("2026-03-02")
        await page.get_by_role("button", name="Complete task").click()
        await expect(page.get_by_role("status")).to_contain_text("Completed")
        result: RunResult = await handle.result()
        output = result.steps[0].output
        assert output["status"] == "completed"
        assert output["completed_by"] == "carol"
        assert output["data"] == {"reached": True, "callback_on": "2026-03-02"}
    finally:
        await context.close()


async def test_decided_elsewhere_while_the_form_was_open(
    client: Client, task_queue: str, inbox: Inbox, browser: Browser
) -> None:
    handle = await _start(client, task_queue, "acme", ["alice", "bob"])
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await _sign_in(page, inbox, "acme", "alice")
        await page.goto(f"{inbox.url}/item?run={handle.id}&step=manager_approval")
        await expect(page.get_by_role("button", name="Approve")).to_be_visible()
        # Bob rejects meanwhile (through the client, with his own token).
        token = mint(
            inbox.private_key,
            tenant="acme",
            run=handle.id,
            actor="bob",
            decisions=["reject"],
            step="manager_approval",
        )
        await inbox.clients["acme"].reject(
            handle.id, "bob", step_id="manager_approval", reason="no", token=token
        )
        await page.get_by_label("Approved amount").fill("10")
        await page.get_by_label("Cost center").select_option("ops")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("heading", name="Already decided")).to_be_visible()
        await expect(page.get_by_role("status")).to_contain_text("rejected by bob")
        result: RunResult = await handle.result()
        assert (result.steps[0].output["decision"], result.steps[0].output["actor"]) == ("rejected", "bob")
    finally:
        await context.close()
