"""What a run carries into its next run when it continues as new (the snapshot).

A run's history is bounded (Temporal suggests continuing as new near 4,096 events and terminates a
run at 51,200), so a long loop or a run that waits for weeks continues as new: the engine stops at a
safe point, the host waits for every message handler to finish, and the next run of the same
workflow id starts from this snapshot. The definition never sees it: templates read the same
``vars`` and ``steps``, counters and visit counts go on, a pending approval stays pending with its
deadline and escalation count, and the status query shows the same run.

Safe points (see :meth:`interpreter.engine.Engine.run`): between two steps of the top-level
sequence (which is where a ``goto`` loop at the top level jumps), while a top-level approval
waits for its decision, while a top-level task is parked on a dead letter (:class:`CarriedPark`),
while a top-level ``delay`` waits (:class:`CarriedDelay`), while a top-level ``human_task`` waits
(:data:`HUMAN_TASK_KIND`) and while a top-level ``wait_for_event`` waits (:class:`CarriedEventWait`);
the branches of a top-level ``condition`` or ``switch`` count as top-level (at any depth): the
branches a run stopped in are carried under ``kinds["branches"]``, and a carried wait's
``position`` is its index in the innermost of them. Nothing concurrent is in flight at
any of them, so the snapshot is the whole state: no activity or branch has to be resumed half way,
and a timer is started again in the next run for the time that is left (the same absolute time).

The snapshot is a versioned pydantic model (:data:`SNAPSHOT_VERSION`). A new step kind that can be
waited on at the top level (``wait_for_event``, ``human_task``, ...) adds its carried state as an
entry of :attr:`Continuation.kinds` (keyed by the step kind, validated by the kind's own model)
rather than a new field here, and resumes from it in its evaluator, the way approvals resume from
:class:`CarriedApproval`. A change to a field's meaning bumps :data:`SNAPSHOT_VERSION`; a run that
receives a snapshot of a version it does not know fails with ``ContinuationVersionError`` instead
of guessing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from interpreter.actions import ActionRequest
from interpreter.events import Event
from interpreter.state import (
    CancelRequest,
    DeadLetterDecision,
    Decision,
    DecisionKind,
    DecisionRecord,
    ParkedStep,
    PendingApproval,
    PendingEvent,
    RefusedMessage,
    StepRecord,
)

SNAPSHOT_VERSION = 1
"""Version of :class:`Continuation`; bumped when a field changes meaning."""

MAX_CARRIED_RECORDS = 200
"""Step records (the status query's ``steps``) a continued run keeps: the most recent ones. The
others are counted in ``steps_dropped``; templates do not read records but ``steps``, which is
carried whole."""


class CarriedScope(BaseModel):
    """A template scope a carried compensation runs in (its results, locals and path prefix).

    ``root``: the scope is the run's top-level one (its results are the carried ``steps``).
    """

    model_config = ConfigDict(extra="forbid")

    root: bool = False
    prefix: str = ""
    steps: dict[str, Any] = Field(default_factory=dict)
    local: dict[str, Any] = Field(default_factory=dict)
    parent: CarriedScope | None = None


class CarriedCompensation(BaseModel):
    """One entry of the compensation stack: the step (task or approval) as JSON, and its scope."""

    model_config = ConfigDict(extra="forbid")

    step: dict[str, Any]
    path: str
    scope: CarriedScope


class CarriedApproval(BaseModel):
    """A top-level approval (or human task: :data:`HUMAN_TASK_KIND`) that was waiting: it resumes
    with the same view (approvers added by escalations, the escalation count, ``since`` and
    ``deadline``), and the decision (completion) taken while the run was switching, if any."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0)
    view: PendingApproval
    decided: DecisionKind | None = None
    decision: Decision | None = None


DELAY_KIND = "delay"
"""Key of a waiting top-level ``delay`` in :attr:`Continuation.kinds` (a :class:`CarriedDelay`)."""

HUMAN_TASK_KIND = "human_task"
"""Key of a waiting top-level ``human_task`` in :attr:`Continuation.kinds` (a
:class:`CarriedApproval` whose view is of kind ``task``)."""

EVENT_WAIT_KIND = "wait_for_event"
"""Key of a waiting top-level ``wait_for_event`` in :attr:`Continuation.kinds` (a
:class:`CarriedEventWait`)."""

DEAD_LETTER_KIND = "dead_letter"
"""Key of a top-level task parked on a dead letter in :attr:`Continuation.kinds` (a
:class:`CarriedPark`)."""


COMPENSATING_KIND = "compensating"
"""Key of a run that continued as new while it compensated (a :class:`CarriedEnding`): the next run
runs the compensations left (:attr:`Continuation.compensations`) and ends as this says."""


class CarriedEnding(BaseModel):
    """How a run that continued as new in the middle of its compensations ends once they are done:
    ``failed`` or ``compensated``, with the error (and output) the failure gave it. A cancelled run
    never continues while it compensates: only the run the cancellation reached can close as
    Canceled."""

    model_config = ConfigDict(extra="forbid")

    ending: Literal["failed", "compensated"]
    error: str | None = None
    error_type: str | None = None
    output: Any = None


class CarriedDelay(BaseModel):
    """A top-level ``delay`` that was waiting: the next run waits until the same ``until``.

    ``waited_s`` is the whole wait as the step computed it when it started (its output's
    ``waited_s``), so the step's output is the one it would have had without the switch.
    """

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0)
    path: str
    since: AwareDatetime
    until: AwareDatetime
    waited_s: float = Field(ge=0)


