"""A forged continue-as-new snapshot, on a real dev server: whoever can start the generic workflow
can hand it any ``continuation``. Before, a snapshot with ids that were not a list (the consumed
event ids, the spent decision tokens) or a time without a UTC offset (a step record's start, a
carried approval's deadline) raised a ``TypeError`` in the workflow: its task failed and was
retried for ever, the run stuck. Now each fails the run in words (``ContinuationError``, naming
what is wrong); a snapshot the interpreter wrote itself is accepted as before.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from interpreter.continuation import SNAPSHOT_VERSION
from interpreter.state import ForeachBatch, RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import failure_of, status, unique
from workflows.generic import RunDefinitionWorkflow

STARTED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _document() -> dict[str, Any]:
    return {
        "name": unique("forged"),
        "version": 1,
        "steps": [
            {
                "id": "gate",
                "type": "approval",
                "approvers": ["alice"],
                "timeout": "1h",
                "on_timeout": "approve",
                "escalation": {"after": "30m", "add_approvers": ["bob"]},
            },
            {"id": "after", "type": "set", "vars": {"done": True}},
        ],
    }


def _waiting_at_gate(deadline: str) -> dict[str, Any]:
    """A snapshot of a run waiting at ``gate`` (as the interpreter writes one), deadline as given."""
    return {
        "version": SNAPSHOT_VERSION,
        "generation": 1,
        "started_at": STARTED.isoformat(),
        "position": 0,
        "approval": {
            "position": 0,
            "view": {
                "step_id": "gate",
                "path": "gate",
                "approvers": ["alice"],
                "since": STARTED.isoformat(),
                "deadline": deadline,
            },
        },
        "kinds": {"consumed_events": []},
    }


def _forge(change: str) -> dict[str, Any]:
    deadline = (STARTED + timedelta(hours=1)).isoformat()
    if change == "deadline without offset":
        return _waiting_at_gate(deadline.removesuffix("+00:00"))
    snapshot = _waiting_at_gate(deadline)
    if change == "consumed events not a list":
        snapshot["kinds"]["consumed_events"] = 5
    elif change == "spent tokens not a list":
        snapshot["kinds"]["used_decision_tokens"] = True
    elif change == "since at the end of the calendar":
        # start + after * (escalations + 1) overflowed: OverflowError, the task failed for ever.
        snapshot["approval"]["view"]["since"] = "9999-12-31T23:59:00+00:00"
        snapshot["approval"]["view"].pop("deadline")
    elif change == "escalations negative":
        snapshot["approval"]["view"]["escalations"] = -1_000_000_000
    elif change == "record start without offset":
        snapshot["records"] = [
            {
                "id": "gate",
                "path": "gate",
                "type": "approval",
                "name": "gate",
                "status": "waiting",
                "started_at": "2026-12-01T09:00:00",
            }
        ]
    return snapshot


async def _start(
    client: Client,
    task_queue: str,
    continuation: dict[str, Any] | None,
    document: dict[str, Any] | None = None,
    batch: ForeachBatch | None = None,
) -> Any:
    """Starts a run as a raw client can: the snapshot or the fan-out slice as given."""
    run = RunInput(
        definition=load_definition(document or _document()),
        options=RunOptions(engine_level=6),
        continuation=continuation,
        batch=batch,
    )
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        run,
        id=unique("forged"),
        task_queue=task_queue,
        # Before the fix the run did not fail: its task failed again and again until this ended it.
        execution_timeout=timedelta(seconds=60),
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("consumed events not a list", "'consumed_events' are not a list of ids"),
        ("spent tokens not a list", "'used_decision_tokens' are not a list of ids"),
        ("record start without offset", "Continuation.records.0.started_at (2026-12-01T09:00:00) has no UTC"),
        ("deadline without offset", "Continuation.approval.view.deadline (2026-12-01T10:00:00) has no UTC"),
        (
            "since at the end of the calendar",
            "Continuation.approval.view.since (9999-12-31T23:59:00+00:00) is outside the years 1900-7000",
        ),
        ("escalations negative", "escalations\n  Input should be greater than or equal to 0"),
    ],
)
async def test_a_forged_snapshot_fails_the_run_in_words_instead_of_failing_its_task_for_ever(
    client: Client, task_queue: str, worker: Worker, change: str, named: str
) -> None:
    handle = await _start(client, task_queue, _forge(change))
    cause, _ = await failure_of(handle)
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == "ContinuationError"
    assert named in cause.message
    assert cause.message.startswith("cannot continue the run: ")


async def test_a_snapshot_as_the_interpreter_writes_it_goes_on_at_the_carried_approval(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """The control: the same snapshot unforged resumes the wait (and times out into ``approve``
    an hour after it began, long past: at once)."""
    handle = await _start(client, task_queue, _forge("none"))
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"done": True}


async def test_a_cancel_accepted_while_the_run_switched_cancels_the_next_run_on_its_own(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """A ``cancel_run`` accepted while the run continued as new travels in the snapshot; whoever
    sent it may not follow with Temporal's cancellation of the next run (its client died), so that
    run asks for it itself, as a ``cancel`` signal does. Before, it went on with the request
    recorded: here it passed the gate (timed out into ``approve``) and completed."""
    snapshot = _forge("none")
    snapshot["cancel_request"] = {"actor": "ops-carol", "reason": "no longer needed"}
    handle = await _start(client, task_queue, snapshot)
    cause, _ = await failure_of(handle)
    assert isinstance(cause, CancelledError), cause
    final = await status(handle)
    assert final.state == RunState.CANCELLED
    assert final.cancelled_by is not None
    assert (final.cancelled_by.actor, final.cancelled_by.reason) == ("ops-carol", "no longer needed")
    assert final.output is None or final.output.get("done") is None
    assert (final.pending_approvals, final.current_steps) == ([], [])  # the carried gate is over too


# Data a raw client forges into a snapshot or a fan-out slice is data: inert, whatever the
# definition's templates do with it. The definition below is a reviewed, pinned one; only the data
# is forged. No secret is configured on the worker: a live reference fails its step with
# SecretNotFound, an inert one reaches the receiver as text.
FORGED_REFERENCE = "${secret:FORGED_NOT_CONFIGURED}"


def _posting(url: str, body: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "post",
        "type": "task",
        "action": "http",
        "input": {"url": url, "method": "POST", "json": body},
    }


async def test_data_forged_into_a_snapshot_is_inert(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/hook", lambda request: (200, {}, {"ok": True}))
    doc = _document()
    doc["steps"][1] = _posting(
        f"{http_server.url}/hook", {"note": "{{ vars.note }}", "last": "{{ vars.deep }}"}
    )
    snapshot = _forge("none")
    snapshot["vars"] = {"note": FORGED_REFERENCE, "deep": {"a": [FORGED_REFERENCE]}}
    handle = await _start(client, task_queue, snapshot, doc)
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    [request] = http_server.requests(path="/hook")
    assert request.json == {"note": FORGED_REFERENCE, "last": {"a": [FORGED_REFERENCE]}}


async def test_data_forged_into_a_fan_out_slice_is_inert(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/hook", lambda request: (200, {}, {"ok": True}))
    body = {
        "item": "{{ item }}",
        "n": "{{ input.n }}",
        "v": "{{ vars.v }}",
        "prev": "{{ steps.prev.output }}",
    }
    doc = {
        "name": unique("forged-slice"),
        "version": 1,
        "steps": [
            # The slice's child runs the foreach only: its earlier step's output comes with the slice.
            {"id": "prev", "type": "task", "action": "echo", "input": {"value": 1}},
            {
                "id": "each",
                "type": "foreach",
                "items": "input.list",
                "steps": [_posting(f"{http_server.url}/hook", body)],
            },
        ],
    }
    batch = ForeachBatch(
        step_id="each",
        path="each",
        offset=0,
        items=[FORGED_REFERENCE],
        concurrency=1,
        input={"n": FORGED_REFERENCE},
        vars={"v": FORGED_REFERENCE},
        steps={"prev": {"output": FORGED_REFERENCE}},
    )
    handle = await _start(client, task_queue, None, doc, batch)
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    [request] = http_server.requests(path="/hook")
    assert request.json == dict.fromkeys(body, FORGED_REFERENCE)
