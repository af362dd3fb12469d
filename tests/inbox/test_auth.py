"""The inbox's sign-in pieces without a browser: password hashes, the users file, session cookies,
CSRF tokens and the form reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.inbox import InboxConfigError, inbox_config_from_env
from gateway.inbox.auth import (
    LocalUsers,
    Person,
    SessionSigner,
    UsersFileError,
    hash_password,
    verify_password,
)
from gateway.inbox.forms import field_of_message, read_form, readable_refusal
from interpreter.model import FieldType, FormField
from starter.tokens import generate_keys

SECRET = b"0123456789abcdef0123456789abcdef"


def test_password_hashes_verify_and_differ() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second  # salted
    assert verify_password("s3cret", first)
    assert not verify_password("S3cret", first)
    assert not verify_password("s3cret", "md5$abc")
    assert not verify_password("s3cret", "scrypt$not$a$hash")


async def test_local_users_authenticate_within_their_tenant() -> None:
    users = LocalUsers.from_document(
        {
            "users": [
                {
                    "tenant": "acme",
                    "username": "alice",
                    "password": hash_password("pw"),
                    "groups": ["finance"],
                }
            ]
        }
    )
    person = await users.authenticate("acme", "alice", "pw")
    assert person == Person("acme", "alice", "alice", ("finance",))
    assert person.assignee_values == ["user:alice", "group:finance"]
    assert await users.authenticate("globex", "alice", "pw") is None
    assert await users.authenticate("acme", "alice", "wrong") is None
    assert await users.authenticate("acme", "nobody", "pw") is None


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"people": []}, "is a JSON object"),
        (
            {"users": [{"tenant": "acme", "username": "a'b", "password": "scrypt$x"}]},
            "username must be a name",
        ),
        ({"users": [{"tenant": "acme", "username": "a", "password": "plain"}]}, "must be an scrypt hash"),
        ({"users": [{"tenant": "acme", "username": "a", "password": "scrypt$x", "groups": "g"}]}, "groups"),
        (
            {"users": [{"tenant": "t", "username": "a", "password": "scrypt$x"}] * 2},
            "listed twice",
        ),
    ],
)
def test_a_bad_users_file_names_the_entry(document: object, problem: str) -> None:
    with pytest.raises(UsersFileError, match=problem):
        LocalUsers.from_document(document)


def test_sessions_are_signed_and_expire() -> None:
    signer = SessionSigner(SECRET, ttl_s=60)
    session = signer.new(Person("acme", "alice", "Alice", ("finance",)), now=1000)
    cookie = signer.dump(session)
    assert signer.load(cookie, now=1010) == session
    assert signer.load(cookie, now=1061) is None  # expired
    payload, mac = cookie.rsplit(".", 1)
    assert signer.load(f"{payload}x.{mac}", now=1010) is None  # tampered
    assert SessionSigner(b"another secret of 32 bytes!!!!!", 60).load(cookie, now=1010) is None
    token = signer.csrf_token(session)
    assert signer.check_csrf(session, token)
    assert not signer.check_csrf(signer.new(None, now=1000), token)  # bound to its session
    assert not signer.check_csrf(None, token)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SessionSigner(b"short", 60)
    # Signed out: a copy of the cookie no longer loads (a probe replayed it for hours), others do.
    other = signer.new(Person("acme", "bob", "Bob", ()), now=1000)
    signer.end(session, now=1010)
    assert signer.load(cookie, now=1020) is None
    assert signer.load(signer.dump(other), now=1020) == other
    signer.end(other, now=1070)  # the first is forgotten once it would have expired anyway
    assert signer._ended == {other.csrf: other.expires}


def test_cookies_and_form_tokens_of_any_text_are_refused_not_raised() -> None:
    """A cookie or CSRF field holding non-ASCII text is simply not ours (``hmac.compare_digest``
    raised TypeError on it: a crafted cookie answered 500; found by an attacker's probe)."""
    signer = SessionSigner(SECRET, ttl_s=60)
    session = signer.new(None, now=1000)
    for crafted in ("\xe9.\xe9", "abc.d\xe9f", "\udc80.x", "\u00b2" * 10 + "." + "\u00b2"):
        assert signer.load(crafted, now=1010) is None
        assert signer.unseal("login", crafted) is None
        assert not signer.check_csrf(session, crafted)


def test_the_form_reader_types_values_and_names_fields() -> None:
    form = [
        FormField(name="amount", type=FieldType.NUMBER),
        FormField(name="ok", type=FieldType.BOOLEAN),
        FormField(name="note"),
    ]
    data, errors = read_form(form, {"f_amount": "12.5", "f_ok": "true", "f_note": "", "amount": "1"})
    assert (data, errors) == ({"amount": 12.5, "ok": True}, {})
    data, errors = read_form(form, {"f_amount": "12", "f_ok": "maybe"})
    assert data == {"amount": 12}
    assert errors == {"ok": "Ok: choose yes or no"}
    _, errors = read_form(form, {"f_amount": "nan"})
    assert errors == {"amount": "Amount must be a finite number"}
    # What people type, and nothing float() also took (a probe: each was recorded as typed).
    data, _ = read_form(form, {"f_amount": "1,234.5"})
    assert data == {"amount": 1234.5}
    data, _ = read_form(form, {"f_amount": "-2.5e3"})
    assert data == {"amount": -2500.0}
    for typed, number in (("\u0661\u0662", 12), ("\uff11\uff12\uff13", 123), ("1,234,567", 1234567)):
        data, _ = read_form(form, {"f_amount": typed})
        assert data == {"amount": number}, typed  # digits of any script read as what they say
    for typed, problem in (
        ("1e-999", "'1e-999' is too close to zero to keep"),
        ("1_000", "'1_000' is not a number"),
        ("0x10", "'0x10' is not a number"),
        # A decimal comma was dropped: "1,5" became 15 (a review).
        ("1,5", "'1,5' is not a number (a comma goes only between groups of three digits)"),
        ("2,50", "'2,50' is not a number (a comma goes only between groups of three digits)"),
    ):
        _, errors = read_form(form, {"f_amount": typed})
        assert errors == {"amount": f"Amount: {problem}"}, typed
    data, _ = read_form(form, {"f_amount": "0.000"})
    assert data == {"amount": 0.0}
    # 4,000 digits passed, and the run failed when a template read the number (a probe).
    data, errors = read_form(form, {"f_amount": "9" * 4000})
    assert (data, errors) == ({}, {"amount": "Amount: at most 100 digits"})
    data, _ = read_form(form, {"f_amount": "-" + "9" * 100})
    assert data == {"amount": -int("9" * 100)}
    message = "form field 'amount' of step 'gate' must be a number, got a string"
    assert field_of_message(message, form) == "amount"
    assert field_of_message("form field 'other' of step 'gate' is required", form) is None
    assert readable_refusal(message) == "must be a number, got a string"


async def test_the_inbox_configuration_from_the_environment(tmp_path: Path) -> None:
    async def clients(tenant: str) -> Any:
        raise AssertionError(tenant)

    assert inbox_config_from_env(clients, {}) is None  # not configured: no inbox
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps({"users": [{"tenant": "t", "username": "u", "password": hash_password("p")}]})
    )
    with pytest.raises(InboxConfigError, match="WFA_INBOX_SESSION_SECRET"):
        inbox_config_from_env(clients, {"WFA_INBOX_USERS": str(users), "WFA_INBOX_SESSION_SECRET": "short"})
    private, _ = generate_keys("k")
    key = tmp_path / "signing.jwk"
    key.write_text(json.dumps(private))
    config = inbox_config_from_env(
        clients,
        {
            "WFA_INBOX_USERS": str(users),
            "WFA_INBOX_SESSION_SECRET": "x" * 32,
            "WFA_DECISION_SIGNING_KEY": str(key),
            "WFA_INBOX_INSECURE_COOKIES": "1",
        },
    )
    assert config is not None
    assert config.signing_key("any-tenant") == private
    assert not config.secure_cookies
    assert await config.authenticator.authenticate("t", "u", "p") is not None
    users.write_text("{}")
    with pytest.raises(InboxConfigError, match="WFA_INBOX_USERS"):
        inbox_config_from_env(clients, {"WFA_INBOX_USERS": str(users), "WFA_INBOX_SESSION_SECRET": "x" * 32})


