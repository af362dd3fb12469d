"""The workflow definition format: strict pydantic v2 models, one per step kind.

A definition is JSON. Its ``steps`` run in order; each step has an ``id`` unique in the whole
definition, a ``type`` that selects its kind, and optionally ``next`` to jump to a named step
afterwards. Structural checks (types, unknown fields, durations, templates) happen while parsing;
the checks that need the whole tree (duplicate ids, jump targets, loop bounds, nesting depth, known
actions) live in :mod:`interpreter.validate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, assert_never

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
    model_validator,
)

from interpreter.actions import RetryMode
from interpreter.business_hours import BusinessHours
from interpreter.durations import parse_duration
from interpreter.templates import (
    TemplateError,
    bounded_template_tokens,
    check_expression,
    check_template,
    template_strings,
    template_token_budget,
)

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_duration_or_template(text: str) -> str:
    if "{{" in text or "{%" in text:
        check_template(text)
    else:
        parse_duration(text)
    return text


RESERVED_NAMES = ("input", "vars", "steps", "run", "index")
"""Names templates already see; a foreach's ``as`` may not hide them."""


def _not_reserved(name: str) -> str:
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} would hide the template variable of that name; pick another name")
    return name


def _check_expression(text: str) -> str:
    check_expression(text)
    return text


def _check_template(text: str) -> str:
    check_template(text)
    return text


class NestedTemplateError(ValueError):
    """A template syntax error inside a JSON value; ``json_path`` locates it within the value
    (e.g. ``.headers.Authorization``), so validation can name the exact path."""

    def __init__(self, json_path: str, error: TemplateError) -> None:
        super().__init__(str(error))
        self.json_path = json_path


def _check_templates_in(value: Any) -> Any:
    for path, text in template_strings(value):
        try:
            check_template(text)
        except TemplateError as err:
            raise NestedTemplateError(path, err) from None
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration such as ``30s``, ``5m``, ``1h30m``, ``3d`` or ISO 8601 ``P3D``."""

DurationOrTemplate = Annotated[str, AfterValidator(_check_duration_or_template)]
"""A duration, or a template that renders to one at run time."""

Expression = Annotated[str, AfterValidator(_check_expression)]
"""A bare jinja2 expression (no braces), e.g. ``steps.check.output.status_code == 200``."""

Template = Annotated[str, AfterValidator(_check_template)]
"""A string that may contain ``{{ ... }}`` placeholders."""

TemplatedValue = Annotated[Any, AfterValidator(_check_templates_in)]
"""Any JSON value; every string inside it may be a template."""

StepId = Annotated[str, Field(pattern=STEP_ID_PATTERN)]

EVENT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
EventType = Annotated[str, Field(pattern=EVENT_TYPE_PATTERN)]
"""An event type, e.g. ``family.answered``."""


def seconds(duration: str) -> float:
    """Converts a validated duration string to seconds."""
    return parse_duration(duration).total_seconds()


class StrictModel(BaseModel):
    """Base of every definition model: unknown fields are errors, instances are immutable, and
    values are not coerced (``"3"`` is not an integer), as the JSON Schema says.

    Strict mode refuses a plain string for an enum or a date in Python mode, where JSON has no
    other way to write them: definitions are therefore always validated from JSON text
    (:func:`parse_definition`, the pydantic data converter), where strict mode accepts exactly
    what the JSON Schema does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Fields added after definitions were first stored: the content hash leaves each out while it
    # holds its default, so a stored body keeps its hash when the model grows (see
    # :func:`interpreter.validate.definition_hash`). Every field added from now on is listed here.
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        later = type(self).LATER_FIELDS
        if later and isinstance(data, dict) and info.context and info.context.get("content_hash"):
            fields = type(self).model_fields
            for name in later:
                if getattr(self, name) == fields[name].get_default(call_default_factory=True):
                    data.pop(name, None)
        return data


class RetryPolicy(StrictModel):
    """How a task step is retried.

    ``exponential`` and ``constant`` map onto Temporal's server-side retry policy. ``linear``
    (delay = initial_interval x attempt, capped by maximum_interval) is computed by the action
    activity, which returns the next delay with its failure; timeouts, which the activity cannot
    report, are retried at the constant ``initial_interval``.
    """

    preset: RetryMode = RetryMode.EXPONENTIAL
    initial_interval: Duration = "1s"
    backoff_coefficient: float | None = Field(default=None, ge=1.0, le=100.0)
    maximum_interval: Duration | None = None
    maximum_attempts: int = Field(default=3, ge=1, le=1000)
    non_retryable_error_types: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> RetryPolicy:
        if self.preset != RetryMode.EXPONENTIAL and self.backoff_coefficient not in (None, 1.0):
            raise ValueError(
                f"backoff_coefficient {self.backoff_coefficient} contradicts preset '{self.preset}'"
                " (only 'exponential' has a coefficient)"
            )
        initial = parse_duration(self.initial_interval)
        if initial <= timedelta(0):
            raise ValueError("initial_interval must be greater than zero")
        if self.maximum_interval is not None and parse_duration(self.maximum_interval) < initial:
            raise ValueError(
                f"maximum_interval {self.maximum_interval} is shorter than"
                f" initial_interval {self.initial_interval}"
            )
        return self

    @property
    def coefficient(self) -> float:
        """The backoff coefficient Temporal applies (1.0 for constant and linear)."""
        if self.preset == RetryMode.EXPONENTIAL:
            return 2.0 if self.backoff_coefficient is None else self.backoff_coefficient
        return 1.0


