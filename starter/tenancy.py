"""Where each tenant's runs live: the tenant -> Temporal namespace mapping, in one place.

The client, the ``wfa`` CLI and the worker all read it from the environment:

- ``WFA_TENANT_NAMESPACES="acme=acme,globex=globex-prod"``: explicit namespaces of some tenants.
- ``WFA_NAMESPACE_PER_TENANT=1``: every other tenant's namespace is named after the tenant (the
  tenant ``default`` stays in ``TEMPORAL_NAMESPACE``).
- Neither: every tenant is in ``TEMPORAL_NAMESPACE`` (default ``default``): the single-namespace
  deployment, where only the ``Tenant`` search attribute and the project's client tell tenants
  apart (see the README's trust model for what that does not isolate).

A namespace is where Temporal's own authorization can separate tenants: a namespace-scoped API key
(Temporal Cloud) or an mTLS identity mapped to namespace roles (self-hosted) lets a tenant's service
act in its namespace and nowhere else. The mapping itself grants nothing: it only says which
namespace (and which of Temporal's environment configuration profiles, see
:func:`connect_config`) a client of that tenant uses.

The worker serves the namespaces of the tenants it is configured for (``WFA_WORKER_TENANTS``, see
:class:`WorkerScope`) and refuses any action of a run whose tenant does not belong to the namespace
the run lives in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interpreter.sizes import text_problem
from starter.config import DEFAULT_NAMESPACE, DEFAULT_TENANT, NAMESPACE_ENV

__all__ = [
    "NAMESPACE_PER_TENANT_ENV",
    "TENANT_NAMESPACES_ENV",
    "TENANT_OUTBOUND_ALLOW_ENV",
    "WORKER_TENANTS_ENV",
    "Tenancy",
    "TenancyConfigError",
    "WorkerScope",
    "connect_config",
    "namespace_connect_config",
    "temporal_variables",
]

TENANT_NAMESPACES_ENV = "WFA_TENANT_NAMESPACES"
"""``tenant=namespace`` pairs, comma-separated."""

NAMESPACE_PER_TENANT_ENV = "WFA_NAMESPACE_PER_TENANT"
"""``1``/``true``/``yes``: a tenant without an explicit namespace has the namespace of its name."""

WORKER_TENANTS_ENV = "WFA_WORKER_TENANTS"
"""The tenants a worker serves (comma-separated): it polls their namespaces, resolves only their
secrets."""

TENANT_OUTBOUND_ALLOW_ENV = "WFA_TENANT_OUTBOUND_ALLOW"
"""Per-tenant outbound allowances: ``acme=10.1.0.0/16,crm.acme.internal;globex=10.2.0.0/16``."""

PROFILE_FILE_ENV = "TEMPORAL_CONFIG_FILE"
"""Temporal's environment configuration file (TOML, profiles of address, namespace, API key, TLS)."""

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")  # as activities.store.repository
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class TenancyConfigError(ValueError):
    """The tenant/namespace configuration is unusable (names the variable and the item)."""


def _tenant(name: str, where: str) -> str:
    if not _TENANT.match(name):
        raise TenancyConfigError(
            f"{where}: {name[:120]!r} is not a tenant name (1-100 of A-Z a-z 0-9 _ . : -)"
        )
    return name


def _namespace(name: str, where: str) -> str:
    if not _NAMESPACE.match(name):
        raise TenancyConfigError(
            f"{where}: {name[:120]!r} is not a namespace name (A-Z a-z 0-9 _ . -, at most 255)"
        )
    return name


