"""Workflows of tests/workflows/test_stale_instance.py (a module of its own: the sandbox imports it)."""

from __future__ import annotations

from temporalio import workflow

from interpreter.state import RunInput, RunResult
from workflows.generic import RunDefinitionWorkflow

with workflow.unsafe.imports_passed_through():
    from tests.workflows import stale_runs


@workflow.defn(name="RunDefinition")
class RecordedRun(RunDefinitionWorkflow):
    """The generic workflow, its object kept where the other workflow of this test can reach it."""

    @workflow.init
    def __init__(self, run: RunInput) -> None:
        super().__init__(run)
        stale_runs.OBJECTS[workflow.info().workflow_id] = self

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        return await super().run(run)


@workflow.defn(name="StaleFinalizerHost")
class OtherWorkflow:
    """Another workflow, during whose activation the run's wait ends as a finalizer would end it."""

    @workflow.run
    async def run(self, workflow_id: str) -> str:
        stale = stale_runs.OBJECTS[workflow_id]
        engine = stale._engine
        # What the ``finally`` of the engine's wait (``Engine._waiting_at``) and of its step
        # (``Engine._run_step``) run when the coroutine is closed: the wait and the step end.
        waiting, active = dict(engine.waiting), dict(engine.active)
        engine.waiting.clear()
        engine.active.clear()
        engine.runtime.waiting_changed()
        engine.runtime.state_changed()
        engine.waiting.update(waiting)  # the run itself is still waiting: leave it as it was
        engine.active.update(active)
        await workflow.sleep(0.01)
        return "done"
