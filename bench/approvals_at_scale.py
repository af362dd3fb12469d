"""P3: thousands of runs waiting at an approval, then all approved.

    python -m bench.approvals_at_scale                    # 10,000 runs of A, then of B
    python -m bench.approvals_at_scale --runs 2000 --variants A

Starts one dev server (``starter.devserver``, SQLite file in a temp dir; ``--in-memory`` for the
CLI with in-memory SQLite) and, per variant, a fresh worker subprocess (:mod:`bench.bench_worker`,
i.e. ``worker.build_worker``) on its own task queue with ``--max-cached-workflows`` as its sticky
cache. Then, per variant:

1. **park**: ``--runs`` runs are started with at most ``--concurrency`` starts in flight;
2. **wait**: until all of them are waiting, counted by visibility
   (``AwaitingApproval = true`` on the variant's task queue);
3. **drain**: all are approved through the client (A: ``FlowClient.approve``, the ``decide``
   update; B: the baseline's ``approve`` update), at most ``--concurrency`` in flight, and the
   benchmark waits until none is running. *Drain time* is from the first approval to the moment
   visibility counts no running run;
4. **count**: completed, failed, terminated, timed out and still running (visibility); for A also
   runs whose ``RunState`` is ``completed``. A run that is not completed is *lost*.

The worker's resident set (``VmRSS`` from ``/proc/<pid>/status``) is sampled every 0.25 s from the
worker's start to the end of the variant; the peak is reported. The dev server's RSS is sampled too
(context: it holds all the runs).

Variants: ``A``, the generic workflow running an approval then one ``echo`` task
(:func:`definition_data`), started with ``FlowClient.start_run``; ``B``,
:class:`bench.approval_baseline.ApprovalBaselineWorkflow`, the same written by hand.

Only binds 127.0.0.1. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.approval_baseline import APPROVER, ApprovalBaselineWorkflow
from bench.run import Server, WorkerProcess
from starter.client import FlowClient, NoWorkerError
from starter.errors import RunClosedError


def definition_data() -> dict[str, Any]:
    """A's definition: an approval, then one ``echo`` task."""
    return {
        "name": "p3-approval",
        "steps": [
            {"id": "approve", "type": "approval", "approvers": [APPROVER], "message": "run {{ input.n }}"},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "{{ input.n }}"}},
        ],
        "output": "{{ steps.after.output }}",
    }


