"""What a run exposes and accepts: its status (for the ``status`` query), decisions and cancel requests
(for signals and updates), and its final result. All are pydantic models that cross the wire.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    model_serializer,
)

from interpreter.model import Definition, FormField
from interpreter.sizes import ACTION_OUTPUT_BUDGET, VALUE_MAX_DEPTH, json_depth, json_written_size

MAX_ACTOR_CHARS = 200
"""Longest actor (or step id) a message record keeps; longer ones are cut (see :func:`clip`)."""
MAX_TEXT_CHARS = 500
"""Longest reason or refusal text a message record keeps."""
MAX_REFUSALS = 50
"""Refused messages (and refused decisions) a run keeps; older ones are dropped and counted."""
MAX_DECISIONS = 100
"""Decisions, accepted or refused, a run keeps (at most :data:`MAX_REFUSALS` refused among them);
older ones are dropped and counted (patch ``decisions-kept``)."""
MAX_PARK_ID_CHARS = 10_000
"""Longest park id a dead letter decision may name (a step's path, nested steps and all, and ``~n``)."""
MAX_DECISION_REASON_CHARS = 1000
"""Longest ``reason`` an accepted decision may carry (it goes into the approval step's output)."""
MAX_DECISION_DATA_BYTES = 16 * 1024
"""Largest form ``data`` (as JSON) an accepted decision may carry (it goes into ``vars``)."""
MAX_DECISION_GROUPS = 50
"""As many groups as a decision may name (the groups it decides as a member of)."""


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to at most about ``limit`` characters, saying how long it was.

    Whatever a message brings is clipped before the run keeps it, so no message can make the
    ``status`` query exceed the payload size limit.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def validation_problems(err: ValidationError) -> str:
    """A validation error in one line: ``field: problem; ...`` (without the input values)."""
    errors = err.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'argument'}: {e['msg']}" for e in errors[:5]]
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def decoding_problem(err: Exception) -> str:
    """Why a payload could not be read: a validation error in one line
    (:func:`validation_problems`), else the error's text."""
    return validation_problems(err) if isinstance(err, ValidationError) else str(err)


class RunState(StrEnum):
    """Where a run is."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    PARKED = "parked"
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
    """The names of the declared form fields (None when the step declares none)."""
    form: list[FormField] = Field(default_factory=list)
    """The declared form fields in full: type, required, max_length, enum values."""
    since: datetime
    deadline: datetime | None = None
    escalations: int = Field(default=0, ge=0)
    kind: str = "approval"
    """``approval`` (approve or reject) or ``task`` (a human task: complete it)."""
    description: str = ""
    """A task's rendered description (its title is ``message``)."""
    notified: list[str] = Field(default_factory=list)
    """Who was sent decision links (``notify``)."""
    notify_error: str | None = None
    """Why links could not be sent (the step waits all the same: the inbox still serves)."""


class ApprovalsQuery(BaseModel):
    """Argument of the ``pending_approvals`` query: the pending approvals after a cursor (in the
    order of ``(since, path)``: one decided between two pages moves none of the others, as
    positions did: a review), or the one waiting at ``path``.

    Attributes:
        after_since: With ``after_path``, the cursor: the last approval of the previous page.
        brief: Texts cut to :data:`MAX_TEXT_CHARS` and forms left out (a list needs neither).
    """

    model_config = ConfigDict(extra="forbid")

    after_since: datetime | None = None
    after_path: str | None = Field(default=None, max_length=10_000)
    path: str | None = Field(default=None, max_length=10_000)
    brief: bool = False


class ApprovalsPage(BaseModel):
    """Answer of the ``pending_approvals`` query: the pending approvals after the query's cursor,
    in full (the ``status`` answer may have had to cut them: ``left_out``), as many as fit in one
    answer, in the order of ``(since, path)``.

    Attributes:
        approvals: At least one when there is one after the cursor.
        total: How many approvals are pending in all.
        more: Whether others follow the last of ``approvals`` (the next page's cursor).
        left_out: What even a page of one approval had to leave out of it: ``message`` and
            ``description`` (cut to :data:`MAX_TEXT_CHARS`), then ``form`` (``fields`` keeps the
            names), then ``approvers`` (the first 50 kept).
    """

    approvals: list[PendingApproval]
    total: int = 0
    more: bool = False
    left_out: list[str] = Field(default_factory=list)


