"""P5: a long loop completes by continue-as-new under lowered history limits.

    python -m bench.loop_continue_as_new                       # 5,000 iterations
    python -m bench.loop_continue_as_new --iterations 600 --error-limit 1500 --suggest 400

Starts its own dev server (in memory) with ``limit.historyCount.error`` and
``limit.historyCount.suggestContinueAsNew`` lowered by ``--dynamic-config-value``, a worker in
this process, and one run of a loop of ``--iterations`` iterations (one ``echo`` activity each,
about 6 history events). The loop needs ``iterations * 6`` events, far more than the server lets a
run hold; it completes only if the run continues as new. Prints the runs in the chain, how many were
terminated (the goal is 0), the largest history of one run and the time taken. Never run by the
test suite (tests/workflows/test_continue_as_new.py runs 600 iterations).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import timedelta
from typing import Any
from uuid import uuid4

import httpx
from temporalio.client import Client, WorkflowExecutionStatus

from interpreter.state import RunInput, RunState
from interpreter.validate import load_definition
from tests.workflows.limited_server import start_limited_server
from worker import build_worker
from workflows.generic import RunDefinitionWorkflow


def loop_definition(iterations: int) -> dict[str, Any]:
    """A loop of ``iterations`` iterations: an activity, a counter, a jump back."""
    return {
        "name": "p5-loop",
        "limits": {"max_step_executions": 10 * iterations},
        "steps": [
            {"id": "init", "type": "set", "vars": {"n": 0}},
            {
                "id": "work",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ vars.n }}"},
                "max_visits": iterations,
            },
            {"id": "bump", "type": "set", "vars": {"n": "{{ vars.n + 1 }}"}, "max_visits": iterations},
            {
                "id": "again",
                "type": "condition",
                "if": f"vars.n < {iterations}",
                "then": {"goto": "work"},
                "max_visits": iterations,
            },
        ],
        "output": {"n": "{{ vars.n }}"},
    }


async def chain(client: Client, workflow_id: str) -> list[tuple[WorkflowExecutionStatus | None, int]]:
    """(status, history length) of every run of the workflow id, oldest first."""
    runs = [
        (e.start_time, e.status, e.history_length)
        async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")
    ]
    return [(status, length) for _, status, length in sorted(runs, key=lambda r: r[0])]


async def main(args: argparse.Namespace) -> int:
    env = await start_limited_server(
        {
            "limit.historyCount.error": args.error_limit,
            "limit.historyCount.warn": max(args.error_limit - 200, 100),
            "limit.historyCount.suggestContinueAsNew": args.suggest,
        }
    )
    try:
        task_queue = f"p5-{uuid4().hex[:8]}"
        async with (
            httpx.AsyncClient() as http_client,
            build_worker(env.client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
        ):
            run = RunInput(definition=load_definition(loop_definition(args.iterations)))
            began = time.monotonic()
            handle = await env.client.start_workflow(
                RunDefinitionWorkflow.run, run, id=f"p5-{uuid4().hex[:8]}", task_queue=task_queue
            )
            result = await handle.result()
            elapsed = time.monotonic() - began
            runs = await chain(env.client, handle.id)
    finally:
        await env.shutdown()
    terminated = sum(1 for status, _ in runs if status == WorkflowExecutionStatus.TERMINATED)
    print(
        f"iterations: {args.iterations}; server limits: error {args.error_limit}, suggest {args.suggest} events"
    )
    print(f"result: {result.state.value}, n = {result.output['n']}")
    print(
        f"runs in the chain: {len(runs)}; terminated: {terminated}; largest history: {max(n for _, n in runs)} events"
    )
    print(f"time: {elapsed:.1f} s ({args.iterations / elapsed:.1f} iterations/s)")
    ok = result.state == RunState.COMPLETED and result.output["n"] == args.iterations and terminated == 0
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--error-limit", type=int, default=2000)
    parser.add_argument("--suggest", type=int, default=500)
    code = asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
    os._exit(code)  # see TEMPORAL-FACTS: a client's process may abort at interpreter exit
