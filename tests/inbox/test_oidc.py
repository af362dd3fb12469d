"""OpenID Connect sign-in against a real provider (``oidc-provider-mock``) served on loopback.

The browser test goes the whole way: the inbox, the provider's authorization page, back to the inbox,
the tenant's pending approval, a decision, the run completed. The attacker's tests come first: a
tampered or expired ID token, a wrong nonce or state, a token for another application or from
another provider, a tenant the provider may not sign in to; each is refused with a page that says
why (never a traceback), and leaves nobody signed in.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import flask
import httpx
import pytest
import pytest_asyncio
import werkzeug.serving
from fastapi import FastAPI
from oidc_provider_mock import app as provider_app
from oidc_provider_mock import run_server_in_thread
from playwright.async_api import Browser, expect
from temporalio.client import Client
from temporalio.worker import Worker

from gateway.inbox import InboxConfig, install_inbox
from gateway.inbox.auth import Person
from gateway.inbox.oidc import LEEWAY_S, OidcClient, OidcProvider, SignInRefused
from gateway.inbox.router import COOKIE
from interpreter.state import RunResult, RunState
from starter.client import FlowClient
from starter.tokens import generate_keys
from tests.inbox.conftest import inbox_app, serve
from tests.inbox.test_inbox_browser import SCREENSHOTS, _listed, _start
from tests.workflows.support import eventually
from workflows import decision_tokens

CLIENT_ID = "wfa-inbox"
CLIENT_SECRET = "s3cret-of-the-gateway"
PEOPLE = {
    "alice-1": {"preferred_username": "alice", "name": "Alice Martin", "tenant": "acme", "groups": []},
    "carol-2": {"preferred_username": "carol", "name": "Carol Diaz", "tenant": "acme", "groups": ["finance"]},
    # Globex's user at acme's provider: the provider may sign people in to acme only.
    "mallory-3": {"preferred_username": "mallory", "name": "Mallory", "tenant": "globex", "groups": []},
}


def _provider_server() -> Iterator[str]:
    with run_server_in_thread() as server:
        issuer = f"http://localhost:{server.server_port}"
        for sub, claims in PEOPLE.items():
            httpx.put(f"{issuer}/users/{sub}", json=claims).raise_for_status()
        yield issuer


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """Acme's OpenID Connect provider."""
    yield from _provider_server()


@pytest.fixture(scope="module")
def other_issuer() -> Iterator[str]:
    """Another provider (its own keys and issuer)."""
    yield from _provider_server()


def _acme(issuer: str) -> OidcProvider:
    return OidcProvider(
        key="acme",
        name="Acme SSO",
        issuer=issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        tenant_claim="tenant",
        tenants=("acme",),
    )


@dataclass
class OidcInbox:
    url: str
    clients: dict[str, FlowClient]


@pytest_asyncio.fixture(loop_scope="session")
async def oidc_inbox(
    client: Client, task_queue: str, worker: Worker, issuer: str
) -> AsyncIterator[OidcInbox]:
    """The inbox with OpenID Connect sign-in only (no local users), on a loopback port."""
    private, public = generate_keys("oidc-test")
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(public))
    clients = {t: FlowClient(client, task_queue=task_queue, tenant=t) for t in ("acme", "globex")}
    app = inbox_app(clients, {"acme": private}, authenticator=None, oidc_providers=[_acme(issuer)])
    try:
        async with serve(app) as base:
            yield OidcInbox(f"{base}/inbox", clients)
    finally:
        decision_tokens.configure(None)


async def _id_token(issuer: str, sub: str, *, client_id: str = CLIENT_ID, nonce: str = "n-1") -> str:
    """A real ID token of the provider: its authorization endpoint, then its token endpoint."""
    redirect = "http://127.0.0.1:9/inbox/oidc/callback"
    async with httpx.AsyncClient() as http:
        query = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect,
            "scope": "openid profile",
            "state": "st",
            "nonce": nonce,
        }
        answer = await http.post(f"{issuer}/oauth2/authorize", params=query, data={"sub": sub})
        code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
        token = await http.post(
            f"{issuer}/oauth2/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
            auth=(client_id, "whatever"),
        )
        id_token: str = token.json()["id_token"]
        return id_token