class Timeouts(StrictModel):
    """Activity timeouts of a task step."""

    start_to_close: Duration | None = None
    schedule_to_close: Duration | None = None
    heartbeat: Duration | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Timeouts:
        stc = parse_duration(self.start_to_close) if self.start_to_close else None
        for name in ("start_to_close", "schedule_to_close", "heartbeat"):
            value = getattr(self, name)
            if value is not None and parse_duration(value) <= timedelta(0):
                raise ValueError(f"{name} must be greater than zero")
        if stc and self.heartbeat and parse_duration(self.heartbeat) > stc:
            raise ValueError("heartbeat timeout is longer than start_to_close")
        if stc and self.schedule_to_close and parse_duration(self.schedule_to_close) < stc:
            raise ValueError("schedule_to_close is shorter than start_to_close")
        return self


class Defaults(StrictModel):
    """Defaults for every task step that does not declare its own."""

    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts(start_to_close="30s")
    park_timeout: Duration = "7d"


class Limits(StrictModel):
    """Bounds that keep a run inside Temporal's history limits."""

    max_depth: int = Field(default=5, ge=1, le=20)
    max_step_executions: int = Field(default=500, ge=1, le=10_000_000)
    """A guard against runaway loops, counted across continue-as-new (history no longer bounds a
    run: raise it for a long loop; ``max_visits`` bounds each loop)."""
    max_foreach_items: int = Field(default=1000, ge=1, le=10000)
    # Left out of a dump when unset, so the content hash of every definition that does not set it
    # stays what it was (as for every field added after definitions were stored).
    history_budget: int | None = Field(default=None, ge=100, le=50_000, exclude_if=lambda v: v is None)
    """Continue as new once the run's history has this many events (at the next safe point);
    Temporal's own suggestion (about 4,096 events or 4 MiB) applies either way, so a run that
    loops or waits long needs no setting: it continues as new by itself."""


class Goto(StrictModel):
    """Jump to the step with this id (in the same sequence or an enclosing one)."""

    goto: StepId


class Branch(StrictModel):
    """Where a condition leads: nested steps, or a jump. Exactly one of the two."""

    steps: list[Step] | None = None
    goto: StepId | None = None

    @model_validator(mode="after")
    def _one(self) -> Branch:
        if (self.steps is None) == (self.goto is None):
            raise ValueError("a branch has exactly one of 'steps' or 'goto'")
        if self.steps is not None and not self.steps:
            raise ValueError("'steps' must not be empty")
        return self


class StepBase(StrictModel):
    """Fields every step kind has.

    Attributes:
        id: Unique in the whole definition; results are stored under it.
        name: What operators read in the Web UI (defaults to the id).
        when: Optional expression; the step is skipped when it is false.
        next: Jump to this step after this one completes.
        max_visits: Required on a step that a jump can reach again (a loop); the run fails with a
            clear error when the step would run more often.
    """

    id: StepId
    name: str | None = Field(default=None, max_length=200)
    when: Expression | None = None
    next: StepId | None = None
    max_visits: int | None = Field(default=None, ge=1, le=5000)

    @property
    def label(self) -> str:
        """The name shown for this step."""
        return self.name or self.id


OnFailure = Literal["fail", "continue", "compensate", "dead_letter"] | Goto
OnParkTimeout = Literal["fail", "continue", "compensate"] | Goto


class TaskStep(StepBase):
    """Call an action (a Temporal activity) with templated input.

    ``on_failure`` once the retry policy is exhausted: ``fail`` ends the run as failed after
    running the compensations of completed tasks; ``continue`` records the error and goes on;
    ``compensate`` runs the compensations and ends the run as ``compensated`` (a handled failure);
    ``{"goto": id}`` records the error and jumps; ``dead_letter`` records a dead letter and parks
    the run until an operator redrives the step (optionally with corrected input), skips it (with
    an output) or aborts the run; without a decision within ``park_timeout`` (default
    ``defaults.park_timeout``), ``on_park_timeout`` applies as ``on_failure`` would.
    """

    type: Literal["task"]
    action: Annotated[str, Field(min_length=1, max_length=100)]
    input: dict[str, TemplatedValue] = Field(default_factory=dict)
    retry: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    on_failure: OnFailure = "fail"
    park_timeout: Duration | None = None
    on_park_timeout: OnParkTimeout = "fail"
    compensate: list[Step] | None = None
    task_queue: (
        Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")] | None
    ) = Field(
        default=None,
        # Left out when unset, so the content hash of every definition written before the field
        # existed stays the same.
        exclude_if=lambda value: value is None,
        description="Run this step's activity on another task queue (a team's own workers)",
    )

    @model_validator(mode="after")
    def _parking(self) -> TaskStep:
        if self.on_failure != "dead_letter" and (
            self.park_timeout is not None or self.on_park_timeout != "fail"
        ):
            raise ValueError("park_timeout and on_park_timeout apply only with on_failure 'dead_letter'")
        if self.park_timeout is not None and parse_duration(self.park_timeout) <= timedelta(0):
            raise ValueError("park_timeout must be greater than zero")
        return self


