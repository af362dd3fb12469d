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

from activities.store.database import DATABASE_URL_ENV, Database, open_database
from activities.store.errors import DeadLetterResolvedError
from activities.store.models import DeadLetterStatus
from activities.store.repository import (
    DEFAULT_TENANT,
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
    check_tenant,
    looks_like_ref,
)
from interpreter.model import Definition
from interpreter.state import (
    CancelRequest,
    DeadLetterAction,
    DeadLetterDecision,
    Decision,
    DecisionKind,
    DecisionRecord,
    DecisionRequest,
    ParkedStep,
    RunInput,
    RunOptions,
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
    TENANT,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TASK_QUEUE",
    "DEFAULT_TENANT",
    "TENANT_ENV",
    "FlowClient",
    "RunHandle",
    "is_registry_ref",
    "load",
]

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "workflow-automation"
TENANT_ENV = "WFA_TENANT"
RESOLVE_DEAD_LETTER_UPDATE = "resolve_dead_letter"

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
    if not looks_like_ref(text):
        return False
    return not Path(definition).is_file()


def _document(definition: DefinitionSource) -> Definition | Mapping[str, Any] | str:
    """The document to register: a Definition or mapping as is, JSON text as is, a file's text."""
    if isinstance(definition, Definition | Mapping):
        return definition
    if isinstance(definition, str) and definition.lstrip().startswith("{"):
        return definition
    path = Path(definition)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionFileNotFoundError(str(definition)) from None
    except (OSError, UnicodeDecodeError) as err:
        detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DefinitionError([Problem("$", f"cannot read {path}: {detail}")]) from None


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
        self.tenant = check_tenant(
            tenant if tenant is not None else os.environ.get(TENANT_ENV) or DEFAULT_TENANT
        )
        self._database: Database | None = database if isinstance(database, Database) else None
        self._database_url = database if isinstance(database, str) else None
        self._owns_database = not isinstance(database, Database)
        self._database_lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        namespace: str | None = None,
        task_queue: str | None = None,
        *,
        database_url: str | None = None,
        tenant: str | None = None,
    ) -> FlowClient:
        """Connects to a Temporal server (the store is opened on first use).

        Args:
            address: ``host:port``; default ``$TEMPORAL_ADDRESS`` or ``127.0.0.1:7233``.
            namespace: Default ``$TEMPORAL_NAMESPACE`` or ``default``.
            task_queue: Default ``$TEMPORAL_TASK_QUEUE`` or ``workflow-automation``.
            database_url: The store's PostgreSQL; default ``$DATABASE_URL``, else the embedded
                server under the local state folder.
            tenant: Default ``$WFA_TENANT`` or ``default``.

        Returns:
            A client that always uses ``pydantic_data_converter``.

        Raises:
            ServerUnavailableError: The server cannot be reached; the message names the address.
            InvalidTenantError: The tenant name is malformed.
        """
        address = address or os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS
        namespace = namespace or os.environ.get("TEMPORAL_NAMESPACE") or DEFAULT_NAMESPACE
        task_queue = task_queue or os.environ.get("TEMPORAL_TASK_QUEUE") or DEFAULT_TASK_QUEUE
        tenant = check_tenant(tenant if tenant is not None else os.environ.get(TENANT_ENV) or DEFAULT_TENANT)
        try:
            client = await Client.connect(
                address, namespace=namespace, data_converter=pydantic_data_converter
            )
        except RuntimeError as err:
            raise ServerUnavailableError(
                f"cannot reach the Temporal server at {address}: {_short(err)}", address
            ) from None
        return cls(client, task_queue=task_queue, database=database_url, tenant=tenant)

    # ------------------------------------------------------------------------------------ store

    async def database(self) -> Database:
        """The store's database, opened (and checked) on first use.

        Raises:
            DatabaseUnavailableError: The server cannot be reached or the database does not exist.
            MigrationsNotAppliedError: Its schema is not at this code's revision (``wfa db upgrade``).
        """
        async with self._database_lock:
            if self._database is None:
                url = self._database_url or os.environ.get(DATABASE_URL_ENV) or None
                self._database = await open_database(url)
            return self._database

    async def definitions(self) -> DefinitionStore:
        """The definition registry of the client's tenant."""
        return DefinitionStore((await self.database()).session_factory, self.tenant)

    async def dead_letter_store(self) -> DeadLetterStore:
        """The dead letters of the client's tenant."""
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
        """
        document = _document(definition)
        return await (await self.definitions()).register(document, author, activate=activate)

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
        return await (await self.definitions()).diff(name, v1, v2)

    async def activate(self, name: str, version: int, actor: str) -> Activation:
        """Makes ``version`` the active one: runs started by ``name`` from now on use it; runs
        already going keep the version they started with.

        Raises:
            DefinitionNotFoundError / VersionNotFoundError: Not in the tenant.
            VersionArchivedError: The version is archived.
        """
        return await (await self.definitions()).activate(name, version, actor)

    async def rollback(self, name: str, actor: str) -> Activation:
        """Activates the version that was active before the current one.

        Raises:
            NothingToRollBackError: There was none (or all earlier ones are archived).
        """
        return await (await self.definitions()).rollback(name, actor)

    async def archive(self, name: str, version: int, actor: str) -> DefinitionInfo:
        """Archives a version: it cannot be activated or started any more.

        Raises:
            ActiveVersionError: It is the active version.
        """
        return await (await self.definitions()).archive(name, version, actor)

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

        Returns:
            A handle on the run.

        Raises:
            DefinitionError: The definition is invalid (nothing was started).
            DefinitionFileNotFoundError: The definition path does not exist.
            DefinitionNotFoundError / VersionNotFoundError: No such name or version in the tenant.
            VersionArchivedError: A pinned version that is archived.
            RunAlreadyExistsError: A run with this id already completed.
            ServerUnavailableError: The server cannot be reached or refused the namespace or the
                search attributes.
        """
        if input is not None and not isinstance(input, Mapping):
            raise TypeError(f"run input must be a JSON object (a mapping), not {type(input).__name__}")
        source = "file"
        if is_registry_ref(definition):
            resolved = await self.resolve(str(definition))
            parsed, digest, source = resolved.definition, resolved.content_hash, "registry"
        else:
            parsed = load(definition)
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
                SearchAttributePair(TENANT, self.tenant),
            ]
        )
        try:
            handle = await self.client.start_workflow(
                RunDefinitionWorkflow.run,
                RunInput(definition=parsed, input=dict(input or {}), options=RunOptions(tenant=self.tenant)),
                id=wf_id,
                task_queue=task_queue or self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                search_attributes=attributes,
                static_summary=f"{parsed.name} v{parsed.version}",
                memo={
                    "definition": parsed.name,
                    "version": parsed.version,
                    "hash": digest,
                    "tenant": self.tenant,
                    "source": source,
                },
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
            # report what it runs, from the memo it was started with. Another tenant's run with
            # that id is refused without saying whose it is.
            try:
                existing = await self.describe(wf_id)
            except RunNotFoundError:
                raise RunAlreadyExistsError(
                    wf_id, None, reason=f"the workflow id {wf_id!r} is in use; choose another business key"
                ) from None
            memo = await existing.memo()
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
        await self.describe(workflow_id)  # in this client's tenant
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
        return await (await self.dead_letter_store()).list(status, workflow_id=workflow_id, limit=limit)

    async def show_dead_letter(self, dead_letter_id: int) -> DeadLetter:
        """One dead letter of the tenant.

        Raises:
            DeadLetterNotFoundError: No such id in the tenant.
        """
        return await (await self.dead_letter_store()).get(dead_letter_id)

    async def redrive(
        self,
        dead_letter_id: int,
        actor: str,
        input: Mapping[str, Any] | None = None,
        *,
        reason: str = "",
    ) -> ParkedStep:
        """Runs the parked step again in the same run, with ``input`` instead of its input if given.

        The run records the decision (actor, time, input) in the dead letter row.

        Returns:
            The parked step the run resolved.

        Raises:
            DeadLetterNotFoundError: No such id in the tenant.
            DeadLetterResolvedError: It was already resolved.
            DecisionRefusedError: The run refused (the step is no longer parked).
            RunClosedError: The run has ended.
            NoWorkerError: No worker took the decision within 30 s.
        """
        return await self._resolve_dead_letter(
            dead_letter_id,
            DeadLetterAction.REDRIVE,
            actor,
            reason=reason,
            input=dict(input) if input is not None else None,
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
        output: Any = None,
    ) -> ParkedStep:
        row = await self.show_dead_letter(dead_letter_id)
        if row.status != DeadLetterStatus.OPEN:
            raise DeadLetterResolvedError(row.id, str(row.status), row.resolved_by, row.resolved_at)
        decision = DeadLetterDecision(
            action=action, actor=actor, park_id=row.park_id, reason=reason, input=input, output=output
        )
        handle = self.client.get_workflow_handle(row.workflow_id, run_id=row.run_id)
        try:
            async with asyncio.timeout(UPDATE_TIMEOUT_S):
                result: ParkedStep = await handle.execute_update(
                    RESOLVE_DEAD_LETTER_UPDATE, decision, result_type=ParkedStep
                )
                return result
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
            raise await self._closed_or_missing(err, row.workflow_id, f"{action.value} it") from None

    async def cancel(self, workflow_id: str, actor: str, reason: str = "") -> None:
        """Asks the run to cancel: compensations run, then it ends as ``cancelled``.

        The ``cancel_run`` update checks and records who and why (a refusal raises here at once),
        then Temporal's cancellation is requested, so the run closes as Canceled in the Web UI.
        Returns once both are accepted; use :meth:`result` to wait for the end.

        Raises:
            RunNotFoundError: No such run (in this client's tenant).
            RunClosedError: The run has already ended.
            DecisionRefusedError: The run refused: it is already cancelling or ending.
            NoWorkerError: No worker took the request within 30 s.
        """
        description = await self.describe(workflow_id)
        handle = self.client.get_workflow_handle(workflow_id, run_id=description.run_id)
        try:
            async with asyncio.timeout(UPDATE_TIMEOUT_S):
                await handle.execute_update(
                    RunDefinitionWorkflow.cancel_run, CancelRequest(actor=actor, reason=reason)
                )
            await handle.cancel(reason=f"cancel requested by {actor}" + (f": {reason}" if reason else ""))
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            if "'cancel_run' expected but not found" in message:
                # A worker older than the update (a rolling deploy): the signal still cancels.
                await self._cancel_by_signal(handle, workflow_id, actor, reason)
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
        """
        await self.describe(workflow_id)  # in this client's tenant
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
            status: RunStatus = await self._handle(workflow_id).query(
                RunDefinitionWorkflow.status, rpc_timeout=CLOSED_QUERY_TIMEOUT
            )
        except (RPCError, WorkflowQueryFailedError):  # no worker to answer: what Temporal knows
            return _result_from_failure(err)
        return RunResult(
            state=status.state,
            output=status.output,
            error=status.error,
            error_type=status.error_type,
            steps=status.steps,
        )

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