class PendingEvent(BaseModel):
    """A ``wait_for_event`` step that waits now (shown in the status).

    Attributes:
        event: The event type it waits for.
        key: Its rendered correlation key.
        since: When the wait started; events published from ``since - lookback`` on are taken.
        deadline: When ``on_timeout`` applies (None: no timeout).
        subscribed: The mailbox knows of the wait (from then on every new event is signalled;
            before, it is in the buffered events the subscription returns).
    """

    step_id: str
    path: str
    event: str
    key: str
    since: datetime
    lookback_s: float = 0.0
    deadline: datetime | None = None
    subscribed: bool = False
    mailbox: str | None = Field(default=None, exclude_if=lambda mailbox: mailbox is None)
    """The workflow id of the mailbox it subscribed at (None, not written: the legacy id, as runs
    before generation 23 subscribe: ``interpreter.events.legacy_mailbox_id``; a carried wait's
    size, measured against the carry budgets, is as before)."""


class DecisionKind(StrEnum):
    """What an approver decides."""

    APPROVE = "approve"
    REJECT = "reject"
    COMPLETE = "complete"
    """Completes a human task (its form data becomes the step's output)."""


class Decision(BaseModel):
    """Argument of the ``approve`` and ``reject`` signals.

    Attributes:
        step_id: The approval step; may be omitted when exactly one approval is pending.
        actor: Who decides; must be one of the step's approvers.
        reason: Free text, recorded.
        data: Form fields merged into the run's ``vars``.
        groups: Groups the actor decides as a member of: a step listing ``group:<name>`` among its
            approvers (or candidate groups) accepts a member. Proven by the token's ``groups`` claim
            when proof is required; otherwise as trusted as the actor itself.
    """

    model_config = ConfigDict(extra="forbid")

    actor: str = Field(min_length=1)
    step_id: str | None = None
    reason: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    groups: list[str] = Field(default_factory=list, max_length=MAX_DECISION_GROUPS)


class DecisionRequest(Decision):
    """Argument of the ``decide`` update: a decision plus which one.

    Attributes:
        token: The signed decision token proving who decides (see ``workflows/decision_tokens``);
            required when the run or the worker requires proof. Signals cannot carry one.
    """

    decision: DecisionKind
    token: str | None = None


def _too_long(name: str, text: str | None, limit: int) -> str | None:
    """Why ``text`` (the field ``name``) is refused for its length, or None."""
    if text is None or len(text) <= limit:
        return None
    return f"{name} is {len(text)} characters long (at most {limit})"


def decision_size_problem(decision: Decision) -> str | None:
    """Why an otherwise valid decision is too large to accept, or None.

    An accepted decision's reason and data become run data (the approval step's output, ``vars``)
    that every ``status`` answer carries, so they are bounded; the refusal is recorded instead.
    """
    problem = (
        _too_long("actor", decision.actor, MAX_ACTOR_CHARS)
        or _too_long("step_id", decision.step_id, MAX_ACTOR_CHARS)
        or _too_long("reason", decision.reason, MAX_DECISION_REASON_CHARS)
    )
    if problem is not None:
        return problem
    size = len(json.dumps(decision.data, separators=(",", ":"), default=str).encode())
    if size > MAX_DECISION_DATA_BYTES:
        return f"data is {size} bytes as JSON (at most {MAX_DECISION_DATA_BYTES})"
    return None


class DecisionRecord(BaseModel):
    """A decision that arrived, accepted or refused (and why); its texts are clipped."""

    decision: DecisionKind
    actor: str
    step_id: str | None
    reason: str = ""
    at: datetime
    accepted: bool
    refusal: str | None = None


class CancelRequest(BaseModel):
    """Argument of the ``cancel`` signal and the ``cancel_run`` update."""

    model_config = ConfigDict(extra="forbid")

    actor: str = Field(min_length=1)
    reason: str = ""

    def clipped(self) -> CancelRequest:
        """The request as the run keeps it (actor and reason clipped)."""
        return CancelRequest(actor=clip(self.actor, MAX_ACTOR_CHARS), reason=clip(self.reason))


class CancelRunRequest(CancelRequest):
    """Argument of the ``cancel_run`` update: a cancel request plus, when proof is required, its
    signed token (kept out of the status: :meth:`clipped` drops it)."""

    token: str | None = None


