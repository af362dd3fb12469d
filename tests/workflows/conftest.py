"""Fixtures for the end-to-end workflow tests: an in-process worker on each test server.

The servers themselves (``temporal_env``, ``client``, ``time_skipping_env``), ``http_server`` and
``http_client`` come from ``tests/conftest.py``; here each test gets a worker on its own task queue.
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
async def worker(client: Client, task_queue: str, http_client: httpx.AsyncClient) -> AsyncIterator[Worker]:
    """A worker for the generic workflow and every action on the dev server, on the test's queue."""
    # No grace period: a test that leaves an activity sleeping must not wait for it at teardown.
    async with build_worker(
        client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)
    ) as running:
        yield running


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
