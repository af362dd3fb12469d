"""P3's baseline: a hand-written Temporal workflow that waits for an approval, then makes one call.

The same work as the definition of :func:`bench.approvals_at_scale.definition_data` (an approval
step, then one ``echo`` task): it publishes ``AwaitingApproval = true`` while it waits (so the
benchmark finds its waiting runs the same way, and the server pays the same visibility writes),
waits for an ``approve`` update naming an approver, clears the attribute and makes the same
``echo`` activity call the generic workflow makes (same request shape, timeout and retry policy).

The module is re-imported into the sandbox for every run: it imports little on purpose.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from bench.echo_call import echo

APPROVAL_BASELINE_NAME = "BenchApprovalBaseline"
APPROVER = "bench-approver"
_AWAITING = SearchAttributeKey.for_bool("AwaitingApproval")


@workflow.defn(name=APPROVAL_BASELINE_NAME)
class ApprovalBaselineWorkflow:
    """Waits for ``approve`` (an update from an approver), then echoes its input."""

    def __init__(self) -> None:
        self._approved_by: str | None = None

    @workflow.run
    async def run(self, n: int) -> str:
        workflow.upsert_search_attributes([_AWAITING.value_set(True)])
        await workflow.wait_condition(lambda: self._approved_by is not None)
        workflow.upsert_search_attributes([_AWAITING.value_set(False)])
        return str(await echo("after", str(n), "after (echo)"))

    @workflow.update
    async def approve(self, actor: str) -> str:
        self._approved_by = actor
        return actor

    @approve.validator
    def _check(self, actor: str) -> None:
        if actor != APPROVER or self._approved_by is not None:
            raise ValueError(f"{actor!r} cannot approve now")