class ConditionStep(StepBase):
    """If/else: ``then`` when the expression is true, ``else`` otherwise (nothing if absent)."""

    type: Literal["condition"]
    if_: Expression = Field(alias="if")
    then: Branch
    else_: Branch | None = Field(default=None, alias="else")

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, serialize_by_alias=True
    )


class SwitchCase(StrictModel):
    """One arm of a switch: taken when its expression is true (first match wins)."""

    when: Expression
    then: Branch


class SwitchStep(StepBase):
    """Multi-way switch: the first case whose ``when`` is true, else ``default``."""

    type: Literal["switch"]
    cases: list[SwitchCase] = Field(min_length=1)
    default: Branch | None = None


class JoinStrategy(StrEnum):
    """How a parallel step ends.

    ``all``: every branch must succeed; the first failure cancels the others and fails the step.
    ``any``: the first branch to succeed wins and the others are cancelled; fails only if all fail.
    ``first``: the first branch to finish decides, success or failure; the others are cancelled.
    """

    ALL = "all"
    ANY = "any"
    FIRST = "first"


class ParallelBranch(StrictModel):
    """One branch of a parallel step."""

    id: StepId
    steps: list[Step] = Field(min_length=1)


class ParallelStep(StepBase):
    """Run branches concurrently and join them."""

    type: Literal["parallel"]
    branches: list[ParallelBranch] = Field(min_length=1, max_length=100)
    join: JoinStrategy = JoinStrategy.ALL


FAN_OUT_ABOVE = 200
"""A foreach over more items than this runs them in child workflows (``fan_out_above``)."""
FAN_OUT_BATCH_SIZE = 100
"""Items per child workflow of a fanned-out foreach (``batch_size``)."""
FAN_OUT_MAX_BATCH_SIZE = 1000
"""The largest ``batch_size``: no child of a fanned-out foreach runs more items."""


class ForeachStep(StepBase):
    """Run ``steps`` once per item of a list, at most ``concurrency`` at a time.

    The step's output is the list of each iteration's result (``output`` rendered per item, else
    the output of the iteration's last step), in item order.

    A list longer than ``fan_out_above`` (default :data:`FAN_OUT_ABOVE`) runs in child workflows,
    ``batch_size`` items each (default :data:`FAN_OUT_BATCH_SIZE`), ``concurrency`` bounding the
    items running at once across children (see the README's *Fan-out* section); a body that
    declares a compensation always runs in the run itself.
    """

    type: Literal["foreach"]
    items: Expression
    as_: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"), AfterValidator(_not_reserved)] = Field(
        default="item", alias="as"
    )
    steps: list[Step] = Field(min_length=1)
    concurrency: int = Field(default=1, ge=1, le=100)
    max_items: int | None = Field(default=None, ge=1, le=10000)
    output: TemplatedValue = None
    # Fields added later are left out of a dump while unset: stored definitions keep their hash.
    fan_out_above: int | None = Field(
        default=None,
        ge=0,
        le=10000,
        exclude_if=lambda value: value is None,
        description=(
            "Above this many items the foreach runs its items in child workflows, batch_size items"
            " per child (default 200; 10000 keeps every list in the run)"
        ),
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=FAN_OUT_MAX_BATCH_SIZE,
        exclude_if=lambda value: value is None,
        description="Items per child workflow when the foreach fans out (default 100)",
    )

    LATER_FIELDS = frozenset({"fan_out_above", "batch_size"})

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, serialize_by_alias=True
    )


