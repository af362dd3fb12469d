"""Signature checks and strict JSON, without servers (the gateway tests cover them over HTTP)."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Headers

from gateway.errors import ApiError
from gateway.jsonbody import BodyError, check_content_type, parse_object, parse_strict
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


@pytest.mark.parametrize(
    ("trigger", "repeated"),
    [
        (STANDARD, "webhook-id"),
        (STANDARD, "webhook-timestamp"),
        (STANDARD, "Webhook-Signature"),
        (HMAC, "x-signature-256"),
        (HMAC, "X-Delivery"),
    ],
)
def test_a_header_the_check_reads_sent_twice_is_a_401(trigger: WebhookTrigger, repeated: str) -> None:
    """Found by an attacker's probe: with two ``webhook-id`` (or two signature, or two delivery)
    headers the first was read, while a proxy before the gateway may read or log the other one.
    Either copy alone verifies; both together are refused, whichever header name's case."""
    body, now = b'{"a": 1}', int(time.time())
    single = (
        standard_headers(SECRET, body, "m1", timestamp=now)
        if trigger is STANDARD
        else {**hmac_headers(SECRET, body), "X-Delivery": "d-1"}
    )
    raw = [(k.lower().encode(), v.encode()) for k, v in single.items()]
    value = next(v for k, v in raw if k == repeated.lower().encode())
    assert verify_signature(
        trigger, SECRET, body, Headers(raw=raw), now=now, hmac_delivery_header="X-Delivery"
    )
    with pytest.raises(ApiError, match="more than once") as caught:
        verify_signature(
            trigger,
            SECRET,
            body,
            Headers(raw=[*raw, (repeated.lower().encode(), value)]),
            now=now,
            hmac_delivery_header="X-Delivery",
        )
    assert caught.value.status == 401


@pytest.mark.parametrize("stamp", ["\xb2", "\xb9\xb2\xb3", "1\u0663", "\uff11\uff12", " 12", "1_0"])
def test_a_timestamp_of_other_digits_is_a_401(stamp: str) -> None:
    """Found by an attacker's probe: ``webhook-timestamp: \\xb2`` (a raw header byte, Latin-1
    '²') passed ``str.isdigit()``, ``int()`` raised, and the gateway answered an unsigned request
    with a 500."""
    body, now = b"{}", int(time.time())
    headers = {**standard_headers(SECRET, body, "m", timestamp=now), "webhook-timestamp": stamp}
    with pytest.raises(ApiError, match="not a Unix timestamp") as caught:
        verify_signature(STANDARD, SECRET, body, headers, now=now)
    assert caught.value.status == 401


def test_delivery_ids_never_collide_in_workflow_ids() -> None:
    plain = delivery_workflow_id("t", "d", "in", "msg_1")
    assert plain.startswith("webhook-t-d-in-msg_1-")
    assert len(plain) == len("webhook-t-d-in-msg_1-") + 32
    assert plain == delivery_workflow_id("t", "d", "in", "msg_1")  # a redelivery: the same id
    odd = delivery_workflow_id("t", "d", "in", "a/b")
    assert odd.startswith("webhook-t-d-in-")
    assert "a/b" not in odd
    assert odd != delivery_workflow_id("t", "d", "in", "a?b")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # Found by an attacker's probe: joined with "-", both were hook-default-cX-form-a-msg1.
        (("default", "cx", "form-a", "msg1"), ("default", "cx-form", "a", "msg1")),
        (("acme", "corp-d", "in", "m"), ("acme-corp", "d", "in", "m")),  # a namespace they share
        (("t", "d", "in-x", "y"), ("t", "d", "in", "x-y")),
        (("t", "d", "in", "a" * 101), ("t", "d", "in", "a" * 102)),
    ],
)
def test_parts_holding_dashes_never_share_a_workflow_id(
    one: tuple[str, str, str, str], other: tuple[str, str, str, str]
) -> None:
    assert delivery_workflow_id(*one) != delivery_workflow_id(*other)
    # No id of before (hook-...), whose delivery part a sender chose, is one of these.
    assert not delivery_workflow_id(*one).startswith("hook-")


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


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"a": "\\ud800"}', "$.a"),
        (b'{"a": "x\\udfffy"}', "$.a"),
        (b'{"a": {"b": [1, "ok", "\\uDC80"]}}', "$.a.b[2]"),
        (b'{"\\udc80": 1}', '$["\\udc80"]'),
        (b'{"a": {"k \\ud83d": true}}', '$.a["k \\ud83d"]'),
        (b'{"a": "\\ude00\\ud83d"}', "$.a"),  # low then high: no pair
        (b'"\\ud800"', "$"),
    ],
)
def test_a_lone_surrogate_escape_is_a_400_naming_its_path(body: bytes, path: str) -> None:
    """Found by an attacker's probe: valid JSON, but no text UTF-8 can carry. In a value it failed
    the run's start (500); in a key it reached the run as "\\ufffd\\ufffd\\ufffd"."""
    with pytest.raises(ApiError, match="surrogate") as caught:
        parse_strict(body)
    assert caught.value.status == 400
    assert caught.value.error == "invalid_json"
    assert f"at {path}:" in caught.value.detail
    assert caught.value.detail.isascii()  # the answer itself must be writable


def test_escaped_pairs_and_text_that_only_looks_like_an_escape_are_kept() -> None:
    assert parse_object(b'{"\\ud83d\\ude00": "\\ud83d\\ude00 \\u00e9"}') == {"\U0001f600": "\U0001f600 \xe9"}
    assert parse_object(b'{"a": "\\\\ud800"}') == {"a": "\\ud800"}  # a backslash, then text


def test_strict_json_accepts_ordinary_documents() -> None:
    assert parse_object(b'{"a": [1, 2.5, "x", null, true, {"b": "[{"}]}') == {
        "a": [1, 2.5, "x", None, True, {"b": "[{"}]
    }
    # Brackets inside strings do not count as nesting.
    assert parse_strict(b'"' + b"[" * 100 + b'"') == "[" * 100
    # A float that underflows to 0 is refused (it arrived as 0.0); zero itself is zero.
    for tiny in (b"1e-999", b"-0.5e-400", b"0.0000001e-330"):
        with pytest.raises(BodyError, match="too small for a float"):
            parse_strict(b'{"n": ' + tiny + b"}")
    assert parse_strict(b'{"a": 0.0, "b": -0e-999, "c": 0E5, "d": 5e-324}') == {
        "a": 0.0,
        "b": -0.0,
        "c": 0.0,
        "d": 5e-324,
    }


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
