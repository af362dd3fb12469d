"""Retry policies on the real server: attempt counts, backoff spacing, non-retryable errors, keys.

Timing assertions are lower bounds only: a loaded machine makes gaps longer, never shorter.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.state import RunState, StepStatus
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, failure_of, gaps, record, start, unique

# Timers and task dispatch are not perfectly punctual; a gap may come out a few ms short.
SLACK_S = 0.02


def _task(
    step_id: str, action: str, step_input: dict[str, Any], retry: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {"id": step_id, "type": "task", "action": action, "input": step_input, "retry": retry, **extra}


async def test_echo_failing_until_attempt_3_takes_3_attempts(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("retry-echo"),
        [
            _task(
                "flaky",
                "echo",
                {"fail": "Flaky", "succeed_on_attempt": 3, "value": "ok"},
                {"preset": "constant", "initial_interval": "200ms", "maximum_attempts": 5},
            ),
        ],
    )
    result = await (await start(client, task_queue, doc)).result()
    step = record(result, "flaky")
    assert (step.status, step.attempts, step.output) == (StepStatus.COMPLETED, 3, "ok")
    # Two retry delays of 200 ms lie inside the step.
    assert step.duration_s >= 0.4 - SLACK_S


async def test_constant_backoff_spacing_at_the_http_server(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/flaky", [(500, {}, {"e": 1}), (500, {}, {"e": 2}), (200, {}, {"ok": True})])
    doc = definition(
        unique("retry-http"),
        [
            _task(
                "call",
                "http",
                {"method": "POST", "url": f"{http_server.url}/flaky", "json": {"n": 1}},
                {"preset": "constant", "initial_interval": "200ms", "maximum_attempts": 5},
            ),
        ],
    )
    handle = await start(client, task_queue, doc)
    result = await handle.result()

    assert record(result, "call").attempts == 3
    requests = http_server.requests("POST", "/flaky")
    assert [r.status for r in requests] == [500, 500, 200]
    spacing = gaps([r.time for r in requests])
    assert all(gap >= 0.2 - SLACK_S for gap in spacing), spacing
    # The same Idempotency-Key on every attempt: the receiver can tell retries from new requests.
    assert {r.idempotency_key for r in requests} == {f"{handle.id}/{handle.result_run_id}/call"}
    assert {r.body for r in requests} == {requests[0].body}


async def test_backoff_presets_constant_linear_exponential(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    # Note: the dev server never retries an activity sooner than ~1 s after its failure, whatever
    # the policy or next_retry_delay says (observed: 250 ms intervals come out as 1.0 s gaps), so the
    # presets are compared with an initial interval whose later delays exceed that floor.
    presets = ("constant", "linear", "exponential")
    for preset in presets:
        http_server.route("GET", f"/{preset}", [(503, {}, "down")] * 3 + [(200, {}, {"up": True})])
    handles = await asyncio.gather(
        *(
            start(
                client,
                task_queue,
                definition(
                    unique(f"backoff-{preset}"),
                    [
                        _task(
                            "poll",
                            "http",
                            {"url": f"{http_server.url}/{preset}"},
                            {"preset": preset, "initial_interval": "600ms", "maximum_attempts": 4},
                        ),
                    ],
                ),
            )
            for preset in presets
        )
    )
    for result in await asyncio.gather(*(h.result() for h in handles)):
        assert record(result, "poll").attempts == 4
    spacing = {p: gaps([r.time for r in http_server.requests("GET", f"/{p}")]) for p in presets}
    assert all(len(s) == 3 for s in spacing.values()), spacing
    expected = {
        "constant": [0.6, 0.6, 0.6],
        "linear": [0.6, 1.2, 1.8],  # initial x attempt
        "exponential": [0.6, 1.2, 2.4],  # initial x 2^(attempt-1)
    }
    for preset, bounds in expected.items():
        for gap, bound in zip(spacing[preset], bounds, strict=True):
            assert gap >= bound - SLACK_S, (preset, spacing[preset])


async def test_non_retryable_errors_take_one_attempt(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/bad", [(400, {}, {"error": "bad request"})])
    generous = {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 5}
    cases = {
        # The action marks the error non-retryable.
        "flagged": _task("step", "echo", {"fail": "Fatal", "non_retryable": True}, generous),
        # The definition lists the (otherwise retryable) error type as non-retryable.
        "listed": _task(
            "step", "echo", {"fail": "NotWorthIt"}, {**generous, "non_retryable_error_types": ["NotWorthIt"]}
        ),
        # A 4xx is classified as a client error, which no retry can fix.
        "http_4xx": _task("step", "http", {"method": "POST", "url": f"{http_server.url}/bad"}, generous),
        # Retryable, for comparison: every attempt is used.
        "exhausted": _task("step", "echo", {"fail": "Transient"}, {**generous, "maximum_attempts": 3}),
    }
    handles = await asyncio.gather(
        *(
            start(client, task_queue, definition(unique(f"nonretry-{name.replace('_', '-')}"), [step]))
            for name, step in cases.items()
        )
    )
    outcomes = dict(zip(cases, await asyncio.gather(*(failure_of(h) for h in handles)), strict=True))

    expected = {
        "flagged": ("Fatal", 1),
        "listed": ("NotWorthIt", 1),
        "http_4xx": ("HttpClientError", 1),
        "exhausted": ("Transient", 3),
    }
    for name, (error_type, attempts) in expected.items():
        cause, result = outcomes[name]
        assert isinstance(cause, ApplicationError), name
        assert cause.type == error_type, name
        assert result is not None, name
        assert result.state == RunState.FAILED, name
        step = record(result, "step")
        assert (step.status, step.error_type, step.attempts) == (StepStatus.FAILED, error_type, attempts), (
            name
        )
    assert len(http_server.requests("POST", "/bad")) == 1


async def test_definition_defaults_apply_to_steps_without_a_policy(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("retry-defaults"),
        [{"id": "step", "type": "task", "action": "echo", "input": {"fail": "Nope"}}],
        defaults={"retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 2}},
    )
    _, result = await failure_of(await start(client, task_queue, doc))
    assert result is not None
    assert record(result, "step").attempts == 2
