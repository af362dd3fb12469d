"""When the runs' worker does not answer, the inbox and decision links say "try again", not "nothing".

Found by an attacker's probe. With the worker stopped, the list asked each run for its status one
after another (10 s each), skipped every one, and said "Nothing is waiting for you"; a step's page
said there was no such step, and a decision link said the run no longer existed (people throw such
emails away). A decision the worker took later than the client waited for was a 500, while the
decision was applied moments after. Real dev server, real workers, the inbox served on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

import starter.client
from gateway.inbox.auth import LocalUsers, Person, hash_password
from gateway.inbox.router import Work, find_work
from interpreter.state import RunState
from starter.client import FlowClient
from starter.tokens import generate_keys, mint
from tests.inbox.conftest import PASSWORD, USERS, inbox_app, serve, waiting_run
from tests.test_payload_store import KEY, client_of
from tests.workflows.support import eventually, wait_state
from worker import build_worker
from workflows import decision_tokens

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ALICE = Person(tenant="acme", username="alice")
REVIEW = {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"}


@contextlib.asynccontextmanager
async def running_worker(client: Client, task_queue: str) -> AsyncIterator[None]:
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        yield


@contextlib.asynccontextmanager
async def signed_in(
    flows: FlowClient, private: dict[str, Any]
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """alice of acme signed in to an inbox whose client for acme is ``flows``."""
    users = LocalUsers.from_document({"users": [{**u, "password": hash_password(PASSWORD)} for u in USERS]})
    app = inbox_app({"acme": flows}, {"acme": private}, authenticator=users)
    async with serve(app) as base, httpx.AsyncClient(follow_redirects=False, timeout=120) as web:
        url = f"{base}/inbox"
        csrf = _CSRF.search((await web.get(f"{url}/login")).text)
        assert csrf
        fields = {"tenant": "acme", "username": "alice", "password": PASSWORD, "csrf": csrf.group(1)}
        assert (await web.post(f"{url}/login", data=fields)).status_code == 303
        yield web, url


@pytest.fixture
def private() -> Iterator[dict[str, Any]]:
    """The inbox's signing key; workers verify decision tokens with its public half."""
    private, public = generate_keys("inbox-unanswered")
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(public))
    try:
        yield private
    finally:
        decision_tokens.configure(None)


async def test_a_stopped_worker_is_try_again_not_nothing_here(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch, private: dict[str, Any]
) -> None:
    acme = FlowClient(client, task_queue=task_queue, tenant="acme")
    runs: list[WorkflowHandle[Any, Any]] = []
    try:
        async with running_worker(client, task_queue):
            runs = [await waiting_run(client, task_queue, "acme") for _ in range(3)]

            def all_listed(work: Work) -> bool:
                return {item.run for item in work.items} == {run.id for run in runs}

            await eventually(lambda: find_work(acme, ALICE, 50), all_listed, what="the three runs listed")
        # The worker is stopped. (Its runs' queries now wait for a worker: shorter here.)
        monkeypatch.setattr(starter.client, "QUERY_TIMEOUT", timedelta(seconds=2))
        work = await find_work(acme, ALICE, 50)
        # Each is counted as not answering (asked while the server still lists the stopped worker's
        # poller, a minute or so; then counted unasked, as after the list's 30 s).
        assert (work.items, work.unanswered) == ([], 3)

        async with signed_in(acme, private) as (web, url):
            listed = await web.get(f"{url}/")
            assert listed.status_code == 503, listed.text[:500]
            assert "3 waiting runs could not be asked" in listed.text
            assert "Nothing is waiting for you" not in listed.text

            step = await web.get(f"{url}/item", params={"run": runs[0].id, "step": "review"})
            assert step.status_code == 503, step.text[:500]
            assert "The run does not answer now" in step.text
            assert "no such step" not in step.text

            token = mint(
                private, tenant="acme", run=runs[1].id, actor="alice", decisions=["approve"], step="review"
            )
            link = await web.get(f"{url}/link", params={"t": token})
            assert link.status_code == 503, link.text[:500]
            assert "The run does not answer now" in link.text
            assert "no longer exists" not in link.text
    finally:
        for run in runs:
            with contextlib.suppress(Exception):
                await run.terminate("test over")


