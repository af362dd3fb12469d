"""A real HTTP server on 127.0.0.1 for tests: records every request and serves programmable routes.

Typical use::

    from tests.helpers.http_server import http_server  # the fixture

    def test_something(http_server: RecordingServer) -> None:
        http_server.route("POST", "/hook", [(500, {}, {"error": "boom"}), (200, {}, {"ok": True})])
        ...  # call f"{http_server.url}/hook"
        assert http_server.side_effects(path="/hook") == 1

Response bodies: ``bytes`` are sent as is, ``str`` as ``text/plain; charset=utf-8``, ``None`` as an
empty body, anything else as JSON. Headers given with the response override the defaults; with
``Transfer-Encoding: chunked`` the body goes in chunks, without a ``Content-Length``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = [
    "RecordedRequest",
    "RecordingServer",
    "Responder",
    "Response",
    "http_server",
]

Response = tuple[int, dict[str, str], Any]
"""``(status, headers, body)`` as served by a route."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        method: Upper-case HTTP method.
        path: Path without the query string.
        query: Parsed query string (every value is a list, as with ``parse_qs``).
        headers: Request headers with lower-cased names.
        body: Raw request body.
        json: The body parsed as JSON, or None when empty or not JSON.
        time: ``time.monotonic()`` when the request arrived.
        status: Status code the server answered with.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any
    time: float
    status: int = 0

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header, if sent."""
        return self.headers.get("idempotency-key")


Responder = Callable[[RecordedRequest], Response]
"""A callable route: computes the response from the request (it may sleep to simulate latency)."""


@dataclass
class _Route:
    responses: list[Response] | None = None
    responder: Responder | None = None
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_response(self, request: RecordedRequest) -> Response:
        if self.responder is not None:
            return self.responder(request)
        assert self.responses
        with self.lock:
            response = self.responses[min(self.served, len(self.responses) - 1)]
            self.served += 1
        return response


def _default_response(request: RecordedRequest) -> Response:
    return 200, {}, {"ok": True, "json": request.json}


def _encode(headers: dict[str, str], body: Any) -> tuple[dict[str, str], bytes]:
    out = {name.lower(): value for name, value in headers.items()}
    if body is None:
        payload = b""
    elif isinstance(body, bytes):
        payload = body
        out.setdefault("content-type", "application/octet-stream")
    elif isinstance(body, str):
        payload = body.encode()
        out.setdefault("content-type", "text/plain; charset=utf-8")
    else:
        payload = json.dumps(body).encode()
        out.setdefault("content-type", "application/json")
    return out, payload


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        arrived = time.monotonic()
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client went away mid-request (a worker killed while sending): like any real
            # server, do not act on a truncated request.
            self.close_connection = True
            return
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            json=parsed,
            time=arrived,
        )
        owner = self.server.owner
        status, headers, payload_body = owner._respond(request)
        owner._record(dataclasses.replace(request, status=status))
        out_headers, payload = _encode(headers, payload_body)
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        chunked = out_headers.get("transfer-encoding", "").lower() == "chunked"
        if "content-length" not in out_headers and not chunked:
            self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if not chunked:
            self.wfile.write(payload)
            return
        # A body of no declared length, as a streaming server sends it: 64 KiB chunks.
        for offset in range(0, len(payload), 64 * 1024):
            part = payload[offset : offset + 64 * 1024]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: RecordingServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out hang up mid-response; that is expected in tests, not an error.
        pass


class RecordingServer:
    """Threaded HTTP server on ``127.0.0.1`` (or another loopback ``host``) with an ephemeral port.

    Use as a context manager or call :meth:`start` / :meth:`stop`. All methods are thread-safe.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._routes: dict[tuple[str, str], _Route] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("server not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Bind and start serving in a daemon thread.

        Returns:
            The server itself.
        """
        if self._server is not None:
            return self
        server = _Server((self._host, 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (handlers still sleeping are abandoned)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def route(self, method: str, path: str, responses: Sequence[Response] | Responder) -> None:
        """Program the responses for ``method`` + ``path`` (``method="*"`` matches any method).

        Args:
            method: HTTP method, or ``*``.
            path: Exact path, without query string.
            responses: Responses served in order, the last one repeating; or a callable computing
                the response from the :class:`RecordedRequest`.
        """
        if callable(responses):
            new_route = _Route(responder=responses)
        else:
            if not responses:
                raise ValueError("a route needs at least one response")
            new_route = _Route(responses=list(responses))
        with self._lock:
            self._routes[(method.upper(), path)] = new_route

    def _respond(self, request: RecordedRequest) -> Response:
        with self._lock:
            found = self._routes.get((request.method, request.path)) or self._routes.get(("*", request.path))
        if found is None:
            return _default_response(request)
        return found.next_response(request)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Requests received so far, oldest first, optionally filtered.

        Args:
            method: Keep only this method.
            path: Keep only this path.

        Returns:
            A snapshot list.
        """
        with self._lock:
            snapshot = list(self._requests)
        return [
            r
            for r in snapshot
            if (method is None or r.method == method.upper()) and (path is None or r.path == path)
        ]

    def effects_by_key(
        self, method: str | None = None, path: str | None = None
    ) -> dict[str, list[RecordedRequest]]:
        """Requests that carried an ``Idempotency-Key``, grouped by key in arrival order.

        Args:
            method: Keep only this method.
            path: Keep only this path.

        Returns:
            ``{key: [requests]}``.
        """
        grouped: dict[str, list[RecordedRequest]] = {}
        for request in self.requests(method, path):
            if request.idempotency_key is not None:
                grouped.setdefault(request.idempotency_key, []).append(request)
        return grouped

    def side_effects(self, method: str | None = None, path: str | None = None) -> int:
        """Effects an idempotent receiver would have applied: once per key, once per keyless request.

        Args:
            method: Keep only this method.
            path: Keep only this path.

        Returns:
            The number of distinct effects.
        """
        requests = self.requests(method, path)
        keyless = sum(1 for r in requests if r.idempotency_key is None)
        return keyless + len({r.idempotency_key for r in requests if r.idempotency_key is not None})

    def clear(self) -> None:
        """Forget recorded requests (routes are kept, their response sequences restart)."""
        with self._lock:
            self._requests.clear()
            for existing in self._routes.values():
                existing.served = 0


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    """A started :class:`RecordingServer`, stopped after the test."""
    with RecordingServer() as server:
        yield server
