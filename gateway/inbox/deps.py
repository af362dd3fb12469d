"""What the inbox router needs from the app that mounts it, set once by :func:`install_inbox`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request

from gateway.inbox.auth import Authenticator, SessionSigner
from starter.client import FlowClient

ClientFactory = Callable[[str], Awaitable[FlowClient]]
"""Gives the client of a tenant (on the tenant's namespace, scoped to the tenant)."""


@dataclass
class InboxConfig:
    """The inbox's configuration.

    Attributes:
        clients: The tenant's :class:`FlowClient` (a factory: the app may cache clients per tenant).
        authenticator: Checks sign-ins (:class:`gateway.inbox.auth.LocalUsers` for the demo and
            tests; an OpenID Connect client in production).
        session_secret: Signs session cookies (at least 16 random bytes; keep it secret).
        signing_keys: The private JWK that mints decision tokens, per tenant (``"*"``: any tenant).
            Without a key for the tenant, decisions go without a token (accepted only by runs and
            workers that do not require proof).
        secure_cookies: Send the session cookie only over HTTPS (turn off only on loopback).
        session_ttl_s: How long a sign-in lasts.
        decision_ttl_s: Lifetime of the token minted for one decision (it is spent at once).
        base_url: The inbox's public URL (for links in emails), e.g. ``https://flows.example/inbox``.
        list_limit: At most this many runs are listed.
    """

    clients: ClientFactory
    authenticator: Authenticator
    session_secret: bytes
    signing_keys: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    secure_cookies: bool = True
    session_ttl_s: float = 8 * 3600
    decision_ttl_s: float = 300
    base_url: str = ""
    list_limit: int = 50

    def signing_key(self, tenant: str) -> dict[str, Any] | None:
        """The private JWK that mints the tenant's decision tokens, if any."""
        return self.signing_keys.get(tenant) or self.signing_keys.get("*")


@dataclass
class InboxState:
    """The configuration with what is derived from it once."""

    config: InboxConfig
    sessions: SessionSigner
    prefix: str = "/inbox"


def install_inbox(app: FastAPI, config: InboxConfig, prefix: str = "/inbox") -> None:
    """Mounts the inbox router on ``app`` at ``prefix`` with ``config``."""
    from gateway.inbox.router import router

    app.state.inbox = InboxState(config, SessionSigner(config.session_secret, config.session_ttl_s), prefix)
    app.include_router(router, prefix=prefix)


def inbox_state(request: Request) -> InboxState:
    """FastAPI dependency: the inbox's state on the app."""
    state: InboxState = request.app.state.inbox
    return state