class _StopsTheWorkerFirst(FlowClient):
    """Stops the worker (``stop``) just before a decision is sent: a worker that takes the decision
    later than the client waits for it."""

    stop: asyncio.Event | None = None

    async def approve(self, workflow_id: str, actor: str, **kwargs: Any) -> Any:
        assert self.stop is not None
        self.stop.set()
        await asyncio.sleep(0.5)  # the worker's polls are cancelled
        return await super().approve(workflow_id, actor, **kwargs)


async def test_a_decision_the_worker_confirms_late_is_sent_not_a_500(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch, private: dict[str, Any]
) -> None:
    acme = _StopsTheWorkerFirst(client, task_queue=task_queue, tenant="acme")
    acme.stop = asyncio.Event()

    async def worker_until_stopped() -> None:
        assert acme.stop is not None
        async with running_worker(client, task_queue):
            await acme.stop.wait()

    serving = asyncio.create_task(worker_until_stopped())
    run = None
    try:
        run = await waiting_run(client, task_queue, "acme")
        monkeypatch.setattr(starter.client, "UPDATE_TIMEOUT_S", 3.0)
        async with signed_in(acme, private) as (web, url):
            page = await web.get(f"{url}/item", params={"run": run.id, "step": "review"})
            csrf = _CSRF.search(page.text)
            assert csrf, page.text[:500]
            fields = {"csrf": csrf.group(1), "run": run.id, "step": "review", "decision": "approve"}
            sent = await web.post(f"{url}/item", data=fields)
            assert sent.status_code == 202, sent.text[:500]  # was a 500 "internal_error"
            assert "Sent, not confirmed yet" in sent.text
        await serving
        # What the page said: the decision is applied once a worker takes it.
        async with running_worker(client, task_queue):
            await wait_state(run, RunState.COMPLETED)
    finally:
        if acme.stop is not None:
            acme.stop.set()
        await serving
        if run is not None:
            with contextlib.suppress(Exception):
                await run.terminate("test over")


async def test_a_run_its_worker_cannot_run_is_try_again_not_ended(
    temporal_env: WorkflowEnvironment, task_queue: str, private: dict[str, Any]
) -> None:
    """A review: a run whose worker answers but cannot run it (here, runs a worker with payload
    keys began, then a worker without them: its query fails) was skipped from the list as ended,
    and its step page, a decision posted to it and its link said there was no such step or run."""
    keyed = await client_of(temporal_env, {"WFA_PAYLOAD_KEYS": f"k={KEY}"})
    plain = await client_of(temporal_env, {})
    acme = FlowClient(keyed, task_queue=task_queue, tenant="acme")  # the inbox reads with the keys
    async with running_worker(keyed, task_queue):
        runs = [await waiting_run(keyed, task_queue, "acme") for _ in range(2)]
        await eventually(lambda: find_work(acme, ALICE, 50), lambda w: len(w.items) == 2, what="both listed")
    try:
        async with running_worker(plain, task_queue):  # polls, and cannot decrypt the runs
            work = await find_work(acme, ALICE, 50)
            assert (work.items, work.unanswered) == ([], 2)  # was ([], 0): "Nothing is waiting"
            async with signed_in(acme, private) as (web, url):
                listed = await web.get(f"{url}/")
                assert listed.status_code == 503, listed.text[:500]
                assert "2 waiting runs could not be asked" in listed.text
                step = await web.get(f"{url}/item", params={"run": runs[0].id, "step": "review"})
                assert step.status_code == 503, step.text[:500]
                token = mint(
                    private,
                    tenant="acme",
                    run=runs[1].id,
                    actor="alice",
                    decisions=["approve"],
                    step="review",
                )
                link = await web.get(f"{url}/link", params={"t": token})
                assert link.status_code == 503, link.text[:500]
    finally:
        for run in runs:
            with contextlib.suppress(Exception):
                await run.terminate("test over")