@dataclass(frozen=True)
class Tenancy:
    """The tenant -> namespace mapping.

    Attributes:
        default_namespace: Where tenants without a namespace of their own live.
        namespaces: Explicit namespaces of tenants.
        per_tenant: A tenant without an explicit namespace (but ``default``) lives in the namespace
            named after it.
    """

    default_namespace: str = DEFAULT_NAMESPACE
    namespaces: Mapping[str, str] = field(default_factory=dict)
    per_tenant: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, default_namespace: str | None = None
    ) -> Tenancy:
        """The mapping from the environment (see the module docstring).

        Args:
            env: Default ``os.environ``.
            default_namespace: Overrides ``TEMPORAL_NAMESPACE`` (an explicit ``--namespace``).

        Raises:
            TenancyConfigError: A malformed pair, tenant or namespace name, or flag value.
        """
        source = os.environ if env is None else env
        default = default_namespace or source.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
        _namespace(default, NAMESPACE_ENV)
        pairs: dict[str, str] = {}
        for raw in source.get(TENANT_NAMESPACES_ENV, "").split(","):
            item = raw.strip()
            if not item:
                continue
            tenant, sep, namespace = item.partition("=")
            if not sep:
                raise TenancyConfigError(f"{TENANT_NAMESPACES_ENV}: {item[:120]!r} is not tenant=namespace")
            tenant = _tenant(tenant.strip(), TENANT_NAMESPACES_ENV)
            if tenant in pairs:
                raise TenancyConfigError(f"{TENANT_NAMESPACES_ENV}: tenant {tenant!r} is mapped twice")
            pairs[tenant] = _namespace(namespace.strip(), TENANT_NAMESPACES_ENV)
        flag = source.get(NAMESPACE_PER_TENANT_ENV, "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise TenancyConfigError(f"{NAMESPACE_PER_TENANT_ENV}: {flag[:40]!r} is neither 1 nor 0")
        return cls(default_namespace=default, namespaces=pairs, per_tenant=flag in _TRUE)

    @property
    def isolated(self) -> bool:
        """Whether some tenant has a namespace of its own (else: the single-namespace deployment)."""
        return self.per_tenant or any(ns != self.default_namespace for ns in self.namespaces.values())

    def namespace_of(self, tenant: str) -> str:
        """The namespace where ``tenant``'s runs live."""
        explicit = self.namespaces.get(tenant)
        if explicit is not None:
            return explicit
        if self.per_tenant and tenant != DEFAULT_TENANT:
            return _namespace(tenant, f"{NAMESPACE_PER_TENANT_ENV} (tenant {tenant!r})")
        return self.default_namespace

    def belongs(self, tenant: str, namespace: str) -> bool:
        """Whether a run of ``tenant`` may live in ``namespace``."""
        return self.namespace_of(tenant) == namespace


@dataclass(frozen=True)
class WorkerScope:
    """What one worker process serves: namespaces, and the tenants whose secrets it holds.

    The worker polls :attr:`namespaces` and refuses (:meth:`refusal`) an action of a run whose
    tenant is not one of its tenants, or does not belong to the namespace the action runs in.

    Attributes:
        tenancy: The mapping.
        tenants: The configured tenants; None: every tenant of :attr:`namespaces` (the worker was
            not told which tenants it serves: the single-namespace deployment's default).
        namespaces: The namespaces polled, in a stable order.
    """

    tenancy: Tenancy
    tenants: frozenset[str] | None
    namespaces: tuple[str, ...]

    @classmethod
    def build(cls, tenancy: Tenancy, tenants: Iterable[str] | None) -> WorkerScope:
        """The namespaces of ``tenants`` (None: the default namespace alone)."""
        if tenants is None:
            return cls(tenancy, None, (tenancy.default_namespace,))
        chosen = frozenset(tenants)
        if not chosen:
            raise TenancyConfigError(f"{WORKER_TENANTS_ENV}: no tenant named")
        namespaces = sorted({tenancy.namespace_of(tenant) for tenant in chosen})
        return cls(tenancy, chosen, tuple(namespaces))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerScope:
        """``WFA_WORKER_TENANTS`` over :meth:`Tenancy.from_env`.

        Raises:
            TenancyConfigError: A malformed variable.
        """
        source = os.environ if env is None else env
        tenancy = Tenancy.from_env(source)
        raw = source.get(WORKER_TENANTS_ENV, "").strip()
        if not raw:
            return cls.build(tenancy, None)
        return cls.build(
            tenancy, [_tenant(t.strip(), WORKER_TENANTS_ENV) for t in raw.split(",") if t.strip()]
        )

    def tenants_of(self, namespace: str) -> list[str] | None:
        """The configured tenants living in ``namespace`` (None: any tenant of it)."""
        if self.tenants is None:
            return None
        return sorted(t for t in self.tenants if self.tenancy.belongs(t, namespace))

    def allowances(self, env: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """Per namespace served, the extra outbound allowances of its tenants (``WFA_TENANT_OUTBOUND_ALLOW``).

        The worker gives each namespace its own HTTP client, so a tenant's allowances are
        reachable only from runs in its namespace; a tenant that shares its namespace with other
        tenants this worker may serve cannot have allowances of its own.

        Raises:
            TenancyConfigError: Malformed, a tenant this worker does not serve, or one sharing its
                namespace.
        """
        source = os.environ if env is None else env
        extra: dict[str, list[str]] = {namespace: [] for namespace in self.namespaces}
        for raw in source.get(TENANT_OUTBOUND_ALLOW_ENV, "").split(";"):
            item = raw.strip()
            if not item:
                continue
            tenant, sep, allowed = item.partition("=")
            if not sep:
                raise TenancyConfigError(
                    f"{TENANT_OUTBOUND_ALLOW_ENV}: {item[:120]!r} is not tenant=allowances"
                )
            tenant = _tenant(tenant.strip(), TENANT_OUTBOUND_ALLOW_ENV)
            namespace = self.tenancy.namespace_of(tenant)
            if self.tenants is None or tenant not in self.tenants:
                raise TenancyConfigError(
                    f"{TENANT_OUTBOUND_ALLOW_ENV}: tenant {tenant!r} is not one of this worker's tenants"
                    f" ({WORKER_TENANTS_ENV})"
                )
            sharing = [t for t in self.tenants_of(namespace) or [] if t != tenant]
            if sharing:
                raise TenancyConfigError(
                    f"{TENANT_OUTBOUND_ALLOW_ENV}: tenant {tenant!r} shares namespace {namespace!r} with"
                    f" {', '.join(sharing)}, who would reach its allowances too: give it a namespace of"
                    f" its own ({TENANT_NAMESPACES_ENV})"
                )
            extra[namespace].extend(a.strip() for a in allowed.split(",") if a.strip())
        return extra

    def refusal(self, tenant: str, namespace: str) -> str | None:
        """Why an action of a ``tenant`` run in ``namespace`` may not run here (None: it may)."""
        if namespace not in self.namespaces:
            return f"this worker does not serve namespace {namespace!r}"
        home = self.tenancy.namespace_of(tenant)
        if home != namespace:
            return (
                f"tenant {tenant!r} does not belong to namespace {namespace!r} (its runs live in"
                f" namespace {home!r}): a run may not claim another tenant"
            )
        if self.tenants is not None and tenant not in self.tenants:
            return (
                f"tenant {tenant!r} is not served by this worker ({WORKER_TENANTS_ENV}:"
                f" {', '.join(sorted(self.tenants))}): it holds no secrets of that tenant"
            )
        return None


def connect_config(
    tenant: str,
    tenancy: Tenancy,
    env: Mapping[str, str] | None = None,
    *,
    explicit_profile: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``Client.connect`` for ``tenant``: its credentials and its namespace.

    Connection settings (address, API key, TLS client certificate, gRPC metadata) come from
    Temporal's environment configuration (``temporalio.envconfig``): the profile named after the
    tenant in ``TEMPORAL_CONFIG_FILE`` (or the default location,
    ``~/.config/temporalio/temporal.toml``) when there is one, else the profile of
    ``TEMPORAL_PROFILE`` (default ``default``); ``TEMPORAL_ADDRESS``, ``TEMPORAL_API_KEY`` and
    ``TEMPORAL_TLS_*`` override it as usual. The namespace is the mapping's, always: a tenant's
    profile that names another namespace is a configuration error (its credentials are scoped to a
    namespace where the tenant's runs do not live).

    An ``explicit_profile`` (``--profile``) is used instead of the tenant's and
    ``TEMPORAL_PROFILE``; with namespaces per tenant it must not name another namespace either.

    Returns:
        ``target_host`` (when configured), ``namespace``, and any ``api_key``, ``tls``,
        ``rpc_metadata``.

    Raises:
        TenancyConfigError: An unreadable configuration file, or a profile naming another namespace.
    """
    return namespace_connect_config(
        tenancy.namespace_of(tenant),
        tenant,
        env,
        explicit_profile=explicit_profile,
        strict=tenancy.isolated,
    )


_TLS_OFF_WORDS = frozenset({"", "no", "n", "off", "f", "none", "null", "disable", "disabled"})


def tls_setting_problem(env: Mapping[str, str]) -> str | None:
    """Why ``TEMPORAL_TLS`` does not say what it seems to, or None.

    The SDK reads only ``true``/``false``/``1``/``0`` and turns TLS on for any other value, so
    ``no``, ``off``, an empty value or ``" false"`` asked for plain connections and got TLS (found
    by a probe; the connection then fails with a handshake error that names nothing). Other
    values (``yes``, ``on``) mean TLS and get it, as they always did.
    """
    tls = env.get("TEMPORAL_TLS")
    if tls is None or tls.lower() in {"true", "1", "false", "0"}:
        return None
    if tls.strip().lower() in _TLS_OFF_WORDS | {"false", "0"}:
        return (
            f"TEMPORAL_TLS={tls[:40]!r} turns TLS on (the SDK reads only true, false, 1 and 0):"
            " write false for a plain connection"
        )
    return None


def temporal_variables(source: Mapping[str, str]) -> dict[str, str]:
    """The ``TEMPORAL_*`` variables of ``source``: all Temporal's configuration loader reads of an
    environment (it finds its default file from the system's). Handed the whole environment, any
    variable whose bytes are not UTF-8 (Python keeps them as lone surrogates), ``DATABASE_URL`` or
    one of nothing of ours, failed every command, blamed on the profile (found by a probe).

    Raises:
        TenancyConfigError: A ``TEMPORAL_*`` variable holding a NUL or a lone surrogate (named).
    """
    chosen = {name: value for name, value in source.items() if name.startswith("TEMPORAL_")}
    for name, value in chosen.items():
        problem = text_problem(name + value)
        if problem is not None:
            raise TenancyConfigError(f"{ascii(name)[1:-1]} has {problem}; fix or unset it")
    return chosen


def namespace_connect_config(
    namespace: str,
    profile: str,
    env: Mapping[str, str] | None = None,
    *,
    explicit_profile: str | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """``Client.connect`` arguments for ``namespace`` with the profile ``profile`` if configured.

    The worker connects to each namespace it serves with the profile named after the namespace
    (on Temporal Cloud with mTLS each namespace has its own endpoint and certificate authority);
    see :func:`connect_config` for the rest. ``explicit_profile`` replaces both; it must name
    ``namespace`` (or none) when ``strict``.

    Raises:
        TenancyConfigError: An unreadable configuration file, or the profile names another namespace.
    """
    from temporalio.envconfig import ClientConfig, ClientConfigProfile

    source = dict(os.environ if env is None else env)
    problem = tls_setting_problem(source)
    if problem is not None:
        raise TenancyConfigError(problem)
    config_file = source.get(PROFILE_FILE_ENV) or None
    if config_file and not Path(config_file).is_file():
        raise TenancyConfigError(f"{PROFILE_FILE_ENV}: no such file {config_file[:200]!r}")
    config_source = Path(config_file) if config_file else None
    source = temporal_variables(source)
    try:
        profiles = ClientConfig.load(config_source=config_source, override_env_vars=source).profiles
    except (RuntimeError, ValueError, OSError) as err:
        raise TenancyConfigError(f"Temporal configuration {config_file or '(default file)'}: {err}") from None
    if explicit_profile:
        if explicit_profile not in profiles:
            raise TenancyConfigError(
                f"Temporal configuration {config_file or '(default file)'}: no profile {explicit_profile[:100]!r}"
            )
        chosen: str | None = explicit_profile
    else:
        chosen = profile if profile in profiles else source.get("TEMPORAL_PROFILE") or None
    # TEMPORAL_NAMESPACE is the mapping's default namespace, not an override of the namespace.
    source.pop(NAMESPACE_ENV, None)
    try:
        loaded = ClientConfigProfile.load(
            profile=chosen, config_source=config_source, override_env_vars=source
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise TenancyConfigError(f"Temporal configuration profile {chosen or 'default'!r}: {err}") from None
    checked = chosen == profile or (explicit_profile is not None and strict)
    if checked and loaded.namespace and loaded.namespace != namespace:
        raise TenancyConfigError(
            f"Temporal configuration profile {chosen!r} names namespace {loaded.namespace!r}, but"
            f" it is used for namespace {namespace!r} ({TENANT_NAMESPACES_ENV},"
            f" {NAMESPACE_PER_TENANT_ENV}, {NAMESPACE_ENV})"
        )
    try:
        connect: dict[str, Any] = dict(loaded.to_client_connect_config())
    except OSError as err:  # a certificate or key file named by the profile or TEMPORAL_TLS_*
        raise TenancyConfigError(
            f"Temporal configuration profile {chosen or 'default'!r}: cannot read"
            f" {str(err.filename or '')[:200]!r}: {err.strerror}"
        ) from None
    connect["namespace"] = namespace
    return connect
