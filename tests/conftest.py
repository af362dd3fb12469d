"""Shared fixtures: real Temporal servers from the pip-installed binaries (no downloads).

* ``temporal_env`` / ``client``: a ``temporal server start-dev`` (in-memory) with the product's search
  attributes registered. Full server semantics, including visibility queries (``list_workflows``).
* ``time_skipping_env``: the Java time-skipping test server. It rejects unknown search attributes
  ("search attribute X is not defined") until they are added through the operator service, which
  this fixture does. It does not implement ``ListSearchAttributes`` nor ``ListWorkflowExecutions``,
  so visibility queries must use ``temporal_env``.

All async fixtures and tests share one session event loop (see ``[tool.pytest.ini_options]``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.devserver import ensure_search_attributes, find_temporal_cli, find_test_server
from workflows.search_attributes import ALL_KEYS

try:  # Written in parallel by another change; conftest must keep working until it lands.
    from tests.helpers.http_server import http_server  # noqa: F401
except ModuleNotFoundError as exc:
    if exc.name != "tests.helpers.http_server":
        raise


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A local dev server (in-memory persistence) with the product's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    try:
        # start_local passes --search-attribute flags; verify (and repair) rather than trust.
        await ensure_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    """Client of ``temporal_env`` (pydantic data converter, namespace ``default``)."""
    return temporal_env.client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server with the product's search attributes added."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_test_server(),
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    """A task queue unique to the test, so workers of different tests never steal each other's tasks."""
    return f"tq-{uuid4()}"
