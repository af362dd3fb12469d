"""``wfa events send`` and the waits it resumes, on the dev server; ``wfa status`` shows a wait."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from interpreter.state import RunInput, RunOptions
from interpreter.validate import load_definition
from starter.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE, main
from tests.workflows.support import eventually, record, status, unique
from workflows.generic import RunDefinitionWorkflow


class Wfa:
    def __init__(self, capsys: pytest.CaptureFixture[str], address: str, task_queue: str) -> None:
        self._capsys, self._prefix = capsys, ["--address", address, "--task-queue", task_queue]

    def sync(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main([*self._prefix, *args])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(self.sync, *args)


@pytest.fixture
def wfa(capsys: pytest.CaptureFixture[str], temporal_env: WorkflowEnvironment, task_queue: str) -> Wfa:
    return Wfa(capsys, temporal_env.client.service_client.config.target_host, task_queue)


async def test_events_send_resumes_the_wait_once_and_status_shows_it(
    wfa: Wfa, client: Client, task_queue: str, worker: None
) -> None:
    family = unique("fam")
    document = {
        "name": unique("cli-events"),
        "steps": [
            {
                "id": "answer",
                "type": "wait_for_event",
                "event": "family.answered",
                "key": "{{ input.family_id }}",
                "fields": ["answer"],
                "timeout": "1m",
            }
        ],
    }
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(definition=load_definition(document), input={"family_id": family}, options=RunOptions()),
        id=unique("cli-evt"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=2),
    )
    await eventually(
        lambda: status(handle), lambda s: any(w.subscribed for w in s.waiting_events), what="the wait"
    )
    code, out, _ = await wfa("status", handle.id)
    assert code == EXIT_OK
    assert "Waiting for events" in out
    assert f"answer: family.answered with key {family}" in out
    code, out, err = await wfa(
        "events",
        "send",
        "family.answered",
        family,
        "--data",
        '{"answer": "yes"}',
        "--id",
        "cli-1",
        "--no-triggers",
    )
    assert (code, err) == (EXIT_OK, "")
    assert "resumed 1 waiting run(s)" in out
    assert f"delivered to {handle.id}" in out
    code, out, _ = await wfa(
        "events", "send", "family.answered", family, "--id", "cli-1", "--no-triggers", "--json"
    )
    assert code == EXIT_OK
    assert json.loads(out)["duplicate"] is True
    result = await handle.result()
    assert record(result, "answer").output["data"] == {"answer": "yes"}


async def test_events_send_refuses_bad_input_with_exit_2(wfa: Wfa) -> None:
    code, _, err = await wfa("events", "send", "bad type!", "k", "--no-triggers")
    assert code == EXIT_BAD_INPUT
    assert "event type" in err
    code, _, err = await wfa("events", "send", "a.b", "k", "--data", "[1]", "--no-triggers")
    assert code == EXIT_BAD_INPUT
    assert "JSON object" in err
    code, _, err = await wfa("events", "send", "a.b", "k", "--data", json.dumps({"x": "y" * 70_000}))
    assert code == EXIT_BAD_INPUT
    assert "bytes" in err
    assert "Traceback" not in err


def test_events_send_to_an_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--address", "127.0.0.1:1", "events", "send", "a.b", "k", "--no-triggers"]) == EXIT_UNAVAILABLE
    )


async def test_events_send_says_the_event_was_delivered_when_the_registry_is_down(
    wfa: Wfa, worker: None
) -> None:
    code, _, err = await wfa(
        "events", "send", "family.answered", unique("fam"), "--database-url", "postgresql://u:p@127.0.0.1:1/x"
    )
    assert code == EXIT_UNAVAILABLE
    assert "was delivered to 0 waiting run(s)" in err
    assert "publish it again with the same id" in err
    assert "Traceback" not in err


async def test_an_event_no_worker_takes_is_no_worker_in_words(
    temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe: with no worker on the mailbox's task queue, the publication failed after 30 s with
    the SDK's WorkflowUpdateRPCTimeoutOrCancelledError (the gateway's 500), not NoWorkerError
    (its 503, "send it again")."""
    from starter import events
    from starter.client import FlowClient
    from starter.errors import NoWorkerError

    monkeypatch.setattr(events, "PUBLISH_TIMEOUT_S", 2.0)
    flows = FlowClient(temporal_env.client, task_queue=unique("nobody-polls"), tenant="acme")
    with pytest.raises(NoWorkerError, match="no worker ran the event mailbox within 2s"):
        await flows.publish_event("order.paid", "o-1", {"x": 1}, start_triggers=False)
