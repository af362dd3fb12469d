"""Activities through which a run acts on itself in Temporal."""

from __future__ import annotations

import os

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from activities.secrets import tenant_scope
from workflows.priority import PRIORITY_GRANTED_ACTIVITY, is_granted, priority_grants

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


END_TASK = "wfa.end_task"  # workflows.generic.END_TASK_ACTIVITY


@activity.defn(name=PRIORITY_GRANTED_ACTIVITY)
async def priority_granted(tenant: str) -> bool:
    """Whether this worker's ``WFA_PRIORITY_TENANTS`` grants ``tenant`` priorities above the
    default, as a local activity of the generic workflow (asked only by a run that would ask for
    priority 1 or 2; the answer is recorded in its history). A run's tenant is its starter's claim:
    where the worker has a tenant scope, a run outside the tenant's namespace (or of a tenant this
    worker does not serve) is granted nothing, as its actions are refused."""
    scope = tenant_scope()
    if scope is not None and scope.refusal(tenant, activity.info().namespace) is not None:
        return False
    return is_granted(tenant, priority_grants(os.environ))


@activity.defn(name=END_TASK)
async def end_task() -> None:
    """Does nothing, as a local activity of the generic workflow: a run that executed many steps
    without a call ends its activation here, so no activation runs past the SDK's deadlock limit
    (``interpreter.engine.TASK_STEP_BUDGET``). A timer would do it too, but fires a second later on
    the server's timer queue; this answers in milliseconds."""
