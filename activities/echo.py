"""The ``echo`` action: returns its input, optionally after sleeping or failing on purpose.

Meant for tests, benchmarks and examples: it exercises the whole dispatch, retry and cancellation
path without any external system.

Input keys (all optional; :class:`interpreter.actions.EchoInput`, other keys are data to echo):
    value: What to return; without it the whole input is returned. Returned as the text it stands
        for: an escaped reference (``$${secret:X}``, data's inert form) comes back as the text
        ``${secret:X}``, as an ``http`` step would send it, and the run makes the output inert
        again (nothing is resolved: an author's own reference comes back as text too).
    sleep_s: Seconds to wait first, heartbeating every second so cancellation reaches the activity
        when the step has a heartbeat timeout.
    fail: Error type to raise (retryable unless ``non_retryable`` is true).
    succeed_on_attempt: First attempt that stops failing; without it every attempt fails.
    non_retryable: Makes the ``fail`` error non-retryable.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import action, invalid_input
from interpreter.actions import ActionRequest, EchoInput, parse_action_input
from interpreter.inert import as_text

__all__ = ["HEARTBEAT_INTERVAL_S", "echo"]

HEARTBEAT_INTERVAL_S = 1.0


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
    try:
        spec = parse_action_input(EchoInput, data)
    except ValidationError as exc:
        raise invalid_input("echo", data, exc) from None
    if spec.sleep_s:
        await _sleep_with_heartbeats(spec.sleep_s)
    if spec.fail is not None:
        attempt = activity.info().attempt
        if spec.succeed_on_attempt is None or attempt < spec.succeed_on_attempt:
            raise ApplicationError(
                f"echo failing on purpose with {spec.fail} on attempt {attempt}",
                type=spec.fail,
                non_retryable=spec.non_retryable,
            )
    return as_text(data.get("value", data))
