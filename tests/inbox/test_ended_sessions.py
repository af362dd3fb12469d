"""Signing out ends the session in every gateway process (a probe: a copy of the cookie went on
working on every other process, and on a restarted one, for the cookie's 8 hours). Two inbox apps
with the same session secret stand for two gateway processes; the store is a real PostgreSQL."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
from sqlalchemy import text
from temporalio.client import Client

from gateway.inbox.auth import LocalUsers, hash_password
from gateway.inbox.ended import StoredEndedSessions
from starter.client import FlowClient
from tests.inbox.conftest import PASSWORD, USERS, inbox_app, serve

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _signed_in(web: httpx.AsyncClient, url: str) -> bool:
    """Whether ``web``'s cookie opens the inbox at ``url`` (else it is sent to sign in)."""
    page = await web.get(f"{url}/")
    return page.status_code == 200


async def test_a_signed_out_cookie_is_refused_by_every_gateway_process(
    client: Client, task_queue: str, database: Any
) -> None:
    async def opened() -> Any:
        return database

    users = LocalUsers.from_document({"users": [{**u, "password": hash_password(PASSWORD)} for u in USERS]})
    clients = {t: FlowClient(client, task_queue=task_queue, tenant=t) for t in ("acme", "globex")}
    secret = secrets.token_bytes(32)

    def process() -> Any:
        return inbox_app(
            clients,
            {},
            authenticator=users,
            session_secret=secret,
            ended_sessions=StoredEndedSessions(opened),
        )

    async with serve(process()) as one, serve(process()) as other:
        a, b = f"{one}/inbox", f"{other}/inbox"
        async with httpx.AsyncClient(follow_redirects=False) as web:
            login = await web.get(f"{a}/login")
            csrf = _CSRF.search(login.text)
            assert csrf, login.text[:300]
            fields = {"tenant": "acme", "username": "alice", "password": PASSWORD, "csrf": csrf.group(1)}
            assert (await web.post(f"{a}/login", data=fields)).status_code == 303
            kept = dict(web.cookies)
            async with httpx.AsyncClient(follow_redirects=False, cookies=kept) as copy:
                assert await _signed_in(copy, b)  # the same secret: both processes take the cookie
            page = await web.get(f"{a}/")
            form = _CSRF.search(page.text)
            assert form, page.text[:300]
            assert (await web.post(f"{a}/logout", data={"csrf": form.group(1)})).status_code == 303
        async with httpx.AsyncClient(follow_redirects=False, cookies=kept) as copy:
            assert not await _signed_in(copy, a)
            assert not await _signed_in(copy, b)  # before: still signed in there
    async with serve(process()) as restarted, httpx.AsyncClient(follow_redirects=False, cookies=kept) as copy:
        assert not await _signed_in(copy, f"{restarted}/inbox")  # nor after a restart
    # What is kept: a digest of the session's CSRF secret and when its cookie would have expired.
    async with database.session_factory() as session:
        rows = (
            await session.execute(text("SELECT session_hash, expires_at FROM inbox_ended_sessions"))
        ).all()
    assert len(rows) == 1
    assert re.fullmatch(r"[0-9a-f]{64}", rows[0].session_hash)


async def test_a_store_that_is_away_leaves_the_inbox_serving(client: Client, task_queue: str) -> None:
    """The database down: a sign-out is remembered by its process, and cookies are taken as it
    knows them (logged), so approvals go on."""

    async def away() -> Any:
        raise OSError("connection refused")

    users = LocalUsers.from_document({"users": [{**u, "password": hash_password(PASSWORD)} for u in USERS]})
    clients = {"acme": FlowClient(client, task_queue=task_queue, tenant="acme")}
    app = inbox_app(clients, {}, authenticator=users, ended_sessions=StoredEndedSessions(away))
    async with serve(app) as base, httpx.AsyncClient(follow_redirects=False) as web:
        url = f"{base}/inbox"
        login = await web.get(f"{url}/login")
        csrf = _CSRF.search(login.text)
        assert csrf
        fields = {"tenant": "acme", "username": "alice", "password": PASSWORD, "csrf": csrf.group(1)}
        assert (await web.post(f"{url}/login", data=fields)).status_code == 303
        assert await _signed_in(web, url)
        kept = dict(web.cookies)
        form = _CSRF.search((await web.get(f"{url}/")).text)
        assert form
        assert (await web.post(f"{url}/logout", data={"csrf": form.group(1)})).status_code == 303
        async with httpx.AsyncClient(follow_redirects=False, cookies=kept) as copy:
            assert not await _signed_in(copy, url)  # this process remembers it
