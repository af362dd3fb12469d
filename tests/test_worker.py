"""worker.py as operators run it: configuration from the environment, graceful shutdown, clear errors."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from temporalio.client import Client

from interpreter.state import RunState, StepStatus
from tests.helpers.worker_process import exit_code, spawn_worker
from tests.workflows.support import definition, record, start, unique, wait_state


def _worker(address: str, task_queue: str, log: Path, grace_s: str = "30") -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "WORKER_SHUTDOWN_GRACE_S": grace_s,
        "PYTHONUNBUFFERED": "1",
        "WFA_OUTBOUND_ALLOW": "127.0.0.0/8",  # the test's HTTP services listen on loopback
    }
    return spawn_worker(env, log)


async def test_sigterm_lets_the_in_flight_activity_finish(client: Client, tmp_path: Path) -> None:
    task_queue = unique("tq-graceful")
    address = client.service_client.config.target_host
    log = tmp_path / "worker.log"
    first = _worker(address, task_queue, log)
    try:
        steps = [
            {
                "id": "slow",
                "type": "task",
                "action": "echo",
                "input": {"value": "done", "sleep_s": 3},
                "timeouts": {"start_to_close": "30s", "heartbeat": "10s"},
                "retry": {"maximum_attempts": 2},
            }
        ]
        handle = await start(client, task_queue, definition(unique("graceful"), steps))
        await wait_state(handle, RunState.RUNNING, timeout=30)
        for _ in range(100):  # until the activity has been picked up by the worker
            desc = await handle.describe()
            if desc.raw_description.pending_activities and (
                desc.raw_description.pending_activities[0].attempt >= 1
                and desc.raw_description.pending_activities[0].HasField("last_started_time")
            ):
                break
            await asyncio.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        assert await exit_code(first, timeout=30) == 0
        text = log.read_text()
        assert "shutting down" in text
        # Its last line says so, without a logging error (a probe saw "--- Logging error ---").
        assert "worker stopped" in text
        assert "Logging error" not in text
        assert "Traceback" not in text
    finally:
        if first.poll() is None:
            first.kill()
    # The activity finished during the grace period: a new worker only has to finish the workflow,
    # and the step succeeded on its first attempt (it was not cut off and retried).
    second = _worker(address, task_queue, log)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        await exit_code(second, timeout=30)
    assert result.state == RunState.COMPLETED
    slow = record(result, "slow")
    assert (slow.status, slow.attempts, slow.output) == (StepStatus.COMPLETED, 1, "done")


async def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    proc = _worker("127.0.0.1:1", "tq-none", log)
    assert await exit_code(proc, timeout=60) == 2
    assert "cannot reach the Temporal server at 127.0.0.1:1" in log.read_text()
