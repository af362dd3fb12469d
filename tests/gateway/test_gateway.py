"""The gateway against a real uvicorn on loopback, a real Temporal dev server and real PostgreSQL.

* The hostile test sends 200+ malformed, unsigned, forged, replayed, oversized, wrong-method and
  wrong-content-type requests: every answer is a 4xx JSON error, none is a 5xx, and no run starts.
* A valid signed delivery starts exactly one run; its redelivery starts nothing (``duplicate``).
* ``/events`` authenticates tenants by hashed API keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.store.database import Database
from activities.store.repository import DefinitionStore
from gateway.apikeys import create_key, revoke_key
from gateway.config import GatewayConfig
from gateway.webhooks import delivery_workflow_id
from tests.gateway.support import dumps, hmac_headers, hook_definition, running_gateway, standard_headers
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import eventually
from worker import build_worker

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
ACME_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
HMAC_SECRET = secrets.token_hex(20)
MAX_BODY = 64 * 1024


class Setup:
    def __init__(
        self, url: str, name: str, database: Database, client: Client, key: str, task_queue: str
    ) -> None:
        self.task_queue = task_queue
        self.url = url
        self.name = name
        self.database = database
        self.client = client
        self.key = key

    def hook(self, trigger: str = "in", tenant: str = "default", name: str | None = None) -> str:
        return f"{self.url}/hooks/{tenant}/{name or self.name}/{trigger}"

    async def runs(self) -> list[str]:
        return [
            execution.id async for execution in self.client.list_workflows(f"DefinitionName = '{self.name}'")
        ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def setup(
    temporal_env: WorkflowEnvironment, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    name = f"hooks-{uuid4().hex[:8]}"
    secrets_file = tmp_path_factory.mktemp("secrets") / "secrets.json"
    secrets_file.write_text(json.dumps({"acme": {"HOOK_KEY": ACME_SECRET, "GH_KEY": HMAC_SECRET + "x"}}))
    saved = {k: os.environ.get(k) for k in ("WFA_SECRET_HOOK_KEY", "WFA_SECRET_GH_KEY", "WFA_SECRETS_FILE")}
    os.environ.update(
        {
            "WFA_SECRET_HOOK_KEY": SECRET,
            "WFA_SECRET_GH_KEY": HMAC_SECRET,
            "WFA_SECRETS_FILE": str(secrets_file),
        }
    )
    database = Database(database_url)
    try:
        for tenant in ("default", "acme"):
            await DefinitionStore(database.session_factory, tenant).register(
                hook_definition(name, "HOOK_KEY", "GH_KEY"), "test"
            )
        key, _ = await create_key(database.session_factory, "default", "ci", "test")
        config = GatewayConfig(
            tenants=("default", "acme"),
            address=temporal_env.client.service_client.config.target_host,
            database_url=database_url,
            task_queue=f"tq-{uuid4()}",
            max_body_bytes=MAX_BODY,
        )
        async with running_gateway(config) as url:
            yield Setup(url, name, database, temporal_env.client, key, config.task_queue or "")
    finally:
        await database.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def test_health_readiness_and_docs(setup: Setup) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{setup.url}/healthz")).json() == {"status": "ok"}
        ready = await http.get(f"{setup.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"temporal": "ok", "database": "ok"}
        for path in ("/healthz", "/readyz"):  # load balancers probe with HEAD (it was 405)
            head = await http.head(f"{setup.url}{path}")
            assert head.status_code == 200, path
        # A slash too many is a 404: Starlette's 307 to the path without it wrote the request's
        # Host header into the Location, and resent a POST's body there (a probe).
        for method, path in (("GET", "/healthz/"), ("POST", f"{setup.hook().removeprefix(setup.url)}/")):
            answer = await http.request(method, f"{setup.url}{path}", headers={"Host": "evil.example"})
            assert (answer.status_code, answer.headers.get("location")) == (404, None), path
            assert "evil.example" not in answer.text
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FastAPI warns of duplicate operation ids (HEAD routes did)
            spec = (await http.get(f"{setup.url}/openapi.json")).json()
        assert "/hooks/{tenant}/{definition}/{trigger_id}" in spec["paths"]
        assert "/events" in spec["paths"]
        assert (await http.get(f"{setup.url}/docs")).status_code == 200


def _hostile_requests(setup: Setup) -> list[tuple[str, str, str, dict[str, Any], set[int]]]:
    """(category, method, url, httpx keyword arguments, accepted statuses)."""
    cases: list[tuple[str, str, str, dict[str, Any], set[int]]] = []
    body = dumps({"order": 1})
    hook, gh = setup.hook(), setup.hook("gh")

    def add(
        category: str,
        url: str,
        content: bytes,
        headers: dict[str, str],
        expect: set[int],
        method: str = "POST",
    ) -> None:
        cases.append((category, method, url, {"content": content, "headers": headers}, expect))

    for i in range(20):  # unsigned
        add("unsigned", hook, dumps({"i": i}), {"content-type": "application/json"}, {401})
    for i in range(10):
        add("unsigned-hmac", gh, dumps({"i": i}), {"content-type": "application/json"}, {401})
    for i in range(20):  # signed with a secret that is not the tenant's
        wrong = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        add("wrong-secret", hook, body, standard_headers(wrong, body, f"forged-{i}"), {401})
    for _ in range(10):
        add("wrong-secret-hmac", gh, body, hmac_headers(secrets.token_hex(20), body), {401})
    for i in range(10):  # the default tenant's signature sent to another tenant's trigger
        add("wrong-tenant", setup.hook(tenant="acme"), body, standard_headers(SECRET, body, f"wt-{i}"), {401})
    for _ in range(5):
        add(
            "wrong-tenant-hmac", setup.hook("gh", tenant="acme"), body, hmac_headers(HMAC_SECRET, body), {401}
        )
    for tenant in ("globex", "nope", "..", "a b", "%00"):  # tenants the gateway does not serve
        add(
            "unknown-tenant", setup.hook(tenant=tenant), body, standard_headers(SECRET, body, "x"), {400, 404}
        )
    for i in range(20):  # signature over another body
        signed = dumps({"amount": i})
        add(
            "tampered",
            hook,
            dumps({"amount": i + 1000}),
            standard_headers(SECRET, signed, f"tamper-{i}"),
            {401},
        )
    for i in range(10):
        add(
            "tampered-hmac",
            gh,
            dumps({"amount": i + 1000}),
            hmac_headers(HMAC_SECRET, dumps({"amount": i})),
            {401},
        )
    now = int(time.time())
    for i in range(10):  # outside the replay window (5 minutes)
        add(
            "old-timestamp",
            hook,
            body,
            standard_headers(SECRET, body, f"old-{i}", timestamp=now - 600 - i),
            {401},
        )
    for i in range(5):
        add(
            "future-timestamp",
            hook,
            body,
            standard_headers(SECRET, body, f"fut-{i}", timestamp=now + 600 + i),
            {401},
        )
    good = standard_headers(SECRET, body, "replay-me", timestamp=now - 3600)
    for _ in range(5):  # a captured delivery replayed an hour later
        add("replayed", hook, body, good, {401})
    bad_signatures = [
        "v1",
        "v1,",
        "v1,@@@",
        "v2," + base64.b64encode(b"x" * 32).decode(),
        "v1," + "A" * 5000,
        "v1,AAAA v1,BBBB",
        "v1,=",
        "v1,AAAA,BBBB",
        "v1 ,AAAA",
    ]
    for i, signature in enumerate(bad_signatures):
        headers = standard_headers(SECRET, body, f"badsig-{i}")
        headers["webhook-signature"] = signature
        add("malformed-signature", hook, body, headers, {400, 401})
    for i, stamp in enumerate(["abc", "1.5e9", "-1", "99999999999999999999", "", "0x10"]):
        headers = standard_headers(SECRET, body, f"badts-{i}")
        headers["webhook-timestamp"] = stamp
        add("malformed-timestamp", hook, body, headers, {401})
    for value in ["", "zz", "sha256=" + "g" * 64, "sha1=" + "a" * 40, "a" * 63, "sha256=" + "0" * 64]:
        headers = {"content-type": "application/json", "X-Signature-256": value}
        add("malformed-hmac", gh, body, headers, {401})
    headers = standard_headers(SECRET, body, "long-id-" + "x" * 300)
    add("malformed-id", hook, body, headers, {401})

    # Correctly signed bodies that are not acceptable JSON (the signature holds, the parser refuses).
    deep = b"[" * 200 + b"]" * 200
    deep_object = b'{"a":' * 100 + b"1" + b"}" * 100
    malformed = {
        "nan": (b'{"x": NaN}', {400}),
        "infinity": (b'{"x": Infinity}', {400}),
        "minus-infinity": (b'{"x": -Infinity}', {400}),
        "duplicate-keys": (b'{"a": 1, "a": 2}', {400}),
        "array": (b"[1, 2, 3]", {400}),
        "string": (b'"hello"', {400}),
        "number": (b"42", {400}),
        "null": (b"null", {400}),
        "truncated": (b'{"a": [1, 2', {400}),
        "trailing": (b'{"a": 1} {"b": 2}', {400}),
        "empty": (b"", {400}),
        "not-utf8": (b'{"a": "\xff\xfe"}', {400}),
        "single-quotes": (b"{'a': 1}", {400}),
        "comment": (b'{"a": 1 /* x */}', {400}),
        "deep-array": (deep, {413}),
        "deep-object": (deep_object, {413}),
        "huge-int": (b'{"n": ' + b"9" * 5000 + b"}", {413}),
        "huge-float": (b'{"n": 1e999}', {413}),
        "huge-negative-float": (b'{"n": -1e999}', {413}),
        "underflowing-float": (b'{"n": 1e-999}', {413}),
        "underflowing-negative-float": (b'{"n": -0.5e-400}', {413}),
        "long-fraction": (b'{"n": 0.' + b"1" * 500 + b"}", {413}),
        "bare-word": (b"hello", {400}),
        "control-char": (b'{"a": "\x01"}', {400}),
        "lone-surrogate-ok-but-dup": (b'{"\\ud800": 1, "\\ud800": 2}', {400}),
        "bom": (b'\xef\xbb\xbf{"a": 1}', {400}),
    }
    for label, (content, expect) in malformed.items():
        add(f"json-{label}", hook, content, standard_headers(SECRET, content, f"json-{label}"), expect)
        add(f"json-hmac-{label}", gh, content, hmac_headers(HMAC_SECRET, content), expect)

    big = dumps({"blob": "x" * (MAX_BODY + 10)})
    for i in range(5):  # declared too long
        add("oversized", hook, big, standard_headers(SECRET, big, f"big-{i}"), {413})
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        for url in (hook, gh):
            add("wrong-method", url, body, standard_headers(SECRET, body, "m"), {405}, method=method)
    add("wrong-method", f"{setup.url}/events", b"", {}, {405}, method="GET")
    add("wrong-method", f"{setup.url}/healthz", b"", {}, {405}, method="POST")
    for i, ctype in enumerate(
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin-1",
            "application/xml",
            "application/jsonx",
            "json",
            "*/*",
        ]
    ):
        headers = standard_headers(SECRET, body, f"ct-{i}")
        headers["content-type"] = ctype
        add("wrong-content-type", hook, body, headers, {415})
    headers = standard_headers(SECRET, body, "ct-none")
    del headers["content-type"]
    add("wrong-content-type", hook, body, headers, {415})
    for path in (
        "/hooks/default",
        f"/hooks/default/{setup.name}",
        f"/hooks/default/{setup.name}/in/extra",
        f"/hooks/default/{setup.name}/nope",
        "/hooks/default/no-such-definition/in",
        f"/hooks/default/{setup.name}@1/in",
        "/hooks/default/UPPER/in",
        "/hooks/default/%2e%2e/in",
        "/admin",
        "/hooks/default/" + "a" * 300 + "/in",
    ):
        add("unknown-path", setup.url + path, body, standard_headers(SECRET, body, "p"), {400, 404, 405})

    # /events: credentials and bodies
    event = dumps({"type": "order.paid", "key": "o-1", "data": {}, "id": "e-1"})
    for auth in [
        "",
        "Bearer",
        "Bearer  x",
        "Basic dXNlcjpwYXNz",
        "Bearer wfa_short",
        "Bearer " + "wfa_" + "A" * 43,
        "Bearer " + setup.key + "x",
        "Bearer " + setup.key[:-1] + ("A" if setup.key[-1] != "A" else "B"),
        "bearer" + setup.key,
        "Token " + setup.key,
    ]:
        headers = {"content-type": "application/json"}
        if auth:
            headers["authorization"] = auth
        add("events-auth", f"{setup.url}/events", event, headers, {401})
    auth = {"authorization": f"Bearer {setup.key}"}
    bad_events = [
        ({"type": "order.paid", "key": "o-1", "data": {}}, 422),
        ({"type": "bad type!", "key": "o-1", "data": {}, "id": "e"}, 422),
        ({"type": "order.paid", "key": "", "data": {}, "id": "e"}, 422),
        ({"type": "order.paid", "key": "o-1", "data": [], "id": "e"}, 422),
        ({"type": "order.paid", "key": 5, "data": {}, "id": "e"}, 422),
        ({"type": "order.paid", "key": "o", "data": {}, "id": "e", "tenant": "acme"}, 422),
        ({"type": "order.paid", "key": "o", "data": {}, "id": "has space"}, 422),
        ([1], 400),
    ]
    for payload, status in bad_events:
        add(
            "events-invalid",
            f"{setup.url}/events",
            dumps(payload),
            {"content-type": "application/json", **auth},
            {status},
        )
    add(
        "events-nan",
        f"{setup.url}/events",
        b'{"type": NaN}',
        {"content-type": "application/json", **auth},
        {400},
    )
    add("events-content-type", f"{setup.url}/events", event, {"content-type": "text/plain", **auth}, {415})
    return cases


async def _raw(url: str, request: bytes) -> int | None:
    """Sends raw bytes over HTTP/1.1; the status of the answer, None if the server just closed."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=30)
    except (ConnectionError, TimeoutError):
        return None
    finally:
        writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def _streamed(url: str, path: str, chunks: int, msg_id: str) -> int | None:
    """POSTs ``chunks`` chunks of 4 KiB (Transfer-Encoding: chunked) while reading the answer; the
    status, as soon as the server answers (it need not read the rest)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    headers = standard_headers(SECRET, b"", msg_id)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    answer = asyncio.create_task(asyncio.wait_for(reader.readline(), timeout=60))
    try:
        writer.write(head.encode())
        for _ in range(chunks):
            if answer.done():
                break
            writer.write(b"1000\r\n" + b" " * 4096 + b"\r\n")
            await writer.drain()
        else:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except ConnectionError:
        pass
    try:
        line = await answer
    except (ConnectionError, TimeoutError):
        return None
    finally:
        writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def test_hostile_requests_give_no_5xx_and_start_no_run(setup: Setup) -> None:
    cases = _hostile_requests(setup)
    statuses: Counter[int] = Counter()
    wrong: list[str] = []
    async with httpx.AsyncClient(timeout=60) as http:
        for category, method, url, kwargs, expect in cases:
            response = await http.request(method, url, **kwargs)
            statuses[response.status_code] += 1
            if response.status_code not in expect:
                wrong.append(f"{category} {method} {url}: {response.status_code} {response.text[:200]}")
            body = response.json()
            assert set(body) >= {"error", "detail"}, (category, body)
            assert "Traceback" not in response.text

    for i in range(5):  # 160 KiB streamed in chunks without a Content-Length
        status = await _streamed(setup.url, f"/hooks/default/{setup.name}/in", 40, f"stream-{i}")
        statuses[status or 0] += 1
        if status != 413:
            wrong.append(f"streamed oversized: {status}")

    raw = [
        b"GARBAGE\r\n\r\n",
        b"POST /hooks/default/x/in HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /hooks/default/x/in HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /hooks/default/x/in HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /hooks/default/x/in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde",
        b"POST /hooks/default/x/in HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ]
    raw_statuses = [await _raw(setup.url, request) for request in raw]
    # A key and then a non-breaking space (Latin-1 0xA0) was taken as the key (a probe).
    spaced = (
        f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {setup.key}\xa0\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    ).encode("latin-1")
    assert await _raw(setup.url, spaced) == 401
    for status in raw_statuses:
        if status is not None:
            statuses[status] += 1

    total = len(cases) + 5 + len(raw)
    assert total >= 200
    assert not wrong, "\n".join(wrong)
    assert not [s for s in statuses if s >= 500], statuses
    assert not [s for s in statuses if s < 400], statuses
    print(f"hostile: {total} requests, statuses {dict(sorted(statuses.items()))}, raw {raw_statuses}")

    # A valid delivery after the hostile ones: once it is visible, so would any earlier run be.
    body = dumps({"after": "hostile"})
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            setup.hook(), content=body, headers=standard_headers(SECRET, body, "after-hostile")
        )
    assert response.status_code == 202, response.text
    expected = response.json()["workflow_id"]
    runs = await eventually(setup.runs, lambda ids: expected in ids, timeout=60, what="the valid run listed")
    assert runs == [expected], f"runs other than the valid delivery's: {runs}"


async def test_signed_delivery_starts_one_run_and_redelivery_none(setup: Setup) -> None:
    name = f"{setup.name}-pos"
    store = DefinitionStore(setup.database.session_factory, "default")
    await store.register(hook_definition(name, "HOOK_KEY", "GH_KEY"), "test")

    async def runs() -> list[str]:
        return [e.id async for e in setup.client.list_workflows(f"DefinitionName = '{name}'")]

    body = dumps({"customer": "ann", "note": "${secret:HOOK_KEY}"})
    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.post(
            setup.hook(name=name), content=body, headers=standard_headers(SECRET, body, "msg_2Yx")
        )
        assert first.status_code == 202, first.text
        assert first.json()["duplicate"] is False
        workflow_id = first.json()["workflow_id"]
        assert workflow_id == delivery_workflow_id("default", name, "in", "msg_2Yx")
        assert workflow_id.startswith(f"webhook-default-{name}-in-msg_2Yx-")
        # Redelivered (a fresh timestamp and signature, the same webhook-id): nothing new.
        again = await http.post(
            setup.hook(name=name), content=body, headers=standard_headers(SECRET, body, "msg_2Yx")
        )
        assert again.status_code == 200, again.text
        assert again.json() == {
            "workflow_id": workflow_id,
            "run_id": first.json()["run_id"],
            "duplicate": True,
        }
        # Plain HMAC: the same signed body is the same delivery.
        gh_body = dumps({"ref": "main"})
        hmac_first = await http.post(
            setup.hook("gh", name=name), content=gh_body, headers=hmac_headers(HMAC_SECRET, gh_body)
        )
        assert hmac_first.status_code == 202, hmac_first.text
        hmac_again = await http.post(
            setup.hook("gh", name=name), content=gh_body, headers=hmac_headers(HMAC_SECRET, gh_body)
        )
        assert hmac_again.status_code == 200
        assert hmac_again.json()["duplicate"] is True

    # The first run's input is the body as it came: the run makes it inert where it starts (not
    # the gateway too: escaped twice, it reached the actions with a '$' more).
    handle = setup.client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert json.loads(started.input.payloads[0].data)["input"]["note"] == "${secret:HOOK_KEY}"
    ids = await eventually(runs, lambda ids: len(ids) >= 2, timeout=60, what="both runs listed")
    assert sorted(ids) == sorted([workflow_id, hmac_first.json()["workflow_id"]])

    # Terminated, then redelivered: still no new run (REJECT_DUPLICATE).
    await handle.terminate("test")
    async with httpx.AsyncClient(timeout=60) as http:
        late = await http.post(
            setup.hook(name=name), content=body, headers=standard_headers(SECRET, body, "msg_2Yx")
        )
    assert late.status_code == 200
    assert late.json()["duplicate"] is True
    assert len(await runs()) == 2


async def test_definitions_and_triggers_holding_dashes_get_runs_of_their_own(setup: Setup) -> None:
    """Found by an attacker's probe: the workflow id joined tenant, definition, trigger and delivery
    id with "-", so definition ``cX`` trigger ``form-a`` and definition ``cX-form`` trigger ``a``
    with the same webhook-id made one id: the second delivery was answered ``duplicate`` with the
    other definition's run, and no run of its own started."""
    first = f"c{uuid4().hex[:6]}"
    second = f"{first}-form"
    store = DefinitionStore(setup.database.session_factory, "default")
    for name, trigger in ((first, "form-a"), (second, "a")):
        await store.register(
            {
                "name": name,
                "steps": [{"id": "wait", "type": "delay", "duration": "1h"}],
                "triggers": [{"type": "webhook", "id": trigger, "secret": "HOOK_KEY"}],
            },
            "test",
        )
    answers = []
    async with httpx.AsyncClient(timeout=60) as http:
        for name, trigger in ((first, "form-a"), (second, "a")):
            body = dumps({"order": f"for {name}"})
            answer = await http.post(
                setup.hook(trigger, name=name), content=body, headers=standard_headers(SECRET, body, "msg1")
            )
            assert answer.status_code == 202, answer.text
            assert answer.json()["duplicate"] is False
            answers.append(answer.json())
    assert answers[0]["workflow_id"] != answers[1]["workflow_id"]
    assert answers[0]["run_id"] != answers[1]["run_id"]
    for answer, name in zip(answers, (first, second), strict=True):
        history = await setup.client.get_workflow_handle(answer["workflow_id"]).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        assert json.loads(started.input.payloads[0].data)["input"] == {"order": f"for {name}"}


