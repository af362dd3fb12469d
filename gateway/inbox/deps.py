"""What the inbox router needs from the app that mounts it, set once by :func:`install_inbox`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from gateway.inbox.auth import Authenticator, SessionSigner
from gateway.inbox.ended import EndedSessions
from gateway.inbox.oidc import OidcClient, OidcProvider, check_providers
from starter.client import FlowClient
from starter.errors import NoWorkerError, PayloadUnreadableError, ServerUnavailableError, StarterError
from starter.payload_store import PayloadStoreError

if TYPE_CHECKING:
    from activities.store.database import Database

log = logging.getLogger("gateway.inbox")

RUN_DATA_UNREADABLE = (PayloadUnreadableError, PayloadStoreError)
"""The errors meaning this gateway cannot read a run's data (its payload keys or store settings, or
the store itself): the inbox and decision links answer them with a 503, never a 404 or a traceback."""


def unanswered(err: StarterError) -> tuple[str, str]:
    """The title and message of a page for a run that gave no answer now (no worker answered,
    Temporal cannot be reached, or the run's worker cannot run it: its query failed): a 503 "try
    again", never "nothing here" (an attacker's probe: with the worker stopped, the list showed
    "Nothing is waiting for you" after 10 s per run, and a link said the run no longer existed).
    The details go to the log."""
    log.warning("inbox: %s", err)
    if isinstance(err, ServerUnavailableError):
        return (
            "Cannot reach the workflow service",
            "The workflow service cannot be reached now. Please try again later.",
        )
    return (
        "The run does not answer now",
        "Its worker may be restarting, busy or stopped, or cannot run it now. Please try again in a moment.",
    )


def unconfirmed(err: StarterError) -> tuple[str, str, int]:
    """The title, message and status of the page after a decision the run did not confirm (any
    :class:`StarterError` but a refusal, a closed or missing run and bad input, which the callers
    answer first): was a 500 while the decision was applied moments later (an attacker's probe)."""
    log.warning("inbox: decision not confirmed: %s", err)
    if isinstance(err, NoWorkerError):
        return (
            "Sent, not confirmed yet",
            "Your decision was sent, but the run has not confirmed it yet: its worker is slow or"
            " restarting. It is normally applied when the worker takes it, unless the step is decided"
            " otherwise first. Your inbox shows whether the step still waits.",
            202,
        )
    return (
        "Not confirmed",
        "The decision may not have reached the run: the workflow service could not be reached or"
        " did not answer. Your inbox shows whether the step still waits; decide again there if it does.",
        503,
    )


ClientFactory = Callable[[str], Awaitable[FlowClient]]
"""Gives the client of a tenant (on the tenant's namespace, scoped to the tenant)."""


@dataclass
class InboxConfig:
    """The inbox's configuration.

    Attributes:
        clients: The tenant's :class:`FlowClient` (a factory: the app may cache clients per tenant).
        authenticator: Checks the local sign-in form (:class:`gateway.inbox.auth.LocalUsers`: the
            demo and tests only); None: no local sign-in.
        oidc_providers: OpenID Connect providers people sign in with (production); the sign-in
            page offers "Sign in with <name>" for each.
        session_secret: Signs session cookies (at least 16 random bytes; keep it secret).
        signing_keys: The private JWK that mints decision tokens, per tenant: in production one
            key per tenant, the workers verifying each tenant's tokens with that tenant's public
            key only (``WFA_DECISION_KEYS`` with ``"tenants"`` per key: ``wfa keys generate --tenant``), so a key of one tenant
            cannot decide for another. ``"*"`` (any tenant) is the demo's convenience. Without a
            key for the tenant, decisions go without a token (accepted only by runs and workers
            that do not require proof).
        secure_cookies: Send the session cookie only over HTTPS (turn off only on loopback).
        session_ttl_s: How long a sign-in lasts.
        decision_ttl_s: Lifetime of the token minted for one decision (it is spent at once).
        base_url: The inbox's public URL (for links in emails), e.g. ``https://flows.example/inbox``.
        list_limit: At most this many runs are listed.
        ended_sessions: Where sign-outs are remembered beyond this process (the gateway's: its
            database, :class:`gateway.inbox.ended.StoredEndedSessions`); None: in this process only.
        tenants: The tenants whose people may sign in (the gateway's ``WFA_GATEWAY_TENANTS``);
            None: any the authenticator knows.
    """

    clients: ClientFactory
    authenticator: Authenticator | None
    session_secret: bytes
    oidc_providers: Sequence[OidcProvider] = ()
    signing_keys: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    secure_cookies: bool = True
    session_ttl_s: float = 8 * 3600
    decision_ttl_s: float = 300
    base_url: str = ""
    list_limit: int = 50
    ended_sessions: EndedSessions | None = None
    tenants: frozenset[str] | None = None

    def serves(self, tenant: str) -> bool:
        """Whether people of ``tenant`` may use this inbox."""
        return self.tenants is None or tenant in self.tenants

    def signing_key(self, tenant: str) -> dict[str, Any] | None:
        """The private JWK that mints the tenant's decision tokens, if any."""
        return self.signing_keys.get(tenant) or self.signing_keys.get("*")


@dataclass
class InboxState:
    """The configuration with what is derived from it once."""

    config: InboxConfig
    sessions: SessionSigner
    prefix: str = "/inbox"
    oidc: dict[str, OidcClient] = field(default_factory=dict)


USERS_FILE_ENV = "WFA_INBOX_USERS"
SESSION_SECRET_ENV = "WFA_INBOX_SESSION_SECRET"
INSECURE_COOKIES_ENV = "WFA_INBOX_INSECURE_COOKIES"


class TenantNotServedError(LookupError):
    """A person or decision link of a tenant this inbox does not serve (shown as a 403 page)."""

    def __init__(self, tenant: str) -> None:
        super().__init__(tenant)
        self.tenant = tenant


class InboxConfigError(ValueError):
    """The inbox's settings cannot be used; the message names the variable."""


def inbox_config_from_env(
    clients: ClientFactory, environ: Mapping[str, str] | None = None
) -> InboxConfig | None:
    """The inbox's configuration from the environment, or None when the inbox is not configured.

    Sign-in (at least one): ``WFA_INBOX_OIDC_ISSUER`` with ``WFA_INBOX_OIDC_CLIENT_ID`` and
    ``WFA_INBOX_OIDC_CLIENT_SECRET`` (or ``..._CLIENT_SECRET_FILE``): an OpenID Connect provider,
    the production way (more variables: :func:`gateway.inbox.oidc.providers_from_env`; one
    provider per tenant with ``WFA_INBOX_OIDC_PROVIDERS``). ``WFA_INBOX_USERS``: the local users
    file (demo and tests; not for production). With neither, the inbox is off (None).
    ``WFA_INBOX_SESSION_SECRET``: at least 16 characters (required).
    ``WFA_DECISION_SIGNING_KEYS``: per-tenant private JWKs minting the people's tokens
    (``acme=/keys/acme.jwk,globex=/keys/globex.jwk``; production); ``WFA_DECISION_SIGNING_KEY``:
    one private JWK for every tenant (the demo's convenience). ``WFA_INBOX_URL``: the inbox's public
    URL (each OpenID Connect provider's redirect URI is ``<it>/oidc/callback/<key>``).
    ``WFA_INBOX_INSECURE_COOKIES=1``: cookies without ``Secure`` (plain HTTP on loopback only).

    Raises:
        InboxConfigError: A variable is set but unusable.
    """
    import os

    from gateway.inbox.auth import LocalUsers, UsersFileError
    from gateway.inbox.oidc import OidcConfigError, providers_from_env
    from starter import tokens

    env = os.environ if environ is None else environ
    users_file = env.get(USERS_FILE_ENV)
    try:
        providers = providers_from_env(env)
    except OidcConfigError as err:
        raise InboxConfigError(str(err)) from None
    if not users_file and not providers:
        return None
    secret = env.get(SESSION_SECRET_ENV, "")
    if len(secret) < 16:
        raise InboxConfigError(f"{SESSION_SECRET_ENV} must hold at least 16 characters (a random secret)")
    users = None
    if users_file:
        try:
            users = LocalUsers.from_file(users_file)
        except UsersFileError as err:
            raise InboxConfigError(f"{USERS_FILE_ENV}: {err}") from None
    try:
        keys = tokens.load_signing_keys(env)
    except tokens.TokenError as err:
        raise InboxConfigError(str(err)) from None
    return InboxConfig(
        clients=clients,
        authenticator=users,
        session_secret=secret.encode(),
        oidc_providers=providers,
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
    from gateway.inbox.forms import UnreadableFormError
    from gateway.inbox.router import router, tenant_not_served_page, unreadable_form_page

    if not isinstance(config, InboxConfig):

        async def gateway_client(tenant: str) -> FlowClient:
            from gateway.state import UnknownTenantError

            try:
                client: FlowClient = await app.state.gateway.client(tenant)
            except UnknownTenantError:
                # A person or link of a tenant the gateway does not serve: a page, not a 500
                # (a probe).
                raise TenantNotServedError(tenant) from None
            return client

        built = inbox_config_from_env(gateway_client)
        if built is None:
            return
        from gateway.inbox.ended import StoredEndedSessions

        async def database() -> Database:
            found: Database = await app.state.gateway.database()
            return found

        config = dataclasses.replace(
            built,
            ended_sessions=StoredEndedSessions(database),
            tenants=frozenset(app.state.gateway.config.tenants),
        )

    check_providers(config.oidc_providers)  # several providers: none may name any tenant
    app.state.inbox = InboxState(
        config,
        SessionSigner(config.session_secret, config.session_ttl_s),
        prefix,
        {p.key: OidcClient(p) for p in config.oidc_providers},
    )
    app.include_router(router, prefix=prefix)
    app.add_exception_handler(UnreadableFormError, unreadable_form_page)
    app.add_exception_handler(TenantNotServedError, tenant_not_served_page)
    if prefix:
        # ``/inbox`` as people type it: to the list by path alone. Starlette's own slash redirect
        # wrote the request's Host header into the Location (a probe).
        async def to_the_list() -> RedirectResponse:
            return RedirectResponse(prefix + "/", status_code=307)

        app.add_api_route(prefix, to_the_list, methods=["GET", "HEAD"], include_in_schema=False)


def inbox_state(request: Request) -> InboxState:
    """FastAPI dependency: the inbox's state on the app."""
    state: InboxState = request.app.state.inbox
    return state
