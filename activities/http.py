"""The ``http`` action: one HTTP request, with failures classified for Temporal's retry policy.

Classification (error ``type`` on the raised :class:`~temporalio.exceptions.ApplicationError`):

============================  ============  ==============================================
Situation                     Retryable     Type
============================  ============  ==============================================
input fails validation        no            ``InvalidActionInput``
referenced secret missing     no            ``SecretNotFound``
secret not for this host      no            ``SecretHostRefused``
5xx                           yes           ``HttpServerError``
408                           yes           ``HttpRequestTimeout``
429                           yes           ``HttpRateLimited`` (delay from ``Retry-After``)
other 4xx                     no            ``HttpClientError``
status not in accept_status   no            ``HttpUnexpectedStatus``
request timed out             yes           ``HttpTimeout``
could not connect             yes           ``HttpConnectError``
outbound policy refuses host  no            ``OutboundRefused``
other transport failure       yes           ``HttpTransportError``
success body over 256 KiB     no            ``HttpResponseTooLarge``
body coding not read          no            ``HttpResponseUndecodable``
============================  ============  ==============================================
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.base import (
    action,
    check_secret_hosts,
    holds_lone_surrogate,
    invalid_input,
    resolve_secrets,
    resolve_url,
)
from activities.outbound import OutboundRefusedError
from interpreter.actions import (
    ActionRequest,
    HttpInput,
    StatusRange,
    parse_action_input,
    status_accepted,
)
from interpreter.sizes import VALUE_MAX_DEPTH

__all__ = [
    "ERROR_BODY_LIMIT_BYTES",
    "MAX_RESPONSE_BYTES",
    "HttpActions",
    "HttpInput",
]

MAX_RESPONSE_BYTES = 256 * 1024
"""Largest success body accepted: the output goes into workflow history, whose payloads are capped."""

ERROR_BODY_LIMIT_BYTES = 2 * 1024
"""How much of an error response's body is kept in the failure details."""

_OUTPUT_HEADERS = ("content-type", "location", "etag", "retry-after")
_TRANSIENT_STATUSES = frozenset({408, 429})


def _display_url(url: str) -> str:
    """The URL as shown in errors: unresolved, without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def _selected_headers(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in _OUTPUT_HEADERS if name in response.headers}


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _decode_text(raw: bytes, response: httpx.Response) -> str:
    try:
        return raw.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def _body_refused(response: httpx.Response, message: str, error_type: str) -> ApplicationError:
    """A permanent failure of a 2xx answer's body (the same answer would come back), with the
    status and the selected headers in its details."""
    return ApplicationError(
        message,
        {"status_code": response.status_code, "headers": _selected_headers(response)},
        type=error_type,
        non_retryable=True,
    )


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of a number's range")
    return value


def strict_json(raw: bytes | str) -> Any:
    """``raw`` as JSON as RFC 8259 means it: no ``NaN`` or ``Infinity``, no number that overflows
    a float (``1e999``), no lone surrogate escape (``"\\ud800"``).

    Raises:
        ValueError: Anything else (``RecursionError`` for nesting past the parser's stack).
    """
    value = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    if holds_lone_surrogate(value):
        raise ValueError("a lone surrogate escape is not text")
    return value


def _parse_body(raw: bytes, response: httpx.Response) -> Any:
    if _is_json(response.headers.get("content-type", "")):
        if not raw.strip():
            return None
        try:
            return strict_json(raw)
        except ValueError:
            # A mislabelled body is still worth returning, as text; so is one that is not strict
            # JSON: NaN and Infinity became null in history (a probe), and a lone surrogate escape
            # could not be written at all.
            pass
        except RecursionError:
            # [[[[... past the parser's stack: a retryable bug before (a POST sent again), a probe.
            raise _body_refused(
                response,
                f"the JSON body nests lists and objects more than {VALUE_MAX_DEPTH} levels deep, more"
                " than a run keeps",
                "ActionOutputTooDeep",
            ) from None
    return _decode_text(raw, response)


MAX_RETRY_AFTER = timedelta(hours=1)
"""The longest wait a ``Retry-After`` sets before the next attempt: the server is a third party
(a year-9999 date parked a step for 8,000 years, a probe); a quota that resets later costs an
attempt per hour."""


def _retry_after(value: str | None) -> timedelta | None:
    """Parse ``Retry-After`` (delta-seconds or HTTP-date), at most :data:`MAX_RETRY_AFTER`; None
    when absent, invalid or past."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²": isdigit takes it, int() does not (a probe)
        digits = value.lstrip("0") or "0"
        return MAX_RETRY_AFTER if len(digits) > 9 else min(timedelta(seconds=int(digits)), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = when - datetime.now(UTC)
    return min(delay, MAX_RETRY_AFTER) if delay > timedelta(0) else None


DECODED_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})
"""The ``Content-Encoding`` a response may have besides none (``identity``): one layer of these,
which the worker asks for (``Accept-Encoding: gzip, deflate``) and inflates itself, never past
what it reads."""