async def test_unreadable_timestamps_and_text_are_4xx_and_start_nothing(setup: Setup) -> None:
    """Found by an attacker's probe, each answered 500: a ``webhook-timestamp`` of a raw byte that
    Latin-1 reads as a digit ('²'), a signed body with a lone surrogate escape (the run's start
    could not write it) or a NUL character (the client refuses it, and the handler caught only the
    schema's refusal); a lone surrogate in a key was accepted and reached the run replaced
    ("\\ufffd\\ufffd\\ufffd"). Data arrives as it was sent, or is refused naming its path."""
    name = f"{setup.name}-unreadable"
    await DefinitionStore(setup.database.session_factory, "default").register(
        hook_definition(name, "HOOK_KEY", "GH_KEY"), "test"
    )
    hook, gh = setup.hook(name=name), setup.hook("gh", name=name)
    async with httpx.AsyncClient(timeout=60) as http:
        body = dumps({"a": 1})
        for stamp in (b"\xb2", b"\xb9\xb2\xb3", b"1\xb2"):
            headers: dict[str, str | bytes] = {
                **standard_headers(SECRET, body, "stamp"),
                "webhook-timestamp": stamp,
            }
            answer = await http.post(hook, content=body, headers=headers)
            assert answer.status_code == 401, (stamp, answer.text)
            assert answer.json()["error"] == "invalid_signature"
        for raw, path in [
            (b'{"a": "\\ud800"}', "$.a"),
            (b'{"a": [{"b": "x\\udfff"}]}', "$.a[0].b"),
            (b'{"\\udc80": 1}', '$["\\udc80"]'),
        ]:
            for url, signed in (
                (hook, standard_headers(SECRET, raw, uuid4().hex)),
                (gh, hmac_headers(HMAC_SECRET, raw)),
            ):
                answer = await http.post(url, content=raw, headers=signed)
                assert answer.status_code == 400, (raw, answer.text)
                assert answer.json()["error"] == "invalid_json"
                assert f"without its pair) at {path}:" in answer.json()["detail"]
        for raw, path in [(b'{"a": "\\u0000x"}', "$.a"), (b'{"k": {"\\u0000": 1}}', "$.k")]:
            answer = await http.post(hook, content=raw, headers=standard_headers(SECRET, raw, uuid4().hex))
            assert answer.status_code == 422, (raw, answer.text)
            assert answer.json()["error"] == "invalid_input"
            assert "NUL character" in answer.json()["detail"]
            assert f"at {path}" in answer.json()["detail"]
        # A pair of escapes is one character: it arrives as sent.
        paired = b'{"\\ud83d\\ude00": "\\ud83d\\ude00 \\u00e9"}'
        accepted = await http.post(hook, content=paired, headers=standard_headers(SECRET, paired, "paired"))
        assert accepted.status_code == 202, accepted.text
    history = await setup.client.get_workflow_handle(accepted.json()["workflow_id"]).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert json.loads(started.input.payloads[0].data)["input"] == {"\U0001f600": "\U0001f600 \xe9"}

    async def runs() -> list[str]:
        return [e.id async for e in setup.client.list_workflows(f"DefinitionName = '{name}'")]

    expected = accepted.json()["workflow_id"]
    assert await eventually(runs, lambda ids: expected in ids, timeout=60, what="the run") == [expected]


