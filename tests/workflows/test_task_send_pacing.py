"""What one workflow task sends, on a real dev server: the server takes a workflow task completion
of at most 4 MiB (its gRPC limit). Found by a probe of this session: a foreach of 12 items, each
task's input a 0.9 MB list (under Temporal's 2 MiB per payload), scheduled 11 MB in one completion;
the SDK failed the whole run (``GrpcMessageTooLarge``): no compensation, no ``on_failure``. Now once
the inputs a workflow task sends add up to ``TASK_SEND_BUDGET`` (1.5 MiB) the next waits for the
next workflow task, and the run goes on as the definition says.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio import workflow as temporal_workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

import workflows.generic
from interpreter.state import RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from tests.workflows.support import (
    chain_events,
    compensated_echo,
    definition,
    events,
    start,
    task_failures,
    terminated_too_large,
    unique,
)
from workflows.generic import (
    ENGINE_LEVEL,
    PATCH_CHILD_SEND_PACING,
    PATCH_LEVELS,
    PATCH_TASK_INPUT_ESCAPES,
    RunDefinitionWorkflow,
)


def _echo_each(count: int, call_input: dict[str, Any]) -> dict[str, Any]:
    """A foreach (``each``) of ``count`` echo tasks (``call``) at once, sending ``call_input``. Its
    large answer is over an action's output budget: the step fails and goes on (what matters here
    is that each call was sent)."""
    call = {"id": "call", "type": "task", "action": "echo", "on_failure": "continue", "input": call_input}
    return {
        "id": "each",
        "type": "foreach",
        "items": f"range({count}) | list",
        "concurrency": count,
        "steps": [call],
    }


@pytest.mark.parametrize("level", [0, ENGINE_LEVEL], ids=["asked", "generation"])
async def test_large_inputs_of_one_workflow_task_are_sent_over_several(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    document = definition(
        unique("sends"),
        [
            compensated_echo("charge", "ok", "refund", "refunded"),
            _echo_each(12, {"value": "{{ input.big }}", "item": "{{ item }}"}),
        ],
        output={"n": "{{ steps.each.output | length }}"},
    )
    handle = await start(
        client,
        task_queue,
        document,
        {"big": ["x" * 1000] * 900},
        engine_level=level,
        execution_timeout=timedelta(seconds=90),
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"n": 12}
    calls = [r for r in result.steps if r.id == "call"]
    assert [r.error_type for r in calls] == ["ActionOutputTooLarge"] * 12  # every one was sent, once
    assert await task_failures(handle) == []
    scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert len(scheduled) == 13
    # Sent over several workflow tasks, each completion under the server's 4 MiB.
    tasks = {e.activity_task_scheduled_event_attributes.workflow_task_completed_event_id for e in scheduled}
    assert len(tasks) >= 7  # at most one 0.9 MB input past the first 1.5 MiB: two per task


@pytest.mark.parametrize("level", [PATCH_LEVELS[PATCH_TASK_INPUT_ESCAPES] - 1, ENGINE_LEVEL])
async def test_a_task_input_is_paced_with_its_escapes(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    # Patch task-input-escapes. Six tasks at once, each sending the run's input of 300,000 control
    # characters: counted one byte each by json_size, written six each (1.8 MB an input). Before,
    # five went out in one workflow task completion of 9 MB: the server refused it and terminated
    # the run (found by a review of child-send-pacing, which fixed it for child runs only). Now the
    # escapes count, and each input goes out in a workflow task of its own.
    document = definition(
        unique("escapes"),
        [
            _echo_each(6, {"value": "{{ input.blob }}"}),
        ],
        output={"n": "{{ steps.each.output | length }}"},
    )
    handle = await start(
        client,
        task_queue,
        document,
        {"blob": ["\x01" * 1000] * 300},
        engine_level=level,
        execution_timeout=timedelta(seconds=90),
    )
    if level < ENGINE_LEVEL:
        # The finding, kept for runs of the generation before.
        await terminated_too_large(handle)
        return
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"n": 6}
    calls = [r for r in result.steps if r.id == "call"]
    assert [r.error_type for r in calls] == ["ActionOutputTooLarge"] * 6  # every one was sent, once
    scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert len(scheduled) == 6
    tasks = {e.activity_task_scheduled_event_attributes.workflow_task_completed_event_id for e in scheduled}
    assert len(tasks) == 6  # 1.8 MB each as written, over the 1.5 MiB a workflow task sends: one each


def _one_item_slices(count: int, value: str, *after: dict[str, Any]) -> dict[str, Any]:
    """A foreach of ``count`` items fanned out in one-item slices, all at once, each echoing
    ``value`` (then the ``after`` steps); its output counts the items."""
    return definition(
        unique("slices"),
        [
            {
                "id": "pull",
                "type": "foreach",
                "items": f"range({count}) | list",
                "fan_out_above": 1,
                "batch_size": 1,
                "concurrency": count,
                "steps": [{"id": "e", "type": "task", "action": "echo", "input": {"value": value}}],
                "output": "{{ steps.e.output }}",
            },
            *after,
        ],
        output={"n": "{{ steps.pull.output | length }}"},
    )


@pytest.mark.parametrize("level", [PATCH_LEVELS[PATCH_CHILD_SEND_PACING] - 1, ENGINE_LEVEL])
async def test_the_definition_each_child_run_carries_is_paced_too(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    # Patch child-send-pacing. A fanned-out foreach of 60 one-item slices at once, in a definition
    # of 100 KB (a branch never taken returns a long literal): each slice's input carries the
    # definition. Before, only the items and context were paced, and the 60 starts went out in one
    # completion of 6 MB: the server refused it and terminated the run (found by a probe of this
    # session). Now the definition counts, and the starts go out over several workflow tasks.
    pad = {
        "id": "never",
        "type": "condition",
        "if": "false",
        "then": {"steps": [{"id": "pad", "type": "succeed", "output": "p" * 100_000}]},
    }
    document = _one_item_slices(60, "{{ item }}", pad)
    handle = await start(client, task_queue, document, engine_level=level)
    if level < ENGINE_LEVEL:
        # The probe's finding, kept for runs of the generation before.
        await terminated_too_large(handle)
        return
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"n": 60}
    # (The run may continue as new on the way: its history grows by 100 KB a start.)
    initiated = await chain_events(handle, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    assert len(initiated) == 60
    tasks = {
        e.start_child_workflow_execution_initiated_event_attributes.workflow_task_completed_event_id
        for e in initiated
    }
    assert len(tasks) >= 4  # 1.5 MiB a workflow task: at most 15 of these starts in each


@pytest.mark.parametrize(
    ("run_input", "options", "value"),
    [
        # Every slice carries the run input its body reads: 280,000 control characters, counted
        # one byte each by the estimate, six each as sent (1.7 MB a slice).
        ({"blob": "\x01" * 280_000}, {}, "{{ input.blob | length }}"),
        # Every slice carries the run's options: a dry run's 300 KB of canned outputs.
        ({}, {"dry_run": True, "canned_outputs": {"unrelated": "c" * 300_000}}, "{{ item }}"),
    ],
    ids=["escapes", "canned-outputs"],
)
async def test_a_child_run_input_is_paced_at_its_size_as_sent(
    client: Client,
    task_queue: str,
    worker: Worker,
    run_input: dict[str, Any],
    options: dict[str, Any],
    value: str,
) -> None:
    # Found by a review of child-send-pacing: it paced the definition but still estimated the
    # rest, and both fan-outs were terminated by the server (GrpcMessageTooLarge). A child's input
    # is now paced at its payload's size, which the payload check measures anyway.
    count = 12 if options == {} else 30
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(
            definition=load_definition(_one_item_slices(count, value)),
            input=run_input,
            options=RunOptions(engine_level=ENGINE_LEVEL, **options),
        ),
        id=unique("sent"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=3),
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    assert result.output == {"n": count}


async def test_child_inputs_are_measured_a_workflow_task_at_a_time(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a review: measuring each child's input as sent before pacing it serialized every
    # slice waiting to start in one activation (100 slices of 1.6 MB: about a second; a few hundred
    # pass the SDK's 2 s deadlock detector). Each is now paced on its estimate first, so one
    # workflow task measures about a task's worth (1.5 MiB: five of these 300 KB inputs, and one
    # more that waits for the next). The worker runs the workflow outside the sandbox: the
    # measuring function seen here is the one it calls.
    measured: dict[int, int] = {}
    parent = unique("measured")
    real = workflows.generic._payload_bytes

    def counting(value: Any) -> int:
        if isinstance(value, RunInput) and value.batch is not None:
            info = temporal_workflow.info()
            if info.workflow_id == parent:
                length = info.get_current_history_length()
                measured[length] = measured.get(length, 0) + 1
        return real(value)

    monkeypatch.setattr(workflows.generic, "_payload_bytes", counting)
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(
            definition=load_definition(_one_item_slices(30, "{{ item }}")),
            options=RunOptions(
                engine_level=ENGINE_LEVEL, dry_run=True, canned_outputs={"unrelated": "c" * 300_000}
            ),
        ),
        id=parent,
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=3),
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED, result.error
    assert sum(measured.values()) >= 30, measured
    assert max(measured.values()) <= 6, measured
