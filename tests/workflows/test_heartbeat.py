"""A step's ``heartbeat`` timeout on the dev server: every action heartbeats while it runs.

The victim: a definition that declares ``heartbeat`` (so a dead worker is noticed sooner than its
``start_to_close``) around an ``http`` call whose receiver takes longer than the heartbeat timeout
to answer. Before, only the ``echo`` action heartbeated: Temporal timed out every attempt of the
call though its worker was alive, retried it, and the receiver got the request once per attempt
(found by a review: a 4-second answer under a 2-second heartbeat failed both attempts, two POSTs).
"""

from __future__ import annotations

import asyncio
import itertools
import time

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Worker

from interpreter.state import RunState, StepStatus
from tests.helpers.http_server import RecordedRequest, RecordingServer, Response
from tests.workflows.support import definition, record, start, unique

ANSWER_AFTER_S = 25.0
HEARTBEAT = "10s"


async def _heartbeats_seen(handle: WorkflowHandle) -> list[float]:
    """When the server received each heartbeat of the run's pending activity (seconds since the
    epoch, each once), sampled every 0.25 s until the run has no pending activity."""
    seen: set[float] = set()
    while True:
        description = await handle.describe()
        pending = description.raw_description.pending_activities
        if description.status != WorkflowExecutionStatus.RUNNING or (not pending and seen):
            return sorted(seen)
        if pending and pending[0].HasField("last_heartbeat_time"):
            seen.add(pending[0].last_heartbeat_time.ToMicroseconds() / 1e6)
        await asyncio.sleep(0.25)


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
    handle = await start(client, task_queue, doc)
    beats = await _heartbeats_seen(handle)
    result = await handle.result()
    post = record(result, "post")
    assert result.state == RunState.COMPLETED, result.error
    assert (post.status, post.attempts, post.error_type) == (StepStatus.COMPLETED, 1, None), post
    assert len(http_server.requests("POST", "/slow")) == 1
    # They reached the server every 3.3 s (a third of the timeout), not held back to every 8 s by
    # the SDK (80% of it, leaving 2 s to arrive: on a busy machine the server timed the call out
    # and the retry sent the POST again). 6 s allows for the machine's load.
    gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
    assert len(beats) >= 4, beats
    assert max(gaps) < 6.0, gaps
