"""The ``llm`` action: one OpenAI-compatible chat completion, optionally held to a JSON Schema.

The endpoint (base URL, default model, API key) is the tenant's named connection in the worker's
configuration (:mod:`activities.connections`); the request goes through the worker's HTTP client, so
the outbound policy checks every connection, and the API key is a secret redacted from outputs and
errors. The model's answer is data: it is never rendered as a template (the engine makes every
output inert).

With ``json_schema`` the answer's content must be JSON satisfying the schema (it is also asked for
with ``response_format``); an answer that is not is a retryable failure, so the step's retry policy
asks again, and once its attempts are spent the step fails with the reason. The schema is untrusted
(a ``pattern`` that backtracks, ``uniqueItems``, combinators over a large answer): the answer is
checked in a separate process (:func:`activities.input_check.check_value`), never on the worker's
event loop, within ``WFA_INPUT_CHECK_DEADLINE`` of CPU (at most ``timeout_s``, at least 1 s).

Classification (error ``type`` on the raised :class:`~temporalio.exceptions.ApplicationError`):

===================================  =========  ===============================================
Situation                            Retryable  Type
===================================  =========  ===============================================
input fails validation               no         ``InvalidActionInput``
connection not configured            no         ``LlmConnectionNotConfigured``
secret missing / not for this host   no         ``SecretNotFound`` / ``SecretHostRefused``
outbound policy refuses the host     no         ``OutboundRefused``
429                                  yes        ``LlmRateLimited`` (delay from ``Retry-After``)
5xx, 408                             yes        ``LlmServerError``
other 4xx (bad key, bad model, ...)  no         ``LlmRequestRefused``
timed out                            yes        ``LlmTimeout``
could not connect / transport        yes        ``LlmConnectError``
response not a chat completion       yes        ``LlmBadResponse``
answer not JSON / not the schema     yes        ``LlmAnswerInvalid``
checking the answer past deadline    no         ``LlmAnswerCheckTooSlow``
json_schema cannot be applied        no         ``LlmSchemaUnusable``
no checking slot / process failed    yes        ``LlmAnswerCheckBusy`` / ``LlmAnswerCheckFailed``
response body over 256 KiB           no         ``HttpResponseTooLarge``
body coding not read                 no         ``HttpResponseUndecodable``
===================================  =========  ===============================================
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.base import action, check_secret_hosts, invalid_input, resolve_secrets
from activities.connections import configured_connection
from activities.http import _decode_text, _read_prefix, _read_success_body, _retry_after, strict_json
from activities.input_check import (
    InputCheckBusyError,
    InputCheckFailedError,
    SchemaUnusableError,
    check_value,
    input_check_settings,
)
from activities.outbound import OutboundRefusedError
from interpreter.actions import ActionRequest, LlmInput, parse_action_input
from interpreter.inert import as_text

__all__ = ["ERROR_BODY_LIMIT_BYTES", "LlmActions", "chat_messages"]

ERROR_BODY_LIMIT_BYTES = 2 * 1024
"""How much of an error response's body is kept in the failure details."""


def chat_messages(spec: LlmInput) -> list[dict[str, str]]:
    """The request's messages: ``system``, then ``messages``, then ``prompt`` as the user's, each
    as the text it stands for (a reference in it is never resolved; an escaped one, data's inert
    form, is its literal text, as an ``http`` step would send it)."""
    messages: list[dict[str, str]] = []
    if spec.system is not None:
        messages.append({"role": "system", "content": spec.system})
    messages.extend({"role": m.role, "content": m.content} for m in spec.messages)
    if spec.prompt is not None:
        messages.append({"role": "user", "content": spec.prompt})
    text: list[dict[str, str]] = as_text(messages)
    return text


async def _answer_problem(
    content: str, spec: LlmInput, schema: dict[str, Any], what: str, tenant: str
) -> tuple[Any, str | None]:
    """The answer parsed as JSON and why it does not satisfy ``schema`` (None: it does), checked
    in a separate process within the deadline.

    Raises:
        ApplicationError: The check took too long or the schema cannot be applied (for good), or
            no process could check it now (retryable).
    """
    try:
        answer = strict_json(content)  # not NaN, which a JSON schema's "number" took (a probe)
    except (ValueError, RecursionError) as err:
        return None, f"the answer is not JSON ({type(err).__name__}: {err})"
    deadline = min(input_check_settings().deadline_s, max(1.0, spec.timeout_s))
    try:
        problems = await check_value(schema, answer, owner=tenant, most_chars=500, deadline_s=deadline)
    except TimeoutError:
        raise ApplicationError(
            f"{what}: checking the answer against json_schema took more than {deadline:g} s of CPU (a"
            " pattern that backtracks, uniqueItems or nested combinators over the answer): stopped",
            {"content": content[:ERROR_BODY_LIMIT_BYTES]},
            type="LlmAnswerCheckTooSlow",
            non_retryable=True,
        ) from None
    except SchemaUnusableError as err:
        raise ApplicationError(
            f"{what}: the step's json_schema cannot be applied to the answer: {err}",
            type="LlmSchemaUnusable",
            non_retryable=True,
        ) from None
    except InputCheckBusyError as err:
        raise ApplicationError(f"{what}: {err}", type="LlmAnswerCheckBusy") from None
    except (InputCheckFailedError, OSError, ValueError) as err:
        raise ApplicationError(f"{what}: {err}", type="LlmAnswerCheckFailed") from None
    if problems:
        path, message = problems[0]
        where = "$ (the whole answer)" if path == "$" else path
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return answer, f"the answer does not satisfy the schema at {where}: {message}{more}"
    return answer, None


