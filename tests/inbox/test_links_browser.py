"""Decision links in a real browser: the run mails the approver (to a local SMTP server), the browser
follows the approve link from the received message and the run completes; the same link (and the
reject link) then explain that the step was decided; an expired link explains itself and offers
the inbox; a human task's link completes it with its form."""

from __future__ import annotations

import re
import time
from typing import Any

from playwright.async_api import Browser, expect
from temporalio.client import Client, WorkflowHandle

from interpreter.state import RunInput, RunOptions, RunResult, RunState
from interpreter.validate import load_definition
from starter.mailbox import LocalMailbox
from starter.tokens import mint
from tests.inbox.conftest import Inbox
from tests.workflows.support import eventually, status, unique, wait_state
from workflows.generic import RunDefinitionWorkflow


async def _start(
    client: Client, task_queue: str, steps: list[dict[str, Any]], run_input: dict[str, Any]
) -> WorkflowHandle[Any, Any]:
    run = RunInput(
        definition=load_definition({"name": unique("links"), "steps": steps}),
        input=run_input,
        options=RunOptions(tenant="acme", decision_proof=True, publish_assignees=True),
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run, run, id=unique("links-run"), task_queue=task_queue
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    return handle


def _link(text: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}[^:]*: (\S+)$", text, re.MULTILINE)
    assert match, f"no {label!r} link in:\n{text}"
    return match.group(1)


APPROVAL = {
    "id": "approve_expense",
    "type": "approval",
    "approvers": ["alice"],
    "message": "Expense of {{ input.amount }} EUR by {{ input.employee }}",
    "fields": ["note"],
    "timeout": "2d",
    "notify": {
        "email": {"to": {"alice": "{{ input.manager_email }}"}, "subject": "Approve {{ input.amount }} EUR?"}
    },
}


async def test_approve_link_from_the_mailbox_completes_the_run_once(
    client: Client, task_queue: str, inbox: Inbox, mailbox: LocalMailbox, browser: Browser
) -> None:
    handle = await _start(
        client,
        task_queue,
        [APPROVAL],
        {"amount": 80, "employee": "Sam Lee", "manager_email": "alice@acme.example"},
    )
    await eventually(lambda: _count(mailbox), lambda n: n >= 1, timeout=30, what="the email")
    # One message; a retried activity would send it again with the same Message-ID (new tokens).
    mail = mailbox.received[0]
    assert {m.message_id for m in mailbox.received} == {mail.message_id}
    assert mail.rcpt_tos == ["alice@acme.example"]
    assert mail.message["Subject"] == "Approve 80 EUR?"
    text = mail.part("text/plain")
    approve, reject = _link(text, "Approve"), _link(text, "Reject")
    assert approve.startswith(f"{inbox.url}/link?t=")
    # The message reaches the SMTP server before the activity reports back to the run.
    seen = await eventually(
        lambda: status(handle),
        lambda s: bool(s.pending_approvals) and s.pending_approvals[0].notified == ["alice"],
        timeout=60,
        what="the run recording that alice was notified",
    )
    pending = seen.pending_approvals[0]
    assert pending.notify_error is None
    history = await handle.fetch_history()
    assert approve.split("t=", 1)[1] not in history.to_json(), "a link's token entered the history"

    context = await browser.new_context()  # not signed in: the link is the proof
    page = await context.new_page()
    try:
        await page.goto(approve)
        await expect(page.get_by_role("heading", name="Expense of 80 EUR by Sam Lee")).to_be_visible()
        await expect(page.get_by_text("You are deciding as alice")).to_be_visible()
        await expect(page.get_by_role("button", name="Reject")).to_have_count(0)
        await page.get_by_label("Note").fill("ok, see receipt")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("heading", name="Approved — thank you")).to_be_visible()
        result: RunResult = await handle.result()
        assert result.state == RunState.COMPLETED
        output = result.steps[0].output
        assert (output["decision"], output["actor"], output["data"]) == (
            "approved",
            "alice",
            {"note": "ok, see receipt"},
        )

        # The same link again, and the reject link: the step was decided; the page says so.
        for url in (approve, reject):
            await page.goto(url)
            await expect(page.get_by_role("heading", name="Already decided")).to_be_visible()
            await expect(page.get_by_role("status")).to_contain_text("approved by alice")
            await expect(page.get_by_role("link", name="Go to your inbox")).to_be_visible()
    finally:
        await context.close()


async def test_an_expired_link_explains_and_offers_the_inbox(
    client: Client, task_queue: str, inbox: Inbox, mailbox: LocalMailbox, browser: Browser
) -> None:
    handle = await _start(
        client,
        task_queue,
        [APPROVAL],
        {"amount": 80, "employee": "Sam Lee", "manager_email": "alice@acme.example"},
    )
    # A link as the activity mints it, issued two hours ago for one hour.
    token = mint(
        inbox.private_key,
        tenant="acme",
        run=handle.id,
        actor="alice",
        decisions=["approve"],
        step="approve_expense",
        ttl_s=3600,
        now=time.time() - 7200,
    )
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{inbox.url}/link?t={token}")
        await expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
        await expect(page.get_by_role("status")).to_contain_text("decide it in your inbox")
        await page.get_by_role("link", name="Go to your inbox").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        # A forged link (another key) is not valid either.
        await page.goto(f"{inbox.url}/link?t={token[:-4]}AAAA")
        await expect(page.get_by_role("heading", name="This link is not valid")).to_be_visible()
        assert (await status(handle)).state == RunState.AWAITING_APPROVAL
    finally:
        await context.close()
        await handle.terminate("test over")


async def test_a_task_link_completes_it_with_the_form(
    client: Client, task_queue: str, inbox: Inbox, mailbox: LocalMailbox, browser: Browser
) -> None:
    task = {
        "id": "call_family",
        "type": "human_task",
        "title": "Call {{ input.family }}",
        "assignee": "carol",
        "fields": [{"name": "reached", "type": "boolean", "required": True}],
        "due": "1d",
        "notify": {"email": {"to": {"carol": "carol@acme.example"}}},
    }
    handle = await _start(client, task_queue, [task], {"family": "the Nguyens"})
    await eventually(
        lambda: _count(mailbox, "carol@acme.example"), lambda n: n >= 1, timeout=30, what="the email"
    )
    mail = next(m for m in mailbox.received if m.rcpt_tos == ["carol@acme.example"])
    assert mail.message["Subject"] == "Call the Nguyens"
    url = _link(mail.part("text/plain"), "Complete the task")
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(url)
        await page.get_by_role("button", name="Complete task").click()
        await expect(page.locator("#f-reached-error")).to_contain_text("Reached is required")
        await page.get_by_label("Reached").select_option("false")
        await page.get_by_role("button", name="Complete task").click()
        await expect(page.get_by_role("heading", name="Completed — thank you")).to_be_visible()
        result: RunResult = await handle.result()
        output = result.steps[0].output
        assert (output["completed_by"], output["data"]) == ("carol", {"reached": False})
    finally:
        await context.close()


async def _count(mailbox: LocalMailbox, to: str | None = None) -> int:
    return sum(1 for m in mailbox.received if to is None or to in m.rcpt_tos)