async def _register_event_trigger(setup: Setup, name: str) -> str:
    """Registers ``name`` (a run waiting an hour) for tenant default with an ``event`` trigger on a
    type of its own; returns the type."""
    event_type = f"order.paid.{uuid4().hex[:6]}"
    await DefinitionStore(setup.database.session_factory, "default").register(
        {
            "name": name,
            "steps": [{"id": "wait", "type": "delay", "duration": "1h"}],
            "triggers": [{"type": "event", "event": event_type}],
        },
        "test",
    )
    return event_type


async def test_events_require_a_valid_api_key_and_start_event_triggers(setup: Setup) -> None:
    name = f"{setup.name}-ev"
    event_type = await _register_event_trigger(setup, name)
    event = dumps({"type": event_type, "key": "o-1", "data": {"x": "${secret:HOOK_KEY}"}, "id": "e-1"})
    headers = {"content-type": "application/json", "authorization": f"Bearer {setup.key}"}
    # The event mailbox is a workflow: a worker on the gateway's queue runs it.
    async with (
        httpx.AsyncClient() as action_http,
        build_worker(setup.client, setup.task_queue, action_http, graceful_shutdown_timeout=timedelta(0)),
        httpx.AsyncClient(timeout=120) as http,
    ):
        accepted = await http.post(f"{setup.url}/events", content=event, headers=headers)
        assert accepted.status_code == 202, accepted.text
        result = accepted.json()["result"]
        assert accepted.json()["tenant"] == "default"
        assert len(result["started"]) == 1
        again = await http.post(f"{setup.url}/events", content=event, headers=headers)
        assert again.status_code == 202, again.text
        assert again.json()["result"]["started"] == []  # the same event id starts nothing new

        key, info = await create_key(setup.database.session_factory, "acme", "tmp", "test")
        acme = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        bad = await http.post(f"{setup.url}/events", content=b"{}", headers=acme)
        assert bad.status_code == 422  # authenticated as acme, then validated
        assert {p["path"] for p in bad.json()["problems"]} == {"$.type", "$.key", "$.id"}
        # Two Authorization headers: the first one was taken (a probe: whichever a proxy put first).
        for pair in ((key, "bogus"), ("bogus", key), (key, setup.key)):
            two = [("content-type", "application/json"), *(("authorization", f"Bearer {k}") for k in pair)]
            ambiguous = await http.post(f"{setup.url}/events", content=b"{}", headers=two)
            assert ambiguous.status_code == 401, ambiguous.text
            assert "one Authorization header" in ambiguous.json()["detail"]
        assert await revoke_key(setup.database.session_factory, "acme", info.id)
        revoked = await http.post(f"{setup.url}/events", content=b"{}", headers=acme)
        assert revoked.status_code == 401

    async def runs() -> list[str]:
        return [e.id async for e in setup.client.list_workflows(f"DefinitionName = '{name}'")]

    assert (
        await eventually(runs, lambda ids: len(ids) >= 1, timeout=60, what="the trigger's run")
        == result["started"]
    )


