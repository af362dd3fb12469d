"""The gateway's configuration: from the environment, or a JSON file (``WFA_GATEWAY_CONFIG``).

Environment variables (a file's keys are the field names below, lower case)::

    WFA_GATEWAY_TENANTS=acme,globex        tenants served (default: $WFA_TENANT or "default")
    WFA_GATEWAY_MAX_BODY=262144             bytes of a request body, refused past it (413)
    WFA_GATEWAY_MAX_DEPTH=32                nesting of a JSON body (arrays and objects)
    WFA_GATEWAY_HMAC_DELIVERY_HEADER=       header naming an HMAC provider's delivery id (unsigned)
    WFA_GATEWAY_ROW_CHANGES=acme:crm        tenant:connection pairs whose outbox the gateway drains
    TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE, DATABASE_URL   as for the client
    WFA_INPUT_CHECK_DEADLINE=20, WFA_INPUT_CHECK_SLOTS=2   checking a run's input against its
                                            input_schema (activities.input_check; also the worker's)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from starter.config import DATABASE_URL_ENV, DEFAULT_TENANT, TASK_QUEUE_ENV, TENANT_ENV

__all__ = ["CONFIG_FILE_ENV", "GatewayConfig", "GatewayConfigError", "RowChangeSource"]

CONFIG_FILE_ENV = "WFA_GATEWAY_CONFIG"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_CONNECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


class GatewayConfigError(ValueError):
    """The configuration is unusable (names the variable or file and the problem)."""


class RowChangeSource(BaseModel):
    """One database whose outbox the listener drains: a tenant's connection (a secret holding its URL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    connection: str

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not _TENANT.match(value):
            raise ValueError(f"{value[:120]!r} is not a tenant name")
        return value

    @field_validator("connection")
    @classmethod
    def _connection(cls, value: str) -> str:
        if not _CONNECTION.match(value):
            raise ValueError(f"{value[:120]!r} is not a connection (secret) name")
        return value


class GatewayConfig(BaseModel):
    """What the gateway serves and its limits.

    Attributes:
        tenants: The tenants whose hooks and events are served (any other tenant in a path is a 404).
        max_body_bytes: Largest request body; a longer one is refused while it streams in (413).
        max_json_depth: Deepest nesting of a JSON body (413 past it).
        max_number_digits: Longest integer literal in a JSON body (413 past it).
        hmac_delivery_header: For ``hmac_sha256`` webhooks: a header with the provider's delivery id.
            Unset (default), the delivery id is a hash of the body (the only signed part).
        address: Temporal frontend (default ``$TEMPORAL_ADDRESS`` or the tenant's profile).
        task_queue: Where runs are scheduled (default ``$TEMPORAL_TASK_QUEUE``).
        database_url: The store (default ``$DATABASE_URL``, else the embedded server).
        row_changes: Outboxes the listener drains (empty: no listener).
        ready_timeout_s: How long ``/readyz`` waits for Temporal and the database.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenants: tuple[str, ...] = (DEFAULT_TENANT,)
    max_body_bytes: int = Field(default=256 * 1024, ge=1, le=64 * 1024 * 1024)
    max_json_depth: int = Field(default=32, ge=1, le=512)
    max_number_digits: int = Field(default=100, ge=1, le=4000)
    hmac_delivery_header: str | None = None
    address: str | None = None
    task_queue: str | None = None
    database_url: str | None = None
    row_changes: tuple[RowChangeSource, ...] = ()
    ready_timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tenant in value:
            if not _TENANT.match(tenant):
                raise ValueError(f"{tenant[:120]!r} is not a tenant name")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """The configuration of ``WFA_GATEWAY_CONFIG``'s file if set, else of the environment.

        Raises:
            GatewayConfigError: Unreadable file, malformed value.
        """
        source = os.environ if env is None else env
        from activities.input_check import input_check_settings

        try:
            input_check_settings(source)  # read at each check; refused here, at start
        except ValueError as err:
            raise GatewayConfigError(str(err)) from None
        path = source.get(CONFIG_FILE_ENV)
        if path:
            return cls.from_file(path)
        raw: dict[str, Any] = {}
        tenants = source.get("WFA_GATEWAY_TENANTS") or source.get(TENANT_ENV) or DEFAULT_TENANT
        raw["tenants"] = tuple(t.strip() for t in tenants.split(",") if t.strip())
        for key, field in (
            ("WFA_GATEWAY_MAX_BODY", "max_body_bytes"),
            ("WFA_GATEWAY_MAX_DEPTH", "max_json_depth"),
        ):
            if source.get(key):
                raw[field] = source[key]
        if source.get("WFA_GATEWAY_HMAC_DELIVERY_HEADER"):
            raw["hmac_delivery_header"] = source["WFA_GATEWAY_HMAC_DELIVERY_HEADER"]
        raw["address"] = source.get("TEMPORAL_ADDRESS") or None
        raw["task_queue"] = source.get(TASK_QUEUE_ENV) or None
        raw["database_url"] = source.get(DATABASE_URL_ENV) or None
        sources = []
        for item in source.get("WFA_GATEWAY_ROW_CHANGES", "").split(","):
            if not item.strip():
                continue
            tenant, sep, connection = item.strip().partition(":")
            if not sep:
                raise GatewayConfigError(f"WFA_GATEWAY_ROW_CHANGES: {item[:120]!r} is not tenant:connection")
            sources.append({"tenant": tenant, "connection": connection})
        raw["row_changes"] = sources
        return cls._build(raw, "the environment (WFA_GATEWAY_*)")

    @classmethod
    def from_file(cls, path: str | Path) -> GatewayConfig:
        """The configuration of a JSON file whose keys are the field names.

        Raises:
            GatewayConfigError: Unreadable, not JSON, or a malformed value.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise GatewayConfigError(f"{path}: cannot read: {err.strerror or err}") from None
        except ValueError as err:
            raise GatewayConfigError(f"{path}: not JSON ({err})") from None
        if not isinstance(raw, dict):
            raise GatewayConfigError(f"{path}: must be a JSON object")
        return cls._build(raw, str(path))

    @classmethod
    def _build(cls, raw: Mapping[str, Any], where: str) -> GatewayConfig:
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
            )
            raise GatewayConfigError(f"{where}: {problems}") from None
