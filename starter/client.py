"""The Python client API: validate definitions, start runs, decide approvals, cancel, inspect.

::

    flows = await FlowClient.connect()              # TEMPORAL_ADDRESS / _NAMESPACE / _TASK_QUEUE
    run = await flows.start_run("examples/expense-approval.json", {"amount": 250},
                                workflow_id="expense-4711")
    await flows.approve("expense-4711", "manager", reason="ok")
    result = await run.result()                     # RunResult, also for failed runs

Every call names the run by its workflow id, which is the business key when one was given. Errors
are :class:`~starter.errors.StarterError` subclasses (see :mod:`starter.errors`), except an invalid
definition, which raises :class:`~interpreter.validate.DefinitionError` listing JSON paths, and the
store's errors (registry and dead letters), which are :class:`~activities.store.errors.StoreError`
subclasses.

Stored definitions and dead letters live in PostgreSQL (``DATABASE_URL``, else the embedded server
under ``.state/``), opened on first use and scoped to the client's tenant (``WFA_TENANT``)::

    flows = await FlowClient.connect(tenant="acme")
    await flows.register("examples/intervention.json", author="ann")   # v1, active
    run = await flows.start_run("intervention", {...})                  # the active version
    run = await flows.start_run("intervention@1", {...})                # pinned
    await flows.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import uuid4

from pydantic import BaseModel
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    Priority,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)
from temporalio.service import RPCError, RPCStatusCode

from interpreter.model import Definition
from interpreter.sizes import temporal_id
from interpreter.state import (
    COMPACT_RUN_INPUT_LEVEL,
    MAX_ACTOR_CHARS,
    MAX_DECISION_GROUPS,
    MAX_DECISION_REASON_CHARS,
    ApprovalsPage,
    ApprovalsQuery,
    CancelRequest,
    CancelRunRequest,
    DeadLetterAction,
    DeadLetterDecision,
    DeadLetterResolution,
    Decision,
    DecisionKind,
    DecisionRecord,
    DecisionRequest,
    ParkedStep,
    PendingApproval,
    ResultSteps,
    RunInput,
    RunOptions,
    RunResult,
    RunState,
    RunStatus,
    StepStatus,
    dead_letter_size_problem,
    decision_size_problem,
)
from interpreter.validate import DEFINITION_MAX_DEPTH, definition_hash
from starter import tokens
from starter.config import (
    DATABASE_URL_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    DEFAULT_TASK_QUEUE,
    DEFAULT_TENANT,
    TASK_QUEUE_ENV,
    TENANT_ENV,
)
from starter.definitions import DefinitionSource, load
from starter.definitions import document as _document
from starter.errors import (
    DecisionRefusedError,
    InputCheckUnavailableError,
    InvalidInputError,
    InvalidRunInputError,
    NoWorkerError,
    PayloadUnreadableError,
    PendingApprovalsUnknownError,
    ResultTimeoutError,
    RunAlreadyExistsError,
    RunClosedError,
    RunNotFoundError,
    ScheduleSyncError,
    ServerUnavailableError,
    StarterError,
    unreadable_payload,
)
from starter.inputs import brief as _brief
from starter.inputs import check_json, check_json_object, check_text, json_type
from workflows.decision_tokens import MAX_TOKEN_CHARS
from workflows.generic import ENGINE_LEVEL, RunDefinitionWorkflow
from workflows.priority import priority_grants, run_priority
from workflows.search_attributes import (
    AWAITING_APPROVAL,
    CURRENT_STEP,
    DEFINITION_HASH,
    DEFINITION_NAME,
    DEFINITION_VERSION,
    RUN_STATE,
    TENANT,
    start_attributes,
)

if TYPE_CHECKING:
    # The store (SQLAlchemy, asyncpg) is imported on first use: most commands never touch it.
    from activities.store.database import Database
    from activities.store.models import DeadLetterStatus
    from activities.store.repository import (
        Activation,
        ActivationEntry,
        DeadLetter,
        DeadLetterStore,
        DefinitionInfo,
        DefinitionStore,
        NameSummary,
        Registration,
        ResolvedDefinition,
        StoredDefinition,
    )
    from starter.events import EventPublication
    from starter.schedules import ScheduleInfo, SyncResult

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TASK_QUEUE",
    "DEFAULT_TENANT",
    "DRY_RUN_PREFIX",
    "TENANT_ENV",
    "FlowClient",
    "PendingTimer",
    "RunHandle",
    "RunSummary",
    "is_registry_ref",
    "load",
]

RESOLVE_DEAD_LETTER_UPDATE = "resolve_dead_letter"
DRY_RUN_PREFIX = "dry-run-"
"""Workflow id prefix of every dry run (``start_run(..., dry_run=True)``)."""

QUERY_TIMEOUT = timedelta(seconds=10)
"""How long a status query of a running run may wait for a worker to answer."""

CLOSED_QUERY_TIMEOUT = timedelta(seconds=3)
"""The same for a run that has ended: its status can be rebuilt from history without a worker."""

QUERY_REPLAY_ATTEMPTS = 4
"""How often a status query is asked when a worker's replay for it failed (see :func:`query_status`)."""
_CUT_APPROVAL_PARTS = {"pending_approvals.message", "pending_approvals.description", "pending_approvals.form"}
"""What a ``status`` answer may have cut of its pending approvals (``RunStatus.left_out``)."""
MAX_APPROVAL_PAGES = 1000
"""Most pages :meth:`FlowClient.pending_approvals` reads (each holds at least one approval)."""

T = TypeVar("T")
log = logging.getLogger(__name__)

_TRANSIENT_QUERY_FAILURES = ("[TMPRL1100]", "[TMPRL1101]", "Workflow Task in failed state")


def _transient_query_failure(err: Exception) -> bool:
    """A query that failed in the worker's replay of the run, not because of the run.

    A worker answers a query on a run it no longer holds in its cache (a "legacy query") by
    replaying the run's history first. On an overloaded machine that replay can take longer than
    the SDK's two-second deadlock limit (TMPRL1101); a worker without the fix of issue 12 could
    also report a nondeterminism error (TMPRL1100) for that replay although the run's own workflow
    tasks complete (a dropped run's clean-up publishing into it, see ``GenericRun._at_home``);
    while a workflow task is being retried the server refuses queries ("Workflow Task in failed
    state"). Asking again answers once the worker has caught up.
    """
    if isinstance(err, WorkflowQueryFailedError):
        return any(marker in str(err) for marker in _TRANSIENT_QUERY_FAILURES)
    if isinstance(err, RPCError):
        return "Workflow Task in failed state" in err.message
    return False


@contextlib.contextmanager
def _readable(workflow_id: str) -> Iterator[None]:
    """Turns the SDK's errors for a payload this process cannot read (no store, no key) into
    :class:`PayloadUnreadableError`."""
    try:
        yield
    except (RuntimeError, KeyError) as err:
        problem = unreadable_payload(err)
        if problem is None:
            raise
        raise PayloadUnreadableError(workflow_id, problem) from None


async def query_status(handle: WorkflowHandle[Any, Any], rpc_timeout: timedelta | None = None) -> RunStatus:
    """The run's ``status`` query, asked again (up to :data:`QUERY_REPLAY_ATTEMPTS` times, 0.5 s,
    1 s, 2 s apart) when the worker's replay for it failed (:func:`_transient_query_failure`);
    any other failure, or the last one, is raised as it came."""

    async def ask() -> RunStatus:
        return await handle.query(RunDefinitionWorkflow.status, rpc_timeout=rpc_timeout)

    return await _query(ask)


def _no_worker_answered(err: RPCError) -> bool:
    """Whether a query failed for want of a worker: its own deadline (CANCELLED, "Timeout
    expired", or DEADLINE_EXCEEDED), or no poller on the run's task queue."""
    return err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED) or (
        err.status == RPCStatusCode.FAILED_PRECONDITION and "poller" in err.message.lower()
    )


def _task_failing(err: RPCError) -> bool:
    """Whether a query was refused because the run's workflow task keeps failing (a worker without
    the workflow, a payload it cannot decode): no worker can answer until that is fixed."""
    return (
        err.status == RPCStatusCode.FAILED_PRECONDITION
        and "workflow task in failed state" in err.message.lower()
    )


async def _query(ask: Callable[[], Awaitable[T]]) -> T:
    """``ask()``, a query of a run, asked again as :func:`query_status` says."""
    for attempt in range(QUERY_REPLAY_ATTEMPTS):
        try:
            return await ask()
        except (WorkflowQueryFailedError, RPCError) as err:
            if attempt == QUERY_REPLAY_ATTEMPTS - 1 or not _transient_query_failure(err):
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


UPDATE_TIMEOUT_S = 30.0
LIVE_POLLER_S = 75.0
"""A poller the server saw this recently is a live worker (a worker's long poll lasts a minute)."""
"""How long a validated decision (the ``decide`` update) may wait for a worker to accept it."""
CHAIN_TRIES = 5
"""How many runs of a continue-as-new chain a cancel follows (each refused it: it had continued)."""
CHAIN_CLOSING_WAIT_S = 0.2
"""How long a cancel waits (times the try) for the next run of a chain whose run refused it while
it closed."""


def is_registry_ref(definition: object) -> bool:
    """Whether :meth:`FlowClient.start_run` takes ``definition`` as a registry reference.

    A ``str`` is a reference (``name`` or ``name@3``) when it is not JSON text, not the path of an
    existing file, and has the shape of a name: no ``/``, and not ending in ``.json`` (which is
    taken as a file path, so a mistyped file name still says "file not found").
    """
    if not isinstance(definition, str):
        return False
    text = definition.strip()
    if text.startswith("{") or text.endswith(".json") or os.sep in text or "/" in text:
        return False
    from activities.store.repository import looks_like_ref

    if not looks_like_ref(text):
        return False
    return not Path(definition).is_file()


def _is_pydantic(client: Client) -> bool:
    return client.data_converter.payload_converter_class is PydanticPayloadConverter


@dataclass(frozen=True)
class RunStart:
    """How a run is started (see :meth:`FlowClient.run_start`)."""

    input: RunInput
    search_attributes: TypedSearchAttributes
    workflow_type: str
    static_summary: str
    static_details: str
    memo: dict[str, Any]
    priority: Priority


def _check_start_arguments(
    definition: object, workflow_id: object, task_queue: object, dry_run: object, id_reuse_policy: object
) -> None:
    """Refuses the arguments of :meth:`FlowClient.start_run` of another type than it takes, in
    words (a probe: an int was a TypeError or an AttributeError, ``""`` a folder's read error,
    ``dry_run="no"`` a dry run, a NUL in the task queue a run no worker could poll).

    Raises:
        InvalidInputError: Naming the argument.
    """
    if not isinstance(definition, str | Mapping | Definition | os.PathLike) or definition in ("", b""):
        raise InvalidInputError(
            "definition must be a registered name (name@version), a file path, JSON text, a mapping"
            f" or a Definition, not {_brief(definition)}"
        )
    if workflow_id is not None and not isinstance(workflow_id, str):
        raise InvalidInputError(f"workflow_id must be a string, not {json_type(workflow_id)}")
    if isinstance(workflow_id, str) and workflow_id.startswith(DRY_RUN_PREFIX) and dry_run is False:
        # A run of this id would be taken for a dry run, and a dry run's id for this run's.
        raise InvalidInputError(f"a business key may not start with {DRY_RUN_PREFIX!r}: it marks dry runs")
    if task_queue is not None and (
        not isinstance(task_queue, str) or not task_queue.strip() or _unprintable(task_queue) is not None
    ):
        raise InvalidInputError(
            f"task_queue must be a name without control characters, not {_brief(task_queue)}"
        )
    if not isinstance(dry_run, bool):
        raise InvalidInputError(f"dry_run must be True or False, not {_brief(dry_run)}")
    if not isinstance(id_reuse_policy, WorkflowIDReusePolicy):
        raise InvalidInputError(
            f"id_reuse_policy must be a WorkflowIDReusePolicy, not {_brief(id_reuse_policy)}"
        )