class LlmActions:
    """Holder of the shared HTTP client; ``LlmActions(client).llm`` is the activity to register.

    Args:
        client: The worker's policy-checked client (:func:`activities.outbound.build_http_client`).
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @action("llm")
    async def llm(self, request: ActionRequest) -> dict[str, Any]:
        """Asks the model described by ``request.input`` (an :class:`LlmInput`).

        Returns:
            ``{"content": text, "json": the parsed answer (with json_schema) or None, "model":
            the model that answered, "usage": {"prompt_tokens", "completion_tokens",
            "total_tokens"}, "finish_reason": ...}``.

        Raises:
            ApplicationError: Classified as in the module docstring.
        """
        try:
            spec = parse_action_input(LlmInput, request.input)
        except ValidationError as exc:
            raise invalid_input("llm", request.input, exc) from None
        config = configured_connection("llm", request.tenant, spec.connection)
        base_url: str = resolve_secrets(config.base_url).rstrip("/")
        url = f"{base_url}/chat/completions"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApplicationError(
                f"llm connection {spec.connection!r}: base_url is not an http(s) URL",
                type="LlmConnectionNotConfigured",
                non_retryable=True,
            )
        headers = {"Idempotency-Key": request.idempotency_key}
        if config.api_key:
            headers["Authorization"] = f"Bearer {resolve_secrets(config.api_key)}"
        check_secret_hosts(parts.hostname)
        model = spec.model or config.model
        body: dict[str, Any] = {"model": model, "messages": chat_messages(spec)}
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        if spec.max_tokens is not None:
            body["max_tokens"] = spec.max_tokens
        if spec.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": spec.json_schema},
            }
        what = f"llm {model} at {parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        try:
            async with (
                asyncio.timeout(spec.timeout_s),
                self._client.stream(
                    "POST", url, headers=headers, json=body, timeout=httpx.Timeout(spec.timeout_s)
                ) as response,
            ):
                if not 200 <= response.status_code < 300:
                    raise await _status_error(response, what)
                raw = await _read_success_body(response, what)
        except OutboundRefusedError as exc:
            raise exc.application_error(what) from None
        except (TimeoutError, httpx.TimeoutException):
            raise ApplicationError(f"{what} timed out after {spec.timeout_s:g}s", type="LlmTimeout") from None
        except httpx.TransportError as exc:
            raise ApplicationError(
                f"{what} failed: {type(exc).__name__}: {exc}", type="LlmConnectError"
            ) from None
        return await _completion(raw, what, spec, request.tenant)


async def _status_error(response: httpx.Response, what: str) -> ApplicationError:
    status = response.status_code
    snippet = _decode_text(await _read_prefix(response, ERROR_BODY_LIMIT_BYTES), response)
    details = {"status_code": status, "body": snippet}
    message = f"{what} returned {status} {response.reason_phrase}".rstrip()
    delay = _retry_after(response.headers.get("retry-after"))
    if status == 429:
        return ApplicationError(message, details, type="LlmRateLimited", next_retry_delay=delay)
    if status >= 500 or status == 408:
        return ApplicationError(message, details, type="LlmServerError", next_retry_delay=delay)
    return ApplicationError(message, details, type="LlmRequestRefused", non_retryable=True)


async def _completion(raw: bytes, what: str, spec: LlmInput, tenant: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)  # the envelope as it comes (NaN in logprobs is not the answer)
        choice = data["choices"][0]
        content = choice["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("content is not text")
    except (ValueError, RecursionError, KeyError, IndexError, TypeError) as err:
        raise ApplicationError(
            f"{what} did not answer with a chat completion ({type(err).__name__}: {err})",
            type="LlmBadResponse",
        ) from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    answer: Any = None
    if spec.json_schema is not None:
        answer, problem = await _answer_problem(content, spec, spec.json_schema, what, tenant)
        if problem is not None:
            raise ApplicationError(
                f"{what}: {problem}", {"content": content[:ERROR_BODY_LIMIT_BYTES]}, type="LlmAnswerInvalid"
            )
    return {
        "content": content,
        "json": answer,
        "model": data.get("model") if isinstance(data.get("model"), str) else spec.model,
        "usage": {
            key: usage.get(key)
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")
            if key in usage
        },
        "finish_reason": choice.get("finish_reason"),
    }
