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

A ``wait_for_event`` step or a ``cancel_on`` subscribes the run to an event mailbox
(``workflows/mailbox.py``) through the ``event_subscribe`` activity; the mailbox hands it later
events with the ``event`` signal (read like the others, refusals recorded) and the run signals
``unsubscribe`` back when a wait ends.

Decisions can be required to carry proof (``RunOptions.decision_proof``, or the worker's own
setting): the ``decide`` and ``cancel_run`` validators then verify a signed token with the keys
the worker holds (``workflows/decision_tokens.py``), and the signals, which cannot carry one, are
recorded as refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import (
    Priority,
    RawValue,
    RetryPolicy,
    SearchAttributeUpdate,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    RetryState,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from interpreter.actions import ActionResult
    from interpreter.continuation import (
        Continuation,
        ContinuationVersionError,
        carried_ids,
        read_continuation,
    )
    from interpreter.durations import parse_duration
    from interpreter.engine import (
        PATCH_ABANDON_CLOSES_WAITS,
        PATCH_APPROVAL_TIMEOUT_SAGA,
        PATCH_BATCH_BOUNDS,
        PATCH_CANCEL_ON_FROM_CHAIN_START,
        PATCH_COMPENSATE_HERE_BUDGET,
        PATCH_COMPENSATE_IN_FLIGHT,
        PATCH_CONTINUE_AS_NEW,
        PATCH_CONTINUE_AS_NEW_ANY_PRESSED,
        PATCH_CONTINUE_AS_NEW_BRANCHES,
        PATCH_CONTINUE_AS_NEW_COMPENSATING,
        PATCH_CONTINUE_AS_NEW_EVENTS,
        PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES,
        PATCH_CONTINUE_AS_NEW_LANE_BRANCHES,
        PATCH_CONTINUE_AS_NEW_LANE_EVENTS,
        PATCH_CONTINUE_AS_NEW_LANE_NESTED,
        PATCH_CONTINUE_AS_NEW_LANE_PARKS,
        PATCH_CONTINUE_AS_NEW_LANE_PEOPLE,
        PATCH_CONTINUE_AS_NEW_PARALLEL,
        PATCH_CONTINUE_AS_NEW_TASKS,
        PATCH_CONTINUE_AS_NEW_WAITS,
        PATCH_DATA_TEXT,
        PATCH_DECISION_TEXT,
        PATCH_DECISIONS_KEPT,
        PATCH_DECLARED_FORM_FIELDS,
        PATCH_DRAIN_FIXES,
        PATCH_DROP_UNRESUMED,
        PATCH_EVENT_IDS_BY_ADDRESS,
        PATCH_FAN_OUT_HISTORY_GUARD,
        PATCH_FAN_OUT_TREE_BOUND,
        PATCH_FOREACH_CHILDREN,
        PATCH_HISTORY_GUARD,
        PATCH_LATE_EVENTS_REFUSED,
        PATCH_LINK_WAITS,
        PATCH_MAILBOX_IDS,
        PATCH_PARK_IDS_PAST_NINE,
        PATCH_PAYLOAD_BUDGETS,
        PATCH_REDRIVE_KEEPS_RECORDED,
        PATCH_RUN_WORK_BUDGET,
        PATCH_TASK_STEP_BUDGET,
        PATCH_TASK_WORK_BUDGET,
        PATCH_TEMPLATE_ARGUMENTS,
        PATCH_TEMPLATE_SIZES,
        PATCH_TEMPLATE_VALUES,
        PATCH_TEMPLATE_WORK,
        PATCH_VALUE_DEPTH,
        ActionCall,
        ActionFailedError,
        BatchCall,
        BatchFailedError,
        DeadLetterError,
        DecisionError,
        Engine,
        RunInfo,
        StoreFailedError,
        SubflowCall,
        SubflowFailedError,
    )
    from interpreter.events import (
        SUBSCRIBE_ACTIVITY,
        UNSUBSCRIBE_SIGNAL,
        Event,
        EventSubscription,
    )
    from interpreter.inert import seal
    from interpreter.model import Definition, SucceedStep
    from interpreter.pinning import matches_hash
    from interpreter.sizes import (
        ACTION_OUTPUT_BUDGET,
        JSON_ESCAPE_EXPANSION,
        json_size,
        json_written_size,
        temporal_id,
    )
    from interpreter.state import (
        COMPACT_RUN_INPUT_LEVEL,
        FINAL_STATES,
        MAX_TEXT_CHARS,
        PATCH_COMPACT_RUN_INPUT,
        UNSET_CURRENT_STEP_LEVEL,
        ApprovalsPage,
        ApprovalsQuery,
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
        ForeachBatch,
        ParkedStep,
        PendingApproval,
        ResultSteps,
        RunInput,
        RunOptions,
        RunResult,
        RunState,
        RunStatus,
        SubflowDefinition,
        SubflowInputCheck,
        SubflowLookup,
        clip,
        dead_letter_size_problem,
        decision_size_problem,
        decoding_problem,
        validation_problems,
    )
    from interpreter.templates import bounded_template_tokens, template_token_budget, template_tokens_watch
    from interpreter.validate import definition_hash
    from workflows import decision_tokens
    from workflows.priority import (
        DEFAULT_FAIRNESS_WEIGHT,
        DEFAULT_PRIORITY,
        EVERY_TENANT,
        NO_TENANT,
        PRIORITY_GRANTED_ACTIVITY,
        above_default,
        run_priority,
    )
    from workflows.search_attributes import (
        ASSIGNEES,
        AWAITING_APPROVAL,
        CURRENT_STEP,
        DEFINITION_HASH,
        DEFINITION_NAME,
        DEFINITION_VERSION,
        RUN_STATE,
        TENANT,
        start_attributes,
    )
    from workflows.telemetry import RunTelemetry

CONTINUE_AS_NEW_MAX_BYTES = 2 * 1024 * 1024
"""Largest input a run continues as new with inline: Temporal's payload limit (the SDK refuses a
larger one). Not less: a run that continued as new with an input under the limit must replay."""
RESULT_MAX_BYTES = CONTINUE_AS_NEW_MAX_BYTES
"""Largest result (or failure details) a run returns with its step records: the same limit."""
STORED_PAYLOAD_MAX_BYTES = 64 * 1024 * 1024
"""Largest payload the payload store takes (``starter.payload_store.MAX_BLOB_BYTES``): with the store
on, a result, a query's answer or a next run's input over it would fail its workflow task on every
retry (the store refusing it), as one over Temporal's limit does without the store."""
UNMEASURED_RECORDS = 1000
"""Step records a run may hold with the payload store and a state budget of at most half its cap
before its result and status answer are measured against the cap (:meth:`_TemporalRuntime.payload_limit`):
a thousand records, whatever their names, paths and errors, leave that half far from full."""
STORE_CODEC_MARGIN = 64 * 1024
"""Kept under :data:`STORED_PAYLOAD_MAX_BYTES` when a payload is measured before it is encoded: the
store checks the encoded bytes, which the encryption codec's framing makes slightly larger."""
INLINE_INPUT_MAX_BYTES = CONTINUE_AS_NEW_MAX_BYTES
"""Largest serialized input a run without the payload store gives a child run (a ``subflow``, a
fanned-out foreach's slice) or an activity (a ``task``): over it the step fails with
``PayloadTooLarge`` (:meth:`_TemporalRuntime._payload_problem`), where the SDK would refuse the
payload and fail the workflow task again and again, the run stuck running. Temporal's limit itself;
runs of generation 13 keep :data:`CODEC_FRAMING_MARGIN` under it."""
CODEC_FRAMING_MARGIN = 1024
"""Kept under Temporal's payload limit by what a run without the payload store sends inline (a
task's or child run's input, a next run's input, its result and status answer), measured before
the data converter's codec: the encryption codec's framing (nonce, tag, key id: 86 bytes with a
one-letter key id) made a payload within that of the limit in clear pass it encrypted, and the SDK
refused it on every retry of the workflow task (patch ``codec-framing-margin``, generation 13,
asked only for a payload in that margin: without the codec such a payload went through)."""
PAYLOAD_TOO_LARGE = "PayloadTooLarge"
"""Error type of a step whose child run's or activity's input is over :data:`INLINE_INPUT_MAX_BYTES`."""
WORKFLOW_NAME = "RunDefinition"
PATCH_TENANT_ATTRIBUTE = "tenant-attribute"
"""Patch id: a run started without search attributes also gets ``Tenant``."""
PATCH_CURRENT_STEP_ON_WAITS = "current-step-on-waits"
"""Patch id: CurrentStep is upserted where the run waits (RunOptions.current_step), not every step."""
PATCH_CURRENT_STEP_SHORT = "current-step-short"
"""Patch id: ``CurrentStep`` holds at most :data:`KEYWORD_MAX_CHARS` characters (cut, ending in
``…``): the PostgreSQL (and MySQL) visibility schemas keep a custom keyword in a 255-character
column, so a longer path (deep nesting) left the run's visibility row stale there, while the server
accepted it. Asked only for such a path."""
PATCH_PRIORITY_GRANTS = "priority-grants"
"""Patch id: a definition's priority above the default (1 or 2) applies only to the tenants the
platform grants it (``WFA_PRIORITY_TENANTS``), since Temporal dispatches by priority before it
shares between tenants; before, any definition's priority 1 went before every other tenant's work.
Asked only where it changes a priority."""
PATCH_CHILD_CANCEL_FAILS_STEP = "child-cancel-fails-step"
"""Patch id: a child run (a ``subflow``'s, a fanned-out foreach's slice) that ends cancelled while
its parent is not cancelling (someone cancelled the child itself) fails its step, as a terminated
child does (``Subflow.CancelledError``; the foreach's failure rules), instead of the parent ending as
cancelled, and closing as failed, with nobody having cancelled it. Only in runs started at its
generation (:data:`NEVER_ASKED_PATCHES`)."""
PATCH_RUN_OUTPUT_TOO_LARGE = "run-output-too-large"
"""Patch id: a completed run whose result, without its step records, would pass what a payload may
take (Temporal's 2 MiB less :data:`CODEC_FRAMING_MARGIN`; with the store, its cap) fails instead
(``RunOutputTooLarge``, its steps done and not compensated), its state published as failed.
Before, the SDK refused the closing command in every workflow task and the run stayed running with
no message (a definition alone can return a million control characters). Asked only for such a
result: one within the margin, or on a server whose blob limit is raised, closed before, and its
history replays as recorded (found by a review)."""
PATCH_PAYLOAD_TOO_LARGE = "payload-too-large"
"""Patch id: without the payload store, a child run's or an activity's input over 2 MiB fails its
step (``PayloadTooLarge``) before the SDK refuses it and fails the workflow task for ever. Asked
only for such an input (a server whose blob limit is raised may have taken one)."""
PATCH_CARRIED_CANCEL = "carried-cancel-requests-itself"
"""Patch id: a continued run that carries an accepted cancel request (a ``cancel_run`` update, a
``cancel`` signal or a ``cancel_on`` event accepted while the previous run switched) asks Temporal
to cancel it, as a ``cancel`` signal does (falling back to cancelling itself), before any step;
before, it counted on the caller following the chain with Temporal's cancellation and, if the
caller had gone, went on with the request recorded. Asked only by such a run."""
PATCH_STORE_INPUT_BUDGET = "store-input-budget"
"""Patch id: with the payload store, a child run's or a task's input larger than the run's state
budget fails its step (``PayloadTooLarge``); before, nothing bounded it, and an input a definition
amplified past what the store takes (a list of a 90 KB string repeated 770 times) failed the workflow
task on every retry, the run stuck, the worker holding it in memory each time (found by an
attacker's probe). Asked only for such an input (one under the store's own cap went through)."""
PATCH_CODEC_FRAMING_MARGIN = "codec-framing-margin"
"""Patch id: a payload within :data:`CODEC_FRAMING_MARGIN` under Temporal's limit (a task's or
child run's input, a next run's input, without the payload store) is refused as one over it: with
the encryption codec it was over it once encrypted, and its workflow task failed for ever."""
PATCH_HISTORY_GUARD_SENDS = "history-guard-sends"
"""Patch id: without the payload store, an activity's or child run's input that would bring the
run's history past :data:`HISTORY_SEND_CEILING` (counting what the workflow task sends already)
fails its step (``HistoryLimit``) instead of being sent; before, a fanned-out ``foreach`` whose body
reads the run's 1 MB input (every child gets it) or 60 steps at once each sending 1.9 MB passed the
history guard (checked as a step starts, and a fan-out is one step; the concurrent steps all start
in one task) until the server terminated the run at 50 MiB: no compensation, no message of ours
(found by an attacker's probe). Asked only for such a send."""
PATCH_CHILD_CANCEL_BY_ID = "child-cancel-by-id"
"""Patch id: a run cancelled while it waits for a child run (a waited-for subflow, a fan-out slice)
also asks Temporal to cancel the child by its workflow id, which reaches the run of the child's
chain that is open now; the SDK's own request names the child's first run, which is closed once
the child continued as new, so the request reached no run: the parent waited for the child to end
on its own (for ever at an approval), and a child that completed made the cancelled parent complete,
its compensations not run (found by an attacker's probe). Only in runs started at its generation
(:data:`NEVER_ASKED_PATCHES`): the wait runs in a task of its own."""
PATCH_CHILD_CANCEL_KEPT = "child-cancel-kept"
"""Patch id: a run cancelled while it waits for a child run stays cancelled when the child ends
otherwise (completes, or fails) before its cancellation reaches it: the step ends cancelled and the
run's cancellation goes on. Before, the wait returned the child's outcome and the cancellation was
lost with it: the run took its next steps (a failed child's ``on_failure: continue`` too) and
completed (found by an attacker's probe). Within :data:`PATCH_CHILD_CANCEL_BY_ID`'s wait, so only
in runs started at generation 16 or later; asked only in that race."""
PATCH_HISTORY_GUARD_RESULTS = "history-guard-results"
"""Patch id: a task's activity is sent only while the results of the activities in flight, each
counted at :data:`RESULT_ROOM` (the most an action may return), and its own fit under
:data:`HISTORY_SEND_CEILING` (with the payload store too: a result under its threshold stays in
the history); else it waits for those in flight to end, and with none in flight its step fails
(``HistoryLimit``). Before, the guard counted what steps send, not what
comes back (left open when :data:`PATCH_HISTORY_GUARD_SENDS` was added): two foreach steps of 100
items at once, each answered with 261 KB, put 54 MB in one run's history, past Temporal's 50 MiB
limit, where the server may terminate a run (measured on the dev server; now 48 MB, under the
ceiling with the run's continue-as-new input in the room above it). Asked only when a task would
wait or fail so."""
PATCH_HISTORY_GUARD_CHILDREN = "history-guard-children"
"""Patch id: the result of a child run the run waits for (a waited-for subflow, a fan-out slice)
is counted as a task's is (:data:`PATCH_HISTORY_GUARD_RESULTS`): without the payload store the
child may return at most the room its parent holds for it (:attr:`RunOptions.result_limit`: for a
slice an equal part of half the room left, for a subflow :data:`ACTION_OUTPUT_BUDGET`, as an
action); a larger output fails the child (``HistoryLimit``), and its failure is cut to fit (no
step records, its message shortened). Children hold at most half of the room the tasks leave. With the store
each is counted at :data:`RESULT_ROOM`. A child that does not fit waits for those in flight to
end; with none in flight its step fails (``HistoryLimit``). Before, children's results were not
counted: eight slices of a fan-out, each returning 500 KB, landed together and took the run past
the (lowered) ceiling, where at Temporal's own the server terminates the run, no compensation.
Only in runs started at its generation (:data:`NEVER_ASKED_PATCHES`): a child's input carries its
room. A detached subflow's result is not counted (its step does not wait for it; bounding it
would cost a detached child its output, or most of the 2,000 children a run may keep open)."""
PATCH_HISTORY_GUARD_SUBFLOWS = "history-guard-subflows"
"""Patch id: the definition a ``subflow`` step's resolving activity returns into the run's history
is counted as a task's result (:data:`RESULT_ROOM`, held while the activity runs; compensations
hold none): without the payload store the activity refuses a definition larger than an action's
output (``HistoryLimit``, naming its size; not a compensation's); with it a larger one goes by
reference. Before, eight subflows of a 450 KB definition at once landed their definitions together
past the (lowered) ceiling. Only in runs started at its generation (:data:`NEVER_ASKED_PATCHES`):
the activity's input carries the bound (``SubflowLookup.max_bytes``), which a worker of an earlier
build would refuse."""
PATCH_UNSET_CURRENT_STEP = "unset-current-step"
"""Patch id: a run starts without ``CurrentStep`` among its search attributes
(:func:`workflows.search_attributes.start_attributes`) and reads it as ``""`` (no step yet), as
runs that started with ``CurrentStep = ""`` did: the same upserts, about 45 bytes fewer in every
run's history. Only in runs started at it: its start attributes are written by the client before
any worker could ask."""
PATCH_SLICE_RESULTS_OUTPUT = "slice-results-output"
"""Patch id: a fan-out slice (a child run of a fanned-out ``foreach``) returns its output alone,
without its step records (as ``RunOptions.result_steps`` ``none`` would; a failed slice's error is
as before): its parent reads only the output, and each record carried its item's output a second
time, in the slice's completion and again in the parent's history, counted against the room the
parent holds for each child. The slice's own history and its ``status`` query (answered by a
worker) still show every step; the subflows it starts return what they did. Decided by
the slice when it completes (its result is not compared on replay), asked in slices of runs started
before its generation (a marker), so one recorded before replays as recorded."""
PATCH_SUBFLOW_INPUT_SCHEMA = "subflow-input-schema"
"""Patch id: a ``subflow`` step checks its child's input against the child definition's
``input_schema`` before the child starts, as every other start does (a recorded local activity,
:data:`SUBFLOW_INPUT_PROBLEMS`); an input it refuses fails the step (``InvalidRunInput``, each
problem with its path) and starts nothing; one that cannot be checked fails it with
``SubflowInputUnchecked``. A compensation's child is not checked (compensations always go). Before
it, the child started with any input. Asked in runs started before its generation (a marker where
a subflow's child declares a schema)."""
PATCH_CHILD_SEND_PACING = "child-send-pacing"
"""Patch id: a child run's input is paced (:data:`PATCH_TASK_SEND_PACING`) and counted by the
send guard (:data:`PATCH_HISTORY_GUARD_SENDS`) at its size as sent (one payload, measured for the
payload check anyway: the definition it carries, its options with a dry run's canned outputs, JSON
escapes), not an estimate of its items, context or input; and a compensation's child is not
refused by the send guard, as a compensation's task is not. Before, a fanned-out ``foreach`` of 60
slices at once of a 100 KB definition put 6 MB in one workflow task completion, past the server's
4 MiB gRPC limit: the server refused it and terminated the run (``GrpcMessageTooLarge``), no
compensation, no ``on_failure``; so did slices of a dry run's 300 KB of canned outputs, and of an
input of control characters (six bytes each as JSON, one in the estimate). Only in runs started at
its generation (:data:`NEVER_ASKED_PATCHES`): it also changes what the send guard counts."""
PATCH_TASK_INPUT_ESCAPES = "task-input-escapes"
"""Patch id: a task's activity input is paced (:data:`PATCH_TASK_SEND_PACING`) and counted by the
send guard with its strings as written, escapes and all (:func:`interpreter.sizes.json_written_size`),
not their length. Before, five tasks at once each sending 300,000 control characters (counted one
byte each, written six: ``\\u0001``) went out in one workflow task completion of 9 MB, past the
server's 4 MiB gRPC limit: the server terminated the run (``GrpcMessageTooLarge``), no compensation,
no ``on_failure``. Only in runs started at its generation (:data:`NEVER_ASKED_PATCHES`): it changes
when commands go out."""
PATCH_SLOT_SEND_PACING = "slot-send-pacing"
"""Patch id: an input that waited for a free slot (over :data:`MAX_PENDING_CHILDREN` open child runs,
or :data:`MAX_PENDING_ACTIVITIES` pending activities) is paced again (:data:`PATCH_TASK_SEND_PACING`)
in the workflow task that starts it. Before, it was paced only in the task where it began to wait,
so every input waiting when several slots freed in one workflow task went out together: four
waited-for subflows of 1.3 MB each, waiting behind four detached children that closed while the
worker was down, started in one completion of 5.2 MB, past the server's 4 MiB gRPC limit, and the
server terminated the run (``GrpcMessageTooLarge``), no compensation, no ``on_failure``. Only in
runs started at its generation (:data:`NEVER_ASKED_PATCHES`): it changes when commands go out."""
PATCH_TASK_SEND_PACING = "task-send-pacing"
"""Patch id: once the inputs of the activities and child runs a workflow task schedules add up to
:data:`TASK_SEND_BUDGET`, the next one waits for the next workflow task (a 1 ms timer ends this
one); before, a foreach of 12 items each sending a 0.9 MB input put 11 MB in one workflow task
completion, past the server's 4 MiB gRPC limit: the SDK failed the whole run
(``GrpcMessageTooLarge``), no compensation, no ``on_failure``. Asked only when a step would wait."""
PATCH_CANCEL_WHILE_ENDING = "cancel-signal-while-ending"
"""Patch id: a ``cancel`` signal that comes while the run is failing and compensating is refused
(recorded), as ``cancel_run`` and a ``cancel_on`` event are; before, it held the compensations
left for a Temporal cancellation that its compensations absorb, and the run never ended. Asked
only then."""
KEYWORD_MAX_CHARS = 255
"""The longest keyword search attribute value the SQL visibility stores keep (``VARCHAR(255)``)."""
PATCH_CANCEL_SIGNAL_CANCELED = "cancel-signal-canceled"
"""Patch id: the ``cancel`` signal asks Temporal to cancel the run (an activity), so it closes as
Canceled; before, it cancelled itself and closed as failed (``RunCancelled``)."""
PATCH_COMPENSATED_FAILS = "compensated-closes-failed"
"""Patch id: a compensated run closes as failed with type ``RunCompensated`` (its result in the
failure's details), not as a completed (green) execution."""
REQUEST_CANCEL_ACTIVITY = "request_cancel"
"""The activity through which the ``cancel`` signal asks Temporal to cancel the run."""
PATCH_BOUNDED_DECISIONS = "bounded-decisions"
"""Patch id: a signalled decision whose actor, reason or data is too large is refused (recorded)."""
PATCH_TEMPLATE_TOKENS = "template-tokens"
"""Patch id: a run whose definition's templates and expressions hold more tokens together than
:data:`interpreter.templates.MAX_DEFINITION_TEMPLATE_TOKENS` fails before its first step
(``InvalidRunInput``), none of them compiled; before, the worker compiled them all as it read the
run's input, in the run's first workflow task (1.5 MB of templates: 16 s, once for every such
definition, a thread of the worker's held; found by an attacker's probe). Asked only for such an
input, as the worker reads it."""
PATCH_STATE_BUDGET_MAX = "state-budget-max"
"""Patch id: a run whose options ask for a state budget over :data:`STATE_BUDGET_UNCHECKED` gets
at most the worker's maximum (``WFA_STATE_BUDGET_MAX``), read once by a local activity (a marker in
history, so replay keeps the value the run got whatever the replaying worker's setting)."""
STATE_BUDGET_MAX_ACTIVITY = "wfa.state_budget_max"
"""The local activity answering the worker's ``WFA_STATE_BUDGET_MAX`` (:mod:`starter.payload_store`)."""
END_TASK_ACTIVITY = "wfa.end_task"
"""The no-op local activity that ends a long run of steps' activation (``activities.run_control``)."""
STATE_BUDGET_UNCHECKED = 16 * 1024 * 1024
"""A state budget up to this (the store's default, ``starter.payload_store.DEFAULT_STATE_BUDGET``,
also the lowest maximum a worker can set) is never capped, so such runs need no local activity."""
PATCH_LEVELS: Mapping[str, int] = dict.fromkeys(
    (
        PATCH_TENANT_ATTRIBUTE,
        PATCH_CURRENT_STEP_ON_WAITS,
        PATCH_CANCEL_SIGNAL_CANCELED,
        PATCH_COMPENSATED_FAILS,
        PATCH_BOUNDED_DECISIONS,
        PATCH_STATE_BUDGET_MAX,
        PATCH_COMPENSATE_IN_FLIGHT,
        PATCH_PAYLOAD_BUDGETS,
        PATCH_TASK_WORK_BUDGET,
        PATCH_DECLARED_FORM_FIELDS,
        PATCH_FOREACH_CHILDREN,
        PATCH_CONTINUE_AS_NEW,
        PATCH_CONTINUE_AS_NEW_WAITS,
        PATCH_CONTINUE_AS_NEW_TASKS,
        PATCH_CONTINUE_AS_NEW_BRANCHES,
        PATCH_DROP_UNRESUMED,
        PATCH_CONTINUE_AS_NEW_EVENTS,
    ),
    1,
) | {
    PATCH_HISTORY_GUARD: 2,
    PATCH_CONTINUE_AS_NEW_PARALLEL: 3,
    PATCH_CONTINUE_AS_NEW_LANE_PEOPLE: 4,
    PATCH_DRAIN_FIXES: 4,
    PATCH_CONTINUE_AS_NEW_LANE_EVENTS: 5,
    PATCH_CONTINUE_AS_NEW_LANE_PARKS: 5,
    PATCH_ABANDON_CLOSES_WAITS: 5,
    PATCH_LATE_EVENTS_REFUSED: 5,
    PATCH_CONTINUE_AS_NEW_LANE_BRANCHES: 6,
    PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES: 6,
    PATCH_CONTINUE_AS_NEW_LANE_NESTED: 7,
    PATCH_PARK_IDS_PAST_NINE: 7,
    PATCH_TASK_STEP_BUDGET: 8,
    PATCH_VALUE_DEPTH: 8,
    PATCH_BATCH_BOUNDS: 9,
    PATCH_CURRENT_STEP_SHORT: 9,
    PATCH_PRIORITY_GRANTS: 10,
    PATCH_CONTINUE_AS_NEW_COMPENSATING: 11,
    PATCH_CHILD_CANCEL_FAILS_STEP: 11,
    PATCH_CANCEL_WHILE_ENDING: 11,
    PATCH_PAYLOAD_TOO_LARGE: 11,
    PATCH_CANCEL_ON_FROM_CHAIN_START: 11,
    PATCH_CARRIED_CANCEL: 12,
    PATCH_STORE_INPUT_BUDGET: 12,
    PATCH_TASK_SEND_PACING: 12,
    PATCH_COMPENSATE_HERE_BUDGET: 12,
    PATCH_CODEC_FRAMING_MARGIN: 13,
    PATCH_FAN_OUT_TREE_BOUND: 14,
    PATCH_HISTORY_GUARD_SENDS: 15,
    PATCH_CHILD_CANCEL_BY_ID: 16,
    PATCH_CHILD_CANCEL_KEPT: 17,
    PATCH_HISTORY_GUARD_RESULTS: 18,
    PATCH_CONTINUE_AS_NEW_ANY_PRESSED: 18,
    PATCH_HISTORY_GUARD_CHILDREN: 19,
    PATCH_HISTORY_GUARD_SUBFLOWS: 20,
    PATCH_CHILD_SEND_PACING: 20,
    PATCH_TASK_INPUT_ESCAPES: 21,
    PATCH_SLOT_SEND_PACING: 21,
    PATCH_TEMPLATE_VALUES: 21,
    PATCH_RUN_OUTPUT_TOO_LARGE: 21,
    PATCH_DECISIONS_KEPT: 22,
    PATCH_EVENT_IDS_BY_ADDRESS: 22,
    PATCH_MAILBOX_IDS: 23,
    PATCH_COMPACT_RUN_INPUT: COMPACT_RUN_INPUT_LEVEL,
    PATCH_SLICE_RESULTS_OUTPUT: 25,
    PATCH_UNSET_CURRENT_STEP: UNSET_CURRENT_STEP_LEVEL,
    PATCH_SUBFLOW_INPUT_SCHEMA: 27,
    PATCH_DATA_TEXT: 28,
    PATCH_APPROVAL_TIMEOUT_SAGA: 28,
    PATCH_REDRIVE_KEEPS_RECORDED: 29,
    PATCH_DECISION_TEXT: 30,
    PATCH_LINK_WAITS: 30,
    PATCH_TEMPLATE_SIZES: 30,
    PATCH_TEMPLATE_TOKENS: 31,
    PATCH_TEMPLATE_ARGUMENTS: 32,
    PATCH_TEMPLATE_WORK: 33,
    PATCH_FAN_OUT_HISTORY_GUARD: 34,
    PATCH_RUN_WORK_BUDGET: 35,
}
"""The interpreter generation (:attr:`RunOptions.engine_level`) each patch belongs to. A run started
at a level applies every patch of that level or below from its start, without ``workflow.patched``:
no marker, no ``TemporalChangeVersion`` upsert (two events, ~240 bytes of history per patch a run
meets). Runs at level 0 (every run started before the levels, and raw clients that do not name one)
ask ``workflow.patched`` as before, so their histories replay unchanged. A new patch gets level
:data:`ENGINE_LEVEL` + 1 here and ``ENGINE_LEVEL`` follows it: runs started at the earlier level
ask it (a marker where it applies), runs started at the new one do not."""
CARRIED_FORMAT_PATCHES = frozenset(
    {
        PATCH_CONTINUE_AS_NEW_LANE_EVENTS,
        PATCH_CONTINUE_AS_NEW_LANE_PARKS,
        PATCH_CONTINUE_AS_NEW_LANE_BRANCHES,
        PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES,
        PATCH_CONTINUE_AS_NEW_LANE_NESTED,
        PATCH_CONTINUE_AS_NEW_COMPENSATING,
    }
)
"""Patches that put into a continue-as-new snapshot what a build of an earlier generation cannot
read (a wait carried in a branch): they apply only to runs started at their generation or above,
never asked through ``workflow.patched``. A run started at an earlier generation (by a client that
older workers may still serve, during a rollout) keeps its branches as before whichever worker
runs it, so an older worker can always take its next run."""
NEVER_ASKED_PATCHES = CARRIED_FORMAT_PATCHES | {
    PATCH_CHILD_CANCEL_FAILS_STEP,
    PATCH_CHILD_CANCEL_BY_ID,
    PATCH_HISTORY_GUARD_CHILDREN,
    PATCH_HISTORY_GUARD_SUBFLOWS,
    PATCH_CHILD_SEND_PACING,
    PATCH_TASK_INPUT_ESCAPES,
    PATCH_SLOT_SEND_PACING,
    PATCH_EVENT_IDS_BY_ADDRESS,
    PATCH_MAILBOX_IDS,
    PATCH_COMPACT_RUN_INPUT,
    PATCH_UNSET_CURRENT_STEP,
    PATCH_DATA_TEXT,
    PATCH_APPROVAL_TIMEOUT_SAGA,
    PATCH_REDRIVE_KEEPS_RECORDED,
    PATCH_DECISION_TEXT,
    PATCH_LINK_WAITS,
}
"""Patches that apply only to runs started at their generation or above, never asked through
``workflow.patched``: those of :data:`CARRIED_FORMAT_PATCHES`, ``child-cancel-fails-step``,
which starts a child from a task of its own (the start command may go out later in its activation
than a recorded run's did), ``child-cancel-by-id``, which waits for a child in a task of its own
(its cancellation commands may go out in another order), and ``history-guard-children``, whose
child runs carry the room held for their results (a child of an earlier build would not bound its
result by it), ``history-guard-subflows``, whose resolving activity carries its bound, and
``child-send-pacing`` and ``task-input-escapes``, which change what the send guard counts,
``slot-send-pacing``, which changes when an input that waited for a slot goes out,
``event-ids-by-address``, which changes the form of the event ids a run carries, and
``mailbox-ids``, whose mailboxes publishers of an earlier build do not reach, and
``compact-run-input``, the shape of the inputs a run sends, ``unset-current-step``, the
search attributes a run starts with, ``data-text``, which changes by a byte per reference the
sizes of the inputs and data the send guard and the budgets count, ``approval-timeout-saga``,
which changes the compensations a failed run schedules, ``redrive-keeps-recorded``, which
changes by a byte per reference the size of a redriven step's input, ``decision-text``, which
changes so the size of a decided step's output, and ``link-waits``, which changes the size of the
links activity's input."""
ENGINE_LEVEL = max(PATCH_LEVELS.values())
"""This build's interpreter generation, the highest in :data:`PATCH_LEVELS`: a client of this build
starts runs at it (:attr:`RunOptions.engine_level`), and a new patch placed at the next level
raises it."""
CANCEL_HANDOFF_S = 60.0
"""After ``cancel_run`` is accepted, how long the run waits for the caller's Temporal cancellation
request before it cancels itself."""
PROOF_REQUIRED = "proof required: use the decide/cancel_run update with a token"
"""Why a signalled decision or cancel is refused in a run that requires proof (signals cannot
carry a token: they would write it into history, where anyone reading it could replay it)."""
DEAD_LETTER_PARK = "dead_letter_park"
DEAD_LETTER_RESOLVE = "dead_letter_resolve"
SUBFLOW_RESOLVE = "subflow_resolve"
TREE_RUNS = "wfa.tree_runs"
"""The local activity counting a run tree (``activities.subflows.tree_runs``; served by every worker)."""
SUBFLOW_INPUT_PROBLEMS = "wfa.subflow_input_problems"
"""The local activity checking a subflow's input (``activities.subflows.subflow_input_problems``)."""
INVALID_RUN_INPUT = "InvalidRunInput"
"""The error type of an input a definition's ``input_schema`` refuses: a run's own, or the one a
``subflow`` step gives its child."""
INPUT_UNCHECKED = "SubflowInputUnchecked"
"""The error type of a ``subflow`` step whose input could not be checked (the check failed or took
too long, or the worker lacks it): not a verdict on the input."""
MAX_RUNS_PER_TREE_ENV = "WFA_MAX_RUNS_PER_TREE"
USED_TOKENS_KIND = "used_decision_tokens"
"""Key of the spent decision tokens' ids in a continue-as-new snapshot (``Continuation.kinds``)."""

# Subscribing to a mailbox is one Update-With-Start: retried while the server is away, for at most
# ten minutes; then the waiting step fails (EventSubscribeFailed) instead of hanging unseen.
_SUBSCRIBE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
_SUBSCRIBE_DEADLINE = timedelta(minutes=10)

# Recording a dead letter must not be lost to a database outage: retry until it is back (capped
# backoff); the run stays parked meanwhile and the pending activity shows the error in the Web UI.
_STORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


M = TypeVar("M", bound="BaseModel")
_Built = TypeVar("_Built")


def _root_run_id() -> str:
    """The run id of this run's tree root (Temporal's ``RootRunId``; this run's own at the root)."""
    info = workflow.info()
    return info.root.run_id if info.root is not None else info.run_id


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


def _cancelling() -> bool:
    """Whether the task running this code is being cancelled (the run, or the branch that awaits a
    child): a child that ended cancelled then did so by this cancellation (the SDK cancels the
    child and waits for it, clearing only its own task's count)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _store_failure(err: ActivityError) -> BaseException:
    """What the engine understands of a failed store activity: a cancellation, or a run failure."""
    if isinstance(err.cause, CancelledError):
        return asyncio.CancelledError()
    cause = err.cause
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    error_type = (cause.type if isinstance(cause, ApplicationError) else None) or "DeadLetterStoreError"
    return StoreFailedError(f"recording the dead letter failed: {message}", error_type)


DRY_RUN_PAUSE_S = 0.001
"""The timer a dry run's task waits instead of its activity."""

DRY_RUN_ERROR_KEY = "$error"
"""A canned output ``{"$error": {"type": "...", "message": "..."}}`` makes the task fail, so a dry
run can exercise ``on_failure`` and compensations."""


def dry_run_result(call: ActionCall, canned: Mapping[str, Any]) -> ActionResult:
    """What a task returns in a dry run: its canned output (by step path, else step id), or a
    description of what it would have done. No activity runs, so nothing reaches any server, and
    secret references stay unresolved text.

    Raises:
        ActionFailedError: The canned output is a ``{"$error": {...}}`` failure.
    """
    for key in (call.path, call.step_id):
        if key in canned:
            output = canned[key]
            if isinstance(output, dict) and set(output) == {DRY_RUN_ERROR_KEY}:
                failure = output[DRY_RUN_ERROR_KEY] if isinstance(output[DRY_RUN_ERROR_KEY], dict) else {}
                raise ActionFailedError(
                    str(failure.get("message") or "canned failure (dry run)"),
                    str(failure.get("type") or "DryRunFailure"),
                    1,
                )
            return ActionResult(output=output, attempt=1)
    return ActionResult(
        output={
            "dry_run": True,
            "action": call.action,
            "step": call.path,
            "would_send": call.request.input,
            "idempotency_key": call.request.idempotency_key,
            "task_queue": call.task_queue,
        },
        attempt=1,
    )


def _batch_json_size(batch: ForeachBatch) -> int:
    """What a fan-out slice's input takes as JSON, about (its items and the context its body reads),
    counted up to :data:`TASK_SEND_BUDGET` without serializing it."""
    total = 0
    for part in (batch.items, batch.steps, batch.locals, batch.vars, batch.input, batch.run):
        total += json_size(part, TASK_SEND_BUDGET)
        if total > TASK_SEND_BUDGET:
            break
    return total


UPDATE_ARGUMENT_MAX = 1024 * 1024
"""Most bytes an update's argument may take as this worker writes it: the SDK writes an accepted
update's argument back in the workflow task's completion, and an argument near Temporal's 2 MiB
(a ``cancel_run`` reason, a ``resolve_dead_letter`` output from a raw client) failed the workflow
task at every attempt until the server aborted the update (found by an attacker's probe). The
validators refuse a larger one before history. The client API bounds a dead letter decision the
same way (:func:`~interpreter.state.dead_letter_size_problem`, 1 MiB as JSON), and a decision or
a cancel request far below it."""


def _argument_problem(argument: BaseModel) -> str | None:
    """Why an update's ``argument`` is refused for its size (:data:`UPDATE_ARGUMENT_MAX`), or None."""
    size = _payload_bytes(argument)
    if size <= UPDATE_ARGUMENT_MAX:
        return None
    return f"its argument is {size:,} bytes as written (at most {UPDATE_ARGUMENT_MAX:,})"


def _payload_bytes(value: Any) -> int:
    """The bytes ``value`` takes as one Temporal payload (this worker's converter), as the SDK and
    the server measure it against the payload limit."""
    return workflow.payload_converter().to_payloads([value])[0].ByteSize()


def _details(result: RunResult, shape: ResultSteps, *, limit: int | None) -> dict[str, Any]:
    """What a run that did not complete carries in its error's details: its result, with the step
    records whatever ``RunOptions.result_steps`` says (where one looks first), compacted unless
    ``full`` (the only shape before the option); without them when they would not fit in
    Temporal's payload limit (:func:`_fitted`)."""
    shaped = _fitted(result, ResultSteps.COMPACT if shape == ResultSteps.NONE else shape, limit=limit)
    details: dict[str, Any] = shaped.model_dump(mode="json")
    return details


def _clipped_error(
    error: str, room: int, why: str = "the run's parent holds little room for its result"
) -> str:
    """A failed run's message cut to fit in ``room``: the room a child run's parent holds for its
    result (:attr:`RunOptions.result_limit`), or Temporal's payload limit (:data:`RESULT_MAX_BYTES`,
    for any run: a ``fail`` step's message is rendered from data, and a failure over the limit
    failed the closing workflow task for ever). At most a 64th of it in characters, so that both
    copies a failure carries, JSON-escaped at the worst (twelve bytes for a character past the
    BMP), take at most 3/8 of it; ``why`` says why it was cut."""
    most = room // 64
    if len(error) <= most:
        return error
    return error[: most - 100] + f" … (cut: {why})"


def _closing_error(error: str) -> str:
    """A run's message as it closes with it (and its ``status`` shows it): cut to a 64th of
    Temporal's payload limit (:func:`_clipped_error`), saying how long it was."""
    return _clipped_error(error, RESULT_MAX_BYTES, f"{len(error):,} characters in all")


RUN_OUTPUT_TOO_LARGE = "RunOutputTooLarge"
"""The error type of a run whose output would take its result past what Temporal (or the payload
store) takes: the SDK refused the closing command, and the workflow task failed for ever."""


def _fitted(result: RunResult, shape: ResultSteps, *, limit: int | None) -> RunResult:
    """``result`` in ``shape``, or without its step records (the status query has them, while its
    answer fits in the limit too) when they would take it past Temporal's payload limit: the SDK would refuse it, and the workflow
    task would fail again and again (a valid definition can record that much: 100 branches of a
    200-item foreach; found by an attacker's probe). No result that fitted is changed. ``limit``:
    :meth:`_TemporalRuntime.payload_limit` (None: the run cannot reach it, nothing measured)."""
    return _fit(result, shape, limit=limit)[0]


def _fit(result: RunResult, shape: ResultSteps, *, limit: int | None) -> tuple[RunResult, int | None]:
    """:func:`_fitted`, and the size of what it returns when it measured it (None when not)."""
    shaped = result.shaped(shape)
    if limit is None or shape == ResultSteps.NONE or not result.steps:
        return shaped, None
    size = _payload_bytes(shaped)
    if size <= limit:
        return shaped, size
    workflow.logger.warning(
        "the run's result with its %d step records is %d bytes, more than a payload may take"
        " (%d): returned without them",
        len(result.steps),
        size,
        limit,
    )
    return result.shaped(ResultSteps.NONE), None


def _fitted_status(status: RunStatus, *, limit: int | None) -> RunStatus:
    """``status``, or with only its most recent step records when all of them would take the query's
    answer past Temporal's payload limit (the server refused the answer, and the query failed for
    as long as the run kept them); the others are counted in ``steps_dropped``, as a chain's
    earlier records are; with the payload store, past the store's cap. When even without any
    record it would pass the limit, the parts that hold values are left out first, then its lists
    cut (:func:`_without_values`). A query writes nothing to history: no patch."""
    if status.error is not None:
        error = _closing_error(status.error)
        if error is not status.error:
            status = status.model_copy(update={"error": error})
    if limit is None:
        return status
    size = _payload_bytes(status)
    if size <= limit:
        return status
    records = status.steps
    if records and _payload_bytes(_bare(status)) <= limit:
        return _fitted_records(status, size, limit)
    # The values alone pass the limit: they are left out first, the records kept as far as they fit.
    status = _without_values(status, limit)
    return _fitted_records(status, _payload_bytes(status), limit) if records else status


def _fitted_records(status: RunStatus, size: int, limit: int) -> RunStatus:
    """``status`` (of ``size`` bytes) with its most recent step records that fit in ``limit``."""
    if size <= limit:
        return status
    records = status.steps
    sizes = [len(record.model_dump_json()) + 1 for record in records]
    room = limit - (size - sum(sizes)) - 1024  # what the rest of the answer leaves
    keep, used = 0, 0
    while keep < len(records) and used + sizes[-1 - keep] <= room:
        used += sizes[-1 - keep]
        keep += 1
    while True:
        fitted = status.model_copy(
            update={
                "steps": records[len(records) - keep :] if keep else [],
                "steps_dropped": status.steps_dropped + len(records) - keep,
            }
        )
        if keep == 0 or _payload_bytes(fitted) <= limit:
            return fitted
        keep //= 2


def _without_values(status: RunStatus, limit: int) -> RunStatus:
    """``status``, while without its step records it would still pass ``limit``, without the parts
    that hold values (:func:`_leavable`) of 64 KiB or more, the largest first; then, if it still
    would, with its lists cut to the entries that fit (:func:`_cut_list`), the largest list first;
    then without the smaller values. The run's
    variables are counted by its state budget escapes left out, and 750,000 control characters took
    the answer past 2 MiB, the query failing for as long as the run kept them (found by an
    attacker's probe); a human task's title and description (256 KiB each as rendered), two parked
    steps' inputs, 494 tasks waiting at once, and every decision of a long loop did the same (a
    review). Named in ``left_out``; the records are fitted after (the inbox finds a run's steps in
    them)."""

    def fits(answer: RunStatus) -> bool:
        return _payload_bytes(_bare(answer)) <= limit

    def leave_out(answer: RunStatus, left: list[str], how: Callable[[RunStatus], RunStatus]) -> RunStatus:
        return how(answer).model_copy(update={"left_out": list(left)})

    left: list[str] = []
    parts = sorted(_leavable(status), key=lambda part: -part[1])
    # Small values go last, after the lists are cut (a review: 700 decisions took the answer past
    # the limit, and a first version left out a 35-byte output before cutting them).
    large = [(name, how) for name, size, how in parts if size >= _SMALL_PART]
    small = [(name, how) for name, size, how in parts if size < _SMALL_PART]
    for name, how in large:
        if fits(status):
            return status
        left.append(name)
        status = leave_out(status, left, how)
    lists = [(name, _payload_bytes(getattr(status, name))) for name in _STATUS_LISTS if getattr(status, name)]
    cuts = [
        (name, functools.partial(_cut_list, name=name, fits=fits))
        for name, _ in sorted(lists, key=lambda part: -part[1])
    ]
    for name, how in cuts + small:
        if fits(status):
            return status
        left.append(name)
        status = leave_out(status, left, how)
    return status


_SMALL_PART = 64 * 1024
"""A value part of a status answer under this is left out only after its lists are cut."""


_STATUS_LISTS = (
    "pending_approvals",
    "parked",
    "waiting_events",
    "current_steps",
    "decisions",
    "refused_messages",
)
"""The lists of a status answer :func:`_cut_list` may cut (its step records are fitted apart)."""


def _cut_list(status: RunStatus, name: str, fits: Callable[[RunStatus], bool]) -> RunStatus:
    """``status`` with as many entries of its list ``name`` as ``fits`` takes: the first ones, or
    for ``decisions`` and ``refused_messages`` the most recent, the others counted as dropped (the
    pending approvals not listed are counted too)."""
    entries: list[Any] = getattr(status, name)
    recent = name in ("decisions", "refused_messages")
    dropped = f"{name}_dropped" if recent or name == "pending_approvals" else None

    def kept(count: int) -> RunStatus:
        update: dict[str, Any] = {name: entries[len(entries) - count :] if recent else entries[:count]}
        if dropped is not None:
            update[dropped] = getattr(status, dropped) + len(entries) - count
        return status.model_copy(update=update)

    low, high = 0, len(entries)  # the most that fit is in [low, high]; none may fit either
    while low < high:
        middle = (low + high + 1) // 2
        if fits(kept(middle)):
            low = middle
        else:
            high = middle - 1
    return kept(low)


def _leavable(status: RunStatus) -> list[tuple[str, int, Callable[[RunStatus], RunStatus]]]:
    """The parts of ``status`` :func:`_without_values` may leave out: name, bytes, and how (in this
    order when they are as large): the variables, the output, the parked steps' inputs (their dead
    letter rows keep them), the pending approvals' and tasks' texts past
    :data:`~interpreter.state.MAX_TEXT_CHARS` (cut, saying how long they were), and their forms in
    full (``form``: the definition has them; ``fields`` keeps their names)."""
    parts: list[tuple[str, int, Callable[[RunStatus], RunStatus]]] = []
    if status.vars:
        parts.append(("vars", _payload_bytes(status.vars), lambda s: s.model_copy(update={"vars": {}})))
    if status.output is not None:
        parts.append(
            ("output", _payload_bytes(status.output), lambda s: s.model_copy(update={"output": None}))
        )
    inputs = [parked.input for parked in status.parked if parked.input]
    if inputs:
        parts.append(
            ("parked.input", _payload_bytes(inputs), functools.partial(_emptied, "parked", "input", {}))
        )
    for field in ("message", "description"):
        texts = [
            getattr(a, field) for a in status.pending_approvals if len(getattr(a, field)) > MAX_TEXT_CHARS
        ]
        if texts:
            parts.append(
                (f"pending_approvals.{field}", _payload_bytes(texts), functools.partial(_cut_texts, field))
            )
    forms = [a.form for a in status.pending_approvals if a.form]
    if forms:
        parts.append(
            (
                "pending_approvals.form",
                _payload_bytes(forms),
                functools.partial(_emptied, "pending_approvals", "form", []),
            )
        )
    return parts


def _approvals_page(
    approvals: list[PendingApproval], ask: ApprovalsQuery, *, limit: int | None
) -> ApprovalsPage:
    """The answer of the ``pending_approvals`` query: ``approvals`` in the order of ``(since, path)``
    after ``ask``'s cursor (or the one at ``ask.path``), brief if asked, as many as fit in ``limit``
    (None: all), at least one; one that alone would not fit has its texts cut, then its form, then
    its approvers (named in ``left_out``). The ``status`` answer cuts the list when a run has
    hundreds of tasks waiting, or their forms; the inbox reads the cut ones here (before, it showed
    such a step as decided, or its form as empty: a review)."""
    ordered = sorted(approvals, key=lambda a: (a.since, a.path))
    if ask.path is not None:
        chosen = [a for a in ordered if a.path == ask.path]
    elif ask.after_since is not None and ask.after_path is not None:
        after = (ask.after_since, ask.after_path)
        chosen = [a for a in ordered if (a.since, a.path) > after]
    else:
        chosen = ordered
    if ask.brief:
        chosen = [
            a.model_copy(update={"message": clip(a.message), "description": clip(a.description), "form": []})
            for a in chosen
        ]
    page = ApprovalsPage(approvals=[], total=len(approvals), more=True)
    if limit is None or not chosen:
        return page.model_copy(update={"approvals": chosen, "more": False})
    room = limit - _payload_bytes(page) - 1024  # what the page's own fields leave
    left: list[str] = []
    kept: list[PendingApproval] = []
    used = 0
    for approval in chosen:
        entry, size = approval, _payload_bytes(approval) + 1
        if kept and used + size > room:
            break
        if size > room:  # alone it does not fit: its texts cut, then its form, then its approvers
            entry, left = _fitted_approval(approval, room)
            size = _payload_bytes(entry) + 1
        kept.append(entry)
        used += size
    return page.model_copy(update={"approvals": kept, "more": len(kept) < len(chosen), "left_out": left})


def _fitted_approval(approval: PendingApproval, room: int) -> tuple[PendingApproval, list[str]]:
    """``approval`` within ``room`` bytes: its message and description cut to
    :data:`MAX_TEXT_CHARS`, then without its form, then with its first 50 approvers only (a
    review: a definition's approvers are bounded by its size alone, up to the payload store's cap);
    and what was left out."""
    left: list[str] = []
    for field in ("message", "description"):
        if _payload_bytes(approval) + 1 <= room:
            break
        if len(getattr(approval, field)) > MAX_TEXT_CHARS:
            approval = approval.model_copy(update={field: clip(getattr(approval, field))})
            left.append(field)
    if _payload_bytes(approval) + 1 > room and approval.form:
        approval = approval.model_copy(update={"form": []})
        left.append("form")
    if _payload_bytes(approval) + 1 > room and len(approval.approvers) > 50:
        approval = approval.model_copy(update={"approvers": approval.approvers[:50]})
        left.append("approvers")
    return approval, left


def _emptied(entries: str, field: str, empty: Any, status: RunStatus) -> RunStatus:
    """``status`` with ``field`` of each entry of its list ``entries`` set to ``empty``."""
    emptied = [entry.model_copy(update={field: empty}) for entry in getattr(status, entries)]
    return status.model_copy(update={entries: emptied})


def _cut_texts(field: str, status: RunStatus) -> RunStatus:
    """``status`` with its pending approvals' ``field`` (``message`` or ``description``) cut."""
    pending = [a.model_copy(update={field: clip(getattr(a, field))}) for a in status.pending_approvals]
    return status.model_copy(update={"pending_approvals": pending})


def _bare(status: RunStatus) -> RunStatus:
    """``status`` as :func:`_fitted_records` returns it when it keeps no step record."""
    if not status.steps:
        return status
    return status.model_copy(update={"steps": [], "steps_dropped": status.steps_dropped + len(status.steps)})


MAX_PENDING_ACTIVITIES = 2000
"""Most step calls a run has as activities scheduled and not finished at once: Temporal's default
``limit.numPendingActivities.error``. A valid definition can ask for more (25 branches, each a
``foreach`` of concurrency 100): the server then refuses the workflow task's commands, and the task
fails again and again. The calls over it wait their turn, in the order they came. At the server's
limit, no run that completed before this ever waited, so their histories replay unchanged; a
cluster configured with a lower limit needs a build with this lowered."""

MAX_PENDING_CHILDREN = 2000
"""Most child runs (``subflow`` children, fan-out slices) a run has started and not seen close at
once: Temporal's default ``limit.numPendingChildExecutions.error``. A valid definition can ask for
more (a foreach of detached subflows whose children wait for people, 100 branches each fanning out
100 slices): the server then refuses the workflow task's commands, and the task fails again and
again, the run stuck (found by an attacker's probe). A child the run waits for waits its turn over
it; a detached one, which may stay open for days, fails its step (``SubflowLimitExceeded``) instead
of holding the run. At the server's limit no run that completed before this ever waited, so their
histories replay unchanged; a cluster configured with a lower limit needs a build with this
lowered."""
SUBFLOW_LIMIT_EXCEEDED = "SubflowLimitExceeded"
HISTORY_LIMIT = "HistoryLimit"
"""The error type of a step or run stopped near Temporal's history limit (as the engine's guard)."""
HISTORY_SEND_CEILING = 46 * 1024 * 1024
"""Bytes of history past which the run sends no activity or child run input inline
(:data:`PATCH_HISTORY_GUARD_SENDS`): 4 MiB under Temporal's 50 MiB, for the events and results of
what is in flight and the compensations (steps stop starting at 40 MiB,
``interpreter.engine.HISTORY_GUARD_BYTES``, so sends between the two are compensations' and those
of steps that started before it)."""
RESULT_FIELDS_ROOM = 16 * 1024
"""What a task's result holds beside the action's output (its wrapper, attempt, metadata)."""
RESULT_ROOM = ACTION_OUTPUT_BUDGET + RESULT_FIELDS_ROOM
"""History a task's result may take when it lands (:data:`PATCH_HISTORY_GUARD_RESULTS`): the most an
action may return as written (``activities.base`` bounds it), and the result's own fields."""
FOREIGN_RESULT_ROOM = CONTINUE_AS_NEW_MAX_BYTES + RESULT_FIELDS_ROOM
"""The same for a task on another task queue (a team's own workers, which may not bound their
actions' outputs): the most Temporal takes in one payload."""
CHILD_RESULT_MAX = RESULT_MAX_BYTES - CODEC_FRAMING_MARGIN
"""The most room a child run's result gets without the payload store (:data:`PATCH_HISTORY_GUARD_CHILDREN`):
what a run may return anyway (``_TemporalRuntime.payload_limit``)."""
CHILD_RESULT_FLOOR = 64 * 1024
"""The least: a child whose share of the room left is smaller waits for room (or its step fails)."""
TASK_SEND_BUDGET = 1536 * 1024
"""Most bytes of activity and child run inputs one workflow task sends before the next input waits
for the next workflow task (:data:`PATCH_TASK_SEND_PACING`): the server takes a completion of at
most 4 MiB (its gRPC limit); a larger input (up to 2 MiB) goes alone, first in its task. A task's input is counted as
``json_written_size`` (:data:`PATCH_TASK_INPUT_ESCAPES`; ``json_size``, escapes not counted, in runs
of an earlier generation), a child run's at its size as sent (:data:`PATCH_CHILD_SEND_PACING`); an
input stored by reference is counted whole: the safe side."""


SEARCH_ATTRIBUTE_MAX_BYTES = 2048
"""Largest value Temporal takes for a search attribute (its default ``limit.searchAttributeSizeLimit``
per value, the JSON of a keyword list's whole list): a larger upsert makes the server terminate
the run, with no message of ours and no compensation."""


def _fitting_keywords(values: list[str]) -> list[str]:
    """``values`` (sorted) as far as their JSON list fits in :data:`SEARCH_ATTRIBUTE_MAX_BYTES`: the
    values after the first that does not fit are left out (an approver's name thousands of
    characters long; found by an attacker's probe), with a warning. A list that fits is unchanged."""
    kept: list[str] = []
    size = 2  # the brackets
    for value in values:
        size += len(json.dumps(value)) + (1 if kept else 0)  # (escaped as the SDK sends it)
        if size > SEARCH_ATTRIBUTE_MAX_BYTES:
            workflow.logger.warning(
                "WfaAssignees: %d of %d values left out (over Temporal's %d bytes for a search attribute)",
                len(values) - len(kept),
                len(values),
                SEARCH_ATTRIBUTE_MAX_BYTES,
            )
            break
        kept.append(value)
    return kept


def _fitting_keyword(value: str, max_chars: int | None = None) -> str:
    """``value`` as far as it fits in :data:`SEARCH_ATTRIBUTE_MAX_BYTES` (as the SDK sends it,
    JSON-escaped) and in ``max_chars`` characters, ending in ``…`` when cut. A value that fits is
    unchanged. ``CurrentStep`` holds a step's path, which deep nesting (or a raw client's forged
    slice) can make longer than Temporal allows: its upsert then failed the workflow task and the
    server terminated the run (:data:`PATCH_CURRENT_STEP_SHORT` for ``max_chars``)."""
    if len(json.dumps(value)) <= SEARCH_ATTRIBUTE_MAX_BYTES and (
        max_chars is None or len(value) <= max_chars
    ):
        return value
    # The longest prefix that fits with the mark: at least low, below high.
    low, high = 0, len(value) if max_chars is None else min(len(value), max_chars)
    while high - low > 1:
        middle = (low + high) // 2
        if len(json.dumps(value[:middle] + "…")) <= SEARCH_ATTRIBUTE_MAX_BYTES:
            low = middle
        else:
            high = middle
    return value[:low] + "…"


class _NoRoomError(Exception):
    """No room in the run's history for a child run's result, with nothing in flight (the message
    says so): its step fails (``HistoryLimit``)."""


class _TemporalRuntime:
    """The engine's runtime on Temporal: deterministic time, activities, timers, conditions."""

    def __init__(
        self,
        on_change: Callable[[], None],
        on_wait_change: Callable[[], None],
        priority: int | None = None,
        options: RunOptions | None = None,
        telemetry: RunTelemetry | None = None,
    ) -> None:
        self._on_change = on_change
        self._on_wait_change = on_wait_change
        self._dry_run = options is not None and options.dry_run
        self._canned: dict[str, Any] = dict(options.canned_outputs) if options is not None else {}
        self._subscriptions: dict[str, int] = {}
        self._options = options or RunOptions()
        self._declared_priority = priority
        self._run_priority: Priority | None = None
        self._tenant_granted: bool | None = None
        self._telemetry = telemetry or RunTelemetry("?", 0, "?")
        self._activity_slots = asyncio.Semaphore(MAX_PENDING_ACTIVITIES)
        self._child_slots = asyncio.Semaphore(MAX_PENDING_CHILDREN)
        self._results_held = 0  # tasks in flight whose result room is held (PATCH_HISTORY_GUARD_RESULTS)
        self._results_room = 0  # the room they hold, in bytes
        self._landed_key = -1  # the workflow task in which results landed (their room still counted)
        self._landed_room = 0
        self._children_room = 0  # the part of _results_room that child runs hold
        self._definition_size: tuple[Definition, int] | None = None  # (PATCH_CHILD_SEND_PACING)
        self._send_key = -1  # the workflow task (its history length) the inputs are counted in
        self._sent = 0
        self._send_pause: asyncio.Task[None] | None = None
        self.input_budget: int | None = None if options is None else options.state_budget
        """With the payload store: the most a child run's or a task's input may take (the run's
        state budget as the worker capped it); None without the store (Temporal's 2 MiB then)."""
        self._detached: set[asyncio.Task[None]] = set()
        self._cancels_asked: set[asyncio.Task[None]] = set()

    @property
    def priority(self) -> Priority:
        """The priority of what this run schedules: its definition's, as the platform grants it
        (:meth:`decide_priority`; until then, and if never decided, as granted to nobody)."""
        if self._run_priority is None:
            return self._ungranted(self._declared_priority)
        return self._run_priority

    async def decide_priority(self) -> None:
        """Decides the priority of what the run schedules (at its start)."""
        self._run_priority = await self.granted_priority(self._declared_priority)

    def _asked(self, priority: int | None) -> int | None:
        """What a command with ``priority`` asks for: itself, or when unset (None), the run's own
        priority, which Temporal gives an activity or child that names none."""
        if priority is not None:
            return priority
        return workflow.info().priority.priority_key or None

    @staticmethod
    def _weighted() -> bool:
        """Whether the run itself carries a fairness weight (only a raw client sets one), which an
        activity or child that names none would inherit: a weight of 1,000 takes a tenant's tasks
        ahead of everyone else's as surely as priority 1."""
        return workflow.info().priority.fairness_weight not in (None, DEFAULT_FAIRNESS_WEIGHT)

    def _ungranted(self, priority: int | None) -> Priority:
        """The priority for ``priority`` in a tenant granted nothing above the default: an explicit
        default where the command would ask for more (declared, or inherited from a run a raw client
        started at 1 or 2), and the default weight where it would inherit the run's."""
        if above_default(self._asked(priority)):
            priority = DEFAULT_PRIORITY
        return self._unweighted(run_priority(self._options.tenant, priority, grants=NO_TENANT))

    def _unweighted(self, priority: Priority) -> Priority:
        """``priority`` with the default fairness weight named where it would inherit the run's."""
        if self._weighted():
            return dataclasses.replace(priority, fairness_weight=DEFAULT_FAIRNESS_WEIGHT)
        return priority

    async def granted_priority(self, priority: int | None) -> Priority:
        """The priority for a definition declaring ``priority`` (None: none), in this run's tenant:
        above the default, declared or inherited from the run's own, only if the worker grants the
        tenant it (:mod:`workflows.priority`; the local activity that answers is asked once per run
        and remembered, only for such a priority). A run that scheduled with the priority it asked
        before that change goes on with it (until it continues as new)."""
        tenant = self._options.tenant
        above = above_default(self._asked(priority))
        if not (above or self._weighted()) or not self.patched(PATCH_PRIORITY_GRANTS):
            return run_priority(tenant, priority, grants=EVERY_TENANT)
        if above and await self._granted(tenant):
            return self._unweighted(run_priority(tenant, priority, grants=EVERY_TENANT))
        return self._ungranted(priority)

    async def _granted(self, tenant: str) -> bool:
        """The worker's answer for this run's tenant, asked the first time it is needed."""
        if self._tenant_granted is None:
            self._tenant_granted = await self._ask_grant(tenant)
        return self._tenant_granted

    @staticmethod
    async def _ask_grant(tenant: str) -> bool:
        """The worker's answer (a recorded local activity): is ``tenant`` granted priorities above
        the default? No answer (a worker without the activity, a failure) grants nothing."""
        try:
            granted: bool = await workflow.execute_local_activity(
                PRIORITY_GRANTED_ACTIVITY,
                tenant,
                result_type=bool,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"is tenant {tenant!r} granted a priority above the default",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError() from None
            workflow.logger.warning("could not read the worker's priority grants: %s; granting nothing", err)
            return False
        except ValueError:  # a worker not built by build_worker lacks it
            workflow.logger.warning(
                "this worker has no %s activity; granting nothing", PRIORITY_GRANTED_ACTIVITY
            )
            return False
        return bool(granted)

    def now(self) -> Any:
        return workflow.now()

    async def _execute_activity(self, call: ActionCall, policy: RetryPolicy) -> ActionResult:
        result: ActionResult = await workflow.execute_activity(
            call.action,
            call.request,
            result_type=ActionResult,
            activity_id=temporal_id(call.activity_id),
            summary=call.summary,
            start_to_close_timeout=_td(call.timeouts.start_to_close),
            schedule_to_close_timeout=_td(call.timeouts.schedule_to_close),
            heartbeat_timeout=_td(call.timeouts.heartbeat),
            retry_policy=policy,
            # Unset (None) is the run's own queue: the command is the same as before.
            task_queue=call.task_queue,
            priority=self.priority,
        )
        return result

    async def execute_action(self, call: ActionCall) -> ActionResult:
        if self._dry_run:
            # A short timer per task ends the workflow task, as an activity would: a long dry run
            # (loops, large foreach) does not run all of its templates in one workflow task, where
            # the deadlock detector or the template work budget would stop it.
            await workflow.sleep(DRY_RUN_PAUSE_S, summary=f"dry run: {call.summary}")
            return dry_run_result(call, self._canned)
        if call.timeouts.start_to_close is None and call.timeouts.schedule_to_close is None:
            # The registry refuses such a definition; one started by a raw client (its checks
            # skipped) fails here as a step, where the SDK's refusal to schedule the activity
            # would fail the workflow task for ever. No command was ever sent for it: no patch.
            raise ActionFailedError(
                f"step {call.path!r} has no start_to_close or schedule_to_close timeout (set one on"
                " the step or in defaults.timeouts): Temporal runs no activity without one",
                "MissingTimeout",
                0,
            )
        # One walk of the input serves both. Paced first: a large input measured (serialized) below
        # waits for a workflow task of its own.
        bound = max(TASK_SEND_BUDGET, self._input_count_bound())
        if patch_applies(self._options, PATCH_TASK_INPUT_ESCAPES):
            # (Escaped as far as the pacing needs: an input past its budget goes alone anyway.)
            counted = json_written_size(call.request.input, bound, escaped_up_to=TASK_SEND_BUDGET)
        else:
            counted = json_size(call.request.input, bound)
        room = RESULT_ROOM if call.task_queue is None else FOREIGN_RESULT_ROOM
        held = await self._hold_result_room(call, counted, room)
        try:
            return await self._send_action(call, counted)
        finally:
            if held:
                self._release_room(room)

    def _release_room(self, room: int, *, child: bool = False) -> None:
        """Gives back the room a task's or child run's result held: it has landed (or never will)."""
        self._results_held -= 1
        self._results_room -= room
        if child:
            self._children_room -= room
        # Counted until the next workflow task: the history size this one started with may not
        # count the results delivered with it (measured: 524 KB short at 46 MB).
        key = self.task_key()
        if key != self._landed_key:
            self._landed_key, self._landed_room = key, 0
        self._landed_room += room

    def _history_used(self, counted: int, *, landed: bool = True) -> int:
        """The run's history as the guard counts it, with an input of ``counted`` bytes about to
        be sent and the results that landed in this workflow task, without the room held for those
        in flight. With the payload store what is sent is not counted (as by
        :meth:`_history_room_problem`): a large input goes by reference."""
        used = workflow.info().get_current_history_size()
        key = self.task_key()
        if self.input_budget is None:
            used += counted + (self._sent if self._send_key == key else 0)
        if landed and self._landed_key == key:
            used += self._landed_room
        return used

    def _result_room(self, counted: int, room: int, *, child: bool = False) -> bool:
        """Whether an input of ``counted`` bytes and a result of up to ``room`` fit under the
        ceiling with the results of the tasks in flight (:data:`PATCH_HISTORY_GUARD_RESULTS`). A
        child run's (``child``) also only while the child runs in flight hold at most half of what
        the history and the tasks in flight leave (:data:`PATCH_HISTORY_GUARD_CHILDREN`): children
        may wait for days (for people), and the other half stays for tasks."""
        used = self._history_used(counted)
        if used + self._results_room + room > HISTORY_SEND_CEILING:
            return False
        if not child:
            return True
        tasks = self._results_room - self._children_room
        return self._children_room + room <= (HISTORY_SEND_CEILING - used - tasks) // 2

    async def _hold_result_room(self, call: ActionCall, counted: int, room: int) -> bool:
        """Holds room in the history for the task's result, waiting for tasks in flight to end
        while it does not fit (:data:`PATCH_HISTORY_GUARD_RESULTS`); True when held. Compensations
        always go (the room past the ceiling is theirs). With the payload store too: a result under
        the store's threshold (256 KiB by default) stays in the history.

        Raises:
            ActionFailedError: ``HistoryLimit``: it does not fit with no task in flight.
        """
        if call.compensating:
            return False
        if not self._result_room(counted, room) and not self.patched(PATCH_HISTORY_GUARD_RESULTS):
            return False
        what = (
            "its result" if self.input_budget is not None else f"its input ({counted:,} bytes) and its result"
        )
        problem = await self._wait_for_room(counted, room, call.summary, f"step {call.path!r}: {what}")
        if problem is not None:
            raise ActionFailedError(problem, HISTORY_LIMIT, 0)
        return True

    async def _wait_for_room(
        self, counted: int, room: int, summary: str, what: str, *, child: bool = False
    ) -> str | None:
        """Holds ``room`` for a result once it fits (:meth:`_result_room`), waiting for the tasks
        and child runs in flight to end while it does not; the problem (``what`` would not fit)
        when none is in flight."""
        while not self._result_room(counted, room, child=child):
            key = self.task_key()
            if self._results_held:
                # (Another waiter woken with this one may take the room first: checked again.)
                await workflow.wait_condition(
                    lambda: not self._results_held or self._result_room(counted, room, child=child)
                )
            elif self._landed_key == key and self._landed_room:
                # Results landed in this workflow task, counted at their room: the next task's
                # history size counts them as they are.
                await self._next_task(key, f"{summary}: history room")
            else:
                used = workflow.info().get_current_history_size()
                left = HISTORY_SEND_CEILING - self._history_used(counted)
                if child and room <= left:
                    # Refused by the half that child runs may hold, not by the ceiling itself.
                    return (
                        f"{what} (up to {room:,} bytes) would take more than half of the"
                        f" {left:,} bytes the run's history ({used:,} bytes, no other steps in"
                        f" flight) leaves under {HISTORY_SEND_CEILING:,} bytes, near Temporal's 50"
                        " MiB limit where the server terminates a run; child runs hold at most"
                        " half, the other half stays for tasks: keep large answers out of a long"
                        " run's children"
                    )
                return (
                    f"{what} (up to {room:,} bytes) would bring the run's history ({used:,} bytes,"
                    f" no other steps in flight) past {HISTORY_SEND_CEILING:,} bytes, near"
                    " Temporal's 50 MiB limit where the server terminates a run: keep large"
                    " answers out of a long run's steps"
                    + (
                        ""
                        if self.input_budget is not None
                        else ", or configure the payload store (WFA_PAYLOAD_STORE)"
                    )
                )
        self._results_held += 1
        self._results_room += room
        if child:
            self._children_room += room
        return None

    async def _hold_child_room(
        self, counted: int, summary: str, child: str, *, share: int | None = None
    ) -> tuple[int, int | None]:
        """Holds room in the history for the result of a child run this run waits for
        (:data:`PATCH_HISTORY_GUARD_CHILDREN`): the room held (0: none, a run of an earlier
        generation) and, without the payload store, the most the child may return
        (:attr:`RunOptions.result_limit`). A slice of a fanned-out foreach (``share`` slices at
        once) gets an equal part of half the room the history and the tasks in flight leave, one
        part kept spare, at least :data:`CHILD_RESULT_FLOOR` and at most :data:`CHILD_RESULT_MAX`;
        computed without the results landed in this workflow task and what other children hold,
        so a slice started as another's result lands gets the part the others got, and a fan-out
        beside another gets as much. A subflow gets :data:`ACTION_OUTPUT_BUDGET`, as an action.
        With the store a larger result goes by reference: it is counted at :data:`RESULT_ROOM`, as
        a task's. The room is held once it fits (:meth:`_result_room`): children hold at most half.

        Raises:
            _NoRoomError: it does not fit with nothing in flight (its message says why).
        """
        if not patch_applies(self._options, PATCH_HISTORY_GUARD_CHILDREN):
            return 0, None
        grant: int | None = None
        if self.input_budget is not None:
            room = RESULT_ROOM
        elif share is None:
            grant = ACTION_OUTPUT_BUDGET
            room = RESULT_ROOM
        else:
            tasks = self._results_room - self._children_room
            free = HISTORY_SEND_CEILING - self._history_used(counted, landed=False) - tasks
            part = free // (2 * (share + 1)) - RESULT_FIELDS_ROOM
            grant = min(CHILD_RESULT_MAX, max(CHILD_RESULT_FLOOR, part))
            room = grant + RESULT_FIELDS_ROOM
        what = (
            f"the result of {child}"
            if self.input_budget is not None
            else f"the input of {child} ({counted:,} bytes) and its result"
        )
        problem = await self._wait_for_room(counted, room, summary, what, child=True)
        if problem is not None:
            raise _NoRoomError(problem)
        return room, grant

    async def _send_action(self, call: ActionCall, counted: int) -> ActionResult:
        """Sends the task's activity once its result's room is held (see :meth:`execute_action`)."""
        await self._pace_send(counted, call.summary)
        # Compensations always go (as the engine's step guard lets them start): the room between
        # the ceiling and Temporal's limit is theirs.
        room = None
        if not call.compensating:
            room = self._history_room_problem(counted, f"step {call.path!r}'s input")
        if room is not None:
            raise ActionFailedError(room, HISTORY_LIMIT, 0)
        problem = self._activity_input_problem(call, counted)
        if problem is not None:
            # No command was sent for it: the SDK's (or the store's) refusal failed the workflow
            # task for ever.
            raise ActionFailedError(problem, PAYLOAD_TOO_LARGE, 0)
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
        paced = self.task_key()
        late: str | None = None
        result: ActionResult | None = None
        with telemetry.step_span(call.path, call.step_id, call.action) as span:
            try:
                async with self._activity_slots:
                    late = await self._pace_after_slot(
                        paced, counted, call.summary, f"step {call.path!r}'s input", call.compensating
                    )
                    if late is None:
                        result = await self._execute_activity(call, policy)
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
                if result is None:  # (no room left once it had its slot: never sent)
                    failure = ActionFailedError(late or "", HISTORY_LIMIT, 0)
                    telemetry.step_ended(call.step_id, call.action, "failed", started, 0)
                else:
                    telemetry.step_ended(call.step_id, call.action, "completed", started, result.attempt)
                    span.set_attribute("wfa.attempts", result.attempt)
        # Raised outside the span, which ends normally (a span ended by a non-Temporal exception
        # is dropped by the SDK's replay-safe tracer as a workflow task failure).
        if failure is not None:
            raise failure from None
        assert result is not None
        return result

    async def sleep(self, seconds: float, summary: str) -> None:
        if self._dry_run:
            return  # a dry run walks the path; it does not wait out delays
        await workflow.sleep(seconds, summary=summary)

    async def end_task(self, summary: str) -> None:
        # Ends the activation, not the workflow task: the SDK's deadlock limit is per activation,
        # and the local activity answers in milliseconds (a timer fires a second later). Also in a
        # dry run, whose long loops of steps need it as much.
        try:
            await workflow.execute_local_activity(
                END_TASK_ACTIVITY,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary=summary,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError() from None
            await workflow.sleep(timedelta(milliseconds=1), summary=summary)
        except ValueError:
            # A worker not built by build_worker may not have it (the SDK refuses to schedule a
            # local activity it does not know): a timer ends the activation too, a second later.
            await workflow.sleep(timedelta(milliseconds=1), summary=summary)

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
        # A task failed with PayloadTooLarge parks with that input: the row's activity would be
        # refused as well (the workflow task failing for ever), so the run fails, saying why.
        problem = self._payload_problem(record, f"the dead letter of step {record.path!r}")
        if problem is not None:
            raise StoreFailedError(f"recording the dead letter failed: {problem}", PAYLOAD_TOO_LARGE)
        try:
            row_id: int = await workflow.execute_activity(
                DEAD_LETTER_PARK,
                record,
                result_type=int,
                activity_id=temporal_id(f"{record.park_id}/dead-letter"),
                summary=f"{record.step_id}: record dead letter",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_STORE_RETRY,
                priority=self.priority,
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
                priority=self.priority,
            )
        except ActivityError as err:
            raise _store_failure(err) from None
        self._telemetry.dead_letter_resolved(resolution.action.value)

    async def subscribe_events(self, subscription: EventSubscription) -> list[Event]:
        # The n-th subscription of a path (a wait reached again) is its own activity and update.
        count = self._subscriptions[subscription.path] = self._subscriptions.get(subscription.path, 0) + 1
        try:
            events: list[Event] = await workflow.execute_activity(
                SUBSCRIBE_ACTIVITY,
                subscription,
                result_type=list[Event],
                activity_id=temporal_id(f"{subscription.path}/events#{count}"),
                summary=f"{subscription.path}: subscribe to {subscription.type}",
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=_SUBSCRIBE_DEADLINE,
                retry_policy=_SUBSCRIBE_RETRY,
                priority=self.priority,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError() from None
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            raise ActionFailedError(message, type(cause or err).__name__, 1) from None
        return events

    async def unsubscribe_events(self, subscription: EventSubscription) -> None:
        mailbox = subscription.mailbox_workflow
        # A mailbox that has ended holds no subscription any more: nothing to do then.
        with contextlib.suppress(FailureError):
            await workflow.get_external_workflow_handle(mailbox).signal(
                UNSUBSCRIBE_SIGNAL, subscription.subscriber
            )

    def task_key(self) -> int:
        return workflow.info().get_current_history_length()

    def payload_limit(self, records: int = 0) -> int | None:
        """The most the run's result (or failure details), status answer or next run's input may
        take serialized: Temporal's 2 MiB without the payload store; with it, what the store takes
        (less :data:`STORE_CODEC_MARGIN`), and None when the run's state budget is at most half
        of that and it holds at most :data:`UNMEASURED_RECORDS` step records (``records``): what
        it holds then cannot reach the cap, and nothing is measured. The state budget counts the
        records' outputs, not the records: 180,000 ``set`` steps of long names took a result
        to 72 MB, past the store's cap, and the run's last workflow task failed on every attempt
        (found by an attacker's probe)."""
        budget = self.input_budget
        if budget is None:
            # A result or status answer needs no patch (neither is compared on replay); a next
            # run's input in the margin asks one (:meth:`refuses`).
            return RESULT_MAX_BYTES - CODEC_FRAMING_MARGIN
        if budget <= STORED_PAYLOAD_MAX_BYTES // 2 and records <= UNMEASURED_RECORDS:
            return None
        return STORED_PAYLOAD_MAX_BYTES - STORE_CODEC_MARGIN

    def refuses(self, size: int, limit: int) -> bool:
        """Whether a next run's input of ``size`` bytes, over :meth:`payload_limit`'s ``limit``,
        is refused: always over Temporal's own limit (or the store's cap); within
        :data:`CODEC_FRAMING_MARGIN` under Temporal's, where such a run continued as new before
        the margin, only where patch ``codec-framing-margin`` applies."""
        if self.input_budget is not None or size > CONTINUE_AS_NEW_MAX_BYTES:
            return True
        return self.patched(PATCH_CODEC_FRAMING_MARGIN)

    def input_limit(self) -> int:
        """The most a task's or child run's input may take serialized: Temporal's 2 MiB without
        the store; with it, the run's state budget, at most what the store takes."""
        budget = self.input_budget
        if budget is None:
            return INLINE_INPUT_MAX_BYTES
        return min(budget, STORED_PAYLOAD_MAX_BYTES - STORE_CODEC_MARGIN)

    def _carried_send_bytes(self, definition: Definition) -> int:
        """What a child run's input carries beside its items or input, estimated before it is
        built (:data:`PATCH_CHILD_SEND_PACING`): its ``definition`` (compact, as it travels) and a
        dry run's canned outputs in its options; 0 in runs of an earlier generation. The last
        definition measured is remembered (a fan-out's slices all carry the run's own)."""
        if not patch_applies(self._options, PATCH_CHILD_SEND_PACING):
            return 0
        known = self._definition_size
        if known is None or known[0] is not definition:
            size = len(definition.model_dump_json(by_alias=True, exclude_defaults=True).encode())
            known = self._definition_size = (definition, size)
        canned = (
            json_size(self._options.canned_outputs, TASK_SEND_BUDGET) if self._options.canned_outputs else 0
        )
        return known[1] + canned

    async def _send_child(
        self, child_input: RunInput, counted: int, call: SubflowCall | BatchCall, what: str, what_exact: str
    ) -> tuple[int | None, str | None]:
        """Paces a child run's input (:meth:`_pace_child_send`) and asks the send guard about it
        (:meth:`_history_room_problem`, ``what`` it is, ``what_exact`` when measured as sent): its
        size as sent (None in runs of an earlier generation) and why it is not sent, or None. In
        runs of :data:`PATCH_CHILD_SEND_PACING`'s generation a compensation's child always goes, as
        a compensation's task does."""
        exact = await self._pace_child_send(child_input, counted, call.summary)
        if exact is None:
            return None, self._history_room_problem(counted, what, child_input.definition)
        if call.compensating:
            return exact, None
        return exact, self._history_room_problem(exact, what_exact)

    async def _pace_child_send(self, child_input: RunInput, counted: int, summary: str) -> int | None:
        """Paces a child run's input (:meth:`_pace_send`): on ``counted``, its estimate, then in
        runs of :data:`PATCH_CHILD_SEND_PACING`'s generation at its size as sent (one payload: its
        definition, items or input and options, escapes and all), which it returns (None in runs of
        an earlier generation). Measured only once paced on the estimate, so one workflow task
        serializes about a task's worth of inputs, not every child waiting; when the size as sent
        does not fit in this task's sends, the input waits for the next task, counted so there."""
        await self._pace_send(counted, summary)
        if not patch_applies(self._options, PATCH_CHILD_SEND_PACING):
            return None
        exact = _payload_bytes(child_input)
        if exact > counted:
            # (No yield since the estimate was counted: the same workflow task.)
            alone = self._sent == counted
            if alone or self._sent - counted + exact <= TASK_SEND_BUDGET:
                self._sent += exact - counted
            else:
                self._sent -= counted
                await self._pace_send(exact, summary)
        return exact

    async def _pace_after_slot(
        self, paced: int, size: int, summary: str, what: str, compensating: bool
    ) -> str | None:
        """Paces again an input of ``size`` bytes (``what`` it is), paced in the workflow task
        ``paced``, when it waited for a slot into a later one (:data:`PATCH_SLOT_SEND_PACING`):
        several slots freed in one task would otherwise start every input waiting for them there,
        each counted in the task where it began to wait. The send guard is asked again too (the
        history grew while it waited; a compensation's input always goes): why it is not sent, or
        None. No yield when it did not wait."""
        if paced == self.task_key() or not patch_applies(self._options, PATCH_SLOT_SEND_PACING):
            return None
        await self._pace_send(size, summary)
        return None if compensating else self._history_room_problem(size, what)

    async def _pace_send(self, size: int, summary: str) -> None:
        """Counts an input of ``size`` bytes into this workflow task's; past
        :data:`TASK_SEND_BUDGET` (and not the first), it waits for the next workflow task, which one
        1 ms timer begins for every input waiting. Below the budget it returns without yielding."""
        while True:
            key = self.task_key()
            if key != self._send_key:
                self._send_key, self._sent = key, 0
            if (
                not self._sent
                or self._sent + size <= TASK_SEND_BUDGET
                or not self.patched(PATCH_TASK_SEND_PACING)
            ):
                self._sent += size
                return
            await self._next_task(key, f"{summary}: pacing large inputs")

    async def _next_task(self, key: int, summary: str) -> None:
        """Waits for the workflow task after ``key``, which one 1 ms timer begins for every caller
        waiting in this one (``summary`` names the first's)."""
        if self._send_pause is None or self._send_pause.done():
            self._send_pause = asyncio.create_task(workflow.sleep(timedelta(milliseconds=1), summary=summary))
        await workflow.wait_condition(functools.partial(self._task_moved_on, key))

    def _task_moved_on(self, key: int) -> bool:
        return self.task_key() != key

    def _history_room_problem(self, size: int, what: str, definition: Definition | None = None) -> str | None:
        """Why an input of ``size`` bytes, counted into this task's sends by :meth:`_pace_send`, is
        not sent (:data:`PATCH_HISTORY_GUARD_SENDS`), or None. A child run's input also holds its
        ``definition`` (not paced; measured only near the ceiling). With the payload store a large
        input goes by reference, so nothing is counted there."""
        if self.input_budget is not None:
            return None
        used = workflow.info().get_current_history_size()
        if definition is not None and used + self._sent > HISTORY_SEND_CEILING - INLINE_INPUT_MAX_BYTES:
            used += _payload_bytes(definition)
        if used + self._sent <= HISTORY_SEND_CEILING or not self.patched(PATCH_HISTORY_GUARD_SENDS):
            return None
        self._sent -= size  # not sent
        return (
            f"{what} ({size:,} bytes) would bring the run's history ({used + self._sent:,} bytes with"
            f" what this workflow task sends) past {HISTORY_SEND_CEILING:,} bytes, near Temporal's"
            " 50 MiB limit where the server terminates a run: keep large values out of what steps"
            " send (a fanned-out foreach sends each child the whole run input when its body reads"
            " `input`: pick what it needs into `vars` first), or configure the payload store"
            " (WFA_PAYLOAD_STORE)"
        )

    def history_used(self) -> tuple[int, int]:
        info = workflow.info()
        return info.get_current_history_length(), info.get_current_history_size()

    async def run_subflow(self, call: SubflowCall) -> dict[str, Any]:
        """Resolves the child's definition in this run's tenant (a recorded activity), starts it
        as a child workflow (same task queue, tenant and proof setting; one depth deeper) and,
        when the step waits, awaits its result.

        A waited-for child is cancelled with its parent (the parent waits until the child has run
        its compensations) and cancelled if the parent closes first; a detached child is
        abandoned: it outlives the parent. The room the definition and a waited-for child's result
        take in this run's history is held first (:data:`PATCH_HISTORY_GUARD_SUBFLOWS`,
        :data:`PATCH_HISTORY_GUARD_CHILDREN`).
        """
        resolve_room, max_bytes = 0, None
        # A definition may take an action's output's room (with the store a larger one goes by
        # reference). Compensations always go: they hold no room, and their definition is not
        # bounded (a compensation that failed on it would leave the run half undone).
        if not call.compensating and patch_applies(self._options, PATCH_HISTORY_GUARD_SUBFLOWS):
            max_bytes = None if self.input_budget is not None else ACTION_OUTPUT_BUDGET
            resolve_room = RESULT_ROOM
            problem = await self._wait_for_room(
                0, resolve_room, call.summary, f"step {call.path!r}: the definition its subflow resolves"
            )
            if problem is not None:
                raise SubflowFailedError(f"subflow {call.definition!r}: {problem}", HISTORY_LIMIT)
        try:
            resolved = await self._resolve_subflow(call, max_bytes)
        finally:
            if resolve_room:
                self._release_room(resolve_room)
        schema = resolved.definition.input_schema
        # A compensation's child is not checked: compensations always go (as for its room below).
        if schema is not None and not call.compensating and self.patched(PATCH_SUBFLOW_INPUT_SCHEMA):
            await self._check_subflow_input(call, resolved.definition, schema)
        counted = json_size(call.input, TASK_SEND_BUDGET) + self._carried_send_bytes(resolved.definition)
        held, grant = 0, None
        if call.wait and not call.compensating:  # (compensations always go, as tasks do)
            try:
                held, grant = await self._hold_child_room(
                    counted, call.summary, f"its child run {temporal_id(call.workflow_id)!r}"
                )
            except _NoRoomError as no_room:
                raise SubflowFailedError(f"subflow {call.definition!r}: {no_room}", HISTORY_LIMIT) from None
        try:
            return await self._run_subflow(call, resolved, counted, grant)
        finally:
            if held:
                self._release_room(held, child=True)

    async def _check_subflow_input(
        self, call: SubflowCall, child: Definition, schema: dict[str, Any]
    ) -> None:
        """Fails the step (``InvalidRunInput``) when the child's ``input_schema`` refuses the input
        this step gives it (:data:`PATCH_SUBFLOW_INPUT_SCHEMA`): a recorded local activity, since
        the check is never made in workflow code. A check that cannot be made (it fails, times out,
        or the worker lacks it) fails the step with ``SubflowInputUnchecked`` instead."""
        what = f"subflow {call.definition!r}"
        check = SubflowInputCheck(input_schema=schema, input=call.input, tenant=self._options.tenant)
        try:
            problems: list[str] = await workflow.execute_local_activity(
                SUBFLOW_INPUT_PROBLEMS,
                check,
                result_type=list[str],
                # A wait for a slot, a process's start and the check: at most 30 + 10 + 60 s at the
                # largest deadline on a loaded machine (activities.input_check). Not in the history
                # (a local activity's options are not recorded): replays are unchanged.
                start_to_close_timeout=timedelta(seconds=120),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"{call.summary}: check its input",
            )
        except (ActivityError, ApplicationError) as err:
            # A local activity's failure reaches the workflow as its own error (an ApplicationError),
            # not wrapped in an ActivityError as a remote activity's is.
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, CancelledError):
                raise asyncio.CancelledError() from None
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            raise SubflowFailedError(
                f"{what}: its input could not be checked: {message}", INPUT_UNCHECKED
            ) from None
        except ValueError:  # a worker not built by build_worker lacks the local activity
            raise SubflowFailedError(
                f"{what}: this worker cannot check its input against the child's input_schema (it lacks"
                f" the {SUBFLOW_INPUT_PROBLEMS} activity that worker.build_worker registers)",
                INPUT_UNCHECKED,
            ) from None
        # The input was checked as the text it stands for (patch data-text): what the problems
        # quote of it goes into the step's error as data, inert.
        problems = seal(problems)
        if problems:
            raise SubflowFailedError(
                f"{what}: the input does not match the input_schema of {child.name} v{child.version}: "
                + "; ".join(problems),
                INVALID_RUN_INPUT,
            )

    async def _resolve_subflow(self, call: SubflowCall, max_bytes: int | None) -> SubflowDefinition:
        """The child's definition, resolved in this run's tenant (a recorded activity); at most
        ``max_bytes`` as its result (:data:`PATCH_HISTORY_GUARD_SUBFLOWS`)."""
        tenant = self._options.tenant
        try:
            resolved: SubflowDefinition = await workflow.execute_activity(
                SUBFLOW_RESOLVE,
                SubflowLookup(
                    tenant=tenant,
                    definition=call.definition,
                    version=call.version,
                    root_run_id=_root_run_id(),
                    max_bytes=max_bytes,
                ),
                result_type=SubflowDefinition,
                activity_id=temporal_id(call.activity_id),
                summary=f"{call.summary}: resolve",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_STORE_RETRY,
                priority=self.priority,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError() from None
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            kind = (cause.type if isinstance(cause, ApplicationError) else None) or "SubflowResolveError"
            raise SubflowFailedError(f"subflow {call.definition!r}: {message}", kind) from None
        return resolved

    async def _run_subflow(
        self, call: SubflowCall, resolved: SubflowDefinition, counted: int, grant: int | None
    ) -> dict[str, Any]:
        """:meth:`run_subflow` once its definition is resolved (and the room for a waited-for
        child's result held: ``grant``, the most it may return, see :meth:`_hold_child_room`).
        ``counted`` estimates the child's input (with what it carries: :meth:`_carried_send_bytes`)."""
        tenant = self._options.tenant
        child = resolved.definition
        child_input = RunInput(
            definition=child,
            input=call.input,
            options=self._options.model_copy(update={"subflow_depth": call.depth, "result_limit": grant}),
        )
        what = f"the input of its child run {temporal_id(call.workflow_id)!r}"
        exact, room = await self._send_child(child_input, counted, call, what, what)
        if room is not None:
            raise SubflowFailedError(f"subflow {call.definition!r}: {room}", HISTORY_LIMIT)
        problem = self._payload_problem(
            child_input, f"the input of its child run {temporal_id(call.workflow_id)!r}", exact
        )
        if problem is not None:
            raise SubflowFailedError(f"subflow {call.definition!r}: {problem}", PAYLOAD_TOO_LARGE)
        if not call.wait and self._child_slots.locked():
            raise SubflowFailedError(
                f"subflow {call.definition!r}: this run has {MAX_PENDING_CHILDREN} child runs open, the"
                " most Temporal lets one run have; a detached child does not wait for one to close."
                " Start fewer per run (a loop that continues as new starts afresh), or wait for them",
                SUBFLOW_LIMIT_EXCEEDED,
            )
        paced = self.task_key()
        await self._child_slots.acquire()  # waits only over the cap; otherwise no yield, no reorder
        try:
            # (Before the pacing: a local activity may ask for it, which may end the workflow task.)
            priority = await self.granted_priority(child.priority)
            late = await self._pace_after_slot(
                paced, counted if exact is None else exact, call.summary, what, call.compensating
            )
            if late is not None:
                raise SubflowFailedError(f"subflow {call.definition!r}: {late}", HISTORY_LIMIT)
            handle = await self._start_child(
                child_input,
                call.workflow_id,
                resolved.content_hash,
                memo={
                    "definition": child.name,
                    "version": child.version,
                    "hash": resolved.content_hash,
                    "tenant": tenant,
                    "source": "subflow",
                },
                summary=f"{child.name} v{child.version} (subflow of {workflow.info().workflow_id})",
                parent_close_policy=(
                    workflow.ParentClosePolicy.REQUEST_CANCEL
                    if call.wait
                    else workflow.ParentClosePolicy.ABANDON
                ),
                priority=priority,
            )
        except WorkflowAlreadyStartedError:
            self._child_slots.release()
            raise SubflowFailedError(
                f"subflow {call.definition!r}: a run with id {temporal_id(call.workflow_id)!r} already exists",
                "SubflowAlreadyStarted",
            ) from None
        except BaseException:
            self._child_slots.release()
            raise
        ids = {"workflow_id": handle.id, "run_id": handle.first_execution_run_id}
        if not call.wait:
            # Open until it closes, which this run hears of while it runs: its slot is held till then.
            watch = asyncio.create_task(self._release_when_closed(handle))
            self._detached.add(watch)
            watch.add_done_callback(self._detached.discard)
            return {**ids, "state": "started"}
        try:
            result: RunResult = await self._await_child(handle)
        except ChildWorkflowError as err:
            if isinstance(err.cause, CancelledError):
                if _cancelling() or not self.patched(PATCH_CHILD_CANCEL_FAILS_STEP):
                    raise asyncio.CancelledError() from None
                raise SubflowFailedError(
                    f"subflow {child.name!r} ({handle.id}) was cancelled: {err.cause.message}",
                    "Subflow.CancelledError",
                ) from None
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            kind = (cause.type if isinstance(cause, ApplicationError) else None) or type(
                cause or err
            ).__name__
            # A nested subflow's failure keeps its own type (SubflowDepthExceeded, Subflow.X).
            raise SubflowFailedError(
                f"subflow {child.name!r} ({handle.id}) failed: {message}",
                kind if kind.startswith("Subflow") else f"Subflow.{kind}",
            ) from None
        finally:
            self._child_slots.release()
        return {**ids, "state": result.state.value, "output": result.output}

    async def _release_when_closed(self, handle: workflow.ChildWorkflowHandle[Any, RunResult]) -> None:
        """Holds a detached child's slot (:data:`MAX_PENDING_CHILDREN`) until it closes, however."""
        try:
            with contextlib.suppress(Exception):
                await handle
        finally:
            self._child_slots.release()

    async def tree_problem(self, starts: int, what: str) -> str | None:
        """Asks the worker (the local activity ``wfa.tree_runs``, recorded) how many runs this run's
        tree counts and its bound; the problem when ``starts`` more would pass it."""
        root = _root_run_id()
        try:
            counted, bound = await workflow.execute_local_activity(
                TREE_RUNS,
                args=[root, starts],
                result_type=list[int],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_STORE_RETRY,
                summary=f"{what}: count the run tree",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError() from None
            cause = err.cause
            return f"{what}: {cause.message if isinstance(cause, ApplicationError) else cause or err}"
        if counted + starts > bound:
            return (
                f"{what}: {starts:,} child runs would bring this run's tree (root run {root}), which"
                f" already counts {counted:,} runs, past the most this worker lets one tree start"
                f" ({MAX_RUNS_PER_TREE_ENV}={bound:,})"
            )
        return None

    async def run_foreach_batch(self, call: BatchCall) -> dict[str, Any]:
        """Runs a slice of a fanned-out foreach as a child workflow of the same definition (same
        task queue, tenant, options and depth; listed under the definition's name) and waits for
        its output. The child is cancelled with its parent (which waits until the child has run
        its compensations) and if the parent closes first."""
        parent = workflow.info().workflow_id
        counted = _batch_json_size(call.batch) + self._carried_send_bytes(call.definition)
        held, grant = 0, None
        try:
            if not call.compensating:  # (compensations always go, as tasks do)
                held, grant = await self._hold_child_room(
                    counted,
                    call.summary,
                    f"the child run {temporal_id(call.workflow_id)!r}",
                    share=call.share,
                )
        except _NoRoomError as no_room:
            raise BatchFailedError(str(no_room), HISTORY_LIMIT) from None
        try:
            child_input = RunInput(
                definition=call.definition,
                options=self._options.model_copy(update={"result_limit": grant}),
                batch=call.batch,
            )
            what = f"the input of the child run {temporal_id(call.workflow_id)!r}"
            exact, room = await self._send_child(
                child_input,
                counted,
                call,
                f"{what} (its items and context)",
                f"{what} (its items, context and definition)",
            )
            if room is not None:
                raise BatchFailedError(room, HISTORY_LIMIT)
            problem = self._payload_problem(
                child_input,
                f"the child run's input (the definition, its {len(call.batch.items)} items and the"
                " context the foreach's body reads)",
                exact,
            )
            if problem is not None:
                raise BatchFailedError(problem, PAYLOAD_TOO_LARGE)
            paced = self.task_key()
            async with self._child_slots:  # waits its turn only over MAX_PENDING_CHILDREN
                late = await self._pace_after_slot(
                    paced, counted if exact is None else exact, call.summary, what, call.compensating
                )
                if late is not None:
                    raise BatchFailedError(late, HISTORY_LIMIT)
                return await self._run_batch(call, child_input, parent)
        finally:
            if held:
                self._release_room(held, child=True)

    async def _run_batch(self, call: BatchCall, child_input: RunInput, parent: str) -> dict[str, Any]:
        definition = call.definition
        tenant = self._options.tenant
        try:
            handle = await self._start_child(
                child_input,
                call.workflow_id,
                definition_hash(definition),
                memo={
                    "definition": definition.name,
                    "version": definition.version,
                    "tenant": tenant,
                    "source": "foreach",
                    "parent": parent,
                },
                summary=f"{call.summary} (foreach {call.path} of {parent})",
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                priority=self.priority,
            )
        except WorkflowAlreadyStartedError:
            raise BatchFailedError(
                f"a run with id {temporal_id(call.workflow_id)!r} already exists", "FanOutAlreadyStarted"
            ) from None
        try:
            result: RunResult = await self._await_child(handle)
        except ChildWorkflowError as err:
            if isinstance(err.cause, CancelledError):
                if _cancelling() or not self.patched(PATCH_CHILD_CANCEL_FAILS_STEP):
                    raise asyncio.CancelledError() from None
                raise BatchFailedError(
                    f"{handle.id} was cancelled: {err.cause.message}", "CancelledError"
                ) from None
            cause = err.cause
            if isinstance(cause, ApplicationError):
                # The child's own failure (its RunResult in the details): the item's error and type.
                failed = _child_result(cause)
                if failed is not None and failed.error:
                    return_type = failed.error_type or cause.type or "WorkflowFailed"
                    raise BatchFailedError(
                        failed.error, return_type, compensated=failed.state == RunState.COMPENSATED
                    ) from None
                raise BatchFailedError(cause.message, cause.type or "WorkflowFailed") from None
            raise BatchFailedError(str(cause or err), type(cause or err).__name__) from None
        output: dict[str, Any] = result.output
        return output

    def _payload_problem(self, value: BaseModel, what: str, size: int | None = None) -> str | None:
        """Why ``value`` (a child run's or an activity's input) cannot go to Temporal inline, or
        None: without the payload store it goes in history as one payload, which Temporal refuses
        over 2 MiB, and the SDK's refusal ("TMPRL1103 ... exceeded the error limit") fails the
        workflow task on every retry, the run stuck running, its ``on_failure`` never applied. Its
        step fails instead (``PayloadTooLarge``), as a continue-as-new too large fails the run
        (:meth:`GenericRun._continue_as_new`). With the store the payload goes by
        reference: nothing to check.

        Costs one serialization of ``value`` (the SDK serializes it again to send it): a
        definition and an input; a child run starts in milliseconds at best, so it is not
        noticeable there.

        Patch ``payload-too-large``, asked only for such an input: on a server whose
        ``limit.blobSize.error`` is raised above 2 MiB, a recorded run may have sent one.
        """
        if size is None:  # (else measured already, as sent: see _pace_child_send)
            size = _payload_bytes(value)
        if self.input_budget is not None:  # with the store: the state budget, what the store takes
            limit = self.input_limit()
            if size <= limit or not self.patched(PATCH_STORE_INPUT_BUDGET):
                return None
            return self._store_input_message(what, str(size), limit)
        if size <= INLINE_INPUT_MAX_BYTES - CODEC_FRAMING_MARGIN:
            return None
        if size <= INLINE_INPUT_MAX_BYTES:  # over it once an encryption codec frames it
            if not self.patched(PATCH_CODEC_FRAMING_MARGIN):
                return None
            room = (
                f" ({INLINE_INPUT_MAX_BYTES} bytes, less {CODEC_FRAMING_MARGIN} kept for a codec's framing)"
            )
        elif not self.patched(PATCH_PAYLOAD_TOO_LARGE):
            return None
        else:
            room = f" ({INLINE_INPUT_MAX_BYTES} bytes)"
        return (
            f"{what} is {size} bytes serialized, more than Temporal takes in one payload{room}."
            " Keep less in the input (pass an id or a reference instead of the data), or run with"
            " large payloads stored by reference (WFA_PAYLOAD_STORE)"
        )

    @staticmethod
    def _store_input_message(what: str, size: str, limit: int) -> str:
        return (
            f"{what} is {size} bytes serialized, more than one input may take ({limit} bytes:"
            " the run's state budget, at most what the payload store takes). Keep less in the"
            " input (pass an id or a reference instead of the data)"
        )

    def _input_count_bound(self) -> int:
        """How far :meth:`_activity_input_problem` needs a task input's ``json_size`` counted:
        without the store, to what rules it out; with it, past the bound (plus 1/64, a margin for
        how ``json_size`` counts numbers), where it is over before any escape."""
        limit = self.input_limit()
        return limit // JSON_ESCAPE_EXPANSION if self.input_budget is None else limit + limit // 64

    def _activity_input_problem(self, call: ActionCall, counted: int) -> str | None:
        """:meth:`_payload_problem` for a task's activity input, measured only when a quick upper
        bound cannot rule it out: ``counted``, the rendered input's ``json_size`` counted at least
        to :meth:`_input_count_bound`, times the most a character's escape expands, plus the
        request's other fields. The 5-step benchmark's inputs are far under it, so they are walked
        once, never serialized here."""
        request = call.request
        ids = len(request.step_id) + len(request.idempotency_key) + len(request.tenant)
        room = self.input_limit() // JSON_ESCAPE_EXPANSION - ids - 1024
        if room > 0 and counted <= room:
            return None
        what = f"the input of its action {call.action!r}"
        # With the store an input may be far larger: one clearly over the bound (its size before
        # any escape) fails without serializing it (24 inputs of 55 MB took a workflow task 5.5 s
        # to serialize; found by a probe).
        over = self._input_count_bound()
        if self.input_budget is None or counted <= over:
            return self._payload_problem(request, what)
        if not self.patched(PATCH_STORE_INPUT_BUDGET):
            return None
        return self._store_input_message(what, f"over {over}", self.input_limit())

    async def _start_child(
        self,
        run: RunInput,
        workflow_id: str,
        content_hash: str,
        *,
        memo: dict[str, Any],
        summary: str,
        parent_close_policy: workflow.ParentClosePolicy,
        priority: Priority,
    ) -> workflow.ChildWorkflowHandle[Any, RunResult]:
        """Starts ``run`` as a child workflow (a subflow or a fan-out slice) on this run's task
        queue, listed under its definition's name with the search attributes of a run a client
        started, in this run's tenant. A child cancelled with its parent (``REQUEST_CANCEL``) runs
        its compensations before the parent's cancellation goes on."""
        definition = run.definition
        attributes = start_attributes(
            definition.name,
            definition.version,
            content_hash,
            self._options.tenant,
            engine_level=run.options.engine_level,
        )
        start = workflow.start_child_workflow(
            definition.name,  # listed under its definition's name, like a run a client started
            run,
            id=temporal_id(workflow_id),
            result_type=RunResult,
            task_queue=workflow.info().task_queue,
            search_attributes=attributes,
            memo=memo,
            static_summary=summary,
            parent_close_policy=parent_close_policy,
            cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
            # A parent re-run under its business key (after a failure) reuses the ids of its
            # earlier children once they closed; one still running is reported, not joined.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            priority=priority,
        )
        if patch_applies(self._options, PATCH_CHILD_CANCEL_FAILS_STEP):
            # Awaited in a task of its own: a cancellation of this task (a branch a parallel
            # step cancels, the run cancelling itself) while the start is pending is absorbed by
            # the SDK in the task awaiting the start, which cancels the child and clears that
            # task's count; so this task still reads as cancelling (_cancelling) when the child's
            # cancellation comes back, and is not taken for someone else's. Only in runs started
            # at its generation: the start command may go out later in the activation.
            return await asyncio.create_task(start)
        return await start

    async def _await_child(self, handle: workflow.ChildWorkflowHandle[Any, RunResult]) -> RunResult:
        """The result of a child run this run waits for (:data:`PATCH_CHILD_CANCEL_BY_ID`). Awaited
        in a task of its own, so a cancellation of this one (the run's, or its branch's) is seen
        here: besides the SDK's request (which names the child's first run), the child's chain is
        asked to cancel by its id, and the wait goes on until the child has ended (it runs its
        compensations first), as before."""
        if not patch_applies(self._options, PATCH_CHILD_CANCEL_BY_ID):
            return await handle
        waiting = asyncio.ensure_future(_child_outcome(handle))
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if waiting.done():
                raise
            asked = asyncio.ensure_future(_cancel_by_id(handle.id))
            self._cancels_asked.add(asked)  # (held until done: the loop keeps only weak references)
            asked.add_done_callback(self._cancels_asked.discard)
            waiting.cancel()  # the SDK's own request, and its wait for the child's end
            try:
                outcome = await waiting
            except ChildWorkflowError as err:
                if isinstance(err.cause, CancelledError) or not self.patched(PATCH_CHILD_CANCEL_KEPT):
                    raise
                raise asyncio.CancelledError() from None  # the child failed, the run is cancelled
            if self.patched(PATCH_CHILD_CANCEL_KEPT):
                # The child ended before the cancellation reached it: its outcome does not undo
                # this wait's cancellation (the child's own run shows how it ended).
                raise asyncio.CancelledError() from None
            return outcome

    def patched(self, patch_id: str) -> bool:
        # An update validator is read-only and runs only for a new update, never on replay: the
        # change applies there, with no marker to record (a refusal writes nothing to history).
        if workflow.unsafe.is_read_only():
            return True
        return patch_applies(self._options, patch_id)


ENCRYPTED_PAYLOAD = b"binary/encrypted"
"""The encoding of a payload the product's codec encrypted (``starter.codec.ENCODING``): one still
so when the workflow reads it was encrypted with keys this worker does not hold."""


class PayloadKeysMissingError(RuntimeError):
    """A run whose input is encrypted, on a worker without payload keys. Not a failure of the run:
    it fails the workflow task, which Temporal retries, so the run waits, untouched, until a worker
    with the keys takes it (a probe: the run failed for good, "InvalidRunInput: Unknown payload
    encoding binary/encrypted", when a client had keys and the worker had none)."""

    def __init__(self) -> None:
        super().__init__(
            "PayloadKeysMissing: the run input is encrypted (binary/encrypted) and this worker has no"
            " payload keys: start the workers with the WFA_PAYLOAD_KEYS (or WFA_PAYLOAD_KEYS_FILE) the"
            " clients have; the run waits, untouched, until a worker that has them takes it"
        )


class EngineLevelUnknownError(RuntimeError):
    """A run of an interpreter generation this build does not know (a newer client's run on older
    workers, or a rollback below the generation of runs in flight). Not a failure of the run: it
    fails the workflow task, which Temporal retries, so the run waits, untouched, until workers of
    a build that knows the generation take it (a roll forward). Running it here could take branches
    a newer worker's replay would not."""

    def __init__(self, level: int) -> None:
        super().__init__(
            f"EngineLevelUnknown: the run was started for interpreter generation {level}, and this"
            f" worker's build knows generations up to {ENGINE_LEVEL}: the run waits for workers of a"
            " build that knows it (start runs at a generation these workers know with"
            " RunOptions.engine_level / FlowClient.engine_level)"
        )


def patch_applies(options: RunOptions, patch_id: str) -> bool:
    """Whether the change ``patch_id`` applies to the run with ``options``: from its start when the
    run's generation has it (:data:`PATCH_LEVELS`), never for a run of an earlier generation when it
    changes what a snapshot carries or when commands go out (:data:`NEVER_ASKED_PATCHES`), else as
    ``workflow.patched`` answers."""
    level = PATCH_LEVELS.get(patch_id)
    if level is not None and options.engine_level >= level:
        return True
    if patch_id in NEVER_ASKED_PATCHES:
        return False
    return workflow.patched(patch_id)


async def _child_outcome(handle: workflow.ChildWorkflowHandle[Any, RunResult]) -> RunResult:
    return await handle


async def _cancel_by_id(workflow_id: str) -> None:
    """Asks Temporal to cancel the open run of ``workflow_id``'s chain (no run id: the current one).
    A child that already closed, or was asked already, refuses it: nothing more to do."""
    with contextlib.suppress(Exception):
        await workflow.get_external_workflow_handle(workflow_id).cancel()


def _child_result(failure: ApplicationError) -> RunResult | None:
    """The RunResult a failed run carries in its failure's details, or None."""
    if not failure.details:
        return None
    try:
        return RunResult.model_validate(failure.details[0])
    except ValidationError:
        return None


SANDBOXED = False
"""The generic workflow runs outside the SDK's workflow sandbox.

The sandbox re-imports this module for every run (and runs ``@workflow.defn`` over both classes
again) and wraps every activation; on the 5-step benchmark that was a fifth to a third of the
worker's CPU per run, 9-18 ms (``bench/README.md``, "outside the sandbox"). Its checks of calls
(clocks, randomness, the environment, restricted modules) reached only this module's own code: the
interpreter, jinja2 and pydantic are passed through it (``worker.PASSTHROUGH_MODULES``), so only
the builtins it swaps during an activation (``open``, ``input``, imports made at run time) were
refused to them. This module and the interpreter are held deterministic before they ship instead:
the lint contract refuses clocks, randomness, I/O, the environment and what else the sandbox
refused (``asyncio.wait``, ``platform``, ...) in ``workflows/`` and ``interpreter/``
(``tests/test_lint_contract.py``), and every recorded history is replayed (``tests/histories/``).
The module keeps no state of its own between runs (constants only)."""


if TYPE_CHECKING:
    RunArgument = RunInput
else:
    RunArgument = RawValue
"""The run's argument: a :class:`RunInput` to whoever starts a run (clients type their calls with
it), read by the worker as the raw payload and decoded here (:func:`_read_run_input`). Decoded by
the SDK, an input that is not a run input (a raw client's mistake or probe) failed the workflow task
on every retry ("Failed decoding arguments"); read here, it fails the run, saying why. The payload
is the same either way: nothing changes in history."""


NO_RUN_ARGUMENT = cast("RunArgument", None)
"""The run argument's default: a run started with none gets ``InvalidRunInput`` too, where the
SDK, calling the class without an argument, failed the workflow task for ever."""


def _read_run_input(args: Sequence[Any]) -> tuple[RunInput, str | None]:
    """The run input in a run's arguments, or a placeholder with the reason it is not one (the run
    then fails with ``InvalidRunInput`` before its first step; the placeholder only lets the
    handlers of the first task answer)."""
    problem: str
    if len(args) != 1:
        problem = f"a run takes one argument (the run input), not {len(args)}"
    elif isinstance(args[0], RunInput):
        return args[0], None
    elif args[0].payload.metadata.get("encoding") == ENCRYPTED_PAYLOAD:
        # Whatever the history: replaying a run whose input this worker cannot read fails either
        # way; this says why (a review: behind a patch, a replay said "Nondeterminism error").
        raise PayloadKeysMissingError()
    else:
        try:
            decoded: object = _decode_run_input(args[0].payload)
        except Exception as err:
            problem = f"the run input is not a run input: {clip(str(err))}"
        else:
            if isinstance(decoded, RunInput):
                return decoded, None
            # A payload not in JSON (bytes, null) comes back as itself, whatever the type asked.
            problem = f"the run input is not a run input: it is {type(decoded).__name__}, not JSON"
    placeholder = RunInput(
        definition=Definition(name="invalid-run-input", steps=[SucceedStep(id="unread", type="succeed")])
    )
    return placeholder, problem


class _LevelOnly(BaseModel):
    """Only the generation a run input names (``options.engine_level``), read without the rest."""

    model_config = ConfigDict(extra="ignore")

    options: dict[str, Any] = Field(default_factory=dict)


def _decode_run_input(payload: Payload) -> object:
    """The run input in ``payload``, its templates bounded in tokens (:func:`_read_bounded`).

    Raises:
        Exception: What the converter raised (the run fails with ``InvalidRunInput``).
    """
    converter = workflow.payload_converter()

    def level() -> int:
        with contextlib.suppress(Exception):
            named = converter.from_payload(payload, _LevelOnly).options.get("engine_level", 0)
            return named if isinstance(named, int) else 0
        return 0

    return _read_bounded(lambda: converter.from_payload(payload, RunInput), level)


def _read_bounded(read: Callable[[], _Built], level: Callable[[], int]) -> _Built:
    """``read()`` (a run's input, or its engine restoring a continue-as-new snapshot, whose
    compensations are steps), its templates and expressions bounded in tokens together
    (:data:`PATCH_TEMPLATE_TOKENS`): past the bound, a run of generation ``level()`` (asked only
    then) or one that asks the patch and is told to raises what ``read`` raised, none of them
    compiled; a run recorded before the bound is read as it was. A forged snapshot's compensation of
    1 MB of templates took 15 s and 1.1 GB to read (found by a review).

    Raises:
        Exception: What ``read`` raised.
    """
    with bounded_template_tokens(), template_token_budget(), template_tokens_watch() as watch:
        try:
            return read()
        except Exception as err:
            if not watch.exceeded:
                raise
            refused: Exception = err
    if level() >= PATCH_LEVELS[PATCH_TEMPLATE_TOKENS] or workflow.patched(PATCH_TEMPLATE_TOKENS):
        raise refused
    return read()  # as the run read it when it was recorded


_SIGNAL_METHODS: Mapping[str, str] = {
    "approve": "_approve",
    "reject": "_reject",
    "cancel": "_cancel",
    "event": "_event",
}
"""The signals the generic workflow reads, and the method of :class:`GenericRun` that reads each."""


class GenericRun:
    """Runs one stored workflow definition (recorded in its input, so the run is pinned to it): the
    workflow's whole behaviour, served under both workflow types by :class:`DefinitionNamedWorkflow`
    (the worker's one run workflow); :class:`RunDefinitionWorkflow` names it for clients."""

    def _init(self, args: Sequence[Any]) -> None:
        run, self._input_problem = _read_run_input(args)
        self._input = run
        if run.options.engine_level > ENGINE_LEVEL:  # before any handler of the first task runs
            raise EngineLevelUnknownError(run.options.engine_level)
        info = workflow.info()
        self._options = run.options
        self._telemetry = RunTelemetry(run.definition.name, run.definition.version, run.options.tenant)
        self._history_budget = run.definition.limits.history_budget
        self._resume_problem: str | None = None
        resume: Continuation | None = None
        if run.continuation is not None:
            try:
                resume = read_continuation(run.continuation)
            except (ContinuationVersionError, ValidationError, ValueError) as err:
                self._resume_problem = clip(str(err))
        runtime = self._runtime = _TemporalRuntime(
            self._publish,
            self._publish_wait,
            run.definition.priority,
            run.options,
            self._telemetry,
        )
        run_info = RunInfo(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            started_at=info.start_time,
            tenant=run.options.tenant,
            created_at=info.workflow_start_time,
            subflow_depth=run.options.subflow_depth,
            state_budget=run.options.state_budget,
            result_limit=run.options.result_limit,
        )
        try:
            self._engine = _read_bounded(
                lambda: Engine(
                    run.definition,
                    run.input,
                    runtime,
                    run_info,
                    # A foreach's child continues as new only between its items' steps.
                    continue_as_new=self._wants_new_run,
                    resume=resume,
                    batch=run.batch,
                ),
                lambda: run.options.engine_level,
            )
        except (ValueError, ArithmeticError) as err:  # a snapshot that does not fit the definition
            # (or a forged one whose times overflow): fail the run, clearly
            self._resume_problem = clip(str(err))
            self._engine = Engine(run.definition, run.input, runtime, run_info)
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
        self._publish_assignees = run.options.publish_assignees
        self._used_tokens: dict[str, None] = {}
        """The ``jti`` of every token an accepted update carried: a token proves one decision."""
        if resume is not None:
            try:
                self._used_tokens = dict.fromkeys(carried_ids(resume, USED_TOKENS_KIND))
            except ValueError as err:  # forged: the run fails in words (its task would fail for ever)
                self._resume_problem = self._resume_problem or clip(str(err))
        self._engine.cancel_hook = self._cancel_from_event
        self._home = asyncio.get_running_loop()
        """This run's own workflow instance (the SDK's event loop for it); see :meth:`_at_home`."""

    async def _cap_state_budget(self, asked: int | None) -> None:
        """Caps the state budget the run's options ask for (the starting client's claim) at the
        worker's maximum: whoever can start a run cannot make workers keep more than their
        operator allows."""
        if (
            asked is None
            or asked <= STATE_BUDGET_UNCHECKED
            or not patch_applies(self._options, PATCH_STATE_BUDGET_MAX)
        ):
            return
        cap: int = await workflow.execute_local_activity(
            STATE_BUDGET_MAX_ACTIVITY, result_type=int, start_to_close_timeout=timedelta(seconds=30)
        )
        if cap < asked:
            self._engine.info = dataclasses.replace(
                self._engine.info, state_budget=max(cap, STATE_BUDGET_UNCHECKED), state_budget_asked=asked
            )
            self._runtime.input_budget = self._engine.info.state_budget

    async def _run(self) -> RunResult:
        """Executes the definition; fails the workflow when the run fails."""
        run = self._input  # the argument as _init read it (the SDK's is the raw payload)
        self._main = asyncio.current_task()
        if self._input_problem is not None:
            raise ApplicationError(self._input_problem, type=INVALID_RUN_INPUT, non_retryable=True)
        if self._resume_problem is not None:
            raise ApplicationError(
                f"cannot continue the run: {self._resume_problem}",
                type="ContinuationError",
                non_retryable=True,
            )
        self._check_pinned(run)
        self._ensure_identity(run)
        await self._cap_state_budget(run.options.state_budget)
        await self._runtime.decide_priority()
        if run.continuation is None:  # a chain counts as one run
            self._telemetry.run_started()
        carried = self._engine.cancel_request
        if (
            run.continuation is not None
            and carried is not None
            and self._cancel_update is None
            and self._self_cancelled is None
            and self._runtime.patched(PATCH_CARRIED_CANCEL)
        ):
            # Accepted while the previous run switched: whoever asked may not follow the chain
            # with Temporal's cancellation (FlowClient.cancel does; a client that died does not).
            self._begin_cancel(carried)
        if (
            self._cancel_update is not None
            and self._self_cancelled is None
            and patch_applies(self._options, PATCH_CANCEL_SIGNAL_CANCELED)
        ):
            # Cancelled before the first step (signal- or update-with-start): no step starts while
            # Temporal's cancellation is on its way; it (or the fallback) cancels this wait.
            with contextlib.suppress(asyncio.CancelledError):
                await workflow.wait_condition(lambda: self._self_cancelled is not None)
            if self._main is not None:
                self._main.cancel()
        if self._self_cancelled is not None and self._main is not None:
            self._main.cancel()
        result = await self._engine.run()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._engine.continuing:
            # Returns only for a run stopped between two compensations whose next run's input
            # would be too large: it compensated to its end here instead.
            result = await self._continue_as_new(run)
        result = self._closable(result, run)
        self._telemetry.run_ended(result.state.value, workflow.info().start_time)
        if run.options.result_limit is not None and result.state != RunState.COMPLETED:
            # Its failure lands in its parent's history as its result would: its details without
            # step records or output (the parent reads neither), its message (carried twice, in
            # the failure and its details) cut to fit the room held for it.
            error = None if result.error is None else _clipped_error(result.error, run.options.result_limit)
            result = result.model_copy(update={"error": error, "steps": [], "output": None})
        if result.state == RunState.CANCELLED:
            if self._self_cancelled is None:
                # Temporal's own cancellation (also what follows ``cancel_run``): closes as Canceled.
                # A workflow cannot close as Canceled without a cancel request from the server (the
                # SDK fails it instead), nor request its own cancellation (the server answers
                # "not found"), so the run that cancelled itself closes as failed below.
                raise asyncio.CancelledError(result.error)
            raise ApplicationError(
                result.error or "cancelled",
                _details(result, run.options.result_steps, limit=self._result_limit(run)),
                type="RunCancelled",
                non_retryable=True,
            )
        if result.state == RunState.COMPENSATED and patch_applies(self._options, PATCH_COMPENSATED_FAILS):
            # Not a success: closes as failed (red in the Web UI), the error type saying why.
            raise ApplicationError(
                f"compensated: {result.error or 'a step failed'}",
                _details(result, run.options.result_steps, limit=self._result_limit(run)),
                type="RunCompensated",
                non_retryable=True,
            )
        if result.state == RunState.FAILED:
            raise ApplicationError(
                result.error or "failed",
                _details(result, run.options.result_steps, limit=self._result_limit(run)),
                type=result.error_type or "WorkflowFailed",
                non_retryable=True,
            )
        # RunOptions.result_steps: a run whose input does not name it returns the result as before.
        shape = run.options.result_steps
        if run.batch is not None and patch_applies(self._options, PATCH_SLICE_RESULTS_OUTPUT):
            shape = ResultSteps.NONE  # a fan-out slice: its parent reads the output alone
        fitted, size = _fit(result, shape, limit=self._result_limit(run))
        grant = run.options.result_limit
        if grant is not None and size is None:
            size = _payload_bytes(fitted)  # (not measured by _fit: no step records to weigh)
        if grant is not None and size is not None and size > grant:
            # Its output fitted as the engine counts it (RESULT_ROOM_BESIDE_OUTPUT), not as written
            # (escapes): the run fails here, its steps done and not compensated, saying so.
            message = (
                f"the run's result is {size:,} bytes serialized, more than the {grant:,} bytes its"
                " parent run holds for it in its own history (near Temporal's 50 MiB history"
                " limit); its steps completed and were not compensated. Return less from the run,"
                " or configure the payload store (WFA_PAYLOAD_STORE)"
            )
            failed = RunResult(state=RunState.FAILED, error=message, error_type=HISTORY_LIMIT)
            raise ApplicationError(
                message, failed.model_dump(mode="json"), type=HISTORY_LIMIT, non_retryable=True
            )
        return fitted

    def _closable(self, result: RunResult, run: RunInput) -> RunResult:
        """``result`` as the run can close with it: a message too long for a failure cut
        (:func:`_clipped_error`), and a completed run whose output would take its result past what
        Temporal (or the payload store) takes failed instead, saying so (its steps done and not
        compensated). Found by an attacker's probe: a definition alone rendered a million control
        characters (6 MB as JSON) into its output or a ``fail`` step's message, the SDK refused the
        closing command in every workflow task, and the run stayed running, with no message. A
        cut message adds no command (Temporal compares a closing command's type on replay, not its
        failure); the refused output does (:data:`PATCH_RUN_OUTPUT_TOO_LARGE`). A child run's is
        bounded by the room its parent holds too (:meth:`run`)."""
        if result.error is not None:
            error = _closing_error(result.error)
            if error is not result.error:
                result = result.model_copy(update={"error": error})
        if result.state != RunState.COMPLETED:
            return result
        limit = self._runtime.payload_limit()
        if limit is None:  # with the store, the run's state budget is far under its cap
            limit = STORED_PAYLOAD_MAX_BYTES - STORE_CODEC_MARGIN
        # Without its step records (dropped when they do not fit: _fitted); measured only when
        # its output could be near the limit (numbers are counted at least 2/3 of their size).
        if json_written_size(result.output, limit) * 3 // 2 + RESULT_FIELDS_ROOM <= limit:
            return result
        size = _payload_bytes(result.shaped(ResultSteps.NONE))
        if size <= limit or not self._runtime.patched(PATCH_RUN_OUTPUT_TOO_LARGE):
            return result
        if self._runtime.input_budget is not None:
            where, advice = "the payload store takes", ""
        else:
            where, advice = "Temporal's payload limit", ", or configure the payload store (WFA_PAYLOAD_STORE)"
        message = (
            f"the run's output is {size:,} bytes serialized, more than {where} ({limit:,} bytes):"
            f" its steps completed and were not compensated. Return less from the run (its"
            f" `output`, or a `succeed` step's){advice}"
        )
        workflow.logger.warning("%s", message)
        self._engine.refuse_output(message, RUN_OUTPUT_TOO_LARGE)  # (its state published: failed)
        return self._engine.result()

    def _result_limit(self, run: RunInput) -> int | None:
        """The most the run's result or failure details may take: Temporal's (or the store's)
        payload limit, or less, the room its parent holds for it (:attr:`RunOptions.result_limit`)."""
        limit = self._runtime.payload_limit(len(self._engine.records))
        grant = run.options.result_limit
        if grant is None or (limit is not None and limit <= grant):
            return limit
        return grant

    def _wants_new_run(self) -> bool:
        """The engine asks at its safe points: Temporal suggests continuing as new, the
        definition's history budget is spent, or the run's interpreter work is
        (:data:`~interpreter.engine.PATCH_RUN_WORK_BUDGET`), and no cancellation is under way."""
        if self._self_cancelled is not None or self._cancel_update is not None:
            return False
        if self._engine.work_spent:
            return True
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        budget = self._history_budget
        return budget is not None and info.get_current_history_length() >= budget

    async def _continue_as_new(self, run: RunInput) -> RunResult:
        """Continues the run as new with the engine's snapshot (taken after every handler
        finished, so a decision accepted during the switch travels in it). Same workflow id; the
        search attributes travel explicitly, as published."""
        snapshot = self._engine.continuation()
        # The host's own state travels too: a token spent in an earlier run stays spent.
        snapshot.kinds[USED_TOKENS_KIND] = list(self._used_tokens)
        workflow.logger.info(
            "continuing as new at step %d (generation %d)", snapshot.position, snapshot.generation
        )
        next_input = RunInput(
            definition=run.definition,
            input=run.input,
            options=run.options,
            continuation=snapshot.model_dump(mode="json"),
            batch=run.batch,
        )
        # Without the payload store the input goes inline (Temporal's limit); with it, by reference
        # up to the store's cap (measured only when the run's state budget could reach it).
        limit = self._runtime.payload_limit()
        size = 0 if limit is None else _payload_bytes(next_input)
        if limit is not None and size > limit and self._runtime.refuses(size, limit):
            if self._engine.compensating_switch:
                # A failed run between two compensations: the rest run here, as they did before
                # runs could switch while compensating (the history guard left them the room).
                workflow.logger.info("compensating in this run: its next run's input would be %d bytes", size)
                return await self._engine.compensate_here()
            # The SDK (or the store) would refuse the payload and the workflow task would fail for
            # ever: the run fails instead, saying why.
            if run.options.state_budget is None:
                where, advice = (
                    "Temporal's payload limit allows, less a codec's framing",
                    (", or run with large payloads stored by reference (WFA_PAYLOAD_STORE)"),
                )
            else:
                where, advice = "the payload store takes", ""
            message = (
                f"the run cannot continue as new: its next run's input (definition, input and"
                f" state) is {size} bytes, more than {where} ({limit} bytes). Keep less in"
                f" variables and step outputs{advice}"
            )
            await self._engine.abandon_continuation(message, "ContinueAsNewTooLarge")
            self._telemetry.run_ended(RunState.FAILED.value, workflow.info().start_time)
            raise ApplicationError(
                message,
                _details(self._engine.result(), run.options.result_steps, limit=self._result_limit(run)),
                type="ContinueAsNewTooLarge",
                non_retryable=True,
            )
        return workflow.continue_as_new(next_input, search_attributes=workflow.info().typed_search_attributes)

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Every signal: ``approve``, ``reject``, ``cancel`` and ``event`` (see
        :class:`RunDefinitionWorkflow` for their arguments), and any other name, recorded as
        unknown (a typo would otherwise wait unseen).

        The arguments are decoded here rather than by the SDK, which drops a signal it cannot
        decode (a number past Python's 4,300 digits, JSON nested past what pydantic reads, an
        unknown encoding: a raw client's doing) with a worker log line only: here it is recorded
        as a refused message naming the problem, as a malformed one is. Decoding is otherwise the
        SDK's own (its payload converter, no type hint), so replaying a run changes nothing.
        """
        method = _SIGNAL_METHODS.get(name)
        if method is None:
            self._engine.refuse_message(
                name, None, f"unknown signal {name!r}: this run accepts approve, reject, cancel and event"
            )
            return
        try:
            values = workflow.payload_converter().from_payloads([arg.payload for arg in args]) if args else []
        except Exception as err:
            self._engine.refuse_message(
                name,
                None,
                f"malformed {name} signal: its argument could not be read: {clip(decoding_problem(err))}",
            )
            return
        getattr(self, method)(tuple(values))

    def _approve(self, args: tuple[Any, ...]) -> None:
        """Approves the pending approval; the argument is a :class:`Decision`.

        A refused or malformed decision is recorded in the status (see the module docstring).
        """
        decision = self._read("approve", args, Decision)
        if decision is not None:
            self._signal(DecisionKind.APPROVE, decision)

    def _reject(self, args: tuple[Any, ...]) -> None:
        """Rejects the pending approval; the argument is a :class:`Decision` (refusals recorded)."""
        decision = self._read("reject", args, Decision)
        if decision is not None:
            self._signal(DecisionKind.REJECT, decision)

    def _cancel(self, args: tuple[Any, ...]) -> None:
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
        engine = self._engine
        if engine.error is not None and patch_applies(self._options, PATCH_CANCEL_WHILE_ENDING):
            engine.refuse_message(
                "cancel", request.actor, f"the run is already ending ({engine.error_type}: {engine.error})"
            )
            return
        self._begin_cancel(request.clipped())

    def _begin_cancel(self, request: CancelRequest) -> None:
        """Cancels the run for a ``cancel`` signal or a ``cancel_on`` event."""
        if patch_applies(self._options, PATCH_CANCEL_SIGNAL_CANCELED):
            # Temporal's own cancellation, asked for through an activity (a workflow cannot request
            # its own): the run closes as Canceled. Without it within the hand-off time, as before.
            self._cancel_update = request
            self._engine.cancel_request = request
            self._engine.hold_steps = True
            self._handoff = asyncio.create_task(self._request_temporal_cancel(request))
            return
        self._cancel_self(request)

    async def _request_temporal_cancel(self, request: CancelRequest) -> None:
        info = workflow.info()
        try:
            await workflow.execute_activity(
                REQUEST_CANCEL_ACTIVITY,
                args=[info.workflow_id, info.run_id],
                # Bounded even when no worker serves it: the run then cancels itself.
                schedule_to_close_timeout=timedelta(seconds=CANCEL_HANDOFF_S),
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"cancel requested by {request.actor}: asking Temporal to cancel the run",
                priority=self._runtime.priority,
            )
        except ActivityError:
            workflow.logger.warning("could not request Temporal's cancellation; cancelling the run itself")
            self._cancel_self(request)
            return
        await self._await_temporal_cancel(request)

    def _event(self, args: tuple[Any, ...]) -> None:
        """An event from a mailbox this run subscribed to (argument: an :class:`Event`): a waiting
        ``wait_for_event`` step consumes it (at most once per event id), a ``cancel_on`` match
        cancels the run as the ``cancel`` signal does, with the event as the actor."""
        event = self._read("event", args, Event)
        if event is None:
            return
        request = self._engine.deliver_event(event)
        if request is not None:
            self._cancel_from_event(request)

    def _cancel_from_event(self, request: CancelRequest) -> None:
        engine = self._engine
        if (
            engine.state in FINAL_STATES
            or self._self_cancelled is not None
            or self._cancel_update is not None
            or engine.error is not None
        ):
            return  # ending already: nothing more to cancel
        self._begin_cancel(request)

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
        refusal = _argument_problem(request)
        if refusal is not None:
            raise ApplicationError(
                f"cancel request refused: {refusal}", type="CancelRefused", non_retryable=True
            )
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
        problem = decision_size_problem(request) or _argument_problem(request)
        if problem is not None:
            raise ApplicationError(
                f"decision too large: {problem}", type="DecisionRefused", non_retryable=True
            )
        steps = (approval.view.step_id, approval.view.path)
        refusal = self._proof_refusal(
            request.decision.value,
            request.actor,
            request.token,
            steps,
            request.groups,
            since=approval.view.since,
        )
        if refusal is not None:
            raise ApplicationError(refusal, type="DecisionRefused", non_retryable=True)

    def _proof_refusal(
        self,
        decision: str,
        actor: str,
        token: str | None,
        steps: tuple[str, str] | None,
        groups: Sequence[str] = (),
        *,
        since: datetime | None = None,
    ) -> str | None:
        """Why the update's token does not prove it (None: proven, or no proof required and none
        given).

        Called from update validators only: they run when an update is first handled, never on
        replay, so the keys the worker holds now and the check's outcome never reach the replay.
        The actor being a listed approver (the current list, escalations included) is the
        engine's check; here the token must name that actor. Where no proof is required, a token
        given is still refused if it was used already or was minted for an earlier wait at the
        step (before, such a run took a used link again when a loop brought its step back: found
        by an attacker's probe); its signature is not checked there, as no token is needed.
        """
        verifier = decision_tokens.verifier()
        required = self._proof_required or (verifier is not None and verifier.required)
        if token is None:
            return f"proof required: this {decision} must carry a decision token" if required else None
        if not required:
            # No proof needed, so the signature proves nothing here (a token of another issuer or
            # key decides as no token would: a review); a token still decides once, and only the
            # wait it was minted for.
            reused = decision_tokens.reuse_problem(token, self._used_tokens, since)
            return None if reused is None else f"decision token refused: {reused}"
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
            decision_tokens.check_target(
                claims,
                actor,
                steps,
                self._used_tokens,
                groups,
                since=since,
                chain=workflow.info().first_execution_run_id,
                started=self._engine.started_at,
            )
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
        problem = dead_letter_size_problem(decision) or _argument_problem(decision)
        if problem is not None:
            raise ApplicationError(
                f"dead letter decision refused: {problem}", type="DeadLetterRefused", non_retryable=True
            )
        try:
            self._engine.check_dead_letter(decision)
        except DeadLetterError as err:
            raise ApplicationError(str(err), type="DeadLetterRefused", non_retryable=True) from None

    @workflow.query
    def status(self) -> RunStatus:
        """The run's state, current steps, every step so far, pending approvals and variables."""
        status = self._engine.status()
        if self._input_problem is not None or self._resume_problem is not None:
            # It fails before its first step (_run): say so, not "running" (what its placeholder
            # answered before, also once the run had closed as failed).
            error, error_type = (
                (self._input_problem, INVALID_RUN_INPUT)
                if self._input_problem is not None
                else (f"cannot continue the run: {self._resume_problem}", "ContinuationError")
            )
            status = status.model_copy(
                update={"state": RunState.FAILED, "error": error, "error_type": error_type}
            )
        return _fitted_status(status, limit=self._runtime.payload_limit(len(status.steps)))

    @workflow.query(name="pending_approvals")
    def pending_approvals(self, ask: ApprovalsQuery) -> ApprovalsPage:
        """The pending approvals after ``ask``'s cursor (or the one at ``ask.path``), in full, as
        many as one answer takes (:func:`_approvals_page`): what ``status`` had to cut."""
        return _approvals_page(self._engine.pending_approvals(), ask, limit=self._runtime.payload_limit())

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
                name,
                actor if isinstance(actor, str) else None,
                f"malformed {name} signal: {validation_problems(err)}",
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
            and patch_applies(self._options, PATCH_BOUNDED_DECISIONS)
        ):
            self._engine.refuse_decision(kind, decision, f"decision too large: {problem}")
            return
        try:
            self._engine.decide(kind, decision)
        except DecisionError as err:
            workflow.logger.warning(
                "refused %s from %r: %s", kind.value, clip(decision.actor, 200), clip(str(err))
            )

    @staticmethod
    def _check_pinned(run: RunInput) -> None:
        """Refuses a run whose definition is not the one its ``DefinitionHash`` names.

        The input carries the definition without its defaults (``RunInput``); this worker fills
        them in. Should they differ from the starter's (or the input not be what the starter
        hashed), the run fails here, before any step, instead of running another definition. A
        run started without the attribute (a raw client) is not checked: ``_ensure_identity``
        then sets it from this definition. Runs recorded before this check passed it (their
        input held every default), so their histories replay unchanged.
        """
        expected = workflow.info().typed_search_attributes.get(DEFINITION_HASH)
        if expected is not None and not matches_hash(run.definition, expected):
            raise ApplicationError(
                f"the definition in the run input ({run.definition.name!r} v{run.definition.version})"
                f" does not have the content hash {clip(expected, 80)!r} the run was started with:"
                " refusing to run a definition other than the one pinned",
                type="DefinitionHashMismatch",
                non_retryable=True,
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
            if patch_applies(self._options, PATCH_TENANT_ATTRIBUTE):
                identity.append(TENANT.value_set(run.options.tenant))
            workflow.upsert_search_attributes(identity)

    def _at_home(self) -> bool:
        """Whether the workflow instance running on this thread now is this run's own.

        The engine tells the host of a change from ``finally`` blocks (a step ends, a wait ends),
        and those also run when the coroutine of a run a worker dropped without tearing it down
        (a worker shut down while holding it; the SDK's deadlock interruption can leave such runs
        too) is finalized: Python closes a suspended coroutine when the garbage collector reaches
        it, on whichever thread that happens, possibly while another run's activation (or the
        replay of the same run in a new instance) runs on that thread:
        ``workflow.*`` calls then act on that other instance, whose commands gain a search
        attribute upsert or a patch marker its code never asked for, a nondeterminism error
        (issue 12). So the host publishes only from its own instance: in its own activations this
        is always true, and the commands are those recorded before.
        """
        try:
            return asyncio.get_running_loop() is self._home
        except RuntimeError:  # no event loop running on this thread: not in any workflow
            return False

    def _every_step_mode(self) -> bool:
        if self._every_step is None:
            # Runs recorded before the patch upserted CurrentStep on every step and every attribute
            # on first publish; replay keeps that.
            patched = patch_applies(self._options, PATCH_CURRENT_STEP_ON_WAITS)
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
                if patch_applies(self._options, PATCH_UNSET_CURRENT_STEP):
                    self._published.setdefault("step", "")  # started unset: no step yet, as ""
        return self._every_step

    def _publish_wait(self) -> None:
        """A durable wait began or ended: only CurrentStep in ``waits`` mode cares."""
        if self._track_step and self._at_home() and not self._every_step_mode():
            self._publish()

    def _publish(self) -> None:
        """Keeps search attributes and the Web UI's current details in step with the engine.

        Upserts only values that changed: each upsert is a history event.
        """
        if not self._at_home():
            return  # not this run's instance running: an evicted run's clean-up (see _at_home)
        engine = self._engine
        self._telemetry.waiting_for_approval(engine.awaiting_approval)
        every_step = self._every_step_mode()
        values: dict[str, Any] = {"state": engine.state.value, "approval": engine.awaiting_approval}
        if self._track_step:
            if not every_step:
                self._published.setdefault("step", "")  # no wait yet: nothing to publish
            step = next(iter(engine.active if every_step else engine.waiting), "")
            short = len(step) > KEYWORD_MAX_CHARS and patch_applies(self._options, PATCH_CURRENT_STEP_SHORT)
            values["step"] = _fitting_keyword(step, KEYWORD_MAX_CHARS if short else None)
        updates: list[SearchAttributeUpdate[Any]] = []
        for name, key in (("state", RUN_STATE), ("approval", AWAITING_APPROVAL), ("step", CURRENT_STEP)):
            if name in values and self._published.get(name) != values[name]:
                updates.append(key.value_set(values[name]))
                self._published[name] = values[name]
        # WfaAssignees only for runs whose options ask (RunOptions.publish_assignees): the input
        # of a run started before it existed says no, so its history replays without a patch.
        assignees = _fitting_keywords(engine.assignees()) if self._publish_assignees else []
        if assignees != self._published.get("assignees", []):
            updates.append(ASSIGNEES.value_set(assignees) if assignees else ASSIGNEES.value_unset())
            self._published["assignees"] = assignees
        if updates:
            workflow.upsert_search_attributes(updates)
        current = ", ".join(f"{path} ({label})" for path, label in engine.active.items()) or "-"
        details = f"**{engine.state.value}** — current: {current}"
        if details != self._details:
            self._details = details
            workflow.set_current_details(details)


@workflow.defn(name=WORKFLOW_NAME, sandboxed=SANDBOXED)
class RunDefinitionWorkflow(GenericRun):
    """The generic workflow as clients name it: ``RunDefinition``, its argument a :class:`RunInput`,
    its signals ``approve``, ``reject`` (a :class:`Decision`), ``cancel`` (a :class:`CancelRequest`)
    and ``event`` (an :class:`Event`), plus the updates and the ``status`` query of
    :class:`GenericRun`.

    Clients type their calls with it (``RunDefinitionWorkflow.run``, ``RunDefinitionWorkflow.approve``);
    the product's worker does not register it: :class:`DefinitionNamedWorkflow` serves runs of this
    type too, because this class's fixed signature made the SDK fail the workflow task for ever on a
    start with two arguments, and its typed signals made the SDK drop one it could not decode.
    Registered alone (some tests do) it runs the same, with those two weaknesses."""

    @workflow.init
    def __init__(self, run: RunArgument = NO_RUN_ARGUMENT) -> None:
        self._init([] if run is None else [run])

    @workflow.run
    async def run(self, run: RunArgument = NO_RUN_ARGUMENT) -> RunResult:
        """Executes the definition; fails the workflow when the run fails."""
        return await self._run()

    @workflow.signal(name="approve")
    def approve(self, *args: Any) -> None:
        """Approves the pending approval; the argument is a :class:`Decision`."""
        self._approve(args)

    @workflow.signal(name="reject")
    def reject(self, *args: Any) -> None:
        """Rejects the pending approval; the argument is a :class:`Decision`."""
        self._reject(args)

    @workflow.signal(name="cancel")
    def cancel(self, *args: Any) -> None:
        """Cancels the run; the argument is a :class:`CancelRequest`."""
        self._cancel(args)

    @workflow.signal(name="event")
    def event(self, *args: Any) -> None:
        """An event from a mailbox this run subscribed to; the argument is an :class:`Event`."""
        self._event(args)


@workflow.defn(dynamic=True, sandboxed=SANDBOXED)
class DefinitionNamedWorkflow(GenericRun):
    """The generic workflow as the worker serves it, under every workflow type it has no other
    workflow for: the definition's name (what the Web UI lists) and ``RunDefinition`` (runs started
    as :class:`RunDefinitionWorkflow` names it, and their replays). Its arguments arrive raw, any
    number of them, and are decoded by hand (:func:`_read_run_input`), so a start with none or two
    fails the run with ``InvalidRunInput``; its signals arrive through the one dynamic handler
    (:meth:`GenericRun.on_signal`), so one the SDK could not decode is recorded, not dropped.

    The other workflows of this product are registered under names of their own
    (``EventMailbox``...), which take precedence.
    """

    @workflow.init
    def __init__(self, args: Sequence[RawValue]) -> None:
        self._init(args)

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> RunResult:
        return await self._run()


WORKFLOWS: tuple[type, ...] = (DefinitionNamedWorkflow,)
"""The product's run workflows, for ``Worker(workflows=...)`` and the replayer: the dynamic
workflow serves both workflow types (see :class:`DefinitionNamedWorkflow`)."""