class DelayStep(StepBase):
    """A durable timer: a duration, until a timestamp, or until business hours open.

    Exactly one of ``duration`` (``3d`` or a template), ``until`` (a template rendering to an ISO
    8601 timestamp with offset) or ``business_hours``.
    """

    type: Literal["delay"]
    duration: DurationOrTemplate | None = None
    until: Template | None = None
    business_hours: BusinessHours | None = None

    @model_validator(mode="after")
    def _one(self) -> DelayStep:
        given = [n for n in ("duration", "until", "business_hours") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a delay has exactly one of 'duration', 'until' or 'business_hours'")
        return self


class Escalation(StrictModel):
    """What happens when an approval waits too long: run steps, widen the approvers, repeat."""

    after: Duration
    steps: list[Step] = Field(default_factory=list)
    add_approvers: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    max_escalations: int = Field(default=1, ge=1, le=20)

    @model_validator(mode="after")
    def _positive(self) -> Escalation:
        if parse_duration(self.after) <= timedelta(0):
            raise ValueError("escalation 'after' must be greater than zero")
        return self


FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
DEFAULT_FIELD_MAX_LENGTH = 1000
"""The longest text a string field takes when its declaration gives no ``max_length``."""


class FieldType(StrEnum):
    """The type of a form field: what a decision's ``data`` must hold under its name.

    ``string`` (at most ``max_length`` characters), ``number`` (a JSON number, not a boolean),
    ``boolean``, ``enum`` (one of ``values``), ``date`` (ISO 8601 ``YYYY-MM-DD``, a real date).
    """

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ENUM = "enum"
    DATE = "date"


class FormField(StrictModel):
    """One field of an approval's form; the decision's value lands in ``vars.<name>``.

    Attributes:
        name: An identifier; the variable the field is handed.
        type: What the value must be (:class:`FieldType`).
        required: An approval without the field is refused (a rejection may leave it out).
        max_length: The longest text a ``string`` field takes (default
            :data:`DEFAULT_FIELD_MAX_LENGTH`); only for strings.
        values: The allowed values of an ``enum`` field (and only of one).
    """

    # The cross-field rules, as the schema can say them (the validator below says them in words).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "enum"}}, "required": ["type"]},
                    "then": {"required": ["values"]},
                    "else": {"properties": {"values": {"type": "null"}}},
                },
                {
                    "if": {"properties": {"max_length": {"type": "integer"}}, "required": ["max_length"]},
                    "then": {"properties": {"type": {"const": "string"}}},
                },
            ]
        }
    )

    name: Annotated[str, Field(pattern=FIELD_NAME_PATTERN)]
    type: FieldType = FieldType.STRING
    required: bool = False
    max_length: int | None = Field(default=None, ge=1, le=100_000, exclude_if=lambda value: value is None)
    values: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1, max_length=100, exclude_if=lambda value: value is None
    )

    @model_validator(mode="after")
    def _coherent(self) -> FormField:
        if self.type == FieldType.ENUM:
            if self.values is None:
                raise ValueError(f"enum field {self.name!r} needs 'values' (the allowed values)")
            duplicates = sorted({v for v in self.values if self.values.count(v) > 1})
            if duplicates:
                raise ValueError(f"enum field {self.name!r} lists {duplicates} more than once")
        elif self.values is not None:
            raise ValueError(f"field {self.name!r}: 'values' applies only to type 'enum'")
        if self.max_length is not None and self.type != FieldType.STRING:
            raise ValueError(f"field {self.name!r}: 'max_length' applies only to type 'string'")
        return self

    @property
    def limit(self) -> int:
        """The longest text a string field takes."""
        return DEFAULT_FIELD_MAX_LENGTH if self.max_length is None else self.max_length


FieldName = Annotated[str, Field(pattern=FIELD_NAME_PATTERN)]
"""A bare field name: shorthand for an optional ``string`` field of that name."""


def _field_kind(value: Any) -> str:
    return "FieldName" if isinstance(value, str) else "FormField"


FieldDeclaration = Annotated[
    Annotated[FieldName, Tag("FieldName")] | Annotated[FormField, Tag("FormField")],
    Discriminator(_field_kind),
]
"""A form field: its declaration, or a bare name (an error then names the one that applies)."""


class EmailLinks(StrictModel):
    """Decision links by email: each listed person gets a message with links that decide for them.

    Attributes:
        to: Who is mailed, by the name they decide as (an approver, the assignee, or anyone an
            escalation adds): their address, or a template giving it (``{{ input.manager_email }}``).
        subject: The subject line (a template); default the step's message or title.
        account: Prefix of the tenant's SMTP settings, as for the ``email`` action.
    """

    to: dict[Annotated[str, Field(min_length=1, max_length=200)], Template] = Field(
        min_length=1, max_length=50
    )
    subject: Template = ""
    account: str = Field(default="SMTP", pattern=r"^[A-Z][A-Z0-9_]{0,39}$")

    @model_validator(mode="after")
    def _people(self) -> EmailLinks:
        groups = sorted(name for name in self.to if name.startswith("group:"))
        if groups:
            raise ValueError(f"links decide for one person: name the members, not {groups}")
        return self


class Notify(StrictModel):
    """How a step waiting for people tells them (``email``: decision links)."""

    email: EmailLinks


def _declared_form(fields: list[FieldDeclaration] | None) -> list[FormField]:
    """Declared fields (approval, wait_for_event, human_task), a bare name read as an optional
    string field."""
    return [FormField(name=f) if isinstance(f, str) else f for f in fields or []]


def _refuse_repeated_fields(form: list[FormField], noun: str) -> None:
    """Raises ValueError naming the fields declared more than once (``noun``: "form fields")."""
    names = [f.name for f in form]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{noun} {duplicates} are declared more than once")