async def test_an_event_republished_after_its_run_ended_starts_nothing(setup: Setup) -> None:
    """Found by an attacker's probe: the trigger's run was started with the default reuse policy, so
    once it was terminated (or failed) the same event id, published again, was answered
    ``duplicate`` and yet started a second run under the same workflow id. Data that is no UTF-8
    text (a lone surrogate escape) was a 500; it is refused naming its path, as a NUL is, in the
    data or the key."""
    name = f"{setup.name}-again"
    event_type = await _register_event_trigger(setup, name)
    headers = {"content-type": "application/json", "authorization": f"Bearer {setup.key}"}
    event = dumps({"type": event_type, "key": "o-1", "data": {"n": 1}, "id": "same-id"})
    async with (
        httpx.AsyncClient() as action_http,
        build_worker(setup.client, setup.task_queue, action_http, graceful_shutdown_timeout=timedelta(0)),
        httpx.AsyncClient(timeout=120) as http,
    ):
        first = await http.post(f"{setup.url}/events", content=event, headers=headers)
        assert first.status_code == 202, first.text
        [workflow_id] = first.json()["result"]["started"]
        handle = setup.client.get_workflow_handle(workflow_id)
        run_id = (await handle.describe()).run_id
        await handle.terminate("test")
        again = await http.post(f"{setup.url}/events", content=event, headers=headers)
        assert again.status_code == 202, again.text
        result = again.json()["result"]
        assert result["duplicate"] is True
        assert result["started"] == []
        assert result["existing"] == [workflow_id]
        described = await handle.describe()  # the latest run of that id: still the terminated one
        assert described.run_id == run_id
        assert described.status == WorkflowExecutionStatus.TERMINATED

        for key, raw, status, error, said in [
            (b"o-2", b'{"x": "\\ud800"}', 400, "invalid_json", "without its pair) at $.data.x:"),
            (b"o-2", b'{"\\udc80": 1}', 400, "invalid_json", 'without its pair) at $.data["\\udc80"]:'),
            (b"o-2", b'{"x": "\\u0000"}', 422, "invalid_event", "NUL character"),
            # Found by a review: a NUL in the key was taken.
            (b"o-\\u0000", b"{}", 422, "invalid_event", "event key has a NUL character"),
        ]:
            body = b'{"type": "%s", "key": "%s", "id": "%s", "data": %s}' % (
                event_type.encode(),
                key,
                uuid4().hex.encode(),
                raw,
            )
            refused = await http.post(f"{setup.url}/events", content=body, headers=headers)
            assert refused.status_code == status, (raw, refused.text)
            assert refused.json()["error"] == error
            assert said in refused.json()["detail"]

    async def runs() -> list[str]:
        return [e.run_id async for e in setup.client.list_workflows(f"DefinitionName = '{name}'")]

    assert await eventually(runs, lambda ids: run_id in ids, timeout=60, what="the run") == [run_id]


