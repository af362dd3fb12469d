"""Reproduces issue 12: status queries of flooded runs on a slow worker hit nondeterminism errors.

A dev server with lowered limits (tests/workflows/limited_server.py), a worker with two activity
slots and a small workflow cache (runs are evicted, so each status query replays the run), three
runs of a 100-item foreach, and a client polling every run's ``status`` query. ``--deadlock-s``
lowers the SDK's deadlock check (2 s) so that the replay for a query trips it without CPU hogs.

Prints counts of query outcomes and the worker's warnings; exit code 1 when a nondeterminism error
was seen. Usage: ``python -m bench.query_replay_repro [--deadlock-s 0.05] [--cache 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import faulthandler
import logging
import random
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from interpreter.state import RunInput, RunOptions
from interpreter.validate import load_definition
from tests.workflows.limited_server import start_limited_server
from worker import build_activities, workflow_runner
from workflows.generic import RunDefinitionWorkflow


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" | {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        self.messages[text[:300]] += 1


def _flood(name: str, items: int) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {
                "id": "fan",
                "type": "foreach",
                "items": f"range({items}) | list",
                "concurrency": items,
                "steps": [
                    {"id": "work", "type": "task", "action": "echo", "input": {"value": 1, "sleep_s": 0.05}}
                ],
            }
        ],
    }


async def _poll(
    handle: WorkflowHandle[Any, Any], outcomes: collections.Counter[str], done: asyncio.Event
) -> None:
    while not done.is_set():
        try:
            await handle.query(RunDefinitionWorkflow.status, rpc_timeout=timedelta(seconds=10))
            outcomes["ok"] += 1
        except Exception as err:
            text = str(err)
            kind = (
                "TMPRL1100"
                if "TMPRL1100" in text
                else "TMPRL1101"
                if "TMPRL1101" in text
                else type(err).__name__
            )
            outcomes[kind] += 1
            if kind == "TMPRL1100":
                outcomes[f"  {handle.id}: {text[:600]}"] += 1
        await asyncio.sleep(random.uniform(0.05, 0.3))


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--deadlock-s", type=float, default=None, help="the SDK's deadlock check (default 2 s)"
    )
    parser.add_argument("--cache", type=int, default=2, help="max_cached_workflows")
    parser.add_argument("--save-dir", type=Path, default=None, help="write the runs' histories here")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--dump-after-s", type=float, default=400, help="dump all threads' stacks after this")
    parser.add_argument("--pollers", type=int, default=2, help="concurrent status pollers per run")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.dump_after_s, exit=False)

    collector = _Collect()
    logging.getLogger("temporalio").addHandler(collector)
    live = logging.StreamHandler(sys.stderr)
    live.setLevel(logging.WARNING)
    live.setFormatter(logging.Formatter("PYLOG %(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("temporalio").addHandler(live)
    env = await start_limited_server()
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        client: Client = env.client
        queue = f"repro-{random.randrange(10**9)}"
        async with httpx.AsyncClient() as http_client:
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[RunDefinitionWorkflow],
                activities=build_activities(http_client),
                max_concurrent_activities=2,
                max_cached_workflows=args.cache,
                workflow_runner=workflow_runner(),
                graceful_shutdown_timeout=timedelta(0),
            )
            if args.deadlock_s is not None:
                # The SDK's wall-clock deadlock check (TMPRL1101), 2 s; lowered to trip it on purpose.
                worker._workflow_worker._deadlock_timeout_seconds = args.deadlock_s  # type: ignore[union-attr]
            async with worker:
                handles = []
                for i in range(args.runs):
                    run = RunInput(
                        definition=load_definition(_flood(f"flood{i}", args.items)),
                        options=RunOptions(tenant="bulk"),
                    )
                    handles.append(
                        await client.start_workflow(
                            RunDefinitionWorkflow.run,
                            run,
                            id=f"flood-{i}-{random.randrange(10**9)}",
                            task_queue=queue,
                            execution_timeout=timedelta(minutes=10),
                        )
                    )
                done = asyncio.Event()
                pollers = [
                    asyncio.create_task(_poll(h, outcomes, done))
                    for h in handles
                    for _ in range(args.pollers)
                ]
                waiting = asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
                while not waiting.done():
                    await asyncio.wait([waiting], timeout=15)
                    lengths = [len((await h.fetch_history()).events) for h in handles]
                    print("history lengths", lengths, dict(outcomes), flush=True)
                results = await waiting
                done.set()
                await asyncio.gather(*pollers, return_exceptions=True)
                for h, r in zip(handles, results, strict=True):
                    print(h.id, "->", getattr(r, "state", r))
                    if args.save_dir is not None:
                        text = (await h.fetch_history()).to_json()
                        await asyncio.to_thread((args.save_dir / f"{h.id}.json").write_text, text)
    finally:
        await env.shutdown()
    print("query outcomes:")
    for key, count in sorted(outcomes.items()):
        print(f"  {count:5d}  {key}")
    print("worker warnings:")
    for key, count in collector.messages.most_common(25):
        print(f"  {count:5d}  {key}")
    return 1 if outcomes["TMPRL1100"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
