"""Who is signed in: authenticators, the local users file, signed session cookies and CSRF tokens.

Production signs people in with an OpenID Connect provider (:mod:`gateway.inbox.oidc`: the gateway
is a confidential client, the provider's claims give the user name, groups and tenant);
:class:`LocalUsers` is the authenticator of the demo and the tests, a JSON file of users with
scrypt password hashes, and is not meant for production.

A session is a cookie holding the person (tenant, user name, groups), an expiry and a CSRF secret,
signed with HMAC-SHA256 under the gateway's session secret. Every form carries the session's CSRF
token and every POST checks it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
"""User and group names: safe inside search attribute values and visibility queries."""
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class UsersFileError(ValueError):
    """A users file that cannot be used; the message names the entry and the problem."""


@dataclass(frozen=True)
class Person:
    """A signed-in person.

    Attributes:
        tenant: The tenant whose work the person sees (and only it).
        username: The actor name decisions carry (what definitions list as approvers).
        display_name: What the pages call the person.
        groups: Groups the person belongs to (a step may name ``group:<name>``).
    """

    tenant: str
    username: str
    display_name: str = ""
    groups: tuple[str, ...] = ()

    @property
    def assignee_values(self) -> list[str]:
        """The ``WfaAssignees`` values that mean this person."""
        return [f"user:{self.username}", *(f"group:{g}" for g in self.groups)]


class Authenticator(Protocol):
    """Checks a sign-in. The local users file is one; an OpenID Connect client is another."""

    async def authenticate(self, tenant: str, username: str, password: str) -> Person | None:
        """The person, or None when the credentials do not match (the caller says no more)."""
        ...


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """An scrypt hash for the users file: ``scrypt$N$r$p$salt$hash`` (base64)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class _User:
    person: Person
    password_hash: str


@dataclass
class LocalUsers:
    """The local authenticator (demo and tests only): users from a JSON file.

    The file: ``{"users": [{"tenant": "acme", "username": "alice", "name": "Alice",
    "password": "scrypt$...", "groups": ["finance"]}]}``; make a hash with
    ``python -m gateway.inbox.users hash`` (reads the password from standard input).
    """

    users: dict[tuple[str, str], _User] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path) -> LocalUsers:
        """Reads a users file.

        Raises:
            UsersFileError: Unreadable, or an entry is malformed (named by its index).
        """
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UsersFileError(f"cannot read the users file {path}: {err}") from None
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: Any) -> LocalUsers:
        """Reads a users document (the file's JSON).

        Raises:
            UsersFileError: An entry is malformed (named by its index).
        """
        if not isinstance(document, dict) or not isinstance(document.get("users"), list):
            raise UsersFileError('a users file is a JSON object {"users": [...]}')
        users: dict[tuple[str, str], _User] = {}
        for index, entry in enumerate(document["users"]):
            where = f"users[{index}]"
            if not isinstance(entry, dict):
                raise UsersFileError(f"{where} is not an object")
            tenant, username, password = entry.get("tenant"), entry.get("username"), entry.get("password")
            groups = entry.get("groups", [])
            for name, value in (("tenant", tenant), ("username", username)):
                if not isinstance(value, str) or not USERNAME_PATTERN.match(value):
                    raise UsersFileError(f"{where}.{name} must be a name of letters, digits and _.@-")
            if not isinstance(password, str) or not password.startswith("scrypt$"):
                raise UsersFileError(
                    f"{where}.password must be an scrypt hash (python -m gateway.inbox.users hash)"
                )
            if not isinstance(groups, list) or not all(
                isinstance(g, str) and USERNAME_PATTERN.match(g) for g in groups
            ):
                raise UsersFileError(f"{where}.groups must be a list of names")
            assert isinstance(tenant, str)
            assert isinstance(username, str)
            if (tenant, username) in users:
                raise UsersFileError(f"{where}: user {username!r} of tenant {tenant!r} is listed twice")
            display = entry.get("name", username)
            users[tenant, username] = _User(Person(tenant, username, str(display), tuple(groups)), password)
        return cls(users)

    async def authenticate(self, tenant: str, username: str, password: str) -> Person | None:
        """The person whose password this is, or None (same work whether the user exists or not)."""
        user = self.users.get((tenant, username))
        stored = user.password_hash if user is not None else _DUMMY_HASH
        ok = verify_password(password, stored)
        return user.person if ok and user is not None else None


