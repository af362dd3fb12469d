"""The Python client API: validate definitions, start runs, decide approvals, cancel, inspect.

::

    flows = await FlowClient.connect()              # TEMPORAL_ADDRESS / _NAMESPACE / _TASK_QUEUE
    run = await flows.start_run("examples/expense-approval.json", {"amount": 250},
                                workflow_id="expense-4711")
    await flows.approve("expense-4711", "manager", reason="ok")
    result = await run.result()                     # RunResult, also for failed runs

Every call names the run by its workflow id, which is the business key when one was given. Errors
are :class:`~starter.errors.StarterError` subclasses (see :mod:`starter.errors`), except an invalid
definition, which raises :class:`~interpreter.validate.DefinitionError` listing JSON paths.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
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
from interpreter.state import (
    CancelRequest,
    Decision,
    DecisionKind,
    DecisionRecord,
    DecisionRequest,
    RunInput,
    RunResult,
    RunState,
    RunStatus,
)
from interpreter.validate import DefinitionError, Problem, check_definition, definition_hash, load_definition
from starter.errors import (
    DecisionRefusedError,
    DefinitionFileNotFoundError,
    NoWorkerError,
    ResultTimeoutError,
    RunAlreadyExistsError,
    RunClosedError,
    RunNotFoundError,
    ServerUnavailableError,
    StarterError,
)
from workflows.generic import RunDefinitionWorkflow
from workflows.search_attributes import (
    AWAITING_APPROVAL,
    CURRENT_STEP,
    DEFINITION_HASH,
    DEFINITION_NAME,
    DEFINITION_VERSION,
    RUN_STATE,
)

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_NAMESPACE", "DEFAULT_TASK_QUEUE", "FlowClient", "RunHandle", "load"]

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "workflow-automation"

QUERY_TIMEOUT = timedelta(seconds=10)
"""How long a status query of a running run may wait for a worker to answer."""

CLOSED_QUERY_TIMEOUT = timedelta(seconds=3)
"""The same for a run that has ended: its status can be rebuilt from history without a worker."""

UPDATE_TIMEOUT_S = 30.0
"""How long a validated decision (the ``decide`` update) may wait for a worker to accept it."""

DefinitionSource = Definition | Mapping[str, Any] | str | os.PathLike[str]
"""A definition: a parsed one, a dict, JSON text, or the path of a JSON file."""


def load(definition: DefinitionSource) -> Definition:
    """Loads and validates a definition from any :data:`DefinitionSource`.

    A ``str`` whose first non-blank character is ``{`` is JSON text; any other ``str`` is a path.

    Args:
        definition: A :class:`Definition` (returned as is), a mapping, JSON text or a file path.

    Returns:
        The validated definition.

    Raises:
        DefinitionError: Listing every problem with its JSON path.
        DefinitionFileNotFoundError: A path was given and there is no such file.
    """
    if isinstance(definition, Definition):
        # A model built in code has passed parsing but not the whole-tree rules.
        problems = check_definition(definition)
        if problems:
            raise DefinitionError(problems, definition.name)
        return definition
    if isinstance(definition, Mapping):
        return load_definition(definition)
    if isinstance(definition, str) and definition.lstrip().startswith("{"):
        return load_definition(definition)
    path = Path(definition)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionFileNotFoundError(str(definition)) from None
    except (OSError, UnicodeDecodeError) as err:
        detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DefinitionError([Problem("$", f"cannot read {path}: {detail}")]) from None
    return load_definition(text)


def _is_pydantic(client: Client) -> bool:
    return client.data_converter.payload_converter_class is PydanticPayloadConverter


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
    """

    def __init__(self, client: Client, *, task_queue: str = DEFAULT_TASK_QUEUE) -> None:
        if not _is_pydantic(client):
            config = client.config()
            config["data_converter"] = pydantic_data_converter
            client = Client(**config)
        self.client = client
        self.task_queue = task_queue

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        namespace: str | None = None,
        task_queue: str | None = None,
    ) -> FlowClient:
        """Connects to a Temporal server.

        Args:
            address: ``host:port``; default ``$TEMPORAL_ADDRESS`` or ``127.0.0.1:7233``.
            namespace: Default ``$TEMPORAL_NAMESPACE`` or ``default``.
            task_queue: Default ``$TEMPORAL_TASK_QUEUE`` or ``workflow-automation``.

        Returns:
            A client that always uses ``pydantic_data_converter``.

        Raises:
            ServerUnavailableError: The server cannot be reached; the message names the address.
        """
        address = address or os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS
        namespace = namespace or os.environ.get("TEMPORAL_NAMESPACE") or DEFAULT_NAMESPACE
        task_queue = task_queue or os.environ.get("TEMPORAL_TASK_QUEUE") or DEFAULT_TASK_QUEUE
        try:
            client = await Client.connect(
                address, namespace=namespace, data_converter=pydantic_data_converter
            )
        except RuntimeError as err:
            raise ServerUnavailableError(
                f"cannot reach the Temporal server at {address}: {_short(err)}", address
            ) from None
        return cls(client, task_queue=task_queue)

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

    # --------------------------------------------------------------------------------- starting

    async def start_run(
        self,
        definition: DefinitionSource,
        input: Mapping[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
        task_queue: str | None = None,
    ) -> RunHandle:
        """Validates a definition and starts a run of it.

        The definition is validated first: an invalid one is refused before anything starts.

        Idempotency by business key: pass ``workflow_id`` (e.g. ``intervention-family-123``).

        * While a run with that id is **running**, starting again does not start a duplicate: the
          existing run is returned (``RunHandle.started`` is False), even if it runs another
          definition or input.
        * When the earlier run **completed** (including ``compensated``), the key is spent and
          :class:`RunAlreadyExistsError` is raised, so a business key cannot be re-run by accident.
        * When the earlier run **failed, was cancelled, terminated or timed out**, a new run starts.

        Without ``workflow_id`` the id is ``"<definition name>-<uuid4>"``: always a new run.

        Args:
            definition: Path of a JSON file, JSON text, a dict, or a :class:`Definition`.
            input: The run's input data (``input.*`` in templates).
            workflow_id: The business key.
            task_queue: Overrides the client's task queue.

        Returns:
            A handle on the run.

        Raises:
            DefinitionError: The definition is invalid (nothing was started).
            DefinitionFileNotFoundError: The definition path does not exist.
            RunAlreadyExistsError: A run with this id already completed.
            ServerUnavailableError: The server cannot be reached or refused the namespace or the
                search attributes.
        """
        parsed = load(definition)
        if input is not None and not isinstance(input, Mapping):
            raise TypeError(f"run input must be a JSON object (a mapping), not {type(input).__name__}")
        digest = definition_hash(parsed)
        wf_id = workflow_id or f"{parsed.name}-{uuid4()}"
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(DEFINITION_NAME, parsed.name),
                SearchAttributePair(DEFINITION_VERSION, parsed.version),
                SearchAttributePair(DEFINITION_HASH, digest),
                SearchAttributePair(RUN_STATE, RunState.RUNNING.value),
                SearchAttributePair(AWAITING_APPROVAL, False),
                SearchAttributePair(CURRENT_STEP, ""),
            ]
        )
        try:
            handle = await self.client.start_workflow(
                RunDefinitionWorkflow.run,
                RunInput(definition=parsed, input=dict(input or {})),
                id=wf_id,
                task_queue=task_queue or self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                search_attributes=attributes,
                static_summary=f"{parsed.name} v{parsed.version}",
                memo={"definition": parsed.name, "version": parsed.version, "hash": digest},
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
            # report what it runs, from the memo it was started with.
            memo = await (await self.describe(wf_id)).memo()
            name = str(memo.get("definition", name))
            version = int(memo.get("version", version))
            digest = str(memo.get("hash", digest))
        return RunHandle(
            client=self,
            workflow_id=wf_id,
            run_id=handle.result_run_id,
            started=started,
            definition=name,
            version=version,
            definition_hash=digest,
        )

    async def execute_run(
        self,
        definition: DefinitionSource,
        input: Mapping[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Starts a run (see :meth:`start_run`) and waits for its result (see :meth:`result`)."""
        run = await self.start_run(definition, input, workflow_id=workflow_id, task_queue=task_queue)
        return await run.result(timeout=timeout)

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
            DecisionKind.APPROVE, workflow_id, actor, step_id=step_id, reason=reason, data=data, wait=wait
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
    ) -> DecisionRecord | None:
        """Rejects the run's pending approval; the step's ``on_reject`` decides what follows.

        Arguments, result and errors as for :meth:`approve`.
        """
        return await self._decide(
            DecisionKind.REJECT, workflow_id, actor, step_id=step_id, reason=reason, data=data, wait=wait
        )

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
    ) -> DecisionRecord | None:
        handle = self._handle(workflow_id)
        if not wait:
            decision = Decision(actor=actor, step_id=step_id, reason=reason, data=dict(data or {}))
            signal = (
                RunDefinitionWorkflow.approve
                if kind == DecisionKind.APPROVE
                else RunDefinitionWorkflow.reject
            )
            try:
                await handle.signal(signal, decision)
            except RPCError as err:
                raise await self._closed_or_missing(err, workflow_id, f"{kind.value} it") from None
            return None
        request = DecisionRequest(
            decision=kind, actor=actor, step_id=step_id, reason=reason, data=dict(data or {})
        )
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
            raise await self._closed_or_missing(err, workflow_id, f"{kind.value} it") from None

    async def cancel(self, workflow_id: str, actor: str, reason: str = "") -> None:
        """Asks the run to cancel: compensations run, then it ends as ``cancelled``.

        Sends the ``cancel`` signal (recorded in history with who and why); returns at once. Use
        :meth:`result` to wait for the end.

        Raises:
            RunNotFoundError: No such run.
            RunClosedError: The run has already ended.
        """
        try:
            await self._handle(workflow_id).signal(
                RunDefinitionWorkflow.cancel, CancelRequest(actor=actor, reason=reason)
            )
        except RPCError as err:
            raise await self._closed_or_missing(err, workflow_id, "cancel it") from None

    # ------------------------------------------------------------------------------- inspecting

    async def describe(self, workflow_id: str) -> WorkflowExecutionDescription:
        """Temporal's description of the run's latest execution.

        Raises:
            RunNotFoundError: No such run.
        """
        try:
            return await self._handle(workflow_id).describe()
        except RPCError as err:
            raise self._rpc_error(err, workflow_id, "describe the run") from None

    async def status(self, workflow_id: str) -> RunStatus:
        """The run's state, current steps, every step so far, pending approvals, decisions, vars.

        Asks the workflow (the ``status`` query, answered by a worker). For a run that has ended
        while no worker answers, the status is rebuilt from its result instead (``vars`` and
        ``decisions`` are then empty).

        Raises:
            RunNotFoundError: No such run.
            NoWorkerError: The run is still going and no worker answered within 10 s.
        """
        description = await self.describe(workflow_id)
        running = description.status in (None, WorkflowExecutionStatus.RUNNING)
        try:
            return await self._handle(workflow_id).query(
                RunDefinitionWorkflow.status, rpc_timeout=QUERY_TIMEOUT if running else CLOSED_QUERY_TIMEOUT
            )
        except WorkflowQueryFailedError as err:
            raise StarterError(f"run {workflow_id!r} could not answer the status query: {err}") from None
        except RPCError as err:
            # The query's own deadline surfaces as CANCELLED ("Timeout expired") or DEADLINE_EXCEEDED.
            no_worker = err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED) or (
                err.status == RPCStatusCode.FAILED_PRECONDITION and "poller" in err.message.lower()
            )
            if not no_worker:
                raise self._rpc_error(err, workflow_id, "query the run") from None
        if running:
            raise NoWorkerError(
                f"no worker answered the status query of run {workflow_id!r}; is a worker polling"
                f" task queue {description.task_queue!r}?",
                workflow_id,
                description.task_queue,
            )
        return await self._status_from_result(workflow_id, description)

    async def _status_from_result(
        self, workflow_id: str, description: WorkflowExecutionDescription
    ) -> RunStatus:
        result = await self.result(workflow_id)
        memo = await description.memo()
        name = memo.get("definition") or description.typed_search_attributes.get(DEFINITION_NAME) or ""
        version = memo.get("version") or description.typed_search_attributes.get(DEFINITION_VERSION) or 0
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
        * cancelled through Temporal (Web UI, ``temporal workflow cancel``): state ``cancelled``,
          error type ``WorkflowCancelled``.
        * terminated: state ``cancelled``, error type ``WorkflowTerminated`` (no compensation ran).
        * timed out (a workflow execution timeout): state ``failed``, error type ``WorkflowTimedOut``.

        Args:
            workflow_id: The run.
            timeout: Seconds to wait at most; None waits as long as it takes.

        Raises:
            RunNotFoundError: No such run.
            ResultTimeoutError: The run had not ended after ``timeout`` seconds.
        """
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
            return _result_from_failure(err)
        except RPCError as err:
            raise self._rpc_error(err, workflow_id, "wait for the run") from None

    # -------------------------------------------------------------------------------- internals

    def _handle(self, workflow_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id)

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

    async def _task_queue_hint(self, workflow_id: str) -> str:
        try:
            description = await self._handle(workflow_id).describe()
        except RPCError:
            return ""
        return f"(task queue {description.task_queue!r})"


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
