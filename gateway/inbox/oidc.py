"""OpenID Connect sign-in for the inbox: the production way people sign in.

The gateway is a confidential client of the company's provider (client id and secret). The flow is
the authorization code flow with PKCE (S256): the sign-in page sends the browser to the provider's
authorization endpoint (found through the issuer's discovery document) with a fresh ``state``,
``nonce`` and code challenge, kept in a short-lived cookie signed by the gateway; the provider sends
the browser back to that provider's own ``<inbox>/oidc/callback/<key>`` (never a callback shared by
providers: an answer at another provider's callback is refused, against the mix-up attack); the
gateway checks the state and, when the provider advertises it, the ``iss`` of the answer (RFC
9207), exchanges the code (with the verifier and its client secret) and verifies the ID token:
signature against the provider's JWKS, issuer, audience (and ``azp``), expiry, ``iat``, nonce. The person is read from configurable
claims: the user name (``preferred_username``), the groups (``groups``) and the tenant (a claim, or
a provider configured for one tenant). A tenant the provider may not speak for is refused.

The protocol pieces are authlib's (authorization URL, PKCE challenge, code response, token request);
the ID token is verified with joserfc (authlib's JOSE library).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlparse

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from gateway.inbox.auth import USERNAME_PATTERN, Person

ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
"""Asymmetric algorithms an ID token may be signed with (never ``none``, never HMAC)."""
LEEWAY_S = 60
"""Clock skew allowed between the provider and the gateway."""
FLOW_TTL_S = 600
"""How long a sign-in may take at the provider."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Where a provider's URLs may be plain http (a provider on this machine: demo and tests)."""
DISCOVERY_TTL_S = 3600
"""How long discovery and keys are kept before they are read again (an unknown kid reads at once)."""


class OidcConfigError(ValueError):
    """A provider's settings that cannot be used; the message names the setting."""

    def __init__(self, message: str, provider: str = "") -> None:
        super().__init__(message)
        self.provider = provider


class SignInRefused(Exception):
    """A sign-in that did not prove who the person is; ``message`` is for the page, never a secret."""

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class OidcProvider:
    """One OpenID Connect provider the inbox signs people in with.

    Attributes:
        key: Short name in URLs (``/inbox/oidc/login?provider=<key>``).
        name: What the button says: "Sign in with <name>".
        issuer: The provider's issuer URL (discovery: ``<issuer>/.well-known/openid-configuration``).
        client_id: The gateway's client id at the provider.
        client_secret: The gateway's client secret (confidential client).
        scopes: Scopes asked for (``openid`` always).
        username_claim: The claim holding the user name decisions carry.
        groups_claim: The claim holding the person's groups (a list, or one string).
        tenant_claim: The claim holding the tenant (None: the provider serves ``tenants[0]`` only,
            whatever its tokens say).
        tenants: The tenants this provider may sign people in to (empty with a tenant claim: any);
            a token naming another tenant is refused.
    """

    key: str
    name: str
    issuer: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    tenant_claim: str | None = None
    tenants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not USERNAME_PATTERN.match(self.key):
            raise OidcConfigError(f"provider key {self.key[:40]!r} must be letters, digits and _.@-")
        parsed = urlparse(self.issuer)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise OidcConfigError(f"provider {self.key}: the issuer must be an https URL")
        if parsed.scheme == "http" and parsed.hostname not in LOOPBACK_HOSTS:
            raise OidcConfigError(f"provider {self.key}: the issuer must be https (http only on loopback)")
        if not self.client_id or not self.client_secret:
            raise OidcConfigError(f"provider {self.key}: client id and client secret are required")
        if self.tenant_claim is None and len(self.tenants) != 1:
            raise OidcConfigError(f"provider {self.key}: name its tenant, or the claim that holds the tenant")
        for tenant in self.tenants:
            if not USERNAME_PATTERN.match(tenant):
                raise OidcConfigError(f"provider {self.key}: tenant {tenant[:40]!r} is not a tenant name")


@dataclass(frozen=True)
class PendingSignIn:
    """What the gateway remembers between the redirect to the provider and the way back."""

    provider: str
    state: str
    nonce: str
    verifier: str
    next: str
    expires: float


@dataclass
class _Discovered:
    metadata: dict[str, Any]
    keys: KeySet
    at: float