class UndecodableBodyError(Exception):
    """A response body in a content coding the worker does not inflate (several layers, ``br``,
    ...), or whose compressed data is corrupt."""


def _content_codings(response: httpx.Response) -> list[str]:
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    return [c for c in codings if c and c != "identity"]


async def _decoded_chunks(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The body's bytes after content decoding, at most ``limit + 1`` of them produced: a few
    compressed bytes cannot inflate into more than the reader takes (httpx inflated every
    network chunk whole, through every layer the server named: ``gzip, gzip`` of zeros took
    800 MB of the worker's memory for an 822-byte body, a probe).

    Raises:
        UndecodableBodyError: A coding other than one layer of gzip or deflate, or corrupt data.
    """
    codings = _content_codings(response)
    if not codings:
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            yield chunk
            if size > limit:
                return
        return
    if len(codings) > 1 or codings[0] not in DECODED_CODINGS:
        async for chunk in response.aiter_raw():
            if chunk:  # an empty body (HEAD, 204) has nothing to inflate
                raise UndecodableBodyError(
                    f"a body in the content coding {', '.join(codings)!r} (the worker inflates one"
                    " layer of gzip or deflate)"
                )
        return
    gzip = codings[0] != "deflate"
    inflater: Any = None
    produced = read = 0
    # Compressed data of ``limit`` bytes takes at most a little more than that (stored blocks).
    most_read = 2 * limit + 64 * 1024
    try:
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read > most_read:
                raise UndecodableBodyError(
                    f"its {codings[0]} data runs past {most_read} bytes, more than a body the worker"
                    f" reads ({limit} bytes) takes"
                )
            if inflater is None:
                # deflate is meant as zlib data, but some servers send it raw (httpx reads both).
                raw_deflate = not gzip and bool(chunk) and (chunk[0] & 0x0F) != 8
                inflater = zlib.decompressobj(
                    16 + zlib.MAX_WBITS if gzip else -zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS
                )
            data = chunk
            while data:
                out = inflater.decompress(data, limit + 1 - produced)
                data = inflater.unconsumed_tail
                produced += len(out)
                if out:
                    yield out
                if produced > limit:
                    return
                if inflater.eof:
                    # The compressed data ended: what follows is not the body (as httpx reads
                    # it). Reading on kept every further byte in the inflater's unused data,
                    # copied again with each chunk, until the step's timeout (a probe).
                    return
    except zlib.error as err:
        raise UndecodableBodyError(f"its {codings[0]} data is corrupt ({err})") from None


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in _decoded_chunks(response, limit):
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except UndecodableBodyError as err:
        return f"(not shown: {err})".encode()
    return b"".join(chunks)[:limit]


async def _read_success_body(response: httpx.Response, what: str) -> bytes:
    def too_large(size: str) -> ApplicationError:
        return _body_refused(
            response,
            f"{what} returned a body of {size} bytes, over the {MAX_RESPONSE_BYTES}-byte limit for "
            "action outputs",
            "HttpResponseTooLarge",
        )

    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise too_large(declared)
    chunks: list[bytes] = []
    size = 0
    # Counted after content decoding, which stops there: a small compressed body cannot inflate
    # past the limit, in the worker's memory either.
    try:
        async for chunk in _decoded_chunks(response, MAX_RESPONSE_BYTES):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise too_large(f"more than {MAX_RESPONSE_BYTES}")
            chunks.append(chunk)
    except UndecodableBodyError as err:
        raise _body_refused(response, f"{what} returned {err}", "HttpResponseUndecodable") from None
    return b"".join(chunks)


async def _status_error(
    response: httpx.Response, what: str, accept_status: list[int | StatusRange]
) -> ApplicationError:
    status = response.status_code
    snippet = _decode_text(await _read_prefix(response, ERROR_BODY_LIMIT_BYTES), response)
    details = {"status_code": status, "headers": _selected_headers(response), "body": snippet}
    message = f"{what} returned {status} {response.reason_phrase}".rstrip()
    if status >= 500:
        return ApplicationError(
            message,
            details,
            type="HttpServerError",
            next_retry_delay=_retry_after(response.headers.get("retry-after")),
        )
    if status == 408:
        return ApplicationError(message, details, type="HttpRequestTimeout")
    if status == 429:
        return ApplicationError(
            message,
            details,
            type="HttpRateLimited",
            next_retry_delay=_retry_after(response.headers.get("retry-after")),
        )
    if 400 <= status < 500 and not accept_status:
        return ApplicationError(message, details, type="HttpClientError", non_retryable=True)
    expected = ", ".join(map(str, accept_status)) if accept_status else "2xx"
    return ApplicationError(
        f"{message}, expected {expected}", details, type="HttpUnexpectedStatus", non_retryable=True
    )


class HttpActions:
    """Holder of the shared HTTP client; ``HttpActions(client).http`` is the activity to register.

    Args:
        client: Shared client, owned (and closed) by the worker. Its connection pool is reused by
            every ``http`` activity on the worker.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @action("http")
    async def http(self, request: ActionRequest) -> dict[str, Any]:
        """Send one HTTP request described by ``request.input`` (an :class:`HttpInput`).

        Args:
            request: The action request.

        Returns:
            ``{"status_code": int, "headers": {...}, "body": parsed JSON or text}``; ``headers``
            holds the lower-cased ``content-type``, ``location``, ``etag`` and ``retry-after`` when
            present.

        Raises:
            ApplicationError: Classified as in the module docstring.
        """
        try:
            spec = parse_action_input(HttpInput, request.input)
        except ValidationError as exc:
            raise invalid_input("http", request.input, exc) from None
        method = spec.method
        what = f"{method} {_display_url(spec.url)}"

        url: str = resolve_url(spec.url)
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise ApplicationError(
                f"invalid http input: url: {what} is not an http(s) URL once secrets are resolved",
                type="InvalidActionInput",
                non_retryable=True,
            )
        headers: dict[str, str] = resolve_secrets(spec.headers)
        params: dict[str, Any] = resolve_secrets(spec.params)
        body: Any = resolve_secrets(spec.json_body)
        check_secret_hosts(urlsplit(url).hostname or "")
        for name, header_value in headers.items():
            try:
                header_value.encode("ascii")
            except UnicodeEncodeError:
                raise ApplicationError(
                    f"invalid http input: headers.{name}: has characters an HTTP header cannot carry"
                    " (only ASCII; encode the value, e.g. base64)",
                    type="InvalidActionInput",
                    non_retryable=True,
                ) from None
        if not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = request.idempotency_key

        try:
            target = httpx.URL(url)
            if params:
                # Passing params= to httpx would drop a query string already in the URL.
                target = target.copy_merge_params(params)
            # httpx timeouts apply per phase; this bounds the whole exchange, slow bodies included.
            async with asyncio.timeout(spec.timeout_s):
                async with self._client.stream(
                    method,
                    target,
                    headers=headers,
                    json=body,
                    timeout=httpx.Timeout(spec.timeout_s),
                ) as response:
                    if not status_accepted(response.status_code, spec.accept_status):
                        raise await _status_error(response, what, spec.accept_status)
                    raw = await _read_success_body(response, what)
        except OutboundRefusedError as exc:
            raise exc.application_error(what) from None
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ApplicationError(f"{what} timed out after {spec.timeout_s:g}s", type="HttpTimeout") from exc
        except httpx.ConnectError as exc:
            raise ApplicationError(f"{what} could not connect: {exc}", type="HttpConnectError") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise ApplicationError(
                f"invalid http input: {what} cannot be sent: {type(exc).__name__}",
                type="InvalidActionInput",
                non_retryable=True,
            ) from None
        except httpx.TransportError as exc:
            raise ApplicationError(
                f"{what} failed: {type(exc).__name__}: {exc}", type="HttpTransportError"
            ) from exc

        return {
            "status_code": response.status_code,
            "headers": _selected_headers(response),
            "body": None if method == "HEAD" else _parse_body(raw, response),
        }
