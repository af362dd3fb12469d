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
    cpu_limit,
    default_cached_runs,
    default_workflow_task_slots,
    memory_limit,
    per_namespace,
    workflow_task_slots_from_env,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_follows_the_cpus_not_the_sdks_hundred() -> None:
    assert default_workflow_task_slots() == max(4, 2 * cpu_limit())
    assert [default_workflow_task_slots(cpus) for cpus in (1, 2, 3, 32)] == [4, 4, 6, 64]
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
    root = tmp_path / "cgroup"
    own = tmp_path / "self"

    def limit(cgroup_line: str, files: dict[str, str]) -> int | None:
        for relative, text in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text + "\n")
        own.write_text(cgroup_line + "\n")
        found = memory_limit(root, meminfo, own)
        for relative in files:
            (root / relative).unlink()
        return found

    # v2, at the root of a container's cgroup namespace, or on the process's own cgroup (a
    # systemd service's MemoryMax=) or one above it; "max" is no limit.
    assert limit("0::/", {"memory.max": str(GIB)}) == GIB
    assert (
        limit("0::/system.slice/wfa.service", {"system.slice/wfa.service/memory.max": str(2 * GIB)})
        == 2 * GIB
    )
    assert (
        limit("0::/system.slice/wfa.service", {"system.slice/memory.max": str(GIB), "memory.max": "max"})
        == GIB
    )
    assert limit("0::/", {"memory.max": "max"}) == machine
    # v1, in the memory hierarchy the process's line names; its "no limit" is a huge number.
    assert limit("4:memory:/jobs/abc", {"memory/jobs/abc/memory.limit_in_bytes": str(GIB)}) == GIB
    assert limit("4:memory:/", {"memory/memory.limit_in_bytes": "9223372036854771712"}) == machine
    # Another controller's path is not the memory one's.
    assert limit("3:cpuset:/jobs/abc", {"memory/jobs/abc/memory.limit_in_bytes": str(GIB)}) == machine
    assert memory_limit(root, tmp_path / "absent", own) is None
    # This machine: a limit the worker's default follows.
    here = memory_limit()
    assert here is not None
    assert here > 0
    assert cached_runs_from_env({}) == default_cached_runs(here)


def test_the_cpus_are_the_cgroup_quota_at_most_the_affinity(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    own = tmp_path / "self"

    def cpus(cgroup_line: str, files: dict[str, str], affinity: int = 32) -> int:
        for relative, text in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text + "\n")
        own.write_text(cgroup_line + "\n")
        found = cpu_limit(root, own, affinity=affinity)
        for relative in files:
            (root / relative).unlink()
        return found

    # A container limited to 2 CPUs on a 32-core host (docker --cpus=2: cgroup v2 cpu.max) has 2,
    # so the default is 4 slots, not 64; a fraction rounds up; "max" is no quota.
    assert cpus("0::/", {"cpu.max": "200000 100000"}) == 2
    assert default_workflow_task_slots(cpus("0::/", {"cpu.max": "200000 100000"})) == 4
    assert cpus("0::/", {"cpu.max": "150000 100000"}) == 2
    assert cpus("0::/", {"cpu.max": "50000 100000"}) == 1
    assert cpus("0::/", {"cpu.max": "max 100000"}) == 32
    # The process's own cgroup or one above it (a systemd service's CPUQuota=), the lowest wins.
    assert cpus("0::/system.slice/wfa.service", {"system.slice/wfa.service/cpu.max": "400000 100000"}) == 4
    assert (
        cpus(
            "0::/system.slice/wfa.service",
            {"system.slice/cpu.max": "300000 100000", "system.slice/wfa.service/cpu.max": "max 100000"},
        )
        == 3
    )
    # v1: the cpu hierarchy's quota over its period; -1 is no quota.
    v1 = {"cpu/jobs/abc/cpu.cfs_quota_us": "300000", "cpu/jobs/abc/cpu.cfs_period_us": "100000"}
    assert cpus("5:cpu,cpuacct:/jobs/abc", v1) == 3
    # ... also where the hierarchy is mounted as cpu,cpuacct with no cpu link to it.
    joint = {
        "cpu,cpuacct/jobs/abc/cpu.cfs_quota_us": "200000",
        "cpu,cpuacct/jobs/abc/cpu.cfs_period_us": "100000",
    }
    assert cpus("5:cpu,cpuacct:/jobs/abc", joint) == 2
    assert cpus("5:cpu,cpuacct:/", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}) == 32
    # Another controller's path is not the cpu one's; the affinity bounds a larger quota.
    assert cpus("4:memory:/jobs/abc", v1) == 32
    assert cpus("0::/", {"cpu.max": "800000 100000"}, affinity=2) == 2
    # Nothing readable: the affinity alone. This machine: at least one, at most its CPUs.
    assert cpu_limit(tmp_path / "absent", tmp_path / "absent", affinity=6) == 6
    assert 1 <= cpu_limit() <= (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("total", "namespaces", "least", "each"),
    [(8, 1, 2, 8), (8, 2, 2, 4), (9, 2, 2, 4), (8, 10, 2, 2), (1000, 3, 1, 333), (1, 4, 1, 1)],
)
def test_a_process_serving_several_namespaces_shares_its_figures(
    total: int, namespaces: int, least: int, each: int
) -> None:
    assert per_namespace(total, namespaces, least) == each


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
