"""The wire contract between the generic workflow and every action activity.

Every action (``http``, ``echo``, ...) is a Temporal activity whose name is the action name used in
definitions. Each takes one :class:`ActionRequest` and returns one :class:`ActionResult`, so the
workflow can dispatch any action without knowing its input shape.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RetryMode(StrEnum):
    """How the delay between attempts grows."""

    EXPONENTIAL = "exponential"
    CONSTANT = "constant"
    LINEAR = "linear"


class ActionRequest(BaseModel):
    """Input of every action activity.

    Attributes:
        step_id: Path of the step in the run, e.g. ``notify`` or ``reviews[3].score``.
        idempotency_key: Stable across retries of this step execution, unique per run and step
            execution; actions pass it to the receiving system (``Idempotency-Key`` for HTTP).
        input: The step's input after template rendering. May contain ``${secret:NAME}``
            references that only the activity resolves, so secrets never enter workflow history.
        retry_mode: The step's retry preset. For ``linear`` the activity computes the next delay
            itself (Temporal's server-side policy is exponential only).
        initial_interval_s: First retry delay in seconds (the linear increment).
        maximum_interval_s: Cap on any retry delay in seconds.
        tenant: The run's tenant: the only tenant whose secrets the action may resolve.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_id: str
    idempotency_key: str
    input: dict[str, Any] = Field(default_factory=dict)
    retry_mode: RetryMode = RetryMode.EXPONENTIAL
    initial_interval_s: float = 1.0
    maximum_interval_s: float | None = None
    tenant: str = "default"


class ActionResult(BaseModel):
    """Output of every action activity.

    Attributes:
        output: The action's JSON-compatible output, stored under the step id for later steps.
        attempt: The attempt number that succeeded (1 for the first try).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Any = None
    attempt: int = 1


def linear_delay_s(attempt: int, initial_interval_s: float, maximum_interval_s: float | None) -> float:
    """Delay before the attempt after ``attempt`` under the linear preset: initial * attempt, capped.

    Args:
        attempt: The attempt that just failed (1-based).
        initial_interval_s: The first delay, also the increment.
        maximum_interval_s: Optional cap.

    Returns:
        The delay in seconds.
    """
    delay = initial_interval_s * max(attempt, 1)
    if maximum_interval_s is not None:
        delay = min(delay, maximum_interval_s)
    return delay