class RefusedMessage(BaseModel):
    """A signal the run could not read or refused (a decision refused on its merits is in
    ``decisions`` instead). Texts are clipped.

    Attributes:
        name: The signal's name (``approve``, ``reject``, ``cancel``, or an unknown one).
        actor: The actor the message named, when it named one.
        reason: Why it was refused.
    """

    name: str
    actor: str | None = None
    at: datetime
    reason: str


class RunStatus(BaseModel):
    """Answer of the ``status`` query.

    Everything in it that a message brought is bounded (clipped texts, the last
    :data:`MAX_REFUSALS` refusals, the last :data:`MAX_DECISIONS` decisions); what it would still
    hold past the payload size limit (a run's values, hundreds of tasks waiting at once) the
    workflow leaves out of its answer, naming it in ``left_out``.

    Attributes:
        decisions: The last :data:`MAX_DECISIONS` decisions, accepted or refused, at most the
            last :data:`MAX_REFUSALS` refused ones among them (older ones are counted in
            ``decisions_dropped``).
        refused_messages: The last signals that could not be read or were refused (malformed,
            unknown, a cancel too late); older ones are counted in ``refused_messages_dropped``.
        cancelled_by: Who asked the run to cancel, and why.
    """

    definition: str
    version: int
    state: RunState
    current_steps: list[str]
    steps: list[StepRecord]
    pending_approvals: list[PendingApproval]
    parked: list[ParkedStep] = Field(default_factory=list)
    pending_approvals_dropped: int = 0
    """Pending approvals not listed because the answer had to cut them (``left_out``); the
    ``pending_approvals`` query lists them all, page by page (:class:`ApprovalsPage`)."""
    decisions: list[DecisionRecord]
    decisions_dropped: int = 0
    refused_messages: list[RefusedMessage] = Field(default_factory=list)
    refused_messages_dropped: int = 0
    vars: dict[str, Any]
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    cancelled_by: CancelRequest | None = None
    waiting_events: list[PendingEvent] = Field(default_factory=list)
    continued: int = 0
    """How many times the run has continued as new (the same workflow id, a chain of runs)."""
    steps_dropped: int = 0
    """Step records no longer listed in ``steps``: of earlier runs of the chain (the most recent
    ones are carried), and the oldest when all of them would take the status past Temporal's
    payload limit (the most recent that fit are listed)."""
    left_out: list[str] = Field(default_factory=list)
    """What this answer leaves out because with no step record it would still pass Temporal's
    payload limit, the largest first: ``vars``, ``output``, ``parked.input`` (each parked step's
    input, kept by its dead letter row), ``pending_approvals.message`` and
    ``pending_approvals.description`` (cut to :data:`MAX_TEXT_CHARS`), ``pending_approvals.form``
    (the declared forms in full; ``fields`` keeps their names); then, if it would still pass it,
    the lists cut to the entries that fit: ``pending_approvals``, ``parked``, ``waiting_events``,
    ``current_steps`` (the first ones), ``decisions`` and ``refused_messages`` (the most recent,
    the others counted as dropped; the pending approvals not listed are counted too). The
    ``pending_approvals`` query answers them in full (the inbox reads it when this names them). The run keeps them all; its variables are counted by the state
    budget as written, escapes not counted, and a rendered text may take 256 KiB, so they can take
    more once written."""


class CurrentStepTracking(StrEnum):
    """When the ``CurrentStep`` search attribute is upserted (each change is a history event and a
    visibility write on the server).

    ``waits``: while the run waits durably at a step (a delay's timer, an approval, a parked dead
    letter): where runs sit for long and operators look for them. ``every_step``: every step change
    (costs the server about a third more per step in ``bench/``).
    """

    WAITS = "waits"
    EVERY_STEP = "every_step"


class ResultSteps(StrEnum):
    """How a finished run's result (its workflow result, recorded in history) carries the step
    records.

    ``full``: every field of every record (the only shape before this option; what a run whose
    input does not name the option returns). ``compact``: the same records without the fields that
    hold their default (``error: null`` and the like): reading it back gives the same
    :class:`RunResult`. ``none``: a completed run's result carries no step records (state, output);
    they stay in the ``status`` query (not in a status rebuilt from the result when no worker
    answers it), and a run that did not complete keeps them (compacted) in its error's details.
    """

    FULL = "full"
    COMPACT = "compact"
    NONE = "none"