async def test_data_through_the_gateway_reaches_the_actions_as_its_text(
    setup: Setup, http_server: RecordingServer
) -> None:
    """The victim: an honest sender whose webhook body and event data hold text that looks like a
    secret reference (the tenant's webhook secret's own name). Each action must receive exactly
    the text sent, never the secret: a run started by a webhook, a run started by an event trigger,
    and a run that takes the event from its mailbox (published before the run waits: the lookback)."""
    text = "a ${secret:HOOK_KEY} b $${secret:HOOK_KEY} c"
    event_type = f"text.sent.{uuid4().hex[:6]}"
    http_server.route("POST", "/text", [(200, {}, {"ok": True})] * 3)
    post = {
        "id": "post",
        "type": "task",
        "action": "http",
        "input": {
            "url": f"{http_server.url}/text",
            "method": "POST",
            "json": {"how": "{{ input.how | default('event') }}", "note": "{{ input.note }}"},
        },
    }
    store = DefinitionStore(setup.database.session_factory, "default")
    sender, waiter = f"{setup.name}-text", f"{setup.name}-waiter"
    await store.register(
        {
            "name": sender,
            "steps": [post],
            "triggers": [
                {"type": "webhook", "id": "in", "secret": "HOOK_KEY", "replay_window": "5m"},
                {"type": "event", "event": event_type},
            ],
        },
        "test",
    )
    taken = {
        **post,
        "input": {
            **post["input"],
            "json": {"how": "mailbox", "note": "{{ steps.answer.output.data.note }}"},
        },
    }
    await store.register(
        {
            "name": waiter,
            "steps": [
                {
                    "id": "answer",
                    "type": "wait_for_event",
                    "event": event_type,
                    "key": "{{ input.key }}",
                    "fields": [{"name": "note", "type": "string"}],
                    "lookback": "1h",
                    "timeout": "2m",
                },
                taken,
            ],
            "triggers": [{"type": "webhook", "id": "in", "secret": "HOOK_KEY", "replay_window": "5m"}],
        },
        "test",
    )
    headers = {"content-type": "application/json", "authorization": f"Bearer {setup.key}"}
    async with (
        httpx.AsyncClient() as action_http,
        build_worker(setup.client, setup.task_queue, action_http, graceful_shutdown_timeout=timedelta(0)),
        httpx.AsyncClient(timeout=120) as http,
    ):
        event = dumps({"type": event_type, "key": "k-1", "data": {"note": text}, "id": uuid4().hex})
        published = await http.post(f"{setup.url}/events", content=event, headers=headers)
        assert published.status_code == 202, published.text
        [by_event] = published.json()["result"]["started"]
        body = dumps({"how": "webhook", "note": text})
        hooked = await http.post(
            setup.hook(name=sender), content=body, headers=standard_headers(SECRET, body, uuid4().hex)
        )
        assert hooked.status_code == 202, hooked.text
        body = dumps({"key": "k-1", "note": "unused"})
        waiting = await http.post(
            setup.hook(name=waiter), content=body, headers=standard_headers(SECRET, body, uuid4().hex)
        )
        assert waiting.status_code == 202, waiting.text
        for workflow_id in (by_event, hooked.json()["workflow_id"], waiting.json()["workflow_id"]):
            result = await setup.client.get_workflow_handle(workflow_id).result()
            assert result["state"] == "completed", result
    got = {
        r.json["how"]: r.json["note"] for r in http_server.requests(path="/text") if isinstance(r.json, dict)
    }
    assert got == {"event": text, "webhook": text, "mailbox": text}
    assert not any(SECRET.encode() in r.body for r in http_server.requests(path="/text"))


