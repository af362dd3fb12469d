"""The generic workflow as it ran before it left the workflow sandbox, for measurement only (variant
``A-sb`` of ``python -m bench.run --sandboxed``). Not product code.

``workflows.generic`` declares its workflows ``sandboxed=False`` (see ``workflows.generic.SANDBOXED``
for why). This subclass is the same workflow run inside the SDK's sandbox, with the product's
passthrough modules (``worker.workflow_runner()``): every run gets a fresh sandbox instance that
re-imports ``workflows/generic.py`` (both its classes' ``@workflow.defn`` again), and every
activation goes through the sandbox's plumbing. A against A-sb measures what leaving it saved.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from interpreter.state import RunInput, RunResult

from workflows.generic import RunDefinitionWorkflow

SANDBOXED_WORKFLOW_NAME = "BenchRunDefinitionSandboxed"


@workflow.defn(name=SANDBOXED_WORKFLOW_NAME, sandboxed=True)
class SandboxedRunDefinitionWorkflow(RunDefinitionWorkflow):
    """The generic workflow, run inside the sandbox."""

    @workflow.init
    def __init__(self, run: RunInput) -> None:
        super().__init__(run)

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        return await super().run(run)