def _tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def _refused(check: Any, expected: str) -> None:
    with pytest.raises(SignInRefused) as caught:
        await check
    assert expected in caught.value.message, caught.value.message


async def test_id_tokens_that_prove_nothing_are_refused(issuer: str, other_issuer: str) -> None:
    oidc = OidcClient(_acme(issuer))
    good = await _id_token(issuer, "alice-1")
    claims = await oidc.verify_id_token(good, "n-1")
    assert oidc.person(claims).username == "alice"

    # Tampered: carol's name in alice's token; the signature no longer matches.
    await _refused(oidc.verify_id_token(_tampered(good, preferred_username="carol"), "n-1"), "signature")
    # Expired: the same token once its lifetime (and the allowed clock skew) has passed.
    expires = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))["exp"]
    await _refused(oidc.verify_id_token(good, "n-1", now=expires + LEEWAY_S + 1), "has expired")
    # Another sign-in's nonce: a token replayed into this one.
    await _refused(oidc.verify_id_token(good, "n-other"), "belongs to another sign-in")
    # Issued by the same provider for another application.
    elsewhere = await _id_token(issuer, "alice-1", client_id="another-app")
    await _refused(oidc.verify_id_token(elsewhere, "n-1"), "another application")
    # Issued by another provider (its own keys).
    foreign = await _id_token(other_issuer, "alice-1")
    await _refused(oidc.verify_id_token(foreign, "n-1"), "signature is not valid")
    # Not a JWT at all.
    await _refused(oidc.verify_id_token("not.a-token", "n-1"), "cannot be read")
    # A tenant the provider may not sign people in to.
    mallory = await oidc.verify_id_token(await _id_token(issuer, "mallory-3"), "n-1")
    with pytest.raises(SignInRefused, match="may not sign people in to the organisation 'globex'"):
        oidc.person(mallory)


