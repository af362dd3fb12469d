"""P6: a 10,000-item foreach of activity calls through the product vs a hand-written fan-out.

    python -m bench.fanout                                  # 10,000 items, 3 rounds (A B, B A, A B)
    python -m bench.fanout --items 2000 --repeat 2          # smaller
    python -m bench.fanout --json out.json                  # raw figures too

Starts its own dev server (in memory) and one worker in this process serving the product and the
baseline. Each round runs, one after the other on the same server and worker (A first in odd
rounds, B first in even ones, so a drift in the machine's load favours neither):

* **A**: the product's generic workflow, started as ``FlowClient`` starts a run (this build's
  generation, its default result shape), on a definition with one ``foreach`` over ``input.items``
  (one ``echo`` task per item, its output the item), ``batch_size`` items per child workflow
  and ``concurrency`` items in flight across children (it fans out: the list is longer than
  ``fan_out_above``);
* **B**: :mod:`bench.fanout_baseline`, a hand-written parent and child workflow making the same
  activity calls in the same batches with the same concurrency split.

Before every run the benchmark waits ``--settle`` seconds (default 40: the calls' 30 s
``start_to_close`` plus the 10 s workflow task timeout), so the timers the previous run left on the
server (one per activity and per workflow task, firing after the run has ended) have fired before
the next run starts. The dev server handles those timers on the one connection of its in-memory
store, and without the pause whichever variant ran second paid for the first one's (measured: the
server's ``GetTimerTasks`` rose from 1.5 ms to 41 ms a call over three rounds without it).

Before the rounds, one uncounted warm-up run of each at ``--warmup-items``. Reported per variant:
items/s (items / wall seconds from start to result, as the client sees it) and this process's CPU
seconds per 1,000 items (worker and client; the dev server is a separate process), medians over the
rounds, and the ratio A/B of the median throughputs (goal: >= 0.9) plus the per-round ratios. Both
outputs are checked (the items, in order). Never run by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bench.fanout_baseline import PARENT_WORKFLOW_NAME, FanoutChild, FanoutParent
from interpreter.state import RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from starter.client import default_result_steps
from starter.devserver import EPHEMERAL_STARTUP_TIMEOUT, ensure_search_attributes, find_temporal_cli
from worker import build_worker
from workflows.generic import ENGINE_LEVEL, RunDefinitionWorkflow
from workflows.search_attributes import ALL_KEYS


def definition_data(items: int, batch_size: int, concurrency: int) -> dict[str, Any]:
    """A's definition: one foreach of ``echo`` tasks, fanned out in batches."""
    return {
        "name": "p6-fanout",
        "limits": {"max_foreach_items": 10000, "max_step_executions": max(500, 2 * batch_size)},
        "steps": [
            {
                "id": "loop",
                "type": "foreach",
                "items": "input.items",
                "max_items": max(items, 1),
                "concurrency": concurrency,
                "batch_size": batch_size,
                "fan_out_above": 0,
                "steps": [{"id": "e", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}],
            }
        ],
        "output": "{{ steps.loop.output }}",
    }


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def run_a(
    client: Client, task_queue: str, items: list[int], batch_size: int, concurrency: int
) -> float:
    run = RunInput(
        definition=load_definition(definition_data(len(items), batch_size, concurrency)),
        input={"items": items},
        # As FlowClient starts a run: at this build's generation, its default result shape.
        options=RunOptions(engine_level=ENGINE_LEVEL, result_steps=default_result_steps(ENGINE_LEVEL)),
    )
    began = time.monotonic()
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run, run, id=f"p6-a-{uuid4().hex[:8]}", task_queue=task_queue
    )
    result = await handle.result()
    elapsed = time.monotonic() - began
    if result.state != RunState.COMPLETED or result.output != items:
        raise SystemExit(f"A returned a wrong result: {result.state} {str(result.output)[:200]}")
    return elapsed


async def run_b(
    client: Client, task_queue: str, items: list[int], batch_size: int, concurrency: int
) -> float:
    began = time.monotonic()
    handle = await client.start_workflow(
        PARENT_WORKFLOW_NAME,
        [items, batch_size, concurrency],
        id=f"p6-b-{uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=list,
    )
    result = await handle.result()
    elapsed = time.monotonic() - began
    if result != items:
        raise SystemExit(f"B returned a wrong result: {str(result)[:200]}")
    return elapsed