def check_business_key(workflow_id: str) -> None:
    """Refuses a business key (a run's workflow id) that is empty or holds a control character.

    Found by a probe: ``wfa start --id $'x\\e[2J'`` was accepted, and every ``wfa list`` and
    ``wfa status`` then wrote the escape sequence to the operator's terminal (clearing it,
    retitling it); a newline split the suggested ``wfa status`` command in two; ``--id ''`` started a
    run under a generated id instead.

    Raises:
        InvalidInputError: Naming the first such character by its code point.
    """
    if not workflow_id.strip():
        raise InvalidInputError("the business key (workflow id) is empty")
    character = _unprintable(workflow_id)
    if character is not None:
        what = "control character" if unicodedata.category(character) == "Cc" else "lone surrogate"
        raise InvalidInputError(
            f"the business key (workflow id) holds the {what} U+{ord(character):04X}:"
            " use printable characters only"
        )


def _unprintable(name: str) -> str | None:
    """The first control character or lone surrogate in ``name`` (an id or a queue's name), or None."""
    return next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)


async def check_run_input(definition: Definition, run_input: Mapping[str, Any], *, tenant: str = "") -> None:
    """Refuses an input that does not match the definition's ``input_schema``. The check runs in a
    separate process, stopped at ``WFA_INPUT_CHECK_DEADLINE`` (:mod:`activities.input_check`): a
    tenant's schema cannot hold the caller's event loop.

    Args:
        definition: The definition the run would start from.
        run_input: The run input.
        tenant: Whose run it is (one tenant holds at most all but one checking slot).

    Raises:
        InvalidRunInputError: Naming the JSON path of each problem, or the deadline the check
            passed (nothing was started).
        InputCheckUnavailableError: No checking slot came free, or the checking process failed.
    """
    from activities.input_check import (
        InputCheckBusyError,
        InputCheckFailedError,
        check_input,
        input_check_settings,
    )
    from interpreter.input_schema import schema_input_problems
    from interpreter.validate import Problem

    if definition.input_schema is None or not isinstance(run_input, Mapping):
        problems = schema_input_problems(definition.input_schema, run_input)  # no schema to apply
    else:
        try:
            found = await check_input(definition.input_schema, run_input, owner=tenant, most_chars=1000)
        except TimeoutError:
            deadline = input_check_settings().deadline_s
            found = [
                ("$", f"checking it against the input_schema took more than {deadline:g} s of CPU: stopped")
            ]
        except ValueError as err:  # WFA_INPUT_CHECK_DEADLINE or _SLOTS malformed
            raise InvalidInputError(str(err)) from None
        except (InputCheckBusyError, InputCheckFailedError, OSError) as err:
            raise InputCheckUnavailableError(
                f"the input of {definition.name} v{definition.version} could not be checked against its"
                f" input_schema: {err}"
            ) from None
        problems = [Problem(path, message) for path, message in found]
    if problems:
        raise InvalidRunInputError(definition.name, definition.version, problems)


@dataclass(frozen=True)
class PendingTimer:
    """A durable timer of a run that has not fired (see :meth:`FlowClient.pending_timers`).

    Attributes:
        summary: What it waits for, as the Web UI shows it (the delay's or approval's name).
        fires_at: When it fires.
    """

    summary: str
    fires_at: datetime


def _summary_of(event: HistoryEvent) -> str:
    """The user metadata summary of a history event (a JSON string payload), "" without one."""
    if not event.HasField("user_metadata") or not event.user_metadata.HasField("summary"):
        return ""
    data: bytes = event.user_metadata.summary.data
    try:
        value = json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _step_path(activity_id: str) -> str:
    """The step path of an action's activity id (``path``, ``path#2`` on a revisit, ``path~r1``
    once redriven)."""
    return activity_id.split("#", 1)[0].split("~", 1)[0]


async def _decode_pending_failures(client: Client, description: WorkflowExecutionDescription) -> None:
    """Decrypts the last failure of each pending activity in place (with payload encryption on,
    its message reads "Encoded failure" and the real one is an encrypted attribute)."""
    codec = client.data_converter.payload_codec
    if codec is None:
        return
    for activity in description.raw_description.pending_activities:
        if not activity.HasField("last_failure"):
            continue
        failure = activity.last_failure
        await codec.decode_failure(failure)
        if failure.HasField("encoded_attributes"):
            attributes = client.data_converter.payload_converter.from_payload(failure.encoded_attributes)
            if isinstance(attributes, dict) and isinstance(attributes.get("message"), str):
                failure.message = attributes["message"]


_FITTED_ID = re.compile(r"^(?P<head>.*)~[0-9a-f]{32}~(?P<tail>.*)$", re.DOTALL)
"""An activity id past Temporal's limit, as the worker fits it (:func:`interpreter.sizes.temporal_id`):
the path's first bytes, a digest, its last bytes."""


def _pending_for(path: str, pending: dict[str, Any], fitted: list[tuple[str, Any]]) -> Any:
    """The pending activity of the step at ``path``: by its path, or for a path too long for an
    id, the one whose fitted id is this path's, with the suffix the id ends with (``#2``, ``~r1``:
    a path holds no ``#`` or ``~``), fitted again: exact, even for two items whose paths differ
    only in the bytes the digest stands for."""
    found = pending.get(path)
    if found is None:
        for suffix, activity in fitted:
            if temporal_id(path + suffix) == activity.activity_id:
                return activity
    return found


def _with_pending_activities(status: RunStatus, description: WorkflowExecutionDescription) -> RunStatus:
    """``status`` with each running task's attempt and last error from Temporal's pending activity.

    The workflow learns of an action's attempts and errors only when the activity finally
    completes or fails; meanwhile the server knows which attempt runs and why the last one failed.
    """
    pending: dict[str, Any] = {}
    fitted: list[tuple[str, Any]] = []
    for activity in description.raw_description.pending_activities:
        match = _FITTED_ID.match(activity.activity_id)
        if match is None:
            pending[_step_path(activity.activity_id)] = activity
        else:
            tail = match["tail"]
            fitted.append((tail[len(_step_path(tail)) :], activity))
    if not pending and not fitted:
        return status
    steps = []
    for step in status.steps:
        activity = _pending_for(step.path, pending, fitted)
        if activity is not None and step.type == "task" and step.status == StepStatus.RUNNING:
            update: dict[str, Any] = {"attempts": max(step.attempts, activity.attempt)}
            if activity.HasField("last_failure"):
                failure = activity.last_failure
                update["error"] = failure.message
                update["error_type"] = (
                    failure.application_failure_info.type
                    if failure.HasField("application_failure_info")
                    else "ActivityFailure"
                ) or None
            steps.append(step.model_copy(update=update))
        else:
            steps.append(step)
    return status.model_copy(update={"steps": steps})


class RunSummary(BaseModel):
    """One run as listed by :meth:`FlowClient.list_runs` (from its search attributes).

    Attributes:
        workflow_id: The run's workflow id (business key).
        run_id: Temporal's id of the execution.
        definition: The definition's name, ``version`` its version.
        state: The run's state (:class:`RunState` value); for a run that Temporal closed without
            the workflow recording a final state (cancelled or terminated through Temporal, timed
            out), the state that close means.
        temporal_status: Temporal's execution status (``RUNNING``, ``COMPLETED``, ``FAILED``, ...).
        awaiting_approval: Whether it waits for a person.
        current_step: The step where it waits durably, "" if none.
        tenant: The tenant it belongs to.
        started_at: When it started; ``closed_at`` when it ended (None while it runs).
    """

    workflow_id: str
    run_id: str
    definition: str
    version: int | None
    state: str
    temporal_status: str
    awaiting_approval: bool
    current_step: str
    tenant: str
    started_at: datetime
    closed_at: datetime | None


ALTERED_PAYLOAD = "PayloadStoreAltered"
"""The error type of a run that failed reading an altered stored payload
(:class:`starter.payload_store.PayloadStoreAltered`)."""
_OPEN_STATES = (RunState.RUNNING, RunState.AWAITING_APPROVAL, RunState.PARKED, RunState.COMPENSATING)
_CLOSED_MEANING = {
    WorkflowExecutionStatus.COMPLETED: RunState.COMPLETED,
    WorkflowExecutionStatus.FAILED: RunState.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: RunState.FAILED,
    WorkflowExecutionStatus.CANCELED: RunState.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: RunState.CANCELLED,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: RunState.RUNNING,
}


def runs_query(
    tenant: str,
    *,
    definition: str | None = None,
    version: int | None = None,
    state: RunState | str | None = None,
    awaiting_approval: bool | None = None,
    dry_runs: bool | None = None,
) -> str:
    """The visibility query of :meth:`FlowClient.list_runs` (values are checked, not escaped).
    ``dry_runs``: None any run, False no dry run, True only dry runs (by their workflow id).

    Raises:
        InvalidInputError: A value is malformed.
    """
    clauses = [
        # Runs of the default tenant started before runs carried the attribute have none.
        f"(Tenant = '{tenant}' OR Tenant IS NULL)" if tenant == DEFAULT_TENANT else f"Tenant = '{tenant}'"
    ]
    if definition is not None:
        if not isinstance(definition, str) or not _SA_VALUE.fullmatch(definition):
            raise InvalidInputError(f"not a definition name: {_brief(definition)}")
        clauses.append(f"DefinitionName = '{definition}'")
    if version is not None:
        clauses.append(f"DefinitionVersion = {check_version(version)}")
    if state is not None:
        try:
            wanted = RunState(state)
        except ValueError:
            raise InvalidInputError(
                f"not a run state: {_brief(state)} (one of {', '.join(s.value for s in RunState)})"
            ) from None
        if wanted in _OPEN_STATES:
            clauses.append(f"RunState = '{wanted.value}' AND ExecutionStatus = 'Running'")
        elif wanted == RunState.CANCELLED:
            clauses.append("(RunState = 'cancelled' OR ExecutionStatus IN ('Canceled', 'Terminated'))")
        elif wanted == RunState.FAILED:
            clauses.append("(RunState = 'failed' OR ExecutionStatus = 'TimedOut')")
        else:
            clauses.append(f"RunState = '{wanted.value}'")
    if awaiting_approval is not None:
        clauses.append(f"AwaitingApproval = {'true' if awaiting_approval else 'false'}")
    if dry_runs is not None:
        if not isinstance(dry_runs, bool):
            raise InvalidInputError(f"dry_runs must be True, False or None, not {_brief(dry_runs)}")
        clauses.append(f"WorkflowId {'' if dry_runs else 'NOT '}STARTS_WITH '{DRY_RUN_PREFIX}'")
    return " AND ".join(clauses)


_SA_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}")


