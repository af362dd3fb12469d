"""With payload encryption, an input or a next run's input just under Temporal's 2 MiB payload
limit before encryption is just over it after: the codec's framing (a nonce, the tag and the key
id, 86 bytes with a one-letter key id) made the SDK refuse the payload and fail the workflow task
on every retry, the run stuck running, where without the codec the same run went through. The
inline limits keep :data:`workflows.generic.CODEC_FRAMING_MARGIN` (1 KiB) under Temporal's for
that framing: the step fails with ``PayloadTooLarge`` and its ``on_failure`` applies, or the run
fails with ``ContinueAsNewTooLarge``, as past the limit itself.

Each size is calibrated on a run of the same definition without the codec (ids of the same
length), so the encrypted run's payload lands in the window: under 2 MiB in clear, over it
encrypted. Every run has an execution timeout, so a regression fails the test (the run times out)
instead of hanging it.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from interpreter.actions import known_actions
from interpreter.state import RunInput, RunOptions, RunResult, RunState, StepStatus
from interpreter.validate import load_definition
from starter.connection import connect_client
from tests.test_codec import KEY_A
from tests.workflows.support import Handle, counting_loop, events, unique
from worker import build_worker
from workflows.generic import (
    CODEC_FRAMING_MARGIN,
    ENGINE_LEVEL,
    INLINE_INPUT_MAX_BYTES,
    PAYLOAD_TOO_LARGE,
    RunDefinitionWorkflow,
)

WAIT_S = 90
FRAMING = 86
"""Bytes the encryption codec adds to a payload of about 2 MiB (measured: 2,097,203 encrypted
against 2,097,117 in clear)."""
TARGET = INLINE_INPUT_MAX_BYTES - 40
"""The payload's size in clear: 40 bytes under the limit, 46 over it encrypted."""
BIG = ["x" * 3000 for _ in range(230)]
"""About 0.69 MB; a task input reading it three times is about 2.07 MB, under 2 MiB."""


async def _keyed(env: WorkflowEnvironment) -> Client:
    return await connect_client(
        address=env.client.service_client.config.target_host, env={"WFA_PAYLOAD_KEYS": f"a={KEY_A}"}
    )


async def _run(
    client: Client,
    task_queue: str,
    doc: dict[str, Any],
    run_input: dict[str, Any],
    *,
    level: int = ENGINE_LEVEL,
) -> Handle:
    """Runs ``doc`` at generation ``level`` (this build's by default) under an id as long as every
    other's of the test, on a worker of ``client`` (its codec), until it closes."""
    definition = load_definition(doc, known_actions=known_actions())
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(definition=definition, input=run_input, options=RunOptions(engine_level=level)),
        id=unique("margin"),
        task_queue=task_queue,
        execution_timeout=timedelta(seconds=WAIT_S),
    )
    async with httpx.AsyncClient() as http, build_worker(client, task_queue, http):
        try:
            async with asyncio.timeout(WAIT_S + 30):
                await handle.result()
        except WorkflowFailureError:
            pass
    # The first run of the chain (a handle without a run id reads the latest).
    return client.get_workflow_handle_for(
        RunDefinitionWorkflow.run, handle.id, run_id=handle.first_execution_run_id
    )


async def _no_failed_task(handle: Handle) -> None:
    described = await handle.describe()
    assert described.status != WorkflowExecutionStatus.RUNNING
    failed = await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    assert not failed, [e.workflow_task_failed_event_attributes.failure.message for e in failed]


async def test_a_task_input_under_the_limit_in_clear_but_over_it_encrypted_fails_its_step(
    client: Client, temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    doc = {
        "name": unique("codecmargin"),
        "steps": [
            {
                "id": "big",
                "type": "task",
                "action": "echo",
                "input": {
                    "a": "{{ input.big }}",
                    "b": "{{ input.big }}",
                    "c": "{{ input.big }}",
                    "pad": "{{ input.pad }}",
                },
                "on_failure": "continue",
            },
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "went on"}},
        ],
        "output": {"after": "{{ steps.after.output }}"},
    }
    # Calibration without the codec: the scheduled input's size with a 10-byte pad.
    probe = await _run(client, f"{task_queue}-clear", doc, {"big": BIG, "pad": "p" * 10})
    scheduled = await events(probe, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    sizes = [e.activity_task_scheduled_event_attributes.input.payloads[0].ByteSize() for e in scheduled]
    pad = 10 + TARGET - max(sizes)
    assert 0 < pad < 100_000, sizes

    # With the codec, the same input failed its workflow task on every retry before the margin
    # (TMPRL1103, 2,097,203 bytes against 2,097,152); now the step fails, on_failure applies.
    keyed = await _keyed(temporal_env)
    handle = await _run(keyed, task_queue, doc, {"big": BIG, "pad": "p" * pad})
    await _no_failed_task(handle)
    result: RunResult = await handle.result()
    assert result.state == RunState.COMPLETED, (result.error, result.error_type)
    assert result.output == {"after": "went on"}
    big = next(record for record in result.steps if record.id == "big")
    assert (big.status, big.error_type) == (StepStatus.FAILED, PAYLOAD_TOO_LARGE)
    assert f"{TARGET} bytes serialized" in (big.error or ""), big.error


async def test_a_next_run_input_under_the_limit_in_clear_but_over_it_encrypted_fails_the_run(
    client: Client, temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    doc = {
        "name": unique("codeccan"),
        "steps": [{"id": "init", "type": "set", "vars": {"n": 0}}, *counting_loop("l", "n", 60)],
        "limits": {"history_budget": 100},
    }
    # Calibration without the codec: the first next run's input with a 10-byte pad.
    base = {f"p{i}": str(i) * 400_000 for i in range(5)}
    probe = await _run(client, f"{task_queue}-clear", doc, {**base, "pad": "p" * 10})
    switched = await events(probe, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW)
    assert switched, "the calibration run did not continue as new"
    size = switched[0].workflow_execution_continued_as_new_event_attributes.input.payloads[0].ByteSize()
    pad = 10 + TARGET - size
    assert 0 < pad < 200_000, size

    keyed = await _keyed(temporal_env)
    # The next run's input holds the step records' timestamps and durations, whose digits vary from
    # run to run (tens of bytes): an attempt that lands outside the codec's window (TARGET +-40,
    # 86 bytes of framing) is measured from its message and tried again, nearer.
    sizes = []
    for _ in range(3):
        handle = await _run(keyed, task_queue, doc, {**base, "pad": "p" * pad})
        await _no_failed_task(handle)  # whatever the size: never a workflow task failing
        try:
            await handle.result()
        except WorkflowFailureError as err:
            cause = err.cause
        else:
            raise AssertionError("the run completed")
        assert isinstance(cause, ApplicationError)
        assert cause.type == "ContinueAsNewTooLarge", cause.message
        match = re.search(r"is (\d+) bytes", cause.message)
        assert match, cause.message
        sizes.append(int(match.group(1)))
        if INLINE_INPUT_MAX_BYTES - FRAMING < sizes[-1] <= INLINE_INPUT_MAX_BYTES:
            break
        pad += TARGET - sizes[-1]
    # Refused by the margin, not by the limit: under it in clear, over it encrypted.
    assert INLINE_INPUT_MAX_BYTES - FRAMING < sizes[-1] <= INLINE_INPUT_MAX_BYTES, sizes
    assert "less a codec's framing" in cause.message
    assert FRAMING < CODEC_FRAMING_MARGIN
