"""The ``echo`` action, run with ActivityEnvironment."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.echo import echo
from interpreter.actions import ActionRequest, ActionResult, RetryMode


def make_env(attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


def make_request(data: dict[str, Any], **overrides: Any) -> ActionRequest:
    return ActionRequest(step_id="echo", idempotency_key="run-1:echo:1", input=data, **overrides)


async def run_echo(data: dict[str, Any], attempt: int = 1, **overrides: Any) -> ActionResult:
    return await make_env(attempt).run(echo, make_request(data, **overrides))


async def echo_error(data: dict[str, Any], attempt: int = 1, **overrides: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run_echo(data, attempt, **overrides)
    return info.value


async def test_returns_value() -> None:
    assert await run_echo({"value": {"a": [1, 2]}}) == ActionResult(output={"a": [1, 2]}, attempt=1)


async def test_returns_whole_input_without_value() -> None:
    assert (await run_echo({"a": 1, "b": "x"})).output == {"a": 1, "b": "x"}


async def test_fails_with_requested_type_until_succeed_on_attempt() -> None:
    data = {"value": "done", "fail": "FlakyThing", "succeed_on_attempt": 3}
    for attempt in (1, 2):
        err = await echo_error(data, attempt)
        assert err.type == "FlakyThing"
        assert not err.non_retryable
        assert list(err.details) == [{"attempt": attempt}]
    assert await run_echo(data, attempt=3) == ActionResult(output="done", attempt=3)


async def test_fails_forever_without_succeed_on_attempt() -> None:
    err = await echo_error({"fail": "Forever"}, attempt=1000)
    assert err.type == "Forever"


async def test_non_retryable_failure() -> None:
    err = await echo_error({"fail": "Fatal", "non_retryable": True})
    assert err.type == "Fatal"
    assert err.non_retryable


async def test_linear_retry_delay_applies() -> None:
    err = await echo_error({"fail": "Flaky"}, attempt=2, retry_mode=RetryMode.LINEAR, initial_interval_s=0.5)
    assert err.next_retry_delay == timedelta(seconds=1)


@pytest.mark.parametrize(
    "data",
    [
        {"sleep_s": "1"},
        {"sleep_s": -1},
        {"sleep_s": True},
        {"fail": 3},
        {"fail": "X", "succeed_on_attempt": "2"},
    ],
)
async def test_invalid_input(data: dict[str, Any]) -> None:
    err = await echo_error(data)
    assert err.type == "InvalidActionInput"
    assert err.non_retryable


async def test_sleep_heartbeats_every_second() -> None:
    env = make_env()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    started = time.monotonic()
    result = await env.run(echo, make_request({"value": 1, "sleep_s": 1.3}))
    assert result.output == 1
    assert 1.3 <= time.monotonic() - started < 2.5
    assert len(beats) == 2


async def test_sleep_is_cancellable() -> None:
    env = make_env()
    task = asyncio.create_task(env.run(echo, make_request({"sleep_s": 30})))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1
