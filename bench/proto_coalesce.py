"""PROTOTYPE of a proposed change to ``workflows/generic.py``, for measurement only (variant ``A-co``
of ``python -m bench.run --coalesce-proto``). Not product code.

``RunDefinitionWorkflow._publish`` upserts search attributes synchronously on every engine state
change. Between two steps the engine ends one step (``CurrentStep`` -> ``""``) and starts the next
(``CurrentStep`` -> ``"s2"``) in the same workflow task, so each boundary writes two upserts (two
history events, two visibility updates) of which the first is never observable. At the end,
``CurrentStep`` -> ``""`` and ``RunState`` -> ``completed`` are two more. This subclass defers the
publication with ``loop.call_soon``: the deterministic workflow event loop runs it once the engine's
synchronous work in the current activation is done, so each workflow task carries at most one
upsert with the final values (11 upserts per 5-step run become 6).

In the product the same change belongs in ``_publish`` itself, behind ``workflow.patched(...)``
because it changes the commands a replay expects.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from interpreter.state import RunInput, RunResult

from workflows.generic import SANDBOXED, RunDefinitionWorkflow

COALESCED_WORKFLOW_NAME = "BenchRunDefinitionCoalesced"


@workflow.defn(name=COALESCED_WORKFLOW_NAME, sandboxed=SANDBOXED)  # as A, so only the coalescing differs
class CoalescedRunDefinitionWorkflow(RunDefinitionWorkflow):
    """The generic workflow with search attribute upserts coalesced to one per activation."""

    @workflow.init
    def __init__(self, run: RunInput) -> None:
        self._flush_scheduled = False
        super().__init__(run)

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        return await super().run(run)

    def _publish(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        super()._publish()