def _run_summary(execution: WorkflowExecution, default_tenant: str) -> RunSummary:
    attributes = execution.typed_search_attributes
    status = execution.status or WorkflowExecutionStatus.RUNNING
    state = attributes.get(RUN_STATE) or RunState.RUNNING.value
    if status != WorkflowExecutionStatus.RUNNING and state in {s.value for s in _OPEN_STATES}:
        state = _CLOSED_MEANING.get(status, RunState.FAILED).value
    return RunSummary(
        workflow_id=execution.id,
        run_id=execution.run_id,
        definition=attributes.get(DEFINITION_NAME) or "",
        version=attributes.get(DEFINITION_VERSION),
        state=state,
        temporal_status=status.name,
        awaiting_approval=bool(attributes.get(AWAITING_APPROVAL)),
        current_step=attributes.get(CURRENT_STEP) or "",
        tenant=attributes.get(TENANT) or default_tenant,
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


@dataclass(frozen=True)
class RunHandle:
    """A run, as returned by :meth:`FlowClient.start_run`; its methods delegate to the client.

    Attributes:
        workflow_id: The run's workflow id (the business key when one was given).
        run_id: Temporal's id of this execution.
        started: False when a run with this id was already running and was returned instead of
            starting a duplicate.
        definition: Name of the definition the run runs (for an existing run returned instead of a
            duplicate, the one it was started with, which may differ from the one just given).
        version: Its version.
        definition_hash: Its content hash (see :func:`interpreter.validate.definition_hash`).
    """

    client: FlowClient
    workflow_id: str
    run_id: str | None
    started: bool
    definition: str
    version: int
    definition_hash: str

    async def status(self) -> RunStatus:
        """See :meth:`FlowClient.status`."""
        return await self.client.status(self.workflow_id)

    async def result(self, timeout: float | None = None) -> RunResult:
        """See :meth:`FlowClient.result`."""
        return await self.client.result(self.workflow_id, timeout=timeout)

    async def approve(self, actor: str, **kwargs: Any) -> DecisionRecord | None:
        """See :meth:`FlowClient.approve`."""
        return await self.client.approve(self.workflow_id, actor, **kwargs)

    async def reject(self, actor: str, **kwargs: Any) -> DecisionRecord | None:
        """See :meth:`FlowClient.reject`."""
        return await self.client.reject(self.workflow_id, actor, **kwargs)

    async def cancel(self, actor: str, reason: str = "") -> None:
        """See :meth:`FlowClient.cancel`."""
        await self.client.cancel(self.workflow_id, actor, reason)


class FlowClient:
    """Client of the workflow-automation service on one Temporal namespace.

    Args:
        client: A connected Temporal client. If it was not created with
            ``pydantic_data_converter``, a copy using it is made (the workflow's models need it).
        task_queue: Where new runs are scheduled (the queue the workers poll).
        database: The store (definition registry, dead letters): an open
            :class:`~activities.store.database.Database` (the caller closes it), or a URL; default
            ``$DATABASE_URL``, else the embedded server. Opened on first use, closed by :meth:`close`.
        tenant: The tenant every registry and dead letter call is scoped to, and the runs belong
            to; default ``$WFA_TENANT`` or ``default``.
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str = DEFAULT_TASK_QUEUE,
        database: Database | str | None = None,
        tenant: str | None = None,
    ) -> None:
        if not _is_pydantic(client):
            config = client.config()
            config["data_converter"] = pydantic_data_converter
            client = Client(**config)
        self.client = client
        self.task_queue = task_queue
        self.tenant = _check_tenant(
            tenant if tenant is not None else os.environ.get(TENANT_ENV) or DEFAULT_TENANT
        )
        _check_namespace(self.tenant, client.namespace)
        self._database: Database | None = None if database is None or isinstance(database, str) else database
        self._database_url = database if isinstance(database, str) else None
        self._owns_database = self._database is None
        self._database_lock = asyncio.Lock()
        self.decision_proof = tokens.proof_required_by_default()
        """Runs started here require signed decision tokens (default ``$WFA_REQUIRE_DECISION_PROOF``)."""
        self.engine_level = engine_level_from_env()
        """The interpreter generation runs started here are started at (:attr:`RunOptions.engine_level`):
        default this build's (``$WFA_ENGINE_LEVEL`` overrides it), so they carry no patch marker for
        any change it has. During a rollout whose new build is not yet what every worker runs, set it
        to the generation the older workers know (0: every change asked through
        ``workflow.patched``, as before the generations; what a build from before them can run)."""
        self._result_steps = result_steps_named_by_env()

    @property
    def result_steps(self) -> ResultSteps:
        """What the results of runs started here carry of their step records
        (:attr:`RunOptions.result_steps`; default ``$WFA_RESULT_STEPS``, else
        :func:`default_result_steps` of :attr:`engine_level` as it is when a run starts: ``compact``
        at generation 24 or above, ``full`` below); :meth:`start_run` takes another per run."""
        return self._result_steps or default_result_steps(self.engine_level)

    @result_steps.setter
    def result_steps(self, value: ResultSteps) -> None:
        self._result_steps = value

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        namespace: str | None = None,
        task_queue: str | None = None,
        *,
        database_url: str | None = None,
        tenant: str | None = None,
        profile: str | None = None,
        config_file: str | None = None,
    ) -> FlowClient:
        """Connects to the tenant's namespace on a Temporal server (the store is opened on first use).

        The namespace is the tenant's (:mod:`starter.tenancy`: ``WFA_TENANT_NAMESPACES``,
        ``WFA_NAMESPACE_PER_TENANT``, else ``TEMPORAL_NAMESPACE``), and so are the credentials: the
        Temporal configuration profile named after the tenant (``TEMPORAL_CONFIG_FILE``) if there
        is one, else the default profile, ``TEMPORAL_API_KEY`` and ``TEMPORAL_TLS_*``. The tenant
        selects credentials; it grants nothing the server would not grant them.

        Args:
            address: ``host:port``; default the tenant's profile's, ``$TEMPORAL_ADDRESS`` or
                ``127.0.0.1:7233``.
            namespace: Default the tenant's namespace. In a deployment with namespaces per tenant,
                another namespace than the tenant's is refused; otherwise it is the namespace of
                every tenant (default ``$TEMPORAL_NAMESPACE`` or ``default``).
            task_queue: Default ``$TEMPORAL_TASK_QUEUE`` or ``workflow-automation``.
            database_url: The store's PostgreSQL; default ``$DATABASE_URL``, else the embedded
                server under the local state folder.
            tenant: Default ``$WFA_TENANT`` or ``default``.
            profile: Temporal configuration profile (default ``$TEMPORAL_PROFILE``; a profile
                named after the tenant otherwise wins): :mod:`starter.connection`.
            config_file: Temporal configuration file (default ``$TEMPORAL_CONFIG_FILE``).

        Returns:
            A client that always uses ``pydantic_data_converter`` (with the payload codec when
            ``WFA_PAYLOAD_KEYS``/``WFA_PAYLOAD_KEYS_FILE`` configure keys: :mod:`starter.codec`).

        Raises:
            ServerUnavailableError: The server cannot be reached; the message names the address.
            InvalidTenantError: The tenant name is malformed.
            InvalidInputError: A namespace not the tenant's, or an unusable tenancy configuration.
        """
        from starter.codec import PayloadKeysError
        from starter.codec import data_converter as product_converter
        from starter.connection import ConnectionConfigError, connect_options

        task_queue = task_queue or os.environ.get(TASK_QUEUE_ENV) or DEFAULT_TASK_QUEUE
        tenant = _check_tenant(tenant if tenant is not None else os.environ.get(TENANT_ENV) or DEFAULT_TENANT)
        try:
            options = connect_options(
                tenant=tenant, namespace=namespace, profile=profile, config_file=config_file, address=address
            )
            converter = product_converter(namespace=options["namespace"])
        except (ConnectionConfigError, PayloadKeysError) as err:
            raise InvalidInputError(str(err)) from None
        address = options.pop("target_host")
        try:
            client = await Client.connect(address, data_converter=converter, **options)
        except ValueError as err:  # e.g. "invalid target URL: invalid port number"
            raise InvalidInputError(
                f"invalid Temporal server address {_brief(address, 200)}: {err}"
            ) from None
        except RuntimeError as err:
            if "Invalid headers" in str(err):  # the settings, not the server (a probe: exit 3)
                raise InvalidInputError(
                    "the gRPC metadata to send is invalid (TEMPORAL_GRPC_META_* or the profile's"
                    f" grpc_meta): {_short(err)}"
                ) from None
            raise ServerUnavailableError(
                f"cannot reach the Temporal server at {address}: {_short(err)}", address
            ) from None
        return cls(client, task_queue=task_queue, database=database_url, tenant=tenant)

    # ------------------------------------------------------------------------------------ store

    def _state_budget(self) -> int | None:
        """The state budget of runs started here: raised when the client stores large payloads by
        reference (:mod:`starter.payload_store`), else the interpreter's default (None)."""
        from starter.payload_store import state_budget_for

        return state_budget_for(self.client.data_converter)

    async def database(self) -> Database:
        """The store's database, opened (and checked) on first use.

        Raises:
            DatabaseUnavailableError: The server cannot be reached or the database does not exist.
            MigrationsNotAppliedError: Its schema is not at this code's revision (``wfa db upgrade``).
        """
        async with self._database_lock:
            if self._database is None:
                from activities.store.database import open_database

                url = self._database_url or os.environ.get(DATABASE_URL_ENV) or None
                self._database = await open_database(url)
            return self._database

    async def definitions(self) -> DefinitionStore:
        """The definition registry of the client's tenant."""
        from activities.store.repository import DefinitionStore

        return DefinitionStore((await self.database()).session_factory, self.tenant)

    async def dead_letter_store(self) -> DeadLetterStore:
        """The dead letters of the client's tenant."""
        from activities.store.repository import DeadLetterStore

        return DeadLetterStore((await self.database()).session_factory, self.tenant)

    async def close(self) -> None:
        """Closes the store's connections (when the client opened them)."""
        database, self._database = self._database, None
        if database is not None and self._owns_database:
            await database.close()
        elif database is not None:
            self._database = database

    async def __aenter__(self) -> FlowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return self.client.service_client.config.target_host

    @property
    def namespace(self) -> str:
        """The namespace every call uses."""
        return self.client.namespace

    # ------------------------------------------------------------------------------ definitions

    @staticmethod
    def validate(definition: DefinitionSource) -> Definition:
        """Validates a definition without starting anything (no server needed).

        Args:
            definition: Path of a JSON file, JSON text, a dict, or a :class:`Definition`.

        Returns:
            The parsed definition.

        Raises:
            DefinitionError: Listing every problem with its JSON path.
            DefinitionFileNotFoundError: The path does not exist (also a ``FileNotFoundError``).
        """
        return load(definition)

    async def register(
        self, definition: DefinitionSource, author: str, *, activate: bool = False
    ) -> Registration:
        """Validates a definition and stores it in the registry as its name's next version.

        The registry assigns the version (a ``version`` in the document is ignored). The same body
        registered again is not stored twice: its existing version is returned (``created``
        False). The first version of a name becomes active; later ones only with ``activate``.

        Args:
            definition: Path of a JSON file, JSON text, a dict, or a :class:`Definition`.
            author: Who registers it (recorded).
            activate: Make this version the active one.

        Raises:
            DefinitionError: The definition is invalid (JSON paths); nothing is stored.
            DefinitionFileNotFoundError: The path does not exist.
            InputCheckUnavailableError: A schedule's fixed input could not be checked against the
                input_schema now (every checking slot busy); nothing is stored.
        """
        document = _document(definition)
        _check_document(document)
        _check_actor(author, "author")
        from activities.input_check import InputCheckBusyError, InputCheckFailedError

        try:
            registration = await (await self.definitions()).register(document, author, activate=activate)
        except (InputCheckBusyError, InputCheckFailedError) as err:
            raise InputCheckUnavailableError(
                f"a schedule's fixed input could not be checked against the input_schema: {err};"
                " nothing was stored"
            ) from None
        if registration.activated:
            info = registration.info
            await self._sync_triggers(info.name, f"{info.name} v{info.version} is registered and active")
        return registration

    async def list_definitions(self, name: str | None = None) -> list[NameSummary] | list[DefinitionInfo]:
        """Without ``name``: every name with its active version; with it: its versions.

        Raises:
            DefinitionNotFoundError: ``name`` is not in the tenant.
        """
        store = await self.definitions()
        return await store.list_versions(name) if name is not None else await store.list_names()

    async def show_definition(self, ref: str) -> StoredDefinition:
        """One version with its body: ``name`` (the active one) or ``name@3`` (archived ones too).

        Raises:
            InvalidReferenceError: Not ``name`` or ``name@N``.
            DefinitionNotFoundError / VersionNotFoundError: Not in the tenant.
        """
        return await (await self.definitions()).show(ref)

    async def resolve(self, ref: str) -> ResolvedDefinition:
        """The definition a run of ``ref`` would start from (see :meth:`DefinitionStore.resolve`)."""
        return await (await self.definitions()).resolve(ref)

    async def diff(self, name: str, v1: int, v2: int) -> str:
        """A unified diff of two versions (indented JSON, sorted keys); "" when they are equal."""
        return await (await self.definitions()).diff(name, check_version(v1), check_version(v2))

    async def activate(self, name: str, version: int, actor: str) -> Activation:
        """Makes ``version`` the active one: runs started by ``name`` from now on use it; runs
        already going keep the version they started with.

        Raises:
            DefinitionNotFoundError / VersionNotFoundError: Not in the tenant.
            VersionArchivedError: The version is archived.
        """
        _check_actor(actor, "actor")
        activation = await (await self.definitions()).activate(name, check_version(version), actor)
        await self._sync_triggers(name, f"{name} v{activation.version} is active")
        return activation

    async def rollback(self, name: str, actor: str) -> Activation:
        """Activates the version that was active before the current one.

        Raises:
            NothingToRollBackError: There was none (or all earlier ones are archived).
        """
        _check_actor(actor, "actor")
        activation = await (await self.definitions()).rollback(name, actor)
        await self._sync_triggers(name, f"{name} is rolled back to v{activation.version}")
        return activation

    async def archive(self, name: str, version: int, actor: str) -> DefinitionInfo:
        """Archives a version: it cannot be activated or started any more.

        Raises:
            ActiveVersionError: It is the active version.
        """
        _check_actor(actor, "actor")
        info = await (await self.definitions()).archive(name, check_version(version), actor)
        await self._sync_triggers(name, f"{name} v{info.version} is archived")
        return info

    async def deactivate(self, name: str, actor: str) -> Activation | None:
        """Leaves ``name`` without an active version: its triggers stop (its schedules are
        deleted) and it cannot be started by name until a version is activated (or rolled back
        to). Returns None when it was already deactivated.

        Raises:
            DefinitionNotFoundError: Not in the tenant.
            ScheduleSyncError: Deactivated in the registry, but its schedules could not be deleted.
        """
        _check_actor(actor, "actor")
        deactivation = await (await self.definitions()).deactivate(name, actor)
        await self._sync_triggers(name, f"{name} is deactivated")
        return deactivation

    # ---------------------------------------------------------------------------- triggers

    async def _sync_triggers(self, name: str, done: str) -> SyncResult:
        """Brings the live triggers of ``name`` in line with its active version after a registry
        change: its Temporal Schedules (webhook, event and row-change triggers are read from the
        registry when they fire, so nothing else has to change).

        Raises:
            ScheduleSyncError: The registry change stands; the schedules could not be written.
        """
        from starter.schedules import sync_schedules

        try:
            return await sync_schedules(self, name)
        except (ServerUnavailableError, InvalidInputError, InputCheckUnavailableError) as err:
            raise ScheduleSyncError(name, done, str(err)) from None

    async def sync_schedules(self, name: str | None = None) -> list[SyncResult]:
        """Writes the Temporal Schedules of ``name`` (or of every name of the tenant) from the
        registry's active versions, deleting those no active version declares (idempotent; the
        repair after an activation whose schedule sync failed).

        Raises:
            DefinitionNotFoundError: ``name`` is not in the tenant.
        """
        from starter.schedules import sync_all_schedules, sync_schedules

        if name is None:
            return await sync_all_schedules(self)
        await (await self.definitions()).history(name)  # DefinitionNotFoundError for a name not in the tenant
        return [await sync_schedules(self, name)]

    async def list_schedules(self, definition: str | None = None) -> list[ScheduleInfo]:
        """The schedule triggers of the tenant's active versions and their Temporal Schedules."""
        from starter.schedules import list_schedules

        return await list_schedules(self, definition)

    async def pause_schedule(self, schedule: str, note: str = "") -> str:
        """Pauses a schedule (``definition``, ``definition:trigger`` or its id); returns its id."""
        from starter.schedules import pause_schedule

        return await pause_schedule(self, schedule, note)

    async def unpause_schedule(self, schedule: str, note: str = "") -> str:
        """Unpauses a schedule; returns its id."""
        from starter.schedules import unpause_schedule

        return await unpause_schedule(self, schedule, note)

    async def trigger_schedule(self, schedule: str) -> str:
        """Starts one run of a schedule now; returns its id."""
        from starter.schedules import trigger_schedule

        return await trigger_schedule(self, schedule)

    async def backfill_schedule(self, schedule: str, start: datetime, end: datetime) -> str:
        """Runs the fires a schedule would have made between ``start`` and ``end``; returns its id."""
        from starter.schedules import backfill_schedule

        return await backfill_schedule(self, schedule, start, end)

    async def history(self, name: str) -> list[ActivationEntry]:
        """The audit log of a name: registrations, activations, rollbacks, archivals."""
        return await (await self.definitions()).history(name)

    # --------------------------------------------------------------------------------- starting

    async def start_run(
        self,
        definition: DefinitionSource,
        input: Mapping[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        dry_run: bool = False,
        canned_outputs: Mapping[str, Any] | None = None,
        id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        result_steps: ResultSteps | None = None,
    ) -> RunHandle:
        """Validates a definition and starts a run of it.

        The definition is validated first: an invalid one is refused before anything starts.

        A ``str`` that is not JSON text nor the path of an existing file is a registry reference
        (see :func:`is_registry_ref`): ``name`` starts the active version, ``name@3`` version 3, of
        the client's tenant. The run is pinned to that version: it keeps running it whatever
        becomes active later. Its name, version and content hash are in its search attributes
        (``DefinitionName``, ``DefinitionVersion``, ``DefinitionHash``) and memo.

        Idempotency by business key: pass ``workflow_id`` (e.g. ``intervention-family-123``).

        * While a run with that id is **running**, starting again does not start a duplicate: the
          existing run is returned (``RunHandle.started`` is False), even if it runs another
          definition or input.
        * When the earlier run **completed** (including ``compensated``), the key is spent and
          :class:`RunAlreadyExistsError` is raised, so a business key cannot be re-run by accident.
        * When the earlier run **failed, was cancelled, terminated or timed out**, a new run starts.

        Without ``workflow_id`` the id is ``"<definition name>-<uuid4>"``: always a new run.

        Args:
            definition: A registry reference, path of a JSON file, JSON text, a dict, or a
                :class:`Definition`.
            input: The run's input data (``input.*`` in templates).
            workflow_id: The business key.
            task_queue: Overrides the client's task queue.
            dry_run: Run the whole definition without any action: each task's output is what it
                would have sent (its rendered input, secret references unresolved) or its canned
                output; delays do not wait. The workflow id starts with ``dry-run-``, the summary
                says ``DRY RUN`` and the memo holds ``dry_run: true``.
            canned_outputs: With ``dry_run``: task outputs by step path (or step id), so a dry
                run can take the branches real outputs would.
            id_reuse_policy: When a closed run had this id: the default starts again only after a
                failure; ``REJECT_DUPLICATE`` never (a redelivered webhook, a row change already
                started), raising :class:`RunAlreadyExistsError`.

        Returns:
            A handle on the run.

        Raises:
            DefinitionError: The definition is invalid (nothing was started).
            DefinitionFileNotFoundError: The definition path does not exist.
            DefinitionNotFoundError / VersionNotFoundError: No such name or version in the tenant.
            VersionArchivedError: A pinned version that is archived (unless ``workflow_id`` is a
                running run of it: that run is returned, as for any retried start).
            RunAlreadyExistsError: A run with this id already completed.
            ServerUnavailableError: The server cannot be reached or refused the namespace or the
                search attributes.
        """
        _check_start_arguments(definition, workflow_id, task_queue, dry_run, id_reuse_policy)
        if result_steps is not None:
            try:
                result_steps = ResultSteps(result_steps)
            except ValueError:
                names = ", ".join(shape.value for shape in ResultSteps)
                raise InvalidInputError(
                    f"result_steps must be one of {names}, not {_brief(result_steps)}"
                ) from None
        run_input = check_json_object(input, "the run input")
        source = "file"
        if is_registry_ref(definition):
            from activities.store.errors import NoActiveVersionError, VersionArchivedError

            try:
                resolved = await self.resolve(str(definition))
            except (VersionArchivedError, NoActiveVersionError):
                # A retried start of a run that is going, whose version was archived (or whose
                # name was deactivated) since it started: the run, as for any retried start (it
                # was exit 5: a probe). Without such a run the error stands.
                going = await self._going_run_of(str(definition), workflow_id, dry_run)
                if going is None:
                    raise
                return going
            parsed, digest, source = resolved.definition, resolved.content_hash, "registry"
        else:
            parsed = load(definition)
            digest = definition_hash(parsed)
        if not -(2**63) <= parsed.version < 2**63:  # the DefinitionVersion search attribute is an Int
            raise InvalidInputError(f"definition version {_brief(parsed.version)} is out of range")
        await check_run_input(parsed, run_input, tenant=self.tenant)
        if workflow_id is not None:
            check_business_key(workflow_id)
        wf_id = workflow_id or f"{parsed.name}-{uuid4()}"
        canned = check_json_object(canned_outputs, "the canned outputs")
        if canned and not dry_run:
            raise InvalidInputError("canned outputs apply to dry runs only (dry_run=True)")
        if dry_run and not wf_id.startswith(DRY_RUN_PREFIX):
            wf_id = DRY_RUN_PREFIX + wf_id  # a dry run never takes a business key
        start = self.run_start(
            parsed,
            digest,
            source,
            run_input,
            workflow_id=wf_id,
            dry_run=dry_run,
            canned_outputs=canned,
            result_steps=result_steps,
        )
        try:
            handle: WorkflowHandle[Any, Any] = await self.client.start_workflow(
                start.workflow_type,
                start.input,
                id=wf_id,
                task_queue=task_queue or self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=id_reuse_policy,
                search_attributes=start.search_attributes,
                static_summary=start.static_summary,
                static_details=start.static_details,
                memo=start.memo,
                priority=start.priority,
            )
        except WorkflowAlreadyStartedError as err:
            raise RunAlreadyExistsError(wf_id, err.run_id) from None
        except RPCError as err:
            raise self._rpc_error(err, None, "start the run") from None
        # Whether USE_EXISTING returned a running execution instead of starting one is only in the
        # start response, which the SDK keeps on a private attribute; assume "started" without it.
        response = getattr(handle, "_start_workflow_response", None)
        started = bool(getattr(response, "started", True))
        name, version = parsed.name, parsed.version
        if not started:
            # The running execution may run another definition (or another version of this one):
            # report what it runs, from its search attributes (else the memo, as a raw client may
            # have set it). Another tenant's run with that id is refused without saying whose it is.
            try:
                existing = await self.describe(wf_id)
            except RunNotFoundError:
                raise RunAlreadyExistsError(
                    wf_id, None, reason=f"the workflow id {wf_id!r} is in use; choose another business key"
                ) from None
            memo = await existing.memo()
            attributes = existing.typed_search_attributes
            name = str(attributes.get(DEFINITION_NAME) or memo.get("definition") or name)
            version = int(attributes.get(DEFINITION_VERSION) or memo.get("version") or version)
            digest = str(attributes.get(DEFINITION_HASH) or memo.get("hash") or digest)
        return RunHandle(
            client=self,
            workflow_id=wf_id,
            run_id=handle.result_run_id,
            started=started,
            definition=name,
            version=version,
            definition_hash=digest,
        )

    async def _going_run_of(self, ref: str, workflow_id: str | None, dry_run: bool) -> RunHandle | None:
        """The tenant's running run ``workflow_id`` when it runs the definition ``ref`` names (its
        pinned version, if ``ref`` pins one), as :meth:`start_run` returns a run it did not start."""
        from activities.store.repository import parse_ref

        if workflow_id is None or dry_run:
            return None
        check_business_key(workflow_id)
        name, pinned = parse_ref(ref)
        try:
            description = await self.describe(workflow_id)
        except RunNotFoundError:
            return None
        attributes = description.typed_search_attributes
        version = attributes.get(DEFINITION_VERSION)
        if (
            description.status != WorkflowExecutionStatus.RUNNING
            or attributes.get(DEFINITION_NAME) != name
            or version is None
            or (pinned is not None and version != pinned)
        ):
            return None
        return RunHandle(
            client=self,
            workflow_id=workflow_id,
            run_id=description.run_id,
            started=False,
            definition=name,
            version=int(version),
            definition_hash=str(attributes.get(DEFINITION_HASH) or ""),
        )

    def run_start(
        self,
        parsed: Definition,
        digest: str,
        source: str,
        run_input: dict[str, Any],
        *,
        workflow_id: str | None = None,
        dry_run: bool = False,
        canned_outputs: dict[str, Any] | None = None,
        result_steps: ResultSteps | None = None,
    ) -> RunStart:
        """What a run of ``parsed`` is started with: its input (definition, data, options), search
        attributes, summary and memo. :meth:`start_run` and the schedules
        (:mod:`starter.schedules`) both start runs from it, so a scheduled run looks exactly like
        one started by hand."""
        attributes = start_attributes(
            parsed.name, parsed.version, digest, self.tenant, engine_level=self.engine_level
        )
        return RunStart(
            input=RunInput(
                definition=parsed,
                input=run_input,
                options=RunOptions(
                    tenant=self.tenant,
                    decision_proof=self.decision_proof,
                    publish_assignees=True,  # the inbox finds the run's pending people by it
                    dry_run=dry_run,
                    canned_outputs=canned_outputs or {},
                    state_budget=self._state_budget(),
                    engine_level=self.engine_level,
                    result_steps=self.result_steps if result_steps is None else result_steps,
                ),
            ),
            search_attributes=attributes,
            # The workflow type is the definition's name (the Web UI lists runs by it); the
            # worker's dynamic workflow serves it (workflows.generic.DefinitionNamedWorkflow).
            workflow_type=parsed.name,
            # The tenant is the fairness key: one tenant's flood does not delay another's steps.
            priority=run_priority(self.tenant, parsed.priority, grants=priority_grants(os.environ)),
            static_summary=_clip(
                f"{'DRY RUN: ' if dry_run else ''}{parsed.name} v{parsed.version} · tenant {self.tenant}"
                + (f" · {workflow_id}" if workflow_id else ""),
                200,
            ),
            static_details=(
                f"**Definition** {parsed.name} v{parsed.version} ({source})\n\n**Tenant** {self.tenant}"
                + (f"\n\n**Business key** {workflow_id}" if workflow_id else "")
                + f"\n\n**Hash** `{digest}`"
            ),
            # Only what the search attributes do not hold (the definition's name, version and
            # hash and the tenant are there): each memo field is a payload in every run's history.
            memo={"source": source, **({"dry_run": True} if dry_run else {})},
        )

    async def execute_run(
        self,
        definition: DefinitionSource,
        input: Mapping[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        timeout: float | None = None,
        dry_run: bool = False,
        canned_outputs: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Starts a run (see :meth:`start_run`) and waits for its result (see :meth:`result`)."""
        run = await self.start_run(
            definition,
            input,
            workflow_id=workflow_id,
            task_queue=task_queue,
            dry_run=dry_run,
            canned_outputs=canned_outputs,
        )
        return await run.result(timeout=timeout)

    async def publish_event(
        self,
        event_type: str,
        key: str,
        data: Mapping[str, Any] | None = None,
        *,
        event_id: str | None = None,
        source: str = "client",
        start_triggers: bool = True,
    ) -> EventPublication:
        """Publishes a business event of the client's tenant (see :mod:`starter.events`).

        Every run of the tenant waiting in a ``wait_for_event`` step on this type and key is
        resumed (each consumes an event id at most once), a run declaring a matching ``cancel_on``
        is cancelled, the event is kept for waits that start later within their ``lookback``,
        and each active definition with an ``event`` trigger of this type starts one run (the
        data as its input). Idempotent on ``event_id``: publish again with the same id after a
        failure or a doubt; nothing is delivered or started twice.

        Args:
            event_type: E.g. ``family.answered``.
            key: The correlation key (what a wait's ``key`` template renders to).
            data: A JSON object (at most 64 KiB); inert in every run that gets it.
            event_id: Unique per event; default a new UUID.
            source: Who publishes (recorded with the event).
            start_triggers: Also start the runs of event triggers (needs the registry).

        Raises:
            InvalidInputError: A malformed type, key, id or data (naming the problem).
            NoWorkerError: No worker ran the mailbox in time.
            ServerUnavailableError: The server cannot be reached.
            DatabaseUnavailableError: The registry (for triggers) cannot be reached; the event
                was delivered: publish it again with the same id to start the triggers' runs.
        """
        from starter.events import publish_event

        return await publish_event(
            self,
            event_type,
            key,
            data,
            event_id=event_id,
            source=source,
            start_triggers=start_triggers,
        )

    def get_run(self, workflow_id: str) -> RunHandle:
        """A handle on an existing run (not checked until used)."""
        return RunHandle(self, workflow_id, None, False, "", 0, "")

    # -------------------------------------------------------------------------------- decisions

    async def approve(
        self,
        workflow_id: str,
        actor: str,
        *,
        step_id: str | None = None,
        reason: str = "",
        data: Mapping[str, Any] | None = None,
        wait: bool = True,
        token: str | None = None,
        groups: Sequence[str] = (),
    ) -> DecisionRecord | None:
        """Approves the run's pending approval.

        Args:
            workflow_id: The run.
            actor: Who decides; must be one of the step's approvers.
            step_id: The approval step; may be omitted when exactly one approval is pending.
            reason: Free text, recorded.
            data: Form fields, merged into the run's ``vars``.
            wait: True: use the ``decide`` update, which the workflow validates and answers, so a
                refusal raises here. False: send the ``approve`` signal and return at once; a
                refusal is then only recorded in the run's status (``decisions``).
            token: The signed decision token (:meth:`mint_decision_token`, or an identity
                provider's), required when the run or the worker requires proof; only the
                update can carry it (``wait=False`` with a token is refused here).
            groups: Groups the actor decides as a member of (a step may name ``group:<name>``
                approvers); a token must prove them (its ``groups`` claim).

        Returns:
            The accepted decision's record with ``wait=True``; None with ``wait=False``.

        Raises:
            DecisionRefusedError: The workflow refused (actor not an approver, nothing pending,
                unknown form field, ...); the message is the workflow's.
            RunNotFoundError: No such run.
            RunClosedError: The run has already ended.
            NoWorkerError: No worker took the decision within 30 s.
        """
        return await self._decide(
            DecisionKind.APPROVE,
            workflow_id,
            actor,
            step_id=step_id,
            reason=reason,
            data=data,
            wait=wait,
            token=token,
            groups=groups,
        )

    async def reject(
        self,
        workflow_id: str,
        actor: str,
        *,
        step_id: str | None = None,
        reason: str = "",
        data: Mapping[str, Any] | None = None,
        wait: bool = True,
        token: str | None = None,
        groups: Sequence[str] = (),
    ) -> DecisionRecord | None:
        """Rejects the run's pending approval; the step's ``on_reject`` decides what follows.

        Arguments, result and errors as for :meth:`approve`.
        """
        return await self._decide(
            DecisionKind.REJECT,
            workflow_id,
            actor,
            step_id=step_id,
            reason=reason,
            data=data,
            wait=wait,
            token=token,
            groups=groups,
        )

    async def complete_task(
        self,
        workflow_id: str,
        actor: str,
        *,
        step_id: str | None = None,
        comment: str = "",
        data: Mapping[str, Any] | None = None,
        token: str | None = None,
        groups: Sequence[str] = (),
    ) -> DecisionRecord:
        """Completes the run's pending human task; ``data`` (the declared form) becomes the step's
        output (``steps.<id>.output.data``).

        Args:
            workflow_id: The run.
            actor: Who completes it: the assignee, or a member of a candidate group (``groups``).
            step_id: The task step; may be omitted when exactly one task is pending.
            comment: Free text, recorded (the output's ``comment``).
            data: The form fields; required ones must be present.
            token: A decision token allowing ``complete``, when the run or worker requires proof.
            groups: Groups the actor completes it as a member of (proven by the token).

        Returns:
            The accepted completion's record.

        Raises:
            DecisionRefusedError: The workflow refused (not the assignee, nothing pending, a form
                field missing or invalid, ...); the message is the workflow's.
            RunNotFoundError, RunClosedError, NoWorkerError: As for :meth:`approve`.
        """
        record = await self._decide(
            DecisionKind.COMPLETE,
            workflow_id,
            actor,
            step_id=step_id,
            reason=comment,
            data=data,
            wait=True,
            token=token,
            groups=groups,
        )
        assert record is not None  # the update answers
        return record

    async def _decide(
        self,
        kind: DecisionKind,
        workflow_id: str,
        actor: str,
        *,
        step_id: str | None,
        reason: str,
        data: Mapping[str, Any] | None,
        wait: bool,
        token: str | None = None,
        groups: Sequence[str] = (),
    ) -> DecisionRecord | None:
        _check_actor(actor, "actor")
        if token is not None and not wait:
            raise InvalidInputError("a decision token travels only in the decide update: use wait=True")
        check_text(reason, "reason")
        if step_id is not None:
            check_text(step_id, "step id")
        groups = _check_proof(token, groups)
        form = check_json_object(data, "the form data")
        # What the run would refuse for its size, refused before it is sent: between Temporal's
        # 2 MiB payload limit and its 4 MiB request limit, a decision failed the run's workflow
        # task instead (found by a probe: exit 1, "Workflow Task in failed state").
        problem = decision_size_problem(Decision(actor=actor, step_id=step_id, reason=reason, data=form))
        if problem is not None:
            raise InvalidInputError(f"the decision is too large: {problem}; nothing was sent")
        # In this client's tenant; the decision goes to this run, or to its chain's next run when
        # it continued as new meanwhile (never to another chain started under the id since).
        run_id = (await self.describe(workflow_id)).run_id
        attempt = 0
        if not wait:
            decision = Decision(actor=actor, step_id=step_id, reason=reason, data=form, groups=list(groups))
            signal = (
                RunDefinitionWorkflow.approve
                if kind == DecisionKind.APPROVE
                else RunDefinitionWorkflow.reject
            )
            while True:  # at most CHAIN_TRIES runs: _following_run answers None after that
                try:
                    await self.client.get_workflow_handle(workflow_id, run_id=run_id).signal(signal, decision)
                    return None
                except RPCError as err:
                    following = await self._following_run(err, workflow_id, run_id, attempt)
                    if following is None:
                        raise await self._closed_or_missing(err, workflow_id, f"{kind.value} it") from None
                    run_id, attempt = following, attempt + 1
        request = DecisionRequest(
            decision=kind,
            actor=actor,
            step_id=step_id,
            reason=reason,
            data=form,
            token=token,
            groups=list(groups),
        )
        while True:  # as above
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            try:
                async with asyncio.timeout(UPDATE_TIMEOUT_S):
                    return await handle.execute_update(RunDefinitionWorkflow.decide, request)
            except WorkflowUpdateFailedError as err:
                cause = err.cause
                message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
                raise DecisionRefusedError(workflow_id, message) from None
            except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
                raise NoWorkerError(
                    f"no worker took the decision for run {workflow_id!r} within {UPDATE_TIMEOUT_S:g}s;"
                    f" is a worker polling its task queue? {await self._task_queue_hint(workflow_id)}",
                    workflow_id,
                ) from None
            except RPCError as err:
                following = await self._following_run(err, workflow_id, run_id, attempt)
                if following is None:
                    raise await self._closed_or_missing(err, workflow_id, f"{kind.value} it") from None
                run_id, attempt = following, attempt + 1

    # ----------------------------------------------------------------------------- dead letters

    async def list_dead_letters(
        self,
        status: DeadLetterStatus | str | None = "open",
        *,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """The tenant's dead letters (parked steps), oldest first.

        Args:
            status: ``open`` (default), ``redriven``, ``skipped``, ``aborted``, ``timed_out``, ``cancelled``, or
                None / ``all``.
            workflow_id: Only this run's.
            limit: At most this many.
        """
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInputError(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {limit!r}")
        from activities.store.models import DeadLetterStatus

        names = [member.value for member in DeadLetterStatus]
        if status is not None and (not isinstance(status, str) or status not in [*names, "all"]):
            raise InvalidInputError(f"status must be one of {', '.join(names)} or all, not {_brief(status)}")
        if workflow_id is not None:
            check_text(workflow_id, "the workflow id")
        return await (await self.dead_letter_store()).list(status, workflow_id=workflow_id, limit=limit)

    async def show_dead_letter(self, dead_letter_id: int) -> DeadLetter:
        """One dead letter of the tenant.

        Raises:
            DeadLetterNotFoundError: No such id in the tenant.
        """
        return await (await self.dead_letter_store()).get(check_dead_letter_id(dead_letter_id))

    async def redrive(
        self,
        dead_letter_id: int,
        actor: str,
        input: Mapping[str, Any] | None = None,
        *,
        reason: str = "",
        replace_input: bool = False,
    ) -> ParkedStep:
        """Runs the parked step again in the same run, with its input corrected by ``input``.

        ``input`` is merged into the step's recorded input (the dead letter row's), top-level keys
        replacing those of the same name: ``{"url": ...}`` changes the URL and keeps the method,
        headers and body. With ``replace_input`` it replaces the whole input instead. Without
        ``input`` the step runs again with its recorded input.

        The run records the decision (actor, time, the input it runs with) in the dead letter row.

        Returns:
            The parked step the run resolved.

        Raises:
            DeadLetterNotFoundError: No such id in the tenant.
            DeadLetterResolvedError: It was already resolved.
            InvalidInputError: The decision is out of bounds (``dead_letter_size_problem``: an
                actor, reason, input or output too long or too deep), as the run would refuse it.
            DecisionRefusedError: The run refused (the step is no longer parked).
            RunClosedError: The run has ended.
            NoWorkerError: No worker took the decision within 30 s.
        """
        return await self._resolve_dead_letter(
            dead_letter_id,
            DeadLetterAction.REDRIVE,
            actor,
            reason=reason,
            input=check_json_object(input, "the step input") if input is not None else None,
            merge_input=not replace_input,
        )

    async def skip(self, dead_letter_id: int, actor: str, output: Any, *, reason: str = "") -> ParkedStep:
        """Goes on as if the parked step had succeeded with ``output``. Errors as for :meth:`redrive`."""
        return await self._resolve_dead_letter(
            dead_letter_id, DeadLetterAction.SKIP, actor, reason=reason, output=output
        )

    async def abort(self, dead_letter_id: int, actor: str, reason: str = "") -> ParkedStep:
        """Fails the run at the parked step (its compensations run). Errors as for :meth:`redrive`."""
        return await self._resolve_dead_letter(dead_letter_id, DeadLetterAction.ABORT, actor, reason=reason)

    async def _resolve_dead_letter(
        self,
        dead_letter_id: int,
        action: DeadLetterAction,
        actor: str,
        *,
        reason: str,
        input: dict[str, Any] | None = None,
        merge_input: bool = False,
        output: Any = None,
    ) -> ParkedStep:
        _check_actor(actor, "actor")
        check_text(reason, "reason")
        if action == DeadLetterAction.SKIP:
            check_json(output, "the step output")
        row = await self.show_dead_letter(dead_letter_id)
        if input is not None and merge_input:
            input = {**row.input, **input}
        from activities.store.errors import DeadLetterResolvedError
        from activities.store.models import DeadLetterStatus

        if row.status != DeadLetterStatus.OPEN:
            raise DeadLetterResolvedError(row.id, str(row.status), row.resolved_by, row.resolved_at)
        decision = DeadLetterDecision(
            action=action, actor=actor, park_id=row.park_id, reason=reason, input=input, output=output
        )
        problem = dead_letter_size_problem(decision)  # (the run's validator refuses the same)
        if problem is not None:
            raise InvalidInputError(f"the dead letter decision is refused: {problem}")
        run_id = await self._chain_run(row.workflow_id, row.run_id)
        try:
            async with asyncio.timeout(UPDATE_TIMEOUT_S):
                for _ in range(3):
                    handle = self.client.get_workflow_handle(row.workflow_id, run_id=run_id)
                    try:
                        result: ParkedStep = await handle.execute_update(
                            RESOLVE_DEAD_LETTER_UPDATE, decision, result_type=ParkedStep
                        )
                        return result
                    except RPCError:
                        # The run may have continued as new while the update was on its way: the
                        # parked step is now the next run's.
                        following = await self._chain_run(row.workflow_id, run_id)
                        if following == run_id:
                            raise
                        run_id = following
                raise NoWorkerError(
                    f"dead letter {row.id}: the run {row.workflow_id!r} kept continuing as new",
                    row.workflow_id,
                )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            raise DecisionRefusedError(row.workflow_id, message) from None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise NoWorkerError(
                f"no worker took the decision on dead letter {row.id} (run {row.workflow_id!r}) within"
                f" {UPDATE_TIMEOUT_S:g}s; is a worker polling its task queue?"
                f" {await self._task_queue_hint(row.workflow_id)}",
                row.workflow_id,
            ) from None
        except RPCError as err:
            error = await self._closed_or_missing(err, row.workflow_id, f"{action.value} it")
            if isinstance(error, RunClosedError):
                await self._close_orphaned(row.id, actor, error.status)
                error.args = (
                    f"{error}; dead letter {row.id} is closed as cancelled (nothing can decide it)",
                )
            raise error from None

    async def _close_orphaned(self, dead_letter_id: int, actor: str, ended: str) -> None:
        """Closes, as ``cancelled``, an open dead letter whose run has ended without deciding it
        (terminated, or timed out: a run that ends otherwise closes its parked steps itself). It
        stayed open for ever, in every listing and bulk selection, each decision refused (found by
        a probe)."""
        from activities.store.repository import resolve_dead_letter

        resolution = DeadLetterResolution(
            dead_letter_id=dead_letter_id,
            tenant=self.tenant,
            action=DeadLetterAction.CANCELLED,
            actor=actor,
            reason=f"the run had ended ({ended.lower()}) with the step parked",
            resolved_at=datetime.now(UTC),
        )
        await resolve_dead_letter((await self.database()).session_factory, resolution)

    async def _following_run(self, err: RPCError, workflow_id: str, run_id: str, attempt: int) -> str | None:
        """After ``run_id`` refused a request with ``err``: the run of its chain to send it to now,
        when ``run_id`` continued as new (or is closing to), or None (``err`` stands)."""
        closing = err.status == RPCStatusCode.RESOURCE_EXHAUSTED and "closing" in err.message.lower()
        if attempt + 1 >= CHAIN_TRIES or not (closing or err.status == RPCStatusCode.NOT_FOUND):
            return None
        if closing:
            await asyncio.sleep(CHAIN_CLOSING_WAIT_S * (attempt + 1))  # until its next run has started
        following = await self._chain_run(workflow_id, run_id)
        return following if following != run_id or closing else None

    async def _chain_run(self, workflow_id: str, run_id: str) -> str:
        """The run of ``run_id``'s continue-as-new chain that is open now: ``run_id`` itself unless
        it continued as new (a dead letter row names the run that parked; a parked step travels to
        the next run of the chain)."""
        try:
            pinned = await self.client.get_workflow_handle(workflow_id, run_id=run_id).describe()
            if pinned.status != WorkflowExecutionStatus.CONTINUED_AS_NEW:
                return run_id
            latest = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return run_id  # the update reports what is wrong
        first = pinned.raw_description.workflow_execution_info.first_run_id
        if first and latest.raw_description.workflow_execution_info.first_run_id == first:
            return latest.run_id
        return run_id  # another chain under the same id: the row's run has ended

    async def cancel(
        self, workflow_id: str, actor: str, reason: str = "", *, token: str | None = None
    ) -> None:
        """Asks the run to cancel: compensations run, then it ends as ``cancelled``.

        The ``cancel_run`` update checks and records who and why (a refusal raises here at once),
        then Temporal's cancellation is requested, so the run closes as Canceled in the Web UI.
        Returns once both are accepted; use :meth:`result` to wait for the end.

        Raises:
            RunNotFoundError: No such run (in this client's tenant).
            RunClosedError: The run has already ended.
            DecisionRefusedError: The run refused: it is already cancelling or ending, or the
                decision token (``token``, required when the run or worker requires proof) does
                not prove the cancel.
            NoWorkerError: No worker took the request within 30 s.
        """
        _check_actor(actor, "actor")
        check_text(reason, "reason")
        if len(reason) > MAX_DECISION_REASON_CHARS:  # the run keeps less; a huge one failed its task
            raise InvalidInputError(
                f"reason is {len(reason)} characters long (at most {MAX_DECISION_REASON_CHARS}); nothing was sent"
            )
        _check_proof(token, ())
        description = await self.describe(workflow_id)
        run_id = description.run_id
        accepted = False
        try:
            attempt = 0
            while True:  # at most CHAIN_TRIES runs: _following_run answers None after that
                handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
                try:
                    if not accepted:
                        async with asyncio.timeout(UPDATE_TIMEOUT_S):
                            await handle.execute_update(
                                RunDefinitionWorkflow.cancel_run,
                                CancelRunRequest(actor=actor, reason=reason, token=token),
                            )
                        accepted = True  # recorded: the next run of the chain carries it
                    await handle.cancel(
                        reason=f"cancel requested by {actor}" + (f": {reason}" if reason else "")
                    )
                    return
                except RPCError as err:
                    # The run may have continued as new since it was described (refused: not
                    # found, or closing): the cancel goes to the chain's next run.
                    following = await self._following_run(err, workflow_id, run_id, attempt)
                    if following is None:
                        raise
                    run_id, attempt = following, attempt + 1
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            if "'cancel_run' expected but not found" in message:
                # A worker older than the update (a rolling deploy): the signal still cancels.
                await self._cancel_by_signal(
                    self.client.get_workflow_handle(workflow_id, run_id=run_id), workflow_id, actor, reason
                )
                return
            raise DecisionRefusedError(workflow_id, message) from None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise NoWorkerError(
                f"no worker took the cancel request for run {workflow_id!r} within {UPDATE_TIMEOUT_S:g}s;"
                f" is a worker polling its task queue? {await self._task_queue_hint(workflow_id)}",
                workflow_id,
            ) from None
        except RPCError as err:
            raise await self._closed_or_missing(err, workflow_id, "cancel it") from None

    async def _cancel_by_signal(
        self, handle: WorkflowHandle[Any, Any], workflow_id: str, actor: str, reason: str
    ) -> None:
        try:
            await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor=actor, reason=reason))
        except RPCError as err:
            raise await self._closed_or_missing(err, workflow_id, "cancel it") from None

    async def mint_decision_token(
        self,
        workflow_id: str,
        actor: str,
        decisions: Sequence[str],
        *,
        step_id: str | None = None,
        ttl_s: float = tokens.DEFAULT_TTL_S,
        signing_key: str | None = None,
    ) -> str:
        """A signed token letting ``actor`` take ``decisions`` on this run (and step) for ``ttl_s``,
        in the run's current execution only (claim ``chain``: not in a run started later under the
        same id).

        For a holder of the signing key (``signing_key``: path of a private JWK; default
        ``$WFA_DECISION_SIGNING_KEY``). The token names this client's tenant; the run must be
        one of the tenant's.

        Raises:
            TokenError: No usable signing key, or a bad argument (named).
            RunNotFoundError: No such run in this client's tenant.
        """
        key = tokens.load_signing_key(signing_key)
        described = await self.describe(workflow_id)  # in this client's tenant
        return tokens.mint(
            key,
            tenant=self.tenant,
            run=workflow_id,
            actor=actor,
            decisions=decisions,
            step=step_id,
            ttl_s=ttl_s,
            # The run's execution: a run started later under the same id refuses the token.
            chain=described.raw_description.workflow_execution_info.first_run_id or None,
        )

    # ------------------------------------------------------------------------------- inspecting

    async def describe(self, workflow_id: str) -> WorkflowExecutionDescription:
        """Temporal's description of the run's latest execution.

        Raises:
            RunNotFoundError: No such run.
        """
        try:
            description = await self._handle(workflow_id).describe()
        except RPCError as err:
            raise self._rpc_error(err, workflow_id, "describe the run") from None
        if await _tenant_of(description) != self.tenant:
            # Another tenant's run does not exist for this client (like its definitions).
            raise RunNotFoundError(workflow_id, self.namespace)
        return description

    async def status(self, workflow_id: str) -> RunStatus:
        """The run's state, current steps, every step so far, pending approvals, decisions, vars.

        Asks the workflow (the ``status`` query, answered by a worker). For a run that has ended
        while no worker answers, or that a worker could not replay to answer (it failed reading an
        altered stored payload, or the store cannot be written when the replay stores its result
        again; logged), the status is rebuilt from its result instead (``vars`` and ``decisions``
        are then empty).

        Raises:
            RunNotFoundError: No such run.
            NoWorkerError: The run is still going and no worker answered within 10 s.
            PayloadUnreadableError: The answer or the result is stored by reference or encrypted,
                and this client has no store or no key.
        """
        with _readable(workflow_id):
            return await self._status(workflow_id)

    async def _status(self, workflow_id: str) -> RunStatus:
        description = await self.describe(workflow_id)
        running = description.status in (None, WorkflowExecutionStatus.RUNNING)
        try:
            status = await query_status(
                self._handle(workflow_id), QUERY_TIMEOUT if running else CLOSED_QUERY_TIMEOUT
            )
            if running:
                await _decode_pending_failures(self.client, description)
                return _with_pending_activities(status, description)
            if status.state in _OPEN_STATES:
                # Ended from outside while it waited (terminated, timed out): the replayed answer
                # still said it waited, and `wfa watch` waited for ever (found by a probe).
                return await self._closed_from_outside(workflow_id, status)
            return status
        except WorkflowQueryFailedError as err:
            failure = StarterError(f"run {workflow_id!r} could not answer the status query: {err}")
            if running:
                raise failure from None
            # An ended run a worker could not replay to answer still says how it ended in its
            # result: one that failed reading an altered stored payload (no worker can replay it),
            # or one whose result the replay stores again while the store cannot be written (an
            # attacker's probe: exit 1 where `wfa result` read it). Logged: the worker has a problem.
            status = await self._status_from_result(workflow_id, description)
            if status.error_type != ALTERED_PAYLOAD:
                log.warning("%s; the status is rebuilt from the run's result", failure)
            return status
        except RPCError as err:
            if _task_failing(err):
                raise NoWorkerError(
                    f"run {workflow_id!r} cannot answer its status query: its workflow task keeps failing"
                    f" on the worker (attempt {description.raw_description.pending_workflow_task.attempt or '?'});"
                    " the worker's log and the run's WorkflowTaskFailed events in the Web UI say why. The run"
                    " goes on from where it was once a worker can run it",
                    workflow_id,
                    description.task_queue,
                    task_failing=True,
                ) from None
            if not _no_worker_answered(err):
                raise self._rpc_error(err, workflow_id, "query the run") from None
        if running:
            raise NoWorkerError(
                f"no worker answered the status query of run {workflow_id!r}; is a worker polling"
                f" task queue {description.task_queue!r}?",
                workflow_id,
                description.task_queue,
            )
        return await self._status_from_result(workflow_id, description)

    async def pending_approvals(
        self, workflow_id: str, *, path: str | None = None, brief: bool = False
    ) -> list[PendingApproval]:
        """Every approval and human task the run waits on, in full (``brief``: texts cut to 500
        characters, no forms, as a list needs them), in the order they started waiting: the
        ``pending_approvals`` query, page by page, what a ``status`` answer had to cut
        (``RunStatus.left_out``) included. With ``path``, the one waiting there (none when nothing
        waits there). Pages follow a cursor, so a step decided between two pages moves none of the
        others; one decided meanwhile may still be listed, as in a ``status`` answer a moment old.

        Raises:
            RunNotFoundError: No such run.
            PendingApprovalsUnknownError: The run could not answer the query (its worker is of a
                build before it, or none answered within 10 s).
            PayloadUnreadableError: The answer is stored by reference or encrypted, and this
                client has no store or no key.
        """
        with _readable(workflow_id):
            return await self._pending_approvals(workflow_id, path, brief)

    async def _pending_approvals(
        self, workflow_id: str, path: str | None, brief: bool
    ) -> list[PendingApproval]:
        handle = self._handle(workflow_id)
        found: list[PendingApproval] = []
        ask = ApprovalsQuery(path=path, brief=brief)
        for _ in range(MAX_APPROVAL_PAGES):
            page = await self._approvals_page(handle, ask)
            found += page.approvals
            if path is not None or not page.approvals or not page.more:
                return found
            last = page.approvals[-1]
            ask = ApprovalsQuery(after_since=last.since, after_path=last.path, brief=brief)
        raise PendingApprovalsUnknownError(
            f"run {workflow_id!r} waits on more approvals than {MAX_APPROVAL_PAGES} pages hold"
        )

    async def _approvals_page(self, handle: WorkflowHandle[Any, Any], ask: ApprovalsQuery) -> ApprovalsPage:
        async def page() -> ApprovalsPage:
            return await handle.query(RunDefinitionWorkflow.pending_approvals, ask, rpc_timeout=QUERY_TIMEOUT)

        try:
            return await _query(page)
        except WorkflowQueryFailedError as err:
            raise PendingApprovalsUnknownError(
                f"run {handle.id!r} could not answer the pending_approvals query: {err}"
            ) from None
        except RPCError as err:
            if _no_worker_answered(err):
                raise PendingApprovalsUnknownError(
                    f"no worker answered the pending_approvals query of run {handle.id!r}"
                ) from None
            raise self._rpc_error(err, handle.id, "query the run") from None

    async def waiting_at(
        self, workflow_id: str, path: str | None
    ) -> tuple[RunStatus, PendingApproval | None]:
        """The run's status, and the approval or human task waiting at ``path`` in full (None when
        none waits there, or ``path`` is None): from the status, or, when the status answer had to
        cut the pending approvals or their texts and forms (``RunStatus.left_out``), from the
        ``pending_approvals`` query.

        Raises:
            RunNotFoundError: No such run.
            PendingApprovalsUnknownError: The status had to cut what is asked and the run could
                not answer the query (a worker of a build before it, or none within 10 s): whether
                the step waits cannot be told now (a review: taken as not waiting, such a step was
                shown as already decided).
            StarterError: The run could not answer (see :meth:`status`).
        """
        status = await self.status(workflow_id)
        if path is None:
            return status, None
        pending = next((p for p in status.pending_approvals if p.path == path), None)
        cut = (
            "pending_approvals" in status.left_out
            if pending is None
            else bool(_CUT_APPROVAL_PARTS & set(status.left_out))
        )
        if cut:
            found = await self.pending_approvals(workflow_id, path=path)
            pending = found[0] if found else None
        return status, pending

    async def every_pending_approval(self, workflow_id: str, status: RunStatus) -> list[PendingApproval]:
        """``status``'s pending approvals, or, when its answer had to cut their list, every one of
        them, brief (:meth:`pending_approvals`; when the run cannot answer that query, the ones
        ``status`` lists, with a log line).

        Raises:
            RunNotFoundError: No such run.
        """
        if "pending_approvals" not in status.left_out:
            return status.pending_approvals
        try:
            return await self.pending_approvals(workflow_id, brief=True)
        except PendingApprovalsUnknownError as err:
            log.warning("%s: listing the %d the status holds", err, len(status.pending_approvals))
            return status.pending_approvals

    async def pending_timers(self, workflow_id: str) -> list[PendingTimer]:
        """The run's durable timers that have not fired yet (delays, approval deadlines), from its
        history: what each waits for (its summary) and when it fires.

        Reads the run's whole history: meant for a run known to wait on a timer.

        Raises:
            RunNotFoundError: No such run.
        """
        timers: dict[str, PendingTimer] = {}
        try:
            async for event in self._handle(workflow_id).fetch_history_events():
                if event.HasField("timer_started_event_attributes"):
                    started = event.timer_started_event_attributes
                    fires_at = (
                        event.event_time.ToDatetime(tzinfo=UTC) + started.start_to_fire_timeout.ToTimedelta()
                    )
                    timers[started.timer_id] = PendingTimer(_summary_of(event), fires_at)
                elif event.HasField("timer_fired_event_attributes"):
                    timers.pop(event.timer_fired_event_attributes.timer_id, None)
                elif event.HasField("timer_canceled_event_attributes"):
                    timers.pop(event.timer_canceled_event_attributes.timer_id, None)
        except RPCError as err:
            raise self._rpc_error(err, workflow_id, "read the run's history") from None
        return list(timers.values())

    async def _closed_from_outside(self, workflow_id: str, status: RunStatus) -> RunStatus:
        """``status`` of a run Temporal ended while it was open: how it ended (its result) and
        nothing pending any more (its steps and decisions as they were)."""
        result = await self.result(workflow_id)
        return status.model_copy(
            update={
                "state": result.state,
                "error": result.error,
                "error_type": result.error_type,
                "current_steps": [],
                "pending_approvals": [],
                "pending_approvals_dropped": 0,
                "waiting_events": [],
                "parked": [],
            }
        )

    async def _status_from_result(
        self, workflow_id: str, description: WorkflowExecutionDescription
    ) -> RunStatus:
        result = await self.result(workflow_id)
        memo = await description.memo()
        name = description.typed_search_attributes.get(DEFINITION_NAME) or memo.get("definition") or ""
        version = description.typed_search_attributes.get(DEFINITION_VERSION) or memo.get("version") or 0
        return RunStatus(
            definition=str(name),
            version=int(version),
            state=result.state,
            current_steps=[],
            steps=result.steps,
            pending_approvals=[],
            decisions=[],
            vars={},
            output=result.output,
            error=result.error,
            error_type=result.error_type,
        )

    async def result(self, workflow_id: str, timeout: float | None = None) -> RunResult:
        """Waits for the run to end and returns how it ended; never raises for a failed run.

        * completed / compensated: the workflow's result.
        * failed, or cancelled by the ``cancel`` signal: the :class:`RunResult` the workflow put in
          its error's details (state ``failed`` / ``cancelled``, error, every step).
        * cancelled by :meth:`cancel` or through Temporal (Web UI, ``temporal workflow cancel``):
          the run's status as it closed (state ``cancelled``, error type ``RunCancelled``, every
          step); without a worker to answer, error type ``WorkflowCancelled`` and no steps.
        * terminated: state ``cancelled``, error type ``WorkflowTerminated`` (no compensation ran).
        * timed out (a workflow execution timeout): state ``failed``, error type ``WorkflowTimedOut``.

        Args:
            workflow_id: The run.
            timeout: Seconds to wait at most; None waits as long as it takes.

        Raises:
            RunNotFoundError: No such run.
            ResultTimeoutError: The run had not ended after ``timeout`` seconds.
            PayloadUnreadableError: The result is stored by reference or encrypted, and this
                client has no store or no key.
        """
        with _readable(workflow_id):
            return await self._result(workflow_id, timeout)

    async def _result(self, workflow_id: str, timeout: float | None) -> RunResult:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout < math.inf
        ):  # NaN and inf waited for ever, "5" raised a TypeError (a probe)
            raise InvalidInputError(
                f"timeout must be a number of seconds, 0 or more, or None; not {_brief(timeout)}"
            )
        description = await self.describe(workflow_id)  # in this client's tenant
        if description.status not in (None, WorkflowExecutionStatus.RUNNING):
            timeout = None  # ended: its result is there, however short the wait (0 said "still running")
        handle: WorkflowHandle[Any, RunResult] = self.client.get_workflow_handle_for(
            RunDefinitionWorkflow.run, workflow_id
        )
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        return await handle.result()
                    except RuntimeError as err:
                        # The time-skipping test server ends an empty long poll without a page
                        # token, which the SDK reports like this: the run simply has not ended yet.
                        if "No completion event found" not in str(err):
                            raise
        except TimeoutError:  # asyncio's, not Temporal's
            raise ResultTimeoutError(workflow_id, timeout or 0.0) from None
        except WorkflowFailureError as err:
            if isinstance(err.cause, CancelledError):
                return await self._cancelled_result(workflow_id, err)
            return _result_from_failure(err)
        except RPCError as err:
            raise self._rpc_error(err, workflow_id, "wait for the run") from None

    async def _cancelled_result(self, workflow_id: str, err: WorkflowFailureError) -> RunResult:
        """A run closed as Canceled carries no result: ask its status (who, why, every step)."""
        try:
            status = await query_status(self._handle(workflow_id), CLOSED_QUERY_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError):  # no worker to answer: what Temporal knows
            return _result_from_failure(err)
        return RunResult(
            state=status.state,
            output=status.output,
            error=status.error,
            error_type=status.error_type,
            steps=status.steps,
        )

    async def list_runs(
        self,
        *,
        definition: str | None = None,
        version: int | None = None,
        state: RunState | str | None = None,
        awaiting_approval: bool | None = None,
        limit: int = 100,
        dry_runs: bool = False,
    ) -> list[RunSummary]:
        """The client's tenant's runs, newest first, from Temporal's visibility store.

        Filters on the search attributes the workflow maintains (see
        :mod:`workflows.search_attributes`); each given filter must match. Visibility is
        eventually consistent: a run started or changed a moment ago may show its previous state.

        Args:
            definition: Only runs of this definition name.
            version: Only runs pinned to this version (with or without ``definition``).
            state: Only runs in this state (see :class:`RunState`). ``cancelled`` includes runs
                cancelled or terminated through Temporal, ``failed`` runs that timed out.
            awaiting_approval: Only runs waiting for a person (True) or not (False).
            limit: At most this many (1 to 10,000).
            dry_runs: List only dry runs (``start_run(..., dry_run=True)``) instead of the runs
                that are not: rehearsals are left out of the list unless asked for.

        Raises:
            InvalidInputError: A filter value is malformed.
            ServerUnavailableError: The server is unreachable, or the search attributes are not
                registered on the namespace.
        """
        query = runs_query(
            self.tenant,
            definition=definition,
            version=version,
            state=state,
            awaiting_approval=awaiting_approval,
            dry_runs=dry_runs,
        )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInputError(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {limit!r}")
        runs: list[RunSummary] = []
        try:
            async for execution in self.client.list_workflows(query, limit=limit, page_size=min(limit, 1000)):
                runs.append(_run_summary(execution, self.tenant))
        except RPCError as err:
            raise self._rpc_error(err, None, "list runs") from None
        return runs

    # -------------------------------------------------------------------------------- internals

    def _handle(self, workflow_id: str) -> WorkflowHandle[Any, Any]:
        # A lone surrogate failed in the SDK with a bare UnicodeEncodeError, an empty id with the
        # server's "WorkflowId is not set on request" (probes).
        if isinstance(workflow_id, str) and not workflow_id:
            raise InvalidInputError("the workflow id must not be empty")
        return self.client.get_workflow_handle(check_text(workflow_id, "the workflow id"))

    def _rpc_error(self, err: RPCError, workflow_id: str | None, doing: str) -> StarterError:
        """Turns an RPC error into the client's own error type."""
        message = err.message
        if err.status == RPCStatusCode.NOT_FOUND and "namespace" in message.lower():
            return ServerUnavailableError(
                f"namespace {self.namespace!r} does not exist on the Temporal server at {self.address}",
                self.address,
            )
        if err.status == RPCStatusCode.NOT_FOUND and workflow_id is not None:
            return RunNotFoundError(workflow_id, self.namespace)
        if err.status == RPCStatusCode.INVALID_ARGUMENT and "search attribute" not in message.lower():
            # An id, namespace or task queue the server refuses (too long, malformed, ...).
            return InvalidInputError(f"the Temporal server refused to {doing}: {message}")
        if err.status == RPCStatusCode.RESOURCE_EXHAUSTED and "larger than max" in message:
            # The request itself is over the server's gRPC limit (an input of several MiB): the
            # caller's input, not a failed run (found by a probe: it exited 1, "the run failed").
            return InvalidInputError(
                f"the Temporal server refused to {doing}: the request is larger than it takes"
                f" ({message}); send a smaller input, or configure WFA_PAYLOAD_STORE so large inputs"
                " go by reference"
            )
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return ServerUnavailableError(
                f"the Temporal server at {self.address} is unavailable ({message})", self.address
            )
        if "search attribute" in message.lower():
            return ServerUnavailableError(
                f"the Temporal server at {self.address} refused to {doing}: {message}. Register the"
                " search attributes on the namespace (`python -m starter.devserver` does it for a dev"
                " server; see workflows/search_attributes.py)",
                self.address,
            )
        return StarterError(f"could not {doing}: {err.status.name if err.status else 'error'}: {message}")

    async def _closed_or_missing(self, err: RPCError, workflow_id: str, doing: str) -> StarterError:
        """For a signal or update refused with NOT_FOUND: does the run not exist, or has it ended?"""
        if err.status != RPCStatusCode.NOT_FOUND or "namespace" in err.message.lower():
            return self._rpc_error(err, workflow_id, doing)
        try:
            description = await self._handle(workflow_id).describe()
        except RPCError:
            return RunNotFoundError(workflow_id, self.namespace)
        status = description.status
        if status is not None and status != WorkflowExecutionStatus.RUNNING:
            return RunClosedError(workflow_id, status.name)
        return self._rpc_error(err, workflow_id, doing)

    async def worker_polls(self, task_queue: str) -> bool:
        """Whether a worker polled ``task_queue`` for workflow tasks within the last
        :data:`LIVE_POLLER_S` seconds (a polling worker renews its poll at least every minute); True
        when the server cannot say (the caller then keeps asking its runs)."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        try:
            found = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                ),
                timeout=timedelta(seconds=5),
            )
        except RPCError:
            return True
        now = datetime.now(UTC)
        return any(
            (now - poller.last_access_time.ToDatetime(tzinfo=UTC)).total_seconds() < LIVE_POLLER_S
            for poller in found.pollers
        )

    async def _task_queue_hint(self, workflow_id: str) -> str:
        try:
            description = await self._handle(workflow_id).describe()
        except RPCError:
            return ""
        return f"(task queue {description.task_queue!r})"


MAX_VERSION = 2**31 - 1
"""Versions are PostgreSQL ``integer`` columns."""

MAX_DEAD_LETTER_ID = 2**63 - 1
"""Dead letter ids are PostgreSQL ``bigint`` identities."""

MAX_LIST_LIMIT = 10_000
"""The most rows or runs one list call returns."""

MAX_ACTOR_LENGTH = 200
"""Actors and authors recorded in the store (its column width)."""


def check_version(version: object) -> int:
    """``version`` if it is a version number the registry can hold (1 to 2**31-1).

    Raises:
        InvalidInputError: Not an int, or out of range.
    """
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidInputError(f"a version is a whole number from 1 to {MAX_VERSION}, not {_brief(version)}")
    return version


def check_dead_letter_id(dead_letter_id: object) -> int:
    """``dead_letter_id`` if it can be a dead letter id (1 to 2**63-1).

    Raises:
        InvalidInputError: Not an int, or out of range.
    """
    if (
        isinstance(dead_letter_id, bool)
        or not isinstance(dead_letter_id, int)
        or not 1 <= dead_letter_id <= MAX_DEAD_LETTER_ID
    ):
        raise InvalidInputError(
            f"a dead letter id is a whole number from 1 to {MAX_DEAD_LETTER_ID}, not {_brief(dead_letter_id)}"
        )
    return dead_letter_id


def _check_actor(actor: object, what: str) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInputError(f"{what} must be a non-empty name (it is recorded)")
    if len(actor) > MAX_ACTOR_LENGTH:
        raise InvalidInputError(f"{what} is longer than {MAX_ACTOR_LENGTH} characters")
    return check_text(actor, what)


def _check_proof(token: object, groups: object) -> list[str]:
    """``groups`` as a list, if ``token`` (None or a string) and every group are text a payload
    holds (a lone surrogate would fail in the data converter, with its words, not ours).

    Raises:
        InvalidInputError: A token or group that is not a string, or holds a NUL or a lone surrogate.
    """
    if token is not None:
        token = check_text(token, "the decision token")
        if len(token) > MAX_TOKEN_CHARS:  # the worker refuses it; a huge one failed the run's task
            raise InvalidInputError(
                f"the decision token is {len(token)} characters long (at most {MAX_TOKEN_CHARS})"
            )
    if isinstance(groups, str) or not isinstance(groups, Sequence):
        raise InvalidInputError(f"groups must be a list of group names, not {json_type(groups)}")
    if len(groups) > MAX_DECISION_GROUPS:
        raise InvalidInputError(f"a decision names at most {MAX_DECISION_GROUPS} groups, not {len(groups)}")
    for index, group in enumerate(groups):
        check_text(group, f"group {index + 1}")
        if not group or len(group) > MAX_ACTOR_CHARS:
            raise InvalidInputError(f"group {index + 1} must be a name of 1 to {MAX_ACTOR_CHARS} characters")
    return list(groups)


def _check_document(document: object) -> None:
    """A definition to register: no NUL anywhere (other problems are the validator's to name)."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except (ValueError, RecursionError):
            return  # not JSON: validation names the problem
    elif isinstance(document, Definition):
        document = document.model_dump(mode="json")
    check_json(document, "the definition", max_depth=DEFINITION_MAX_DEPTH)


ENGINE_LEVEL_ENV = "WFA_ENGINE_LEVEL"


RESULT_STEPS_ENV = "WFA_RESULT_STEPS"


def result_steps_from_env(engine_level: int = ENGINE_LEVEL) -> ResultSteps:
    """What the results of a client's runs carry of their step records: ``$WFA_RESULT_STEPS``
    (``full``, ``compact`` or ``none``), else :func:`default_result_steps` of ``engine_level``.

    Raises:
        InvalidInputError: Another value (the message names the variable and the values).
    """
    return result_steps_named_by_env() or default_result_steps(engine_level)


def default_result_steps(engine_level: int) -> ResultSteps:
    """``compact`` for runs started at generation :data:`interpreter.state.COMPACT_RUN_INPUT_LEVEL`
    or above (the same records without the fields that hold their default: read back, the same
    result, about 190 bytes fewer in the history of a 5-step run), ``full`` below (what a client
    of an earlier build asked for by default)."""
    return ResultSteps.COMPACT if engine_level >= COMPACT_RUN_INPUT_LEVEL else ResultSteps.FULL


def result_steps_named_by_env() -> ResultSteps | None:
    """``$WFA_RESULT_STEPS``, or None when it is unset or blank.

    Raises:
        InvalidInputError: Another value (the message names the variable and the values).
    """
    text = os.environ.get(RESULT_STEPS_ENV, "").strip()
    if not text:
        return None
    try:
        return ResultSteps(text)
    except ValueError:
        raise InvalidInputError(
            f"{RESULT_STEPS_ENV}: {text[:20]!r} is not one of {', '.join(s.value for s in ResultSteps)}"
        ) from None


def engine_level_from_env() -> int:
    """The generation runs are started at: ``$WFA_ENGINE_LEVEL`` (0 up to this build's
    :data:`~workflows.generic.ENGINE_LEVEL`), else this build's.

    Raises:
        InvalidInputError: Not a whole number in that range (the message names the variable).
    """
    text = os.environ.get(ENGINE_LEVEL_ENV, "").strip()
    if not text:
        return ENGINE_LEVEL
    if not (text.isascii() and text.isdigit()) or int(text) > ENGINE_LEVEL:
        raise InvalidInputError(
            f"{ENGINE_LEVEL_ENV}: {text[:20]!r} is not an interpreter generation this build knows"
            f" (0 to {ENGINE_LEVEL}; 0: runs every earlier build can take)"
        )
    return int(text)


def _check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name (the default is, without loading the store)."""
    if tenant == DEFAULT_TENANT:
        return tenant
    from activities.store.repository import check_tenant

    return check_tenant(tenant)


def _check_namespace(tenant: str, namespace: str) -> None:
    """Refuses a client of ``tenant`` on another namespace than the tenant's (when tenants have
    namespaces of their own): its runs would live where the tenant's credentials do not reach."""
    from starter.tenancy import Tenancy, TenancyConfigError

    try:
        tenancy = Tenancy.from_env()
    except TenancyConfigError as err:
        raise InvalidInputError(str(err)) from None
    if tenancy.isolated and not tenancy.belongs(tenant, namespace):
        raise InvalidInputError(
            f"tenant {tenant!r} lives in namespace {tenancy.namespace_of(tenant)!r}, not {namespace!r}"
            " (WFA_TENANT_NAMESPACES, WFA_NAMESPACE_PER_TENANT)"
        )


async def _tenant_of(description: WorkflowExecutionDescription) -> str:
    """The tenant a run belongs to: its ``Tenant`` search attribute, else its memo, else the default."""
    tenant = description.typed_search_attributes.get(TENANT)
    if tenant is None:
        tenant = (await description.memo()).get("tenant", DEFAULT_TENANT)
    return str(tenant)


def _short(err: BaseException) -> str:
    """The useful tail of a connection error from the Rust core."""
    text = str(err)
    for marker in ("ConnectionRefused", "Connection refused"):
        if marker in text:
            return "connection refused"
    if "dns error" in text.lower() or "failed to lookup" in text.lower():
        return "unknown host"
    return text.removeprefix("Failed client connect: ")


def _result_from_failure(err: WorkflowFailureError) -> RunResult:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        for detail in cause.details:
            if isinstance(detail, Mapping) and "state" in detail:
                try:
                    return RunResult.model_validate(detail)
                except ValueError:
                    break
        return RunResult(
            state=RunState.FAILED, error=cause.message, error_type=cause.type or "ApplicationError"
        )
    if isinstance(cause, CancelledError):
        return RunResult(
            state=RunState.CANCELLED,
            error=f"cancelled through Temporal{f': {cause.message}' if cause.message else ''}",
            error_type="WorkflowCancelled",
        )
    if isinstance(cause, TerminatedError):
        return RunResult(
            state=RunState.CANCELLED,
            error=f"terminated{f': {cause.message}' if cause.message else ''} (no compensation ran)",
            error_type="WorkflowTerminated",
        )
    if isinstance(cause, TemporalTimeoutError):
        return RunResult(state=RunState.FAILED, error="the run timed out", error_type="WorkflowTimedOut")
    return RunResult(state=RunState.FAILED, error=str(cause or err), error_type=type(cause or err).__name__)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
