"""Durability of ``email``: the worker process is SIGKILLed while the SMTP server holds the message
it received (before its reply); a new worker sends it again with the same ``Message-ID``, so the
second copy is recognisable as the same message."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from interpreter.state import RunState
from starter.mailbox import LocalMailbox
from tests.workflows.support import definition, eventually, record, start, unique
from tests.workflows.test_sigkill import _WorkerProcess


@pytest_asyncio.fixture
async def mailbox() -> AsyncIterator[LocalMailbox]:
    async with LocalMailbox(hold_next=1) as box:
        yield box


@pytest.fixture
def workers() -> Iterator[list[_WorkerProcess]]:
    started: list[_WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


async def test_email_after_a_sigkill_mid_send_is_sent_again_with_the_same_message_id(
    client: Client,
    task_queue: str,
    mailbox: LocalMailbox,
    workers: list[_WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker subprocess reads the tenant's SMTP settings from its environment (tenant default).
    for name, value in {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mailbox.port),
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "outreach@school.example",
    }.items():
        monkeypatch.setenv(f"WFA_SECRET_{name}", value)
    doc = definition(
        unique("email-durable"),
        [
            {
                "id": "send_email",
                "type": "task",
                "action": "email",
                "input": {
                    "to": "{{ input.to }}",
                    "subject": "Checking in",
                    "html": "<p>Hello {{ input.name }}</p>",
                },
                # A short timeout so the attempt lost with the killed worker is retried quickly.
                "timeouts": {"start_to_close": "3s"},
                "retry": {"preset": "constant", "initial_interval": "200ms", "maximum_attempts": 20},
            }
        ],
    )
    address = client.service_client.config.target_host
    log = tmp_path / "workers.log"
    workers.append(_WorkerProcess(address, task_queue, log))
    handle = await start(client, task_queue, doc, {"to": "martinez@example.org", "name": "Martinez family"})

    async def received() -> int:
        return len(mailbox.received)

    # The server has the whole message and holds its reply: the sender cannot know it arrived.
    await eventually(received, lambda n: n >= 1, timeout=60, what="the first delivery")
    workers[0].kill()
    assert workers[0].proc.returncode == -signal.SIGKILL
    mailbox.release.set()  # the reply goes to a connection nobody holds any more

    workers.append(_WorkerProcess(address, task_queue, log))
    try:
        result = await asyncio.wait_for(handle.result(), timeout=90)
    except TimeoutError:
        pytest.fail(f"the run did not finish after the restart; worker log:\n{log.read_text()[-5000:]}")

    assert result.state == RunState.COMPLETED, result
    step = record(result, "send_email")
    assert step.attempts >= 2
    first, *again = mailbox.received
    assert again, "the message is sent again by the new worker"
    assert {m.message_id for m in mailbox.received} == {step.output["message_id"]}
    assert all(m.part("text/html") == first.part("text/html") for m in again)
    assert all(m.rcpt_tos == ["martinez@example.org"] for m in mailbox.received)
