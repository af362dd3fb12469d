"""More concurrent step calls than the server lets a run have pending (its
``limit.numPendingActivities.error``), on a real dev server with that limit lowered to 20 (and the
worker's cap, ``workflows.generic.MAX_PENDING_ACTIVITIES``, lowered to match, as an operator of such
a cluster would build it). Before the cap, a valid definition asking for more (an attacker's probe
found 25 branches of a foreach of concurrency 100 against the default 2,000) had its workflow task's
commands refused by the server, again and again: the run stuck. Now the calls over the cap wait
their turn and the run completes, every call once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

import workflows.generic
from interpreter.state import RunState
from tests.workflows.limited_server import start_limited_server
from tests.workflows.support import definition, events, start, unique
from worker import build_worker

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
