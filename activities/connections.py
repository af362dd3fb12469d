"""Named connections of the ``sql`` and ``llm`` actions, per tenant, from the worker's configuration.

A definition names a connection (``"connection": "crm"``); where it goes, as whom and under which
limits is the operator's configuration, never the definition's. ``WFA_CONNECTIONS_FILE`` is a JSON
file::

    {
      "acme": {
        "sql": {
          "crm": {"url": "postgresql+asyncpg://crm_app:${secret:CRM_DB_PASSWORD}@db.internal/crm",
                  "read_only": true, "statement_timeout_s": 10}
        },
        "llm": {
          "default": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                      "api_key": "${secret:OPENAI_API_KEY}"}
        }
      }
    }

String values may hold ``${secret:NAME}`` references, resolved with the run's tenant's secrets inside
the action (so they are redacted from its output and errors like any secret). A run sees only its own
tenant's connections.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from temporalio.exceptions import ApplicationError

__all__ = [
    "CONNECTIONS_FILE_ENV",
    "Connections",
    "ConnectionsConfigError",
    "LlmConnection",
    "SqlConnection",
    "configure_connections",
    "configured_connection",
    "connections",
]

CONNECTIONS_FILE_ENV = "WFA_CONNECTIONS_FILE"
"""Path of the per-tenant connections file."""


class ConnectionsConfigError(ValueError):
    """The connections file cannot be used (names the file and the problem, never a value)."""


@dataclass(frozen=True)
class SqlConnection:
    """A database the ``sql`` action may use.

    Attributes:
        url: SQLAlchemy async URL (``postgresql+asyncpg://...``); may hold secret references.
        read_only: Every statement runs in a read-only transaction (the database refuses writes).
        statement_timeout_s: Upper bound of any statement's timeout on this connection.
    """

    url: str
    read_only: bool = False
    statement_timeout_s: float | None = None

    def __repr__(self) -> str:  # the URL may carry a password
        return f"SqlConnection(read_only={self.read_only}, statement_timeout_s={self.statement_timeout_s})"


@dataclass(frozen=True)
class LlmConnection:
    """An OpenAI-compatible chat-completions endpoint the ``llm`` action may use.

    Attributes:
        base_url: The API root; ``/chat/completions`` is appended.
        model: The model used when the step names none.
        api_key: Sent as ``Authorization: Bearer``; a secret reference, normally.
    """

    base_url: str
    model: str
    api_key: str | None = None

    def __repr__(self) -> str:
        return f"LlmConnection(base_url={self.base_url!r}, model={self.model!r})"


@dataclass(frozen=True)
class Connections:
    """Every tenant's named connections."""

    sql: Mapping[str, Mapping[str, SqlConnection]] = field(default_factory=dict)
    llm: Mapping[str, Mapping[str, LlmConnection]] = field(default_factory=dict)

    def sql_connection(self, tenant: str, name: str) -> SqlConnection | None:
        """The tenant's SQL connection ``name``, if configured."""
        return self.sql.get(tenant, {}).get(name)

    def llm_connection(self, tenant: str, name: str) -> LlmConnection | None:
        """The tenant's model endpoint ``name``, if configured."""
        return self.llm.get(tenant, {}).get(name)

    @classmethod
    def parse(cls, data: Any, where: str = "connections") -> Connections:
        """Connections from the file's JSON (see the module docstring).

        Raises:
            ConnectionsConfigError: Not of the documented shape.
        """
        if not isinstance(data, dict):
            raise ConnectionsConfigError(f"{where}: must be an object of tenants")
        sql: dict[str, dict[str, SqlConnection]] = {}
        llm: dict[str, dict[str, LlmConnection]] = {}
        for tenant, kinds in data.items():
            if not isinstance(kinds, dict) or set(kinds) - {"sql", "llm"}:
                raise ConnectionsConfigError(f"{where}: tenant {tenant!r} must hold only 'sql' and 'llm'")
            for kind in ("sql", "llm"):
                named = kinds.get(kind, {})
                if not isinstance(named, dict):
                    raise ConnectionsConfigError(f"{where}: {tenant}.{kind} must map names to connections")
                for name, raw in named.items():
                    try:
                        if kind == "sql":
                            sql.setdefault(tenant, {})[name] = _sql(raw)
                        else:
                            llm.setdefault(tenant, {})[name] = _llm(raw)
                    except (TypeError, ValueError) as err:
                        raise ConnectionsConfigError(f"{where}: {tenant}.{kind}.{name}: {err}") from None
        return cls(sql=sql, llm=llm)

    @classmethod
    def load(cls, path: str | Path) -> Connections:
        """Reads the file.

        Raises:
            ConnectionsConfigError: Unreadable, not JSON, or not of the documented shape.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConnectionsConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConnectionsConfigError(f"{path}: not JSON ({exc})") from None
        return cls.parse(data, str(path))


def _fields(raw: Any, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError("must be an object")
    missing = [key for key in required if key not in raw]
    unknown = sorted(set(raw) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f"missing {missing}, unknown {unknown}")
    return raw


def _sql(raw: Any) -> SqlConnection:
    data = _fields(raw, ("url",), ("read_only", "statement_timeout_s"))
    timeout = data.get("statement_timeout_s")
    if not isinstance(data["url"], str) or not isinstance(data.get("read_only", False), bool):
        raise ValueError("url must be a string, read_only a boolean")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ValueError("statement_timeout_s must be a positive number")
    return SqlConnection(
        data["url"], data.get("read_only", False), None if timeout is None else float(timeout)
    )


def _llm(raw: Any) -> LlmConnection:
    data = _fields(raw, ("base_url", "model"), ("api_key",))
    if not all(isinstance(data.get(key, ""), str) for key in ("base_url", "model", "api_key")):
        raise ValueError("base_url, model and api_key must be strings")
    return LlmConnection(data["base_url"], data["model"], data.get("api_key"))


_configured: Connections | None = None


def configure_connections(config: Connections | None) -> None:
    """Sets the connections every action uses (None: back to ``WFA_CONNECTIONS_FILE``)."""
    global _configured
    _configured = config


def connections(environ: Mapping[str, str] | None = None) -> Connections:
    """The configured connections, else those of ``WFA_CONNECTIONS_FILE`` (none without it).

    Raises:
        ConnectionsConfigError: The file is set but unusable.
    """
    if _configured is not None:
        return _configured
    env = os.environ if environ is None else environ
    path = env.get(CONNECTIONS_FILE_ENV)
    return Connections.load(path) if path else Connections()


@overload
def configured_connection(kind: Literal["sql"], tenant: str, name: str) -> SqlConnection: ...
@overload
def configured_connection(kind: Literal["llm"], tenant: str, name: str) -> LlmConnection: ...
def configured_connection(
    kind: Literal["sql", "llm"], tenant: str, name: str
) -> SqlConnection | LlmConnection:
    """The tenant's ``kind`` connection ``name``, for an action about to use it.

    Raises:
        ApplicationError: Non-retryable ``SqlConnectionNotConfigured`` / ``LlmConnectionNotConfigured``:
            the connections file is unusable, or the tenant has no such connection.
    """
    error_type = f"{kind.capitalize()}ConnectionNotConfigured"
    try:
        configured = connections()
    except ConnectionsConfigError as err:
        raise ApplicationError(str(err), type=error_type, non_retryable=True) from None
    found = (
        configured.sql_connection(tenant, name) if kind == "sql" else configured.llm_connection(tenant, name)
    )
    if found is None:
        raise ApplicationError(
            f"{kind} connection {name!r} of tenant {tenant!r} is not configured on the worker"
            " (WFA_CONNECTIONS_FILE)",
            type=error_type,
            non_retryable=True,
        )
    return found
