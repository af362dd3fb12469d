"""Durability: SIGKILL the worker process while runs are mid-step; a new worker finishes every run.

The receiving system honours ``Idempotency-Key``: a step whose attempt was killed after the request
left may be delivered again, but always with the same key and body, so the effect happens once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from interpreter.state import RunState, StepStatus
from tests.helpers.http_server import RecordedRequest, RecordingServer
from tests.workflows.support import chain_events, definition, eventually, record, start, unique

ROOT = Path(__file__).resolve().parents[2]
RUNS = 10
STEPS = ("reserve", "charge", "ship")
SERVER_LATENCY_S = 0.3


class _Effects:
    """The receiving side's bookkeeping: requests arrived and those still being handled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = 0
        self.in_flight: set[str] = set()

    def __call__(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        key = request.idempotency_key or "?"
        with self.lock:
            self.arrived += 1
            self.in_flight.add(key)
        time.sleep(SERVER_LATENCY_S)
        with self.lock:
            self.in_flight.discard(key)
        return 200, {}, {"applied": request.json}


class _WorkerProcess:
    """``python worker.py`` as a subprocess, configured through the environment like in production."""

    def __init__(self, address: str, task_queue: str, log: Path) -> None:
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "TEMPORAL_TASK_QUEUE": task_queue,
            "WORKER_SHUTDOWN_GRACE_S": "0",
            "PYTHONUNBUFFERED": "1",
            "WFA_OUTBOUND_ALLOW": "127.0.0.0/8",  # the test's HTTP services listen on loopback
        }
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[_WorkerProcess]]:
    """Worker subprocesses started by the test; whatever is still running is stopped afterwards."""
    started: list[_WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


async def test_sigkill_mid_step_then_a_new_worker_completes_every_run_once_per_key(
    client: Client,
    task_queue: str,
    http_server: RecordingServer,
    workers: list[_WorkerProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    effects = _Effects()
    http_server.route("POST", "/effect", effects)
    doc = definition(
        unique("durable"),
        [
            {
                "id": step,
                "type": "task",
                "action": "http",
                "input": {
                    "method": "POST",
                    "url": f"{http_server.url}/effect",
                    "json": {"run": "{{ input.run }}", "step": step},
                },
                # Short timeouts so attempts lost with the killed worker are retried quickly.
                "timeouts": {"start_to_close": "2s"},
                "retry": {"preset": "constant", "initial_interval": "200ms", "maximum_attempts": 20},
            }
            for step in STEPS
        ],
    )
    address = client.service_client.config.target_host
    log = tmp_path / "workers.log"
    workers.append(_WorkerProcess(address, task_queue, log))
    handles = await asyncio.gather(*(start(client, task_queue, doc, {"run": i}) for i in range(RUNS)))

    # Kill once runs are past their first step and several requests are being handled right now.
    async def snapshot() -> tuple[int, set[str]]:
        with effects.lock:
            return effects.arrived, set(effects.in_flight)

    arrived, in_flight = await eventually(
        snapshot,
        lambda s: s[0] > RUNS and len(s[1]) >= RUNS // 2,
        timeout=60,
        interval=0.01,
        what="steps in flight",
    )
    workers[0].kill()
    killed_at = time.monotonic()
    assert workers[0].proc.returncode == -signal.SIGKILL

    workers.append(_WorkerProcess(address, task_queue, log))
    try:
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=90)
    except TimeoutError:
        pytest.fail(f"runs did not finish after the restart; worker log:\n{log.read_text()[-5000:]}")
    recovered_s = time.monotonic() - killed_at

    for result in results:
        assert result.state == RunState.COMPLETED
        assert all(record(result, step).status == StepStatus.COMPLETED for step in STEPS)

    by_key = http_server.effects_by_key("POST", "/effect")
    expected = {f"{h.id}/{h.result_run_id}/{step}" for h in handles for step in STEPS}
    assert set(by_key) == expected, "exactly one idempotency key per run and step"
    for key, deliveries in by_key.items():
        assert len({d.body for d in deliveries}) == 1, f"{key} delivered with different bodies"
        run = int(deliveries[0].json["run"])
        assert key.startswith(handles[run].id)
        assert key.endswith(deliveries[0].json["step"])
    duplicated = {key: len(d) for key, d in by_key.items() if len(d) > 1}
    retried = {
        f"{h.id}/{h.result_run_id}/{step}"
        for h, r in zip(handles, results, strict=True)
        for step in STEPS
        if record(r, step).attempts > 1
    }
    names = {key: f"run{d[0].json['run']}/{d[0].json['step']}" for key, d in by_key.items()}
    with capsys.disabled():
        print(
            f"\n[sigkill] {RUNS} runs x {len(STEPS)} steps: killed the worker after {arrived} requests, {len(in_flight)}"
            f" in flight; all runs completed {recovered_s:.1f}s after the kill; {sum(len(d) for d in by_key.values())}"
            f" deliveries for {len(by_key)} keys; delivered twice or more (same key and body): "
            + (
                ", ".join(
                    f"{names[k]} x{n}" for k, n in sorted(duplicated.items(), key=lambda i: names[i[0]])
                )
                or "none"
            )
        )
    # The kill landed mid-step: requests in flight were lost to the worker and delivered again.
    assert duplicated, "expected the in-flight steps to be redelivered after the kill"
    assert set(duplicated) <= retried, "only steps whose attempt was lost are delivered again"


CHAINS = 6
TURNS = 50


async def test_sigkill_while_loops_continue_as_new_then_a_new_worker_finishes_every_chain_each_turn_once(
    client: Client,
    task_queue: str,
    http_server: RecordingServer,
    workers: list[_WorkerProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Loops whose history budget makes them continue as new every few turns: the worker is killed
    while runs are mid-turn (some of the chains between two of their runs, or just past one), a new
    one finishes every chain, and no turn's effect is made twice: each turn is delivered under one
    idempotency key (a turn redone by the next run of a chain would carry that run's id in a second
    key), with one body."""
    effects = _Effects()
    http_server.route("POST", "/turn", effects)
    doc = definition(
        unique("durable-loop"),
        [
            {"id": "init", "type": "set", "vars": {"n": 0}},
            {
                "id": "turn",
                "type": "task",
                "action": "http",
                "input": {
                    "method": "POST",
                    "url": f"{http_server.url}/turn",
                    "json": {"chain": "{{ input.chain }}", "turn": "{{ vars.n }}"},
                },
                "timeouts": {"start_to_close": "2s"},
                "retry": {"preset": "constant", "initial_interval": "200ms", "maximum_attempts": 20},
                "max_visits": TURNS,
            },
            {"id": "bump", "type": "set", "vars": {"n": "{{ vars.n + 1 }}"}, "max_visits": TURNS},
            {
                "id": "again",
                "type": "condition",
                "if": f"vars.n < {TURNS}",
                "then": {"goto": "turn"},
                "max_visits": TURNS,
            },
        ],
        # About 6 events a turn: the run continues as new every 16 turns or so.
        limits={"history_budget": 100},
    )
    address = client.service_client.config.target_host
    log = tmp_path / "workers.log"
    workers.append(_WorkerProcess(address, task_queue, log))
    handles = await asyncio.gather(
        *(start(client, task_queue, doc, {"chain": i}, engine_level=6) for i in range(CHAINS))
    )

    async def snapshot() -> tuple[int, set[str]]:
        with effects.lock:
            return effects.arrived, set(effects.in_flight)

    # Past the first switch of most chains, with turns being handled right now.
    arrived, in_flight = await eventually(
        snapshot,
        lambda s: s[0] > CHAINS * 18 and len(s[1]) >= CHAINS // 2,
        timeout=90,
        interval=0.01,
        what="turns in flight after the first switches",
    )
    workers[0].kill()
    assert workers[0].proc.returncode == -signal.SIGKILL
    workers.append(_WorkerProcess(address, task_queue, log))
    try:
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=150)
    except TimeoutError:
        pytest.fail(f"chains did not finish after the restart; worker log:\n{log.read_text()[-5000:]}")

    for result in results:
        assert result.state == RunState.COMPLETED
        assert result.output == {"n": TURNS}
    continued = [
        len(await chain_events(h, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW)) for h in handles
    ]
    assert min(continued) >= 2, continued

    by_key = http_server.effects_by_key("POST", "/turn")
    keys_by_turn: dict[tuple[int, int], set[str]] = {}
    for key, deliveries in by_key.items():
        assert len({d.body for d in deliveries}) == 1, f"{key} delivered with different bodies"
        body = deliveries[0].json
        keys_by_turn.setdefault((int(body["chain"]), int(body["turn"])), set()).add(key)
    assert set(keys_by_turn) == {(c, t) for c in range(CHAINS) for t in range(TURNS)}
    twice = {turn: keys for turn, keys in keys_by_turn.items() if len(keys) > 1}
    assert not twice, f"turns made under two keys (redone by another run of the chain): {twice}"
    redelivered = sum(len(d) - 1 for d in by_key.values())
    with capsys.disabled():
        print(
            f"\n[sigkill, continue-as-new] {CHAINS} chains x {TURNS} turns: killed after {arrived} requests,"
            f" {len(in_flight)} in flight; runs per chain {sorted(c + 1 for c in continued)};"
            f" {redelivered} redeliveries under the same key and body"
        )
