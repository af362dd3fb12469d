"""Activities through which a run acts on itself in Temporal."""

from __future__ import annotations

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

REQUEST_CANCEL = "request_cancel"  # workflows.generic.REQUEST_CANCEL_ACTIVITY


@activity.defn(name=REQUEST_CANCEL)
async def request_cancel(workflow_id: str, run_id: str) -> bool:
    """Asks Temporal to cancel the run (a workflow cannot request its own cancellation): the ``cancel``
    signal then ends as Temporal's cancellation, and the run closes as Canceled.

    Returns:
        False when the run had already closed (nothing to cancel), True otherwise.
    """
    handle = activity.client().get_workflow_handle(workflow_id, run_id=run_id)
    try:
        await handle.cancel()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