async def test_keys_are_stored_hashed(setup: Setup) -> None:
    from sqlalchemy import text

    from gateway.apikeys import hash_key

    async with setup.database.engine.connect() as conn:
        stored = [tuple(row) for row in await conn.execute(text("SELECT key_hash, tenant FROM api_keys"))]
    assert (hash_key(setup.key), "default") in stored
    assert not any(setup.key in str(row) for row in stored)


async def test_input_its_schema_refuses_is_a_422_with_the_path(setup: Setup) -> None:
    name = f"{setup.name}-typed"
    definition = hook_definition(name, "HOOK_KEY", "GH_KEY")
    definition["input_schema"] = {
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string"}, "items": {"type": "array", "items": {"type": "integer"}}},
    }
    await DefinitionStore(setup.database.session_factory, "default").register(definition, "test")
    body = dumps({"email": "ann@example.com", "items": [1, "two"]})
    async with httpx.AsyncClient(timeout=60) as http:
        refused = await http.post(
            setup.hook(name=name), content=body, headers=standard_headers(SECRET, body, "t-1")
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "invalid_input"
        assert [p["path"] for p in refused.json()["problems"]] == ["$.items[1]"]
        good = dumps({"email": "ann@example.com", "items": [1, 2]})
        accepted = await http.post(
            setup.hook(name=name), content=good, headers=standard_headers(SECRET, good, "t-2")
        )
        assert accepted.status_code == 202, accepted.text

    async def runs() -> list[str]:
        return [e.id async for e in setup.client.list_workflows(f"DefinitionName = '{name}'")]

    assert await eventually(runs, lambda ids: len(ids) >= 1, timeout=60, what="the valid run") == [
        accepted.json()["workflow_id"]
    ]


async def test_a_schema_that_makes_the_check_slow_holds_neither_the_gateway_nor_a_slot(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker: a tenant's ``input_schema`` with ``uniqueItems`` (every pair of items
    compared) and a webhook body of 5,000 objects, about 30 s of CPU in jsonschema. Checked on the
    gateway's event loop it held every tenant's request that long. The check runs in a process of
    its own, stopped at ``WFA_INPUT_CHECK_DEADLINE``: meanwhile another tenant's delivery is
    served, and the slow one is refused (422) naming the deadline; nothing starts."""
    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "2")
    name = f"{setup.name}-uniq"
    definition = hook_definition(name, "HOOK_KEY", "GH_KEY")
    definition["input_schema"] = {
        "type": "object",
        "properties": {"rows": {"type": "array", "uniqueItems": True}},
    }
    await DefinitionStore(setup.database.session_factory, "acme").register(definition, "test")
    typed = f"{setup.name}-calm"
    calm_definition = hook_definition(typed, "HOOK_KEY", "GH_KEY")
    calm_definition["input_schema"] = {"type": "object", "required": ["email"]}
    await DefinitionStore(setup.database.session_factory, "default").register(calm_definition, "test")
    body = dumps({"rows": [{"i": i} for i in range(5000)]})
    assert len(body) < MAX_BODY
    calm = dumps({"email": "ann@example.com"})
    async with httpx.AsyncClient(timeout=300) as http:
        slow = asyncio.create_task(
            http.post(
                setup.hook(tenant="acme", name=name),
                content=body,
                headers=standard_headers(ACME_SECRET, body, "slow-1"),
            )
        )
        await asyncio.sleep(0.5)  # the slow delivery is being checked
        served = await http.post(
            setup.hook(name=typed), content=calm, headers=standard_headers(SECRET, calm, "calm-1")
        )
        assert served.status_code == 202, served.text
        assert not slow.done(), "the other tenant's delivery waited for the slow check to end"
        refused = await slow
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "invalid_input"
    assert "took more than 2 s of CPU" in refused.json()["detail"], refused.json()

    async def runs(of: str) -> list[str]:
        return [e.id async for e in setup.client.list_workflows(f"DefinitionName = '{of}'")]

    assert await eventually(
        lambda: runs(typed), lambda ids: len(ids) >= 1, timeout=60, what="the calm run"
    ) == [served.json()["workflow_id"]]
    assert await runs(name) == []


def test_an_unknown_interpreter_generation_stops_the_gateway_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``WFA_ENGINE_LEVEL`` is checked when the gateway starts (exit 2, naming it), not when a
    tenant's first request makes its client."""
    from gateway.config import GatewayConfig
    from gateway.serve import serve

    monkeypatch.setenv("WFA_ENGINE_LEVEL", "99")

    def started(*args: object, **kwargs: object) -> None:
        pytest.fail("the gateway started serving with an unknown WFA_ENGINE_LEVEL")

    monkeypatch.setattr("uvicorn.run", started)  # a regression fails here instead of serving for ever
    assert serve(config=GatewayConfig.from_env({})) == 2
    err = capsys.readouterr().err
    assert "WFA_ENGINE_LEVEL" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"WFA_PAYLOAD_STORE_RUN_INPUT": "bogus"}, "WFA_PAYLOAD_STORE_RUN_INPUT"),
        ({"WFA_PAYLOAD_STORE_RUN_INPUT": "always"}, "WFA_PAYLOAD_STORE is not set"),
        ({"WFA_PAYLOAD_STORE": "bogus"}, "WFA_PAYLOAD_STORE"),
        (
            {"WFA_PAYLOAD_STORE": "fs:/tmp/x", "WFA_PAYLOAD_STORE_THRESHOLD": "abc"},
            "WFA_PAYLOAD_STORE_THRESHOLD",
        ),
        (
            {"WFA_PAYLOAD_STORE": "postgres:postgresql://u:p@h:notaport/db"},
            "WFA_PAYLOAD_STORE: not a database URL",
        ),
        ({"TEMPORAL_TLS": "off"}, "TEMPORAL_TLS='off' turns TLS on"),
    ],
    ids=[
        "run-input-unknown",
        "run-input-always-without-store",
        "store-unknown",
        "threshold",
        "store-url",
        "tls",
    ],
)
def test_bad_payload_settings_stop_the_gateway_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: dict[str, str], named: str
) -> None:
    """The payload store's settings are checked when the gateway starts (exit 2, naming
    the variable), as the worker and ``wfa`` check them, not when a tenant's first request makes
    its client (found by a review: the gateway served with any of these and failed later)."""
    from gateway.config import GatewayConfig
    from gateway.serve import serve

    for variable in (
        "WFA_PAYLOAD_STORE",
        "WFA_PAYLOAD_STORE_RUN_INPUT",
        "WFA_PAYLOAD_KEYS",
        "WFA_CODEC_TOKENS",
    ):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in settings.items():
        monkeypatch.setenv(variable, value)

    def started(*args: object, **kwargs: object) -> None:
        pytest.fail(f"the gateway started serving with {settings}")

    monkeypatch.setattr("uvicorn.run", started)
    assert serve(config=GatewayConfig.from_env({})) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "Traceback" not in err


def test_a_malformed_input_check_setting_stops_the_gateway_at_start() -> None:
    from gateway.config import GatewayConfigError

    with pytest.raises(GatewayConfigError, match="WFA_INPUT_CHECK_DEADLINE"):
        GatewayConfig.from_env({"WFA_INPUT_CHECK_DEADLINE": "60"})
    with pytest.raises(GatewayConfigError, match="WFA_INPUT_CHECK_SLOTS"):
        GatewayConfig.from_env({"WFA_INPUT_CHECK_SLOTS": "many"})
