"""P6's baseline (B): a hand-written Temporal child-workflow fan-out making the same calls as the
product's fanned-out foreach (A, :func:`bench.fanout.definition_data`).

The parent splits the items into slices of ``batch_size`` and runs them as child workflows, at most
``min(children, concurrency)`` at a time, each child running ``concurrency // that`` of its items at
once, exactly as the product does (``interpreter.engine.Engine._fan_out``). Every item is one
``echo`` activity call as the product makes it (:func:`bench.echo_call.echo`, step path
``loop[i].e``); children get the ids the product gives them
(``<parent>/loop/batch-k``), the same parent-close policy and cancellation type. The parent returns
the outputs in item order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.echo_call import ACTION, echo

PARENT_WORKFLOW_NAME = "BenchFanoutParent"
CHILD_WORKFLOW_NAME = "BenchFanoutChild"


@workflow.defn(name=CHILD_WORKFLOW_NAME)
class FanoutChild:
    """One slice: ``[offset, items, concurrency]``; returns the echoed items in order."""

    @workflow.run
    async def run(self, args: list[Any]) -> list[Any]:
        offset, items, concurrency = int(args[0]), list(args[1]), int(args[2])
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, item: Any) -> Any:
            async with gate:
                return await echo(f"loop[{index}].e", item, f"e ({ACTION})")

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
