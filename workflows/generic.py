"""The one generic workflow: hosts the interpreter's engine on Temporal.

It is the only place that calls ``workflow.*``: steps become activities named after their action,
with the step's retry policy, timeouts and a summary naming the step; delays become durable timers;
approvals wait on signals or the ``decide`` update; the ``cancel`` signal, the ``cancel_run``
update and Temporal's own cancellation all cancel the engine, which runs the compensations.

Signals are read here, not by the SDK: a handler typed with a model makes the SDK drop a payload it
cannot convert (with only a worker log line) and fail the workflow task, again on every retry, on a
signal sent with no argument or with two. So ``approve``, ``reject`` and ``cancel`` take their
arguments untyped and validate them with the models themselves: a malformed message is recorded in
the status with the reason (``refused_messages``), as is a signal of an unknown name.

Decisions can be required to carry proof (``RunOptions.decision_proof``, or the worker's own
setting): the ``decide`` and ``cancel_run`` validators then verify a signed token with the keys
the worker holds (``workflows/decision_tokens.py``), and the signals, which cannot carry one, are
recorded as refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from interpreter.actions import ActionResult
    from interpreter.durations import parse_duration
    from interpreter.engine import (
        ActionCall,
        ActionFailedError,
        DeadLetterError,
        DecisionError,
        Engine,
        RunInfo,
        StoreFailedError,
    )
    from interpreter.state import (
        FINAL_STATES,
        CancelRequest,
        CancelRunRequest,
        CurrentStepTracking,
        DeadLetterDecision,
        DeadLetterRecord,
        DeadLetterResolution,
        Decision,
        DecisionKind,
        DecisionRecord,
        DecisionRequest,
        ParkedStep,
        RunInput,
        RunResult,
        RunState,
        RunStatus,
        clip,
        decision_size_problem,
    )
    from interpreter.validate import definition_hash
    from workflows import decision_tokens
    from workflows.search_attributes import (
        AWAITING_APPROVAL,
        CURRENT_STEP,
        DEFINITION_HASH,
        DEFINITION_NAME,
        DEFINITION_VERSION,
        RUN_STATE,
        TENANT,
    )
    from workflows.telemetry import RunTelemetry

WORKFLOW_NAME = "RunDefinition"
PATCH_TENANT_ATTRIBUTE = "tenant-attribute"
"""Patch id: a run started without search attributes also gets ``Tenant``."""
PATCH_CURRENT_STEP_ON_WAITS = "current-step-on-waits"
"""Patch id: CurrentStep is upserted where the run waits (RunOptions.current_step), not every step."""
PATCH_BOUNDED_DECISIONS = "bounded-decisions"
"""Patch id: a signalled decision whose actor, reason or data is too large is refused (recorded)."""
CANCEL_HANDOFF_S = 60.0
"""After ``cancel_run`` is accepted, how long the run waits for the caller's Temporal cancellation
request before it cancels itself."""
PROOF_REQUIRED = "proof required: use the decide/cancel_run update with a token"
"""Why a signalled decision or cancel is refused in a run that requires proof (signals cannot
carry a token: they would write it into history, where anyone reading it could replay it)."""
DEAD_LETTER_PARK = "dead_letter_park"
DEAD_LETTER_RESOLVE = "dead_letter_resolve"

# Recording a dead letter must not be lost to a database outage: retry until it is back (capped
# backoff); the run stays parked meanwhile and the pending activity shows the error in the Web UI.
_STORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


M = TypeVar("M", bound="BaseModel")


def _problems(err: ValidationError) -> str:
    """A validation error in one line: ``field: problem; ...`` (without the input values)."""
    errors = err.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'argument'}: {e['msg']}" for e in errors[:5]]
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _td(duration: str | None) -> timedelta | None:
    return parse_duration(duration) if duration else None


def _describe_failure(err: ActivityError, call: ActionCall) -> ActionFailedError:
    cause = err.cause
    attempts = call.retry.maximum_attempts if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED else 1
    if isinstance(cause, ApplicationError):
        for detail in cause.details:
            if isinstance(detail, dict) and isinstance(detail.get("attempt"), int):
                attempts = detail["attempt"]
        return ActionFailedError(cause.message, cause.type or "ApplicationError", attempts)
    if isinstance(cause, ActivityTimeoutError):
        kind = cause.type.name if cause.type is not None else "UNKNOWN"
        return ActionFailedError(f"activity timed out ({kind})", f"ActivityTimeout.{kind}", attempts)
    return ActionFailedError(str(cause or err), type(cause or err).__name__, attempts)


def _store_failure(err: ActivityError) -> BaseException:
    """What the engine understands of a failed store activity: a cancellation, or a run failure."""
    if isinstance(err.cause, CancelledError):
        return asyncio.CancelledError()
    cause = err.cause
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    error_type = (cause.type if isinstance(cause, ApplicationError) else None) or "DeadLetterStoreError"
    return StoreFailedError(f"recording the dead letter failed: {message}", error_type)


class _TemporalRuntime:
    """The engine's runtime on Temporal: deterministic time, activities, timers, conditions."""

    def __init__(
        self,
        on_change: Callable[[], None],
        on_wait_change: Callable[[], None],
        telemetry: RunTelemetry | None = None,
    ) -> None:
        self._on_change = on_change
        self._on_wait_change = on_wait_change
        self._telemetry = telemetry or RunTelemetry("?", 0, "?")

    def now(self) -> Any:
        return workflow.now()

    async def execute_action(self, call: ActionCall) -> ActionResult:
        retry = call.retry
        policy = RetryPolicy(
            initial_interval=parse_duration(retry.initial_interval),
            backoff_coefficient=retry.coefficient,
            maximum_interval=_td(retry.maximum_interval),
            maximum_attempts=retry.maximum_attempts,
            non_retryable_error_types=list(retry.non_retryable_error_types) or None,
        )
        # Metrics and the step's span leave the worker, not the workflow: no command, no patch.
        telemetry = self._telemetry
        started = workflow.now()
        failure: BaseException | None = None
        with telemetry.step_span(call.path, call.step_id, call.action) as span:
            try:
                result: ActionResult = await workflow.execute_activity(
                    call.action,
                    call.request,
                    result_type=ActionResult,
                    activity_id=call.activity_id,
                    summary=call.summary,
                    start_to_close_timeout=_td(call.timeouts.start_to_close),
                    schedule_to_close_timeout=_td(call.timeouts.schedule_to_close),
                    heartbeat_timeout=_td(call.timeouts.heartbeat),
                    retry_policy=policy,
                )
            except ActivityError as err:
                if isinstance(err.cause, CancelledError):
                    telemetry.step_ended(call.step_id, call.action, "cancelled", started, 1)
                    failure = asyncio.CancelledError()
                else:
                    described = _describe_failure(err, call)
                    telemetry.step_ended(call.step_id, call.action, "failed", started, described.attempts)
                    span.set_attribute("wfa.attempts", described.attempts)
                    span.set_attribute("wfa.error_type", described.error_type)
                    failure = described
            else:
                telemetry.step_ended(call.step_id, call.action, "completed", started, result.attempt)
                span.set_attribute("wfa.attempts", result.attempt)
        # Raised outside the span, which ends normally (a span ended by a non-Temporal exception
        # is dropped by the SDK's replay-safe tracer as a workflow task failure).
        if failure is not None:
            raise failure from None
        return result

    async def sleep(self, seconds: float, summary: str) -> None:
        await workflow.sleep(seconds, summary=summary)

    async def wait_condition(
        self, predicate: Callable[[], bool], timeout_s: float | None, summary: str
    ) -> bool:
        try:
            await workflow.wait_condition(predicate, timeout=timeout_s, timeout_summary=summary)
        except TimeoutError:
            return False
        return True

    def state_changed(self) -> None:
        self._on_change()

    def waiting_changed(self) -> None:
        self._on_wait_change()

    async def record_dead_letter(self, record: DeadLetterRecord) -> int:
        try:
            row_id: int = await workflow.execute_activity(
                DEAD_LETTER_PARK,
                record,
                result_type=int,
                activity_id=f"{record.park_id}/dead-letter",
                summary=f"{record.step_id}: record dead letter",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_STORE_RETRY,
            )
        except ActivityError as err:
            raise _store_failure(err) from None
        self._telemetry.dead_letter_parked(record.step_id)
        return row_id

    async def resolve_dead_letter(self, resolution: DeadLetterResolution) -> None:
        try:
            await workflow.execute_activity(
                DEAD_LETTER_RESOLVE,
                resolution,
                activity_id=f"dead-letter-{resolution.dead_letter_id}/{resolution.action.value}",
                summary=f"dead letter {resolution.dead_letter_id}: {resolution.action.value} by {resolution.actor}",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_STORE_RETRY,
            )
        except ActivityError as err:
            raise _store_failure(err) from None
        self._telemetry.dead_letter_resolved(resolution.action.value)

    def task_key(self) -> int:
        return workflow.info().get_current_history_length()

    def patched(self, patch_id: str) -> bool:
        # An update validator is read-only and runs only for a new update, never on replay: the
        # change applies there, with no marker to record (a refusal writes nothing to history).
        if workflow.unsafe.is_read_only():
            return True
        return workflow.patched(patch_id)


