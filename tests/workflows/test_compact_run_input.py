"""Patch ``compact-run-input`` (generation 24): a run's input travels without the options that hold
their default and without a ``continuation`` of None, and ``FlowClient`` returns compact results
by default; runs of earlier generations keep the shape they always had.

The shapes are checked on the model, then on a real dev server with the product's worker: a run
started by ``FlowClient.start_run`` at this build's generation, one at generation 23, and the next
runs of a chain that continues as new at each generation. Each history replays.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.store.database import Database
from interpreter.state import (
    COMPACT_RUN_INPUT_LEVEL,
    PATCH_COMPACT_RUN_INPUT,
    CurrentStepTracking,
    ResultSteps,
    RunInput,
    RunOptions,
    RunState,
)
from interpreter.validate import load_definition
from starter.client import FlowClient, result_steps_from_env
from tests.workflows.support import (
    chain_events,
    counting_loop,
    definition,
    recorded_input_and_result,
    replays_as_recorded,
    start,
    status,
    unique,
)
from workflows.generic import ENGINE_LEVEL, PATCH_LEVELS

EVERY_OPTION_AT_ITS_DEFAULT = {
    "track_current_step": True,
    "current_step": "waits",
    "tenant": "default",
    "decision_proof": False,
    "subflow_depth": 0,
    "publish_assignees": False,
}
"""What an input of an earlier generation says of the options it leaves at their default (the
fields with ``exclude_if`` were never written at their default)."""


def _document() -> dict[str, Any]:
    return definition(
        unique("compact-input"),
        [
            {"id": "one", "type": "task", "action": "echo", "input": {"value": "{{ input.n }}-one"}},
            {"id": "two", "type": "task", "action": "echo", "input": {"value": "{{ steps.one.output }}-two"}},
        ],
        output="{{ steps.two.output }}",
    )


def _input(level: int, **options: Any) -> RunInput:
    return RunInput(
        definition=load_definition(_document()),
        input={"n": 7},
        options=RunOptions(engine_level=level, **options),
    )


def _bytes(run: RunInput) -> bytes:
    """``run`` as the data converter puts it in a payload."""
    return pydantic_data_converter.payload_converter.to_payloads([run])[0].data


def _wire(run: RunInput) -> dict[str, Any]:
    return json.loads(_bytes(run))


def test_the_patch_belongs_to_the_generation_the_model_names() -> None:
    assert PATCH_LEVELS[PATCH_COMPACT_RUN_INPUT] == COMPACT_RUN_INPUT_LEVEL <= ENGINE_LEVEL


def test_the_defaults_of_the_options_are_part_of_the_wire_format() -> None:
    """A compact input leaves these out, so a worker reads them back from its own defaults: a build
    that changed one would change what the inputs of runs already started mean (and their replay).
    Change a default only behind a new generation that writes the old value explicitly."""
    defaults = {
        name: field.get_default(call_default_factory=True) for name, field in RunOptions.model_fields.items()
    }
    assert defaults == {
        **EVERY_OPTION_AT_ITS_DEFAULT,
        "dry_run": False,
        "canned_outputs": {},
        "state_budget": None,
        "result_steps": "full",
        "result_limit": None,
        "engine_level": 0,
    }


@pytest.mark.parametrize("level", [0, COMPACT_RUN_INPUT_LEVEL - 1])
def test_an_input_of_an_earlier_generation_keeps_its_shape(level: int) -> None:
    wire = _wire(_input(level, tenant="acme", result_steps=ResultSteps.COMPACT))
    assert wire["continuation"] is None
    want = {**EVERY_OPTION_AT_ITS_DEFAULT, "tenant": "acme", "result_steps": "compact"}
    if level:
        want["engine_level"] = level
    assert wire["options"] == want


def test_an_input_of_the_generation_leaves_the_defaults_out_and_reads_back_the_same() -> None:
    run = _input(COMPACT_RUN_INPUT_LEVEL, tenant="acme", result_steps=ResultSteps.COMPACT)
    wire = _wire(run)
    assert "continuation" not in wire
    assert wire["options"] == {
        "tenant": "acme",
        "result_steps": "compact",
        "engine_level": COMPACT_RUN_INPUT_LEVEL,
    }
    assert RunInput.model_validate(wire) == run
    # An option away from its default is written, whichever it is.
    odd = _input(
        COMPACT_RUN_INPUT_LEVEL,
        track_current_step=False,
        current_step=CurrentStepTracking.EVERY_STEP,
        decision_proof=True,
        subflow_depth=2,
        publish_assignees=True,
    )
    assert _wire(odd)["options"] == {
        "track_current_step": False,
        "current_step": "every_step",
        "decision_proof": True,
        "subflow_depth": 2,
        "publish_assignees": True,
        "engine_level": COMPACT_RUN_INPUT_LEVEL,
    }
    assert RunInput.model_validate(_wire(odd)) == odd
    # A continued run's snapshot is written.
    carried = RunInput.model_validate({**_wire(run), "continuation": {"version": 1}})
    assert _wire(carried)["continuation"] == {"version": 1}
    # Shorter than the same input of the generation before.
    before = _input(COMPACT_RUN_INPUT_LEVEL - 1, tenant="acme", result_steps=ResultSteps.COMPACT)
    assert len(_bytes(run)) + 120 < len(_bytes(before))


def test_clients_return_compact_results_by_default_from_the_generation_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WFA_RESULT_STEPS", raising=False)
    assert result_steps_from_env() == ResultSteps.COMPACT
    assert result_steps_from_env(COMPACT_RUN_INPUT_LEVEL) == ResultSteps.COMPACT
    # A client starting runs that older workers take (WFA_ENGINE_LEVEL) returns what they did.
    assert result_steps_from_env(COMPACT_RUN_INPUT_LEVEL - 1) == ResultSteps.FULL
    assert result_steps_from_env(0) == ResultSteps.FULL
    monkeypatch.setenv("WFA_RESULT_STEPS", "full")
    assert result_steps_from_env() == ResultSteps.FULL


def test_a_client_s_default_follows_its_generation_as_it_is_set(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WFA_RESULT_STEPS", raising=False)
    monkeypatch.setenv("WFA_ENGINE_LEVEL", str(COMPACT_RUN_INPUT_LEVEL - 1))
    flows = FlowClient(client)
    assert flows.result_steps == ResultSteps.FULL
    flows.engine_level = COMPACT_RUN_INPUT_LEVEL
    assert flows.result_steps == ResultSteps.COMPACT
    flows.engine_level = 0
    assert flows.result_steps == ResultSteps.FULL
    flows.result_steps = ResultSteps.NONE  # named: whatever the generation
    flows.engine_level = ENGINE_LEVEL
    assert flows.result_steps == ResultSteps.NONE
    monkeypatch.setenv("WFA_RESULT_STEPS", "full")
    assert FlowClient(client).result_steps == ResultSteps.FULL


@pytest.mark.parametrize("level", [ENGINE_LEVEL, COMPACT_RUN_INPUT_LEVEL - 1])
async def test_a_run_a_client_starts_records_the_shape_of_its_generation(
    level: int,
    client: Client,
    task_queue: str,
    database: Database,
    tenant: str,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WFA_RESULT_STEPS", raising=False)
    flows = FlowClient(client, task_queue=task_queue, database=database, tenant=tenant)
    flows.engine_level = level  # as a rollout sets it on a client already made (found by a review)
    started = await flows.start_run(_document(), {"n": 7})
    handle = client.get_workflow_handle(started.workflow_id)
    result = await flows.result(started.workflow_id, timeout=60)
    assert result.state == RunState.COMPLETED
    assert result.output == "7-one-two"
    assert [r.path for r in result.steps] == ["one", "two"]
    assert result.steps == (await status(handle)).steps  # the records read back whole
    run_input, raw = await recorded_input_and_result(handle)
    recorded = json.loads(raw)
    options = run_input["options"]
    assert options["tenant"] == tenant
    assert options["publish_assignees"] is True
    if level >= COMPACT_RUN_INPUT_LEVEL:
        assert "continuation" not in run_input
        assert options == {
            "tenant": tenant,
            "publish_assignees": True,
            "result_steps": "compact",
            "engine_level": level,
        }
        assert "error" not in recorded
        assert all("error" not in step and "finished_at" in step for step in recorded["steps"])
    else:
        assert run_input["continuation"] is None
        assert options["track_current_step"] is True
        assert options["current_step"] == "waits"
        assert "result_steps" not in options  # full: as a client of the build before wrote it
        assert recorded["error"] is None
        assert all(step["error"] is None for step in recorded["steps"])
    await replays_as_recorded(handle)


@pytest.mark.parametrize("level", [ENGINE_LEVEL, COMPACT_RUN_INPUT_LEVEL - 1])
async def test_a_chain_carries_the_shape_of_its_generation(
    level: int, client: Client, task_queue: str, worker: Worker
) -> None:
    """The inputs a run sends its next runs (continue-as-new) keep the shape of the run's
    generation: compact from generation 24, as before below it."""
    document = definition(
        unique("compact-chain"),
        [{"id": "count", "type": "set", "vars": {"n": 0}}, *counting_loop("c", "n", 30)],
        output="{{ vars.n }}",
        limits={"history_budget": 100},
    )
    handle = await start(client, task_queue, document, engine_level=level)
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    assert result.output == 30
    starts = await chain_events(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    assert len(starts) >= 2  # the run continued as new
    inputs = [
        json.loads(e.workflow_execution_started_event_attributes.input.payloads[0].data) for e in starts
    ]
    assert all(i["options"]["engine_level"] == level for i in inputs)
    assert all(i["continuation"] for i in inputs[1:])
    if level >= COMPACT_RUN_INPUT_LEVEL:
        assert all(i["options"] == {"engine_level": level} for i in inputs)
        assert "continuation" not in inputs[0]
    else:
        want = {**EVERY_OPTION_AT_ITS_DEFAULT, "engine_level": level}
        assert all(i["options"] == want for i in inputs)
        assert inputs[0]["continuation"] is None
    await replays_as_recorded(handle)
