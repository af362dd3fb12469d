"""Runs that fail at run time for reasons the definition could not rule out, each with a clear type."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.state import RunState, StepStatus
from tests.workflows.support import definition, failure_of, record, start, unique

LOOP = [
    {"id": "init", "type": "set", "vars": {"i": 0}},
    {"id": "tick", "type": "set", "vars": {"i": "{{ vars.i + 1 }}"}, "max_visits": 2},
    {"id": "again", "type": "condition", "if": "vars.i < 5", "then": {"goto": "tick"}, "max_visits": 2},
]

TASK = {"type": "human_task", "assignee": "alice", "title": "Review"}
_TODAY = datetime.now(UTC).date()
MONDAYS = [d.isoformat() for d in (_TODAY + timedelta(days=n) for n in range(3800)) if d.weekday() == 0]
"""Every Monday of the next ten years and more: business hours open on Mondays only never open."""

CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], str, str | None]] = {
    # name: (steps, extra definition fields, input, expected error type, failing step path)
    "template": (
        [{"id": "use", "type": "set", "vars": {"x": "{{ input.order.id }}"}}],
        {},
        {},
        "TemplateError",
        "use",
    ),
    # Limits stop the run before the step executes again: no record for it, the message names it.
    "loop": (LOOP, {}, {}, "LoopLimitExceeded", None),
    "steps": (LOOP, {"limits": {"max_step_executions": 3}}, {}, "StepLimitExceeded", None),
    "items": (
        [
            {
                "id": "each",
                "type": "foreach",
                "items": "input.things",
                "steps": [{"id": "x", "type": "set", "vars": {"x": 1}}],
            }
        ],
        {},
        {"things": {"a": 1}},
        "InvalidItems",
        "each",
    ),
    "too-many": (
        [
            {
                "id": "each",
                "type": "foreach",
                "items": "input.things",
                "max_items": 2,
                "steps": [{"id": "x", "type": "set", "vars": {"x": 1}}],
            }
        ],
        {},
        {"things": [1, 2, 3]},
        "TooManyItems",
        "each",
    ),
    "until": (
        [{"id": "wait", "type": "delay", "until": "{{ input.when }}"}],
        {},
        {"when": "2030-01-01T00:00:00"},
        "InvalidTimestamp",
        "wait",
    ),
    # Found by an attacker's probe: each of the next five failed the workflow task again and again
    # (an OSError, OverflowError or ValueError out of the step), the run stuck until its timeout.
    "until-past-9999": (
        [{"id": "wait", "type": "delay", "until": "{{ input.when }}"}],
        {},
        {"when": "9999-12-31T23:59:59-12:00"},  # year 10000 in UTC
        "InvalidTimestamp",
        "wait",
    ),
    "zone-a-directory": (
        [{"id": "office", "type": "delay", "business_hours": {"timezone": "{{ input.tz }}"}}],
        {},
        {"tz": "America"},  # a directory of the tz database
        "InvalidTimeZone",
        "office",
    ),
    "zone-too-long": (
        [{"id": "review", **TASK, "due": "1d", "business_hours": {"timezone": "{{ input.tz }}"}}],
        {},
        {"tz": "a" * 300},
        "InvalidTimeZone",
        "review",
    ),
    "no-open-window": (
        [
            {
                "id": "office",
                "type": "delay",
                "business_hours": {"timezone": "UTC", "days": ["mon"], "holidays": MONDAYS},
            }
        ],
        {},
        {},
        "InvalidBusinessHours",
        "office",
    ),
    "due-past-business-search": (
        [{"id": "review", **TASK, "due": "36600d", "business_hours": {"timezone": "UTC"}}],
        {},
        {},
        "InvalidBusinessHours",
        "review",
    ),
    "duration": (
        [{"id": "wait", "type": "delay", "duration": "{{ input.pause }}"}],
        {},
        {"pause": "soon"},
        "InvalidDuration",
        "wait",
    ),
    "timeout": (
        [
            {
                "id": "slow",
                "type": "task",
                "action": "echo",
                "input": {"sleep_s": 5},
                "timeouts": {"start_to_close": "1s"},
                "retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 2},
            }
        ],
        {},
        {},
        "ActivityTimeout.START_TO_CLOSE",
        "slow",
    ),
    "unknown-secret": (
        [
            {
                "id": "call",
                "type": "task",
                "action": "http",
                "input": {
                    "url": "http://127.0.0.1:9/x",
                    "headers": {"Authorization": "${secret:NOPE_NOT_SET}"},
                },
            }
        ],
        {},
        {},
        "SecretNotFound",
        "call",
    ),
}


async def test_runtime_failures_have_clear_error_types(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handles = await asyncio.gather(
        *(
            start(client, task_queue, definition(unique(f"err-{name}"), steps, **extra), run_input)
            for name, (steps, extra, run_input, _, _) in CASES.items()
        )
    )
    outcomes = await asyncio.gather(*(failure_of(h) for h in handles))
    for (name, (_, _, _, error_type, path)), (cause, result) in zip(CASES.items(), outcomes, strict=True):
        assert isinstance(cause, ApplicationError), name
        assert cause.type == error_type, (name, cause.type, cause.message)
        assert result is not None, name
        assert result.state == RunState.FAILED, name
        if path is None:
            assert "tick" in cause.message or "max_step_executions (3)" in cause.message, (
                name,
                cause.message,
            )
            assert all(r.status == StepStatus.COMPLETED for r in result.steps), name
            continue
        step = record(result, path)
        assert step.status == StepStatus.FAILED, (name, step)
        assert step.error_type == error_type, (name, step)
    timeout_step = record(outcomes[list(CASES).index("timeout")][1], "slow")
    assert timeout_step.attempts == 2