@dataclass
class OidcClient:
    """Talks to one provider: discovery, the authorization URL, the code exchange, the ID token."""

    provider: OidcProvider
    http: httpx.AsyncClient | None = None
    _discovered: _Discovered | None = field(default=None, init=False, repr=False)

    async def _get_json(self, url: str) -> dict[str, Any]:
        http = self.http or httpx.AsyncClient(timeout=10)
        try:
            response = await http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as err:
            raise SignInRefused(
                f"The sign-in service {self.provider.name} cannot be reached now ({type(err).__name__})."
                " Please try again later.",
                503,
            ) from None
        finally:
            if self.http is None:
                await http.aclose()
        if not isinstance(document, dict):
            raise SignInRefused(f"The sign-in service {self.provider.name} answered nonsense.", 503)
        return document

    async def discovered(self, *, refresh: bool = False) -> _Discovered:
        """The provider's discovery document and keys (cached; read again when asked or stale)."""
        found = self._discovered
        if found is not None and not refresh and time.time() - found.at < DISCOVERY_TTL_S:
            return found
        issuer = self.provider.issuer.rstrip("/")
        metadata = await self._get_json(f"{issuer}/.well-known/openid-configuration")
        if metadata.get("issuer") != self.provider.issuer and metadata.get("issuer") != issuer:
            raise SignInRefused(f"The sign-in service {self.provider.name} names another issuer.", 503)
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(metadata.get(name), str):
                raise SignInRefused(f"The sign-in service {self.provider.name} lacks its {name}.", 503)
        jwks = await self._get_json(metadata["jwks_uri"])
        try:
            keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            raise SignInRefused(
                f"The sign-in service {self.provider.name} published unusable keys.", 503
            ) from None
        self._discovered = _Discovered(metadata, keys, time.time())
        return self._discovered

    async def begin(self, redirect_uri: str, next_path: str) -> tuple[str, PendingSignIn]:
        """The provider's authorization URL and what to remember until the browser comes back."""
        found = await self.discovered()
        pending = PendingSignIn(
            provider=self.provider.key,
            state=generate_token(32),
            nonce=generate_token(32),
            verifier=generate_token(64),
            next=next_path,
            expires=time.time() + FLOW_TTL_S,
        )
        url = prepare_grant_uri(
            found.metadata["authorization_endpoint"],
            client_id=self.provider.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=" ".join(dict.fromkeys(("openid", *self.provider.scopes))),
            state=pending.state,
            nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.verifier),
            code_challenge_method="S256",
        )
        return url, pending

    async def finish(
        self,
        params: Mapping[str, str],
        pending: PendingSignIn | None,
        redirect_uri: str,
        started_with: str = "",
    ) -> Person:
        """The person the provider vouches for, after the browser came back with ``params``.

        ``params`` arrived at this provider's own callback; ``started_with`` names the provider of
        ``pending`` for the page when it is another one.

        Raises:
            SignInRefused: The sign-in was started with another provider, the state does not match,
                the provider's answer does not carry its issuer (RFC 9207, when it says it does),
                the provider refused, the code exchange failed, or the ID token does not prove who
                the person is (named on the page).
        """
        if pending is None or pending.expires < time.time():
            raise SignInRefused(
                "This sign-in was not started here, or took too long. Please sign in again.", 400
            )
        if pending.provider != self.provider.key:
            # Mix-up: the answer came to this provider's callback, the sign-in was started with
            # another one. Its code is never sent anywhere.
            raise SignInRefused(
                f"This sign-in came back from {self.provider.name}, not from"
                f" {started_with or 'the sign-in service'} where it was started. Please sign in again.",
                400,
            )
        if params.get("state") != pending.state:
            raise SignInRefused(
                "This sign-in does not match the one started here (state). Please sign in again.", 400
            )
        found = await self.discovered()
        self._check_issuer(params, found.metadata)
        if "error" in params:
            reason = str(params.get("error_description") or params["error"])[:200]
            raise SignInRefused(f"{self.provider.name} did not sign you in: {reason}", 401)
        code = params.get("code")
        if not code:
            raise SignInRefused(
                f"{self.provider.name} sent no authorization code. Please sign in again.", 400
            )
        id_token = await self._exchange(
            found.metadata["token_endpoint"], code, pending.verifier, redirect_uri
        )
        claims = await self.verify_id_token(id_token, pending.nonce)
        return self.person(claims)

    async def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where to send the browser to end the person's session at the provider (OpenID Connect
        RP-Initiated Logout 1.0, identified by ``client_id``), or None when the provider does not
        advertise an ``end_session_endpoint`` (an https one, or http on loopback).

        Raises:
            SignInRefused: The provider's discovery cannot be read.
        """
        endpoint = (await self.discovered()).metadata.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        parsed = urlparse(endpoint)
        if parsed.scheme != "https" and not (parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS):
            return None
        query = urlencode(
            {"client_id": self.provider.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        )
        return f"{endpoint}{'&' if parsed.query else '?'}{query}"

    def _check_issuer(self, params: Mapping[str, str], metadata: Mapping[str, Any]) -> None:
        """RFC 9207: an ``iss`` in the answer must be this provider's issuer; a provider whose
        metadata says it sends ``iss`` must have sent it."""
        iss = params.get("iss")
        if iss is None:
            if metadata.get("authorization_response_iss_parameter_supported") is True:
                raise SignInRefused(
                    f"{self.provider.name} did not name itself in its answer (iss). Please sign in again.",
                    400,
                )
            return
        if iss not in (metadata.get("issuer"), self.provider.issuer):
            raise SignInRefused(
                f"This sign-in was started with {self.provider.name}, but another sign-in service"
                " answered (iss). Please sign in again.",
                400,
            )

    async def _exchange(self, endpoint: str, code: str, verifier: str, redirect_uri: str) -> str:
        http = self.http or httpx.AsyncClient(timeout=10)
        try:
            response = await http.post(
                endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                },
                auth=(self.provider.client_id, self.provider.client_secret),  # client_secret_basic
                headers={"Accept": "application/json"},
            )
            body = response.json()
        except (httpx.HTTPError, ValueError):
            raise SignInRefused(
                f"The sign-in service {self.provider.name} cannot be reached now.", 503
            ) from None
        finally:
            if self.http is None:
                await http.aclose()
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise SignInRefused(
                f"{self.provider.name} refused the sign-in code ({str(error)[:80] or response.status_code})."
                " Please sign in again.",
                401,
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused(f"{self.provider.name} sent no ID token.", 401)
        return id_token

    async def verify_id_token(self, id_token: str, nonce: str, *, now: float | None = None) -> dict[str, Any]:
        """The claims of an ID token that this provider issued for this client with this nonce.

        Raises:
            SignInRefused: Naming what is wrong (signature, issuer, audience, expiry, nonce).
        """
        found = await self.discovered()
        refused = "The sign-in could not be verified: the ID token {}. Please sign in again."
        if len(id_token) > 16384:
            raise SignInRefused(refused.format("is too long"))
        try:
            token = jwt.decode(id_token, found.keys, algorithms=list(ID_TOKEN_ALGORITHMS))
        except InvalidKeyIdError:
            # A kid the cached keys do not hold: the provider may have rotated; read its keys once.
            found = await self.discovered(refresh=True)
            token = self._decode(id_token, found.keys, refused)
        except BadSignatureError:
            raise SignInRefused(refused.format("signature is not valid")) from None
        except (JoseError, ValueError):
            raise SignInRefused(refused.format("cannot be read")) from None
        at = int(time.time() if now is None else now)
        registry = jwt.JWTClaimsRegistry(
            now=at,
            leeway=LEEWAY_S,
            iss={"essential": True, "value": self.provider.issuer},
            aud={"essential": True, "value": self.provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        claims = dict(token.claims)
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise SignInRefused(refused.format("has expired")) from None
        except MissingClaimError as err:
            raise SignInRefused(refused.format(f"lacks the {_claim_of(err)} claim")) from None
        except InvalidClaimError as err:
            name = _claim_of(err)
            what = {
                "iss": "was issued by another provider",
                "aud": "was issued for another application",
                "nonce": "belongs to another sign-in (nonce)",
                "iat": "is not valid yet",
            }.get(name, f"has an invalid {name} claim")
            raise SignInRefused(refused.format(what)) from None
        except JoseError:
            raise SignInRefused(refused.format("has invalid claims")) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.provider.client_id:
            raise SignInRefused(refused.format("was issued for another application (azp)"))
        return claims

    def _decode(self, id_token: str, keys: KeySet, refused: str) -> Any:
        try:
            return jwt.decode(id_token, keys, algorithms=list(ID_TOKEN_ALGORITHMS))
        except BadSignatureError:
            raise SignInRefused(refused.format("signature is not valid")) from None
        except (JoseError, ValueError):
            raise SignInRefused(refused.format("was not signed by this provider's keys")) from None

    def person(self, claims: Mapping[str, Any]) -> Person:
        """The person of verified claims (user name, groups, tenant), or why not.

        Raises:
            SignInRefused: No usable user name, or a tenant this provider may not sign in to.
        """
        provider = self.provider
        username = claims.get(provider.username_claim)
        if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
            raise SignInRefused(
                f"{provider.name} did not give a usable user name (claim {provider.username_claim}).", 403
            )
        raw_groups = claims.get(provider.groups_claim, [])
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        groups = (
            tuple(g for g in raw_groups if isinstance(g, str) and USERNAME_PATTERN.match(g))
            if isinstance(raw_groups, list)
            else ()
        )
        if provider.tenant_claim is None:
            tenant = provider.tenants[0]
        else:
            value = claims.get(provider.tenant_claim)
            if not isinstance(value, str) or not USERNAME_PATTERN.match(value):
                raise SignInRefused(
                    f"{provider.name} did not say which organisation you belong to (claim"
                    f" {provider.tenant_claim}).",
                    403,
                )
            tenant = value
        if provider.tenants and tenant not in provider.tenants:
            raise SignInRefused(
                f"{provider.name} may not sign people in to the organisation {tenant[:60]!r}.", 403
            )
        display = claims.get("name")
        return Person(tenant, username, display if isinstance(display, str) else username, groups)


def _claim_of(err: Exception) -> str:
    claim = getattr(err, "claim", None)
    if isinstance(claim, str):
        return claim
    text = str(err)
    for name in ("iss", "aud", "nonce", "exp", "iat", "sub", "nbf", "azp"):
        if f"'{name}'" in text:
            return name
    return "a"


def providers_from_env(env: Mapping[str, str]) -> list[OidcProvider]:
    """The providers the environment configures (see :data:`OIDC_ENV_HELP`).

    Raises:
        OidcConfigError: A variable is set but unusable, named.
    """
    issuer = env.get("WFA_INBOX_OIDC_ISSUER", "").strip()
    prefixes = {"sso": "WFA_INBOX_OIDC_"} if issuer else {}
    for key in _split(env.get("WFA_INBOX_OIDC_PROVIDERS", "")):
        if key in prefixes:
            raise OidcConfigError("WFA_INBOX_OIDC_PROVIDERS names a provider twice")
        prefixes[key] = f"WFA_INBOX_OIDC_{key.upper().replace('-', '_')}_"
    providers = [_provider(env, prefix, key) for key, prefix in prefixes.items()]
    try:
        check_providers(providers)
    except OidcConfigError as err:
        raise OidcConfigError(f"{prefixes[err.provider]}TENANTS: {err}") from None
    return providers


def check_providers(providers: Sequence[OidcProvider]) -> None:
    """Refuses providers that together would let one speak for another's tenants.

    With several providers, each must name its tenant or the tenants it may sign people in to: a
    provider accepting any tenant its tokens name could sign people in to the others' tenants.

    Raises:
        OidcConfigError: Naming the first provider that may name any tenant (``provider``: its key).
    """
    if len(providers) < 2:
        return
    for provider in providers:
        if not provider.tenants:
            raise OidcConfigError(
                f"provider {provider.key} may sign people in to any tenant its tokens name, beside"
                " other providers; name its tenant or the tenants it may sign people in to",
                provider.key,
            )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _provider(env: Mapping[str, str], prefix: str, key: str) -> OidcProvider:
    def get(name: str, default: str = "") -> str:
        return env.get(prefix + name, default).strip()

    issuer = get("ISSUER")
    if not issuer:
        raise OidcConfigError(f"{prefix}ISSUER is required for the provider {key!r}")
    secret = get("CLIENT_SECRET")
    secret_file = get("CLIENT_SECRET_FILE")
    if not secret and secret_file:
        try:
            with open(secret_file, encoding="utf-8") as file:
                secret = file.read().strip()
        except OSError as err:
            raise OidcConfigError(
                f"{prefix}CLIENT_SECRET_FILE: cannot read {secret_file}: {err.strerror}"
            ) from None
    tenant = get("TENANT")
    try:
        return OidcProvider(
            key=key,
            name=get("NAME", urlparse(issuer).hostname or key),
            issuer=issuer,
            client_id=get("CLIENT_ID"),
            client_secret=secret,
            scopes=tuple(get("SCOPES", "openid profile email").split()),
            username_claim=get("USERNAME_CLAIM", "preferred_username"),
            groups_claim=get("GROUPS_CLAIM", "groups"),
            # A provider of one tenant checks the tenant claim too when one is named.
            tenant_claim=get("TENANT_CLAIM") or (None if tenant else "tenant"),
            tenants=(tenant,) if tenant else tuple(_split(get("TENANTS"))),
        )
    except OidcConfigError as err:
        raise OidcConfigError(f"{prefix}*: {err}") from None


OIDC_ENV_HELP: Sequence[str] = (
    "WFA_INBOX_OIDC_ISSUER",
    "WFA_INBOX_OIDC_CLIENT_ID",
    "WFA_INBOX_OIDC_CLIENT_SECRET",
    "WFA_INBOX_OIDC_CLIENT_SECRET_FILE",
    "WFA_INBOX_OIDC_NAME",
    "WFA_INBOX_OIDC_SCOPES",
    "WFA_INBOX_OIDC_USERNAME_CLAIM",
    "WFA_INBOX_OIDC_GROUPS_CLAIM",
    "WFA_INBOX_OIDC_TENANT_CLAIM",
    "WFA_INBOX_OIDC_TENANT",
    "WFA_INBOX_OIDC_TENANTS",
    "WFA_INBOX_OIDC_PROVIDERS",
)
"""The variables :func:`providers_from_env` reads (one provider per tenant: ``WFA_INBOX_OIDC_PROVIDERS=
acme,globex`` and ``WFA_INBOX_OIDC_ACME_ISSUER``, ``WFA_INBOX_OIDC_ACME_TENANT=acme``, ...)."""
