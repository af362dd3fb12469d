"""What a run exposes and accepts: its status (for the ``status`` query), decisions and cancel requests
(for signals and updates), and its final result. All are pydantic models that cross the wire.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from interpreter.model import Definition


class RunState(StrEnum):
    """Where a run is."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({RunState.COMPLETED, RunState.COMPENSATED, RunState.FAILED, RunState.CANCELLED})


class StepStatus(StrEnum):
    """Where one step execution is."""

    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class StepRecord(BaseModel):
    """One execution of one step.

    Attributes:
        path: Where in the run: ``notify``, ``reviews[2].score`` or ``compensate/charge/refund``.
        attempts: Activity attempts for task steps (0 for other kinds).
    """

    id: str
    path: str
    type: str
    name: str
    status: StepStatus
    attempts: int = 0
    started_at: datetime
    finished_at: datetime | None = None
    duration_s: float | None = None
    output: Any = None
    error: str | None = None
    error_type: str | None = None


class PendingApproval(BaseModel):
    """An approval step waiting for a decision."""

    step_id: str
    path: str
    approvers: list[str]
    message: str = ""
    fields: list[str] | None = None
    since: datetime
    deadline: datetime | None = None
    escalations: int = 0


class DecisionKind(StrEnum):
    """What an approver decides."""

    APPROVE = "approve"
    REJECT = "reject"


class Decision(BaseModel):
    """Argument of the ``approve`` and ``reject`` signals.

    Attributes:
        step_id: The approval step; may be omitted when exactly one approval is pending.
        actor: Who decides; must be one of the step's approvers.
        reason: Free text, recorded.
        data: Form fields merged into the run's ``vars``.
    """

    model_config = ConfigDict(extra="forbid")

    actor: str = Field(min_length=1)
    step_id: str | None = None
    reason: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class DecisionRequest(Decision):
    """Argument of the ``decide`` update: a decision plus which one."""

    decision: DecisionKind


class DecisionRecord(BaseModel):
    """A decision that arrived, accepted or refused (and why)."""

    decision: DecisionKind
    actor: str
    step_id: str | None
    reason: str = ""
    at: datetime
    accepted: bool
    refusal: str | None = None


class CancelRequest(BaseModel):
    """Argument of the ``cancel`` signal."""

    model_config = ConfigDict(extra="forbid")

    actor: str = Field(min_length=1)
    reason: str = ""


class RunStatus(BaseModel):
    """Answer of the ``status`` query."""

    definition: str
    version: int
    state: RunState
    current_steps: list[str]
    steps: list[StepRecord]
    pending_approvals: list[PendingApproval]
    decisions: list[DecisionRecord]
    vars: dict[str, Any]
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    cancelled_by: CancelRequest | None = None


class RunOptions(BaseModel):
    """Options of one run.

    Attributes:
        track_current_step: Upsert the ``CurrentStep`` search attribute on every step change (one
            history event each); state and approval attributes are always kept.
    """

    model_config = ConfigDict(extra="forbid")

    track_current_step: bool = True


class RunInput(BaseModel):
    """Input of the generic workflow: the definition to run (recorded in history, so a run is pinned
    to it), the run's input data and options."""

    model_config = ConfigDict(extra="forbid")

    definition: Definition
    input: dict[str, Any] = Field(default_factory=dict)
    options: RunOptions = Field(default_factory=RunOptions)


class RunResult(BaseModel):
    """What a finished run returns (also carried in the details of a failed run's error)."""

    state: RunState
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
