"""Errors of the client API (:mod:`starter.client`) and the CLI.

Every error the client raises on purpose subclasses :class:`StarterError`, so callers can catch one
type. A definition that fails validation raises :class:`interpreter.validate.DefinitionError`
instead (it is a ``ValueError`` listing every problem with its JSON path), and a definition file
that does not exist raises :class:`DefinitionFileNotFoundError`, which is both a
:class:`StarterError` and a :class:`FileNotFoundError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from interpreter.validate import Problem

__all__ = [
    "DecisionRefusedError",
    "DefinitionFileNotFoundError",
    "InputCheckUnavailableError",
    "InvalidInputError",
    "InvalidRunInputError",
    "NoWorkerError",
    "ResultTimeoutError",
    "RunAlreadyExistsError",
    "RunClosedError",
    "RunNotFoundError",
    "ScheduleNotFoundError",
    "ScheduleSyncError",
    "ServerUnavailableError",
    "StarterError",
]


class StarterError(Exception):
    """Base of every error the client API raises on purpose."""


class InvalidInputError(StarterError, ValueError):
    """An argument the service cannot take: wrong type, out of range, too long, a NUL character.

    Refused by the client before it reaches the server or the database (or refused by the server
    as an invalid argument), with a message naming the argument.
    """


class ServerUnavailableError(StarterError):
    """The Temporal server cannot be reached, or cannot serve this client (e.g. unknown namespace).

    Attributes:
        address: The ``host:port`` that was tried.
    """

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


class NoWorkerError(StarterError):
    """The server is up but no worker answered in time (a query or an update needs one).

    Attributes:
        workflow_id: The run that was asked.
        task_queue: The task queue the run's worker should poll, when known.
        task_failing: A worker polls, but this run's workflow task keeps failing on it (the run's
            own problem, not its task queue's).
    """

    def __init__(
        self, message: str, workflow_id: str, task_queue: str | None = None, *, task_failing: bool = False
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.task_queue = task_queue
        self.task_failing = task_failing


class RunNotFoundError(StarterError):
    """No run with this workflow id exists in the namespace.

    Attributes:
        workflow_id: The id that was asked for.
    """

    def __init__(self, workflow_id: str, namespace: str = "default") -> None:
        super().__init__(f"no run with id {workflow_id!r} in namespace {namespace!r}")
        self.workflow_id = workflow_id
        self.namespace = namespace


class RunClosedError(StarterError):
    """The run has already ended, so it cannot take a decision or a cancel request.

    Attributes:
        workflow_id: The run.
        status: How it ended, as Temporal reports it (``COMPLETED``, ``FAILED``, ...).
    """

    def __init__(self, workflow_id: str, status: str) -> None:
        super().__init__(f"run {workflow_id!r} has already ended ({status.lower()})")
        self.workflow_id = workflow_id
        self.status = status


class RunAlreadyExistsError(StarterError):
    """A run with this workflow id (business key) already completed, so it is not run again.

    Runs that failed, were cancelled or terminated may be started again under the same id; a
    running one is returned instead of being duplicated.

    Attributes:
        workflow_id: The business key.
        run_id: The existing run.
    """

    def __init__(self, workflow_id: str, run_id: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(
            reason
            or f"a run with id {workflow_id!r} already completed; its business key cannot be reused"
            " (runs that failed or were cancelled may be started again)"
        )
        self.workflow_id = workflow_id
        self.run_id = run_id


class PendingApprovalsUnknownError(StarterError):
    """A run's ``status`` answer had to cut its pending approvals (``RunStatus.left_out``), and
    the run could not answer the ``pending_approvals`` query that lists them in full (its worker
    is of a build before the query, or none answered): which steps wait cannot be told now."""


class DecisionRefusedError(StarterError):
    """The workflow refused an approve/reject decision (actor not listed, nothing pending, ...).

    Attributes:
        workflow_id: The run.
        reason: The workflow's own explanation.
    """

    def __init__(self, workflow_id: str, reason: str) -> None:
        super().__init__(f"decision refused by run {workflow_id!r}: {reason}")
        self.workflow_id = workflow_id
        self.reason = reason


class ResultTimeoutError(StarterError):
    """The run did not finish within the time the caller was willing to wait.

    Attributes:
        workflow_id: The run, still going.
        timeout: Seconds waited.
    """

    def __init__(self, workflow_id: str, timeout: float) -> None:
        super().__init__(f"run {workflow_id!r} did not finish within {timeout:g}s (it is still running)")
        self.workflow_id = workflow_id
        self.timeout = timeout


class PayloadUnreadableError(StarterError):
    """A run's payload this process cannot read: stored by reference while it has no payload store
    (``WFA_PAYLOAD_STORE``), or encrypted while it has no key (``WFA_PAYLOAD_KEYS``). Set them as
    the worker has them.

    Attributes:
        workflow_id: The run.
    """

    def __init__(self, workflow_id: str, problem: str) -> None:
        super().__init__(f"cannot read run {workflow_id!r}: {problem}")
        self.workflow_id = workflow_id


def unreadable_payload(err: BaseException) -> str | None:
    """Why a run's payload could not be read, when ``err`` is the SDK saying this process lacks the
    payload store or the keys; else None."""
    if isinstance(err, RuntimeError) and "[TMPRL1105]" in str(err):
        return "its payloads are in the payload store and this process has none: set WFA_PAYLOAD_STORE as the worker has it"
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
        message = err.args[0]
        if message.startswith("Unknown payload encoding"):
            encoding = message.removeprefix("Unknown payload encoding").strip()
            if encoding == "binary/encrypted":
                return (
                    "its payloads are encrypted and this process has no key for them: set WFA_PAYLOAD_KEYS"
                    " (or WFA_PAYLOAD_KEYS_FILE) as the worker has it"
                )
            return f"a payload has the encoding {encoding[:60]!r}, which this process cannot read"
    return None


class DefinitionFileNotFoundError(StarterError, FileNotFoundError):
    """A definition given as a path does not exist.

    Attributes:
        path: The path that was given.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"definition file not found: {path}")
        self.path = path
        self.filename = path

    def __str__(self) -> str:
        return f"definition file not found: {self.path}"