class RunOptions(BaseModel):
    """Options of one run.

    Attributes:
        track_current_step: Keep the ``CurrentStep`` search attribute at all (state and approval
            attributes are always kept); ``current_step`` says when.
        current_step: When ``CurrentStep`` is upserted.
        tenant: The tenant the run belongs to (its dead letters are recorded under it).
        decision_proof: Decisions and cancels must carry a signed token: the ``approve``, ``reject``
            and ``cancel`` signals (which cannot carry one) are refused, and the ``decide`` and
            ``cancel_run`` updates are verified against the worker's keys.
        dry_run: No action runs: each task's output is a description of what it would have done
            (its rendered input), or its canned output; delays do not wait.
        canned_outputs: In a dry run, the output of a task by its step path (or step id), so
            branches can be exercised.
        publish_assignees: Keep the ``WfaAssignees`` search attribute (who the run waits for; the
            inbox's query). :meth:`starter.client.FlowClient.start_run` sets it. Off by default, so
            the input of every run started before the attribute existed says "no" and its history
            replays unchanged without a patch marker (a third patch marker in the first workflow
            task makes the server persist the next rejected update's workflow task, so a refused
            decision would no longer leave history untouched).
    """

    model_config = ConfigDict(extra="forbid")

    track_current_step: bool = True
    current_step: CurrentStepTracking = CurrentStepTracking.WAITS
    tenant: str = Field(default="default", min_length=1, max_length=100)
    decision_proof: bool = False
    # Both left out of the payload when unset: a normal run's input is as it was before them.
    dry_run: bool = Field(default=False, exclude_if=lambda value: not value)
    canned_outputs: dict[str, Any] = Field(default_factory=dict, exclude_if=lambda value: not value)
    subflow_depth: int = Field(default=0, ge=0, le=100)
    """0 for a run a client started; n for a run a ``subflow`` step started at depth n - 1."""
    publish_assignees: bool = False
    state_budget: int | None = Field(
        default=None, ge=64 * 1024, le=256 * 1024 * 1024, exclude_if=lambda value: value is None
    )
    """Bytes of outputs and variables the run may keep, when it was started with large payloads
    stored by reference (``WFA_PAYLOAD_STORE``); None (left out of the payload, so inputs of runs
    started before it are unchanged): :data:`interpreter.sizes.RUN_STATE_BUDGET`."""
    result_steps: ResultSteps = Field(
        default=ResultSteps.FULL, exclude_if=lambda value: value == ResultSteps.FULL
    )
    """How the run's result carries its step records (:class:`ResultSteps`); ``full`` is left out of
    the payload, so the input (and the result) of a run started before the option is unchanged."""
    result_limit: int | None = Field(
        default=None, ge=64 * 1024, le=64 * 1024 * 1024, exclude_if=lambda value: value is None
    )  # (at least workflows.generic.CHILD_RESULT_FLOOR, the least a parent holds)
    """Bytes the run's result (or its failure's details) may take serialized: the room the parent run
    that waits for it holds in its own history for it (``workflows.generic`` patch
    ``history-guard-children``); a result over it fails the run (``HistoryLimit``). None (left out of
    the payload: a run started before the field has none): Temporal's payload limit."""
    engine_level: int = Field(default=0, ge=0, le=1000, exclude_if=lambda value: value == 0)
    """The interpreter generation the run was started for (``workflows.generic.ENGINE_LEVEL`` of the
    starting client's build): every behaviour change (patch) of that generation or an earlier one applies to
    the run from its start, without asking ``workflow.patched``, so the run's history carries no
    patch marker (and no ``TemporalChangeVersion`` upsert) for it. 0 (left out of the payload: the
    input of a run started before the field is unchanged): every change is asked, as before. A
    worker does not run a run of a generation it does not know: the run waits for one that does
    (``workflows.generic.EngineLevelUnknownError``). See ``workflows.generic.PATCH_LEVELS``."""


