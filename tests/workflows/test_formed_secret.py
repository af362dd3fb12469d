"""Data cannot form a secret reference through a template (the trust model: data is inert).

The adversary writes a webhook body or a form: two values that each hold half of a reference
(``${sec`` and ``ret:API_TOKEN}``), or one that an ordinary filter turns into one
(``$<i>{secret:API_TOKEN}</i>`` through ``striptags``). Each value alone is no reference, so
escaping values where they enter the run does not catch it; the definition's own templates then
write them side by side into an ``http`` step's body. On the dev server, a worker with the tenant's
secret configured, a real HTTP receiver: the body arrives with the text the template made, the
secret never leaves the worker, and the author's own reference in the same step still resolves.
"""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from interpreter.state import RunState
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, start, unique

CANARY = "s3cr3t-canary-of-the-tenant"


async def test_data_halves_and_filtered_data_arrive_as_text_and_the_secret_stays_on_the_worker(
    client: Client,
    task_queue: str,
    worker: Worker,
    http_server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WFA_SECRET_API_TOKEN", CANARY)
    http_server.route("POST", "/hook", [(200, {}, {"ok": True})])
    doc = definition(
        unique("formed-secret"),
        [
            {
                "id": "notify",
                "type": "task",
                "action": "http",
                "input": {
                    "url": f"{http_server.url}/hook",
                    "method": "POST",
                    # The author's reference: resolved, sent only to this host (the control).
                    "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
                    "json": {
                        "text": "Hello {{ input.first }}{{ input.last }}",
                        "joined": "{{ input.first ~ input.last }}",
                        "clean": "{{ input.comment | striptags }}",
                    },
                },
            }
        ],
    )
    data = {"first": "${sec", "last": "ret:API_TOKEN}", "comment": "$<i>{secret:API_TOKEN}</i>"}
    result = await (await start(client, task_queue, doc, data)).result()
    assert result.state == RunState.COMPLETED, result.error

    [request] = http_server.requests(path="/hook")
    assert request.headers["authorization"] == f"Bearer {CANARY}"  # the author's reference resolves
    assert request.json == {
        "text": "Hello ${secret:API_TOKEN}",
        "joined": "${secret:API_TOKEN}",
        "clean": "${secret:API_TOKEN}",
    }
    assert CANARY.encode() not in request.body