class InputCheckUnavailableError(StarterError):
    """The run's input could not be checked against its definition's ``input_schema`` now: every
    checking slot stayed busy for the whole deadline, or the checking process failed. Nothing was
    started; trying again later may work (:mod:`activities.input_check`)."""


class InvalidRunInputError(InvalidInputError):
    """A run's input does not match its definition's ``input_schema``; nothing was started.

    Attributes:
        problems: Each with the JSON path inside the input (``$.order.id``) and what is wrong.
    """

    def __init__(self, definition: str, version: int, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        self.definition = definition
        self.version = version
        lines = "; ".join(f"{p.path}: {p.message}" for p in self.problems)
        super().__init__(f"the input does not match the input_schema of {definition} v{version}: {lines}")


class ScheduleSyncError(StarterError):
    """The registry change was made, but the Temporal Schedules of the name could not be brought in
    line with it; ``wfa schedules sync NAME`` (or the same command again) repairs it.

    Attributes:
        name: The definition name.
        done: What the registry did (e.g. ``"v2 is active"``).
    """

    def __init__(self, name: str, done: str, cause: str) -> None:
        self.name = name
        self.done = done
        super().__init__(
            f"{done} in the registry, but its schedules could not be updated: {cause};"
            f" run `wfa schedules sync {name}` once Temporal is reachable (or repeat the command)"
        )


class ApiKeyNotFoundError(StarterError, LookupError):
    """No active gateway API key with that id in the tenant (never made, revoked, or another
    tenant's)."""

    def __init__(self, tenant: str, key_id: int) -> None:
        self.tenant = tenant
        self.key_id = key_id
        super().__init__(f"tenant {tenant} has no active API key {key_id} (wfa keys api list)")


class ScheduleNotFoundError(StarterError):
    """No live schedule with that id in the tenant (it may belong to another tenant)."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"no schedule {schedule_id!r} in this tenant (wfa schedules list)")
