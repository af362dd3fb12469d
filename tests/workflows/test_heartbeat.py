"""A step's ``heartbeat`` timeout on the dev server: every action heartbeats while it runs.

The victim: a definition that declares ``heartbeat`` (so a dead worker is noticed sooner than its
``start_to_close``) around an ``http`` call whose receiver takes longer than the heartbeat timeout
to answer. Before, only the ``echo`` action heartbeated: Temporal timed out every attempt of the
call though its worker was alive, retried it, and the receiver got the request once per attempt
(found by a review: a 4-second answer under a 2-second heartbeat failed both attempts, two POSTs).
"""

from __future__ import annotations

import time

from temporalio.client import Client
from temporalio.worker import Worker

from interpreter.state import RunState, StepStatus
from tests.helpers.http_server import RecordedRequest, RecordingServer, Response
from tests.workflows.support import definition, record, start, unique

ANSWER_AFTER_S = 25.0
HEARTBEAT = "10s"


async def test_an_action_slower_than_its_heartbeat_timeout_completes_once(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    def slow(request: RecordedRequest) -> Response:
        del request
        time.sleep(ANSWER_AFTER_S)  # the server's own thread: the worker's loop runs on
        return (200, {}, {"ok": True})

    http_server.route("POST", "/slow", slow)
    doc = definition(
        unique("heartbeat"),
        [
            {
                "id": "post",
                "type": "task",
                "action": "http",
                "input": {
                    "method": "POST",
                    "url": f"{http_server.url}/slow",
                    "json": {"a": 1},
                    "timeout_s": 60,
                },
                "timeouts": {"start_to_close": "90s", "heartbeat": HEARTBEAT},
                "retry": {"preset": "constant", "initial_interval": "1s", "maximum_attempts": 2},
                "on_failure": "continue",
            }
        ],
    )
    result = await (await start(client, task_queue, doc)).result()
    post = record(result, "post")
    assert result.state == RunState.COMPLETED, result.error
    assert (post.status, post.attempts, post.error_type) == (StepStatus.COMPLETED, 1, None), post
    assert len(http_server.requests("POST", "/slow")) == 1