class ForeachBatch(BaseModel):
    """What a child workflow of a fanned-out foreach runs: a slice of the parent's items through
    the foreach's body, with the parent's template context at the foreach (already inert data)."""

    model_config = ConfigDict(extra="forbid")

    step_id: str
    path: str
    """The foreach's path in the parent: items keep their paths (``path[index].step``)."""
    offset: int = Field(ge=0)
    """The index of the slice's first item in the parent's list."""
    items: list[Any]
    concurrency: int = Field(ge=1)
    steps: dict[str, Any] = Field(default_factory=dict)
    locals: dict[str, Any] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    input: dict[str, Any] = Field(default_factory=dict)
    run: dict[str, Any] = Field(default_factory=dict)
    """The parent's ``run`` template variable: items see the run they belong to."""


class RunInput(BaseModel):
    """Input of the generic workflow: the definition to run (recorded in history, so a run is pinned
    to it), the run's input data and options."""

    model_config = ConfigDict(extra="forbid")

    definition: Definition
    input: dict[str, Any] = Field(default_factory=dict)
    options: RunOptions = Field(default_factory=RunOptions)
    continuation: dict[str, Any] | None = None
    """Set when a run continued as new: the interpreter state it carried (validated as
    :class:`interpreter.continuation.Continuation`, which imports this module)."""
    batch: ForeachBatch | None = Field(default=None, exclude_if=lambda value: value is None)
    """Set for a child workflow of a fanned-out foreach: the run is that slice, not the steps."""

    @field_serializer("definition", when_used="json")
    def _compact_definition(self, definition: Definition) -> dict[str, Any]:
        """The definition as it travels in a payload (and so in history): without the fields that
        hold their default, about a quarter of the full dump (544 instead of 2,034 bytes for the
        benchmark's 5-step definition). Reading it back fills the same defaults in; the generic
        workflow checks the result against the run's ``DefinitionHash`` (canonical JSON with every
        default), so a worker whose defaults differed would refuse the run rather than reinterpret
        it. An input with the full dump (older starters) reads the same."""
        return definition.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    @model_serializer(mode="wrap")
    def _compact_options(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        """At generation :data:`COMPACT_RUN_INPUT_LEVEL` or later, the input as it travels in a
        payload leaves out the options that hold their default and a ``continuation`` of None
        (130 bytes of the 5-step benchmark run's history). Reading it back fills the same defaults in; a
        run of an earlier generation (which a worker of an earlier build may run, or replay) keeps
        the shape it always had, so its payload sizes, and the decisions taken on them, are the
        same on replay. The defaults are part of the wire format from then on: changing one
        changes what those runs' inputs mean (``tests/workflows/test_compact_run_input.py``)."""
        data: dict[str, Any] = handler(self)
        if not info.mode_is_json() or self.options.engine_level < COMPACT_RUN_INPUT_LEVEL:
            return data
        if data.get("continuation", ...) is None:
            del data["continuation"]
        if isinstance(data.get("options"), dict):
            data["options"] = _without_defaults(data["options"], RunOptions)
        return data


PATCH_COMPACT_RUN_INPUT = "compact-run-input"
"""Patch id: a run's input travels without the options that hold their default and without a
``continuation`` of None (:meth:`RunInput._compact_options`). Only in runs started at its
generation (``workflows.generic.NEVER_ASKED_PATCHES``): the input a client sends is written before
any worker could ask, and the inputs a run sends its next run and its children keep its shape."""
COMPACT_RUN_INPUT_LEVEL = 24
"""The generation of :data:`PATCH_COMPACT_RUN_INPUT` (``workflows.generic.PATCH_LEVELS`` holds it
too; a test checks they agree)."""

UNSET_CURRENT_STEP_LEVEL = 26
"""The generation of ``workflows.generic.PATCH_UNSET_CURRENT_STEP``: a run started at it or above
starts without ``CurrentStep`` among its search attributes (no step yet: it is set when the run
has one to show), where earlier runs started with ``CurrentStep = ""``
(:func:`workflows.search_attributes.start_attributes`; ``PATCH_LEVELS`` holds it too, a test
checks they agree)."""


class RunResult(BaseModel):
    """What a finished run returns (also carried in the details of a failed run's error)."""

    state: RunState
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)

    def shaped(self, steps: ResultSteps) -> RunResult:
        """This result, to be serialized in the shape ``steps`` asks for (:class:`ResultSteps`):
        itself for ``full``, else a :class:`ShapedRunResult` with the same values."""
        if steps == ResultSteps.FULL:
            return self
        shaped = ShapedRunResult.model_construct(
            **{name: getattr(self, name) for name in RunResult.model_fields}
        )
        shaped._shape = steps
        return shaped


