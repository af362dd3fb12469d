"""Fairness between tenants on a real dev server with fairness on (``limited_server``).

One tenant floods the task queue (300 activities queued at once) while a worker serves two at a
time; another tenant's one-step run then starts. With the tenant as Temporal's fairness key, the
other tenant's step is dispatched long before the flood has drained; the same probe run in the
flooding tenant's own name waits behind the flood (first in, first out within a key). The test
compares how much of the flood was done when each probe finished (a count, not a time, so a busy
machine cannot make it flaky) and prints the latencies it measured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from interpreter.state import RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from tests.workflows.limited_server import limited_env  # noqa: F401
from tests.workflows.support import Handle, definition, eventually, unique
from worker import build_activities, workflow_runner
from workflows.generic import RunDefinitionWorkflow
from workflows.priority import fairness_key, run_priority

FLOOD_RUNS = 3
FLOOD_ITEMS = 100  # per run (the foreach concurrency limit): 300 activities queued at once
ACTIVITY_SLOTS = 2


@pytest_asyncio.fixture(loop_scope="session")
async def fair_client(limited_env: WorkflowEnvironment) -> Client:  # noqa: F811
    return limited_env.client


@pytest_asyncio.fixture(loop_scope="session")
async def slow_worker(fair_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    """A worker that runs only two activities at a time, so a flood queues up in the server."""
    async with (
        httpx.AsyncClient() as http_client,
        Worker(
            fair_client,
            task_queue=task_queue,
            workflows=[RunDefinitionWorkflow],
            activities=build_activities(http_client),
            max_concurrent_activities=ACTIVITY_SLOTS,
            workflow_runner=workflow_runner(),
            graceful_shutdown_timeout=timedelta(0),
        ) as running,
    ):
        yield running


async def _start(
    client: Client, task_queue: str, document: dict[str, Any], tenant: str, **kwargs: Any
) -> Handle:
    run = RunInput(definition=load_definition(document), options=RunOptions(tenant=tenant))
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        run,
        id=unique(str(document["name"])),
        task_queue=task_queue,
        priority=run_priority(tenant, run.definition.priority),
        execution_timeout=timedelta(minutes=10),
        **kwargs,
    )


def _flood(name: str) -> dict[str, Any]:
    return definition(
        name,
        [
            {
                "id": "fan",
                "type": "foreach",
                "items": f"range({FLOOD_ITEMS}) | list",
                "concurrency": FLOOD_ITEMS,
                "steps": [
                    {"id": "work", "type": "task", "action": "echo", "input": {"value": 1, "sleep_s": 0.05}}
                ],
            }
        ],
    )


def _probe(name: str) -> dict[str, Any]:
    return definition(name, [{"id": "ping", "type": "task", "action": "echo", "input": {"value": "pong"}}])


async def _done(handle: Handle) -> int:
    """Flood activities completed, read from the run's history on the server (the server writes
    each completion as it happens; no worker has to answer, unlike the ``status`` query)."""
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.HasField("activity_task_completed_event_attributes"))


async def _flood_done(handles: list[Handle]) -> int:
    return sum(await asyncio.gather(*(_done(h) for h in handles)))


async def _probe_during_flood(client: Client, task_queue: str, probe_tenant: str) -> tuple[float, int]:
    """Starts the flood (tenant ``bulk``), then the probe as ``probe_tenant``; returns the probe's
    latency and how many flood activities were done when it finished."""
    floods = [await _start(client, task_queue, _flood(unique("flood")), "bulk") for _ in range(FLOOD_RUNS)]
    # The flood is queued in the server once every item is scheduled and a few have run.
    await eventually(lambda: _flood_done(floods), lambda n: n >= 4, timeout=60, what="flood under way")
    began = time.monotonic()
    probe = await _start(client, task_queue, _probe(unique("probe")), probe_tenant)
    result = await probe.result()
    latency = time.monotonic() - began
    done = await _flood_done(floods)
    assert result.state == RunState.COMPLETED
    for flood in floods:  # the flood completes too: fairness delays nobody for ever
        assert (await flood.result()).state == RunState.COMPLETED
    return latency, done


async def test_another_tenants_step_is_not_queued_behind_a_flood(
    fair_client: Client, slow_worker: Worker, task_queue: str
) -> None:
    began = time.monotonic()
    baseline = await _start(fair_client, task_queue, _probe(unique("probe")), "small")
    assert (await baseline.result()).state == RunState.COMPLETED
    alone = time.monotonic() - began

    other_latency, other_done = await _probe_during_flood(fair_client, task_queue, "small")
    same_latency, same_done = await _probe_during_flood(fair_client, task_queue, "bulk")

    total = FLOOD_RUNS * FLOOD_ITEMS
    print(
        f"\nprobe step latency: alone {alone:.2f}s; during a {total}-activity flood of another tenant"
        f" {other_latency:.2f}s ({other_done}/{total} flood activities done by then); in the flooding"
        f" tenant's own name {same_latency:.2f}s ({same_done}/{total} done by then)"
    )
    # Qualitative, by counts: the other tenant's probe finished before the flood queued ahead of it;
    # in the flood's own fairness key it waited for that part of the flood.
    assert other_done < same_done


def test_a_long_tenant_name_is_a_fairness_key_within_temporals_limit() -> None:
    long_name = "t" * 100
    key = fairness_key(long_name)
    assert len(key.encode()) <= 64
    assert key != fairness_key("t" * 99)
    assert fairness_key("acme") == "acme"