async def _start_sign_in(http: httpx.AsyncClient, inbox: OidcInbox) -> str:
    """Follows the inbox to the provider; returns the provider's authorization URL."""
    answer = await http.get(f"{inbox.url}/oidc/login?provider=acme")
    assert answer.status_code == 303
    location = answer.headers["location"]
    query = parse_qs(urlparse(location).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"][0]
    assert query["nonce"][0]
    assert query["state"][0]
    assert query["redirect_uri"] == [f"{inbox.url}/oidc/callback/acme"]
    return location


async def _authorize(http: httpx.AsyncClient, location: str, sub: str) -> str:
    """The provider's answer for ``sub``: the callback URL with the code and state."""
    answer = await http.post(location, data={"sub": sub})
    assert answer.status_code == 302, answer.text[:300]
    callback: str = answer.headers["location"]
    return callback


def _assert_page(answer: httpx.Response, status: int, text: str) -> None:
    assert answer.status_code == status, answer.text[:500]
    assert answer.headers["content-type"].startswith("text/html")
    assert text in answer.text, answer.text[:800]
    assert "Traceback" not in answer.text


async def test_callbacks_that_prove_nothing_sign_nobody_in(oidc_inbox: OidcInbox) -> None:
    async with httpx.AsyncClient() as http:
        # A state that is not the one this browser's sign-in started with (a forged callback).
        location = await _start_sign_in(http, oidc_inbox)
        callback = await _authorize(http, location, "alice-1")
        forged = callback.replace("state=", "state=x")
        _assert_page(await http.get(forged), 400, "does not match the one started here")

        # A callback without a sign-in started in this browser.
        async with httpx.AsyncClient() as stranger:
            _assert_page(await stranger.get(callback), 400, "was not started here")

        # The provider signs in Globex's mallory: acme's provider may not speak for Globex.
        location = await _start_sign_in(http, oidc_inbox)
        callback = await _authorize(http, location, "mallory-3")
        page = await http.get(callback)
        _assert_page(page, 403, "may not sign people in to the organisation")
        assert (await http.get(f"{oidc_inbox.url}/")).status_code == 303  # still not signed in

        # The provider's own refusal (the person pressed Deny).
        location = await _start_sign_in(http, oidc_inbox)
        state = parse_qs(urlparse(location).query)["state"][0]
        denied = f"{oidc_inbox.url}/oidc/callback/acme?error=access_denied&state={state}"
        _assert_page(await http.get(denied), 401, "did not sign you in: access_denied")

        # A callback replayed after its sign-in finished: the sign-in cookie went with the first use.
        location = await _start_sign_in(http, oidc_inbox)
        callback = await _authorize(http, location, "alice-1")
        assert (await http.get(callback)).headers["location"] == f"{urlparse(oidc_inbox.url).path}/"
        _assert_page(await http.get(callback), 400, "was not started here")

        # An unknown provider.
        _assert_page(await http.get(f"{oidc_inbox.url}/oidc/login?provider=nope"), 404, "no such sign-in")


async def test_sign_in_with_the_provider_and_decide(
    client: Client, task_queue: str, oidc_inbox: OidcInbox, browser: Browser
) -> None:
    handle = await _start(client, task_queue, "acme", ["group:finance"])
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(f"{oidc_inbox.url}/")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert await page.get_by_label("Password").count() == 0  # no local sign-in here
        await page.screenshot(path=str(SCREENSHOTS / "inbox-sign-in-oidc.png"), full_page=True)
        await page.get_by_role("link", name="Sign in with Acme SSO").click()

        # The provider's authorization page (its own sign-in), then back to the inbox.
        await expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
        await page.get_by_placeholder("sub").fill("carol-2")
        await page.get_by_role("button", name="Authorize").click()
        await expect(page.get_by_role("heading", name="Waiting for you")).to_be_visible()
        await expect(page.get_by_text("Signed in as")).to_contain_text("Carol Diaz")

        title = "Expense of 1250 EUR by Sam Lee: Client visit in Lyon"
        await eventually(lambda: _listed(page, title), bool, timeout=30, what="the approval listed")
        await page.get_by_role("link", name=title).click()
        await page.get_by_label("Approved amount").fill("1250")
        await page.get_by_label("Cost center").select_option("sales")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("status")).to_contain_text("Approved")

        result: RunResult = await asyncio.wait_for(handle.result(), timeout=60)
        assert result.state == RunState.COMPLETED
        output = result.steps[0].output
        assert (output["decision"], output["actor"]) == ("approved", "carol")
        assert output["data"] == {"approved_amount": 1250, "cost_center": "sales"}
    finally:
        await context.close()


def test_settings_from_the_environment(tmp_path: Any) -> None:
    from gateway.inbox import InboxConfigError, inbox_config_from_env

    async def no_client(tenant: str) -> FlowClient:
        raise AssertionError

    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    env = {
        "WFA_INBOX_SESSION_SECRET": "x" * 32,
        "WFA_INBOX_OIDC_PROVIDERS": "acme,globex",
        "WFA_INBOX_OIDC_ACME_ISSUER": "https://login.acme.example",
        "WFA_INBOX_OIDC_ACME_CLIENT_ID": "wfa",
        "WFA_INBOX_OIDC_ACME_CLIENT_SECRET_FILE": str(secret),
        "WFA_INBOX_OIDC_ACME_TENANT": "acme",
        "WFA_INBOX_OIDC_ACME_NAME": "Acme SSO",
        "WFA_INBOX_OIDC_GLOBEX_ISSUER": "https://idp.globex.example/realms/x",
        "WFA_INBOX_OIDC_GLOBEX_CLIENT_ID": "wfa",
        "WFA_INBOX_OIDC_GLOBEX_CLIENT_SECRET": "s",
        "WFA_INBOX_OIDC_GLOBEX_TENANTS": "globex",
        "WFA_INBOX_OIDC_GLOBEX_GROUPS_CLAIM": "roles",
    }
    config = inbox_config_from_env(no_client, env)
    assert config is not None
    assert config.authenticator is None
    acme, globex = config.oidc_providers
    assert (acme.name, acme.client_secret, acme.tenants, acme.tenant_claim) == (
        "Acme SSO",
        "from-a-file",
        ("acme",),
        None,
    )
    assert (globex.tenant_claim, globex.tenants, globex.groups_claim) == ("tenant", ("globex",), "roles")

    for change, message in (
        ({"WFA_INBOX_OIDC_ACME_ISSUER": "http://login.acme.example"}, "must be https"),
        ({"WFA_INBOX_OIDC_GLOBEX_CLIENT_SECRET": ""}, "client id and client secret are required"),
        ({"WFA_INBOX_OIDC_ACME_CLIENT_SECRET_FILE": str(tmp_path / "none")}, "cannot read"),
        ({"WFA_INBOX_OIDC_PROVIDERS": "acme,initech"}, "WFA_INBOX_OIDC_INITECH_ISSUER is required"),
        # Beside other providers, one that would accept any tenant its tokens name.
        ({"WFA_INBOX_OIDC_GLOBEX_TENANTS": ""}, "WFA_INBOX_OIDC_GLOBEX_TENANTS"),
    ):
        with pytest.raises(InboxConfigError, match=message):
            inbox_config_from_env(no_client, {**env, **change})