async def test_installed_from_the_gateways_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi import FastAPI
    from starlette.routing import NoMatchFound

    from gateway.inbox import install_inbox

    bare = FastAPI()
    monkeypatch.delenv("WFA_INBOX_USERS", raising=False)
    install_inbox(bare, object())  # the gateway's own configuration, no inbox configured
    with pytest.raises(NoMatchFound):
        bare.url_path_for("inbox_login")

    users = tmp_path / "users.json"
    users.write_text(
        json.dumps({"users": [{"tenant": "t", "username": "u", "password": hash_password("p")}]})
    )
    monkeypatch.setenv("WFA_INBOX_USERS", str(users))
    monkeypatch.setenv("WFA_INBOX_SESSION_SECRET", "y" * 32)
    asked: list[str] = []

    class _Gateway:
        class config:
            tenants = ("t",)

        async def client(self, tenant: str) -> str:
            asked.append(tenant)
            return "the tenant's client"

    app = FastAPI()
    app.state.gateway = _Gateway()
    install_inbox(app, object())
    assert app.url_path_for("inbox_login") == "/inbox/login"
    assert await app.state.inbox.config.clients("t") == "the tenant's client"
    assert asked == ["t"]
    # Sign-outs are remembered in the gateway's database, for every process (tests/inbox/test_ended_sessions.py).
    from gateway.inbox.ended import StoredEndedSessions

    assert isinstance(app.state.inbox.config.ended_sessions, StoredEndedSessions)
    assert app.state.inbox.config.tenants == {"t"}  # people of other tenants are not signed in

    # ``/inbox`` leads to the list by path: Starlette's slash redirect wrote the Host header into
    # the Location (a probe: a forged Host sent the browser elsewhere).
    from tests.inbox.conftest import serve

    async with serve(app) as base, httpx.AsyncClient() as http:
        for method in ("GET", "HEAD"):
            answer = await http.request(method, f"{base}/inbox", headers={"Host": "evil.example"})
            assert (answer.status_code, answer.headers["location"]) == (307, "/inbox/"), method
