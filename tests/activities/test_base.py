"""The ``action`` wrapper and secret resolution, exercised through ActivityEnvironment."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import ACTION_NAMES, build_activities
from activities.base import action, redact_secrets, resolve_secrets
from interpreter.actions import KNOWN_ACTIONS, ActionRequest, ActionResult, RetryMode


def make_env(attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


def make_request(**overrides: Any) -> ActionRequest:
    fields: dict[str, Any] = {"step_id": "step", "idempotency_key": "run-1:step:1", "input": {}}
    fields.update(overrides)
    return ActionRequest(**fields)


@action("test_ok")
async def ok_action(request: ActionRequest) -> Any:
    return {"seen": request.input}


@action("test_raise")
async def raise_action(request: ActionRequest) -> Any:
    kind = request.input["kind"]
    if kind == "value":
        raise ValueError("bad value 42")
    if kind == "app":
        raise ApplicationError(
            "remote said no",
            {"why": "because"},
            type="RemoteRefused",
            non_retryable=bool(request.input.get("non_retryable")),
            next_retry_delay=timedelta(seconds=request.input["delay"]) if "delay" in request.input else None,
        )
    if kind == "cancel":
        raise asyncio.CancelledError
    if kind == "secret":
        token = resolve_secrets("${secret:TOKEN}")
        raise RuntimeError(f"server rejected token {token}")
    raise AssertionError(kind)


@action("test_secret_output")
async def secret_output_action(request: ActionRequest) -> Any:
    return resolve_secrets(request.input)


async def raised(fn: Any, request: Any, attempt: int = 1) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await make_env(attempt).run(fn, request)
    return info.value


# -------------------------------------------------------------------------------- resolve_secrets


def test_resolve_secrets_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFA_SECRET_A", "alpha")
    monkeypatch.setenv("WFA_SECRET_B_2", "beta")
    value = {
        "x": "${secret:A}",
        "y": ["pre-${secret:A}-${secret:B_2}-post", 3, None, {"z": ("${secret:B_2}",)}],
        "n": 1.5,
        "${secret:A}": "keys are not resolved",
    }
    assert resolve_secrets(value) == {
        "x": "alpha",
        "y": ["pre-alpha-beta-post", 3, None, {"z": ("beta",)}],
        "n": 1.5,
        "${secret:A}": "keys are not resolved",
    }
    assert value["x"] == "${secret:A}", "input must not be mutated"


def test_resolve_secrets_missing_is_non_retryable_and_names_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WFA_SECRET_NOPE", raising=False)
    with pytest.raises(ApplicationError) as info:
        resolve_secrets({"a": ["${secret:NOPE}"]})
    assert info.value.type == "SecretNotFound"
    assert info.value.non_retryable
    assert "NOPE" in info.value.message
    assert "WFA_SECRET_NOPE" in info.value.message


def test_resolve_secrets_rejects_malformed_names() -> None:
    with pytest.raises(ApplicationError) as info:
        resolve_secrets("${secret:not-valid}")
    assert info.value.type == "SecretNotFound"
    assert info.value.non_retryable


def test_redact_secrets() -> None:
    secrets = {"SHORT": "abc", "LONG": "abcdef"}
    assert redact_secrets({"k abcdef": ["x abc y"]}, secrets) == {
        "k [REDACTED:LONG]": ["x [REDACTED:SHORT] y"]
    }
    assert redact_secrets("abc") == "abc", "outside an action nothing is registered"


# -------------------------------------------------------------------------------- action wrapper


async def test_result_carries_output_and_attempt() -> None:
    result = await make_env(attempt=4).run(ok_action, make_request(input={"a": 1}))
    assert result == ActionResult(output={"seen": {"a": 1}}, attempt=4)


async def test_plain_dict_request_is_accepted() -> None:
    raw: Any = {"step_id": "s", "idempotency_key": "k", "input": {"a": 1}}
    result = await make_env().run(ok_action, raw)
    assert result.output == {"seen": {"a": 1}}


async def test_malformed_request_is_non_retryable() -> None:
    err = await raised(ok_action, {"step_id": "s"})
    assert err.type == "InvalidActionRequest"
    assert err.non_retryable
    assert "idempotency_key" in err.message


async def test_plain_exception_keeps_class_name_and_is_retryable() -> None:
    err = await raised(raise_action, make_request(input={"kind": "value"}), attempt=2)
    assert err.type == "ValueError"
    assert err.message == "bad value 42"
    assert not err.non_retryable
    assert err.next_retry_delay is None
    assert list(err.details) == [{"attempt": 2}]
    # The cause is kept as its type and message only: its trace and chain could push the failure
    # past the server's 4 KiB limit for a retrying activity's last failure.
    assert isinstance(err.__cause__, ApplicationError)
    assert (err.__cause__.type, err.__cause__.message) == ("ValueError", "bad value 42")
    assert err.__cause__.__traceback__ is None
    assert err.__cause__.__cause__ is None


async def test_application_error_fields_are_preserved() -> None:
    err = await raised(
        raise_action, make_request(input={"kind": "app", "non_retryable": True, "delay": 3}), attempt=5
    )
    assert err.type == "RemoteRefused"
    assert err.message == "remote said no"
    assert err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=3)
    assert list(err.details) == [{"why": "because"}, {"attempt": 5}]


async def test_cancelled_error_passes_through_untouched() -> None:
    with pytest.raises(asyncio.CancelledError):
        await make_env().run(raise_action, make_request(input={"kind": "cancel"}))


@pytest.mark.parametrize(
    ("attempt", "initial", "maximum", "expected"),
    [(1, 2.0, None, 2.0), (3, 1.5, None, 4.5), (4, 2.0, 5.0, 5.0)],
)
async def test_linear_mode_sets_next_retry_delay(
    attempt: int, initial: float, maximum: float | None, expected: float
) -> None:
    request = make_request(
        input={"kind": "value"},
        retry_mode=RetryMode.LINEAR,
        initial_interval_s=initial,
        maximum_interval_s=maximum,
    )
    err = await raised(raise_action, request, attempt=attempt)
    assert err.next_retry_delay == timedelta(seconds=expected)


async def test_linear_mode_keeps_explicit_delay_and_skips_non_retryable() -> None:
    explicit = make_request(input={"kind": "app", "delay": 9}, retry_mode=RetryMode.LINEAR)
    assert (await raised(raise_action, explicit, attempt=2)).next_retry_delay == timedelta(seconds=9)
    final = make_request(input={"kind": "app", "non_retryable": True}, retry_mode=RetryMode.LINEAR)
    assert (await raised(raise_action, final, attempt=2)).next_retry_delay is None


async def test_exponential_and_constant_modes_leave_delay_to_temporal() -> None:
    for mode in (RetryMode.EXPONENTIAL, RetryMode.CONSTANT):
        request = make_request(input={"kind": "value"}, retry_mode=mode)
        assert (await raised(raise_action, request, attempt=3)).next_retry_delay is None


async def test_secrets_are_redacted_from_errors_and_cause_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFA_SECRET_TOKEN", "tok-123456")
    err = await raised(raise_action, make_request(input={"kind": "secret"}))
    assert err.type == "RuntimeError"
    assert "tok-123456" not in err.message
    assert "[REDACTED:TOKEN]" in err.message
    assert err.__cause__ is None, "a cause whose message holds the secret must not be serialised"


async def test_secrets_are_redacted_from_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFA_SECRET_TOKEN", "tok-123456")
    result = await make_env().run(secret_output_action, make_request(input={"t": "x ${secret:TOKEN}"}))
    assert result.output == {"t": "x [REDACTED:TOKEN]"}


# -------------------------------------------------------------------------------- registration


async def test_activity_names_match_the_interpreter_list() -> None:
    assert ACTION_NAMES == KNOWN_ACTIONS
    async with httpx.AsyncClient() as client:
        activities = build_activities(client)
    names = tuple(activity._Definition.must_from_callable(fn).name for fn in activities)
    assert names == ACTION_NAMES


def test_activity_definition_types() -> None:
    defn = activity._Definition.must_from_callable(ok_action)
    assert defn.name == "test_ok"
    assert defn.is_async
    assert defn.arg_types == [ActionRequest]
    assert defn.ret_type is ActionResult
