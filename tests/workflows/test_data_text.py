"""Data keeps its text across every boundary into a run (the trust model: data is inert).

A secret reference that arrives as data is text: the engine escapes it where data enters a run
(``interpreter/inert.py``) and the activity turns the escape back into the text. The victim here is
an honest user whose data happens to hold that text (a commit message quoting a template, a ticket
pasted into a form): every action must receive exactly the text that was sent, never a mangled
copy, and the tenant's secret must never take its place. Each boundary is crossed once on the dev
server with a real HTTP receiver: a run's input, an event delivered to a waiting run, an event that
starts a run, a subflow's input and a subflow's output. The gateway's crossings (a webhook, an
event, a row change) are in ``tests/gateway``.

Events and subflows keep the text from interpreter generation 28 (patch ``data-text``): before, each
crossing escaped it once more, so an action got ``$${secret:X}`` for ``${secret:X}``. The patch is
never asked: a run of an earlier generation goes on as it began (checked here too), with no marker.
"""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from interpreter.engine import PATCH_DATA_TEXT
from interpreter.inert import make_inert
from interpreter.state import RunState
from starter.client import FlowClient
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, eventually, start, status, unique
from workflows.generic import ENGINE_LEVEL

CANARY = "s3cr3t-canary-of-the-tenant"
TEXT = "a ${secret:API_TOKEN} b $${secret:API_TOKEN} c $$${secret:API_TOKEN} d"
"""Data that looks like a reference, an escaped one and an escaped escape: each must arrive as is."""


def post(server: RecordingServer, path: str, note: str, step_id: str = "post") -> dict[str, object]:
    server.route("POST", path, [(200, {}, {"ok": True})] * 4)
    return {
        "id": step_id,
        "type": "task",
        "action": "http",
        "input": {"url": f"{server.url}{path}", "method": "POST", "json": {"note": note}},
    }


def received(server: RecordingServer, path: str) -> object:
    [request] = server.requests(path=path)
    assert CANARY.encode() not in request.body
    assert isinstance(request.json, dict)
    return request.json["note"]