class ApprovalStep(StepBase):
    """Pause until a listed approver approves or rejects (signal or update).

    ``fields`` declares the decision's form: only the declared fields are accepted, each checked
    against its declaration, and each lands in ``vars`` under its own name (a bare name is an
    optional string field). Without ``fields`` a decision carries no data. No two steps hand the
    same variable: a field name is neither another approval's field nor a ``set`` step's variable
    (:mod:`interpreter.validate`), so a form never overwrites a value the definition set.
    ``timeout`` counts from the start of the step; ``on_timeout`` then decides. ``compensate``
    steps run in the saga, like a task's, when the run fails or is cancelled after the approval
    completed (approved, or rejected with ``on_reject`` ``continue`` or a goto).
    """

    type: Literal["approval"]
    approvers: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    message: Template = ""
    fields: list[FieldDeclaration] | None = Field(default=None, max_length=100)
    escalation: Escalation | None = None
    timeout: Duration | None = None
    on_timeout: Literal["approve", "reject", "fail"] | Goto = "fail"
    on_reject: Literal["fail", "continue"] | Goto = "fail"
    # Left out of dumps when absent, so the content hash of every definition written before
    # approvals could declare it stays the same.
    compensate: list[Step] | None = Field(default=None, exclude_if=lambda value: value is None)
    notify: Notify | None = Field(default=None, exclude_if=lambda value: value is None)
    """Send the approvers decision links (approve, reject, and the form) by email."""

    @model_validator(mode="after")
    def _coherent(self) -> ApprovalStep:
        if self.timeout is not None:
            timeout = parse_duration(self.timeout)
            if timeout <= timedelta(0):
                raise ValueError("timeout must be greater than zero")
            if self.escalation is not None and parse_duration(self.escalation.after) >= timeout:
                raise ValueError("escalation 'after' must be shorter than the approval timeout")
        _refuse_repeated_fields(self.form, "form fields")
        return self

    @property
    def form(self) -> list[FormField]:
        """The declared form fields, a bare name read as an optional string field."""
        return _declared_form(self.fields)


MAX_EVENT_LOOKBACK = timedelta(days=7)
"""The longest ``lookback`` a ``wait_for_event`` step may declare: how long an event mailbox keeps
an event that no run has consumed yet (see :mod:`workflows.mailbox`)."""


class WaitForEventStep(StepBase):
    """Pause until an event of type ``event`` is published with the correlation key ``key``.

    ``key`` is a template rendered when the step starts (e.g. ``"{{ input.family_id }}"``); an
    event matches when its type and key are equal to the step's. An event published up to
    ``lookback`` before the step started is consumed too (default ``0s``: only events published
    while the step waits; at most :data:`MAX_EVENT_LOOKBACK`). A run consumes an event at most once
    (by event id), and one event resumes every run waiting on its type and key.

    ``fields`` declares the event's data like an approval's form: only declared fields are
    accepted, each checked against its declaration (a bare name is an optional string field);
    an event whose data does not fit is refused (recorded in the status) and the step waits on.
    Without ``fields`` an event carries no data. The step's output is ``{"event_id", "type",
    "key", "published_at", "data", "timed_out"}``; the data is inert.

    ``timeout`` counts from the start of the step; ``on_timeout`` then decides: ``fail`` (the run
    fails, type ``EventTimedOut``), ``continue`` (the output has ``timed_out`` true) or a goto.
    """

    type: Literal["wait_for_event"]
    event: EventType
    key: Annotated[Template, Field(min_length=1, max_length=1000)]
    fields: list[FieldDeclaration] | None = Field(default=None, max_length=100)
    timeout: Duration | None = None
    on_timeout: Literal["fail", "continue"] | Goto = "fail"
    lookback: Duration = "0s"

    @model_validator(mode="after")
    def _coherent(self) -> WaitForEventStep:
        if self.timeout is not None and parse_duration(self.timeout) <= timedelta(0):
            raise ValueError("timeout must be greater than zero")
        if parse_duration(self.lookback) > MAX_EVENT_LOOKBACK:
            raise ValueError(
                f"lookback {self.lookback} is longer than events are kept ({MAX_EVENT_LOOKBACK.days}d)"
            )
        _refuse_repeated_fields(self.form, "event fields")
        return self

    @property
    def form(self) -> list[FormField]:
        """The declared event fields, a bare name read as an optional string field."""
        return _declared_form(self.fields)


