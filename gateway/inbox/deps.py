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


USERS_FILE_ENV = "WFA_INBOX_USERS"
SESSION_SECRET_ENV = "WFA_INBOX_SESSION_SECRET"
INSECURE_COOKIES_ENV = "WFA_INBOX_INSECURE_COOKIES"


class InboxConfigError(ValueError):
    """The inbox's settings cannot be used; the message names the variable."""


def inbox_config_from_env(
    clients: ClientFactory, environ: Mapping[str, str] | None = None
) -> InboxConfig | None:
    """The inbox's configuration from the environment, or None when the inbox is not configured.

    ``WFA_INBOX_USERS``: the local users file (demo and tests; not for production). Without it the
    inbox is off (None). ``WFA_INBOX_SESSION_SECRET``: at least 16 characters (required with it).
    ``WFA_DECISION_SIGNING_KEY``: the private JWK minting the people's tokens (for every tenant).
    ``WFA_INBOX_URL``: the inbox's public URL. ``WFA_INBOX_INSECURE_COOKIES=1``: cookies without
    ``Secure`` (plain HTTP on loopback only).

    Raises:
        InboxConfigError: A variable is set but unusable.
    """
    import os

    from gateway.inbox.auth import LocalUsers, UsersFileError
    from starter import tokens

    env = os.environ if environ is None else environ
    users_file = env.get(USERS_FILE_ENV)
    if not users_file:
        return None
    secret = env.get(SESSION_SECRET_ENV, "")
    if len(secret) < 16:
        raise InboxConfigError(f"{SESSION_SECRET_ENV} must hold at least 16 characters (a random secret)")
    try:
        users = LocalUsers.from_file(users_file)
    except UsersFileError as err:
        raise InboxConfigError(f"{USERS_FILE_ENV}: {err}") from None
    key_path = env.get(tokens.SIGNING_KEY_ENV)
    try:
        keys = {"*": tokens.load_signing_key(key_path)} if key_path else {}
    except tokens.TokenError as err:
        raise InboxConfigError(str(err)) from None
    return InboxConfig(
        clients=clients,
        authenticator=users,
        session_secret=secret.encode(),
        signing_keys=keys,
        secure_cookies=env.get(INSECURE_COOKIES_ENV, "").strip().lower() not in ("1", "true", "yes"),
        base_url=env.get("WFA_INBOX_URL", ""),
    )


def install_inbox(app: FastAPI, config: object, prefix: str = "/inbox") -> None:
    """Mounts the inbox router on ``app`` at ``prefix``.

    Args:
        app: The FastAPI app.
        config: An :class:`InboxConfig`; anything else (the gateway's own configuration) means
            "from the environment" (:func:`inbox_config_from_env`) with the tenants' clients of the
            gateway's state (``app.state.gateway.client(tenant)``, looked up per request); when the
            environment does not configure the inbox, nothing is mounted.
    """
    from gateway.inbox.router import router

    if not isinstance(config, InboxConfig):

        async def gateway_client(tenant: str) -> FlowClient:
            client: FlowClient = await app.state.gateway.client(tenant)
            return client

        built = inbox_config_from_env(gateway_client)
        if built is None:
            return
        config = built

    app.state.inbox = InboxState(config, SessionSigner(config.session_secret, config.session_ttl_s), prefix)
    app.include_router(router, prefix=prefix)


def inbox_state(request: Request) -> InboxState:
    """FastAPI dependency: the inbox's state on the app."""
    state: InboxState = request.app.state.inbox
    return state