# ------------------------------------------------------------------- several providers (mix-up)


@dataclass
class Provider:
    """A real provider served on loopback, with what its token endpoint received."""

    issuer: str
    codes: list[str] = field(default_factory=list)
    # Code -> the PKCE challenge its authorization request carried (RFC 7636).
    challenges: dict[str, str] = field(default_factory=dict)
    refused_verifiers: int = 0
    # The query of each request to its end_session_endpoint (RP-Initiated Logout).
    ended_sessions: list[dict[str, str]] = field(default_factory=list)


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@contextmanager
def _recording_provider(*, rfc9207: bool = False) -> Iterator[Provider]:
    """``oidc-provider-mock`` recording the codes posted to its token endpoint, and requiring
    PKCE as a provider configured for it does (the mock alone ignores ``code_challenge``): a code
    is exchanged only with the verifier whose S256 hash its authorization request carried.

    With ``rfc9207`` it also advertises ``authorization_response_iss_parameter_supported`` and adds
    ``iss`` to its authorization responses (RFC 9207), as Keycloak, Entra ID and others do.
    """
    app = provider_app()
    server = werkzeug.serving.make_server("localhost", 0, app, threaded=True)
    provider = Provider(f"http://localhost:{server.server_port}")

    @app.before_request
    def require_pkce() -> tuple[dict[str, str], int] | None:
        request = flask.request
        code = request.form.get("code") if request.path == "/oauth2/token" else None
        if code is None:
            return None
        challenge = provider.challenges.get(code)
        verifier = request.form.get("code_verifier")
        if challenge is None or verifier is None or _s256(verifier) != challenge:
            provider.refused_verifiers += 1
            return {"error": "invalid_grant", "error_description": "PKCE verification failed"}, 400
        return None

    @app.after_request
    def observe(response: flask.Response) -> flask.Response:
        request = flask.request
        if request.path == "/oauth2/end_session":
            provider.ended_sessions.append(dict(request.args))
        if request.path == "/oauth2/token" and request.form.get("code"):
            provider.codes.append(request.form["code"])
        if request.path == "/oauth2/authorize" and response.status_code == 302:
            code = parse_qs(urlparse(response.headers["Location"]).query).get("code")
            if code and request.args.get("code_challenge_method") == "S256":
                provider.challenges[code[0]] = request.args.get("code_challenge", "")
        if not rfc9207:
            return response
        if request.path == "/.well-known/openid-configuration":
            metadata = json.loads(response.get_data())
            metadata["authorization_response_iss_parameter_supported"] = True
            response.set_data(json.dumps(metadata))
        elif request.path == "/oauth2/authorize" and response.status_code == 302:
            location = response.headers["Location"]
            joiner = "&" if "?" in location else "?"
            response.headers["Location"] = f"{location}{joiner}{urlencode({'iss': provider.issuer})}"
        return response

    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        for sub, claims in PEOPLE.items():
            httpx.put(f"{provider.issuer}/users/{sub}", json=claims).raise_for_status()
        yield provider
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