_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)


# ---------------------------------------------------------------------------------------- sessions


MAX_ENDED_SESSIONS = 100_000
"""As many signed-out sessions as a gateway process remembers at once (about 10 MB)."""


@dataclass(frozen=True)
class Session:
    """What the session cookie holds: the person (None before sign-in), its expiry, a CSRF secret,
    and the OpenID Connect provider that signed the person in ("" for the local sign-in), whose
    session signing out ends too."""

    person: Person | None
    expires: float
    csrf: str
    provider: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _plain(value: str) -> bool:
    """Whether a cookie value may be one this signer made: ASCII (``hmac.compare_digest`` raises on
    other text, so a cookie holding any answered 500: found by an attacker's probe), short, signed."""
    return 0 < len(value) <= 4096 and value.isascii() and "." in value


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and reads session cookies (HMAC-SHA256; the secret never leaves the gateway)."""

    def __init__(self, secret: bytes, ttl_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self._ended: dict[str, float] = {}
        """CSRF secrets of sessions signed out, until their cookies would have expired."""

    def end(self, session: Session, now: float | None = None) -> None:
        """Signs ``session`` out: its cookie no longer loads in this process, even replayed (a
        signed cookie stayed valid until it expired: found by a probe). Kept in memory, so a
        gateway restart, or another gateway process, does not know it; the cookie's lifetime
        (:attr:`InboxConfig.session_ttl_s`, 8 hours) bounds that."""
        at = time.time() if now is None else now
        for csrf in [csrf for csrf, expires in self._ended.items() if expires <= at]:
            del self._ended[csrf]
        if len(self._ended) < MAX_ENDED_SESSIONS:
            self._ended[session.csrf] = session.expires

    def new(self, person: Person | None, now: float | None = None, provider: str = "") -> Session:
        """A fresh session (new CSRF secret) for ``person``, signed in by ``provider`` if any."""
        expires = (time.time() if now is None else now) + self.ttl_s
        return Session(person, expires, secrets.token_urlsafe(24), provider)

    def dump(self, session: Session) -> str:
        """The cookie value."""
        person = session.person
        body = {
            "p": None
            if person is None
            else [person.tenant, person.username, person.display_name, list(person.groups)],
            "e": int(session.expires),
            "c": session.csrf,
        }
        if session.provider:
            body["o"] = session.provider
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def load(self, value: str | None, now: float | None = None) -> Session | None:
        """The session in a cookie value, or None when absent, forged or expired."""
        if value is None or not _plain(value):
            return None
        payload, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            expires, csrf, raw = float(body["e"]), str(body["c"]), body["p"]
            person = None if raw is None else Person(str(raw[0]), str(raw[1]), str(raw[2]), tuple(raw[3]))
            provider = str(body.get("o", ""))
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        if expires <= (time.time() if now is None else now) or csrf in self._ended:
            return None
        return Session(person, expires, csrf, provider)

    def _mac(self, payload: str, purpose: str = "session") -> str:
        return _b64(
            hmac.new(self._secret, f"{purpose}:".encode() + payload.encode(), hashlib.sha256).digest()
        )

    def seal(self, purpose: str, body: dict[str, Any]) -> str:
        """A signed cookie value holding ``body`` for ``purpose`` (e.g. a sign-in under way)."""
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload, purpose)}"

    def unseal(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The body of a :meth:`seal` value for ``purpose``, or None when absent or forged."""
        if value is None or not _plain(value):
            return None
        payload, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(payload, purpose)):
            return None
        try:
            body = json.loads(_unb64(payload))
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def csrf_token(self, session: Session) -> str:
        """The token forms carry: derived from the session's CSRF secret."""
        return _b64(hmac.new(self._secret, b"csrf:" + session.csrf.encode(), hashlib.sha256).digest())

    def check_csrf(self, session: Session | None, token: str | None) -> bool:
        """Whether a form's token belongs to this session."""
        return (
            session is not None
            and token is not None
            and token.isascii()  # (compare_digest raises on other text: a crafted form answered 500)
            and hmac.compare_digest(token, self.csrf_token(session))
        )
