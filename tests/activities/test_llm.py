"""The ``llm`` action against a loopback server speaking the chat-completions API (end to end on
the dev server: tests/workflows/test_action_library.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.connections import Connections, configure_connections
from activities.llm import LlmActions
from activities.outbound import OutboundPolicy, build_http_client
from activities.secrets import FileSecretStore, Secret, configure_secret_store
from interpreter.actions import ActionRequest, ActionResult, action_input_errors
from tests.helpers.http_server import RecordingServer, http_server

__all__ = ["http_server"]

API_KEY = "sk-test-0123456789abcdef"
PATH = "/v1/chat/completions"
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative"]}, "score": {"type": "number"}},
    "required": ["sentiment", "score"],
}


def completion(content: str, model: str = "test-model-1") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


@pytest.fixture
def configured(http_server: RecordingServer) -> Iterator[None]:
    configure_connections(
        Connections.parse(
            {
                "default": {
                    "llm": {
                        "default": {
                            "base_url": f"{http_server.url}/v1",
                            "model": "test-model",
                            "api_key": "${secret:LLM_KEY}",
                        }
                    }
                }
            }
        )
    )
    configure_secret_store(FileSecretStore({"default": {"LLM_KEY": Secret(API_KEY)}}))
    yield
    configure_connections(None)
    configure_secret_store(None)


@pytest_asyncio.fixture(loop_scope="session")
async def loopback_client() -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(OutboundPolicy.loopback()) as client:
        yield client


async def ask(client: httpx.AsyncClient, data: dict[str, Any], attempt: int = 1) -> ActionResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    request = ActionRequest(step_id="classify", idempotency_key="run/classify", input=data)
    return await env.run(LlmActions(client).llm, request)


async def ask_error(client: httpx.AsyncClient, data: dict[str, Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await ask(client, data)
    return info.value


@pytest.mark.usefixtures("configured")
async def test_a_valid_answer_with_usage_and_model(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    answer = {"sentiment": "positive", "score": 0.9}
    http_server.route("POST", PATH, [(200, {}, completion(json.dumps(answer)))])
    result = await ask(
        loopback_client,
        {
            "system": "You classify reviews.",
            "prompt": "Great product!",
            "json_schema": SCHEMA,
            "temperature": 0,
        },
    )
    assert result.output["json"] == answer
    assert result.output["model"] == "test-model-1"
    assert result.output["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    [sent] = http_server.requests(path=PATH)
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.idempotency_key == "run/classify"
    assert sent.json["model"] == "test-model"
    assert sent.json["messages"] == [
        {"role": "system", "content": "You classify reviews."},
        {"role": "user", "content": "Great product!"},
    ]
    assert sent.json["response_format"]["json_schema"]["schema"] == SCHEMA
    assert API_KEY not in json.dumps(result.output)


@pytest.mark.usefixtures("configured")
async def test_data_that_looks_like_a_reference_is_sent_as_its_text(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    """A review pasted into a prompt is data: the engine sends its ``${secret:LLM_KEY}`` escaped
    (interpreter/inert.py), and the model gets the text, never the key. Before, it got the escape."""
    http_server.route("POST", PATH, [(200, {}, completion("ok"))])
    await ask(
        loopback_client,
        {
            "system": "Classify $${secret:LLM_KEY}.",
            "messages": [{"role": "user", "content": "earlier: $${secret:LLM_KEY}"}],
            "prompt": "Review: $${secret:LLM_KEY} and $$${secret:LLM_KEY}",
        },
    )
    [sent] = http_server.requests(path=PATH)
    assert [m["content"] for m in sent.json["messages"]] == [
        "Classify ${secret:LLM_KEY}.",
        "earlier: ${secret:LLM_KEY}",
        "Review: ${secret:LLM_KEY} and $${secret:LLM_KEY}",
    ]
    assert API_KEY.encode() not in sent.body


@pytest.mark.usefixtures("configured")
async def test_an_invalid_answer_is_a_retryable_failure(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    http_server.route("POST", PATH, [(200, {}, completion('{"sentiment": "meh"}'))])
    error = await ask_error(loopback_client, {"prompt": "Hm.", "json_schema": SCHEMA})
    assert error.type == "LlmAnswerInvalid"
    assert not error.non_retryable
    assert "does not satisfy the schema" in error.message
    http_server.route("POST", PATH, [(200, {}, completion("not json at all"))])
    error = await ask_error(loopback_client, {"prompt": "Hm.", "json_schema": SCHEMA})
    assert error.type == "LlmAnswerInvalid"
    assert "not JSON" in error.message
    # Nor NaN, which a schema's "number" took (a probe), nor a number past a float's range.
    for answer in ("NaN", "1e999"):
        http_server.route("POST", PATH, [(200, {}, completion(answer))])
        error = await ask_error(loopback_client, {"prompt": "Hm.", "json_schema": {"type": "number"}})
        assert (error.type, error.non_retryable) == ("LlmAnswerInvalid", False), answer
        assert "not JSON" in error.message


@pytest.mark.usefixtures("configured")
async def test_429_carries_retry_after_and_5xx_retries_4xx_does_not(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    http_server.route("POST", PATH, [(429, {"Retry-After": "7"}, {"error": {"message": "slow down"}})])
    error = await ask_error(loopback_client, {"prompt": "hi"})
    assert error.type == "LlmRateLimited"
    assert not error.non_retryable
    assert error.next_retry_delay is not None
    assert error.next_retry_delay.total_seconds() == 7
    http_server.route("POST", PATH, [(500, {}, {"error": "boom"})])
    error = await ask_error(loopback_client, {"prompt": "hi"})
    assert (error.type, error.non_retryable) == ("LlmServerError", False)
    http_server.route("POST", PATH, [(401, {}, {"error": f"bad key {API_KEY}"})])
    error = await ask_error(loopback_client, {"prompt": "hi"})
    assert (error.type, error.non_retryable) == ("LlmRequestRefused", True)
    assert API_KEY not in json.dumps([error.message, *error.details])


@pytest.mark.usefixtures("configured")
async def test_the_outbound_policy_applies(http_server: RecordingServer) -> None:
    async with build_http_client(OutboundPolicy()) as strict:
        error = await ask_error(strict, {"prompt": "hi"})
    assert (error.type, error.non_retryable) == ("OutboundRefused", True)
    assert http_server.requests(path=PATH) == []


async def test_an_unconfigured_connection_is_permanent(loopback_client: httpx.AsyncClient) -> None:
    error = await ask_error(loopback_client, {"prompt": "hi", "connection": "nope"})
    assert (error.type, error.non_retryable) == ("LlmConnectionNotConfigured", True)


@pytest.mark.usefixtures("configured")
async def test_a_slow_model_times_out_retryably(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    release = threading.Event()

    def slow(_request: Any) -> tuple[int, dict[str, str], Any]:
        release.wait(10)
        return 200, {}, completion("late")

    http_server.route("POST", PATH, slow)
    try:
        error = await ask_error(loopback_client, {"prompt": "hi", "timeout_s": 0.3})
    finally:
        release.set()
    assert (error.type, error.non_retryable) == ("LlmTimeout", False)


@pytest.mark.usefixtures("configured")
async def test_a_response_that_is_not_a_completion_is_retryable(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    http_server.route("POST", PATH, [(200, {}, {"unexpected": True})])
    error = await ask_error(loopback_client, {"prompt": "hi"})
    assert (error.type, error.non_retryable) == ("LlmBadResponse", False)


@pytest.mark.usefixtures("configured")
async def test_a_backtracking_pattern_is_stopped_at_the_deadline_without_holding_the_worker(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker's probe: a ``pattern`` that backtracks and an answer built to make it (28 'a'
    then '!': tens of seconds of CPU, doubling with each 'a'). Before, jsonschema checked it on the
    worker's event loop: every activity and heartbeat stalled, and the retryable
    ``LlmAnswerInvalid`` made each attempt do it again. The check now runs in a process of its own
    (activities.input_check), stopped at its deadline, and the step fails for good."""
    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "1")
    http_server.route("POST", PATH, [(200, {}, completion(json.dumps("a" * 28 + "!")))])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        async with asyncio.timeout(120):  # generous: 1 s of CPU, at most 21 s by the clock
            error = await ask_error(
                loopback_client, {"prompt": "hi", "json_schema": {"type": "string", "pattern": "^(a|a)*$"}}
            )
    finally:
        task.cancel()
    assert (error.type, error.non_retryable) == ("LlmAnswerCheckTooSlow", True)
    assert "more than 1 s of CPU" in error.message
    assert ticks >= 10  # the loop kept running during the check (at least 1 s of it)
    http_server.route("POST", PATH, [(200, {}, completion(json.dumps("a" * 28)))])
    result = await ask(
        loopback_client, {"prompt": "hi", "json_schema": {"type": "string", "pattern": "^(a|a)*$"}}
    )
    assert result.output["json"] == "a" * 28  # a matching answer is quick, and accepted


