"""The ``webhook`` action: a JSON POST signed per the Standard Webhooks specification.

Headers (https://www.standardwebhooks.com): ``webhook-id`` is the step's idempotency key (the same
on every attempt of a step, so a receiver deduplicates retries by it), ``webhook-timestamp`` the
attempt's Unix time in seconds, and ``webhook-signature`` ``v1,<base64 HMAC-SHA256>`` of
``"{webhook-id}.{webhook-timestamp}.{body}"`` keyed with the tenant's secret (``whsec_`` followed by
the base64 key, named by the step's ``secret`` input, default ``WEBHOOK_SECRET``). A receiver
verifies with any Standard Webhooks library (``standardwebhooks``' ``Webhook(secret).verify``).

The request goes through the worker's HTTP client, so the outbound policy applies; the signing
secret's ``hosts`` restriction, if any, is checked against the URL's host.

Classification (error ``type``): ``InvalidActionInput``, ``SecretNotFound``, ``SecretHostRefused``,
``WebhookSecretInvalid`` (not ``whsec_`` + base64), ``OutboundRefused``, ``WebhookAuthenticationFailed``
(401, 403) and ``WebhookRejected`` (other 4xx) are permanent; ``WebhookRateLimited`` (408, 429, with
``Retry-After``), ``WebhookServerError`` (5xx), ``WebhookTimeout`` and ``WebhookConnectError`` retry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.base import (
    action,
    check_secret_hosts,
    invalid_input,
    resolve_secrets,
    resolve_url,
    tenant_secret,
)
from activities.messaging import idempotency_token, provider_request
from interpreter.actions import ActionRequest, WebhookInput, WebhookResult, parse_action_input

__all__ = ["SECRET_PREFIX", "WebhookActions", "sign"]

SECRET_PREFIX = "whsec_"
OUTPUT_BODY_CHARS = 16 * 1024
"""Most of the receiver's answer kept in the output."""


def _key(secret: str, name: str) -> bytes:
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ApplicationError(
            f"secret {name!r} is not a Standard Webhooks secret ({SECRET_PREFIX} followed by base64)",
            type="WebhookSecretInvalid",
            non_retryable=True,
        )
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of id, timestamp and body."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


class WebhookActions:
    """The ``webhook`` activity over the worker's shared HTTP client (built with the outbound policy).

    Args:
        client: The worker's client, owned by the worker.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @action("webhook")
    async def webhook(self, request: ActionRequest) -> dict[str, Any]:
        """POST ``payload`` to ``url``, signed (:class:`WebhookInput`).

        Returns:
            A :class:`WebhookResult` as a dict: ``status_code``, ``webhook_id``, ``body``.

        Raises:
            ApplicationError: Classified as in the module docstring.
        """
        try:
            spec = parse_action_input(WebhookInput, request.input)
        except ValidationError as exc:
            raise invalid_input("webhook", request.input, exc) from None
        key = _key(tenant_secret(spec.secret) or "", spec.secret)
        url: str = resolve_url(spec.url)
        headers: dict[str, str] = resolve_secrets(spec.headers)
        host = urlsplit(url).hostname or ""
        if urlsplit(url).scheme.lower() not in ("http", "https") or not host:
            raise ApplicationError(
                "invalid webhook input: url: not an http(s) URL once secrets are resolved",
                type="InvalidActionInput",
                non_retryable=True,
            )
        check_secret_hosts(host)
        payload = resolve_secrets(spec.payload)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        webhook_id = idempotency_token(request.idempotency_key)
        timestamp = int(time.time())
        headers.update(
            {
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(key, webhook_id, timestamp, body),
                "idempotency-key": webhook_id,
            }
        )
        parts = urlsplit(url)
        status, answer = await provider_request(
            self._client,
            "POST",
            url,
            prefix="Webhook",
            what=f"POST {parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}",
            timeout_s=spec.timeout_s,
            content=body,
            headers=headers,
        )
        if isinstance(answer, str) and len(answer) > OUTPUT_BODY_CHARS:
            answer = answer[:OUTPUT_BODY_CHARS]
        return WebhookResult(status_code=status, webhook_id=webhook_id, body=answer).model_dump()