class HumanTaskStep(StepBase):
    """Wait until a person completes a task (a call to make, a document to check) with a form.

    The task is for ``assignee`` (a user name) or any member of ``candidate_groups`` (at least one
    of the two). ``title`` and ``description`` are templates shown in the inbox. Completing it (the
    inbox, a link, ``FlowClient.complete_task``, ``wfa task complete``) hands the declared form
    data to the step's output (``steps.<id>.output.data``); required fields must be filled. It
    waits with the same mechanism as an approval: ``escalation`` runs reminder steps and widens who
    may complete it (``add_approvers`` takes user names and ``group:<name>``), and without a
    completion by ``due`` (counted in ``business_hours`` when given, else wall-clock time)
    ``on_timeout`` applies: ``fail`` the run, ``continue`` with ``status`` ``timed_out``, or a goto.
    """

    type: Literal["human_task"]
    title: Template
    description: Template = ""
    assignee: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    candidate_groups: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    fields: list[FieldDeclaration] | None = Field(default=None, max_length=100)
    due: Duration | None = None
    business_hours: BusinessHours | None = None
    escalation: Escalation | None = None
    on_timeout: Literal["fail", "continue"] | Goto = "fail"
    notify: Notify | None = None
    """Send the assignee (or people its escalation adds) a link to complete it by email."""

    @model_validator(mode="after")
    def _coherent(self) -> HumanTaskStep:
        if self.assignee is None and not self.candidate_groups:
            raise ValueError("a human task needs an 'assignee' or 'candidate_groups'")
        if self.business_hours is not None and self.due is None:
            raise ValueError("'business_hours' counts the 'due' time: give 'due' too")
        if self.due is not None:
            due = parse_duration(self.due)
            if due <= timedelta(0):
                raise ValueError("due must be greater than zero")
            if (
                self.business_hours is None
                and self.escalation is not None
                and parse_duration(self.escalation.after) >= due
            ):
                raise ValueError("escalation 'after' must be shorter than 'due'")
        _refuse_repeated_fields(self.form, "form fields")
        return self

    @property
    def form(self) -> list[FormField]:
        """The declared form fields, a bare name read as an optional string field."""
        return _declared_form(self.fields)

    @property
    def approvers(self) -> list[str]:
        """Who may complete it, as an approval lists its approvers: the assignee, then each
        candidate group as ``group:<name>``."""
        return [*([self.assignee] if self.assignee else []), *(f"group:{g}" for g in self.candidate_groups)]


class SetStep(StepBase):
    """Set variables from templates; later steps read them as ``vars.<name>``."""

    type: Literal["set"]
    vars: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], TemplatedValue] = Field(
        # Without it the schema's patternProperties would let any other key through.
        min_length=1,
        json_schema_extra={"additionalProperties": False},
    )


class SucceedStep(StepBase):
    """End the run successfully with an optional output and message."""

    type: Literal["succeed"]
    output: TemplatedValue = None
    message: Template = ""


class FailStep(StepBase):
    """End the run as failed (compensations run) with a message and error type."""

    type: Literal["fail"]
    message: Template
    error_type: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.]{0,99}$")] = "WorkflowFailed"


OnSubflowFailure = Literal["fail", "continue"] | Goto

MAX_SUBFLOW_DEPTH = 5
"""How deep sub-workflows may nest: a run started by a ``subflow`` step is at depth 1, its own
subflow at depth 2, and so on; a subflow step that would start a run deeper fails its step with
``SubflowDepthExceeded`` (a definition that calls itself ends there, not in a runaway)."""


class SubflowStep(StepBase):
    """Run another definition of the same tenant's registry as a child workflow.

    ``definition`` names it; ``version`` pins a version (else the active version when the step
    starts, recorded in history). ``input`` is the child's run input (templated, like a task's).
    With ``wait`` (the default) the step waits for the child and its output is
    ``{"workflow_id", "run_id", "state", "output"}``; a child that fails fails the step, and
    ``on_failure`` applies (``fail``, ``continue`` or a ``goto``). With ``wait: false`` the child
    is started detached (it outlives the parent) and the output is ``{"workflow_id", "run_id",
    "state": "started"}``. Cancelling the parent cancels a waited-for child: the child runs its own
    compensations, then the parent runs its own.
    """

    type: Literal["subflow"]
    definition: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]
    version: int | None = Field(default=None, ge=1)
    input: dict[str, TemplatedValue] = Field(default_factory=dict)
    wait: bool = True
    on_failure: OnSubflowFailure = "fail"


Step = Annotated[
    TaskStep
    | ConditionStep
    | SwitchStep
    | ParallelStep
    | ForeachStep
    | DelayStep
    | ApprovalStep
    | HumanTaskStep
    | SetStep
    | SucceedStep
    | FailStep
    | WaitForEventStep
    | SubflowStep,
    Field(discriminator="type"),
]

STEP_TYPES = (
    "task",
    "condition",
    "switch",
    "parallel",
    "foreach",
    "delay",
    "approval",
    "human_task",
    "set",
    "succeed",
    "fail",
    "wait_for_event",
    "subflow",
)


class TriggerType(StrEnum):
    """The legacy, informational ``trigger`` field's kinds (kept so stored definitions and recorded
    histories still parse; :data:`Definition.triggers` is what starts runs)."""

    MANUAL = "manual"
    EVENT = "event"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"


class Trigger(StrictModel):
    """Legacy: the informational trigger of early definitions. It starts nothing; ``wfa validate``
    refuses it in new definitions and names :class:`Definition`'s ``triggers`` instead."""

    type: TriggerType = TriggerType.MANUAL
    event: str | None = None
    schedule: str | None = None


TRIGGER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
TriggerId = Annotated[str, Field(pattern=TRIGGER_ID_PATTERN)]
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"


