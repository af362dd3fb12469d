"""The benchmark's workload, twice: as a definition for the generic workflow (A) and as a hand-written
Temporal workflow (B) that makes exactly the same activity calls.

Both run five sequential ``echo`` steps ``s1`` .. ``s5``. Step ``sK`` echoes
``"{n}-{output of s(K-1)}"`` (``s1`` echoes ``"{n}-start"``), so A exercises jinja templating on every
step, and both end with the same string, e.g. ``"7-7-7-7-7-start"`` for ``n = 7``.

For B to be a fair baseline, every activity call carries the same :class:`ActionRequest` (step id,
idempotency key, input, retry preset and intervals), the same activity id and summary, the same
``start_to_close`` timeout and the same retry policy that the generic workflow derives from the
definition's defaults (exponential, 1 s initial interval, coefficient 2, 3 attempts).

The baseline takes a plain ``int``: this module is re-imported into the sandbox for every run, so a
pydantic input model defined here would be rebuilt per run (about 1 ms of CPU) and flatter A.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from interpreter.actions import ActionRequest, ActionResult, RetryMode

STEPS = 5
ACTION = "echo"
BASELINE_WORKFLOW_NAME = "BenchBaseline"


def step_id(k: int) -> str:
    """Id of the k-th step (1-based)."""
    return f"s{k}"


def definition_data(steps: int = STEPS) -> dict[str, Any]:
    """The definition run by the generic workflow (A): ``steps`` templated ``echo`` tasks."""
    body: list[dict[str, Any]] = []
    for k in range(1, steps + 1):
        prev = "start" if k == 1 else f"{{{{ steps.{step_id(k - 1)}.output }}}}"
        body.append(
            {
                "id": step_id(k),
                "type": "task",
                "action": ACTION,
                "input": {"value": f"{{{{ input.n }}}}-{prev}"},
            }
        )
    return {"name": "bench-echo-chain", "steps": body, "output": f"{{{{ steps.{step_id(steps)}.output }}}}"}


def expected_output(n: int, steps: int = STEPS) -> str:
    """What both workflows return for input ``n``."""
    value = "start"
    for _ in range(steps):
        value = f"{n}-{value}"
    return value


# What the generic workflow derives from the definition defaults (interpreter.model.Defaults):
# RetryPolicy() -> exponential, initial 1s, coefficient 2.0, no maximum interval, 3 attempts;
# Timeouts(start_to_close="30s"), no schedule_to_close, no heartbeat.
_START_TO_CLOSE = timedelta(seconds=30)
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=None,
    maximum_attempts=3,
    non_retryable_error_types=None,
)


@workflow.defn(name=BASELINE_WORKFLOW_NAME)
class BaselineWorkflow:
    """Hand-written equivalent of the 5-step definition: five sequential ``echo`` activities."""

    @workflow.run
    async def run(self, n: int) -> str:
        info = workflow.info()
        value: Any = "start"
        for k in range(1, STEPS + 1):
            path = step_id(k)
            request = ActionRequest(
                step_id=path,
                idempotency_key=f"{info.workflow_id}/{info.run_id}/{path}",
                input={"value": f"{n}-{value}"},
                retry_mode=RetryMode.EXPONENTIAL,
                initial_interval_s=1.0,
                maximum_interval_s=None,
            )
            result = await workflow.execute_activity(
                ACTION,
                request,
                result_type=ActionResult,
                activity_id=path,
                summary=f"{path} ({ACTION})",
                start_to_close_timeout=_START_TO_CLOSE,
                retry_policy=_RETRY,
            )
            value = result.output
        return str(value)
