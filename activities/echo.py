"""The ``echo`` action: returns its input, optionally after sleeping or failing on purpose.

Meant for tests, benchmarks and examples: it exercises the whole dispatch, retry and cancellation
path without any external system.

Input keys (all optional):
    value: What to return; without it the whole input is returned.
    sleep_s: Seconds to wait first, heartbeating every second so cancellation reaches the activity
        when the step has a heartbeat timeout.
    fail: Error type to raise (retryable unless ``non_retryable`` is true).
    succeed_on_attempt: First attempt that stops failing; without it every attempt fails.
    non_retryable: Makes the ``fail`` error non-retryable.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import action
from interpreter.actions import ActionRequest

__all__ = ["HEARTBEAT_INTERVAL_S", "echo"]

HEARTBEAT_INTERVAL_S = 1.0


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ApplicationError(
            f"invalid echo input: {key}: must be a non-negative number",
            type="InvalidActionInput",
            non_retryable=True,
        )
    return float(value)


async def _sleep_with_heartbeats(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        activity.heartbeat({"remaining_s": round(remaining, 3)})
        await asyncio.sleep(min(HEARTBEAT_INTERVAL_S, remaining))


@action("echo")
async def echo(request: ActionRequest) -> Any:
    """Return ``input["value"]`` (or the whole input), after the optional sleep and failure.

    Args:
        request: The action request; see the module docstring for the input keys.

    Returns:
        The echoed value.

    Raises:
        ApplicationError: Of type ``input["fail"]`` while the attempt is below
            ``succeed_on_attempt``; ``InvalidActionInput`` for malformed keys.
    """
    data = request.input
    if "sleep_s" in data:
        await _sleep_with_heartbeats(_number(data["sleep_s"], "sleep_s"))
    fail = data.get("fail")
    if fail is not None:
        if not isinstance(fail, str) or not fail:
            raise ApplicationError(
                "invalid echo input: fail: must be a non-empty error type name",
                type="InvalidActionInput",
                non_retryable=True,
            )
        succeed_on = _number(data.get("succeed_on_attempt", math.inf), "succeed_on_attempt")
        attempt = activity.info().attempt
        if attempt < succeed_on:
            raise ApplicationError(
                f"echo failing on purpose with {fail} on attempt {attempt}",
                type=fail,
                non_retryable=bool(data.get("non_retryable", False)),
            )
    return data.get("value", data)
