"""A gateway that cannot read the runs' data (the workers encrypt, the gateway has no key) says so.

The inbox's list and a decision link read each run's ``status``. When the gateway lacks the key
(or the payload store) the workers have, every run is unreadable to it: that is the gateway's
configuration, not the runs. Before, the list skipped each such run without a word (an empty
inbox) and a link said the run "no longer exists" (404); now the list stops with
``PayloadUnreadableError`` and the pages answer 503, with a log line naming what to set. Real dev
server, a worker that encrypts, the inbox served on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from gateway.inbox.auth import Person
from gateway.inbox.router import find_work
from starter.client import FlowClient
from starter.errors import PayloadUnreadableError
from starter.payload_store import PayloadStoreError
from starter.tokens import generate_keys, mint
from tests.inbox.conftest import inbox_app, serve, waiting_run
from tests.test_payload_store import KEY, client_of, env_of
from tests.workflows.support import eventually, unique
from worker import build_worker
from workflows import decision_tokens


@pytest_asyncio.fixture(loop_scope="session")
async def encrypting(temporal_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Client]:
    """A client whose payloads are encrypted, and a worker on it (as production's workers)."""
    client = await client_of(temporal_env, {"WFA_PAYLOAD_KEYS": f"k={KEY}"})
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        yield client


async def link_answers_503(
    flows: FlowClient, private: dict[str, Any], run: str, caplog: pytest.LogCaptureFixture, logged: str
) -> None:
    """A decision link to ``run`` served by an inbox whose client for acme is ``flows`` answers 503
    "Cannot read this run now" (not "no longer exists", no trace), and the log says ``logged``."""
    async with serve(inbox_app({"acme": flows}, {"acme": private})) as base, httpx.AsyncClient() as http:
        token = mint(private, tenant="acme", run=run, actor="alice", decisions=["approve"], step="review")
        with caplog.at_level("ERROR", logger="gateway.inbox"):
            page = await http.get(f"{base}/inbox/link", params={"t": token})
    assert page.status_code == 503, page.text[:500]
    assert "Cannot read this run now" in page.text
    assert "no longer exists" not in page.text
    assert "Traceback" not in page.text
    assert any(logged in r.getMessage() for r in caplog.records)


async def test_a_gateway_without_the_key_says_so_instead_of_an_empty_inbox(
    client: Client,
    encrypting: Client,
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = await waiting_run(encrypting, task_queue, "acme")
    reader = FlowClient(encrypting, task_queue=task_queue, tenant="acme")
    unkeyed = FlowClient(client, task_queue=task_queue, tenant="acme")  # the session's client: no key
    assert (await reader.status(handle.id)).pending_approvals  # readable with the key

    alice = Person(tenant="acme", username="alice")
    listed = await eventually(  # visibility is eventually consistent: until the run is listed
        lambda: find_work(reader, alice, 50), lambda work: bool(work.items), what="the run in alice's work"
    )
    assert [item.run for item in listed.items] == [handle.id]
    with pytest.raises(PayloadUnreadableError, match="set WFA_PAYLOAD_KEYS"):
        await find_work(unkeyed, alice, 50)  # before: [] (each unreadable run skipped)

    private, public = generate_keys("inbox-unreadable")
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(public))

    try:
        await link_answers_503(unkeyed, private, handle.id, caplog, "set WFA_PAYLOAD_KEYS")
    finally:
        decision_tokens.configure(None)
        await handle.terminate("test over")


async def test_a_gateway_with_a_store_of_another_kind_says_so(
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The workers store payloads in ``fs:``, the gateway is set to ``postgres``: the SDK's bare
    ``ValueError`` fell through to a 500 (an attacker's probe); now a link answers 503 and the log
    says which store wrote the run's payloads and which the gateway has."""
    task_queue = unique("tq-store-kinds")
    storing = await client_of(
        temporal_env, env_of(store=f"fs:{tmp_path / 'payloads'}", WFA_PAYLOAD_STORE_THRESHOLD="100")
    )
    other = FlowClient(
        await client_of(temporal_env, env_of(store=f"postgres:{database_url}")),
        task_queue=task_queue,
        tenant="acme",
    )
    private, public = generate_keys("inbox-store-kinds")
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(public))
    async with (
        httpx.AsyncClient() as http,
        build_worker(storing, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        handle = await waiting_run(storing, task_queue, "acme")
        try:
            with pytest.raises(
                PayloadStoreError,
                match=r"stored by the wfa\.fs store, read with this process's wfa\.postgres",
            ):
                await other.status(handle.id)
            await link_answers_503(
                other, private, handle.id, caplog, "set WFA_PAYLOAD_STORE as the process that stored it"
            )
        finally:
            decision_tokens.configure(None)
            await handle.terminate("test over")
