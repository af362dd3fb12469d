"""A run whose step records take its result (or its failure's details) past Temporal's payload
limit, on a real dev server whose limit (``limit.blobSize.error``) is lowered to 64 KiB, with the
worker's ``workflows.generic.RESULT_MAX_BYTES`` lowered to match (as a build for such a cluster
would be). Before, the SDK refused the completion and the workflow task failed again and again:
the run never closed (an attacker's probe found it at the default 2 MiB with a valid definition of
100 branches of a 200-item foreach). Now the run closes with its result (or details) without the
records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

import workflows.generic
from interpreter.state import RunState
from tests.workflows.limited_server import start_limited_server
from tests.workflows.support import events, eventually, failure_of, start, status, unique
from worker import build_worker

LIMIT = 64 * 1024


@pytest_asyncio.fixture(loop_scope="session")
async def blob_limited_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_limited_server({"limit.blobSize.error": LIMIT, "limit.blobSize.warn": LIMIT // 2})
    try:
        yield env
    finally:
        await env.shutdown()


def _many_records(fail: bool) -> dict[str, Any]:
    """A foreach of 400 items, each one ``set`` step: about 90 KB of step records; then a step
    that fails when ``fail``."""
    steps: list[dict[str, Any]] = [
        {
            "id": "each",
            "type": "foreach",
            "items": "range(400) | list",
            "concurrency": 20,
            "fan_out_above": 1000,
            "steps": [{"id": "pad", "type": "set", "vars": {"p": 1}}],
            "output": "{{ index }}",
        }
    ]
    if fail:
        steps.append({"id": "last", "type": "fail", "message": "failed after the items"})
    return {
        "name": unique("many-records"),
        "limits": {"max_step_executions": 2000},
        "steps": steps,
        "output": {"items": "{{ steps.each.output | length }}"},
    }


async def test_a_result_whose_records_pass_the_payload_limit_is_returned_without_them(
    blob_limited_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflows.generic, "RESULT_MAX_BYTES", LIMIT)
    client = blob_limited_env.client
    async with httpx.AsyncClient() as http_client, build_worker(client, task_queue, http_client):
        done = await start(
            client, task_queue, _many_records(fail=False), execution_timeout=timedelta(seconds=60)
        )
        result = await done.result()
        assert result.state == RunState.COMPLETED
        assert result.output == {"items": 400}
        assert result.steps == []

        failed = await start(
            client, task_queue, _many_records(fail=True), execution_timeout=timedelta(seconds=60)
        )
        cause, details = await failure_of(failed)
        assert isinstance(cause, ApplicationError)
        assert cause.message == "failed after the items"
        assert details is not None
        assert details.state == RunState.FAILED
        assert details.steps == []
    for handle in (done, failed):
        history = await events(handle)
        assert not [e for e in history if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]


async def test_a_status_whose_records_pass_the_payload_limit_answers_with_the_latest_that_fit(
    blob_limited_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status query of a run with that many records: answered with the most recent records that
    fit, the others counted in ``steps_dropped`` (before, the query failed for as long as the run
    kept them)."""
    monkeypatch.setattr(workflows.generic, "RESULT_MAX_BYTES", LIMIT)
    client = blob_limited_env.client
    document = _many_records(fail=False)
    document["steps"].append({"id": "review", "type": "approval", "approvers": ["alice"]})
    async with httpx.AsyncClient() as http_client, build_worker(client, task_queue, http_client):
        handle = await start(client, task_queue, document, execution_timeout=timedelta(seconds=60))
        waiting = await eventually(
            lambda: status(handle),
            lambda s: s.state == RunState.AWAITING_APPROVAL,
            timeout=30,
            what="the approval",
        )
        assert waiting.steps_dropped > 0
        kept = len(waiting.steps)
        assert kept + waiting.steps_dropped == 400 + 2  # the items, the foreach and the approval
        assert waiting.steps[-1].path == "review"  # the latest are kept
        assert waiting.model_dump_json().encode().__len__() <= LIMIT
        await handle.signal("approve", {"actor": "alice"})
        assert (await handle.result()).state == RunState.COMPLETED
