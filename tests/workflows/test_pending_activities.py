"""More concurrent step calls than the server lets a run have pending (its
``limit.numPendingActivities.error``), on a real dev server with that limit lowered to 20 (and the
worker's cap, ``workflows.generic.MAX_PENDING_ACTIVITIES``, lowered to match, as an operator of such
a cluster would build it). Before the cap, a valid definition asking for more (an attacker's probe
found 25 branches of a foreach of concurrency 100 against the default 2,000) had its workflow task's
commands refused by the server, again and again: the run stuck. Now the calls over the cap wait
their turn and the run completes, every call once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import workflows.generic
from interpreter.state import RunState
from tests.workflows.limited_server import start_limited_server
from tests.workflows.support import definition, events, eventually, start, terminated_too_large, unique
from worker import build_worker
from workflows.generic import ENGINE_LEVEL, PATCH_LEVELS, PATCH_SLOT_SEND_PACING

LIMIT = 20


@pytest_asyncio.fixture(loop_scope="session")
async def pending_limited_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_limited_server({"limit.numPendingActivities.error": LIMIT})
    try:
        yield env
    finally:
        await env.shutdown()


async def test_calls_over_the_pending_activity_limit_wait_their_turn_and_the_run_completes(
    pending_limited_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflows.generic, "MAX_PENDING_ACTIVITIES", LIMIT)
    client = pending_limited_env.client
    items = 3 * LIMIT // 2
    document = definition(
        unique("pending"),
        [
            {
                "id": "each",
                "type": "foreach",
                "items": f"range({items}) | list",
                "concurrency": items,
                "steps": [{"id": "call", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}],
            }
        ],
        output={"results": "{{ steps.each.output }}"},
    )
    async with httpx.AsyncClient() as http_client, build_worker(client, task_queue, http_client):
        handle = await start(client, task_queue, document, execution_timeout=timedelta(seconds=90))
        result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == {"results": list(range(items))}
    history = await events(handle)
    scheduled = [e for e in history if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert len(scheduled) == items
    # No workflow task was refused (before: failed with the server's limit, again and again).
    assert not [e for e in history if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    # At most LIMIT were pending at once.
    pending = peak = 0
    for event in history:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            pending += 1
            peak = max(peak, pending)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            pending -= 1
    assert peak == LIMIT


def _settled(history: list[HistoryEvent]) -> bool:
    """Whether the run has done all it can: four calls started on the team's queue, the four large
    calls paced (their timers fired) and waiting for slots, its last task completed."""
    kinds = [e.event_type for e in history]
    fired = kinds.count(EventType.EVENT_TYPE_TIMER_FIRED)
    return (
        kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == SLOTS
        and fired >= SLOTS  # the branch's delay, then a pacing timer for each large call but one
        and fired == kinds.count(EventType.EVENT_TYPE_TIMER_STARTED)
        and kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )


SLOTS = 4


LARGE_INPUT = {"a": ["x" * 1000] * 650, "b": ["y" * 1000] * 650}
"""The run input each of :func:`_held_then_sent`'s large calls sends (1.3 MB)."""


def _held_echo() -> tuple[asyncio.Event, Any]:
    """An ``echo`` activity for a team's worker that answers once the event is set."""
    answer = asyncio.Event()

    @activity.defn(name="echo")
    async def held(request: Any) -> dict[str, Any]:
        await answer.wait()
        return {"output": "held", "attempt": activity.info().attempt}

    return answer, held


def _held_then_sent(team_queue: str) -> dict[str, Any]:
    """Four calls held on ``team_queue``, and beside them, a second later, four calls of 1.3 MB (two
    templates: one renders at most 1 MiB); both ``on_failure: continue``."""

    def each(step_id: str, call: dict[str, Any]) -> dict[str, Any]:
        call = {"id": f"{step_id}_call", "type": "task", "action": "echo", "on_failure": "continue", **call}
        return {
            "id": step_id,
            "type": "foreach",
            "items": f"range({SLOTS}) | list",
            "concurrency": SLOTS,
            "steps": [call],
        }

    held_call = {"task_queue": team_queue, "timeouts": {"schedule_to_close": "80s"}, "input": {"value": 1}}
    # (The echo's answer is over an action's output budget: the call fails, and the run goes on.)
    large = {"input": {"a": "{{ input.a }}", "b": "{{ input.b }}"}}
    return definition(
        unique("slots"),
        [
            {
                "id": "both",
                "type": "parallel",
                "branches": [
                    {
                        "id": "hold",
                        "steps": [each("held", held_call)],
                    },
                    {
                        "id": "send",
                        "steps": [{"id": "after", "type": "delay", "duration": "1s"}, each("sent", large)],
                    },
                ],
            }
        ],
    )