def _without_defaults(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``data`` (a dump of ``model``) without the optional fields that hold their default."""
    fields = model.model_fields
    return {
        key: value
        for key, value in data.items()
        if key not in fields
        or fields[key].is_required()
        or value != fields[key].get_default(call_default_factory=True)
    }


class ShapedRunResult(RunResult):
    """A :class:`RunResult` that serializes in a compact shape (:meth:`RunResult.shaped`): the
    fields holding their default left out (``compact``), and for ``none`` the step records too.
    Reading the data back as a :class:`RunResult` gives the same values (``none``: no records)."""

    _shape: ResultSteps = PrivateAttr(default=ResultSteps.COMPACT)

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = _without_defaults(handler(self), RunResult)
        if self._shape == ResultSteps.NONE:
            data.pop("steps", None)
        elif "steps" in data:
            data["steps"] = [_without_defaults(step, StepRecord) for step in data["steps"]]
        return data


class DeadLetterAction(StrEnum):
    """What an operator decides for a parked step (or what its park timeout decides)."""

    REDRIVE = "redrive"
    SKIP = "skip"
    ABORT = "abort"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class ParkedStep(BaseModel):
    """A task step whose retries were exhausted under ``on_failure: dead_letter``, waiting for an
    operator (shown in the status, recorded as a dead letter row).

    Attributes:
        park_id: Unique in the run: the step path, plus ``~n`` for its n-th park.
        dead_letter_id: The row id in the dead letter table.
    """

    park_id: str
    step_id: str
    path: str
    action: str
    input: dict[str, Any]
    error: str
    error_type: str
    attempts: int
    parked_at: datetime
    deadline: datetime | None = None
    dead_letter_id: int | None = None


class DeadLetterDecision(BaseModel):
    """Argument of the ``resolve_dead_letter`` update.

    Attributes:
        park_id: Which parked step (may be omitted when exactly one is parked).
        input: For ``redrive``: corrected input for the step (else the same input again).
        output: For ``skip``: the step's output, as if it had succeeded.
    """

    model_config = ConfigDict(extra="forbid")

    action: DeadLetterAction
    actor: str = Field(min_length=1)
    park_id: str | None = None
    reason: str = ""
    input: dict[str, Any] | None = None
    output: Any = None


DEAD_LETTER_DECISION_MAX = 1024 * 1024
"""Most bytes (as JSON) of an operator's dead letter decision: the run writes an accepted update's
argument back, records the decision in the row (the ``dead_letter_resolve`` activity's input) and,
for a redrive, sends its input as the step's call, all in one workflow task's completion, which
the server takes up to 4 MiB."""


def dead_letter_size_problem(decision: DeadLetterDecision) -> str | None:
    """Why an operator's dead letter decision is too large or too deep to accept, or None.

    Its actor and reason are recorded, its ``output`` becomes the step's output (as an action's,
    at most :data:`~interpreter.sizes.ACTION_OUTPUT_BUDGET` as written) and its ``input`` the
    step's next call; values nested past :data:`~interpreter.sizes.VALUE_MAX_DEPTH` could be
    written but not read back (the status query, a parent's read of the run's result, the next
    run of a chain); the whole is at most :data:`DEAD_LETTER_DECISION_MAX`. The run's validator
    and the client API both ask it (a raw client's update skipped the client's checks: found by
    an attacker's probe)."""
    problem = (
        _too_long("actor", decision.actor, MAX_ACTOR_CHARS)
        or _too_long("park_id", decision.park_id, MAX_PARK_ID_CHARS)
        or _too_long("reason", decision.reason, MAX_DECISION_REASON_CHARS)
    )
    if problem is not None:
        return problem
    for name, value in (("input", decision.input), ("output", decision.output)):
        if value is None:
            continue
        depth = json_depth(value)
        if depth > VALUE_MAX_DEPTH:
            return f"{name} is nested {depth} levels deep or more (at most {VALUE_MAX_DEPTH})"
    if decision.output is not None:
        size = json_written_size(decision.output, ACTION_OUTPUT_BUDGET + 1)
        if size > ACTION_OUTPUT_BUDGET:
            return f"output is {size:,} bytes as JSON or more (at most {ACTION_OUTPUT_BUDGET:,}, as an action's output)"
    size = json_written_size(decision.model_dump(mode="json"), DEAD_LETTER_DECISION_MAX + 1)
    if size > DEAD_LETTER_DECISION_MAX:
        what = "with its input " if decision.input is not None else ""
        return f"the decision {what}is {size:,} bytes as JSON or more (at most {DEAD_LETTER_DECISION_MAX:,})"
    return None


class DeadLetterRecord(BaseModel):
    """Input of the ``dead_letter_park`` activity: the row to record (idempotent on
    ``(workflow_id, run_id, park_id)``); the activity returns the row id."""

    tenant: str
    workflow_id: str
    run_id: str
    definition: str
    version: int
    park_id: str
    step_id: str
    path: str
    action: str
    input: dict[str, Any]
    error: str
    error_type: str
    attempts: int
    parked_at: datetime


class DeadLetterResolution(BaseModel):
    """Input of the ``dead_letter_resolve`` activity: the decision taken on a row."""

    dead_letter_id: int
    tenant: str = "default"
    action: DeadLetterAction
    actor: str
    reason: str = ""
    input: dict[str, Any] | None = None
    output: Any = None
    resolved_at: datetime


RunStatus.model_rebuild()


class SubflowLookup(BaseModel):
    """Input of the ``subflow_resolve`` activity: which definition a ``subflow`` step starts."""

    model_config = ConfigDict(extra="forbid")

    tenant: str
    definition: str
    version: int | None = None
    root_run_id: str | None = Field(default=None, pattern=r"^[0-9a-fA-F-]{1,64}$")
    """The run id of the run tree's root (Temporal's ``RootRunId``): the activity counts the tree's
    runs against the worker's ``WFA_MAX_RUNS_PER_TREE``. None (scheduled by a build before the
    bound): not counted."""
    max_bytes: int | None = Field(default=None, ge=1, exclude_if=lambda value: value is None)
    """The most bytes the activity's result (the definition and its hash, as one payload) may take
    in the parent run's history, which holds that room for it (``history-guard-subflows``); a larger
    definition fails the step (``HistoryLimit``). None (a run of an earlier generation, or with the
    payload store, where a large result goes by reference): unbounded."""


class SubflowInputCheck(BaseModel):
    """Input of the ``wfa.subflow_input_problems`` local activity: a ``subflow`` step's input for its
    child against the child definition's ``input_schema``. Checked in an activity, never in workflow
    code: its answer is recorded (a marker; the input itself is not written to history), so a
    replay keeps it whatever the replaying worker's ``jsonschema``."""

    model_config = ConfigDict(extra="forbid")

    input_schema: dict[str, Any]
    input: dict[str, Any]
    tenant: str = ""
    """The run's tenant: one tenant holds at most all but one of a worker's checking slots."""


class SubflowDefinition(BaseModel):
    """Output of ``subflow_resolve``: the definition (``version`` = the registry's) and its hash."""

    definition: Definition
    content_hash: str

    @field_serializer("definition", when_used="json")
    def _compact_definition(self, definition: Definition) -> dict[str, Any]:
        """The definition as it lands in the parent run's history, as a run's input carries it
        (:meth:`RunInput._compact_definition`): without the fields that hold their default, often
        less than half the full dump (found by a review: a definition of 244 KB as written was
        measured at 555 KB). A full dump (an older worker's answer) reads the same."""
        return definition.model_dump(mode="json", by_alias=True, exclude_defaults=True)


DECISION_LINKS_ACTIVITY = "decision_links"
"""The activity that mails decision links (``activities/notify.py``); not a definition action."""


class LinkRecipient(BaseModel):
    """One person a step's links go to: the name they decide as, and their address."""

    actor: str
    address: str


class DecisionLinksInput(BaseModel):
    """What the ``decision_links`` activity needs to mail one step's links.

    The tokens in the links are minted by the activity (with the worker's signing key), so they
    never enter the run's history.
    """

    workflow_id: str
    path: str
    kind: str
    """``approval`` or ``task``."""
    subject: str
    message: str
    description: str = ""
    recipients: list[LinkRecipient]
    required_fields: bool = False
    has_fields: bool = False
    expires_at: datetime | None = None
    account: str = "SMTP"
    since: datetime | None = None
    """When the step began this wait: the links' tokens carry it (claim ``since``), so they decide
    this wait only, not a later one a loop brings (None from a run of an earlier build: any)."""