@pytest.fixture(scope="module")
def evil() -> Iterator[Provider]:
    """Evil's provider: configured for the tenant evil, run by an attacker."""
    with _recording_provider() as provider:
        yield provider


@pytest.fixture(scope="module")
def initech() -> Iterator[Provider]:
    """Initech's provider: names itself in its authorization responses (RFC 9207)."""
    with _recording_provider(rfc9207=True) as provider:
        yield provider


def _one_tenant(key: str, issuer: str) -> OidcProvider:
    return OidcProvider(
        key=key,
        name=f"{key.title()} SSO",
        issuer=issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        tenants=(key,),
    )


@dataclass
class ManyProviders:
    url: str
    app: FastAPI


@pytest_asyncio.fixture(loop_scope="session")
async def many_providers(issuer: str, evil: Provider, initech: Provider) -> AsyncIterator[ManyProviders]:
    """The inbox with three providers: acme's, evil's and initech's (no Temporal needed: nobody
    gets past the sign-in in these tests)."""

    async def no_client(tenant: str) -> FlowClient:
        raise AssertionError(f"no run is looked at here ({tenant})")

    app = FastAPI()
    install_inbox(
        app,
        InboxConfig(
            clients=no_client,
            authenticator=None,
            session_secret=secrets.token_bytes(32),
            oidc_providers=[
                _acme(issuer),
                _one_tenant("evil", evil.issuer),
                _one_tenant("initech", initech.issuer),
            ],
            signing_keys={},
            secure_cookies=False,
        ),
    )
    async with serve(app) as base:
        yield ManyProviders(f"{base}/inbox", app)


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlparse(url).query).items()}


def _with_query(url: str, **changes: str | None) -> str:
    query = {k: v for k, v in {**_query(url), **changes}.items() if v is not None}
    return urlunparse(urlparse(url)._replace(query=urlencode(query)))


def _signed_in_as(inbox: ManyProviders, answer: httpx.Response) -> str | None:
    session = inbox.app.state.inbox.sessions.load(answer.cookies.get(COOKIE))
    return None if session is None or session.person is None else str(session.person.username)


async def test_a_code_for_one_provider_never_reaches_another(
    many_providers: ManyProviders, evil: Provider
) -> None:
    """The mix-up attack: evil's provider bounces the victim to acme with the attacker's request."""
    inbox = many_providers
    async with httpx.AsyncClient() as attacker, httpx.AsyncClient() as victim:
        # The attacker starts an acme sign-in in their own browser and keeps acme's URL.
        acme_url = (await attacker.get(f"{inbox.url}/oidc/login?provider=acme")).headers["location"]
        assert _query(acme_url)["redirect_uri"] == f"{inbox.url}/oidc/callback/acme"
        # The victim follows a link that starts a sign-in with evil; evil's authorization endpoint
        # sends them on to acme with the attacker's request and the victim's state.
        evil_url = (await victim.get(f"{inbox.url}/oidc/login?provider=evil")).headers["location"]
        assert _query(evil_url)["redirect_uri"] == f"{inbox.url}/oidc/callback/evil"
        bounced = _with_query(acme_url, state=_query(evil_url)["state"])
        # Acme signs the victim in and sends them back to acme's callback: not evil's sign-in.
        callback = await _authorize(victim, bounced, "alice-1")
        assert callback.startswith(f"{inbox.url}/oidc/callback/acme?")
        page = await victim.get(callback)
        _assert_page(page, 400, "came back from Acme SSO, not from Evil SSO")
        assert _signed_in_as(inbox, page) is None
        assert evil.codes == []  # acme's code was never posted to evil's token endpoint

        # The attacker also rewrites acme's redirect URI to evil's callback (a provider that checks
        # registered redirect URIs refuses that already; the mock does not). Evil then gets the
        # code, but it is bound to evil's redirect URI: replayed at acme's callback, acme refuses it.
        acme_url = (await attacker.get(f"{inbox.url}/oidc/login?provider=acme")).headers["location"]
        evil_url = (await victim.get(f"{inbox.url}/oidc/login?provider=evil")).headers["location"]
        bounced = _with_query(
            acme_url, state=_query(evil_url)["state"], redirect_uri=f"{inbox.url}/oidc/callback/evil"
        )
        callback = await _authorize(victim, bounced, "alice-1")
        page = await victim.get(callback)
        assert _signed_in_as(inbox, page) is None
        [leaked] = evil.codes
        replayed = await attacker.get(
            f"{inbox.url}/oidc/callback/acme?"
            + urlencode({"code": leaked, "state": _query(acme_url)["state"]})
        )
        _assert_page(replayed, 401, "Acme SSO refused the sign-in code")
        assert _signed_in_as(inbox, replayed) is None

        # A callback for a provider that is not configured, and the old shared callback address.
        _assert_page(await victim.get(f"{inbox.url}/oidc/callback/nope?code=c&state=s"), 404, "no such")
        _assert_page(
            await victim.get(f"{inbox.url}/oidc/callback?code=c&state=s"), 400, "Please sign in again"
        )