@pytest.mark.parametrize("level", [PATCH_LEVELS[PATCH_SLOT_SEND_PACING] - 1, ENGINE_LEVEL])
async def test_calls_whose_slots_free_together_are_sent_over_several_workflow_tasks(
    pending_limited_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    # Patch slot-send-pacing, for activities. Four calls on a team's own queue hold every slot (the
    # worker's cap lowered to 4); four calls, each sending 1.3 MB, are paced and wait for slots.
    # The team's worker answers the four while the product's worker is down, so they reach the
    # run in one workflow task. Before, the four waiting calls went out in that task, 5.2 MB in
    # one completion: the server refused it and terminated the run. Now each is paced again where
    # it goes out.
    monkeypatch.setattr(workflows.generic, "MAX_PENDING_ACTIVITIES", SLOTS)
    client = pending_limited_env.client
    team_queue = unique("team")
    answer, held = _held_echo()
    document = _held_then_sent(team_queue)
    async with (
        httpx.AsyncClient() as http_client,
        Worker(client, task_queue=team_queue, activities=[held]),
    ):
        async with build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)):
            handle = await start(
                client,
                task_queue,
                document,
                LARGE_INPUT,
                engine_level=level,
                execution_timeout=timedelta(seconds=90),
            )
            await eventually(
                lambda: events(handle), _settled, timeout=60, what="four calls held, four waiting"
            )
        answer.set()  # no product worker: the four answers wait for the run's next workflow task together
        await eventually(
            lambda: events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED),
            lambda completed: len(completed) == SLOTS,
            timeout=30,
            what="the four held calls answered",
        )
        async with build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)):
            if level < ENGINE_LEVEL:
                await terminated_too_large(handle)  # the finding, kept for runs of the generation before
                return
            result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    tasks = [e.activity_task_scheduled_event_attributes.workflow_task_completed_event_id for e in scheduled]
    assert len(tasks) == 2 * SLOTS
    assert len(set(tasks[SLOTS:])) == SLOTS  # 1.3 MB each: one call a workflow task


async def test_calls_that_waited_for_slots_are_refused_when_the_history_grew_past_the_ceiling_meanwhile(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Patch slot-send-pacing, its send guard. Four calls hold every slot (the worker's cap lowered
    # to 4); four calls of 1.3 MB pass the send guard and wait for slots. While they wait, signals
    # nobody asked for (1.9 MB each, refused by the run, but in its history) take the history near
    # the ceiling (lowered here to 15 MiB). Before, a call that waited was sent once its slot
    # freed, whatever the history had become (or, several freed in one workflow task, the server
    # terminated the run: the test above). Now the guard is asked again where it goes out, and
    # each fails its step (HistoryLimit, on_failure continue).
    monkeypatch.setattr(workflows.generic, "MAX_PENDING_ACTIVITIES", SLOTS)
    monkeypatch.setattr(workflows.generic, "HISTORY_SEND_CEILING", CEILING)
    team_queue = unique("team")
    answer, held = _held_echo()
    document = _held_then_sent(team_queue)
    async with (
        httpx.AsyncClient() as http_client,
        Worker(client, task_queue=team_queue, activities=[held]),
        build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
    ):
        handle = await start(
            client,
            task_queue,
            document,
            LARGE_INPUT,
            engine_level=ENGINE_LEVEL,
            execution_timeout=timedelta(seconds=90),
        )
        await eventually(lambda: events(handle), _settled, timeout=60, what="four calls held, four waiting")
        for n in range(NOISE):
            await handle.signal(f"noise{n}", "z" * 1_900_000)
        answer.set()
        result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    size = (await handle.describe()).raw_description.workflow_execution_info.history_size_bytes
    assert len(scheduled) == SLOTS  # the held calls only
    assert size < 1_500_000 + NOISE * 1_950_000, f"a run of {size:,} bytes of history"  # no call's input
    refused = [r for r in result.steps if r.id == "sent_call"]
    assert len(refused) == SLOTS
    for record in refused:
        assert record.error_type == "HistoryLimit", record.error
        assert "would bring the run's history" in (record.error or ""), record.error


CEILING = 15 * 1024 * 1024
"""A send guard ceiling the four held calls' rooms (2 MiB each: a team's worker may return that
much), the four waiting calls' rooms (528 KiB) and inputs, and the run's input fit under."""
NOISE = 8
"""Signals of 1.9 MB: the history, 1.4 MB before them, is then past the ceiling less a call's input."""
