"""The dead letter activities: the workflow records a parked step, and later the decision on it.

The generic workflow calls ``dead_letter_park`` when a step with ``on_failure: dead_letter`` has
exhausted its retries, and ``dead_letter_resolve`` when an operator (or the park timeout) decided.
Both are idempotent, so the workflow retries them freely (a database outage only delays them).

Wiring (``worker.py``)::

    db = await open_database()           # DATABASE_URL, else the embedded server
    build_worker(..., extra_activities=build_store_activities(db.session_factory))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import check_tenant_scope
from activities.store.database import SessionFactory
from activities.store.errors import DeadLetterNotFoundError, InvalidTenantError
from activities.store.repository import park_dead_letter, resolve_dead_letter
from activities.subflows import build_subflow_activities
from interpreter.state import DeadLetterRecord, DeadLetterResolution

__all__ = ["DEAD_LETTER_PARK", "DEAD_LETTER_RESOLVE", "DeadLetterActivities", "build_store_activities"]

DEAD_LETTER_PARK = "dead_letter_park"
DEAD_LETTER_RESOLVE = "dead_letter_resolve"


class DeadLetterActivities:
    """The dead letter activities on one database.

    Args:
        session_factory: An ``async_sessionmaker`` on the store's database.
    """

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory

    @activity.defn(name=DEAD_LETTER_PARK)
    async def park(self, record: DeadLetterRecord) -> int:
        """Records a parked step (``status`` open); returns the row id, the same on every retry.

        Raises:
            ApplicationError: Non-retryable ``InvalidTenant`` for a malformed tenant. Database
                errors are retryable (the workflow retries until the database is back).
        """
        check_tenant_scope(record.tenant)  # a run may not write another tenant's dead letters
        try:
            row_id = await park_dead_letter(self.session_factory, record)
        except InvalidTenantError as err:
            raise ApplicationError(str(err), type="InvalidTenant", non_retryable=True) from None
        activity.logger.info(
            "dead letter %s: %s of %s (%s) parked after %s attempts",
            row_id,
            record.path,
            record.workflow_id,
            record.error_type,
            record.attempts,
        )
        return row_id

    @activity.defn(name=DEAD_LETTER_RESOLVE)
    async def resolve(self, resolution: DeadLetterResolution) -> None:
        """Records the decision on a dead letter (status, actor, time, reason, input or output).

        Idempotent: a row already resolved keeps its first decision.

        Raises:
            ApplicationError: Non-retryable ``DeadLetterNotFound`` when the row does not exist.
        """
        check_tenant_scope(resolution.tenant)
        try:
            row = await resolve_dead_letter(self.session_factory, resolution)
        except DeadLetterNotFoundError as err:
            raise ApplicationError(str(err), type="DeadLetterNotFound", non_retryable=True) from None
        if (
            row.resolved_by != resolution.actor
            or (row.resolution or {}).get("action") != resolution.action.value
        ):
            activity.logger.warning(
                "dead letter %s was already %s by %s; %s by %s not recorded",
                row.id,
                row.status,
                row.resolved_by,
                resolution.action.value,
                resolution.actor,
            )


def build_store_activities(session_factory: SessionFactory) -> list[Callable[..., Any]]:
    """The store's activities, ready for ``Worker(activities=...)`` (or ``build_worker(...,
    extra_activities=...)``): ``dead_letter_park``, ``dead_letter_resolve`` and ``subflow_resolve``."""
    activities = DeadLetterActivities(session_factory)
    # The subflow step's definition lookup reads the same store (see activities/subflows.py).
    return [activities.park, activities.resolve, *build_subflow_activities(session_factory)]