async def test_an_answer_without_the_providers_iss_is_refused(
    many_providers: ManyProviders, evil: Provider, initech: Provider
) -> None:
    """RFC 9207: a provider that names itself in its answers must have named itself, correctly."""
    inbox = many_providers
    async with httpx.AsyncClient() as http:

        async def answer(sub: str = "alice-1") -> str:
            location = (await http.get(f"{inbox.url}/oidc/login?provider=initech")).headers["location"]
            callback = await _authorize(http, location, sub)
            assert _query(callback)["iss"] == initech.issuer
            return callback

        # Without iss (an answer that did not come from initech's authorization endpoint).
        page = await http.get(_with_query(await answer(), iss=None))
        _assert_page(page, 400, "did not name itself in its answer (iss)")
        assert _signed_in_as(inbox, page) is None
        # With another provider's issuer (the code came from another provider).
        page = await http.get(_with_query(await answer(), iss=evil.issuer))
        _assert_page(page, 400, "another sign-in service answered (iss)")
        assert _signed_in_as(inbox, page) is None
        assert initech.codes == []  # neither code was exchanged
        # Its own issuer: signed in.
        page = await http.get(await answer())
        assert page.status_code == 303, page.text[:500]
        assert _signed_in_as(inbox, page) == "alice"
        # A provider that does not advertise iss may still send one: a wrong one is refused.
        location = (await http.get(f"{inbox.url}/oidc/login?provider=acme")).headers["location"]
        callback = await _authorize(http, location, "alice-1")
        page = await http.get(_with_query(callback, iss=initech.issuer))
        _assert_page(page, 400, "another sign-in service answered (iss)")


async def test_a_stolen_code_is_useless_without_its_verifier(
    many_providers: ManyProviders, initech: Provider
) -> None:
    """Code injection (RFC 7636, RFC 9700 4.5): the attacker has the victim's authorization code
    (from a log, a referrer, a malicious app on the phone) and plays it into a sign-in of their own.
    The inbox exchanges it with the attacker's session's verifier, which does not hash to the
    victim's challenge: the provider refuses, and nobody is signed in."""
    inbox = many_providers
    async with httpx.AsyncClient() as attacker, httpx.AsyncClient() as victim:
        victim_url = (await victim.get(f"{inbox.url}/oidc/login?provider=initech")).headers["location"]
        stolen = _query(await _authorize(victim, victim_url, "alice-1"))["code"]

        attacker_url = (await attacker.get(f"{inbox.url}/oidc/login?provider=initech")).headers["location"]
        assert _query(attacker_url)["code_challenge"] != _query(victim_url)["code_challenge"]
        own = _query(await _authorize(attacker, attacker_url, "mallory-3"))
        refused_before = initech.refused_verifiers
        injected = await attacker.get(
            f"{inbox.url}/oidc/callback/initech?"
            + urlencode({"code": stolen, "state": own["state"], "iss": initech.issuer})
        )
        _assert_page(injected, 401, "Initech SSO refused the sign-in code (invalid_grant)")
        assert _signed_in_as(inbox, injected) is None
        assert initech.refused_verifiers == refused_before + 1

        # The victim's own callback, with the verifier of the sign-in that asked for the code.
        page = await victim.get(
            f"{inbox.url}/oidc/callback/initech?"
            + urlencode({"code": stolen, "state": _query(victim_url)["state"], "iss": initech.issuer})
        )
        assert page.status_code == 303, page.text[:500]
        assert _signed_in_as(inbox, page) == "alice"