def rss_kib(pid: int) -> int:
    """The process's resident set in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1
            await asyncio.sleep(self.interval)

    def now(self) -> int:
        value = rss_kib(self.pid)
        self.peak = max(self.peak, value)
        return value

    async def stop(self) -> None:
        self.now()
        if self._task is not None:
            self._task.cancel()


@dataclass
class Result:
    variant: str
    runs: int
    park_s: float = 0.0
    wait_s: float = 0.0
    drain_s: float = 0.0
    drained: bool = False
    approve_errors: int = 0
    # A retried approval answered "already ended (completed)": an earlier attempt (whose answer the
    # client did not get in time) took effect.
    approved_on_earlier_attempt: int = 0
    not_approved: int = 0
    completed: int = 0
    failed: int = 0
    terminated: int = 0
    timed_out: int = 0
    running: int = 0
    run_state_completed: int | None = None
    lost: int = 0
    worker_rss_peak_mib: float = 0.0
    worker_rss_mib: dict[str, float] = field(default_factory=dict)
    server_rss_peak_mib: float = 0.0
    worker_cpu_s: float = 0.0
    load: dict[str, float] = field(default_factory=dict)


def cpu_s(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def bounded(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Runs ``job(0..count-1)`` with at most ``concurrency`` in flight."""
    queue = iter(range(count))

    async def lane() -> None:
        for i in queue:
            await job(i)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def wait_count(client: Client, query: str, target: int, what: str, timeout: float) -> bool:
    """Polls visibility until ``query`` counts ``target`` runs (prints progress every ~10 s);
    False when ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    last = 0.0
    while True:
        n = await count(client, query)
        if n == target:
            return True
        if time.monotonic() - last > 10:
            print(f"  {what}: {n} (want {target})", flush=True)
            last = time.monotonic()
        if time.monotonic() > deadline:
            print(f"  {what}: {n} after {timeout:.0f} s, want {target}: giving up", flush=True)
            return False
        await asyncio.sleep(1)


async def measure(variant: str, args: argparse.Namespace, server: Server, tmp: Path) -> Result:
    tag = uuid4().hex[:8]
    tq = f"p3-{variant}-{tag}"
    extra = ["--max-cached-workflows", str(args.max_cached_workflows)]
    worker = WorkerProcess(server.address, tq, None, tmp / "pycache", tmp, extra_args=extra)
    await worker.start()
    sampler, server_sampler = RssSampler(worker.pid), RssSampler(server.pid, interval=1.0)
    sampler.start()
    server_sampler.start()
    result = Result(variant, args.runs)
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    flow = FlowClient(client, task_queue=tq)
    definition = FlowClient.validate(definition_data())
    ids = [f"p3-{variant}-{tag}-{i}" for i in range(args.runs)]
    cpu0 = cpu_s(worker.pid)
    result.load["start"] = os.getloadavg()[0]
    try:
        print(f"{variant}: starting {args.runs} runs on {tq}", flush=True)
        began = time.monotonic()

        async def start(i: int) -> None:
            if variant == "A":
                await flow.start_run(definition, {"n": i}, workflow_id=ids[i])
            else:
                await client.start_workflow(ApprovalBaselineWorkflow.run, i, id=ids[i], task_queue=tq)

        await bounded(args.runs, args.concurrency, start)
        result.park_s = time.monotonic() - began
        if not await wait_count(
            client,
            f'TaskQueue = "{tq}" AND AwaitingApproval = true',
            args.runs,
            f"{variant} waiting",
            max(min(args.timeout, args.stop_at - time.monotonic()), 0),
        ):
            print(
                f"{variant}: not all runs reached the approval in time; approving those that did", flush=True
            )
        result.wait_s = time.monotonic() - began
        result.worker_rss_mib["all_waiting"] = sampler.now() / 1024
        print(
            f"{variant}: waiting phase over after {result.wait_s:.0f} s;"
            f" worker RSS {result.worker_rss_mib['all_waiting']:.0f} MiB",
            flush=True,
        )
        await asyncio.sleep(args.settle)
        result.worker_rss_mib["waiting_settled"] = sampler.now() / 1024
        result.load["waiting"] = os.getloadavg()[0]
        drain0 = time.monotonic()

        async def approve(i: int) -> None:
            if time.monotonic() > args.stop_at:
                result.not_approved += 1
                return
            for attempt in range(5):
                try:
                    if variant == "A":
                        await flow.approve(ids[i], APPROVER)
                    else:
                        await client.get_workflow_handle(ids[i]).execute_update(
                            ApprovalBaselineWorkflow.approve, APPROVER
                        )
                    return
                except NoWorkerError:
                    result.approve_errors += 1
                except Exception as err:  # counted and reported; the run is then counted as lost
                    if isinstance(err, RunClosedError) and attempt > 0 and "(completed)" in str(err):
                        result.approved_on_earlier_attempt += 1
                        return
                    result.approve_errors += 1
                    if attempt == 4:
                        print(f"  approve {ids[i]}: {type(err).__name__}: {err}", flush=True)

        await bounded(args.runs, args.concurrency, approve)
        print(f"{variant}: approvals sent after {time.monotonic() - drain0:.0f} s", flush=True)
        result.drained = await wait_count(
            client,
            f'TaskQueue = "{tq}" AND ExecutionStatus = "Running"',
            0,
            f"{variant} running",
            max(min(args.timeout, args.stop_at - time.monotonic()), 0),
        )
        result.drain_s = time.monotonic() - drain0
        result.worker_cpu_s = cpu_s(worker.pid) - cpu0
        result.load["end"] = os.getloadavg()[0]
        base = f'TaskQueue = "{tq}"'
        result.completed = await count(client, f'{base} AND ExecutionStatus = "Completed"')
        result.failed = await count(client, f'{base} AND ExecutionStatus = "Failed"')
        result.terminated = await count(client, f'{base} AND ExecutionStatus = "Terminated"')
        result.timed_out = await count(client, f'{base} AND ExecutionStatus = "TimedOut"')
        result.running = await count(client, f'{base} AND ExecutionStatus = "Running"')
        if variant == "A":
            result.run_state_completed = await count(client, f"{base} AND RunState = 'completed'")
        # Lost: ended without completing (a run still running when a partial run stopped is not).
        result.lost = (
            args.runs
            - result.running
            - (
                result.completed
                if result.run_state_completed is None
                else min(result.completed, result.run_state_completed)
            )
        )
        # A sample of results, checked in full.
        for i in range(0, args.runs if result.drained else 0, max(1, args.runs // 20)):
            got = await client.get_workflow_handle(ids[i]).result()
            value = got["output"] if variant == "A" else got  # A's RunResult, as JSON
            if str(value) != str(i):
                raise AssertionError(f"{ids[i]} returned {value!r}, expected {i}")
    finally:
        await sampler.stop()
        await server_sampler.stop()
        result.worker_rss_peak_mib = sampler.peak / 1024
        result.server_rss_peak_mib = server_sampler.peak / 1024
        await worker.stop()
    print(f"{variant}: {json.dumps(asdict(result))}", flush=True)
    return result


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="p3-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = Server(tmp, in_memory=args.in_memory)
        await server.start()
        print(f"server: {server.how} at {server.address}; load {os.getloadavg()[0]:.1f}", flush=True)
        results: list[Result] = []
        try:
            for variant in args.variants.split(","):
                results.append(await measure(variant, args, server, tmp))
                if args.json:
                    Path(args.json).write_text(  # noqa: ASYNC240 - once per variant, small
                        json.dumps(
                            {
                                "args": vars(args),
                                "machine": platform.platform(),
                                "results": [asdict(r) for r in results],
                            },
                            indent=2,
                        )
                    )
        finally:
            await server.stop()
    print()
    print(
        f"{args.runs} runs per variant, {args.concurrency} in flight, sticky cache {args.max_cached_workflows}"
    )
    print(
        "| variant | park s | all waiting s | drain s | completed | lost | worker RSS peak MiB | server RSS peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.variant} | {r.park_s:.0f} | {r.wait_s:.0f} | {r.drain_s:.0f} | {r.completed} | {r.lost} |"
            f" {r.worker_rss_peak_mib:.0f} | {r.server_rss_peak_mib:.0f} |"
        )
    by = {r.variant: r for r in results}
    if "A" in by and "B" in by and by["B"].drain_s and by["B"].worker_rss_peak_mib:
        print(
            f"A/B: drain time {by['A'].drain_s / by['B'].drain_s:.2f}x,"
            f" peak worker RSS {by['A'].worker_rss_peak_mib / by['B'].worker_rss_peak_mib:.2f}x"
        )
    for r in results:
        if r.not_approved or r.running:
            print(
                f"{r.variant}: PARTIAL: {r.not_approved} not approved (--stop-after), {r.running} still running"
            )
    ok = all(r.lost == 0 and r.running == 0 and r.worker_rss_peak_mib <= 1024 for r in results)
    print("goal (all complete, 0 lost, worker RSS <= 1 GiB):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50, help="starts/approvals in flight")
    parser.add_argument("--variants", default="A,B", help="A (generic), B (hand-written), comma-separated")
    parser.add_argument(
        "--max-cached-workflows",
        type=int,
        default=500,
        help="the worker's sticky cache (runs kept in memory)",
    )
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait once all are waiting")
    parser.add_argument("--timeout", type=float, default=7200.0, help="per phase, seconds")
    parser.add_argument("--in-memory", action="store_true", help="dev server with in-memory SQLite")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--stop-after",
        type=float,
        default=None,
        help="seconds: send no more approvals and stop waiting after this (a partial run reports what drained)",
    )
    parsed = parser.parse_args()
    parsed.stop_at = time.monotonic() + (parsed.stop_after if parsed.stop_after is not None else 10**9)
    code = asyncio.run(main(parsed))
    sys.stdout.flush()
    os._exit(code)  # see TEMPORAL-FACTS: a client's process may abort at interpreter exit