class OverlapPolicy(StrEnum):
    """What a schedule does when a fire comes while the previous run is still open (Temporal's
    ``ScheduleOverlapPolicy``)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    TERMINATE_OTHER = "terminate_other"
    ALLOW_ALL = "allow_all"


class ScheduleTrigger(StrictModel):
    """Start a run on a calendar (``cron``) or every ``every``, as a Temporal Schedule."""

    type: Literal["schedule"]
    id: TriggerId = "schedule"
    cron: str | None = None
    every: Duration | None = None
    timezone: str = "UTC"
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup_window: Duration = "1m"
    jitter: Duration | None = None
    input: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_spec(self) -> ScheduleTrigger:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule trigger needs exactly one of 'cron' and 'every'")
        return self


class WebhookSignature(StrEnum):
    """How an incoming webhook proves its sender."""

    STANDARD_WEBHOOKS = "standard_webhooks"  # webhook-id, webhook-timestamp, webhook-signature
    HMAC_SHA256 = "hmac_sha256"  # hex HMAC-SHA256 of the body in one header (GitHub-style)


class WebhookTrigger(StrictModel):
    """Start a run when a signed HTTP delivery reaches the gateway at
    ``/hooks/{tenant}/{definition}/{id}``; the body (inert data) is the run input."""

    type: Literal["webhook"]
    id: TriggerId = "webhook"
    signature: WebhookSignature = WebhookSignature.STANDARD_WEBHOOKS
    secret: Annotated[str, Field(pattern=SECRET_NAME_PATTERN)]
    header: str = "X-Signature-256"
    replay_window: Duration = "5m"


class EventTrigger(StrictModel):
    """Start a run when an event of this type is published for the tenant; the event's data is
    the run input."""

    type: Literal["event"]
    id: TriggerId = "event"
    event: EventType


class RowOperation(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class RowChangeTrigger(StrictModel):
    """Start one run per changed row of a PostgreSQL table (installed with ``wfa triggers
    install``); the change (operation, old and new row) is the run input."""

    type: Literal["row_change"]
    id: TriggerId = "row-change"
    connection: Annotated[str, Field(pattern=SECRET_NAME_PATTERN)]
    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")]
    operations: list[RowOperation] = Field(
        default_factory=lambda: [RowOperation.INSERT], min_length=1, max_length=3
    )


DefinitionTrigger = Annotated[
    ScheduleTrigger | WebhookTrigger | EventTrigger | RowChangeTrigger,
    Field(discriminator="type"),
]


class CancelOn(StrictModel):
    """Cancel the run (its compensations run) when an event of type ``event`` with the
    correlation key ``key`` (a template rendered when the run starts) is published while it runs."""

    event: EventType
    key: Annotated[Template, Field(min_length=1, max_length=1000)]


class Definition(StrictModel):
    """A workflow definition.

    Attributes:
        name: Stable name runs are grouped by (search attribute ``DefinitionName``).
        version: Version number (search attribute ``DefinitionVersion``).
        steps: The top-level sequence.
        output: Template for the run's output (defaults to the run's ``vars``).
        triggers: What starts runs of the active version (schedules, webhooks, events, row changes).
        input_schema: JSON Schema (draft 2020-12) of the run input; every start is checked.
    """

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]
    # At most what the DefinitionVersion search attribute (an Int) holds: a start refused it.
    version: int = Field(default=1, ge=1, le=2**63 - 1)
    description: str = ""
    LATER_FIELDS = frozenset({"triggers", "input_schema", "cancel_on"})

    trigger: Trigger = Trigger()  # legacy, informational; see ``triggers``
    triggers: list[DefinitionTrigger] = Field(default_factory=list, max_length=20)
    cancel_on: list[CancelOn] = Field(default_factory=list, max_length=10)
    # A JSON Schema (draft 2020-12) every run's input must satisfy, checked before a run starts
    # (:mod:`interpreter.input_schema`); the schema itself is checked by ``wfa validate``.
    input_schema: dict[str, Any] | None = Field(default=None, exclude_if=lambda value: value is None)
    defaults: Defaults = Defaults()
    limits: Limits = Limits()
    # Left out of a dump when unset, so the content hash of a definition without it stays the same.
    priority: int | None = Field(default=None, ge=1, le=5, exclude_if=lambda v: v is None)
    """Temporal priority of the runs and their steps: 1 (first) to 5 (last); unset is 3. Temporal
    dispatches by priority before it shares between tenants (the tenant is the fairness key), so 1
    and 2 apply only to the tenants the platform grants them (``WFA_PRIORITY_TENANTS``,
    :mod:`workflows.priority`); others run such a definition at 3."""
    steps: list[Step] = Field(min_length=1)
    output: TemplatedValue = None


def parse_definition(data: Mapping[str, Any] | str | bytes) -> Definition:
    """Parses a definition's structure from JSON text, or from a mapping decoded from JSON.

    A mapping is validated as the JSON it stands for, so strict mode accepts a string for an enum
    or a date there exactly as the JSON Schema does. The whole-tree checks are
    :func:`interpreter.validate.load_definition`'s.

    Raises:
        pydantic.ValidationError: On a structural problem.
        TypeError, ValueError: When the mapping holds a value JSON cannot represent.
    """
    text = data if isinstance(data, str | bytes) else json.dumps(data, allow_nan=False)
    # An author's: its templates and expressions are bounded in tokens together. (Not by a wrap
    # validator of the model: pydantic hands one the JSON parsed, and strict fields then refused
    # the dates JSON writes as strings, a business_hours' holidays.)
    with bounded_template_tokens(), template_token_budget():
        return Definition.model_validate_json(text)


_RECURSIVE: tuple[type[BaseModel], ...] = (
    Branch,
    TaskStep,
    ConditionStep,
    SwitchStep,
    SwitchCase,
    ParallelBranch,
    ForeachStep,
    Escalation,
    ApprovalStep,
    HumanTaskStep,
    Definition,
)
for _model in _RECURSIVE:
    _model.model_rebuild()


def children(step: Step) -> list[tuple[str, list[Step], str]]:
    """The nested step sequences of a step.

    Returns:
        ``(json_path_suffix, steps, boundary)`` triples; ``boundary`` is ``""`` when jumps may cross
        from the nested sequence to the enclosing one (condition branches), or the kind of
        boundary that they may not cross (``parallel``, ``foreach``, ``compensate``, ``escalation``).
    """
    out: list[tuple[str, list[Step], str]] = []
    if isinstance(step, TaskStep):
        if step.compensate:
            out.append((".compensate", step.compensate, "compensate"))
    elif isinstance(step, ConditionStep):
        if step.then.steps:
            out.append((".then.steps", step.then.steps, ""))
        if step.else_ is not None and step.else_.steps:
            out.append((".else.steps", step.else_.steps, ""))
    elif isinstance(step, SwitchStep):
        for i, case in enumerate(step.cases):
            if case.then.steps:
                out.append((f".cases[{i}].then.steps", case.then.steps, ""))
        if step.default is not None and step.default.steps:
            out.append((".default.steps", step.default.steps, ""))
    elif isinstance(step, ParallelStep):
        for i, branch in enumerate(step.branches):
            out.append((f".branches[{i}].steps", branch.steps, "parallel"))
    elif isinstance(step, ForeachStep):
        out.append((".steps", step.steps, "foreach"))
    elif isinstance(step, ApprovalStep):
        if step.escalation is not None and step.escalation.steps:
            out.append((".escalation.steps", step.escalation.steps, "escalation"))
        if step.compensate:
            out.append((".compensate", step.compensate, "compensate"))
    elif isinstance(step, HumanTaskStep):
        if step.escalation is not None and step.escalation.steps:
            out.append((".escalation.steps", step.escalation.steps, "escalation"))
    elif isinstance(step, DelayStep | SetStep | SucceedStep | FailStep | WaitForEventStep | SubflowStep):
        pass  # no nested steps
    else:
        assert_never(step)
    return out


def jump_targets(step: Step) -> list[tuple[str, str]]:
    """Every jump a step can make, as ``(json_path_suffix, target_id)``; nested steps excluded."""
    out: list[tuple[str, str]] = []
    if step.next is not None:
        out.append((".next", step.next))
    if isinstance(step, TaskStep):
        if isinstance(step.on_failure, Goto):
            out.append((".on_failure.goto", step.on_failure.goto))
        if isinstance(step.on_park_timeout, Goto):
            out.append((".on_park_timeout.goto", step.on_park_timeout.goto))
    elif isinstance(step, ConditionStep):
        if step.then.goto:
            out.append((".then.goto", step.then.goto))
        if step.else_ is not None and step.else_.goto:
            out.append((".else.goto", step.else_.goto))
    elif isinstance(step, SwitchStep):
        for i, case in enumerate(step.cases):
            if case.then.goto:
                out.append((f".cases[{i}].then.goto", case.then.goto))
        if step.default is not None and step.default.goto:
            out.append((".default.goto", step.default.goto))
    elif isinstance(step, ApprovalStep):
        if isinstance(step.on_timeout, Goto):
            out.append((".on_timeout.goto", step.on_timeout.goto))
        if isinstance(step.on_reject, Goto):
            out.append((".on_reject.goto", step.on_reject.goto))
    elif isinstance(step, WaitForEventStep):
        if isinstance(step.on_timeout, Goto):
            out.append((".on_timeout.goto", step.on_timeout.goto))
    elif isinstance(step, SubflowStep):
        if isinstance(step.on_failure, Goto):
            out.append((".on_failure.goto", step.on_failure.goto))
    elif isinstance(step, HumanTaskStep):
        if isinstance(step.on_timeout, Goto):
            out.append((".on_timeout.goto", step.on_timeout.goto))
    elif isinstance(step, ParallelStep | ForeachStep | DelayStep | SetStep | SucceedStep | FailStep):
        pass  # no jumps besides next
    else:
        assert_never(step)
    return out
