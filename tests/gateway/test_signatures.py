"""Signature checks and strict JSON, without servers (the gateway tests cover them over HTTP)."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook

from gateway.errors import ApiError
from gateway.jsonbody import check_content_type, parse_object, parse_strict
from gateway.webhooks import delivery_workflow_id, verify_signature
from interpreter.model import WebhookTrigger
from tests.gateway.support import hmac_headers, standard_headers

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
STANDARD = WebhookTrigger.model_validate_json('{"type": "webhook", "secret": "S", "replay_window": "2m"}')
HMAC = WebhookTrigger.model_validate_json('{"type": "webhook", "secret": "S", "signature": "hmac_sha256"}')


def test_a_standard_webhooks_signature_made_by_the_package_verifies() -> None:
    body, now = b'{"a": 1}', int(time.time())
    from datetime import UTC, datetime

    signature = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": signature}
    assert verify_signature(STANDARD, SECRET, body, headers, now=now) == "msg_1"
    # Rotation: several signatures, one of which matches.
    headers["webhook-signature"] = "v1,AAAA " + signature
    assert verify_signature(STANDARD, SECRET, body, headers, now=now) == "msg_1"


@pytest.mark.parametrize("offset", [-121, 121, -3600])
def test_the_replay_window_is_the_triggers(offset: int) -> None:
    body, now = b"{}", int(time.time())
    headers = standard_headers(SECRET, body, "m", timestamp=now + offset)
    with pytest.raises(ApiError, match="replay window") as caught:
        verify_signature(STANDARD, SECRET, body, headers, now=now)
    assert caught.value.status == 401
    assert (
        verify_signature(
            STANDARD, SECRET, body, standard_headers(SECRET, body, "m", timestamp=now + 119), now=now
        )
        == "m"
    )


def test_hmac_accepts_the_prefix_and_keys_deliveries_by_body() -> None:
    body = b'{"ref": "main"}'
    headers = hmac_headers("s3cret", body)
    delivery = verify_signature(HMAC, "s3cret", body, headers)
    assert delivery.startswith("body-")
    assert (
        verify_signature(HMAC, "s3cret", body, {"X-Signature-256": headers["X-Signature-256"][7:]})
        == delivery
    )
    assert (
        verify_signature(
            HMAC, "s3cret", body, {**headers, "X-Delivery": "d-1"}, hmac_delivery_header="X-Delivery"
        )
        == "d-1"
    )
    with pytest.raises(ApiError):
        verify_signature(HMAC, "other", body, headers)


def test_delivery_ids_never_collide_in_workflow_ids() -> None:
    assert delivery_workflow_id("t", "d", "in", "msg_1") == "hook-t-d-in-msg_1"
    odd = delivery_workflow_id("t", "d", "in", "a/b")
    assert odd.startswith("hook-t-d-in-sha256-")
    assert odd != delivery_workflow_id("t", "d", "in", "a?b")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"a": NaN}', 400),
        (b'{"a": 1, "a": 1}', 400),
        (b"[]", 400),
        (b"[" * 40 + b"]" * 40, 413),
        (b'{"n": 1' + b"0" * 200 + b"}", 413),
        (b'{"n": 1e400}', 413),
        (b"\xff", 400),
    ],
)
def test_strict_json_refusals(body: bytes, status: int) -> None:
    with pytest.raises(ApiError) as caught:
        parse_object(body)
    assert caught.value.status == status


def test_strict_json_accepts_ordinary_documents() -> None:
    assert parse_object(b'{"a": [1, 2.5, "x", null, true, {"b": "[{"}]}') == {
        "a": [1, 2.5, "x", None, True, {"b": "[{"}]
    }
    # Brackets inside strings do not count as nesting.
    assert parse_strict(b'"' + b"[" * 100 + b'"') == "[" * 100


@pytest.mark.parametrize(
    "value", ["application/json", "Application/JSON; charset=UTF-8", "application/json;charset=utf8"]
)
def test_json_media_types(value: str) -> None:
    check_content_type(value)


@pytest.mark.parametrize(
    "value", [None, "", "text/plain", "application/json; charset=latin-1", "application/jsonp"]
)
def test_other_media_types_are_415(value: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        check_content_type(value)
    assert caught.value.status == 415