@workflow.defn(name=WORKFLOW_NAME)
class RunDefinitionWorkflow:
    """Runs one stored workflow definition (recorded in its input, so the run is pinned to it)."""

    @workflow.init
    def __init__(self, run: RunInput) -> None:
        info = workflow.info()
        self._telemetry = RunTelemetry(run.definition.name, run.definition.version, run.options.tenant)
        self._engine = Engine(
            run.definition,
            run.input,
            _TemporalRuntime(self._publish, self._publish_wait, self._telemetry),
            RunInfo(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                started_at=info.start_time,
                tenant=run.options.tenant,
            ),
        )
        self._track_step = run.options.track_current_step
        self._step_mode = run.options.current_step
        self._every_step: bool | None = None  # decided on first publish (a patch marker)
        self._published: dict[str, Any] = {}
        self._details = ""
        self._main: asyncio.Task[Any] | None = None
        self._self_cancelled: CancelRequest | None = None
        """Set when the run cancelled itself (the ``cancel`` signal, or no Temporal cancellation
        followed ``cancel_run``): it then closes as failed with type ``RunCancelled``."""
        self._cancel_update: CancelRequest | None = None
        self._handoff: asyncio.Task[None] | None = None
        self._tenant = run.options.tenant
        self._proof_required = run.options.decision_proof
        self._used_tokens: dict[str, None] = {}
        """The ``jti`` of every token an accepted update carried: a token proves one decision."""

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        """Executes the definition; fails the workflow when the run fails."""
        self._main = asyncio.current_task()
        self._ensure_identity(run)
        self._telemetry.run_started()
        if self._self_cancelled is not None and self._main is not None:
            self._main.cancel()
        result = await self._engine.run()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._telemetry.run_ended(result.state.value, workflow.info().start_time)
        if result.state == RunState.CANCELLED:
            if self._self_cancelled is None:
                # Temporal's own cancellation (also what follows ``cancel_run``): closes as Canceled.
                # A workflow cannot close as Canceled without a cancel request from the server (the
                # SDK fails it instead), nor request its own cancellation (the server answers
                # "not found"), so the run that cancelled itself closes as failed below.
                raise asyncio.CancelledError(result.error)
            raise ApplicationError(
                result.error or "cancelled",
                result.model_dump(mode="json"),
                type="RunCancelled",
                non_retryable=True,
            )
        if result.state == RunState.FAILED:
            raise ApplicationError(
                result.error or "failed",
                result.model_dump(mode="json"),
                type=result.error_type or "WorkflowFailed",
                non_retryable=True,
            )
        return result

    @workflow.signal(name="approve")
    def approve(self, *args: Any) -> None:
        """Approves the pending approval; the argument is a :class:`Decision`.

        A refused or malformed decision is recorded in the status (see the module docstring).
        """
        decision = self._read("approve", args, Decision)
        if decision is not None:
            self._signal(DecisionKind.APPROVE, decision)

    @workflow.signal(name="reject")
    def reject(self, *args: Any) -> None:
        """Rejects the pending approval; the argument is a :class:`Decision` (refusals recorded)."""
        decision = self._read("reject", args, Decision)
        if decision is not None:
            self._signal(DecisionKind.REJECT, decision)

    @workflow.signal(name="cancel")
    def cancel(self, *args: Any) -> None:
        """Cancels the run (argument: a :class:`CancelRequest`): compensations run, then the run
        ends as cancelled and closes as failed with type ``RunCancelled``. A cancel that comes
        too late (the run ended or is already cancelling) is recorded as refused."""
        request = self._read("cancel", args, CancelRequest)
        if request is None:
            return
        if self._proof_required:
            self._engine.refuse_message("cancel", request.actor, PROOF_REQUIRED)
            return
        if self._engine.state in FINAL_STATES:
            self._engine.refuse_message(
                "cancel", request.actor, f"the run has already ended ({self._engine.state})"
            )
            return
        earlier = self._self_cancelled or self._cancel_update
        if earlier is not None:
            self._engine.refuse_message(
                "cancel", request.actor, f"the run is already cancelling (requested by {earlier.actor!r})"
            )
            return
        self._cancel_self(request.clipped())

    @workflow.signal(dynamic=True)
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Records a signal this workflow does not know (a typo would otherwise wait unseen)."""
        self._engine.refuse_message(
            name, None, f"unknown signal {name!r}: this run accepts approve, reject and cancel"
        )

    @workflow.update(name="cancel_run")
    def cancel_run(self, request: CancelRunRequest) -> CancelRequest:
        """Validates and records a cancel request, answering the caller; refused before history
        when the run has ended or is already cancelling.

        The caller then requests Temporal's cancellation of the run (``FlowClient.cancel`` does),
        so the run closes as Canceled with who and why in its status. If no such request arrives
        within :data:`CANCEL_HANDOFF_S` seconds, the run cancels itself (closing as failed with type
        ``RunCancelled``, as with the ``cancel`` signal). Asking again while it waits is accepted.

        Returns:
            The recorded request (actor and reason clipped).
        """
        refusal = self._cancel_run_refusal()
        if refusal is not None:  # the state changed between validation and handling
            raise ApplicationError(refusal, type="CancelRefused", non_retryable=True)
        self._spend(request.token)
        if self._cancel_update is None:
            self._cancel_update = request.clipped()
            self._engine.cancel_request = self._cancel_update
            self._handoff = asyncio.create_task(self._await_temporal_cancel(self._cancel_update))
        return self._cancel_update

    @cancel_run.validator
    def _validate_cancel_run(self, request: CancelRunRequest) -> None:
        refusal = self._cancel_run_refusal()
        if refusal is not None:
            raise ApplicationError(refusal, type="CancelRefused", non_retryable=True)
        refusal = self._proof_refusal("cancel", request.actor, request.token, None)
        if refusal is not None:
            raise ApplicationError(refusal, type="CancelRefused", non_retryable=True)

    def _cancel_run_refusal(self) -> str | None:
        engine = self._engine
        if engine.state in FINAL_STATES:
            return f"the run has already ended ({engine.state})"
        if self._self_cancelled is not None:
            return f"the run is already cancelling (requested by {self._self_cancelled.actor!r})"
        if engine.error is not None:
            # Temporal's cancellation took effect, or the run is failing and compensating.
            return f"the run is already ending ({engine.error_type}: {engine.error})"
        return None

    async def _await_temporal_cancel(self, request: CancelRequest) -> None:
        try:
            await workflow.wait_condition(
                lambda: self._engine.error is not None or self._engine.state in FINAL_STATES,
                timeout=CANCEL_HANDOFF_S,
                timeout_summary=f"cancel requested by {request.actor}: awaiting Temporal's cancellation",
            )
        except TimeoutError:
            workflow.logger.warning("no Temporal cancellation followed cancel_run; cancelling the run itself")
            self._cancel_self(request)

    def _cancel_self(self, request: CancelRequest) -> None:
        self._self_cancelled = request
        self._engine.cancel_request = request
        if self._main is not None:
            self._main.cancel()

    @workflow.update(name="decide")
    def decide(self, request: DecisionRequest) -> DecisionRecord:
        """Approves or rejects, answering the caller; refused before history if not allowed."""
        try:
            self._engine.decide(request.decision, request)
        except DecisionError as err:  # the state changed between validation and handling
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        self._spend(request.token)
        return self._engine.decisions[-1]

    @decide.validator
    def _validate_decide(self, request: DecisionRequest) -> None:
        try:
            approval = self._engine.check_decision(request.decision, request)
        except DecisionError as err:
            raise ApplicationError(clip(str(err)), type="DecisionRefused", non_retryable=True) from None
        problem = decision_size_problem(request)
        if problem is not None:
            raise ApplicationError(
                f"decision too large: {problem}", type="DecisionRefused", non_retryable=True
            )
        steps = (approval.view.step_id, approval.view.path)
        refusal = self._proof_refusal(request.decision.value, request.actor, request.token, steps)
        if refusal is not None:
            raise ApplicationError(refusal, type="DecisionRefused", non_retryable=True)

    def _proof_refusal(
        self, decision: str, actor: str, token: str | None, steps: tuple[str, str] | None
    ) -> str | None:
        """Why the update's token does not prove it (None: proven, or no proof required).

        Called from update validators only: they run when an update is first handled, never on
        replay, so the keys the worker holds now and the check's outcome never reach the replay.
        The actor being a listed approver (the current list, escalations included) is the
        engine's check; here the token must name that actor.
        """
        verifier = decision_tokens.verifier()
        if not (self._proof_required or (verifier is not None and verifier.required)):
            return None
        if token is None:
            return f"proof required: this {decision} must carry a decision token"
        if verifier is None:
            return "proof required, but this worker holds no decision keys to check it"
        try:
            claims = verifier.verify(
                token,
                now=workflow.now(),
                tenant=self._tenant,
                run=workflow.info().workflow_id,
                decision=decision,
            )
            decision_tokens.check_target(claims, actor, steps, self._used_tokens)
        except decision_tokens.TokenRefusedError as err:
            return f"decision token refused: {clip(str(err))}"
        return None

    def _spend(self, token: str | None) -> None:
        """Records an accepted token's ``jti`` (deterministic: also on replay)."""
        jti = None if token is None else decision_tokens.unverified_jti(token)
        if jti is not None:
            self._used_tokens[jti] = None

    @workflow.update(name="resolve_dead_letter")
    def resolve_dead_letter(self, decision: DeadLetterDecision) -> ParkedStep:
        """Redrives, skips or aborts a parked step; refused before history if nothing is parked there."""
        try:
            return self._engine.resolve(decision)
        except DeadLetterError as err:  # the state changed between validation and handling
            raise ApplicationError(str(err), type="DeadLetterRefused", non_retryable=True) from None

    @resolve_dead_letter.validator
    def _validate_resolve_dead_letter(self, decision: DeadLetterDecision) -> None:
        try:
            self._engine.check_dead_letter(decision)
        except DeadLetterError as err:
            raise ApplicationError(str(err), type="DeadLetterRefused", non_retryable=True) from None

    @workflow.query
    def status(self) -> RunStatus:
        """The run's state, current steps, every step so far, pending approvals and variables."""
        return self._engine.status()

    def _acceptable(self, kind: DecisionKind, decision: Decision) -> bool:
        try:
            self._engine.check_decision(kind, decision)
        except DecisionError:
            return False
        return True

    def _read(self, name: str, args: tuple[Any, ...], model: type[M]) -> M | None:
        """The signal's one argument as ``model``, or None after recording why it is malformed."""
        if len(args) != 1:
            got = "none" if not args else str(len(args))
            self._engine.refuse_message(
                name, None, f"malformed {name} signal: it takes one argument (an object), got {got}"
            )
            return None
        payload = args[0]
        actor = payload.get("actor") if isinstance(payload, dict) else None
        try:
            return model.model_validate(payload)
        except ValidationError as err:
            self._engine.refuse_message(
                name, actor if isinstance(actor, str) else None, f"malformed {name} signal: {_problems(err)}"
            )
            return None

    def _signal(self, kind: DecisionKind, decision: Decision) -> None:
        if self._proof_required:
            self._engine.refuse_decision(kind, decision, PROOF_REQUIRED)
            return
        problem = decision_size_problem(decision)
        # The patch is asked only when it matters (a decision too large that would otherwise be
        # accepted), so its marker is recorded only then; runs recorded before the patch accepted
        # such a decision, and replay keeps that.
        if (
            problem is not None
            and self._acceptable(kind, decision)
            and workflow.patched(PATCH_BOUNDED_DECISIONS)
        ):
            self._engine.refuse_decision(kind, decision, f"decision too large: {problem}")
            return
        try:
            self._engine.decide(kind, decision)
        except DecisionError as err:
            workflow.logger.warning(
                "refused %s from %r: %s", kind.value, clip(decision.actor, 200), clip(str(err))
            )

    def _ensure_identity(self, run: RunInput) -> None:
        """Sets the definition search attributes when the starter did not (e.g. a raw client)."""
        attrs = workflow.info().typed_search_attributes
        if attrs.get(DEFINITION_NAME) is None:
            identity: list[SearchAttributeUpdate[Any]] = [
                DEFINITION_NAME.value_set(run.definition.name),
                DEFINITION_VERSION.value_set(run.definition.version),
                DEFINITION_HASH.value_set(definition_hash(run.definition)),
            ]
            if workflow.patched(PATCH_TENANT_ATTRIBUTE):
                identity.append(TENANT.value_set(run.options.tenant))
            workflow.upsert_search_attributes(identity)

    def _every_step_mode(self) -> bool:
        if self._every_step is None:
            # Runs recorded before the patch upserted CurrentStep on every step and every attribute
            # on first publish; replay keeps that.
            patched = workflow.patched(PATCH_CURRENT_STEP_ON_WAITS)
            self._every_step = not patched or self._step_mode == CurrentStepTracking.EVERY_STEP
            if patched:
                # What the starter set at start is already published: do not upsert it again.
                attrs = workflow.info().typed_search_attributes
                for name, key in (
                    ("state", RUN_STATE),
                    ("approval", AWAITING_APPROVAL),
                    ("step", CURRENT_STEP),
                ):
                    value = attrs.get(key)
                    if value is not None:
                        self._published.setdefault(name, value)
        return self._every_step

    def _publish_wait(self) -> None:
        """A durable wait began or ended: only CurrentStep in ``waits`` mode cares."""
        if self._track_step and workflow.in_workflow() and not self._every_step_mode():
            self._publish()

    def _publish(self) -> None:
        """Keeps search attributes and the Web UI's current details in step with the engine.

        Upserts only values that changed: each upsert is a history event.
        """
        if not workflow.in_workflow():
            return  # the worker is tearing the run down (eviction): nothing to publish
        engine = self._engine
        self._telemetry.waiting_for_approval(engine.awaiting_approval)
        every_step = self._every_step_mode()
        values: dict[str, Any] = {"state": engine.state.value, "approval": engine.awaiting_approval}
        if self._track_step:
            if not every_step:
                self._published.setdefault("step", "")  # no wait yet: nothing to publish
            values["step"] = next(iter(engine.active if every_step else engine.waiting), "")
        updates: list[SearchAttributeUpdate[Any]] = []
        for name, key in (("state", RUN_STATE), ("approval", AWAITING_APPROVAL), ("step", CURRENT_STEP)):
            if name in values and self._published.get(name) != values[name]:
                updates.append(key.value_set(values[name]))
                self._published[name] = values[name]
        if updates:
            workflow.upsert_search_attributes(updates)
        current = ", ".join(f"{path} ({label})" for path, label in engine.active.items()) or "-"
        details = f"**{engine.state.value}** — current: {current}"
        if details != self._details:
            self._details = details
            workflow.set_current_details(details)
