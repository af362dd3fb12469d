"""Where secrets come from, whose they are, where they may go, and how they are scrubbed.

A secret belongs to one tenant and may name the hosts it may be sent to. A run resolves only its
own tenant's secrets (the tenant comes from the run, never from the definition or its data).

Sources, consulted in this order (the first that knows the tenant's name wins):

1. ``WFA_SECRETS_FILE``: a JSON file ``{"<tenant>": {"<NAME>": "value" | {"value": "...",
   "hosts": ["api.example.com", "*.example.net"]}}}``; mounted by the platform (a Kubernetes secret,
   a Docker secret, a file a secrets manager's agent renders).
2. The environment: ``WFA_SECRET_<NAME>`` belongs to the tenant ``default`` only (tenant names are
   not environment-variable names), with no host restriction.

A secrets manager plugs in as any object with ``get(tenant, name) -> Secret | None`` passed to
:func:`configure_secret_store` by the worker (see ``worker.py``).

Redaction: the value is scrubbed from outputs and errors in the forms a server may echo it back in:
as is, URL-encoded (``quote``/``quote_plus``), JSON-escaped, HTML-escaped, and base64 (standard and
URL-safe, at every alignment inside a longer base64 text, so a Basic ``user:secret`` header echoed
back is caught too).
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

__all__ = [
    "SECRETS_FILE_ENV",
    "SECRET_ENV_PREFIX",
    "ChainSecretStore",
    "EnvSecretStore",
    "FileSecretStore",
    "Secret",
    "SecretStore",
    "SecretsConfigError",
    "TenantScope",
    "configure_secret_store",
    "configure_tenant_scope",
    "encoded_forms",
    "secret_store",
    "store_from_env",
    "tenant_scope",
]

SECRET_ENV_PREFIX = "WFA_SECRET_"
"""Environment variable prefix: ``${secret:TOKEN}`` of tenant ``default`` is ``$WFA_SECRET_TOKEN``."""

SECRETS_FILE_ENV = "WFA_SECRETS_FILE"
"""Path of the per-tenant secrets file."""

ENV_TENANT = "default"
"""The tenant whose secrets may come from the environment."""

_MIN_BASE64_CORE = 6
"""Shortest base64 middle part that is scrubbed inside longer base64 text (shorter ones would match
innocent text by chance)."""


class SecretsConfigError(ValueError):
    """The secrets configuration cannot be read (names the file and the problem, never a value)."""


@dataclass(frozen=True)
class Secret:
    """One tenant's secret.

    Attributes:
        value: The secret itself.
        hosts: Host names (``fnmatch`` patterns such as ``*.example.com``) it may be sent to; empty
            means any host the outbound policy allows.
    """

    value: str
    hosts: tuple[str, ...] = ()

    def allows_host(self, host: str) -> bool:
        """Whether the secret may be sent to ``host``."""
        if not self.hosts:
            return True
        name = host.lower().rstrip(".")
        return any(fnmatch(name, pattern.lower()) for pattern in self.hosts)

    def __repr__(self) -> str:  # never print a value by accident
        return f"Secret(value=<{len(self.value)} chars>, hosts={self.hosts!r})"


class SecretStore(Protocol):
    """Anything that finds a tenant's secret by name."""

    def get(self, tenant: str, name: str) -> Secret | None:
        """The secret, or None when this tenant has no secret of that name."""
        ...


