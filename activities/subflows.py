"""The activity a ``subflow`` step resolves its child's definition with.

A workflow cannot read the registry (that would be I/O, and "the active version" changes): the
generic workflow asks this activity, whose result is recorded in history, so the child is pinned to
the version resolved when the step started, and a replay sees the same one. The registry is read in
the parent run's tenant only: a definition of another tenant does not exist for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import check_tenant_scope
from activities.store.database import SessionFactory
from activities.store.errors import (
    DefinitionNotFoundError,
    InvalidReferenceError,
    InvalidTenantError,
    NoActiveVersionError,
    VersionArchivedError,
)
from activities.store.repository import DefinitionStore
from interpreter.state import SubflowDefinition, SubflowLookup

__all__ = ["SUBFLOW_RESOLVE", "SubflowActivities", "build_subflow_activities"]

SUBFLOW_RESOLVE = "subflow_resolve"


class SubflowActivities:
    """The subflow activity on one database.

    Args:
        session_factory: An ``async_sessionmaker`` on the store's database.
    """

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory

    @activity.defn(name=SUBFLOW_RESOLVE)
    async def resolve(self, lookup: SubflowLookup) -> SubflowDefinition:
        """The definition a subflow starts: the pinned version, or the active one.

        Raises:
            ApplicationError: Non-retryable: ``SubflowDefinitionNotFound`` (no such name or
                version in the tenant), ``SubflowVersionArchived``, ``SubflowNoActiveVersion`` (the
                name is deactivated), ``SubflowDefinitionInvalid`` (its stored body does not pass this
                build's checks), ``InvalidTenant``,
                ``TenantRefused`` (the worker does not serve the tenant). Database errors are
                retryable (the step waits until the database is back).
        """
        check_tenant_scope(lookup.tenant)
        ref = lookup.definition if lookup.version is None else f"{lookup.definition}@{lookup.version}"
        try:
            resolved = await DefinitionStore(self.session_factory, lookup.tenant).resolve(ref)
        except DefinitionNotFoundError as err:
            raise ApplicationError(str(err), type="SubflowDefinitionNotFound", non_retryable=True) from None
        except VersionArchivedError as err:
            raise ApplicationError(str(err), type="SubflowVersionArchived", non_retryable=True) from None
        except NoActiveVersionError as err:  # deactivated: retrying would wait for someone to activate one
            raise ApplicationError(str(err), type="SubflowNoActiveVersion", non_retryable=True) from None
        except (InvalidTenantError, InvalidReferenceError) as err:
            raise ApplicationError(str(err), type="InvalidTenant", non_retryable=True) from None
        except ValueError as err:  # a stored body this build no longer accepts (an action it lacks)
            raise ApplicationError(
                f"{ref!r} in tenant {lookup.tenant!r} is not a valid definition for this worker: {err}",
                type="SubflowDefinitionInvalid",
                non_retryable=True,
            ) from None
        return SubflowDefinition(definition=resolved.definition, content_hash=resolved.content_hash)


def build_subflow_activities(session_factory: SessionFactory) -> list[Callable[..., Any]]:
    """The subflow activity, ready for ``Worker(activities=...)``."""
    return [SubflowActivities(session_factory).resolve]