@pytest.mark.usefixtures("configured")
async def test_a_nested_quantifier_or_a_reference_outside_the_schema_is_refused_as_input(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    """The probe's schemas are refused where the definition is validated, and so at run time
    before the model is asked (a templated schema is validated once rendered)."""
    http_server.route("POST", PATH, [(200, {}, completion(json.dumps("a" * 27 + "!")))])
    for schema, said in (
        ({"type": "string", "pattern": "^(a+)+$"}, "repeats a group that repeats itself"),
        ({"$ref": "http://169.254.169.254/latest/meta-data"}, "refers outside the schema"),
        ({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/missing"}, "refers to nothing in the schema"),
    ):
        data = {"prompt": "hi", "json_schema": schema}
        assert any(said in message for _, message in action_input_errors("llm", data)), schema
        error = await ask_error(loopback_client, data)
        assert (error.type, error.non_retryable) == ("InvalidActionInput", True)
        assert said in error.message
    assert http_server.requests(path=PATH) == []
    good = {"prompt": "hi", "json_schema": {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"}}
    assert action_input_errors("llm", good) == []


@pytest.mark.usefixtures("configured")
async def test_a_schema_that_cannot_be_applied_fails_for_good(
    http_server: RecordingServer, loopback_client: httpx.AsyncClient
) -> None:
    """A reference that resolves to nothing below a nested ``$id`` is not caught by validation; it
    fails the step for good (before, a retryable ``_WrappedReferencingError`` at every attempt)."""
    http_server.route("POST", PATH, [(200, {}, completion('"x"'))])
    schema = {
        "$defs": {"inner": {"$id": "https://example.com/inner", "$ref": "#/nowhere"}},
        "$ref": "#/$defs/inner",
    }
    error = await ask_error(loopback_client, {"prompt": "hi", "json_schema": schema})
    assert (error.type, error.non_retryable) == ("LlmSchemaUnusable", True)
    assert "json_schema cannot be applied" in error.message