async def main(args: argparse.Namespace) -> int:
    if not args.no_bytecode_cache:
        # The sandbox re-imports the workflow modules for every run (here every child): give them a
        # bytecode cache, as bench.run gives its workers (this machine sets PYTHONDONTWRITEBYTECODE).
        sys.dont_write_bytecode = False
        sys.pycache_prefix = tempfile.mkdtemp(prefix="p6-pycache-")
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
        dev_server_existing_path=find_temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    figures: dict[str, Any] = {
        "items": args.items,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "settle_s": args.settle,
        "load_before": os.getloadavg(),
        "rounds": [],
    }
    runners = {"A": run_a, "B": run_b}
    try:
        await ensure_search_attributes(env.client)
        task_queue = f"p6-{uuid4().hex[:8]}"
        async with (
            httpx.AsyncClient() as http_client,
            build_worker(
                env.client,
                task_queue,
                http_client,
                extra_workflows=[FanoutParent, FanoutChild],
                graceful_shutdown_timeout=timedelta(0),
            ),
        ):
            warm = list(range(args.warmup_items))
            for name, runner in runners.items():
                seconds = await runner(env.client, task_queue, warm, args.batch_size, args.concurrency)
                print(
                    f"warm-up {name}: {len(warm)} items in {seconds:.1f} s ({len(warm) / seconds:.0f} items/s)"
                )
                figures[f"warmup_{name}_s"] = seconds
            items = list(range(args.items))
            for r in range(args.repeat):
                row: dict[str, Any] = {}
                # A B, then B A, ...: a drift in the machine's load favours neither variant.
                order = list(runners.items()) if r % 2 == 0 else list(reversed(runners.items()))
                for name, runner in order:
                    await asyncio.sleep(args.settle)
                    cpu = _cpu()
                    seconds = await runner(env.client, task_queue, items, args.batch_size, args.concurrency)
                    cpu = _cpu() - cpu
                    row[name] = {"s": seconds, "items_s": len(items) / seconds, "cpu_s": cpu}
                    print(
                        f"round {r + 1} {name}: {seconds:.1f} s, {len(items) / seconds:.1f} items/s,"
                        f" {1000 * cpu / len(items):.2f} CPU s per 1,000 items, load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
                figures["rounds"].append(row)
    finally:
        await env.shutdown()
    figures["load_after"] = os.getloadavg()
    rounds = figures["rounds"]
    a = statistics.median(row["A"]["items_s"] for row in rounds)
    b = statistics.median(row["B"]["items_s"] for row in rounds)
    pairs = [row["A"]["items_s"] / row["B"]["items_s"] for row in rounds]
    a_cpu = statistics.median(1000 * row["A"]["cpu_s"] / args.items for row in rounds)
    b_cpu = statistics.median(1000 * row["B"]["cpu_s"] / args.items for row in rounds)
    figures.update(
        a_items_s=a, b_items_s=b, ratio=a / b, pairs=pairs, a_cpu_per_1000=a_cpu, b_cpu_per_1000=b_cpu
    )
    print(
        f"\n{args.items} items, batch {args.batch_size}, concurrency {args.concurrency}, {len(rounds)} rounds:"
        f"\n  A (product)  {a:.1f} items/s, {a_cpu:.2f} CPU s per 1,000 items"
        f"\n  B (baseline) {b:.1f} items/s, {b_cpu:.2f} CPU s per 1,000 items"
        f"\n  throughput A/B {a / b:.3f} (per round: {', '.join(f'{p:.3f}' for p in pairs)}; goal >= 0.9)"
        f"\n  load average before {figures['load_before'][0]:.1f}, after {figures['load_after'][0]:.1f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup-items", type=int, default=1000)
    parser.add_argument(
        "--settle", type=float, default=40.0, help="seconds to wait before every counted run (timers fire)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-bytecode-cache", action="store_true", help="keep the inherited environment")
    return parser.parse_args(argv)


if __name__ == "__main__":
    code = asyncio.run(main(parse()))
    sys.stdout.flush()
    os._exit(code)  # the SDK's native threads can abort interpreter finalisation (seen here once)
