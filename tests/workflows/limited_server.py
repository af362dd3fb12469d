"""A dev server of its own with lowered history limits and fairness on, for the long-life tests.

The shared ``temporal_env`` runs with Temporal's default limits (a run is terminated past 51,200
events, continue-as-new is suggested at 4,096): a test of continue-as-new at those sizes would take
minutes. This server lowers them by dynamic configuration, the way the README tells an operator to
rehearse it, so a run that did not continue as new would be terminated by the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.devserver import (
    DYNAMIC_CONFIG,
    EPHEMERAL_STARTUP_TIMEOUT,
    ensure_search_attributes,
    find_temporal_cli,
)
from workflows.search_attributes import ALL_KEYS

HISTORY_ERROR = 1500
"""Events after which the server terminates a run (the default is 51,200)."""
HISTORY_WARN = 1000
SUGGEST_CONTINUE_AS_NEW = 400
"""Events after which the server suggests continuing as new (the default is 4,096)."""

LIMITS = {
    "limit.historyCount.error": HISTORY_ERROR,
    "limit.historyCount.warn": HISTORY_WARN,
    "limit.historyCount.suggestContinueAsNew": SUGGEST_CONTINUE_AS_NEW,
    # Fairness keys are honoured by matching only when this is on (server 1.29+): the demo's dev
    # server's own setting, so the fairness tests run what it ships.
    **DYNAMIC_CONFIG,
    # One partition per task queue: fairness orders each partition's backlog, and a poller takes
    # from one partition at a time, so with several the measured order depends on the partition a
    # task lands in.
    "matching.numTaskqueueReadPartitions": 1,
    "matching.numTaskqueueWritePartitions": 1,
}


async def start_limited_server(limits: Mapping[str, object] = LIMITS) -> WorkflowEnvironment:
    """A dev server (in-memory) with ``limits`` as its dynamic configuration and the product's
    search attributes registered; the caller shuts it down (the tests' fixture, the benchmarks)."""
    args: list[str] = []
    for key, value in limits.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
        dev_server_existing_path=find_temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
        dev_server_extra_args=args,
    )
    try:
        await ensure_search_attributes(env.client)
    except BaseException:
        await env.shutdown()
        raise
    return env


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server (in-memory) with :data:`LIMITS` and the product's search attributes."""
    env = await start_limited_server()
    try:
        yield env
    finally:
        await env.shutdown()