@dataclass(frozen=True)
class EnvSecretStore:
    """``WFA_SECRET_<NAME>`` from the environment, for the tenant ``default`` only."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def get(self, tenant: str, name: str) -> Secret | None:
        if tenant != ENV_TENANT:
            return None
        value = self.environ.get(SECRET_ENV_PREFIX + name)
        return None if value is None else Secret(value)


def _parse_secret(tenant: str, name: str, raw: Any, where: str) -> Secret:
    if isinstance(raw, str):
        return Secret(raw)
    if isinstance(raw, dict) and isinstance(raw.get("value"), str):
        hosts = raw.get("hosts", [])
        unknown = sorted(set(raw) - {"value", "hosts"})
        if unknown:
            raise SecretsConfigError(f"{where}: secret {tenant}/{name} has unknown keys {unknown}")
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise SecretsConfigError(f"{where}: secret {tenant}/{name}: 'hosts' must be a list of host names")
        return Secret(raw["value"], tuple(hosts))
    raise SecretsConfigError(f"{where}: secret {tenant}/{name} must be a string or {{'value', 'hosts'}}")


@dataclass(frozen=True)
class FileSecretStore:
    """Per-tenant secrets from a JSON file (see the module docstring), read once."""

    secrets: Mapping[str, Mapping[str, Secret]]

    @classmethod
    def load(cls, path: str | Path) -> FileSecretStore:
        """Reads the file.

        Raises:
            SecretsConfigError: Unreadable, not JSON, or not of the documented shape.
        """
        where = str(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SecretsConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise SecretsConfigError(f"{where}: not JSON ({type(exc).__name__} at {exc})") from None
        if not isinstance(data, dict):
            raise SecretsConfigError(f"{where}: must be an object of tenants")
        tenants: dict[str, dict[str, Secret]] = {}
        for tenant, names in data.items():
            if not isinstance(names, dict):
                raise SecretsConfigError(f"{where}: tenant {tenant!r} must map names to secrets")
            tenants[tenant] = {name: _parse_secret(tenant, name, raw, where) for name, raw in names.items()}
        return cls(tenants)

    def get(self, tenant: str, name: str) -> Secret | None:
        return self.secrets.get(tenant, {}).get(name)


@dataclass(frozen=True)
class ChainSecretStore:
    """Asks each store in turn."""

    stores: tuple[SecretStore, ...]

    def get(self, tenant: str, name: str) -> Secret | None:
        for store in self.stores:
            found = store.get(tenant, name)
            if found is not None:
                return found
        return None


def store_from_env(environ: Mapping[str, str] | None = None) -> SecretStore:
    """The worker's default store: ``WFA_SECRETS_FILE`` if set, then ``WFA_SECRET_<NAME>``.

    Raises:
        SecretsConfigError: When the file is set but unusable.
    """
    env = os.environ if environ is None else environ
    stores: list[SecretStore] = []
    if env.get(SECRETS_FILE_ENV):
        stores.append(FileSecretStore.load(env[SECRETS_FILE_ENV]))
    stores.append(EnvSecretStore(env))
    return ChainSecretStore(tuple(stores))


def _base64_cores(raw: bytes) -> list[str]:
    """The parts of ``raw``'s base64 that are the same wherever ``raw`` stands in a longer text."""
    cores: list[str] = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            text = encode(b"\0" * offset + raw + b"\0\0").decode("ascii")
            start = -(-offset * 4 // 3)  # characters touched by the prefix bytes
            end = ((offset + len(raw)) * 8) // 6  # characters made of the secret's bits only
            core = text[start:end]
            if len(core) >= _MIN_BASE64_CORE:
                cores.append(core)
        whole = encode(raw).decode("ascii")
        cores.extend((whole, whole.rstrip("=")))
    return cores


def _printable_except(excluded: str) -> str:
    return "".join(chr(i) for i in range(0x20, 0x7F) if chr(i) not in excluded)


_URL_SAFE_SETS = (
    _printable_except(' "#<>'),  # a query (the WHATWG URL standard's query set, as httpx quotes)
    _printable_except(' "#<>?`{}'),  # a path
    _printable_except(' "#<>?`{}/:;=@[\\]^|'),  # userinfo
    _printable_except(' "<>`'),  # a fragment
)
"""The characters HTTP clients leave as they are in each part of a URL they percent-encode (httpx
follows the WHATWG URL standard): a secret written into a URL's path or query goes out in that
form, and a server echoing the URL (a 404 page) echoes it so (found by an attacker's probe)."""


def encoded_forms(value: str) -> list[str]:
    """Every form of ``value`` redaction scrubs, longest first, without duplicates or empties."""
    if not value:
        return []
    forms = [
        value,
        value.lower(),  # a host name holding it (clients and resolvers lower-case hosts)
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        # As a URL's parts carry it (an existing %XX escape kept or not).
        *(quote(value, safe=safe + extra) for safe in _URL_SAFE_SETS for extra in ("", "%")),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
        *_base64_cores(value.encode("utf-8")),
    ]
    unique = {form for form in forms if form}
    return sorted(unique, key=lambda form: (-len(form), form))


_configured: SecretStore | None = None


def configure_secret_store(store: SecretStore | None) -> None:
    """Sets the store every action resolves secrets from (None: back to :func:`store_from_env`)."""
    global _configured
    _configured = store


def secret_store() -> SecretStore:
    """The configured store, or the environment's (read at each call, so tests may set variables)."""
    return _configured if _configured is not None else store_from_env()


class TenantScope(Protocol):
    """Which tenants' actions a worker runs, in which namespace (``starter.tenancy.WorkerScope``).

    A run's tenant is a claim of whoever started it; the namespace an activity runs in is not (the
    server's authorization decides who may start runs there). A worker therefore resolves a
    tenant's secrets only for runs in that tenant's namespace, and only for tenants it serves.
    """

    def refusal(self, tenant: str, namespace: str) -> str | None:
        """Why an action of a ``tenant`` run in ``namespace`` may not run here (None: it may)."""
        ...


_scope: TenantScope | None = None


def configure_tenant_scope(scope: TenantScope | None) -> None:
    """Sets the worker's tenant scope (None: every tenant in every namespace, as before tenancy)."""
    global _scope
    _scope = scope


def tenant_scope() -> TenantScope | None:
    """The configured scope (None: no restriction)."""
    return _scope