async def patches(client: Client, workflow_id: str) -> str:
    """The ids of the patches a run's history records (its markers)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return " ".join(
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data.decode()
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    )


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFA_SECRET_API_TOKEN", CANARY)


async def test_a_runs_input_reaches_the_action_as_its_text(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    doc = definition(unique("text-input"), [post(http_server, "/input", "{{ input.note }}")])
    result = await (await start(client, task_queue, doc, {"note": TEXT})).result()
    assert result.state == RunState.COMPLETED, result.error
    assert received(http_server, "/input") == TEXT


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 27])
async def test_an_event_delivered_to_a_waiting_run_reaches_the_action_as_its_text(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer, level: int
) -> None:
    event_type, key = unique("text.event"), unique("key")
    doc = definition(
        unique("text-wait"),
        [
            {
                "id": "answer",
                "type": "wait_for_event",
                "event": event_type,
                "key": "{{ input.key }}",
                # Its fields are checked against the text (before, the escape counted too).
                "fields": [
                    {
                        "name": "note",
                        "type": "string",
                        "max_length": len(TEXT if level == ENGINE_LEVEL else make_inert(TEXT)),
                    }
                ],
                "timeout": "2m",
            },
            post(http_server, "/event", "{{ steps.answer.output.data.note }}"),
        ],
    )
    handle = await start(client, task_queue, doc, {"key": key}, engine_level=level)
    await eventually(
        lambda: status(handle),
        lambda s: any(w.subscribed for w in s.waiting_events),
        timeout=30,
        what="the run waiting for its event",
    )
    flows = FlowClient(client, task_queue=task_queue)
    published = await flows.publish_event(event_type, key, {"note": TEXT}, start_triggers=False)
    assert published.delivered_to == [handle.id]
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    # A run of generation 27 goes on as before: the mailbox's escape and its own.
    assert received(http_server, "/event") == (TEXT if level == ENGINE_LEVEL else make_inert(TEXT))
    assert PATCH_DATA_TEXT not in await patches(client, handle.id)


async def test_an_event_that_starts_a_run_reaches_the_action_as_its_text(
    flows: FlowClient, store_worker: Worker, http_server: RecordingServer
) -> None:
    event_type = unique("text.start")
    store = await flows.definitions()
    await store.register(
        {
            "name": unique("text-trigger"),
            "triggers": [{"type": "event", "event": event_type}],
            "steps": [post(http_server, "/trigger", "{{ input.note }}")],
        },
        "test",
        activate=True,
    )
    published = await flows.publish_event(event_type, "k", {"note": TEXT})
    [workflow_id] = published.started
    result = await flows.client.get_workflow_handle(workflow_id).result()
    assert result["state"] == RunState.COMPLETED.value, result
    assert received(http_server, "/trigger") == TEXT


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 27])
async def test_a_subflows_input_and_output_reach_the_actions_as_their_text(
    flows: FlowClient, store_worker: Worker, http_server: RecordingServer, level: int
) -> None:
    flows.engine_level = level
    child = unique("text-child")
    store = await flows.definitions()
    await store.register(
        {
            "name": child,
            "steps": [post(http_server, "/child", "{{ input.note }}")],
            "output": {"note": "{{ input.note }}"},
        },
        "test",
        activate=True,
    )
    parent = {
        "name": unique("text-parent"),
        "steps": [
            {"id": "sub", "type": "subflow", "definition": child, "input": {"note": "{{ input.note }}"}},
            post(http_server, "/parent", "{{ steps.sub.output.output.note }}"),
        ],
    }
    run = await flows.start_run(parent, {"note": TEXT})
    result = await run.result()
    assert result.state == RunState.COMPLETED, result.error
    if level == ENGINE_LEVEL:
        assert received(http_server, "/child") == TEXT
        assert received(http_server, "/parent") == TEXT
    else:  # generation 27 as before: escaped again at each crossing
        assert received(http_server, "/child") == make_inert(TEXT)
        assert received(http_server, "/parent") == make_inert(make_inert(TEXT))
    assert PATCH_DATA_TEXT not in await patches(flows.client, run.workflow_id)


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 29])
async def test_a_persons_reason_and_comment_reach_the_action_as_their_text(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer, level: int
) -> None:
    """An approver's reason and a task's comment are data like the form's (generation 30, patch
    ``decision-text``): before, they were taken as typed, and an escaped reference reached the
    receiver a ``$`` short (found by an attacker's probe). A run of generation 29 goes on so."""
    doc = definition(
        unique("text-decision"),
        [
            {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
            {"id": "call", "type": "human_task", "assignee": "alice", "title": "Call the family"},
            post(http_server, "/reason", "{{ steps.review.output.reason }}", "post_reason"),
            post(http_server, "/comment", "R: {{ steps.call.output.comment }}", "post_comment"),
        ],
    )
    handle = await start(client, task_queue, doc, {}, engine_level=level)
    flows = FlowClient(client, task_queue=task_queue)
    await eventually(lambda: status(handle), lambda s: bool(s.pending_approvals), what="the approval")
    await flows.approve(handle.id, "alice", step_id="review", reason=TEXT)
    await eventually(
        lambda: status(handle),
        lambda s: any(p.step_id == "call" for p in s.pending_approvals),
        what="the task",
    )
    await flows.complete_task(handle.id, "alice", step_id="call", comment=TEXT)
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    # Before: a "$" short where the text held an escaped reference (nothing ever resolved).
    sent = TEXT if level == ENGINE_LEVEL else TEXT.replace("$${", "${")
    assert received(http_server, "/reason") == sent
    assert received(http_server, "/comment") == f"R: {sent}"
    # The run keeps them as it keeps data: inert (escaped once); the patch is recorded nowhere.
    outputs = {record.id: record.output for record in result.steps}
    kept = make_inert(TEXT) if level == ENGINE_LEVEL else TEXT
    assert (outputs["review"]["reason"], outputs["call"]["comment"]) == (kept, kept)
    assert "decision-text" not in await patches(client, handle.id)
