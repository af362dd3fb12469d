"""Replay of committed histories (``tests/histories``, written by ``python -m tests.record_histories``).

Every committed history (found by glob, so a new recording is replayed without editing this file)
must replay against the current workflow code without a nondeterminism error; a deliberately
altered workflow must not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from interpreter.state import RunResult
from tests.workflows.support import replay
from worker import workflow_runner
from workflows.generic import (
    NO_RUN_ARGUMENT,
    SANDBOXED,
    WORKFLOW_NAME,
    WORKFLOWS,
    RunArgument,
    RunDefinitionWorkflow,
)

HISTORIES = Path(__file__).parent.parent / "histories"
FILES = sorted(p.name for p in HISTORIES.glob("*.json"))


def _load(file_name: str) -> tuple[dict[str, Any], WorkflowHistory]:
    data = json.loads((HISTORIES / file_name).read_text())
    return data, WorkflowHistory.from_json(data["workflow_id"], data["history"])


def test_every_scenario_has_a_recorded_history() -> None:
    """The glob below is not vacuous: each scenario the recorder knows has its committed history."""
    from tests.record_histories import scenarios

    assert {f"{s.name}.json" for s in scenarios()} <= set(FILES)


@pytest.mark.parametrize("file_name", FILES)
async def test_recorded_history_replays(file_name: str) -> None:
    data, history = _load(file_name)
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    result = await replay(replayer, history)
    assert result.replay_failure is None, f"{file_name}: {result.replay_failure!r}"
    assert data["outcome"] in {"completed", "failed", "cancelled", "compensated"}


@workflow.defn(name=WORKFLOW_NAME, sandboxed=SANDBOXED)  # the runner production uses
class TimerFirstRunDefinitionWorkflow(RunDefinitionWorkflow):
    """The generic workflow, changed the way an unguarded edit would: an extra timer before anything."""

    @workflow.run
    async def run(self, run: RunArgument = NO_RUN_ARGUMENT) -> RunResult:
        await workflow.sleep(0.001)
        return await super().run(run)


async def test_an_altered_workflow_fails_replay_with_a_nondeterminism_error() -> None:
    _, history = _load("sequential_kinds.json")
    replayer = Replayer(
        workflows=[TimerFirstRunDefinitionWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    with pytest.raises(workflow.NondeterminismError, match="TMPRL1100"):
        await replayer.replay_workflow(history)