async def test_signing_out_ends_the_providers_session_too(
    many_providers: ManyProviders, initech: Provider
) -> None:
    """RP-Initiated Logout: signing out of the inbox also goes through the provider's
    end_session_endpoint (else a shared computer's next user is signed straight back in)."""
    inbox = many_providers
    async with httpx.AsyncClient() as http:
        location = (await http.get(f"{inbox.url}/oidc/login?provider=initech")).headers["location"]
        page = await http.get(await _authorize(http, location, "alice-1"))
        assert _signed_in_as(inbox, page) == "alice"
        sessions = inbox.app.state.inbox.sessions
        session = sessions.load(http.cookies.get(COOKIE))
        # A sign-out without the session's CSRF token (another site's form) ends nothing.
        forged = await http.post(f"{inbox.url}/logout", data={"csrf": "x"})
        assert forged.headers["location"].endswith("/inbox/login")
        assert sessions.load(http.cookies.get(COOKIE)) is not None
        assert initech.ended_sessions == []

        out = await http.post(f"{inbox.url}/logout", data={"csrf": sessions.csrf_token(session)})
        assert out.status_code == 303
        assert out.headers["location"].startswith(f"{initech.issuer}/oauth2/end_session?")
        assert http.cookies.get(COOKIE) is None  # the inbox's session has ended already
        confirm = await http.get(out.headers["location"])  # the provider asks "sign out?"
        assert confirm.status_code == 200, confirm.text[:300]
        assert initech.ended_sessions == [
            {"client_id": CLIENT_ID, "post_logout_redirect_uri": f"{inbox.url}/login"}
        ]
        back = await http.post(
            f"{initech.issuer}/oauth2/end_session/confirm", data={"redirect_uri": f"{inbox.url}/login"}
        )
        assert back.headers["location"] == f"{inbox.url}/login"
        assert (await http.get(f"{inbox.url}/")).status_code == 303  # not signed in

    # A local sign-in has no provider session: signing out goes straight to the sign-in page.
    async with httpx.AsyncClient() as http:
        local = sessions.new(Person("acme", "alice", "Alice"))
        http.cookies.set(COOKIE, sessions.dump(local))
        out = await http.post(f"{inbox.url}/logout", data={"csrf": sessions.csrf_token(local)})
        assert out.headers["location"].endswith("/inbox/login")
        assert out.headers["set-cookie"].startswith(f'{COOKIE}=""; ')  # deleted
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert len(initech.ended_sessions) == 1


async def test_a_provider_naming_a_tenant_the_gateway_does_not_serve_signs_nobody_in(
    many_providers: ManyProviders, initech: Provider
) -> None:
    """A probe: a provider's person of a tenant the gateway does not serve was signed in, and every
    inbox page then failed with a 500 (the gateway has no client for that tenant)."""
    inbox = many_providers
    state = inbox.app.state.inbox
    state.config = dataclasses.replace(state.config, tenants=frozenset({"acme"}))  # not initech
    async with httpx.AsyncClient() as http:
        location = (await http.get(f"{inbox.url}/oidc/login?provider=initech")).headers["location"]
        page = await http.get(await _authorize(http, location, "alice-1"))
        _assert_page(page, 403, "This inbox does not serve the organisation &#39;initech&#39;.")
        assert _signed_in_as(inbox, page) is None
