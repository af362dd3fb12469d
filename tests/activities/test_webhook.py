"""The ``webhook`` action: a loopback receiver verifies each delivery with the ``standardwebhooks``
package exactly as a receiver would (and refuses a tampered body); a retried delivery carries the
same ``webhook-id``."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.outbound import OutboundPolicy, build_http_client
from activities.secrets import Secret, configure_secret_store
from activities.webhook import WebhookActions
from interpreter.actions import ActionRequest, ActionResult
from interpreter.state import RunState
from tests.helpers.http_server import RecordedRequest, RecordingServer, Response
from tests.workflows.support import definition, record, start, unique
from worker import build_worker

SECRET = "whsec_" + base64.b64encode(b"receiver-shared-key-0123456789ab").decode()
KEY = "order-SO-1/run-1/notify_partner"


class Receiver:
    """A receiver that verifies the signature and answers 401 when it does not hold."""

    def __init__(self, server: RecordingServer, secret: str = SECRET) -> None:
        self.webhook = Webhook(secret)
        self.verified: list[Any] = []
        self.refused: list[str] = []
        self.fail_next: list[Response] = []
        server.route("POST", "/hooks/orders", self)

    def __call__(self, request: RecordedRequest) -> Response:
        try:
            payload = self.webhook.verify(request.body, request.headers)
        except WebhookVerificationError as err:
            self.refused.append(str(err))
            return 401, {}, {"error": "bad signature"}
        self.verified.append(payload)
        if self.fail_next:
            return self.fail_next.pop(0)
        return 200, {}, {"received": request.headers["webhook-id"]}


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as srv:
        yield srv


@pytest.fixture
def tenant_secrets() -> Iterator[dict[str, dict[str, Secret]]]:
    tenants: dict[str, dict[str, Secret]] = {"default": {"WEBHOOK_SECRET": Secret(SECRET)}}

    class _Store:
        def get(self, tenant: str, name: str) -> Secret | None:
            return tenants.get(tenant, {}).get(name)

    configure_secret_store(_Store())
    yield tenants
    configure_secret_store(None)


@pytest_asyncio.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(OutboundPolicy.loopback()) as client:
        yield client


async def post(client: httpx.AsyncClient, data: dict[str, Any], *, key: str = KEY) -> ActionResult:
    request = ActionRequest(step_id="notify_partner", idempotency_key=key, input=data)
    return await ActivityEnvironment().run(WebhookActions(client).webhook, request)


async def post_error(client: httpx.AsyncClient, data: dict[str, Any], **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await post(client, data, **kwargs)
    return info.value


PAYLOAD = {"type": "order.shipped", "order": {"id": "SO-1", "note": "<b>fragile</b> ünïcode"}}


async def test_the_receiver_verifies_the_signature_with_standardwebhooks(
    server: RecordingServer, tenant_secrets: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    receiver = Receiver(server)
    result = await post(http_client, {"url": f"{server.url}/hooks/orders", "payload": PAYLOAD})

    assert receiver.refused == []
    assert receiver.verified == [PAYLOAD]
    assert result.output == {"status_code": 200, "webhook_id": KEY, "body": {"received": KEY}}
    (request,) = server.requests("POST")
    assert request.headers["webhook-id"] == KEY
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["webhook-timestamp"].isdigit()
    assert request.headers["content-type"] == "application/json"

    # The same bytes with one character changed, or signed with another key: refused.
    tampered = request.body.replace(b"SO-1", b"SO-2")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, request.headers)
    other = "whsec_" + base64.b64encode(b"another-key-of-someone-else-1234").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.body, request.headers)
    assert json.loads(request.body) == PAYLOAD


async def test_a_retry_carries_the_same_webhook_id_with_a_fresh_signature(
    server: RecordingServer, tenant_secrets: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    receiver = Receiver(server)
    receiver.fail_next[:] = [(503, {}, {"error": "busy"})]
    data = {"url": f"{server.url}/hooks/orders", "payload": PAYLOAD}
    error = await post_error(http_client, data)
    assert (error.type, error.non_retryable) == ("WebhookServerError", False)
    await post(http_client, data)  # the retry of the same step execution
    first, second = server.requests("POST")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == KEY
    assert receiver.verified == [PAYLOAD, PAYLOAD]
    # A receiver deduplicating by webhook-id applies the event once.
    assert len({r.headers["webhook-id"] for r in server.requests("POST")}) == 1


async def test_failures(
    server: RecordingServer, tenant_secrets: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    Receiver(server, secret="whsec_" + base64.b64encode(b"not-the-tenants-key-000000000000").decode())
    data = {"url": f"{server.url}/hooks/orders", "payload": PAYLOAD}
    error = await post_error(http_client, data)
    assert (error.type, error.non_retryable) == ("WebhookAuthenticationFailed", True)

    server.route("POST", "/gone", [(410, {}, {"error": "endpoint disabled"})])
    error = await post_error(http_client, {**data, "url": f"{server.url}/gone"})
    assert (error.type, error.non_retryable) == ("WebhookRejected", True)
    assert "endpoint disabled" in error.message

    async with build_http_client(OutboundPolicy()) as strict:
        error = await post_error(strict, data)
    assert (error.type, error.non_retryable) == ("OutboundRefused", True)

    tenant_secrets["default"]["WEBHOOK_SECRET"] = Secret("not base64 at all!")
    error = await post_error(http_client, data)
    assert (error.type, error.non_retryable) == ("WebhookSecretInvalid", True)

    tenant_secrets["default"]["WEBHOOK_SECRET"] = Secret(SECRET, ("partner.example",))
    error = await post_error(http_client, data)
    assert error.type == "SecretHostRefused"

    error = await post_error(http_client, {**data, "secret": "MISSING_SECRET"})
    assert (error.type, error.non_retryable) == ("SecretNotFound", True)
    assert SECRET not in str(error.message)


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "169.254.169.254"},
        {"Transfer-Encoding": "chunked"},
        {"content-length": "2"},
        {"Connection": "close"},
        {"Upgrade": "h2c"},
        {"TE": "trailers"},
        {"Proxy-Authorization": "Basic eA=="},
    ],
)
async def test_an_attacker_cannot_set_the_clients_own_headers(
    server: RecordingServer,
    tenant_secrets: dict[str, Any],
    http_client: httpx.AsyncClient,
    headers: dict[str, str],
) -> None:
    receiver = Receiver(server)
    error = await post_error(
        http_client, {"url": f"{server.url}/hooks/orders", "payload": PAYLOAD, "headers": headers}
    )
    assert (error.type, error.non_retryable) == ("InvalidActionInput", True)
    assert error.message.startswith("invalid webhook input: headers: ")
    assert repr(next(iter(headers))) in error.message, "the error names the header"
    assert server.requests() == []
    assert receiver.verified == []


@pytest_asyncio.fixture
async def worker_with_policy(client: Client, task_queue: str) -> AsyncIterator[None]:
    async with (
        build_http_client(OutboundPolicy.loopback()) as http_client,
        build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
    ):
        yield


async def test_a_run_delivers_a_verified_webhook_and_retries_with_the_same_id(
    client: Client,
    task_queue: str,
    worker_with_policy: None,
    server: RecordingServer,
    tenant_secrets: dict[str, Any],
) -> None:
    receiver = Receiver(server)
    receiver.fail_next[:] = [(500, {}, {"error": "boom"})]
    doc = definition(
        unique("webhook"),
        [
            {
                "id": "notify_partner",
                "type": "task",
                "action": "webhook",
                "input": {
                    "url": "{{ input.hook }}",
                    "payload": {"type": "order.shipped", "order_id": "{{ input.order }}"},
                },
                "retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 3},
            }
        ],
    )
    handle = await start(client, task_queue, doc, {"hook": f"{server.url}/hooks/orders", "order": "SO-9"})
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result
    step = record(result, "notify_partner")
    assert step.attempts == 2
    expected_id = f"{handle.id}/{handle.result_run_id}/notify_partner"
    assert step.output["webhook_id"] == expected_id
    assert [r.headers["webhook-id"] for r in server.requests("POST")] == [expected_id, expected_id]
    assert receiver.verified == [{"type": "order.shipped", "order_id": "SO-9"}] * 2


async def test_a_rate_limited_receiver_is_retried_after_retry_after(
    server: RecordingServer, tenant_secrets: dict[str, Any], http_client: httpx.AsyncClient
) -> None:
    receiver = Receiver(server)
    receiver.fail_next[:] = [(429, {"Retry-After": "12"}, {"error": "slow down"})]
    error = await post_error(http_client, {"url": f"{server.url}/hooks/orders", "payload": PAYLOAD})
    assert (error.type, error.non_retryable) == ("WebhookRateLimited", False)
    assert error.next_retry_delay == timedelta(seconds=12)