class CarriedEventWait(BaseModel):
    """A top-level ``wait_for_event`` that was waiting: the next run waits with the same view (key,
    ``since``, ``deadline``) and window start (``since``: the wait's start minus its lookback), and
    subscribes again under the same name. ``event``: the one it took while the run was switching,
    if any (its id is among the consumed ones carried too)."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0)
    view: PendingEvent
    since: datetime
    event: Event | None = None
    rank: int | None = Field(default=None, ge=0)
    """A wait carried in a branch (item): its place among the run's event waits in the order they
    began (the first matching wait takes an event), kept by the next run."""


class CarriedPark(BaseModel):
    """A top-level task parked on a dead letter: the next run waits on the same row (its id, park
    id and deadline in ``view``), with the decision taken while the run was switching, if any.

    ``request`` and ``activity_id`` are the failed call's (a redrive derives its idempotency key and
    activity id from them, as in the run that parked); ``redrives`` counts the redrives so far.
    """

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0)
    view: ParkedStep
    decision: DeadLetterDecision | None = None
    request: ActionRequest
    activity_id: str
    redrives: int = 0


class Continuation(BaseModel):
    """The interpreter state a run hands to its next run (see the module docstring).

    Attributes:
        version: :data:`SNAPSHOT_VERSION` of the run that wrote it.
        generation: How many times the run has continued as new (1 for the first continued run).
        position: Index in the top-level steps where the next run starts.
        approval: The top-level approval the next run resumes waiting at, if any.
        steps: Results visible to templates as ``steps`` (the top-level scope).
        last_output: The output of the last top-level step.
        visits: Visit counts per step path (``max_visits`` and ``#n`` activity ids go on).
        kinds: Carried state of step kinds added later, keyed by kind (see the module docstring).
    """

    model_config = ConfigDict(extra="forbid")

    version: int = SNAPSHOT_VERSION
    generation: int = 1
    started_at: datetime
    position: int = Field(ge=0)
    approval: CarriedApproval | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, Any] = Field(default_factory=dict)
    last_output: Any = None
    records: list[StepRecord] = Field(default_factory=list)
    steps_dropped: int = 0
    visits: dict[str, int] = Field(default_factory=dict)
    parks: dict[str, int] = Field(default_factory=dict)
    executions: int = 0
    state_size: int = 0
    compensations: list[CarriedCompensation] = Field(default_factory=list)
    decisions: list[DecisionRecord] = Field(default_factory=list)
    decisions_dropped: int = 0
    refused_messages: list[RefusedMessage] = Field(default_factory=list)
    refused_messages_dropped: int = 0
    cancel_request: CancelRequest | None = None
    kinds: dict[str, Any] = Field(default_factory=dict)


class ContinuationVersionError(ValueError):
    """A snapshot written by a newer interpreter than this one."""


def read_continuation(data: dict[str, Any]) -> Continuation:
    """Validates a carried snapshot.

    Raises:
        ContinuationVersionError: When its version is not one this interpreter knows.
        pydantic.ValidationError: When it is malformed.
    """
    version = data.get("version")
    if version != SNAPSHOT_VERSION:
        raise ContinuationVersionError(
            f"the run was continued with a snapshot of version {version!r}; this interpreter reads"
            f" version {SNAPSHOT_VERSION} (deploy the newer worker)"
        )
    # Validated as the JSON it came as: the definition models are strict, so an enum (a form
    # field's type) is accepted from its JSON string only this way.
    return aware(Continuation.model_validate_json(json.dumps(data)))


_Model = TypeVar("_Model", bound=BaseModel)

_ENDS = frozenset({"since", "parked_at", "deadline", "started_at"})
"""The carried times a deadline, an escalation or a lookback is computed from (or compared with),
held to :data:`CARRIED_YEARS`. Not a delay's ``until`` (an author may write year 9999 for "never")
nor an event's ``published_at`` (the mailbox's own check)."""
CARRIED_YEARS = (1900, 7000)
"""The years a carried time may be in: a run's times come from its clock (or a delay's ``until``);
from there, the longest duration a definition may name (100 years,
``interpreter.durations.MAX_DURATION``) times the most escalations (20, plus one) keeps the
arithmetic on them inside the calendar (year 9999)."""


def aware(model: _Model) -> _Model:
    """``model`` (a snapshot, or an entry of it read later), when every time in it has a UTC offset.

    Raises:
        ValueError: Naming the first that has none, or that is outside the years
            :data:`CARRIED_YEARS`: every time a run writes is UTC and comes from a clock, and a
            forged naive one would fail a comparison with the clock later, one at an end of the
            calendar the arithmetic on it (a deadline, an escalation, a lookback: ``OverflowError``),
            a workflow task failing for ever instead of the run failing in words.
    """
    naive = _naive_time(model, type(model).__name__)
    if naive is not None:
        raise ValueError(f"the carried time {naive}")
    return model


def _naive_time(value: Any, where: str) -> str | None:
    """Where in ``value`` (a model, or a list or dict of models) a time without a UTC offset is,
    if anywhere. Data a model holds as ``Any`` is JSON, never a time: it is not walked."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return f"{where} ({value.isoformat()}) has no UTC offset"
        if where.rsplit(".", 1)[-1] in _ENDS and not CARRIED_YEARS[0] <= value.year <= CARRIED_YEARS[1]:
            return f"{where} ({value.isoformat()}) is outside the years {CARRIED_YEARS[0]}-{CARRIED_YEARS[1]}"
        return None
    if isinstance(value, BaseModel):
        items: Any = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(item, datetime | BaseModel) or (
            isinstance(value, BaseModel) and isinstance(item, list | tuple | dict)
        ):
            found = _naive_time(item, f"{where}.{key}")
            if found is not None:
                return found
    return None


def carried_ids(snapshot: Continuation, kind: str) -> list[str]:
    """The ids a snapshot carries under ``kind`` in :attr:`Continuation.kinds` (the event ids the
    chain consumed, the decision tokens it spent), none when it carries none.

    Raises:
        ValueError: When they are not a list of strings (a forged snapshot: the run fails in
            words, rather than its workflow task failing for ever).
    """
    ids = snapshot.kinds.get(kind, [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"the carried {kind!r} are not a list of ids")
    return ids
