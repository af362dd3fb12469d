"""One way to connect to Temporal for the worker, the client API, the ``wfa`` CLI and the gateway.

Connection settings come from Temporal's environment configuration (:mod:`temporalio.envconfig`),
the same profiles and variables every Temporal tool reads:

- a TOML file (``TEMPORAL_CONFIG_FILE``, else ``~/.config/temporalio/temporal.toml``) of profiles
  with ``address``, ``namespace``, ``api_key``, ``[profile.NAME.tls]`` (``server_ca_cert_path``,
  ``client_cert_path``, ``client_key_path``, ``server_name``, ``disabled``) and gRPC metadata;
- the profile ``TEMPORAL_PROFILE`` (or an explicit ``profile=``/``--profile``; default ``default``);
  a tenant's own profile (named after the tenant, :mod:`starter.tenancy`) wins over it;
- environment overrides: ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``,
  ``TEMPORAL_TLS``, ``TEMPORAL_TLS_SERVER_CA_CERT``, ``TEMPORAL_TLS_CLIENT_CERT_PATH``, ... (as
  the ``temporal`` CLI).

The namespace is the tenant's (``WFA_TENANT_NAMESPACES``, ``WFA_NAMESPACE_PER_TENANT``); in the
single-namespace deployment it is ``namespace=``, else ``TEMPORAL_NAMESPACE``, else the profile's,
else ``default``. Every client gets the product's data converter (pydantic models, and the payload
codec when ``WFA_PAYLOAD_KEYS``/``WFA_PAYLOAD_KEYS_FILE`` configure keys: :mod:`starter.codec`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starter.config import (
    ADDRESS_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    DEFAULT_TENANT,
    NAMESPACE_ENV,
    TENANT_ENV,
)
from starter.tenancy import PROFILE_FILE_ENV, Tenancy, TenancyConfigError, connect_config, temporal_variables

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.converter import DataConverter

__all__ = [
    "PROFILE_ENV",
    "PROFILE_FILE_ENV",
    "ConnectionConfigError",
    "connect_client",
    "connect_options",
]

PROFILE_ENV = "TEMPORAL_PROFILE"
"""The configuration profile to use (default ``default``)."""


class ConnectionConfigError(ValueError):
    """The connection configuration is unusable (names the file, profile or variable)."""


def _profile_namespace(source: Mapping[str, str], profile: str | None) -> str | None:
    from temporalio.envconfig import ClientConfigProfile

    config_file = source.get(PROFILE_FILE_ENV) or None
    try:
        temporal = temporal_variables({k: v for k, v in source.items() if k != NAMESPACE_ENV})
    except TenancyConfigError as err:
        raise ConnectionConfigError(str(err)) from None
    try:
        loaded = ClientConfigProfile.load(
            profile=profile or source.get(PROFILE_ENV) or None,
            config_source=Path(config_file) if config_file else None,
            override_env_vars=temporal,
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise ConnectionConfigError(
            f"Temporal configuration profile {profile or source.get(PROFILE_ENV) or 'default'!r}: {err}"
        ) from None
    return loaded.namespace


def connect_options(
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    profile: str | None = None,
    config_file: str | None = None,
    address: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``Client.connect`` (``target_host`` included) for a tenant.

    Args:
        tenant: Default ``$WFA_TENANT`` or ``default``: selects the namespace and a profile named
            after the tenant, if the configuration file has one.
        namespace: An explicit namespace: the namespace of every tenant in the single-namespace
            deployment; with namespaces per tenant, anything but the tenant's is refused.
        profile: An explicit profile (``--profile``), instead of ``$TEMPORAL_PROFILE``.
        config_file: An explicit configuration file (``--config-file``), instead of
            ``$TEMPORAL_CONFIG_FILE``.
        address: An explicit ``host:port`` (``--address``), over the profile's and
            ``$TEMPORAL_ADDRESS``.
        env: Default ``os.environ``.

    Raises:
        ConnectionConfigError: An unreadable file, an unknown profile, a profile naming another
            namespace than the tenant's, a namespace not the tenant's, a malformed mapping.
    """
    source = dict(os.environ if env is None else env)
    if config_file:
        source[PROFILE_FILE_ENV] = config_file
    if profile:
        source[PROFILE_ENV] = profile
    tenant = tenant or source.get(TENANT_ENV) or DEFAULT_TENANT
    try:
        tenancy = Tenancy.from_env(source)
        if not tenancy.isolated:
            default = (
                namespace
                or source.get(NAMESPACE_ENV)
                or _profile_namespace(source, profile)
                or DEFAULT_NAMESPACE
            )
            tenancy = Tenancy.from_env(source, default_namespace=default)
        options = connect_config(tenant, tenancy, source, explicit_profile=profile)
    except TenancyConfigError as err:
        raise ConnectionConfigError(str(err)) from None
    if namespace and namespace != options["namespace"]:
        raise ConnectionConfigError(
            f"tenant {tenant!r} lives in namespace {options['namespace']!r}, not {namespace[:200]!r}"
            " (WFA_TENANT_NAMESPACES, WFA_NAMESPACE_PER_TENANT)"
        )
    options["target_host"] = (
        address or options.get("target_host") or source.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    )
    return options


async def connect_client(
    profile: str | None = None,
    namespace: str | None = None,
    *,
    tenant: str | None = None,
    config_file: str | None = None,
    address: str | None = None,
    data_converter: DataConverter | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Client:
    """Connects a Temporal client from the environment configuration (see the module docstring).

    Args:
        profile: The configuration profile (default ``$TEMPORAL_PROFILE``, else ``default``).
        namespace: See :func:`connect_options`.
        tenant: See :func:`connect_options`.
        config_file: See :func:`connect_options`.
        address: See :func:`connect_options`.
        data_converter: Default :func:`starter.codec.data_converter` of ``env`` (pydantic, and
            the payload codec when keys are configured).
        env: Default ``os.environ``.
        **overrides: More ``Client.connect`` arguments (``runtime``, ``interceptors``,
            ``plugins``, ``identity``, ``tls``, ``api_key``, ...); they win over the profile's.

    Raises:
        ConnectionConfigError: See :func:`connect_options`; or the payload keys are unusable.
        ConnectionError: The server cannot be reached (the message names the address).
    """
    from temporalio.client import Client

    from starter.codec import PayloadKeysError
    from starter.codec import data_converter as product_converter

    options = connect_options(
        tenant=tenant, namespace=namespace, profile=profile, config_file=config_file, address=address, env=env
    )
    if data_converter is None:
        try:
            data_converter = product_converter(env, namespace=options["namespace"])
        except PayloadKeysError as err:
            raise ConnectionConfigError(str(err)) from None
    options.update(overrides)
    target = options.pop("target_host")
    try:
        return await Client.connect(target, data_converter=data_converter, **options)
    except ValueError as err:  # e.g. "invalid target URL: invalid port number"
        raise ConnectionConfigError(f"invalid Temporal server address {target[:200]!r}: {err}") from None
    except RuntimeError as err:
        raise ConnectionError(
            f"cannot reach the Temporal server at {target} (namespace {options['namespace']}): {err}"
        ) from None
