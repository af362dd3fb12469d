"""P6's baseline (B): a hand-written Temporal child-workflow fan-out making the same calls as the
product's fanned-out foreach (A, :func:`bench.fanout.definition_data`).

The parent splits the items into slices of ``batch_size`` and runs them as child workflows, at most
``min(children, concurrency)`` at a time, each child running ``concurrency // that`` of its items at
once, exactly as the product does (``interpreter.engine.Engine._fan_out``). Every item is one
``echo`` activity with the :class:`ActionRequest` the product sends (step path ``loop[i].e``,
idempotency key, input, retry preset), the same activity id and summary, ``start_to_close`` 30 s
and the default retry policy; children get the ids the product gives them
(``<parent>/loop/batch-k``), the same parent-close policy and cancellation type. The parent returns
the outputs in item order.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from interpreter.actions import ActionRequest, ActionResult, RetryMode

ACTION = "echo"
PARENT_WORKFLOW_NAME = "BenchFanoutParent"
CHILD_WORKFLOW_NAME = "BenchFanoutChild"
_START_TO_CLOSE = timedelta(seconds=30)
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=None,
    maximum_attempts=3,
    non_retryable_error_types=None,
)


@workflow.defn(name=CHILD_WORKFLOW_NAME)
class FanoutChild:
    """One slice: ``[offset, items, concurrency]``; returns the echoed items in order."""

    @workflow.run
    async def run(self, args: list[Any]) -> list[Any]:
        offset, items, concurrency = int(args[0]), list(args[1]), int(args[2])
        info = workflow.info()
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, item: Any) -> Any:
            async with gate:
                path = f"loop[{index}].e"
                request = ActionRequest(
                    step_id=path,
                    idempotency_key=f"{info.workflow_id}/{info.run_id}/{path}",
                    input={"value": item},
                    retry_mode=RetryMode.EXPONENTIAL,
                    initial_interval_s=1.0,
                    maximum_interval_s=None,
                )
                result = await workflow.execute_activity(
                    ACTION,
                    request,
                    result_type=ActionResult,
                    activity_id=path,
                    summary=f"e ({ACTION})",
                    start_to_close_timeout=_START_TO_CLOSE,
                    retry_policy=_RETRY,
                )
                return result.output

        return list(await asyncio.gather(*(one(offset + i, item) for i, item in enumerate(items))))


@workflow.defn(name=PARENT_WORKFLOW_NAME)
class FanoutParent:
    """``[items, batch_size, concurrency]``: the children in bounded batches, outputs in order."""

    @workflow.run
    async def run(self, args: list[Any]) -> list[Any]:
        items, size, concurrency = list(args[0]), int(args[1]), int(args[2])
        slices = [(offset, items[offset : offset + size]) for offset in range(0, len(items), size)]
        running = min(len(slices), concurrency)
        per_child = concurrency // running
        gate = asyncio.Semaphore(running)
        parent = workflow.info().workflow_id

        async def child(k: int, offset: int, part: list[Any]) -> list[Any]:
            async with gate:
                result: list[Any] = await workflow.execute_child_workflow(
                    CHILD_WORKFLOW_NAME,
                    [offset, part, per_child],
                    id=f"{parent}/loop/batch-{k}",
                    result_type=list,
                    parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                    cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                return result

        parts = await asyncio.gather(*(child(k, offset, part) for k, (offset, part) in enumerate(slices)))
        return [value for part in parts for value in part]
