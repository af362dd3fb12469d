"""Fixtures for the end-to-end workflow tests on the time-skipping server.

The servers themselves (``temporal_env``, ``client``, ``time_skipping_env``), ``http_server``,
``http_client`` and ``worker`` (a worker on the dev server, on the test's own task queue) come from
``tests/conftest.py``; here are the time-skipping server's client and worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from worker import build_worker


@pytest_asyncio.fixture(loop_scope="session")
async def ts_client(time_skipping_env: WorkflowEnvironment) -> Client:
    """Client of the time-skipping test server."""
    return time_skipping_env.client


@pytest_asyncio.fixture(loop_scope="session")
async def ts_worker(
    time_skipping_env: WorkflowEnvironment, task_queue: str, http_client: httpx.AsyncClient
) -> AsyncIterator[Worker]:
    """A worker on the time-skipping test server, on the test's queue."""
    async with build_worker(
        time_skipping_env.client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)
    ) as running:
        yield running
