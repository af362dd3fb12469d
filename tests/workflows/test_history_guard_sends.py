"""The history guard counts what a run sends (patch ``history-guard-sends``): an activity's or child
run's input that would bring the run's history near Temporal's limit fails its step, and the run
fails in words and compensates, instead of being terminated by the server.

The adversary found it with nothing hostile in the definition: a fanned-out ``foreach`` whose body
reads the run's input (every child run's input holds it, and every child start writes it into the
parent's history: 49 children of a 1.1 MB input made 52 MB, and the server terminated the run, its
compensation never run), and 60 steps at once each sending 1.9 MB (all started in one workflow task,
before the step guard could see the history grow). The step guard is checked as a step starts; a
fan-out is one step.

Real dev server, the product's worker. The ceiling is 46 MiB; these tests lower it to 3 MiB (the
workflow runs outside the sandbox, so the module's constant is what the worker reads) and send
600 KB inputs, to reach it in seconds.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import workflows.generic
from interpreter.state import RunState
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import Handle, definition, start, status, unique
from workflows.generic import ENGINE_LEVEL

CEILING = 3 * 1024 * 1024
"""The lowered ceiling, in bytes of history."""

BLOBS = ["x" * 200_000] * 3
"""What each send carries, 600 KB (a template renders at most 256 KiB into one string): about a
fifth of the lowered ceiling."""


def _document(sends: dict[str, Any]) -> dict[str, Any]:
    return definition(
        unique("sends"),
        [
            {
                "id": "book",
                "type": "task",
                "action": "echo",
                "input": {"value": "booked"},
                "compensate": [
                    {"id": "unbook", "type": "task", "action": "echo", "input": {"value": "unbooked"}}
                ],
            },
            sends,
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "after"}},
        ],
    )


FAN_OUT = {
    "id": "score",
    "type": "foreach",
    "items": "range(12) | list",
    "fan_out_above": 1,
    "batch_size": 1,
    "concurrency": 1,
    # The body reads the run's input, so every child run's input holds the whole of it.
    "steps": [{"id": "rate", "type": "task", "action": "echo", "input": {"value": "{{ input.tag }}"}}],
}


def _at_once(url: str) -> dict[str, Any]:
    """Twelve steps started in one workflow task, each posting 600 KB (a small answer comes back:
    the run's state stays small, only what it sends grows the history)."""
    return {
        "id": "push",
        "type": "foreach",
        "items": "range(12) | list",
        "concurrency": 12,
        "steps": [
            {
                "id": "send",
                "type": "task",
                "action": "http",
                "input": {"url": url, "method": "POST", "json": {"parts": "{{ input.blobs }}"}},
            }
        ],
    }


async def _fails_near_the_ceiling(handle: Handle) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == "HistoryLimit", cause.message
    assert f"past {CEILING:,} bytes" in cause.message
    described = await handle.describe()
    assert described.status is not None
    assert described.status.name == "FAILED"  # not TERMINATED by the server
    assert described.history_length is not None
    final = await status(handle)
    assert final.state == RunState.FAILED
    by_path = {r.path: r for r in final.steps}
    assert by_path["compensate/book/unbook"].output == "unbooked"  # the compensation ran
    assert "after" not in by_path
    return cause


@pytest.mark.parametrize("level", [14, ENGINE_LEVEL])
async def test_a_fan_out_whose_children_carry_the_run_input_stops_at_the_ceiling(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    monkeypatch.setattr(workflows.generic, "HISTORY_SEND_CEILING", CEILING)
    handle = await start(
        client, task_queue, _document(FAN_OUT), {"tag": "t", "blobs": BLOBS}, engine_level=level
    )
    cause = await _fails_near_the_ceiling(handle)
    assert "the input of the child run" in cause.message
    assert "step 'score'" in cause.message
    # It stopped part way: the child it did not start is neither the first nor past the last.
    refused = re.search(r"/batch-(\d+)", cause.message)
    assert refused is not None, cause.message
    assert 0 < int(refused.group(1)) < 12, cause.message


async def test_steps_started_at_once_stop_sending_at_the_ceiling(
    client: Client,
    task_queue: str,
    worker: Worker,
    http_server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workflows.generic, "HISTORY_SEND_CEILING", CEILING)
    http_server.route("POST", "/push", lambda request: (200, {}, {"ok": True}))
    doc = _document(_at_once(f"{http_server.url}/push"))
    handle = await start(client, task_queue, doc, {"blobs": BLOBS})
    cause = await _fails_near_the_ceiling(handle)
    # It stopped part way: the step refused is neither the first nor past the last. (Steps in
    # flight when it failed were cancelled, on a busy machine before their calls went out.)
    refused = re.search(r"step 'push\[(\d+)\]\.send'", cause.message)
    assert refused is not None, cause.message
    assert 0 < int(refused.group(1)) < 12, cause.message
    final = await status(handle)
    sent = [r for r in final.steps if r.path.endswith(".send") and r.status.value == "completed"]
    assert len(sent) <= len(http_server.requests(path="/push")) < 12
