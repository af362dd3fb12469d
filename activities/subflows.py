"""The activity a ``subflow`` step resolves its child's definition with.

A workflow cannot read the registry (that would be I/O, and "the active version" changes): the
generic workflow asks this activity, whose result is recorded in history, so the child is pinned to
the version resolved when the step started, and a replay sees the same one. The registry is read in
the parent run's tenant only: a definition of another tenant does not exist for it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.base import check_tenant_scope
from activities.input_check import (
    InputCheckBusyError,
    InputCheckFailedError,
    check_input,
    input_check_settings,
)
from activities.store.database import SessionFactory
from activities.store.errors import (
    DefinitionNotFoundError,
    InvalidReferenceError,
    InvalidTenantError,
    NoActiveVersionError,
    VersionArchivedError,
)
from activities.store.repository import DefinitionStore
from interpreter.input_schema import clip
from interpreter.state import SubflowDefinition, SubflowInputCheck, SubflowLookup

__all__ = [
    "DEFAULT_MAX_RUNS_PER_TREE",
    "MAX_RUNS_PER_TREE_ENV",
    "SUBFLOW_INPUT_PROBLEMS",
    "SUBFLOW_RESOLVE",
    "TREE_RUNS",
    "SubflowActivities",
    "build_subflow_activities",
    "max_runs_per_tree_from_env",
    "subflow_input_problems",
    "tree_runs",
]

SUBFLOW_RESOLVE = "subflow_resolve"
TREE_RUNS = "wfa.tree_runs"
"""The local activity a fanned-out ``foreach`` counts its run tree with (every worker serves it)."""
SUBFLOW_INPUT_PROBLEMS = "wfa.subflow_input_problems"
"""The local activity checking a ``subflow`` step's input against its child's ``input_schema``."""
PROBLEM_CHARS = 300
"""Each problem :func:`subflow_input_problems` answers is cut to this many characters (its answer
is written to the parent's history: at most 20 of them, about 6 KB)."""
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


def _worker_bound() -> int:
    """The bound a tree is held to now: ``WFA_MAX_RUNS_PER_TREE``, read at each check (the worker
    checks the variable at start; a value broken since falls back to the default, the safe side)."""
    try:
        return max_runs_per_tree_from_env()
    except ValueError:
        return DEFAULT_MAX_RUNS_PER_TREE


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
                ``TenantRefused`` (the worker does not serve the tenant),
                ``SubflowTreeLimitExceeded`` (the run's tree already counts the worker's
                ``WFA_MAX_RUNS_PER_TREE`` runs), ``SubflowTreeUncounted`` (the server cannot count
                by ``RootRunId``), ``HistoryLimit`` (the definition is larger than
                ``lookup.max_bytes``). Database and server errors are retryable (the step waits until
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
        except InvalidReferenceError as err:
            # The step's model takes any version from 1; the registry numbers them up to
            # 999,999,999 (nine digits), so a larger one names no stored version.
            message = (
                str(err)
                if lookup.version is None
                else f"definition {lookup.definition!r} has no version {lookup.version} in tenant"
                f" {lookup.tenant!r} (the registry numbers versions from 1 to 999,999,999)"
            )
            raise ApplicationError(message, type="SubflowDefinitionNotFound", non_retryable=True) from None
        except InvalidTenantError as err:
            raise ApplicationError(str(err), type="InvalidTenant", non_retryable=True) from None
        except ValueError as err:  # a stored body this build no longer accepts (an action it lacks)
            raise ApplicationError(
                f"{ref!r} in tenant {lookup.tenant!r} is not a valid definition for this worker: {err}",
                type="SubflowDefinitionInvalid",
                non_retryable=True,
            ) from None
        found = SubflowDefinition(definition=resolved.definition, content_hash=resolved.content_hash)
        if lookup.max_bytes is not None:
            size = activity.payload_converter().to_payloads([found])[0].ByteSize()
            if size > lookup.max_bytes:
                raise ApplicationError(
                    f"{ref!r} in tenant {lookup.tenant!r} takes {size:,} bytes, more than the"
                    f" {lookup.max_bytes:,} a subflow's definition may take in its parent run's"
                    " history (as an action's output): split it into smaller definitions, or"
                    " configure the payload store (WFA_PAYLOAD_STORE)",
                    type="HistoryLimit",
                    non_retryable=True,
                )
        if lookup.root_run_id is not None:
            await self._check_tree(lookup.root_run_id, ref)
        return found

    async def _check_tree(self, root_run_id: str, ref: str) -> None:
        """Refuses a subflow once the run's tree counts the worker's bound (see :class:`TreeCounts`)."""
        bound = _worker_bound()
        try:
            granted, counted = await TREE_COUNTS.grant(root_run_id, 1, bound)
        except ApplicationError as err:
            raise ApplicationError(
                f"subflow {ref!r}: {err.message}", type=err.type, non_retryable=True
            ) from None
        if not granted:
            raise ApplicationError(
                f"subflow {ref!r}: this run's tree (root run {root_run_id}) already counts"
                f" {counted:,} runs, the most this worker lets one tree start"
                f" ({MAX_RUNS_PER_TREE_ENV}={bound:,}); a definition that starts"
                " itself stops here",
                type="SubflowTreeLimitExceeded",
                non_retryable=True,
            )


_PERMANENT = frozenset(
    {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED}
)
"""Server answers a retry would not change: the step fails (``SubflowTreeUncounted``)."""


async def count_tree(root_run_id: str) -> int:
    """The runs of the tree under ``root_run_id`` (open, or closed within the namespace's
    retention), as Temporal's visibility store counts them (``RootRunId``, a UUID: no quoting).

    Raises:
        ApplicationError: Non-retryable ``SubflowTreeUncounted``: the server cannot count by
            ``RootRunId`` (or this worker may not), or ``root_run_id`` is not a run id. Other
            server errors (unavailable, throttled) are retryable.
    """
    if not _RUN_ID.fullmatch(root_run_id):
        raise ApplicationError(
            f"{root_run_id[:80]!r} is not a run id", type="SubflowTreeUncounted", non_retryable=True
        )
    try:
        counted = await activity.client().count_workflows(f"RootRunId = '{root_run_id}'")
    except RPCError as err:
        if err.status in _PERMANENT:
            raise ApplicationError(
                "the server cannot count the run tree's runs by RootRunId (Temporal 1.24 or later,"
                f" with visibility access for the worker): {err.status.name}: {err.message}",
                type="SubflowTreeUncounted",
                non_retryable=True,
            ) from None
        raise
    return counted.count


class TreeCounts:
    """Each run tree's count, per worker process: as visibility last counted it, plus the starts
    this process granted since; counted again at most every :attr:`refresh_s` per tree.

    A definition is not trusted to exhaust the cluster: one that starts itself detached from a
    foreach multiplies its runs at every level (2,000 open children per run, 5 levels deep), and
    nested fanned-out foreach steps multiply their children (each child has its own step budget).
    Temporal records every child's root run, so visibility's count covers subflows and fan-out
    slices started anywhere under the root, by any worker; counting once per tree and interval
    keeps a 10,000-subflow fan-out from spending the namespace's visibility rate (10 requests/s per
    frontend by default), and the starts granted here count at once (a wide foreach on this worker
    cannot race past the bound). What can pass it: starts granted by other workers within
    :attr:`refresh_s` plus visibility's lag."""

    def __init__(self, refresh_s: float = 2.0, most_trees: int = 10_000) -> None:
        self.refresh_s = refresh_s
        self.most_trees = most_trees
        self._trees: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def grant(self, root_run_id: str, starts: int, bound: int) -> tuple[bool, int]:
        """Whether ``starts`` more runs fit the tree under ``bound`` (then counted as started), and
        the tree's count before them.

        Raises:
            ApplicationError: From :func:`count_tree`.
        """
        lock = self._locks.setdefault(root_run_id, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            entry = self._trees.get(root_run_id)
            if entry is None or now - entry[0] > self.refresh_s:
                entry = (now, await count_tree(root_run_id))
            fetched, counted = entry
            granted = counted + starts <= bound
            self._trees[root_run_id] = (fetched, counted + starts) if granted else entry
            self._trees.move_to_end(root_run_id)
            while len(self._trees) > self.most_trees:
                old, _ = self._trees.popitem(last=False)
                if old != root_run_id:
                    self._locks.pop(old, None)
            return granted, counted


TREE_COUNTS = TreeCounts()
"""This worker process's tree counts (shared by ``subflow_resolve`` and ``wfa.tree_runs``)."""


@activity.defn(name=TREE_RUNS)
async def tree_runs(root_run_id: str, starts: int) -> list[int]:
    """``[runs the tree under root_run_id counts, this worker's WFA_MAX_RUNS_PER_TREE]``, the
    ``starts`` counted as started when they fit: a local activity of a fanned-out foreach (its
    answer recorded, so replay keeps it)."""
    bound = _worker_bound()
    _, counted = await TREE_COUNTS.grant(root_run_id, starts, bound)
    return [counted, bound]


@activity.defn(name=SUBFLOW_INPUT_PROBLEMS)
async def subflow_input_problems(check: SubflowInputCheck) -> list[str]:
    """The problems of a subflow's input against its child's ``input_schema`` (none: it may start),
    each ``path: message`` as every other start reports them: a local activity of the ``subflow``
    step, so the child of a stored definition gets the input its schema promises, as every run
    started any other way does (``interpreter.input_schema``). Checked in a process of its own
    (:func:`activities.input_check.check_input`), within ``WFA_INPUT_CHECK_DEADLINE``: a check that
    takes longer fails for good (``InputCheckTooSlow``); one that found no free slot
    (``InputCheckBusy``) or whose process failed (``InputCheckFailed``) is retried."""
    try:
        problems = await check_input(
            check.input_schema, check.input, owner=check.tenant, most_chars=PROBLEM_CHARS
        )
    except TimeoutError:
        raise ApplicationError(
            f"checking the input against the child's input_schema took more than"
            f" {input_check_settings().deadline_s:g} s of CPU (a schema whose uniqueItems or nested"
            " combinators meet a large input): stopped",
            type="InputCheckTooSlow",
            non_retryable=True,
        ) from None
    except InputCheckBusyError as err:
        raise ApplicationError(str(err), type="InputCheckBusy") from None
    except (InputCheckFailedError, OSError, ValueError) as err:
        raise ApplicationError(str(err), type="InputCheckFailed") from None
    return [clip(f"{path}: {message}", PROBLEM_CHARS) for path, message in problems]


def build_subflow_activities(session_factory: SessionFactory) -> list[Callable[..., Any]]:
    """The subflow activity, ready for ``Worker(activities=...)``."""
    return [SubflowActivities(session_factory).resolve]
