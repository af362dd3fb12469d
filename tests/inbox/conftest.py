"""Fixtures of the inbox tests: a worker, decision keys, users, the inbox served on loopback, Chromium.

The inbox app runs under uvicorn as a task on the session's event loop (the Temporal client lives
there), on a free loopback port; Chromium is the operating system's (/usr/bin/chromium), driven by
Playwright without its own browser download (``tests/helpers/browser.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, expect
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities import notify
from activities.outbound import OutboundPolicy
from activities.secrets import Secret, configure_secret_store
from gateway.inbox import InboxConfig, LocalUsers, hash_password, install_inbox
from interpreter.state import RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from starter.client import FlowClient
from starter.mailbox import LocalMailbox
from starter.tokens import generate_keys
from tests.helpers.browser import chromium
from tests.workflows.support import definition, unique, wait_state
from worker import build_worker
from workflows import decision_tokens
from workflows.generic import RunDefinitionWorkflow

# Assertions on pages wait for their condition; on a busy machine a decision's round trip (page,
# gateway, Temporal, worker, back) can take longer than Playwright's default of 5 seconds.
expect.set_options(timeout=30_000)

PASSWORD = "correct horse battery staple"
USERS = [
    {"tenant": "acme", "username": "alice", "name": "Alice Martin", "groups": []},
    {"tenant": "acme", "username": "carol", "name": "Carol Diaz", "groups": ["finance"]},
    {"tenant": "globex", "username": "alice", "name": "Alice of Globex", "groups": ["finance"]},
]


async def waiting_run(
    client: Client, task_queue: str, tenant: str, **options: Any
) -> WorkflowHandle[Any, Any]:
    """A run of ``tenant`` waiting at an approval ``review`` that alice may decide (its assignees
    published, as ``FlowClient`` starts runs), started through ``client``; ``options``: more
    ``RunOptions``."""
    document = definition(
        unique(f"{tenant}-expense"),
        [{"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"}],
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(
            definition=load_definition(document),
            options=RunOptions(tenant=tenant, publish_assignees=True, **options),
        ),
        id=unique(f"{tenant}-run"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=5),
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    return handle


@dataclass
class Inbox:
    """The served inbox: its URL, the keys it mints with, the tenants' clients."""

    url: str
    private_key: dict[str, Any]
    clients: dict[str, FlowClient]


@pytest_asyncio.fixture(loop_scope="session")
async def worker(client: Client, task_queue: str) -> AsyncIterator[Worker]:
    """A worker for the generic workflow on the test's queue."""
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(
            client,
            task_queue,
            http_client,
            graceful_shutdown_timeout=timedelta(0),
            outbound_policy=OutboundPolicy.loopback(),  # the tests' SMTP server is on loopback
        ) as running,
    ):
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def inbox(client: Client, task_queue: str, worker: Worker) -> AsyncIterator[Inbox]:
    """The inbox on a loopback port; the worker verifies the decision tokens it mints."""
    private, public = generate_keys("inbox-test")
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(public))
    users = LocalUsers.from_document({"users": [{**u, "password": hash_password(PASSWORD)} for u in USERS]})
    clients = {t: FlowClient(client, task_queue=task_queue, tenant=t) for t in ("acme", "globex")}
    app = inbox_app(clients, {"acme": private, "globex": private}, authenticator=users)
    try:
        async with serve(app) as base:
            url = f"{base}/inbox"
            notify.configure(private, url)  # the worker's decision_links activity mints and links here
            yield Inbox(url, private, clients)
    finally:
        decision_tokens.configure(None)
        notify.reset()


def inbox_app(
    clients: dict[str, FlowClient], signing_keys: dict[str, dict[str, Any]], **config: Any
) -> FastAPI:
    """An inbox app on plain HTTP: each tenant's client, each tenant's signing key; ``config``:
    more ``InboxConfig`` fields (default: no users, which decision links need none of)."""

    async def client_for(tenant: str) -> FlowClient:
        return clients[tenant]

    app = FastAPI()
    install_inbox(
        app,
        InboxConfig(
            clients=client_for,
            signing_keys=signing_keys,
            secure_cookies=False,  # plain HTTP on loopback
            **{"authenticator": LocalUsers(), "session_secret": secrets.token_bytes(32), **config},
        ),
    )
    return app


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serves ``app`` under uvicorn on a free loopback port; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from the operating system."""
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="session")
async def mailbox() -> AsyncIterator[LocalMailbox]:
    """An SMTP server on loopback that keeps what it receives; acme's SMTP settings point at it."""
    async with LocalMailbox() as box:
        settings = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(box.port),
            "SMTP_SECURITY": "none",
            "SMTP_FROM": "Approvals <approvals@acme.example>",
        }

        class _Store:
            def get(self, tenant: str, name: str) -> Secret | None:
                value = settings.get(name) if tenant == "acme" else None
                return None if value is None else Secret(value)

        configure_secret_store(_Store())
        try:
            yield box
        finally:
            configure_secret_store(None)


def users_json() -> str:
    """The users file of the tests (for documentation tests)."""
    return json.dumps({"users": USERS})
