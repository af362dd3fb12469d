"""The ``echo`` activity call of the hand-written baselines, exactly as the generic workflow makes it.

Every call carries the same :class:`ActionRequest` (step path, idempotency key, input, retry preset
and intervals), the same activity id and summary, the same ``start_to_close`` timeout and the same
retry policy that the generic workflow derives from the definition's defaults
(``interpreter.model.Defaults``): ``RetryPolicy()`` -> exponential, initial 1 s, coefficient 2.0, no
maximum interval, 3 attempts; ``Timeouts(start_to_close="30s")``, no schedule_to_close, no heartbeat.

Import it passed through the sandbox (it holds no state), so the baselines' sandboxes do not
re-import it on every run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

from interpreter.actions import ActionRequest, ActionResult, RetryMode

ACTION = "echo"
START_TO_CLOSE = timedelta(seconds=30)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=None,
    maximum_attempts=3,
    non_retryable_error_types=None,
)


async def echo(path: str, value: Any, summary: str) -> Any:
    """Runs ``echo`` of ``value`` as the step at ``path`` (its activity id); returns its output."""
    info = workflow.info()
    request = ActionRequest(
        step_id=path,
        idempotency_key=f"{info.workflow_id}/{info.run_id}/{path}",
        input={"value": value},
        retry_mode=RetryMode.EXPONENTIAL,
        initial_interval_s=1.0,
        maximum_interval_s=None,
    )
    result = await workflow.execute_activity(
        ACTION,
        request,
        result_type=ActionResult,
        activity_id=path,
        summary=summary,
        start_to_close_timeout=START_TO_CLOSE,
        retry_policy=RETRY,
    )
    return result.output
