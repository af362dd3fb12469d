"""Per-tenant decision keys: a token or link minted with tenant A's key decides nothing in tenant B.

Production gives each tenant its own signing key (the gateway holds ``acme``'s and ``globex``'s
private keys, ``WFA_INBOX_SIGNING_KEYS``); the workers' key set (``WFA_DECISION_KEYS``) tags each
public key with the tenants it speaks for. Whoever holds acme's key (acme's own gateway, a leaked
acme key) can mint a token that *claims* tenant globex: the worker refuses it for globex's run, and
the inbox refuses the link; globex's own key decides as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from interpreter.state import RunState
from starter.client import FlowClient
from starter.errors import DecisionRefusedError
from starter.tokens import generate_keys, merge_jwks, mint
from tests.inbox.conftest import inbox_app, serve, waiting_run
from worker import load_decision_verifier
from workflows import decision_tokens


@pytest.fixture
def tenant_keys(tmp_path: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Acme's and globex's private keys; the worker's key set tags each public key with its tenant."""
    acme_private, acme_public = generate_keys("acme-1", tenants=["acme"])
    globex_private, globex_public = generate_keys("globex-1", tenants=["globex"])
    jwks = tmp_path / "decision-keys.json"
    jwks.write_text(json.dumps(merge_jwks(acme_public, globex_public)))
    verifier = load_decision_verifier({"WFA_DECISION_KEYS": str(jwks)})
    decision_tokens.configure(verifier)
    yield {"acme": acme_private, "globex": globex_private}
    decision_tokens.configure(None)


async def _globex_run(client: Client, task_queue: str) -> WorkflowHandle[Any, Any]:
    return await waiting_run(client, task_queue, "globex", decision_proof=True)


def _token(key: dict[str, Any], run: str) -> str:
    return mint(key, tenant="globex", run=run, actor="alice", decisions=["approve"], step="review")


async def test_a_token_of_another_tenants_key_is_refused_by_the_worker(
    client: Client, task_queue: str, worker: Worker, tenant_keys: dict[str, dict[str, Any]]
) -> None:
    handle = await _globex_run(client, task_queue)
    globex = FlowClient(client, task_queue=task_queue, tenant="globex")
    # Minted with acme's key, claiming globex: the signature is good, the key is not globex's.
    forged = _token(tenant_keys["acme"], handle.id)
    with pytest.raises(DecisionRefusedError, match="key 'acme-1' does not sign for tenant 'globex'"):
        await globex.approve(handle.id, "alice", step_id="review", token=forged)
    assert (await globex.status(handle.id)).decisions == []
    # Globex's own key decides.
    await globex.approve(handle.id, "alice", step_id="review", token=_token(tenant_keys["globex"], handle.id))
    assert (await handle.result()).state == RunState.COMPLETED


@pytest_asyncio.fixture(loop_scope="session")
async def per_tenant_inbox(
    client: Client, task_queue: str, worker: Worker, tenant_keys: dict[str, dict[str, Any]]
) -> AsyncIterator[str]:
    """The inbox with one signing key per tenant (no ``"*"``)."""
    clients = {t: FlowClient(client, task_queue=task_queue, tenant=t) for t in ("acme", "globex")}
    async with serve(inbox_app(clients, tenant_keys)) as base:
        yield f"{base}/inbox"


async def test_a_link_of_another_tenants_key_is_refused_by_the_inbox(
    client: Client, task_queue: str, per_tenant_inbox: str, tenant_keys: dict[str, dict[str, Any]]
) -> None:
    handle = await _globex_run(client, task_queue)
    async with httpx.AsyncClient() as http:
        forged = await http.get(
            f"{per_tenant_inbox}/link", params={"t": _token(tenant_keys["acme"], handle.id)}
        )
        assert forged.status_code == 400
        assert "This link is not valid" in forged.text
        assert "Traceback" not in forged.text
        own = await http.get(
            f"{per_tenant_inbox}/link", params={"t": _token(tenant_keys["globex"], handle.id)}
        )
        assert own.status_code == 200
        assert "Approve" in own.text
    await handle.terminate("test over")


def test_the_gateway_and_the_workers_links_mint_with_the_tenants_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporalio.exceptions import ApplicationError

    from activities import notify
    from gateway.inbox import InboxConfigError, inbox_config_from_env

    paths = {}
    for tenant in ("acme", "globex"):
        private, _ = generate_keys(f"{tenant}-1", tenants=[tenant])
        paths[tenant] = tmp_path / f"{tenant}.jwk"
        paths[tenant].write_text(json.dumps(private))
    keys = f"acme={paths['acme']}, globex={paths['globex']}"

    async def no_client(tenant: str) -> FlowClient:
        raise AssertionError

    env = {
        "WFA_INBOX_USERS": "",
        "WFA_INBOX_OIDC_ISSUER": "https://login.example",
        "WFA_INBOX_OIDC_CLIENT_ID": "c",
    }
    env |= {
        "WFA_INBOX_OIDC_CLIENT_SECRET": "s",
        "WFA_INBOX_OIDC_TENANT": "acme",
        "WFA_INBOX_SESSION_SECRET": "x" * 32,
    }
    config = inbox_config_from_env(no_client, {**env, "WFA_DECISION_SIGNING_KEYS": keys})
    assert config is not None
    assert config.signing_key("acme")["kid"] == "acme-1"
    assert config.signing_key("globex")["kid"] == "globex-1"
    assert config.signing_key("initech") is None  # no "*": another tenant's key is never used
    with pytest.raises(InboxConfigError, match="'acme' is not tenant=path"):
        inbox_config_from_env(no_client, {**env, "WFA_DECISION_SIGNING_KEYS": "acme"})

    # The worker's decision_links activity, configured by the environment.
    notify.reset()
    monkeypatch.delenv("WFA_DECISION_SIGNING_KEY", raising=False)
    monkeypatch.setenv("WFA_DECISION_SIGNING_KEYS", keys)
    monkeypatch.setenv("WFA_INBOX_URL", "https://flows.example/inbox/")
    assert notify._settings("globex") == (
        json.loads(paths["globex"].read_text()),
        "https://flows.example/inbox",
    )
    with pytest.raises(ApplicationError, match="the tenant's signing key") as caught:
        notify._settings("initech")
    assert caught.value.type == "DecisionLinksNotConfigured"
