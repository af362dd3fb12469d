"""The activity a ``subflow`` step resolves its child's definition with.

A workflow cannot read the registry (that would be I/O, and "the active version" changes): the
generic workflow asks this activity, whose result is recorded in history, so the child is pinned to
the version resolved when the step started, and a replay sees the same one. The registry is read in
the parent run's tenant only: a definition of another tenant does not exist for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

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

__all__ = [
    "DEFAULT_MAX_RUNS_PER_TREE",
    "MAX_RUNS_PER_TREE_ENV",
    "SUBFLOW_RESOLVE",
    "TREE_RUNS",
    "SubflowActivities",
    "build_subflow_activities",
    "max_runs_per_tree_from_env",
    "tree_runs",
]

SUBFLOW_RESOLVE = "subflow_resolve"
TREE_RUNS = "wfa.tree_runs"
"""The local activity a fanned-out ``foreach`` counts its run tree with (every worker serves it)."""
MAX_RUNS_PER_TREE_ENV = "WFA_MAX_RUNS_PER_TREE"
DEFAULT_MAX_RUNS_PER_TREE = 20_000
"""Runs one tree may count (its root, every subflow and fan-out slice under it, open or closed
within the namespace's retention): a 10,000-item fan-out whose every item starts a subflow fits."""
_TREE_RANGE = (10, 1_000_000)
_RUN_ID = re.compile(r"[0-9a-fA-F-]{1,64}")


def max_runs_per_tree_from_env(env: Mapping[str, str] | None = None) -> int:
    """The worker's ``WFA_MAX_RUNS_PER_TREE`` (default :data:`DEFAULT_MAX_RUNS_PER_TREE`).

    Raises:
        ValueError: Not a whole number from 10 to 1,000,000 (the message names the variable).
    """
    raw = (os.environ if env is None else env).get(MAX_RUNS_PER_TREE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RUNS_PER_TREE
    low, high = _TREE_RANGE
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise ValueError(
            f"{MAX_RUNS_PER_TREE_ENV}: {raw[:40]!r} is not a whole number of runs from {low:,} to {high:,}"
        )
    return value


class SubflowActivities:
    """The subflow activity on one database.

    Args:
        session_factory: An ``async_sessionmaker`` on the store's database.
        max_runs_per_tree: The most runs one run tree may count; default ``WFA_MAX_RUNS_PER_TREE``'s
            (the worker checks the variable at start; a value broken since falls back to the
            default).
    """

    def __init__(self, session_factory: SessionFactory, max_runs_per_tree: int | None = None) -> None:
        self.session_factory = session_factory
        if max_runs_per_tree is None:
            try:
                max_runs_per_tree = max_runs_per_tree_from_env()
            except ValueError:
                max_runs_per_tree = DEFAULT_MAX_RUNS_PER_TREE
        self.max_runs_per_tree = max_runs_per_tree

    @activity.defn(name=SUBFLOW_RESOLVE)
    async def resolve(self, lookup: SubflowLookup) -> SubflowDefinition:
        """The definition a subflow starts: the pinned version, or the active one.

        Raises:
            ApplicationError: Non-retryable: ``SubflowDefinitionNotFound`` (no such name or
                version in the tenant), ``SubflowVersionArchived``, ``SubflowNoActiveVersion`` (the
                name is deactivated), ``SubflowDefinitionInvalid`` (its stored body does not pass this
                build's checks), ``InvalidTenant``,
                ``TenantRefused`` (the worker does not serve the tenant),
                ``SubflowTreeLimitExceeded`` (the run's tree already counts the worker's
                ``WFA_MAX_RUNS_PER_TREE`` runs), ``SubflowTreeUncounted`` (the server cannot count
                by ``RootRunId``). Database and server errors are retryable (the step waits until
                they are back).
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
        if lookup.root_run_id is not None:
            await self._check_tree(lookup.root_run_id, ref)
        return SubflowDefinition(definition=resolved.definition, content_hash=resolved.content_hash)

    async def _check_tree(self, root_run_id: str, ref: str) -> None:
        """Refuses a subflow once the run's tree counts :attr:`max_runs_per_tree` runs (see
        :func:`count_tree`)."""
        try:
            counted = await count_tree(root_run_id)
        except ApplicationError as err:
            raise ApplicationError(
                f"subflow {ref!r}: {err.message}", type=err.type, non_retryable=True
            ) from None
        if counted >= self.max_runs_per_tree:
            raise ApplicationError(
                f"subflow {ref!r}: this run's tree (root run {root_run_id}) already counts"
                f" {counted:,} runs, the most this worker lets one tree start"
                f" ({MAX_RUNS_PER_TREE_ENV}={self.max_runs_per_tree:,}); a definition that starts"
                " itself stops here",
                type="SubflowTreeLimitExceeded",
                non_retryable=True,
            )


async def count_tree(root_run_id: str) -> int:
    """The runs of the tree under ``root_run_id`` (open, or closed within the namespace's retention).

    A definition is not trusted to exhaust the cluster: one that starts itself detached from a
    foreach would otherwise multiply its runs at every level (2,000 open children per run, 5 levels
    deep), and nested fanned-out foreach steps multiply their slices. Temporal records every child's
    root run (``RootRunId``, a UUID: no quoting), so the count covers subflows and fan-out slices
    started anywhere under the root, by any worker. Visibility is eventually consistent: starts
    racing within its lag can pass the bound by the runs that start in that moment, not more.

    Raises:
        ApplicationError: Non-retryable ``SubflowTreeUncounted``: the server cannot count by
            ``RootRunId``, or ``root_run_id`` is not a run id. Other server errors are retryable.
    """
    if not _RUN_ID.fullmatch(root_run_id):
        raise ApplicationError(
            f"{root_run_id[:80]!r} is not a run id", type="SubflowTreeUncounted", non_retryable=True
        )
    try:
        counted = await activity.client().count_workflows(f"RootRunId = '{root_run_id}'")
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ApplicationError(
                "the server cannot count the run tree's runs by RootRunId"
                f" (Temporal 1.23 or later with its visibility store): {err.message}",
                type="SubflowTreeUncounted",
                non_retryable=True,
            ) from None
        raise
    return counted.count


@activity.defn(name=TREE_RUNS)
async def tree_runs(root_run_id: str) -> list[int]:
    """``[runs the tree under root_run_id counts, this worker's WFA_MAX_RUNS_PER_TREE]``: a local
    activity of a fanned-out foreach (its answer recorded, so replay keeps it). The worker checks
    the variable at start; a value broken since falls back to the default."""
    try:
        bound = max_runs_per_tree_from_env()
    except ValueError:
        bound = DEFAULT_MAX_RUNS_PER_TREE
    return [await count_tree(root_run_id), bound]


def build_subflow_activities(session_factory: SessionFactory) -> list[Callable[..., Any]]:
    """The subflow activity, ready for ``Worker(activities=...)``."""
    return [SubflowActivities(session_factory).resolve]
