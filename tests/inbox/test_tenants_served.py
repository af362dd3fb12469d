"""A person or a decision link of a tenant the gateway does not serve gets a page, not a 500 (a
probe: the users file and a lone OpenID Connect provider name any tenant; the gateway's client for
it raised ``UnknownTenantError`` on every inbox page and link)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from fastapi import FastAPI
from temporalio.client import Client

from gateway.inbox import InboxConfig, install_inbox
from gateway.inbox.auth import LocalUsers, hash_password
from gateway.inbox.deps import TenantNotServedError
from starter import tokens
from starter.client import FlowClient
from tests.inbox.conftest import PASSWORD, USERS, serve

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def test_people_and_links_of_a_tenant_not_served_get_a_page(client: Client, task_queue: str) -> None:
    private, _ = tokens.generate_keys("k1")
    acme = FlowClient(client, task_queue=task_queue, tenant="acme")

    async def clients(tenant: str) -> FlowClient:
        if tenant != "acme":
            raise TenantNotServedError(tenant)  # as the gateway's factory does
        return acme

    users = LocalUsers.from_document({"users": [{**u, "password": hash_password(PASSWORD)} for u in USERS]})
    app = FastAPI()
    install_inbox(
        app,
        InboxConfig(
            clients=clients,
            authenticator=users,
            session_secret=b"s" * 32,
            signing_keys={"*": private},
            secure_cookies=False,
            tenants=frozenset({"acme"}),
        ),
    )
    async with serve(app) as base, httpx.AsyncClient(follow_redirects=False) as web:
        url = f"{base}/inbox"
        login = await web.get(f"{url}/login")
        csrf = _CSRF.search(login.text)
        assert csrf
        fields: dict[str, Any] = {"tenant": "globex", "username": "alice", "password": PASSWORD}
        refused = await web.post(f"{url}/login", data={**fields, "csrf": csrf.group(1)})
        assert refused.status_code == 401, refused.text[:300]
        assert "not right" in refused.text
        assert (await web.get(f"{url}/")).status_code == 303  # not signed in: to the sign-in page
        link = tokens.mint(private, tenant="globex", run="r1", actor="alice", decisions=["approve"], step="s")
        page = await web.get(f"{url}/link", params={"t": link})
        assert page.status_code == 403, page.text[:300]
        assert "does not serve the organisation &#39;globex&#39;" in page.text
        # acme's people still sign in.
        csrf = _CSRF.search((await web.get(f"{url}/login")).text)
        assert csrf
        fields = {"tenant": "acme", "username": "alice", "password": PASSWORD, "csrf": csrf.group(1)}
        assert (await web.post(f"{url}/login", data=fields)).status_code == 303
        assert (await web.get(f"{url}/")).status_code == 200


async def test_the_gateway_mounts_the_inbox_with_its_tenants_and_its_database(
    temporal_env: Any, database_url: str, tmp_path: Any, monkeypatch: Any
) -> None:
    """A review: the gateway built the inbox's configuration itself, so none of what it adds
    (sign-outs in its database, its tenants only) was in the inbox it served."""
    from sqlalchemy import text

    from activities.store.database import Database
    from gateway.app import create_app
    from gateway.config import GatewayConfig
    from gateway.inbox.ended import StoredEndedSessions

    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{**u, "password": hash_password(PASSWORD)} for u in USERS]}))
    monkeypatch.setenv("WFA_INBOX_USERS", str(users))
    monkeypatch.setenv("WFA_INBOX_SESSION_SECRET", "z" * 32)
    monkeypatch.setenv("WFA_INBOX_INSECURE_COOKIES", "1")
    app = create_app(
        GatewayConfig(
            tenants=("acme",),
            address=temporal_env.client.service_client.config.target_host,
            database_url=database_url,
        )
    )
    assert isinstance(app.state.inbox.config.ended_sessions, StoredEndedSessions)
    assert app.state.inbox.config.tenants == {"acme"}
    async with serve(app) as base, httpx.AsyncClient(follow_redirects=False) as web:
        url = f"{base}/inbox"
        for tenant, status in (("globex", 401), ("acme", 303)):
            csrf = _CSRF.search((await web.get(f"{url}/login")).text)
            assert csrf
            fields = {"tenant": tenant, "username": "alice", "password": PASSWORD, "csrf": csrf.group(1)}
            assert (await web.post(f"{url}/login", data=fields)).status_code == status, tenant
        form = _CSRF.search((await web.get(f"{url}/")).text)
        assert form
        assert (await web.post(f"{url}/logout", data={"csrf": form.group(1)})).status_code == 303
        # Only a person's sign-out is kept: anyone may end a session of nobody (a review).
        csrf = _CSRF.search((await web.get(f"{url}/login")).text)
        assert csrf
        assert (await web.post(f"{url}/logout", data={"csrf": csrf.group(1)})).status_code == 303
        await app.state.gateway.close()
    database = Database(database_url)
    try:
        async with database.session_factory() as session:
            kept = (await session.execute(text("SELECT count(*) FROM inbox_ended_sessions"))).scalar()
    finally:
        await database.close()
    assert kept == 1
