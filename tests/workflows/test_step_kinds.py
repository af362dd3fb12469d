"""Every step kind, run by the generic workflow on the real dev server with a real worker."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.state import RunState, StepStatus
from tests.helpers.http_server import RecordedRequest, RecordingServer
from tests.workflows.support import definition, events, failure_of, record, start, unique


async def test_task_steps_echo_and_http(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    http_server.route("POST", "/orders", [(201, {}, {"order_id": 7})])
    doc = definition(
        unique("tasks"),
        [
            {
                "id": "greet",
                "type": "task",
                "action": "echo",
                "input": {"value": {"hello": "{{ input.who }}"}},
            },
            {
                "id": "post",
                "name": "Create the order",
                "type": "task",
                "action": "http",
                "input": {
                    "method": "POST",
                    "url": f"{http_server.url}/orders",
                    "json": {"who": "{{ steps.greet.output.hello }}", "qty": "{{ input.qty }}"},
                },
            },
        ],
        output={
            "greeting": "{{ steps.greet.output.hello }}",
            "order": "{{ steps.post.output.body.order_id }}",
        },
    )
    handle = await start(client, task_queue, doc, {"who": "ada", "qty": 3})
    result = await handle.result()

    assert result.state == RunState.COMPLETED
    assert result.output == {"greeting": "ada", "order": 7}
    [request] = http_server.requests("POST", "/orders")
    assert request.json == {"who": "ada", "qty": 3}
    assert request.idempotency_key == f"{handle.id}/{handle.result_run_id}/post"
    post = record(result, "post")
    assert (post.status, post.attempts, post.type, post.name) == (
        StepStatus.COMPLETED,
        1,
        "task",
        "Create the order",
    )
    assert post.output["status_code"] == 201
    assert post.finished_at is not None
    assert post.finished_at >= post.started_at
    assert post.duration_s is not None
    assert post.duration_s >= 0
    assert record(result, "greet").output == {"hello": "ada"}


def _branching(name: str) -> dict[str, Any]:
    return definition(
        name,
        [
            {"id": "init", "type": "set", "vars": {"amount": "{{ input.amount }}", "trace": []}},
            {
                "id": "size",
                "type": "condition",
                "if": "vars.amount > 100",
                "then": {"steps": [{"id": "big", "type": "set", "vars": {"size": "big"}}]},
                "else": {"steps": [{"id": "small", "type": "set", "vars": {"size": "small"}}]},
            },
            {
                "id": "tier",
                "type": "switch",
                "cases": [
                    {
                        "when": "vars.size == 'big' and vars.amount > 1000",
                        "then": {"steps": [{"id": "platinum", "type": "set", "vars": {"tier": "platinum"}}]},
                    },
                    {
                        "when": "vars.size == 'big'",
                        "then": {"steps": [{"id": "gold", "type": "set", "vars": {"tier": "gold"}}]},
                    },
                ],
                "default": {"steps": [{"id": "basic", "type": "set", "vars": {"tier": "basic"}}]},
            },
            {
                "id": "vip",
                "type": "task",
                "action": "echo",
                "when": "vars.tier != 'basic'",
                "input": {"value": "vip"},
            },
            {
                "id": "shortcut",
                "type": "condition",
                "if": "input.get('skip', false)",
                "then": {"goto": "done"},
            },
            {"id": "extra", "type": "set", "vars": {"extra": True}},
            {
                "id": "done",
                "type": "succeed",
                "output": {
                    "size": "{{ vars.size }}",
                    "tier": "{{ vars.tier }}",
                    "extra": "{{ vars.extra | default(false) }}",
                },
            },
            {"id": "never", "type": "task", "action": "echo", "input": {"value": "unreachable"}},
        ],
    )


async def test_condition_switch_set_when_goto_and_succeed(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = _branching(unique("branching"))
    small, gold, platinum = await asyncio.gather(
        *(
            start(client, task_queue, doc, data)
            for data in ({"amount": 5}, {"amount": 500, "skip": True}, {"amount": 5000})
        )
    )
    small_r, gold_r, platinum_r = await asyncio.gather(small.result(), gold.result(), platinum.result())

    assert small_r.state == gold_r.state == platinum_r.state == RunState.COMPLETED
    assert small_r.output == {"size": "small", "tier": "basic", "extra": True}
    assert gold_r.output == {"size": "big", "tier": "gold", "extra": False}
    assert platinum_r.output == {"size": "big", "tier": "platinum", "extra": True}

    assert record(small_r, "size").output == {"branch": "else"}
    assert record(gold_r, "size").output == {"branch": "then"}
    assert record(small_r, "tier").output == {"case": "default"}
    assert record(gold_r, "tier").output == {"case": 1}
    assert record(platinum_r, "tier").output == {"case": 0}
    assert record(small_r, "vip").status == StepStatus.SKIPPED
    assert record(gold_r, "vip").status == StepStatus.COMPLETED
    # The goto skipped 'extra'; succeed ended the run before 'never' in every case.
    assert "extra" not in {r.path for r in gold_r.steps}
    assert "extra" in {r.path for r in small_r.steps}
    for result in (small_r, gold_r, platinum_r):
        assert "never" not in {r.path for r in result.steps}
        assert record(result, "done").status == StepStatus.COMPLETED


async def test_fail_step_fails_the_run_with_its_error_type(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("failing"),
        [
            {"id": "check", "type": "task", "action": "echo", "input": {"value": "{{ input.order }}"}},
            {
                "id": "stop",
                "type": "fail",
                "message": "order {{ input.order }} is blocked",
                "error_type": "OrderBlocked",
            },
            {"id": "never", "type": "task", "action": "echo", "input": {}},
        ],
    )
    handle = await start(client, task_queue, doc, {"order": "A-1"})
    cause, result = await failure_of(handle)

    assert isinstance(cause, ApplicationError)
    assert cause.type == "OrderBlocked"
    assert cause.message == "order A-1 is blocked"
    assert result is not None
    assert result.state == RunState.FAILED
    assert result.error_type == "OrderBlocked"
    assert record(result, "stop").status == StepStatus.FAILED
    assert "never" not in {r.path for r in result.steps}


async def test_parallel_all_and_any(client: Client, task_queue: str, worker: Worker) -> None:
    doc = definition(
        unique("parallel"),
        [
            {
                "id": "both",
                "type": "parallel",
                "branches": [
                    {
                        "id": "left",
                        "steps": [
                            {
                                "id": "l",
                                "type": "task",
                                "action": "echo",
                                "input": {"value": "L", "sleep_s": 0.3},
                            }
                        ],
                    },
                    {
                        "id": "right",
                        "steps": [{"id": "r", "type": "task", "action": "echo", "input": {"value": "R"}}],
                    },
                ],
            },
            {
                "id": "either",
                "type": "parallel",
                "join": "any",
                "branches": [
                    {
                        "id": "broken",
                        "steps": [
                            {
                                "id": "b",
                                "type": "task",
                                "action": "echo",
                                "input": {"fail": "Down", "non_retryable": True},
                            }
                        ],
                    },
                    {
                        "id": "working",
                        "steps": [
                            {
                                "id": "w",
                                "type": "task",
                                "action": "echo",
                                "input": {"value": "W", "sleep_s": 0.3},
                            }
                        ],
                    },
                ],
            },
        ],
    )
    result = await (await start(client, task_queue, doc)).result()

    assert result.state == RunState.COMPLETED
    assert record(result, "both").output == {"left": "L", "right": "R"}
    # 'any': the failing branch finished first, but the first *success* wins.
    assert record(result, "either").output == {"winner": "working", "output": "W"}
    assert record(result, "b").status == StepStatus.FAILED
    assert record(result, "b").error_type == "Down"


async def test_parallel_all_fails_on_first_failure_and_cancels_the_rest(
    client: Client, task_queue: str, worker: Worker
) -> None:
    slow = {
        "id": "slow",
        "type": "task",
        "action": "echo",
        "input": {"sleep_s": 30},
        "timeouts": {"heartbeat": "2s"},
    }
    doc = definition(
        unique("parallel-fail"),
        [
            {
                "id": "both",
                "type": "parallel",
                "branches": [
                    {"id": "a", "steps": [slow]},
                    {
                        "id": "b",
                        "steps": [
                            {
                                "id": "bad",
                                "type": "task",
                                "action": "echo",
                                "input": {"fail": "Broken", "non_retryable": True},
                            }
                        ],
                    },
                ],
            }
        ],
    )
    began = time.monotonic()
    cause, result = await failure_of(await start(client, task_queue, doc))
    assert time.monotonic() - began < 20
    assert isinstance(cause, ApplicationError)
    assert cause.type == "Broken"
    assert result is not None
    assert record(result, "slow").status == StepStatus.CANCELLED
    assert record(result, "bad").status == StepStatus.FAILED


async def test_parallel_first_cancels_the_losing_activity(
    client: Client, task_queue: str, worker: Worker
) -> None:
    doc = definition(
        unique("race"),
        [
            {
                "id": "race",
                "type": "parallel",
                "join": "first",
                "branches": [
                    {
                        "id": "tortoise",
                        "steps": [
                            {
                                "id": "slow",
                                "type": "task",
                                "action": "echo",
                                "input": {"value": "slow", "sleep_s": 60},
                                "timeouts": {"heartbeat": "2s"},
                            }
                        ],
                    },
                    {
                        "id": "hare",
                        "steps": [
                            {"id": "fast", "type": "task", "action": "echo", "input": {"value": "fast"}}
                        ],
                    },
                ],
            },
            # Keeps the run open while the cancellation reaches the activity at its next heartbeat.
            {"id": "linger", "type": "delay", "duration": "4s"},
        ],
    )
    began = time.monotonic()
    handle = await start(client, task_queue, doc)
    result = await handle.result()
    assert time.monotonic() - began < 30

    assert record(result, "race").output == {"winner": "hare", "output": "fast"}
    assert record(result, "slow").status == StepStatus.CANCELLED
    history = await events(handle)
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_id
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    requested = [
        scheduled[e.activity_task_cancel_requested_event_attributes.scheduled_event_id]
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
    ]
    cancelled = [
        scheduled[e.activity_task_canceled_event_attributes.scheduled_event_id]
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED
    ]
    assert requested == ["slow"]
    # The worker stopped the activity and reported it cancelled (it learned at a heartbeat).
    assert cancelled == ["slow"]


async def test_foreach_respects_concurrency_and_keeps_item_order(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    lock = threading.Lock()
    in_flight = 0
    peak = 0

    def work(request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.3)
        with lock:
            in_flight -= 1
        return 200, {}, {"done": request.json["item"] * 10}

    http_server.route("POST", "/work", work)
    doc = definition(
        unique("foreach"),
        [
            {
                "id": "loop",
                "type": "foreach",
                "items": "input.items",
                "as": "item",
                "concurrency": 2,
                "steps": [
                    {
                        "id": "work",
                        "type": "task",
                        "action": "http",
                        "input": {
                            "method": "POST",
                            "url": f"{http_server.url}/work",
                            "json": {"item": "{{ item }}", "index": "{{ index }}"},
                        },
                    },
                ],
                "output": "{{ steps.work.output.body.done }}",
            }
        ],
        output="{{ steps.loop.output }}",
    )
    items = [6, 5, 4, 3, 2, 1]
    handle = await start(client, task_queue, doc, {"items": items})
    result = await handle.result()

    assert result.output == [i * 10 for i in items]
    assert peak == 2, f"at most 2 items at a time, and 2 did overlap (peak {peak})"
    requests = http_server.requests("POST", "/work")
    assert sorted(r.json["index"] for r in requests) == list(range(6))
    keys = {r.idempotency_key for r in requests}
    assert keys == {f"{handle.id}/{handle.result_run_id}/loop[{i}].work" for i in range(6)}
    assert [record(result, f"loop[{i}].work").output["body"]["done"] for i in range(6)] == result.output


async def test_delays_duration_until_and_open_business_hours(
    client: Client, task_queue: str, worker: Worker
) -> None:
    until = datetime.now(UTC) + timedelta(seconds=3)
    doc = definition(
        unique("delays"),
        [
            {"id": "pause", "type": "delay", "duration": "{{ input.pause }}"},
            {"id": "until", "type": "delay", "until": "{{ input.until }}"},
            # Open every day, all day: no wait at all, and no timer.
            {
                "id": "hours",
                "type": "delay",
                "business_hours": {
                    "timezone": "Europe/Paris",
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "start": "00:00",
                    "end": "24:00",
                },
            },
        ],
    )
    began = time.monotonic()
    handle = await start(client, task_queue, doc, {"pause": "1s", "until": until.isoformat()})
    result = await handle.result()
    elapsed = time.monotonic() - began

    pause, until_rec, hours = record(result, "pause"), record(result, "until"), record(result, "hours")
    assert pause.output["waited_s"] == 1.0
    assert pause.duration_s >= 1.0
    assert datetime.fromisoformat(until_rec.output["resumed_at"]) == until
    assert until_rec.finished_at >= until
    assert hours.output["waited_s"] == 0
    assert elapsed >= 2.5
    timers = await events(handle, EventType.EVENT_TYPE_TIMER_STARTED)
    assert len(timers) == 2
    summaries = [
        client.data_converter.payload_converter.from_payload(t.user_metadata.summary, str) for t in timers
    ]
    assert summaries[0] == "pause: wait 1s"
    assert summaries[1].startswith("until: wait ")
