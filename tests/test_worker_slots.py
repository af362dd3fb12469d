"""How the worker runs workflow tasks: few at once (workflow code runs under the GIL), and a slow
activation on a busy machine is not taken for a deadlock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.workflows.support import unique
from worker import (
    DEADLOCK_TIMEOUT_S,
    build_worker,
    cached_runs_from_env,
    default_cached_runs,
    default_workflow_task_slots,
    memory_limit,
    workflow_task_slots_from_env,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_follows_the_cpus_not_the_sdks_hundred() -> None:
    assert default_workflow_task_slots() == max(4, 2 * (os.cpu_count() or 1))
    assert workflow_task_slots_from_env({}) == default_workflow_task_slots()
    assert workflow_task_slots_from_env({"WFA_WORKFLOW_TASK_SLOTS": " 12 "}) == 12


@pytest.mark.parametrize("value", ["0", "1", "-3", "many", "2.5", "1001"])
def test_a_slot_count_that_cannot_work_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="WFA_WORKFLOW_TASK_SLOTS must be a whole number from 2 to 1000"):
        workflow_task_slots_from_env({"WFA_WORKFLOW_TASK_SLOTS": value})


def _worker_refuses(variable: str, value: str, message: str) -> None:
    """``worker.py`` with ``variable`` set to ``value`` stops at start: exit 2, ``message``, no trace."""
    env = {**os.environ, variable: value, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "worker.py"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_worker_refuses_to_start_with_it() -> None:
    _worker_refuses(
        "WFA_WORKFLOW_TASK_SLOTS",
        "lots",
        "WFA_WORKFLOW_TASK_SLOTS must be a whole number from 2 to 1000, not 'lots'",
    )


@pytest.mark.parametrize(("value", "cached"), [(" 200 ", 200), ("1", 1), ("100000", 100_000)])
def test_the_cached_runs_bound_the_worker_memory_is_sized_by(value: str, cached: int) -> None:
    assert cached_runs_from_env({"WFA_MAX_CACHED_RUNS": value}, memory=GIB) == cached


GIB = 1024**3


@pytest.mark.parametrize(
    ("memory", "cached"),
    [(None, 1000), (64 * GIB, 1000), (8 * GIB, 1000), (2 * GIB, 256), (GIB, 128), (GIB // 8, 16), (1, 16)],
)
def test_by_default_the_cache_holds_what_half_the_memory_does(memory: int | None, cached: int) -> None:
    # The README's *Memory*: a run that keeps its whole state budget costs the worker about 4 MB.
    assert default_cached_runs(memory) == cached
    if memory is not None:
        assert cached_runs_from_env({}, memory=memory) == cached


def test_the_memory_is_the_cgroup_limit_at_most_the_machine(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683792 kB\nMemFree:        1000 kB\n")
    machine = 24683792 * 1024
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    (v1 / "memory").mkdir(parents=True)
    v2.mkdir()
    none.mkdir()
    (v2 / "memory.max").write_text("1073741824\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert memory_limit(v2, meminfo) == GIB
    assert memory_limit(v1, meminfo) == machine
    assert memory_limit(none, meminfo) == machine
    (v2 / "memory.max").write_text("max\n")
    assert memory_limit(v2, meminfo) == machine
    assert memory_limit(none, tmp_path / "absent") is None
    # This machine: a limit the worker's default follows.
    here = memory_limit()
    assert here is not None
    assert here > 0
    assert cached_runs_from_env({}) == default_cached_runs(here)


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5", "100001"])
def test_the_worker_refuses_a_cache_size_that_cannot_work(value: str) -> None:
    _worker_refuses(
        "WFA_MAX_CACHED_RUNS",
        value,
        f"WFA_MAX_CACHED_RUNS must be a whole number from 1 to 100000, not {value!r}",
    )


async def test_build_worker_applies_it(client: Client) -> None:
    async with httpx.AsyncClient() as http_client:
        default = build_worker(client, unique("tq-slots"), http_client)
        chosen = build_worker(client, unique("tq-slots"), http_client, max_concurrent_workflow_tasks=7)
    assert default.config()["max_concurrent_workflow_tasks"] == default_workflow_task_slots()
    assert chosen.config()["max_concurrent_workflow_tasks"] == 7


SLOW_S = 3.0
"""An activation this long: past the SDK's own 2 s deadlock limit, well under ours."""


@workflow.defn(sandboxed=False)
class SlowActivation:
    """Holds its thread for ``SLOW_S`` in one activation, as a bounded but heavy workflow task does
    on a machine whose CPUs are busy with other work."""

    @workflow.run
    async def run(self) -> str:
        time.sleep(SLOW_S)  # noqa: ASYNC251 - blocking on purpose: the activation is what is slow
        return "done"


async def test_a_slow_activation_is_not_a_deadlock(client: Client) -> None:
    task_queue = unique("tq-slow")
    async with httpx.AsyncClient() as http_client:
        worker = build_worker(client, task_queue, http_client, extra_workflows=[SlowActivation])
        assert worker._workflow_worker._deadlock_timeout_seconds == DEADLOCK_TIMEOUT_S  # type: ignore[union-attr]
        async with worker:
            handle = await client.start_workflow(
                SlowActivation.run,
                id=unique("slow"),
                task_queue=task_queue,
                task_timeout=timedelta(seconds=30),
            )
            assert await handle.result() == "done"
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert failed == []
