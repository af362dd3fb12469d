"""A real gateway for tests: uvicorn serving ``create_app`` on a loopback socket of its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.config import GatewayConfig
from gateway.serve import running


@asynccontextmanager
async def running_gateway(config: GatewayConfig) -> AsyncIterator[str]:
    """Serves the gateway with uvicorn until the block ends; yields its base URL."""
    async with running(config) as url:
        yield url


def standard_headers(
    secret: str, body: bytes, msg_id: str, *, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers signing ``body`` (``secret`` is ``whsec_<base64>``)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{stamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"v1,{signature}",
    }


def hmac_headers(secret: str, body: bytes, header: str = "X-Signature-256") -> dict[str, str]:
    """A plain HMAC-SHA256 header (GitHub style, ``sha256=`` prefix)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", header: f"sha256={digest}"}


def hook_definition(name: str, secret_name: str, hmac_secret_name: str) -> dict[str, Any]:
    """A definition with a Standard Webhooks trigger ``in`` and an HMAC trigger ``gh``."""
    return {
        "name": name,
        "steps": [{"id": "wait", "type": "delay", "duration": "1h"}],
        "triggers": [
            {"type": "webhook", "id": "in", "secret": secret_name, "replay_window": "5m"},
            {"type": "webhook", "id": "gh", "signature": "hmac_sha256", "secret": hmac_secret_name},
        ],
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
