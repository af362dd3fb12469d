"""Fairness between tenants on a real dev server with fairness on (``limited_server``).

One tenant floods the task queue (300 activities queued at once) while a worker serves two at a
time; another tenant's one-step run then starts. With the tenant as Temporal's fairness key, the
other tenant's step is dispatched long before the flood has drained; the same probe run in the
flooding tenant's own name waits behind the flood (first in, first out within a key). The test
compares how much of the flood the server dispatched ahead of each probe's step (a count, read from
the histories, not a time, so a busy machine cannot make it flaky) and prints the latencies it
measured.

Temporal dispatches by priority before it shares between fairness keys, so the attacker here is a
tenant whose definition (and raw client) asks priority 1 for its flood: only a tenant the platform
grants it (``WFA_PRIORITY_TENANTS``) gets a priority above the default.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.common import Priority
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.run_control import priority_granted
from interpreter.state import RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from tests.workflows.limited_server import limited_env  # noqa: F401
from tests.workflows.support import Handle, definition, eventually, unique
from worker import build_activities, tolerate_slow_activations, workflow_runner
from workflows.generic import ENGINE_LEVEL, PATCH_PRIORITY_GRANTS, RunDefinitionWorkflow
from workflows.priority import (
    DEFAULT_PRIORITY,
    PRIORITY_TENANTS_ENV,
    fairness_key,
    granted_priority,
    priority_grants,
    run_priority,
)

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
            activities=[*build_activities(http_client), priority_granted],
            max_concurrent_activities=ACTIVITY_SLOTS,
            workflow_runner=workflow_runner(),
            graceful_shutdown_timeout=timedelta(0),
        ) as running,
    ):
        # The product worker's deadlock limit (build_worker): a flood run's first activation (a
        # 100-item foreach) took over the SDK's 2 s on a loaded machine, and the SDK then could not
        # evict the run, which stayed stuck until its 10-minute timeout (a CI run beside a CPU burner).
        yield tolerate_slow_activations(running)


async def _start(
    client: Client,
    task_queue: str,
    document: dict[str, Any],
    tenant: str,
    *,
    raw_priority: int | None = None,
    raw_weight: float | None = None,
    engine_level: int = 0,
    **kwargs: Any,
) -> Handle:
    """Starts a run as ``FlowClient`` does (the run's priority as granted), or, with
    ``raw_priority`` or ``raw_weight``, as a raw client that puts them on the run itself."""
    run = RunInput(
        definition=load_definition(document), options=RunOptions(tenant=tenant, engine_level=engine_level)
    )
    priority = (
        run_priority(tenant, run.definition.priority, grants=priority_grants(os.environ))
        if raw_priority is None and raw_weight is None
        else Priority(
            priority_key=raw_priority, fairness_key=fairness_key(tenant), fairness_weight=raw_weight
        )
    )
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        run,
        id=unique(str(document["name"])),
        task_queue=task_queue,
        priority=priority,
        execution_timeout=timedelta(minutes=10),
        **kwargs,
    )


def _flood(name: str, **extra: Any) -> dict[str, Any]:
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
        **extra,
    )


def _probe(name: str, **extra: Any) -> dict[str, Any]:
    return definition(
        name, [{"id": "ping", "type": "task", "action": "echo", "input": {"value": "pong"}}], **extra
    )


async def _done(handle: Handle) -> int:
    """Flood activities completed, read from the run's history on the server (the server writes
    each completion as it happens; no worker has to answer, unlike the ``status`` query)."""
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.HasField("activity_task_completed_event_attributes"))


async def _flood_done(handles: list[Handle]) -> int:
    return sum(await asyncio.gather(*(_done(h) for h in handles)))


async def _completed_while_queued(probe: Handle, floods: list[Handle]) -> int:
    """Flood activities the server recorded completed between the probe's step being scheduled and
    its completion: what was dispatched ahead of it (with two slots, a few under fairness; the
    whole backlog first in, first out). Read from the histories' event times (one server's clock),
    so how slowly a busy machine runs the workflow tasks around the step does not count."""
    events = (await probe.fetch_history()).events
    scheduled = next(
        e.event_time.ToDatetime() for e in events if e.HasField("activity_task_scheduled_event_attributes")
    )
    completed = next(
        e.event_time.ToDatetime() for e in events if e.HasField("activity_task_completed_event_attributes")
    )
    histories = await asyncio.gather(*(flood.fetch_history() for flood in floods))
    return sum(
        scheduled < e.event_time.ToDatetime() <= completed
        for history in histories
        for e in history.events
        if e.HasField("activity_task_completed_event_attributes")
    )


async def _probe_during_flood(
    client: Client,
    task_queue: str,
    probe_tenant: str,
    declared: int | None = None,
    raw_priority: int | None = None,
    raw_weight: float | None = None,
) -> tuple[float, int]:
    """Starts the flood (tenant ``bulk``; its definition declaring ``declared``, its runs started
    by a raw client at ``raw_priority`` if given), then the probe as ``probe_tenant``; returns the
    probe's latency and how many flood activities were dispatched ahead of its step
    (:func:`_completed_while_queued`)."""
    extra = {} if declared is None else {"priority": declared}
    floods = [
        await _start(
            client,
            task_queue,
            _flood(unique("flood"), **extra),
            "bulk",
            raw_priority=raw_priority,
            raw_weight=raw_weight,
        )
        for _ in range(FLOOD_RUNS)
    ]
    # The flood is queued in the server once every item is scheduled and a few have run.
    await eventually(lambda: _flood_done(floods), lambda n: n >= 4, timeout=60, what="flood under way")
    began = time.monotonic()
    probe = await _start(client, task_queue, _probe(unique("probe")), probe_tenant)
    result = await probe.result()
    latency = time.monotonic() - began
    assert result.state == RunState.COMPLETED
    for flood in floods:  # the flood completes too: fairness delays nobody for ever
        assert (await flood.result()).state == RunState.COMPLETED
    return latency, await _completed_while_queued(probe, floods)


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
        f"\nprobe latency: alone {alone:.2f}s; during a {total}-activity flood of another tenant"
        f" {other_latency:.2f}s ({other_done}/{total} flood activities dispatched ahead of its step);"
        f" in the flooding tenant's own name {same_latency:.2f}s ({same_done}/{total} ahead of it)"
    )
    # Qualitative, by counts: the other tenant's step went out before the flood queued ahead of
    # it; in the flood's own fairness key it waited for that part of the flood.
    assert other_done < same_done


@pytest.mark.parametrize(
    ("declared", "raw_priority", "raw_weight"),
    [(1, 1, None), (None, 1, None), (None, None, 1000.0)],
    ids=["declared", "inherited", "weighted"],
)
async def test_a_tenant_cannot_put_its_flood_before_another_tenants_steps(
    fair_client: Client,
    slow_worker: Worker,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    declared: int | None,
    raw_priority: int | None,
    raw_weight: float | None,
) -> None:
    """The attacker: tenant ``bulk``'s client starts its flood's runs at priority 1, their
    definition declaring priority 1 or nothing (an activity that names no priority gets its run's
    from the server), or at the default priority with a fairness weight of 1,000 (inherited the
    same way). Had the flood's activities run at 1, or with that weight, the other tenant's step
    (the default priority, 3) would have waited for all 300 of them (priority goes before
    fairness; the weight gives ``bulk`` 1,000 shares to the other's one); ``bulk`` has no grant, so
    the worker schedules them at the default priority and weight and they share."""
    monkeypatch.setenv(PRIORITY_TENANTS_ENV, "someone-else")
    latency, done = await _probe_during_flood(
        fair_client, task_queue, "small", declared=declared, raw_priority=raw_priority, raw_weight=raw_weight
    )
    total = FLOOD_RUNS * FLOOD_ITEMS
    print(
        f"\nprobe latency during a flood of another tenant at priority {raw_priority} (declared {declared},"
        f" weight {raw_weight}): {latency:.2f}s ({done}/{total} flood activities dispatched ahead of its step)"
    )
    assert done < total // 2


async def _scheduled_priorities(handle: Handle) -> tuple[int, list[int], list[str]]:
    """The run's own priority key, its activities' and the patches it recorded (from history)."""
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes.priority.priority_key
    scheduled = [
        e.activity_task_scheduled_event_attributes.priority.priority_key
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    markers = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data.decode()
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    return started, scheduled, markers


async def test_a_priority_above_the_default_is_the_platforms_to_grant(
    fair_client: Client, slow_worker: Worker, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run declares its priority; ``vip`` is granted priorities above the default. The
    server's record of each scheduled activity shows what the worker asked for."""
    monkeypatch.setenv(PRIORITY_TENANTS_ENV, "ops, vip")
    cases = [
        # tenant, declared, engine level, raw client's priority -> run's, activities', patch asked
        ("vip", 1, ENGINE_LEVEL, None, 1, 1, False),
        ("bulk", 1, ENGINE_LEVEL, None, DEFAULT_PRIORITY, DEFAULT_PRIORITY, False),
        ("bulk", 2, 0, 2, 2, DEFAULT_PRIORITY, True),  # a raw client's run: asked, and applied
        ("bulk", 5, 0, None, 5, 5, False),  # a lower priority only yields: as declared
        ("bulk", None, 0, None, 0, 0, False),  # unset: the server's default
        # a raw client's run at 1: its activities would inherit it; explicit unless granted
        ("bulk", None, ENGINE_LEVEL, 1, 1, DEFAULT_PRIORITY, False),
        ("bulk", None, 0, 1, 1, DEFAULT_PRIORITY, True),
        ("vip", None, ENGINE_LEVEL, 1, 1, 0, False),
        ("bulk", 4, ENGINE_LEVEL, 1, 1, 4, False),
    ]
    for tenant, declared, level, raw, run_key, activity_key, asked in cases:
        extra = {} if declared is None else {"priority": declared}
        handle = await _start(
            fair_client,
            task_queue,
            _probe(unique("prio"), **extra),
            tenant,
            raw_priority=raw,
            engine_level=level,
        )
        assert (await handle.result()).state == RunState.COMPLETED
        started, scheduled, markers = await _scheduled_priorities(handle)
        case = (tenant, declared, level)
        assert started == run_key, case
        assert scheduled == [activity_key], case
        assert (PATCH_PRIORITY_GRANTS in " ".join(markers)) is asked, (case, markers)

    # A raw client's fairness weight on the run: its activities name the default weight instead
    # of inheriting it, granted or not (a run without one leaves the weight unset: 0 here).
    for tenant, weight, activity_weight in (("bulk", 1000.0, 1.0), ("vip", 1000.0, 1.0), ("bulk", None, 0.0)):
        handle = await _start(
            fair_client,
            task_queue,
            _probe(unique("weight")),
            tenant,
            raw_weight=weight,
            engine_level=ENGINE_LEVEL,
        )
        assert (await handle.result()).state == RunState.COMPLETED
        history = await handle.fetch_history()
        weights = [
            e.activity_task_scheduled_event_attributes.priority.fairness_weight
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert weights == [activity_weight], (tenant, weight)


def test_priority_grants_are_read_from_the_environment() -> None:
    assert priority_grants({}) == frozenset()
    assert priority_grants({PRIORITY_TENANTS_ENV: " acme, ,ops "}) == {"acme", "ops"}
    grants = priority_grants({PRIORITY_TENANTS_ENV: "acme"})
    assert [granted_priority("acme", p, grants) for p in (None, 1, 2, 3, 5)] == [None, 1, 2, 3, 5]
    assert [granted_priority("globex", p, grants) for p in (None, 1, 2, 3, 5)] == [None, 3, 3, 3, 5]
    everyone = priority_grants({PRIORITY_TENANTS_ENV: "*"})
    assert granted_priority("globex", 1, everyone) == 1
    assert run_priority("globex", 1, grants=grants).priority_key == DEFAULT_PRIORITY
    assert run_priority("acme", 1, grants=grants) == Priority(priority_key=1, fairness_key="acme")


def test_a_long_tenant_name_is_a_fairness_key_within_temporals_limit() -> None:
    long_name = "t" * 100
    key = fairness_key(long_name)
    assert len(key.encode()) <= 64
    assert key != fairness_key("t" * 99)
    assert fairness_key("acme") == "acme"
