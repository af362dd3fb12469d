"""``RunOptions.result_steps``: how a finished run's result carries its step records.

A run whose input does not name the option returns every field of every record, as before the
option existed (its input and its result are byte for byte what they were); ``compact`` leaves out
the fields holding their default and reads back as the same result; ``none`` returns no records
from a completed run (they stay in the ``status`` query), while a run that fails keeps them in its
error's details. Real dev server, the product's worker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from interpreter.state import (
    ResultSteps,
    RunInput,
    RunOptions,
    RunResult,
    RunState,
    StepRecord,
    StepStatus,
)
from interpreter.validate import load_definition
from tests.workflows.support import (
    Handle,
    failure_of,
    recorded_input_and_result,
    replays_as_recorded,
    status,
    unique,
)
from workflows.generic import RunDefinitionWorkflow


def _document(fail_last: bool = False) -> dict[str, Any]:
    last: dict[str, Any] = {"value": "{{ steps.one.output }}-two"}
    if fail_last:
        last = {"fail": "Broken", "non_retryable": True}
    return {
        "name": unique("result-steps"),
        "steps": [
            {"id": "one", "type": "task", "action": "echo", "input": {"value": "{{ input.n }}-one"}},
            {"id": "two", "type": "task", "action": "echo", "input": last},
        ],
        "output": "{{ steps.two.output }}",
    }


async def _start(client: Client, task_queue: str, document: dict[str, Any], **options: Any) -> Handle:
    run = RunInput(definition=load_definition(document), input={"n": 7}, options=RunOptions(**options))
    return await client.start_workflow(
        RunDefinitionWorkflow.run,
        run,
        id=unique("result-steps"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=2),
    )


async def test_a_run_that_does_not_name_the_option_returns_every_field_as_before(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await _start(client, task_queue, _document())
    result = await handle.result()
    assert result.output == "7-one-two"
    assert [r.path for r in result.steps] == ["one", "two"]
    run_input, raw = await recorded_input_and_result(handle)
    assert "result_steps" not in run_input["options"]  # the input of a run started before the option
    recorded = json.loads(raw)
    assert recorded["error"] is None
    assert recorded["error_type"] is None
    assert all(step["error"] is None and step["error_type"] is None for step in recorded["steps"])
    assert raw == pydantic_data_converter.payload_converter.to_payloads([result])[0].data


async def test_compact_reads_back_as_the_same_records_and_is_smaller(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await _start(client, task_queue, _document(), result_steps=ResultSteps.COMPACT)
    result = await handle.result()
    assert result.output == "7-one-two"
    run_input, raw = await recorded_input_and_result(handle)
    assert run_input["options"]["result_steps"] == "compact"
    recorded = json.loads(raw)
    assert "error" not in recorded
    assert all("error" not in step for step in recorded["steps"])
    # The same records the status query has (it builds them in full).
    assert result.steps == (await status(handle)).steps
    assert [r.status for r in result.steps] == [StepStatus.COMPLETED, StepStatus.COMPLETED]
    full = RunResult.model_validate_json(raw)
    assert len(raw) < len(full.model_dump_json())
    await replays_as_recorded(handle)


async def test_none_returns_no_records_and_the_status_query_still_has_them(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await _start(client, task_queue, _document(), result_steps=ResultSteps.NONE)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == "7-one-two"
    assert result.steps == []
    _, raw = await recorded_input_and_result(handle)
    assert json.loads(raw) == {"state": "completed", "output": "7-one-two"}
    closed = await status(handle)  # the run is closed: the worker replays it to answer
    assert [(r.path, r.output) for r in closed.steps] == [("one", "7-one"), ("two", "7-one-two")]
    await replays_as_recorded(handle)


async def test_a_failed_run_keeps_its_records_in_the_error_details_under_none(
    client: Client, task_queue: str, worker: Worker
) -> None:
    handle = await _start(client, task_queue, _document(fail_last=True), result_steps=ResultSteps.NONE)
    cause, details = await failure_of(handle)
    assert details is not None, cause
    assert details.state == RunState.FAILED
    assert [(r.path, r.status) for r in details.steps] == [
        ("one", StepStatus.COMPLETED),
        ("two", StepStatus.FAILED),
    ]
    assert details.steps[1].error_type == "Broken"
    await replays_as_recorded(handle)


def test_shaped_results_read_back_as_the_same_values() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    result = RunResult(
        state=RunState.COMPLETED,
        output={"n": 0, "empty": None},
        steps=[
            StepRecord(
                id="a",
                path="a",
                type="task",
                name="a",
                status=StepStatus.COMPLETED,
                attempts=1,
                started_at=now,
                finished_at=now,
                duration_s=0.0,
                output=0,
            ),
            StepRecord(
                id="b", path="b", type="approval", name="B", status=StepStatus.SKIPPED, started_at=now
            ),
        ],
    )
    converter = pydantic_data_converter.payload_converter
    encoded = {shape: converter.to_payloads([result.shaped(shape)])[0].data for shape in ResultSteps}
    assert encoded[ResultSteps.FULL] == converter.to_payloads([result])[0].data
    assert RunResult.model_validate_json(encoded[ResultSteps.COMPACT]) == result
    assert RunResult.model_validate_json(encoded[ResultSteps.NONE]) == result.model_copy(update={"steps": []})
    assert len(encoded[ResultSteps.NONE]) < len(encoded[ResultSteps.COMPACT]) < len(encoded[ResultSteps.FULL])
    # The failure details path (model_dump) has the same shape as the payload.
    compact = result.shaped(ResultSteps.COMPACT)
    assert compact.model_dump(mode="json") == json.loads(encoded[ResultSteps.COMPACT])
    # An input that does not name the option reads as ``full``; ``full`` is left out of the payload.
    assert RunOptions.model_validate({}).result_steps == ResultSteps.FULL
    assert "result_steps" not in RunOptions().model_dump(mode="json")
