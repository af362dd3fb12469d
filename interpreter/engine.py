"""The evaluator: walks a definition's steps and drives a :class:`Runtime`.

The engine is deterministic and does no I/O: every side effect, timer and wait goes through the
runtime, and the clock is the runtime's. In production the runtime is the generic Temporal workflow
(:mod:`workflows.generic`); in unit tests it is a fake with a virtual clock. Everything the engine
does depends only on the definition, the run input, what the runtime returned and the decisions it
was given, so a replay makes the same calls in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar, assert_never, runtime_checkable

from pydantic import TypeAdapter

from interpreter.actions import AUTOESCAPED_INPUTS, ActionRequest, ActionResult, static_input_fields
from interpreter.business_hours import BusinessHours, add_business_time, check_timezone, delay_until_open
from interpreter.continuation import (
    COMPENSATING_KIND,
    DEAD_LETTER_KIND,
    DELAY_KIND,
    EVENT_WAIT_KIND,
    HUMAN_TASK_KIND,
    MAX_CARRIED_RECORDS,
    CarriedApproval,
    CarriedCompensation,
    CarriedDelay,
    CarriedEnding,
    CarriedEventWait,
    CarriedPark,
    CarriedScope,
    Continuation,
    aware,
    carried_ids,
)
from interpreter.durations import format_duration, parse_duration
from interpreter.events import EVENT_CLOCK_SKEW_S, MAX_EVENT_KEY_CHARS, Event, EventSubscription, mailbox_id
from interpreter.inert import SECRET_REF_START, as_text, holds_reference, keep_recorded, make_inert, seal
from interpreter.model import (
    FAN_OUT_ABOVE,
    FAN_OUT_BATCH_SIZE,
    FAN_OUT_MAX_BATCH_SIZE,
    MAX_SUBFLOW_DEPTH,
    ApprovalStep,
    Branch,
    ConditionStep,
    Definition,
    DelayStep,
    FailStep,
    FieldType,
    ForeachStep,
    FormField,
    Goto,
    HumanTaskStep,
    JoinStrategy,
    ParallelStep,
    RetryPolicy,
    SetStep,
    Step,
    SubflowStep,
    SucceedStep,
    SwitchStep,
    TaskStep,
    Timeouts,
    WaitForEventStep,
    children,
)
from interpreter.sizes import RUN_STATE_BUDGET, VALUE_MAX_DEPTH, json_depth, json_size, temporal_id
from interpreter.state import (
    DECISION_LINKS_ACTIVITY,
    FINAL_STATES,
    MAX_ACTOR_CHARS,
    MAX_DECISIONS,
    MAX_REFUSALS,
    CancelRequest,
    DeadLetterAction,
    DeadLetterDecision,
    DeadLetterRecord,
    DeadLetterResolution,
    Decision,
    DecisionKind,
    DecisionLinksInput,
    DecisionRecord,
    ForeachBatch,
    LinkRecipient,
    ParkedStep,
    PendingApproval,
    PendingEvent,
    RefusedMessage,
    RunResult,
    RunState,
    RunStatus,
    StepRecord,
    StepStatus,
    clip,
)
from interpreter.templates import (
    WORK_BUDGET,
    ArgumentSizeError,
    OversizedValueError,
    TemplateError,
    UncountedWorkError,
    UnreadableValueError,
    evaluate,
    last_evaluation_work,
    last_work,
    render,
    render_html,
    unbounded_arguments,
    unbounded_sizes,
    unbounded_work,
    unchecked_values,
)

PATCH_PAYLOAD_BUDGETS = "payload-budgets"
"""Patch id: an output that would bring the run's state over its budget fails its step. Asked only
when the budget would be exceeded, so runs within it carry no marker; a history recorded before the
change, where such a run went on (and later got stuck), replays as it was."""

PATCH_DECLARED_FORM_FIELDS = "declared-form-fields"
"""Patch id: a decision's data must match the approval's declared form (no data without ``fields``,
required fields, types, lengths, enum values). Before it, only the names were checked, and only
when ``fields`` was given. Asked only where a decision the old rule accepted is now refused (a
signal, or the update's handler, both run again on replay), so a history recorded before the
change, where such a decision was accepted, replays as it was."""

PATCH_TEMPLATE_VALUES = "template-values"
"""Patch id: a template that returns a value no JSON reader takes back fails
(``TemplateError``): an integer over ``templates.MAX_RESULT_INT_BITS`` (about 3,900 digits), a
string with a lone surrogate. Before, a run could keep a 5,001-digit number
(``{{ (10**100)**50 }}``), which its parent (a fan-out slice's, a subflow's) could not decode, its
workflow task failing for ever, nor a client its result or status; a lone surrogate
(``{{ '\\ud800' }}``) in its output or a ``fail`` step's message failed its closing workflow task
for ever. Asked only when a template returns one: a run recorded before renders it as it did."""

PATCH_DECISIONS_KEPT = "decisions-kept"
"""Patch id: a run keeps its last :data:`~interpreter.state.MAX_DECISIONS` decisions, accepted or
refused, and counts the older ones in ``decisions_dropped``. Before, it kept every accepted one, in
its status and in what it carries when it continues as new: an approval in a loop (a reminder
sequence that asks every day), decided 700 times with a reason of 1,000 control characters (3 KB
each as JSON once clipped, within a decision's bounds), took the status answer past 2 MiB, every
query failing from then on, and the carried state with it. Asked where a decision would be dropped:
it changes the size of what a run carries on continuing as new."""
PATCH_TASK_WORK_BUDGET = "task-work-budget"
"""Patch id: template work in one workflow task is bounded in total (see ``TASK_WORK_BUDGET``);
asked only when the bound is passed, so runs within it carry no marker."""

TASK_WORK_BUDGET = 2 * WORK_BUDGET
"""Template work all of a run's evaluations may spend in one workflow task together. Each evaluation
has its own budget, but concurrent foreach items or parallel branches evaluate in the same workflow
task, which Temporal fails (and retries for ever) when it runs over 2 seconds; past this total the
step that evaluates fails instead, with a message that says so."""

PATCH_COMPENSATE_IN_FLIGHT = "compensate-in-flight-on-cancel"
"""Patch id: a task cancelled while its action is in flight registers its compensation."""

PATCH_FOREACH_CHILDREN = "foreach-children"
"""Patch id: a foreach over more items than its ``fan_out_above`` runs them in child workflows.
Asked only for such a list, so runs of smaller lists carry no marker, and a history recorded before
the change (a long list run in the run itself) replays as it went on."""

PATCH_CONTINUE_AS_NEW = "continue-as-new"
"""Patch id: the run continues as new at a safe point when its host asks (history budget, or
Temporal's suggestion). Asked only at the moment it would continue, so runs that never reach that
point carry no marker, and a history recorded before the change replays as it went on."""

PATCH_CONTINUE_AS_NEW_WAITS = "continue-as-new-waits"
"""Patch id: a top-level ``delay`` and a top-level task parked on a dead letter wait so that the run
can continue as new while they wait (the delay's timer runs beside a condition that also wakes when
the host asks; the park's wait wakes too). Asked when such a wait starts in a run that may continue
as new, so a history recorded before the change replays its plain waits."""

PATCH_CONTINUE_AS_NEW_TASKS = "continue-as-new-human-tasks"
"""Patch id: a top-level ``human_task`` waits so that the run can continue as new while it waits
(its wait also wakes when the host asks), the task pending in the next run with the same view.
Asked when such a wait starts in a run that may continue as new: a history recorded before the
change replays its wait, which did not wake for the host (waking cancels the wait's timer)."""

PATCH_CONTINUE_AS_NEW_BRANCHES = "continue-as-new-in-branches"
"""Patch id: the safe points to continue as new reach into the branches of a top-level ``condition``
or ``switch`` (and of such steps in those branches, at any depth): between two steps of such a
branch, and while a wait in it waits. Asked at a boundary only when the run would continue there,
and when a wait in such a branch starts in a run that may continue as new: a history recorded
before the change replays its branches as they went on."""

BRANCHES_KIND = "branches"
"""Key of the branches a run continued in (outermost first) in ``Continuation.kinds``: for each, the
``condition`` or ``switch`` step's id, the branch taken and the index in its steps where the next
run goes on."""

PATCH_CONTINUE_AS_NEW_PARALLEL = "continue-as-new-in-parallel"
"""Patch id: the branches of a ``parallel`` step, and the items of a ``foreach`` run in the run,
that is itself at a safe point (top-level, or in the branches of such a ``condition`` or
``switch``) continue as new too. When the host asks at a boundary between two steps of a branch,
and no step waits but in a ``delay`` among a branch's own steps, each branch stops at its next
boundary (or sleeps on in that delay); once every branch that has not finished stands at one (or
sleeps), the run continues as new carrying each branch's position (or output, when done, and the
delay it sleeps in) and goes on with all of them in the next run (:data:`PARALLEL_KIND`). A branch
that starts another wait meanwhile, or a stop that takes longer than :data:`PARALLEL_DRAIN_WAIT_S`,
lets the branches go on (tried again after :data:`PARALLEL_DRAIN_RETRY_S`). Asked only when a
branch would stop for it: a history recorded before the change replays its branches as they went
on."""

PATCH_CONTINUE_AS_NEW_LANE_PEOPLE = "continue-as-new-lane-people"
"""Patch id: an ``approval`` or ``human_task`` among a ``parallel`` branch's own steps (a
``foreach`` item's) that waits for its decision no longer keeps the other branches' loops in one
run: while it waits, the branches stop for a continue-as-new as if it slept in a delay, and the
pending step travels in the branch's carried entry (its view: approvers added by escalations, the
escalation count, ``since`` and ``deadline``; and a decision accepted while the run switched).
Asked when such a wait starts in a branch that may continue as new: a history recorded before the
change replays its branches as they went on."""

PATCH_DRAIN_FIXES = "continue-as-new-in-parallel-fixes"
"""Patch id: fixes of :data:`PATCH_CONTINUE_AS_NEW_PARALLEL`. A foreach item about to start while
the others stop for a continue-as-new waits only until the stop ends, a step starts waiting (as the
stopped items do), no started item is left that could stop (the one that began the stop before its
own ``delay`` finished instead, the delay skipped or of no length: the stop could never complete),
or the stop's :data:`PARALLEL_DRAIN_WAIT_S` pass (it holds that timer when no stopped item does);
the carried entry's budget counts the running branches' last outputs (carried too); and a
``foreach`` nested in the body of a fanned-out foreach's child does not stop for the child's
continue-as-new (only the child's own items do). Asked where each applies: a history recorded
before the change replays as it went."""

PATCH_CONTINUE_AS_NEW_LANE_EVENTS = "continue-as-new-lane-events"
"""Patch id: a ``wait_for_event`` among a ``parallel`` branch's own steps (a ``foreach`` item's)
that waits for its event no longer keeps the other branches' loops in one run: while it waits
(subscribed, no event taken, its timeout not come), the branches stop for a continue-as-new as if
it slept in a delay; the wait travels in the branch's carried entry (its key, window and deadline,
and an event taken while the run switched), its subscription stays, and the next run waits from
its first workflow task (subscribing again under the same name: an event published between the
runs is in the answer); a branch whose next step is such a wait goes into it while the others stop.
Applies only to runs started at its generation or above (the host never asks ``workflow.patched``
for it: ``workflows.generic.CARRIED_FORMAT_PATCHES``), so a run recorded before replays its
branches as they went on, and an older build can read any snapshot of an older run."""

PATCH_CONTINUE_AS_NEW_LANE_PARKS = "continue-as-new-lane-parks"
"""Patch id: a task among a ``parallel`` branch's own steps (a ``foreach`` item's) parked on a
dead letter no longer keeps the other branches' loops in one run: while it waits for an operator's
decision (its park timeout not come), the branches stop for a continue-as-new as if it slept in a
delay; the park travels in the branch's carried entry (the same dead letter row, park id and
deadline, the failed call's request and activity id, the redrive count, and a decision accepted
while the run switched) and stays shown and decidable until the switch; the row stays open for
the next run, which waits on it from its first workflow task. Applies only to runs started at its
generation or above (as :data:`PATCH_CONTINUE_AS_NEW_LANE_EVENTS`)."""

PATCH_ABANDON_CLOSES_WAITS = "abandon-closes-waits"
"""Patch id: a run that cannot continue as new after all (its next run's input too large:
:meth:`Engine.abandon_continuation`) closes what it kept open for that run: the mailbox
subscriptions of its event waits, and the dead letter rows of its parks (resolved ``cancelled``).
Asked only when there is one to close: a history recorded before ended without."""

PATCH_LATE_EVENTS_REFUSED = "late-events-refused"
"""Patch id: a top-level ``wait_for_event`` resumed by the next run of a chain after its deadline
passed between the runs times out, as an uninterrupted run would have, instead of taking an event
the mailbox's answer holds that was published after the deadline (a branch's wait does so from
:data:`PATCH_CONTINUE_AS_NEW_LANE_EVENTS` on). Asked only when the answer holds such an event."""

PATCH_CONTINUE_AS_NEW_LANE_BRANCHES = "continue-as-new-lane-branches"
"""Patch id: a wait (a ``delay``, an ``approval`` or ``human_task`` waiting for its decision, a
``wait_for_event`` waiting for its event, a task parked on a dead letter) inside the branch of a
``condition`` or ``switch`` among a ``parallel`` branch's own steps (a ``foreach`` item's), at any
depth of such steps, no longer keeps the other branches' loops in one run: it is carried as one
among the branch's own steps is, with the ``condition``/``switch`` branches it sits in (for each,
outermost first, the step's id, the branch taken and the index in its steps); and the branch may
stop for a continue-as-new between two steps of such a branch as between two of its own. The next
run goes back into the same branches without evaluating their conditions again, and waits on from
its first task (or runs the step it stood before). Applies only to runs started at its generation or above (as
:data:`PATCH_CONTINUE_AS_NEW_LANE_EVENTS`)."""

PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES = "continue-as-new-failed-branches"
"""Patch id: once a branch of a ``join: any`` ``parallel`` step failed, the others may still stop
for a continue-as-new (before, not at all: a failed branch was not carried, so the others' loops
stayed in one run): the failed branch is carried as failed (its error's message and type, whether
it compensates and ends the run, and its place among the branch failures), and in the next run it
fails again at once, so the step ends as it would have: with the first branch to succeed, or, when
every branch failed, with the first failure. Applies only to runs started at its generation or
above (as :data:`PATCH_CONTINUE_AS_NEW_LANE_EVENTS`)."""

PATCH_CONTINUE_AS_NEW_LANE_NESTED = "continue-as-new-lane-nested"
"""Patch id: a ``parallel`` or ``foreach`` step among a branch's (an item's) own steps, at any depth
of such steps (and of the ``condition``/``switch`` branches of
:data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`), no longer keeps the other branches' loops in one run:
its own branches (items) stop at their boundaries, or wait in their own delays, approvals, human
tasks, event waits or parks, as the outer ones do, and the branch running it is carried with the
nested step's entry (``nested``: the same shape as :data:`PARALLEL_KIND`'s, its waits at their
paths). The next run goes back into the nested step without evaluating it again (a ``foreach``'s
list as it was), each of its branches where it stood. Applies only to runs started at its
generation or above (as :data:`PATCH_CONTINUE_AS_NEW_LANE_EVENTS`)."""

PATCH_PARK_IDS_PAST_NINE = "park-ids-past-nine"
"""Patch id: a park a branch (item) carried whose park number is 10-19, 100-199, ... (``~p10``: the
step's tenth park in the chain) is read as its step's; before, the next run refused the genuine
snapshot and the chain failed (found by a differential probe). Asked only for such a number."""

PATCH_TASK_STEP_BUDGET = "task-step-budget"
"""Patch id: a run that executed :data:`TASK_STEP_BUDGET` steps in one activation ends it (a no-op
local activity, :meth:`Runtime.end_task`) before its next step. A long loop of steps that call nothing (``set``,
``condition``, ...), valid at up to 5,000 visits a step, ran in one task for seconds, past the SDK's
deadlock limit (8 s here, 2 s by default) on a busy machine: the task failed, and failed again on
every retry. Asked only when the bound is passed, so runs within it carry no marker."""

PATCH_VALUE_DEPTH = "value-depth"
"""Patch id: an output or variable nested more than :data:`interpreter.sizes.VALUE_MAX_DEPTH`
levels deep fails its step (``ValueTooDeep``), as one over the state budget does. A template could
build one (``[vars.x]`` in a loop); nested near 200 levels, the run's result, status or next run's
input could be written but not read back, and the workflow task failed for ever. Asked only for
such a value."""

PATCH_BATCH_BOUNDS = "batch-bounds"
"""Patch id: a fanned-out foreach's child whose slice holds more than
:data:`interpreter.model.FAN_OUT_MAX_BATCH_SIZE` items, or runs more of them at once than its step's
``concurrency`` (the highest of the steps of that id, should a raw client's definition repeat it),
fails (``InvalidBatch``) before any item runs. No parent sends such a slice; a raw client's forged
one (5,000 items, all at once) scheduled every item in one workflow task, past the server's limit
of pending activities, and the task failed on every retry. Asked only for such a slice."""

TASK_STEP_BUDGET = 1000
"""Steps one activation may execute before the run ends it (about 25 ms of engine work on this
machine, at 25 µs a step; see :data:`PATCH_TASK_STEP_BUDGET`)."""

PARALLEL_KIND = "parallel"
"""Key of the ``parallel`` or ``foreach`` step a run continued in (``Continuation.kinds``): the step's
id and, per branch in order, its id and either ``done`` with its output, ``failed`` with its error
(:data:`PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES`), or the ``position`` in its
steps where it goes on, with its ``last_output`` and the ``delay`` it sleeps in, the ``person``
(approval or human task), the ``event`` wait or the ``park`` it waits in, if any, and ``within``:
the ``condition``/``switch`` branches that wait is in (:data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`), or
``nested``: the entry, of this shape, of the ``parallel``/``foreach`` step at its position
(:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`); for a ``foreach``, its ``items`` and per item ``None``
(not started), ``done`` or such a place with the item's own ``steps``."""

PARALLEL_CARRY_BUDGET = 256 * 1024
"""Most bytes (as JSON) a carried ``parallel``/``foreach`` entry may hold beside the run's state (a
foreach's list, finished branches' outputs, items' own steps): the snapshot travels in the next
run's input, under Temporal's 2 MiB payload limit with the state itself. Above it the branches do
not stop for a continue-as-new (the history guard still bounds the run)."""

PARALLEL_DRAIN_WAIT_S = 60.0
"""How long branches that stopped for a continue-as-new wait for the others to reach a boundary."""

PRESSED_DRAIN_WAIT_S = 5.0
"""The same for the branches of an ``any`` or ``first`` join stopping because the history presses
(:data:`PATCH_CONTINUE_AS_NEW_ANY_PRESSED`): which branch finishes first decides such a step, so a
branch holds there only briefly (a branch in a long activity costs a loop racing it 5 s in 605)."""

PARALLEL_DRAIN_RETRY_S = 600.0
"""After a stop that took too long, how long before the branches stop again for it (a branch whose
step runs for minutes holds the others for at most a tenth of the time)."""

PATCH_DROP_UNRESUMED = "drop-unresumed-waits"
"""Patch id: a continued run that ends before it went back into the wait (or branch) the previous
run carried (cancelled or failed at its start) ends that wait: no longer pending nor decidable, its
record cancelled, its mailbox subscription ended, its dead letter row closed. Asked only then."""

PATCH_CONTINUE_AS_NEW_EVENTS = "continue-as-new-event-waits"
"""Patch id: a top-level ``wait_for_event`` waits so that the run can continue as new while it waits
(its wait also wakes when the host asks); the next run keeps the wait's window, deadline and
mailbox subscription (it subscribes again under the same name, and gets what was published since
the window began). Asked when such a wait starts in a run that may continue as new: a history
recorded before the change replays its wait, which did not wake for the host."""

PATCH_HISTORY_GUARD = "history-guard"
"""Patch id: a step that would start once the run's history has reached :data:`HISTORY_GUARD_EVENTS`
events or :data:`HISTORY_GUARD_BYTES` bytes fails the run (``HistoryLimit``, compensations run)
instead of the run going on until Temporal terminates it at its own limit (51,200 events or 50 MB by
default), with no compensation and no message of ours. Asked only then, so runs below it carry no
marker; a history recorded before the change replays as it went on."""

HISTORY_GUARD_EVENTS = 40_000
"""Events of history at which a step no longer starts (see :data:`PATCH_HISTORY_GUARD`): a run
continues as new long before (Temporal suggests it near 4,096), except where it cannot (in the
steps of an escalation or of one compensation, between the compensations of a cancelled run or of a
run of a generation before 11; in runs of earlier generations, while a step waits inside
a step nested in a ``parallel`` or ``foreach`` branch) or when its continuing was declined; the 11,200 events
left under Temporal's limit are for its compensations."""

RESULT_ROOM_BESIDE_OUTPUT = 4 * 1024
"""What a run's result holds beside its output when its step records are left out (state, error):
an output must fit in :attr:`RunInfo.result_limit` less this."""
HISTORY_GUARD_BYTES = 40 * 1024 * 1024
"""Bytes of history at which a step no longer starts (Temporal's limit: 50 MiB).

Both limits, and where the guard is checked, are part of what a run of generation 2 or later
replays (it applies the guard without a marker): changing them takes a new patch."""


PATCH_COMPENSATE_HERE_BUDGET = "compensate-here-budget"
"""Patch id: a failed run whose switch between two compensations was declined (its next run's input
too large) goes on counting its compensations' step budget where it was; before, the budget was
reset a second time, so up to twice ``max_step_executions`` compensation steps ran. Asked only on
that path."""
PATCH_CONTINUE_AS_NEW_COMPENSATING = "continue-as-new-compensating"
"""Patch id: a run that fails (or ends by ``on_failure: compensate``) continues as new between two of
its compensations when the host asks (Temporal suggests it, or the history budget is spent), carrying
the compensations left and how the run ends (:data:`interpreter.continuation.COMPENSATING_KIND`):
a saga longer than one run's history runs every compensation and ends in words, where before the
server terminated the run part way through, with compensations never run and no message. Not while
a cancellation ends the run (only the run the cancellation reached can close as Canceled), nor in a
fan-out child (a slice holds at most 1,000 items). It changes what a snapshot carries, so it applies
only to runs started at its generation."""

PATCH_CANCEL_ON_FROM_CHAIN_START = "cancel-on-from-chain-start"
"""Patch id: a continued run subscribes to its ``cancel_on`` events from its chain's start, not its
own: one published while the previous run closed (or signalled before this run's first step
subscribed) cancels it. Asked only by a continued run that has ``cancel_on``."""

PATCH_FAN_OUT_TREE_BOUND = "fan-out-tree-bound"
"""Patch id: a fanned-out ``foreach`` first counts its run tree (the local activity
``wfa.tree_runs``) and fails the run with ``FanOutTreeLimitExceeded`` when its child runs would
bring the tree past the worker's ``WFA_MAX_RUNS_PER_TREE``; before, nested fanned-out steps
multiplied their slices unbounded (each child has its own step budget). Asked only by a fan-out."""

PATCH_CONTINUE_AS_NEW_ANY_PRESSED = "continue-as-new-any-pressed"
"""Patch id: once the run's history is pressed (:meth:`Engine._history_pressed`: twice, and 100
events more than, what it was when a branch of such a join first could not stop for a wanted
continue-as-new, or half of the history guard's limits), the branches of a ``join: any`` or
``first`` step stop at their boundaries for a continue-as-new as an ``all`` join's do, each waiting for the others (at most
:data:`PRESSED_DRAIN_WAIT_S`, then they go on and stop again 10 minutes later); before (and
below that), such a branch stopped only where every other one slept or waited, so branches that
all loop never let the run continue as new: it went on in one run until the history guard failed
it, though ``max_visits`` allowed the loops. Which branch wins can then differ from an
uninterrupted run's where their ends are close (a stopped branch waits for the others). The
snapshot is the one an ``all`` join carries, which earlier builds read. Asked only when a branch
would stop so."""

PATCH_EVENT_IDS_BY_ADDRESS = "event-ids-by-address"
"""Patch id: a run takes an event at most once per type, key and id (a mailbox's ids are unique
within its type and key only). Before, it remembered the ids alone, and an event whose id it had
taken with another type or key (one tracking number as the id of ``order.shipped``, then of
``order.delivered``) was dropped without a word: the publisher was told it was delivered, the wait
timed out (found by an attacker's probe). Only in runs started at its generation: the ids a run
carries on continuing as new change form (``workflows.generic.NEVER_ASKED_PATCHES``)."""

PATCH_DATA_TEXT = "data-text"
"""Patch id: data that crosses into a run already inert keeps its text. An event comes from its
mailbox inert, so the run seals its data (escapes only what is live) instead of escaping it again;
a subflow's child gets its input as the text it stands for (``interpreter.inert.as_text``: the
child escapes its input where it starts) and its output is sealed on its way back. Before, each
crossing escaped ``${secret:`` once more, so data holding that text reached the actions with a
``$`` more per crossing (an event: ``$${secret:X}`` for ``${secret:X}``), against the README's
promise that a reference in data reaches the receiver as the text it was. An event's fields are
checked against the text too (a ``max_length`` counted the escape). Only in runs started at its
generation (``workflows.generic.NEVER_ASKED_PATCHES``): it changes by a byte per reference what the
send guard and the budgets count, which a build of an earlier generation replaying the run would
count otherwise."""

PATCH_APPROVAL_TIMEOUT_SAGA = "approval-timeout-saga"
"""Patch id: an approval that timed out into its ``on_timeout`` goto does not join the saga: nobody
approved anything, so its ``compensate`` ("undo what was approved") does not run when the run is
later compensated. Before, any jump out of the approval registered it (found by a review of the
README's claims: a later failure ran the compensation of an approval nobody gave). Only in runs
started at its generation (``workflows.generic.NEVER_ASKED_PATCHES``), as ``data-text``."""

PATCH_REDRIVE_KEEPS_RECORDED = "redrive-keeps-recorded"
"""Patch id: a redrive's input keeps the parked step's recorded values where the operator left them
(``interpreter.inert.keep_recorded``); what the operator changed or added is inert. Before, the
whole input was made inert, so a key the operator did not touch (``FlowClient.redrive`` merges the
correction into the recorded input) lost the definition's secret (a header sent the text
``Bearer ${secret:TOKEN}`` instead of the token) and data's escaped text gained a ``$`` (found by a
victim's test). Only in runs started at its generation (``workflows.generic.NEVER_ASKED_PATCHES``),
as ``data-text``: it changes by a byte per reference the size the send guard counts."""

PATCH_TEMPLATE_SIZES = "template-sizes"
"""Patch id: a template may not multiply integers past 100,000 bits, nor turn into text a value of
more than ``MAX_RESULT_CHARS`` characters counted with every shared reference (two million per
render): such an evaluation fails (``interpreter.templates.OversizedValueError``) as a step failure.
Before, each product and each conversion was charged as if it were small: squaring in a loop, or
``[a]*10`` nested four times then ``| string``, held a workflow task in one C call past the
worker's deadlock limit, retried for ever, stalling the worker for every tenant and its memory
past 1 GiB (found by an attacker's probe). Asked only when an evaluation would be refused (a run
that rendered such a value before goes on rendering it); a run stuck there takes the new answer."""

PATCH_TEMPLATE_ARGUMENTS = "template-arguments"
"""Patch id: what filters and tests read of their arguments beyond the value they apply to is
counted (two million steps per render: ``select('in', a_list)`` scans the list for every item), and
text an argument multiplies is counted before it is made (``tojson``'s indent, ``join``'s
separator, ``indent``, ``wordwrap``'s wrap string, ``translate``'s table, format widths
together), past ``MAX_RESULT_CHARS``: such an evaluation fails
(``interpreter.templates.ArgumentSizeError``) as a step failure. Before, ``select('in', b)`` of
30,000 by 80,000 items held the workflow task past the deadlock limit at every attempt, and
``tojson(1000000)`` built 2 GB of text before its size was checked (found by an attacker's
probe). Asked only when an evaluation would be refused (a run that rendered such a template before
goes on rendering it); a run stuck there takes the new answer."""

PATCH_TEMPLATE_WORK = "template-work"
"""Patch id: work templates do in single calls that no budget counted is counted (two million steps
per render: text that padding, indenting, batching and replacing make; values compared inside tests
and sorting filters; arguments turned into text), and an argument or a compared value of more than
``MAX_RESULT_CHARS`` characters is refused: such an evaluation fails
(``interpreter.templates.UncountedWorkError``) as a step failure. And a workflow task's evaluations
together count, besides their operations, their steps in single operations, in reading arguments
and in this work (64 to an operation). Before, ``'x' | replace('y', c)`` of a nested list built a
gigabyte of text and ran out of memory, ``a is eq(b)`` compared for 5.6 s in one call,
``map('center', 100000)`` made a gigabyte, and 480 evaluations of one task spent 46 s, little of it
operations (found by an attacker's probe). Asked only when an evaluation or a task would be
refused (a run that did such work before goes on doing it); a run stuck there takes the new
answer."""

PATCH_FAN_OUT_HISTORY_GUARD = "fan-out-history-guard"
"""Patch id: a fanned-out ``foreach`` keeps to the history guard (:data:`HISTORY_GUARD_EVENTS`,
:data:`HISTORY_GUARD_BYTES`), which the run's own steps keep to: it fails the run
(``HistoryLimit``, compensations run) before its first child when its children need more events
than the room left (each costs its parent at least :data:`FAN_OUT_CHILD_MIN_EVENTS`), and before a
child starts once the history reached the guard. Before, the whole fan-out was one step, checked
once before its first child: ``batch_size: 1`` over 10,000 items wrote about 9 events a child to
the parent, and Temporal terminated the run at its 51,200 events with no message and no
compensation (found by an attacker's probe). Asked only when a fan-out would be refused."""
PATCH_RUN_WORK_BUDGET = "run-work-budget"
"""Patch id: a run whose interpreter work since it started passed :data:`RUN_WORK_BUDGET`
continues as new at its next safe point, as when its history budget is spent. A worker that lost
the run from its cache (restarted, or evicted it) replays the run's whole history in one workflow
task, which Temporal times out after 10 s: every step and every evaluation again. The history
budget bounds events, not that work: a loop of templated ``set`` steps with a ``delay`` in each
turn did about 0.14 s of template work a turn, within every bound; after 150 turns a cold replay
took 21.8 s, and after 250 a worker started fresh had not finished the run 150 s later, its task
timing out (found by an attacker's probe). Asked only once the budget is passed."""
RUN_WORK_BUDGET = 1_000_000
"""Interpreter work a run may do before it continues as new (:data:`PATCH_RUN_WORK_BUDGET`): its
templates' operations, counting their single operations (see :data:`PATCH_TEMPLATE_WORK`;
:func:`~interpreter.templates.last_evaluation_work`, the same in every worker process: compiling
counts in no evaluation), plus :data:`STEP_WORK` for each step it executes. Ten evaluations at their whole budget, or 20,000
steps that evaluate little. A run the budget cut (about 11 turns of the probe's loop) took a cold
replay 1.0-1.1 s on this project's 2-core machines, idle."""
STEP_WORK = 50
"""What a step costs in :data:`RUN_WORK_BUDGET`'s operations besides its templates (the engine's
own work for it: 25-100 µs)."""
FAN_OUT_CHILD_MIN_EVENTS = 3
"""Events a fanned-out child adds to its parent's history at the least: its start initiated, its
start, its close (workflow tasks come on top)."""

PATCH_LINK_WAITS = "link-waits"
"""Patch id: a step's decision links name the wait they are for (``DecisionLinksInput.since``, the
tokens' ``since`` claim), so a link mailed while a step waited does not decide it when a loop
brings it back (found by an attacker's probe). Only in runs started at its generation
(``workflows.generic.NEVER_ASKED_PATCHES``): it changes the size of the links activity's input,
which the send guard counts (a review)."""

PATCH_DECISION_TEXT = "decision-text"
"""Patch id: an approval's ``reason`` and a task's ``comment`` are data, made inert where they enter
the run like the decision's form data (``interpreter.inert.make_inert``). Before, they were taken
as they came, so a template that wrote them into a step's input sealed them there and an escaped
``$${secret:X}`` a person typed reached the receiver as ``${secret:X}``, a ``$`` short (found by an
attacker's probe; nothing was ever resolved from them). Only in runs started at its generation
(``workflows.generic.NEVER_ASKED_PATCHES``), as ``data-text``: it changes by a byte per reference
the size of the step's output the budgets count."""

PATCH_MAILBOX_IDS = "mailbox-ids"
"""Patch id: a run subscribes at the mailbox named by the digest of its tenant, type and key
(``interpreter.events.mailbox_id``), recorded in each wait's view (``PendingEvent.mailbox``,
carried on continuing as new). Before, the id hashed the key alone, so tenants and types holding
``-`` could name one mailbox, and in a namespace shared by tenants one could take the other's
first (found by an attacker's probe). Only in runs started at its generation
(``workflows.generic.NEVER_ASKED_PATCHES``): publishers of an earlier build, still publishing
during a rollout, reach only the legacy ids, where the runs of earlier generations go on waiting
(a review); publishers of this build publish at both."""

CONSUMED_EVENTS_KIND = "consumed_events"
"""Key of the consumed event ids in a continue-as-new snapshot (``Continuation.kinds``)."""
MAX_CARRIED_EVENT_IDS = 1000
"""Most consumed event ids a run carries across continue-as-new (the most recent)."""


@dataclass(frozen=True)
class ActionCall:
    """One action the engine asks the runtime to execute (one Temporal activity).

    Attributes:
        activity_id: Unique among the run's activities: the step path, plus ``#n`` on the n-th
            visit of a step reached again by a jump.
        summary: What the Web UI shows for the activity: the step's name.
        task_queue: The task queue the step names (a team's own workers); None: the run's own.
        compensating: The step is one of a compensation's (the run is undoing its work): a host's
            guards that refuse new work near a limit let it go, as the engine's step guard does.
    """

    step_id: str
    path: str
    action: str
    activity_id: str
    summary: str
    request: ActionRequest
    retry: RetryPolicy
    timeouts: Timeouts
    task_queue: str | None = None
    compensating: bool = False


class ActionFailedError(Exception):
    """Raised by a runtime when an action failed for good (non-retryable, or retries exhausted)."""

    def __init__(self, message: str, error_type: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.attempts = attempts


class Runtime(Protocol):
    """What the engine needs from its host."""

    def now(self) -> datetime:
        """The current (deterministic) time, timezone-aware UTC."""
        ...

    async def execute_action(self, call: ActionCall) -> ActionResult:
        """Runs an action with the call's retry policy and timeouts.

        Raises:
            ActionFailedError: When the action failed for good.
        """
        ...

    async def sleep(self, seconds: float, summary: str) -> None:
        """A durable timer."""
        ...

    async def wait_condition(
        self, predicate: Callable[[], bool], timeout_s: float | None, summary: str
    ) -> bool:
        """Waits until ``predicate()`` is true (returns True) or the timeout passes (returns False)."""
        ...

    def state_changed(self) -> None:
        """Called whenever the run's state, current steps or pending approvals change."""
        ...

    def waiting_changed(self) -> None:
        """Called when the run starts or stops waiting durably at a step (``Engine.waiting``)."""
        ...

    async def record_dead_letter(self, record: DeadLetterRecord) -> int:
        """Records a parked step as a dead letter row (idempotent); returns the row id."""
        ...

    async def resolve_dead_letter(self, resolution: DeadLetterResolution) -> None:
        """Records the decision taken on a dead letter row (idempotent)."""
        ...

    async def subscribe_events(self, subscription: EventSubscription) -> list[Event]:
        """Subscribes the run to the mailbox of the subscription's type and key (starting it if
        need be); returns the buffered events published since ``subscription.since``. Events
        published from then on are handed to :meth:`Engine.deliver_event` by the host.

        Raises:
            ActionFailedError: When subscribing failed for good.
        """
        ...

    async def unsubscribe_events(self, subscription: EventSubscription) -> None:
        """Ends a subscription (best effort: a lapsed mailbox has nothing to end)."""
        ...

    async def end_task(self, summary: str) -> None:
        """Hands control back to the host and resumes (on Temporal, a no-op local activity, also
        in a dry run: the activation ends, so none runs past the SDK's deadlock limit): the
        engine's way to split work no command would split."""
        ...

    def task_key(self) -> int:
        """Identifies the workflow task the engine runs in now (on Temporal, the history length at
        its start): the same for all the engine does in one task, and the same again on replay."""
        ...

    def history_used(self) -> tuple[int, int]:
        """The run's history so far, in events and bytes (on Temporal, as of the start of the
        current workflow task: the same again on replay)."""
        ...

    def patched(self, patch_id: str) -> bool:
        """Whether a semantic change named ``patch_id`` applies to this run.

        On Temporal this is ``workflow.patched``: False while replaying a history recorded before
        the change, True for new runs. Every engine change that alters the commands of in-flight
        runs must branch on it (see the README).
        """
        ...


@dataclass(frozen=True)
class SubflowCall:
    """A child run the engine asks the runtime to start (a ``subflow`` step).

    Attributes:
        workflow_id: The child's workflow id: the parent's, ``/`` and the step path (plus ``#n`` on
            the n-th visit), so a retried start finds the same child.
        depth: The child's subflow depth (see :data:`interpreter.model.MAX_SUBFLOW_DEPTH`).
    """

    step_id: str
    path: str
    definition: str
    version: int | None
    input: dict[str, Any]
    wait: bool
    workflow_id: str
    activity_id: str
    depth: int
    summary: str
    compensating: bool = False
    """Started by a compensation (the runtime holds no history room for it: the room above the
    history guard's ceiling is the compensations')."""


class SubflowFailedError(Exception):
    """Raised by a runtime when a subflow could not start (unknown definition...) or its child
    run failed; ``error_type`` names which."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


@runtime_checkable
class SubflowRuntime(Protocol):
    """A runtime that can run sub-workflows (the Temporal host can; a runtime without it fails a
    ``subflow`` step with ``SubflowUnsupported``)."""

    async def run_subflow(self, call: SubflowCall) -> dict[str, Any]:
        """Starts the child run (resolving its definition in the run's tenant) and, when
        ``call.wait``, waits for it; returns the step's output.

        Raises:
            SubflowFailedError: When it cannot start, or the waited-for child failed.
        """
        ...


@dataclass(frozen=True)
class BatchCall:
    """A child workflow of a fanned-out foreach the engine asks the runtime to run and wait for.

    Attributes:
        workflow_id: The parent's id, ``/``, the foreach's path (plus ``#n`` on the n-th visit) and
            ``/batch-k``: the k-th slice, from 0.
        definition: The parent's definition (the child runs the foreach's body from it).
        batch: The slice and the template context it runs with.
        share: How many children of its foreach run at once (this one included): the runtime
            shares the room it has for their results among them.
    """

    step_id: str
    path: str
    workflow_id: str
    definition: Definition
    batch: ForeachBatch
    summary: str
    share: int = 1
    compensating: bool = False
    """Run by a compensation (as :attr:`SubflowCall.compensating`)."""


class BatchFailedError(Exception):
    """Raised by a runtime when a fanned-out foreach's child run failed (``compensated`` when it
    ended by a compensating failure) or could not start."""

    def __init__(self, message: str, error_type: str, *, compensated: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.compensated = compensated


@runtime_checkable
class FanoutRuntime(Protocol):
    """A runtime that can run a foreach's items in child workflows (the Temporal host can; others
    run every foreach in the run itself)."""

    async def run_foreach_batch(self, call: BatchCall) -> dict[str, Any]:
        """Runs the child and returns its output: ``{"results": [...]}`` (one per item, in order) or
        ``{"succeeded": output}`` when a ``succeed`` step of an item ended the run.

        Raises:
            BatchFailedError: When the child failed (it ran its own compensations first).
        """
        ...

    async def tree_problem(self, starts: int, what: str) -> str | None:
        """Why ``starts`` more child runs would bring this run's tree past the worker's bound
        (``WFA_MAX_RUNS_PER_TREE``), or None when they fit."""
        ...


def _declares_compensation(steps: Sequence[Step]) -> bool:
    """Whether any step here, or nested, declares a ``compensate`` list."""
    stack = list(steps)
    while stack:
        step = stack.pop()
        if isinstance(step, TaskStep | ApprovalStep) and step.compensate:
            return True
        for _suffix, nested, _boundary in children(step):
            stack.extend(nested)
    return False


_CONTEXT_NAME = re.compile(r'\b(input|vars|steps)\b(?!":)')
"""A context name read in a definition's JSON (not a JSON key: ``"input": {...}`` of a task)."""


def _body_reads(step: ForeachStep) -> set[str]:
    """Which of ``input``, ``vars`` and ``steps`` a foreach's body and ``output`` may read (a
    superset: a word in a name counts too); a fanned-out child is sent only those."""
    text = json.dumps(
        [[s.model_dump(mode="json", by_alias=True) for s in step.steps], step.output], ensure_ascii=False
    )
    return {match.group(1) for match in _CONTEXT_NAME.finditer(text)}


def _find_foreach(steps: Sequence[Step], step_id: str) -> ForeachStep | None:
    found = _foreach_steps(steps, step_id)
    return found[0] if found else None


def _foreach_steps(steps: Sequence[Step], step_id: str) -> list[ForeachStep]:
    """Every ``foreach`` step of that id (one, unless a raw client skipped the check of duplicate
    ids), the one :func:`_find_foreach` takes first."""
    found = []
    stack = list(steps)
    while stack:
        step = stack.pop()
        if isinstance(step, ForeachStep) and step.id == step_id:
            found.append(step)
        for _suffix, nested, _boundary in children(step):
            stack.extend(nested)
    return found


_STEP: TypeAdapter[Step] = TypeAdapter(Step)
"""Reads a carried compensation's step back (see :meth:`Engine.continuation`)."""

_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def form_problem(
    step: ApprovalStep | HumanTaskStep, path: str, kind: DecisionKind, data: Mapping[str, Any]
) -> str | None:
    """Why a decision's form data does not fit the step's declared fields, or None.

    Refused: any data when the step declares no fields; an undeclared field (naming them and the
    declared ones); a required field missing from an approval (a rejection may leave it out); a
    value of the wrong type; a string longer than its ``max_length``; an enum value not listed; a
    date that is not ISO 8601 ``YYYY-MM-DD``. The message names the step and the field.
    """
    form = step.form
    declared = [f.name for f in form]
    unknown = sorted(k for k in data if k not in declared)
    if unknown:
        if step.fields is None:
            return (
                f"unknown form fields {unknown} for step {path!r} (allowed: none; the step declares"
                " no fields, so a decision carries no data)"
            )
        return f"unknown form fields {unknown} for step {path!r} (allowed: {declared})"
    for declared_field in form:
        name = declared_field.name
        if name not in data:
            if declared_field.required and kind in (DecisionKind.APPROVE, DecisionKind.COMPLETE):
                return f"form field {name!r} of step {path!r} is required"
            continue
        wrong = _field_value_problem(declared_field, data[name])
        if wrong is not None:
            return f"form field {name!r} of step {path!r} {wrong}"
    return None


def event_fields_problem(step: WaitForEventStep, path: str, data: Mapping[str, Any]) -> str | None:
    """Why an event's data does not fit the wait's declared fields, or None (the rules of
    :func:`form_problem`: nothing undeclared, required fields present, each value of its type)."""
    form = step.form
    declared = [f.name for f in form]
    unknown = sorted(k for k in data if k not in declared)
    if unknown:
        allowed = declared or "none; the step declares no fields, so an event carries no data"
        return f"unknown event fields {unknown} for step {path!r} (allowed: {allowed})"
    for declared_field in form:
        name = declared_field.name
        if name not in data:
            if declared_field.required:
                return f"event field {name!r} of step {path!r} is required"
            continue
        wrong = _field_value_problem(declared_field, data[name])
        if wrong is not None:
            return f"event field {name!r} of step {path!r} {wrong}"
    return None


def _field_value_problem(field: FormField, value: Any) -> str | None:
    kind = field.type
    if kind == FieldType.STRING:
        if not isinstance(value, str):
            return f"must be a string, got {_json_type(value)}"
        if len(value) > field.limit:
            return f"is {len(value)} characters long (at most {field.limit})"
    elif kind == FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {_json_type(value)}"
        if isinstance(value, float) and not math.isfinite(value):  # an int is finite, however long
            return "must be a finite number"
    elif kind == FieldType.BOOLEAN:
        if not isinstance(value, bool):
            return f"must be true or false, got {_json_type(value)}"
    elif kind == FieldType.ENUM:
        values = field.values or []
        if not isinstance(value, str) or value not in values:
            shown = repr(clip(value, 50)) if isinstance(value, str) else _json_type(value)
            return f"must be one of {values}, got {shown}"
    elif kind == FieldType.DATE:
        if not isinstance(value, str):
            return f"must be a date (YYYY-MM-DD), got {_json_type(value)}"
        try:
            if not _ISO_DATE.match(value):
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            return f"must be a date as YYYY-MM-DD, got {clip(value, 50)!r}"
    else:
        assert_never(kind)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


GROUP_PREFIX = "group:"
"""An approver (or candidate) written ``group:<name>`` stands for every member of the group."""


def may_decide(approvers: Sequence[str], actor: str, groups: Sequence[str] = ()) -> bool:
    """Whether ``actor`` (a member of ``groups``) is one of ``approvers``, by name or by group."""
    return actor in approvers or any(GROUP_PREFIX + g in approvers for g in groups)


def assignee_value(approver: str) -> str:
    """The ``WfaAssignees`` value of an approver: ``group:<name>`` as is, else ``user:<name>``."""
    return approver if approver.startswith(GROUP_PREFIX) else f"user:{approver}"


@dataclass(frozen=True)
class RunInfo:
    """Identity of the run, for idempotency keys and the ``run`` template variable."""

    workflow_id: str
    run_id: str
    started_at: datetime
    tenant: str = "default"
    created_at: datetime | None = None
    """When the run was started (its start request), which may be well before ``started_at``, its
    first workflow task: a ``cancel_on`` event published in between must count."""
    subflow_depth: int = 0
    """0 for a run started by a client; n for a run started by a subflow step at depth n - 1."""
    state_budget: int | None = None
    """The run's state budget when it was started with the payload store on (its options); None:
    :data:`interpreter.sizes.RUN_STATE_BUDGET`, which fits Temporal's 2 MiB payload limit."""
    state_budget_asked: int | None = None
    """Set when the worker capped the run's state budget (``WFA_STATE_BUDGET_MAX``): what the run's
    options asked for (its error then names the cap)."""
    result_limit: int | None = None
    """The most the run's result may take (``RunOptions.result_limit``: the room the parent run that
    waits for it holds in its history); an output that does not fit fails the run, which compensates."""


class DecisionError(ValueError):
    """A decision that cannot be accepted (no such pending approval, actor not allowed, ...)."""


class DeadLetterError(ValueError):
    """A dead letter decision that cannot be accepted (nothing parked there, ...)."""


class _Jump(Exception):  # control flow, not an error
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class _TimedOutJump(_Jump):
    """An approval's ``on_timeout`` goto: nobody decided, so the approval did not complete."""


class _Succeed(Exception):
    def __init__(self, output: Any) -> None:
        super().__init__("succeed")
        self.output = output


class _RunFailed(Exception):
    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.rank: int | None = None
        """Its place among the failed branches of a ``join: any`` step that may continue as new
        (:data:`PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES`; carried with it)."""


class _CompensateAndEnd(_RunFailed):
    pass


class _ContinueAsNew(Exception):  # control flow: the run stops at a safe point and continues as new
    def __init__(
        self,
        position: int,
        approval: _Approval | None = None,
        carry: Callable[[], dict[str, Any]] | None = None,
        branches: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__("continue as new")
        self.position = position
        """Index in the top-level steps where the next run starts."""
        self.branches = branches or []
        """The branches the run stopped in, outermost first (``BRANCHES_KIND``)."""
        self.inner = self.branches[-1]["position"] if self.branches else position
        """Index in the innermost sequence (a branch's, or the top level's) where it stopped."""
        self.approval = approval
        self.carry = carry
        """Entries of ``Continuation.kinds`` for the wait the run stops in, read when the snapshot
        is taken (after the message handlers finished: a decision taken meanwhile is in them)."""


class StoreFailedError(_RunFailed):
    """Raised by a runtime when recording or resolving a dead letter failed for good (the run then
    fails, and its compensations run)."""


@dataclass
class _Scope:
    """Results visible to templates, and where step paths are rooted."""

    steps: dict[str, Any]
    prefix: str = ""
    local: dict[str, Any] = field(default_factory=dict)
    parent: _Scope | None = None
    last_output: Any = None

    def sibling(self, prefix: str | None = None) -> _Scope:
        """A view that shares this scope's results and locals, with its own last output."""
        return _Scope(
            steps=self.steps,
            prefix=self.prefix if prefix is None else prefix,
            local=self.local,
            parent=self.parent,
        )

    def visible_steps(self) -> Mapping[str, Any]:
        if self.parent is None:
            return self.steps
        return {**self.parent.visible_steps(), **self.steps}

    def visible_locals(self) -> dict[str, Any]:
        if self.parent is None:
            return dict(self.local)
        return {**self.parent.visible_locals(), **self.local}


_LINKS_RETRY = RetryPolicy(initial_interval="2s", maximum_interval="1m", maximum_attempts=6)
_LINKS_TIMEOUTS = Timeouts(start_to_close="60s")


@dataclass
class _Approval:
    """A person's pending decision: an approval step or a human task (one mechanism for both)."""

    view: PendingApproval
    step: ApprovalStep | HumanTaskStep
    decision: tuple[DecisionKind, Decision] | None = None


@dataclass
class _EventWait:
    view: PendingEvent
    step: WaitForEventStep
    since: datetime
    event: Event | None = None
    rank: int = 0
    """Its place among the run's event waits in the order they began (carried for a branch's)."""


@dataclass
class _Frame:
    """A sequence the run is in where it may continue as new: the top-level steps, or the branch
    of a ``condition``/``switch`` step that is itself at such a place (``step``, ``branch``)."""

    steps: list[Step]
    index: int = 0
    step: str | None = None
    branch: str | None = None


@dataclass
class _Lane:
    """One branch of a ``parallel`` step, or one item of a ``foreach``, that may continue as new (see
    :data:`PATCH_CONTINUE_AS_NEW_PARALLEL`)."""

    steps: list[Step] = field(default_factory=list)
    scope: _Scope | None = None
    """Its scope (a foreach item's once it started)."""
    index: int = 0
    """The index in the branch's steps of the step it runs (or stands before, when stopped)."""
    stopped: bool = False
    done: bool = False
    output: Any = None
    """Its output, once done."""
    sleeping: CarriedDelay | None = None
    """The ``delay`` among its steps (not nested deeper) it waits in: carried as it is."""
    person: _Approval | None = None
    """The ``approval`` or ``human_task`` among its steps (not nested deeper) waiting for its
    decision (:data:`PATCH_CONTINUE_AS_NEW_LANE_PEOPLE`): carried with its view and any decision
    taken until the switch."""
    wakes: datetime | None = None
    """When that wait times out or escalates next (None: it does not)."""
    park: _LanePark | None = None
    """The task among its steps (not nested deeper) parked on a dead letter, waiting for a decision
    (:data:`PATCH_CONTINUE_AS_NEW_LANE_PARKS`): carried with its row and the failed call; it wakes
    at ``wakes`` (its park timeout) too."""
    event: _EventWait | None = None
    """The ``wait_for_event`` among its steps (not nested deeper) waiting for its event
    (:data:`PATCH_CONTINUE_AS_NEW_LANE_EVENTS`): carried with its view, window and any event
    taken until the switch; it wakes at ``wakes`` (its deadline) too."""
    nest: list[_Frame] = field(default_factory=list)
    """The ``condition``/``switch`` branches it is in (outermost first), each with the index of the
    step it runs in it (:data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`): a wait in the innermost is
    carried as one among its own steps, with these."""
    resume: list[dict[str, Any]] = field(default_factory=list)
    """The branches a previous run of the chain carried it in, not yet gone back into (outermost
    first: ``step``, ``branch``, ``position``)."""
    failure: _RunFailed | None = None
    """How it failed, in a ``join: any`` step (:data:`PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES`): done,
    carried as failed."""
    inner: _Drain | None = None
    """The branches (items) of the ``parallel``/``foreach`` step it runs now, among its own steps
    (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`): carried with it, as ``nested``."""
    nested: dict[str, Any] | None = None
    """The entry of that step a previous run of the chain carried it in, not yet gone back into."""
    owner: _Drain | None = field(default=None, repr=False, compare=False)
    """The branches (items) it is one of."""

    @property
    def started(self) -> bool:
        return self.scope is not None

    def here(self) -> tuple[list[Step], int]:
        """The sequence it runs in (its own steps, or the innermost branch it is in) and the index
        in it of the step it runs (or stands before)."""
        if self.nest:
            return self.nest[-1].steps, self.nest[-1].index
        return self.steps, self.index

    def carried(self, *, own_steps: bool) -> dict[str, Any] | None:
        """Its entry in the carried step: its output once done, else where it stands (with its last
        output, an item's ``own_steps`` and the delay it sleeps in); None before it started."""
        if self.failure is not None:
            failure = self.failure
            return {
                "failed": {
                    "message": failure.message,
                    "error_type": failure.error_type,
                    "compensate": isinstance(failure, _CompensateAndEnd),
                    "rank": failure.rank,
                }
            }
        if self.done:
            return {"done": True, "output": self.output}
        if self.scope is None:
            return None
        place: dict[str, Any] = {"position": self.index, "last_output": self.scope.last_output}
        if own_steps:
            place["steps"] = dict(self.scope.steps)
        if self.nest:
            place["within"] = [
                {"step": frame.step, "branch": frame.branch, "position": frame.index} for frame in self.nest
            ]
        if self.inner is not None and self.inner.describe is not None:
            place["nested"] = self.inner.describe()
        _, at = self.here()
        if self.sleeping is not None:
            place["delay"] = self.sleeping.model_dump(mode="json")
        if self.person is not None:
            kind, decision = self.person.decision or (None, None)
            waiting = CarriedApproval(position=at, view=self.person.view, decided=kind, decision=decision)
            place["person"] = waiting.model_dump(mode="json")
        if self.park is not None:
            lane_park = self.park
            parked = CarriedPark(
                position=at,
                view=lane_park.park.view,
                decision=lane_park.park.decision,
                request=lane_park.request,
                activity_id=lane_park.activity_id,
                redrives=lane_park.redrives,
            )
            place["park"] = parked.model_dump(mode="json")
        if self.event is not None:
            wait = self.event
            entry = CarriedEventWait(
                position=at, view=wait.view, since=wait.since, event=wait.event, rank=wait.rank
            )
            place["event"] = entry.model_dump(mode="json")
        return place


@dataclass
class _Drain:
    """The branches of one ``parallel`` step (the items of one ``foreach``) stopping at boundaries so
    that the run continues as new."""

    lanes: list[_Lane]
    join: JoinStrategy
    items: list[Any] | None = None
    """A foreach's list (carried with it)."""
    label: str = ""
    """The step's label (in the summary of a branch's stop)."""
    active: bool = False
    off: bool = False
    """Set once the run may not continue as new here (patch declined, or a branch failed)."""
    not_before: datetime | None = None
    deadline: datetime | None = None
    """When the branches stopped for it go on anyway (:data:`PARALLEL_DRAIN_WAIT_S` after it began)."""
    timed: bool = False
    """Whether a stopped branch holds the timer of ``deadline``."""
    by_scope: dict[int, _Lane] = field(default_factory=dict)
    """The lanes by their scope's identity (a delay finds its branch without a scan of them all)."""
    failures: int = 0
    """How many of its branches failed (a ``join: any`` step's, carried as failed)."""
    outputs_counted: bool = False
    """Whether :meth:`carry_size` counts the running branches' last outputs
    (:data:`PATCH_DRAIN_FIXES`)."""
    outer: _Lane | None = None
    """The branch (item) whose own step this one is (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`): the
    stop is its outermost step's (:meth:`root`), and it is carried in that branch's entry."""
    describe: Callable[[], dict[str, Any]] | None = None
    """Its carried entry (:data:`PARALLEL_KIND`'s shape), read at the switch."""

    def __post_init__(self) -> None:
        for lane in self.lanes:
            lane.owner = self
            if lane.scope is not None:
                self.by_scope[id(lane.scope)] = lane

    def root(self) -> _Drain:
        """The outermost step's branches: whose stop every nested one follows."""
        drain = self
        while drain.outer is not None and drain.outer.owner is not None:
            drain = drain.outer.owner
        return drain

    def settled(self, now: datetime) -> bool:
        """Every branch still running stands at a boundary, sleeps or waits (:func:`_settled`), or
        has not started, or finished in a ``join: all`` step, or failed and is carried as failed;
        and one has not finished (when all have, the step is ending: nothing of it is carried)."""
        return (
            not self.off
            and any(not lane.done for lane in self.lanes)
            and all(
                _settled(lane, now)
                or not lane.started
                or (lane.done and self.join == JoinStrategy.ALL)
                or lane.failure is not None
                for lane in self.lanes
            )
        )

    def stopping(self, now: datetime) -> bool:
        """Whether a branch (of a nested step too) stands at a boundary or sleeps or waits."""
        return any(
            lane.stopped or _resting(lane, now) or (lane.inner is not None and lane.inner.stopping(now))
            for lane in self.lanes
        )

    def seat(self, lane: _Lane, scope: _Scope) -> None:
        """Gives an item's lane its scope (once it starts, or is carried under way)."""
        lane.scope = scope
        self.by_scope[id(scope)] = lane

    def retry_later(self, now: datetime) -> None:
        """The branches go on; none stops for a continue-as-new before :data:`PARALLEL_DRAIN_RETRY_S`."""
        self.active = False
        self.not_before = now + timedelta(seconds=PARALLEL_DRAIN_RETRY_S)

    def carry_size(self, limit: int) -> int:
        """What the carried entry would hold beside the run's state, counted up to ``limit``."""
        parts: list[Any] = [self.items or []]
        parts += [lane.output for lane in self.lanes if lane.done]
        parts += [
            (lane.failure.message, lane.failure.error_type) for lane in self.lanes if lane.failure is not None
        ]
        running = [lane.scope for lane in self.lanes if lane.scope is not None and not lane.done]
        if self.items is not None:  # an item still running carries its own steps
            parts += [scope.steps for scope in running]
        # and the approval, human task, event wait or park it waits in
        parts += [
            lane.carried(own_steps=False)
            for lane in self.lanes
            if (lane.person is not None or lane.event is not None or lane.park is not None) and not lane.done
        ]
        if self.root().outputs_counted:  # (a nested step's as the outermost's)
            parts += [scope.last_output for scope in running]
        size = json_size(parts, limit)
        for lane in self.lanes:  # and the nested steps its branches run (their own entries)
            if lane.inner is not None and not lane.done and size <= limit:
                size += lane.inner.carry_size(limit)
        return size

    def under_way(self) -> bool:
        """Whether a branch (item) has started and not finished: one that could still stop."""
        return any(lane.started and not lane.done for lane in self.lanes)

    def ready(self, quiet: bool, now: datetime) -> bool:
        """Every branch still running stands at a boundary or sleeps, none waits (``quiet``): carry
        them."""
        return self.active and quiet and self.settled(now) and self.stopping(now)


def _resting(lane: _Lane, now: datetime) -> bool:
    """The branch sleeps in a delay among its own steps whose timer has not fired (one that fired
    in the same workflow task as something else has not woken the branch yet: not asleep), or such
    a step of it waits for a person (not decided yet, its deadline or next escalation not come: one
    that came in the same workflow task as something else has not woken the branch yet), or
    waits for an event (none taken yet, its deadline not come), or is parked on a dead letter (not
    decided yet, its park timeout not come)."""
    if lane.sleeping is not None:
        return lane.sleeping.until > now
    if lane.event is not None:
        return lane.event.event is None and (lane.wakes is None or lane.wakes > now)
    if lane.park is not None:
        return lane.park.park.decision is None and (lane.wakes is None or lane.wakes > now)
    return (
        lane.person is not None and lane.person.decision is None and (lane.wakes is None or lane.wakes > now)
    )


def _settled(lane: _Lane, now: datetime) -> bool:
    """The branch stands at a boundary, sleeps or waits (:func:`_resting`), or runs a nested
    ``parallel``/``foreach`` step whose own branches are all settled
    (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`)."""
    return lane.stopped or _resting(lane, now) or (lane.inner is not None and lane.inner.settled(now))


class _Drained(Exception):  # control flow: every branch of a parallel step stopped for continue-as-new
    pass


def _check_carried_parallel(
    data: Any, steps: list[Step], position: int, item_limit: int, prefix: str = ""
) -> dict[str, Any]:
    """The carried ``parallel`` entry (:data:`PARALLEL_KIND`), checked against the step at
    ``position`` of the sequence the run goes on in; ``prefix``: of its steps' paths (a nested
    step's, :data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`).

    Raises:
        ValueError: Naming what does not match.
    """
    if isinstance(data, dict) and set(data) - {"since"} == {"step", "items", "lanes"}:
        return _check_carried_foreach(
            data, steps, position, item_limit, path=f"{prefix}{data['step']}" if prefix else None
        )
    if not isinstance(data, dict) or set(data) - {"since"} != {"step", "branches"}:
        raise ValueError("the carried parallel step is malformed")
    step = steps[position] if 0 <= position < len(steps) else None
    if not isinstance(step, ParallelStep) or step.id != data["step"]:
        raise ValueError(f"carried parallel step {data['step']!r} is not at step {position}")
    entries = data["branches"]
    if not isinstance(entries, list) or [e.get("id") if isinstance(e, dict) else None for e in entries] != [
        b.id for b in step.branches
    ]:
        raise ValueError(f"the carried branches of {step.id!r} are not its branches")
    going = 0
    ranks: list[int] = []
    for branch, entry in zip(step.branches, entries, strict=True):
        where = f"carried branch {branch.id!r} of {step.id!r}"
        if set(entry) == {"id", "done", "output"} and entry["done"] is True:
            if step.join != JoinStrategy.ALL:
                raise ValueError(f"{where}: a finished branch is carried only when the join is 'all'")
            continue
        if set(entry) == {"id", "failed"}:
            if step.join != JoinStrategy.ANY:
                raise ValueError(f"{where}: a failed branch is carried only when the join is 'any'")
            ranks.append(_check_failed_branch(entry["failed"], where))
            continue
        if set(entry) - _LANE_WAITS - {"within", "nested"} != {"id", "position", "last_output"}:
            raise ValueError(f"{where} is malformed")
        at = _check_position(entry["position"], branch.steps, where, "it")
        sequence, inner = _check_lane_branches(entry, branch.steps, at, where)
        _check_lane_wait(entry, sequence[inner], inner, prefix + sequence[inner].id, where)
        _check_lane_nested(entry, sequence, inner, item_limit, prefix=prefix, where=where)
        going += 1
    if not going:
        raise ValueError(f"the carried branches of {step.id!r} are all finished")
    if sorted(ranks) != list(range(len(ranks))):
        raise ValueError(f"the carried failed branches of {step.id!r} are not ranked 0 to {len(ranks) - 1}")
    return {"step": step.id, "branches": [dict(e) for e in entries], **_carried_since(data)}


def _carried_lanes(entry: dict[str, Any]) -> list[Any]:
    """The branches (items) of a checked carried entry, and those of the nested steps they are
    carried in (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`), outermost first."""
    lanes: list[Any] = list(entry.get("branches") or entry["lanes"])
    for lane in list(lanes):
        if isinstance(lane, dict) and isinstance(lane.get("nested"), dict):
            lanes += _carried_lanes(lane["nested"])
    return lanes


def _check_failed_branch(failed: Any, where: str) -> int:
    """A carried failed branch's error (:data:`PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES`); its rank."""
    if (
        not isinstance(failed, dict)
        or set(failed) != {"message", "error_type", "compensate", "rank"}
        or not isinstance(failed["message"], str)
        or not isinstance(failed["error_type"], str)
        or not isinstance(failed["compensate"], bool)
        or not isinstance(failed["rank"], int)
        or isinstance(failed["rank"], bool)
    ):
        raise ValueError(f"{where}: its carried failure is malformed")
    rank: int = failed["rank"]
    return rank


_RESULT_FIELDS = frozenset({"status", "output", "error", "error_type", "attempts"})
"""The fields of a step's result as templates read it (``steps.<id>``)."""


def _check_item_results(results: Any, body: list[Step], where: str) -> None:
    """A carried item's own step results: results (:data:`_RESULT_FIELDS`) of steps of its body."""
    if not isinstance(results, dict):
        raise ValueError(f"{where} is malformed")
    ids: set[str] = set()
    pending = list(body)
    while pending:
        step = pending.pop()
        ids.add(step.id)
        pending += [s for _, nested, _ in children(step) for s in nested]
    for key, result in results.items():
        if key not in ids:
            raise ValueError(f"{where}: its results name {str(key)[:80]!r}, not a step of the body")
        if not isinstance(result, dict) or set(result) != _RESULT_FIELDS:
            raise ValueError(f"{where}: the result of {key!r} is malformed")


def _check_position(at: Any, steps: list[Step], where: str, within: str) -> int:
    """A carried branch's (item's) position: the index of one of its ``steps``."""
    if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at < len(steps):
        raise ValueError(f"{where}: no step {at!r} in {within}")
    return at


def _carried_since(data: dict[str, Any]) -> dict[str, datetime]:
    """When the carried step started (its record's ``started_at``), if carried."""
    if "since" not in data:
        return {}
    try:
        since = datetime.fromisoformat(str(data["since"]))
    except ValueError:
        raise ValueError(f"the carried step's start {data['since']!r} is not a timestamp") from None
    if since.tzinfo is None:
        raise ValueError(f"the carried step's start {data['since']!r} has no UTC offset")
    return {"since": since}


_LANE_WAITS = frozenset({"delay", "person", "event", "park"})
"""What a carried branch (item) may wait in: one of them, at most."""


def _check_lane_branches(
    entry: dict[str, Any], steps: list[Step], at: int, where: str
) -> tuple[list[Step], int]:
    """The sequence a carried branch (item) goes on in and the index in it of the step it stands
    before or waits in: its ``steps`` and ``at``, or, when it carries ``within``
    (:data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`), the innermost branch's steps and position, each
    branch checked against the ``condition``/``switch`` step it names."""
    nested = entry.get("within")
    if nested is None:
        return steps, at
    if not isinstance(nested, list) or not nested:
        raise ValueError(f"{where}: its carried branches are malformed")
    for depth, frame in enumerate(nested):
        steps, at = _enter_branch(frame, steps, at, f"{where}: its carried branch {depth}")
    return steps, at


def _check_lane_nested(
    entry: dict[str, Any], steps: list[Step], at: int, item_limit: int, *, prefix: str, where: str
) -> None:
    """A carried branch's (item's) ``nested`` entry, if any (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`):
    the ``parallel``/``foreach`` step at ``at`` of ``steps`` (the sequence it goes on in), its own
    branches' steps under ``prefix``; replaced by the checked entry."""
    if "nested" not in entry:
        return
    step = steps[at]  # (a wait beside it is refused already: its step would be this one)
    if not isinstance(step, ParallelStep | ForeachStep) or not isinstance(entry["nested"], dict):
        raise ValueError(f"{where}: its nested step is not a parallel or foreach step at {at}")
    entry["nested"] = _check_carried_parallel(entry["nested"], steps, at, item_limit, prefix)


def _enter_branch(frame: Any, steps: list[Step], at: int, where: str) -> tuple[list[Step], int]:
    """A carried ``condition``/``switch`` branch (``step``, ``branch``, ``position``) checked
    against step ``at`` of ``steps``: the branch's steps and the position in them.

    Raises:
        ValueError: Naming what does not match.
    """
    if not isinstance(frame, dict) or set(frame) != {"step", "branch", "position"}:
        raise ValueError(f"{where} is malformed")
    step = steps[at] if 0 <= at < len(steps) else None
    if not isinstance(step, ConditionStep | SwitchStep) or step.id != frame["step"]:
        raise ValueError(f"{where}: step {str(frame['step'])[:80]!r} is not a condition or switch at {at}")
    try:
        branch, _ = _branch_named(step, str(frame["branch"]))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    name = f"branch {str(frame['branch'])[:80]!r} of {step.id!r}"
    if branch is None or not branch.steps:
        raise ValueError(f"{where}: no step {frame['position']!r} in {name}")
    return branch.steps, _check_position(frame["position"], branch.steps, where, name)


def _check_lane_wait(entry: dict[str, Any], step: Step, position: int, path: str, where: str) -> None:
    """A carried branch's (item's) ``delay``, ``person`` (an approval or human task waiting for
    its decision) or ``event`` (a wait for an event), if any: the step of that kind at its position
    and path (replaced by the carried delay, the pending step, or the carried event wait, whose
    event the engine checks: :meth:`Engine._carried_event_fits`), or ``park`` (a task parked on a
    dead letter: the carried park)."""
    if len(_LANE_WAITS & set(entry)) > 1:
        raise ValueError(f"{where}: a carried branch waits in one step at most")
    if "park" in entry:
        parked = aware(CarriedPark.model_validate_json(json.dumps(entry["park"])))
        parked_view = parked.view
        if (
            not isinstance(step, TaskStep)
            or step.on_failure != "dead_letter"
            or parked.position != position
            or parked_view.step_id != step.id
            or parked_view.path != path
            or parked_view.action != step.action
            or parked_view.dead_letter_id is None
        ):
            raise ValueError(f"{where}: its carried park {parked_view.path!r} is not step {position} of it")
        entry["park"] = (parked, step)  # the engine checks the rest (:meth:`Engine._carried_park_problem`)
    if "event" in entry:
        wait = aware(CarriedEventWait.model_validate_json(json.dumps(entry["event"])))
        pending = wait.view
        if (
            not isinstance(step, WaitForEventStep)
            or wait.position != position
            or pending.step_id != step.id
            or pending.path != path
            or pending.event != step.event
        ):
            raise ValueError(f"{where}: its carried event wait {pending.path!r} is not step {position} of it")
        entry["event"] = _EventWait(
            view=pending, step=step, since=wait.since, event=wait.event, rank=wait.rank or 0
        )
    if "delay" in entry:
        delay = aware(CarriedDelay.model_validate(entry["delay"]))
        if not isinstance(step, DelayStep) or delay.path != path or delay.position != position:
            raise ValueError(f"{where}: its carried delay {delay.path!r} is not step {position} of it")
        entry["delay"] = delay
    if "person" in entry:
        # As JSON: the definition models are strict, a form field's type reads only from its JSON string.
        carried = aware(CarriedApproval.model_validate_json(json.dumps(entry["person"])))
        view = carried.view
        if (
            not isinstance(step, ApprovalStep | HumanTaskStep)
            or carried.position != position
            or view.step_id != step.id
            or view.kind != ("task" if isinstance(step, HumanTaskStep) else "approval")
        ):
            raise ValueError(f"{where}: its carried {view.kind} {view.path!r} is not step {position} of it")
        entry["person"] = _pending_again(carried, step, path)


def _check_carried_foreach(
    data: dict[str, Any],
    steps: list[Step],
    position: int,
    item_limit: int,
    *,
    path: str | None = None,
    offset: int = 0,
    concurrency: int | None = None,
) -> dict[str, Any]:
    """The carried ``foreach`` entry (items, and per item ``None`` when not started, ``done`` with
    its output, or the ``position`` in the body, ``last_output`` and its ``steps``); ``path`` and
    ``offset``: of a fanned-out foreach's child, the step's path and its first item's index (and
    ``concurrency``, how many of its items it runs at once)."""
    step = steps[position] if 0 <= position < len(steps) else None
    if not isinstance(step, ForeachStep) or step.id != data["step"]:
        raise ValueError(f"carried foreach step {data['step']!r} is not at step {position}")
    items, lanes = data["items"], data["lanes"]
    if not isinstance(items, list) or not isinstance(lanes, list) or len(items) != len(lanes):
        raise ValueError(f"the carried items of {step.id!r} are malformed")
    if len(items) > (step.max_items or item_limit):
        raise ValueError(f"{len(items)} carried items of {step.id!r} exceed its limit")
    going = under_way = 0
    for i, lane in enumerate(lanes):
        where = f"carried item {i} of {step.id!r}"
        if lane is None:
            going += 1
        elif isinstance(lane, dict) and set(lane) == {"done", "output"} and lane["done"] is True:
            continue
        elif isinstance(lane, dict) and set(lane) - _LANE_WAITS - {"within", "nested"} == {
            "position",
            "last_output",
            "steps",
        }:
            at = _check_position(lane["position"], step.steps, where, "the body")
            _check_item_results(lane["steps"], step.steps, where)
            sequence, inner = _check_lane_branches(lane, step.steps, at, where)
            item = f"{path or step.id}[{offset + i}]."
            _check_lane_wait(lane, sequence[inner], inner, item + sequence[inner].id, where)
            _check_lane_nested(lane, sequence, inner, item_limit, prefix=item, where=where)
            going += 1
            under_way += 1
        else:
            raise ValueError(f"{where} is malformed")
    if not going:
        raise ValueError(f"the carried items of {step.id!r} are all finished")
    if under_way > (concurrency or step.concurrency):  # each held a place: more could never stop
        raise ValueError(f"{under_way} carried items of {step.id!r} under way, more than its concurrency")
    return {"step": step.id, "items": list(items), "lanes": list(lanes), **_carried_since(data)}


def _branch_named(step: ConditionStep | SwitchStep, name: str) -> tuple[Branch | None, dict[str, Any]]:
    """The branch ``name`` (``then``, ``else``, ``case:<i>``, ``default``) of ``step`` and the step's
    output when it is taken."""
    if isinstance(step, ConditionStep):
        if name == "then":
            return step.then, {"branch": "then"}
        if name == "else" and step.else_ is not None:
            return step.else_, {"branch": "else"}
    else:
        if name == "default" and step.default is not None:
            return step.default, {"case": "default"}
        prefix, _, number = name.partition(":")
        # (as the run writes it: "case:01" or "case:¹" is not "case:1")
        if prefix == "case" and re.fullmatch(r"0|[1-9][0-9]*", number) and int(number) < len(step.cases):
            return step.cases[int(number)].then, {"case": int(number)}
    raise ValueError(f"step {step.id!r} has no branch {name[:80]!r}")


def _pending_again(
    carried: CarriedApproval, step: ApprovalStep | HumanTaskStep, path: str | None = None
) -> _Approval:
    """The pending step a carried approval or human task resumes as (with the decision taken while
    the run switched, if any), at ``path`` (default: the step's id, a top-level step).

    Raises:
        ValueError: It does not fit its step: another path, people neither the step nor its
            escalation names, or a decision of a kind the step does not take or by someone who may
            not decide it. (Its form data is not checked again: the run that took the decision
            checked it under the rules of its time.)
    """
    kinds = (
        (DecisionKind.COMPLETE,)
        if isinstance(step, HumanTaskStep)
        else (DecisionKind.APPROVE, DecisionKind.REJECT)
    )
    view = carried.view
    named = {*step.approvers, *(step.escalation.add_approvers if step.escalation else ())}
    problem = None
    if view.path != (path or step.id):
        problem = f"its path is not the step's ({path or step.id!r})"
    elif not set(view.approvers) <= named:
        problem = "its approvers are not the step's"
    elif carried.decided is not None and carried.decision is not None:
        decision = carried.decision
        if carried.decided not in kinds:
            problem = f"a {carried.decided.value!r} decision is not one it takes"
        elif not may_decide(view.approvers, decision.actor, decision.groups):
            problem = f"{decision.actor!r} may not decide it"
    if problem is not None:
        raise ValueError(f"carried {view.kind} {view.path!r}: {problem}")
    pending = _Approval(view=view, step=step)
    if carried.decided is not None and carried.decision is not None:
        pending.decision = (carried.decided, carried.decision)
    return pending


@dataclass
class _Park:
    view: ParkedStep
    decision: DeadLetterDecision | None = None


@dataclass
class _LanePark:
    """A park among a branch's own steps, with what a continue-as-new carries of its failed call."""

    park: _Park
    request: ActionRequest
    activity_id: str
    redrives: int


@dataclass
class _Compensation:
    step: TaskStep | ApprovalStep
    scope: _Scope
    path: str


def resolve_timeouts(definition: Definition, step: TaskStep) -> Timeouts:
    """The step's timeouts, each field falling back to the definition's defaults.

    A value inherited from the defaults never contradicts the step's own: it is capped as the
    Temporal server caps it (``start_to_close`` at ``schedule_to_close``, ``heartbeat`` at
    ``start_to_close``). A step declaring only ``schedule_to_close: 10s`` under the default
    ``start_to_close`` of 30 s gets 10 s for both; before, the merge was refused as
    "schedule_to_close is shorter than start_to_close", a field the author never set (found by a
    review). Each set of timeouts that validated before resolves as before.
    """
    base = definition.defaults.timeouts
    own = step.timeouts or Timeouts()
    start_to_close = own.start_to_close or base.start_to_close
    schedule_to_close = own.schedule_to_close or base.schedule_to_close
    heartbeat = own.heartbeat or base.heartbeat
    if start_to_close and schedule_to_close:
        start_to_close = _shorter(start_to_close, schedule_to_close)
    if heartbeat and start_to_close:
        heartbeat = _shorter(heartbeat, start_to_close)
    return Timeouts(start_to_close=start_to_close, schedule_to_close=schedule_to_close, heartbeat=heartbeat)


def _shorter(first: str, second: str) -> str:
    """The shorter of two durations, ``first`` when they are equal."""
    return second if parse_duration(second) < parse_duration(first) else first


_Timed = TypeVar("_Timed", timedelta, datetime)


def _in_business_hours(step: DelayStep | HumanTaskStep, compute: Callable[[], _Timed]) -> _Timed:
    """``compute()``, a wait or a deadline counted in the step's business hours; the step's failure
    (``InvalidBusinessHours``) when the hours do not open within the search (3,700 days: every open
    day a holiday, or a ``due`` longer than that). Found by an attacker's probe: the ValueError
    failed the workflow task again and again, the run stuck until its timeout."""
    try:
        return compute()
    except ValueError as err:
        raise _RunFailed(f"step {step.id!r}: business_hours: {err}", "InvalidBusinessHours") from None


def _mark_done(order: list[int], index: int, _task: asyncio.Future[Any]) -> None:
    order.append(index)


def _failed(task: asyncio.Future[Any]) -> bool:
    return task.cancelled() or task.exception() is not None


def _rank(task: asyncio.Future[Any]) -> int | None:
    """A failed branch's place among the failures of its ``join: any`` step, when carried."""
    error = None if task.cancelled() else task.exception()
    return error.rank if isinstance(error, _RunFailed) else None


def _succeeded_run(task: asyncio.Future[Any]) -> bool:
    """Whether the task ended by a ``succeed`` step, which ends the whole run whatever the join."""
    return not task.cancelled() and isinstance(task.exception(), _Succeed)


class Engine:
    """Runs one definition against one runtime. Create one per run."""

    def __init__(
        self,
        definition: Definition,
        run_input: Mapping[str, Any],
        runtime: Runtime,
        info: RunInfo,
        *,
        continue_as_new: Callable[[], bool] | None = None,
        resume: Continuation | None = None,
        batch: ForeachBatch | None = None,
    ) -> None:
        """Prepares a run (or the continuation of one).

        Args:
            continue_as_new: Asked at safe points (between top-level steps, and while a top-level
                approval waits) whether the run should continue as new now; it must be cheap and
                deterministic. None: the run never continues as new.
            resume: The snapshot a previous run of the chain carried (see
                :mod:`interpreter.continuation`).
            batch: Set for a child workflow of a fanned-out foreach: the run is that slice of
                items through the foreach's body (its output ``{"results": [...]}``), not the
                definition's steps.
        """
        self.definition = definition
        # Data is inert from where it enters: a secret reference in it is text (interpreter/inert.py).
        self.input = make_inert(dict(run_input))
        self.runtime = runtime
        self.info = info
        self.state = RunState.RUNNING
        self.vars: dict[str, Any] = {}
        self.records: list[StepRecord] = []
        self.active: dict[str, str] = {}
        self.decisions: list[DecisionRecord] = []
        self.decisions_dropped = 0
        self.refused_messages: list[RefusedMessage] = []
        self.refused_messages_dropped = 0
        self.cancel_request: CancelRequest | None = None
        self.hold_steps = False
        """Set by the host while the run's cancellation is on its way: no further step starts."""
        self.output: Any = None
        self.error: str | None = None
        self.error_type: str | None = None
        self._root = _Scope(steps={})
        self.waiting: dict[str, str] = {}
        """Steps where the run waits durably now (timers, approvals, parks): path -> label."""
        self._approvals: dict[str, _Approval] = {}
        self._parked: dict[str, _Park] = {}
        self._recording: dict[str, _Park] = {}
        """Parks whose dead letter row is being written: decisions are accepted already (an
        operator may see the row before the run hears back), applied once the row id is known."""
        self._timeouts: dict[str, Timeouts] = {}
        self._parks: dict[str, int] = {}
        self._link_sends: dict[str, int] = {}
        self._compensations: list[_Compensation] = []
        self._event_waits: dict[str, _EventWait] = {}
        self._consumed_events: dict[str, None] = {}
        """Ids of the events this run consumed: each is consumed at most once."""
        self._cancel_keys: list[tuple[str, str]] = []
        """``cancel_on`` as rendered at the start: (event type, key)."""
        self.cancel_hook: Callable[[CancelRequest], None] | None = None
        """Called when a ``cancel_on`` event arrives (the host cancels the run, as for its cancel
        signal); without one the engine cancels the run itself."""
        self._visits: dict[str, int] = {}
        self._executions = 0
        self._compensating = False
        """Compensations are running (the run's state may show a wait in one instead)."""
        self._any_held_since: int | None = None
        """The run's history events when a branch of an ``any`` join first could not stop for a
        continue-as-new it wanted (:meth:`_history_pressed`)."""
        self._state_size = 0
        """Bytes of outputs and variables the run keeps (see :mod:`interpreter.sizes`)."""
        self._events_by_address: bool | None = None
        """Whether :data:`PATCH_EVENT_IDS_BY_ADDRESS` applies (asked once, where first needed)."""
        self._task_key: int | None = None
        self._task_work = 0
        self._task_all_work = 0  # with the work of single operations (PATCH_TEMPLATE_WORK)
        self._steps_task_key: int | None = None
        self._task_steps = 0
        """Steps executed in the current activation (see :data:`TASK_STEP_BUDGET`)."""
        self._run_work = 0
        """Interpreter work since this run (of the chain) started (see :data:`RUN_WORK_BUDGET`)."""
        self.work_spent = False
        """Set once the run's work passed :data:`RUN_WORK_BUDGET` and the patch applies: the host
        then continues the run as new at its next safe point."""
        self._work_budget_asked = False
        self._run_ctx = {
            "workflow_id": info.workflow_id,
            "run_id": info.run_id,
            "definition": definition.name,
            "version": definition.version,
            "started_at": info.started_at.isoformat(),
        }
        self._continue_as_new = continue_as_new
        self._continue_declined = False
        self._keep_waits = False
        """Set when the run continues as new while waiting: the wait is not unmarked."""
        self._frames: list[_Frame] = []
        """The sequences, outermost first, whose current step is a safe point to continue as new."""
        self._resume_branches: list[dict[str, Any]] = []
        """The branches a previous run of the chain continued in, still to enter (outermost first)."""
        self._nested_declined = False
        self._start_position = 0
        self._carried_approval: _Approval | None = None
        self._carried_delay: CarriedDelay | None = None
        self._carried_task: _Approval | None = None
        """The human task a previous run of the chain carried: pending and decidable from the first task."""
        self._carried_event: _EventWait | None = None
        """The event wait a previous run of the chain carried: it takes a signalled event from the
        first task on."""
        self._carried_parallel: dict[str, Any] | None = None
        """The ``parallel`` step a previous run of the chain continued in (:data:`PARALLEL_KIND`)."""
        self._carried_lane_delays: dict[str, CarriedDelay] = {}
        """The delays its branches (items) waited in, by path: each goes on at the same time."""
        self._carried_lane_people: dict[str, _Approval] = {}
        """The approvals and human tasks its branches (items) waited in, by path: pending (and
        decidable) from the first task, each resumes with its view."""
        self._carried_lane_parks: dict[str, tuple[CarriedPark, _Park]] = {}
        """The parks its branches (items) waited in, by path: shown and decidable from the first
        task, each resumes the wait on its dead letter row."""
        self._carried_lane_events: dict[str, _EventWait] = {}
        """The event waits its branches (items) waited in, by path: waiting from the first task
        (an event signalled then is taken), each resumes with its view and window."""
        self._drain: _Drain | None = None
        """The branches of the ``parallel`` or ``foreach`` at the safe point, while it runs."""
        self._inner_drains: list[_Drain] = []
        """The branches of the ``parallel``/``foreach`` steps among those branches' own steps, while
        they run (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`)."""
        self._lane_waits: set[str] = set()
        """Paths of the delays branches wait in, and of their approvals and human tasks waiting for a
        decision, that a continue-as-new carries as they are."""
        self._carrying = False
        """Set once the branches stopped for a continue-as-new: a delay cancelled then goes on in
        the next run (its record stays open)."""
        self._carried_park: CarriedPark | None = None
        self._carried_parked: _Park | None = None
        """The park a previous run of the chain carried: shown and decidable from the first task."""
        self._continuing: _ContinueAsNew | None = None
        self._switching_ending: RunState | None = None
        """Set when the run stopped between two compensations to continue as new: how it ends."""
        self._switch_declined = False
        """The host could not continue that run as new: it compensates to its end here."""
        self._ending: RunState | None = None
        """Set in a run that a run compensating continued: how it ends once its compensations are
        done (:data:`PATCH_CONTINUE_AS_NEW_COMPENSATING`)."""
        self._generation = 0
        self._steps_dropped = 0
        self._started_at = info.started_at
        self._batch = batch
        if batch is not None:
            # The parent's context at the foreach, inert already (not escaped a second time), unless
            # a raw client forged the slice: sealed (a no-op on inert data), so no reference in it
            # is live. The same for a continue-as-new snapshot's data (_restore).
            self.input = seal(dict(batch.input))
            self.vars = seal(dict(batch.vars))
            self._run_ctx = seal(dict(batch.run))
        if resume is not None:
            self._restore(resume)

    # ----------------------------------------------------------------------------------- the run

    async def run(self) -> RunResult:
        """Executes the definition to its end.

        Returns:
            The result; ``state`` says how the run ended. Cancellation (``asyncio.CancelledError``
            while running) runs the compensations and returns ``cancelled``: the host decides how to
            report it.
        """
        try:
            if self._ending is not None:  # continued as new while it compensated: the rest, then its end
                await self._compensate(self._ending)
                self._set_state(self._ending)
            else:
                await self._run_to_end()
        except _ContinueAsNew as point:
            self._continuing = point  # the state stays as it is: the host continues the run as new
        return self.result()

    async def _run_to_end(self) -> None:
        """The definition's steps (or the batch's items), then the end: completed, or the
        compensations and the failed, compensated or cancelled end."""
        try:
            try:
                if self._batch is not None:
                    self.output = await self._run_batch(self._batch)
                else:
                    if self.definition.cancel_on:
                        await self._subscribe_cancel_on()
                    await self._sequence(self.definition.steps, self._root, top=True)
                    output = self.definition.output
                    rendered = (
                        dict(self.vars) if output is None else self._render(output, self._context(self._root))
                    )
                    # Checked before it becomes the output: a failed run's result carries its output.
                    self.output = self._check_depth(rendered, "the run's output")
            except _Succeed as done:
                self.output = done.output if self._batch is None else {"succeeded": done.output}
            self._check_result_room()
            self._set_state(RunState.COMPLETED)
        except _CompensateAndEnd as failure:
            self._fail(failure.message, failure.error_type)
            await self._wind_up(RunState.COMPENSATED)
            self._set_state(RunState.COMPENSATED)
        except _RunFailed as failure:
            self._fail(failure.message, failure.error_type)
            await self._wind_up(RunState.FAILED)
            self._set_state(RunState.FAILED)
        except TemplateError as err:
            self._fail(str(err), "TemplateError")
            await self._wind_up(RunState.FAILED)
            self._set_state(RunState.FAILED)
        except _Jump as jump:  # validation makes this unreachable; say so clearly if it is not
            self._fail(f"jump to {jump.target!r} has no target in scope", "InvalidDefinition")
            await self._wind_up(RunState.FAILED)
            self._set_state(RunState.FAILED)
        except asyncio.CancelledError:
            who = self.cancel_request
            self._fail(f"cancelled by {who.actor}: {who.reason}" if who else "cancelled", "RunCancelled")
            await self._wind_up(RunState.CANCELLED)
            self._set_state(RunState.CANCELLED)

    def _check_result_room(self) -> None:
        """Fails the run (it compensates) when its output would not fit in the room its parent run
        holds for its result (:attr:`RunInfo.result_limit`); the output is dropped, as the failed
        run's result would carry it. Counted as :func:`json_size` does (the host measures the
        result as written too)."""
        limit = self.info.result_limit
        if limit is None:
            return
        room = limit - RESULT_ROOM_BESIDE_OUTPUT
        size = json_size(self.output, room)
        if size <= room:
            return
        self.output = None
        raise _RunFailed(
            f"the run's output is more than {room:,} bytes: its parent run holds {limit:,} bytes for"
            " its result in its own history (its share of the room left under the guard near"
            " Temporal's 50 MiB history limit). Return less from the run (a fanned-out foreach:"
            " smaller item outputs, fewer items at once), or configure the payload store"
            " (WFA_PAYLOAD_STORE)",
            "HistoryLimit",
        )

    @property
    def started_at(self) -> datetime:
        """When the run's continue-as-new chain started: when its first run's first workflow task
        began (what a continued run carries, so every run of the chain answers the same)."""
        return self._started_at

    @property
    def continuing(self) -> bool:
        """True when :meth:`run` returned at a safe point to continue as new (see
        :meth:`continuation`)."""
        return self._continuing is not None

    def result(self) -> RunResult:
        """The run's result as it stands."""
        return RunResult(
            state=self.state,
            output=self.output,
            error=self.error,
            error_type=self.error_type,
            steps=list(self.records),
        )

    def pending_approvals(self) -> list[PendingApproval]:
        """The approvals and human tasks waiting now (the ``pending_approvals`` query's, without
        the rest of :meth:`status`)."""
        return [a.view for a in self._approvals.values()]

    def status(self) -> RunStatus:
        """A snapshot for the ``status`` query."""
        return RunStatus(
            definition=self.definition.name,
            version=self.definition.version,
            state=self.state,
            current_steps=list(self.active),
            steps=list(self.records),
            pending_approvals=self.pending_approvals(),
            parked=[p.view for p in self._parked.values()],
            decisions=list(self.decisions),
            decisions_dropped=self.decisions_dropped,
            refused_messages=list(self.refused_messages),
            refused_messages_dropped=self.refused_messages_dropped,
            vars=dict(self.vars),
            output=self.output,
            error=self.error,
            error_type=self.error_type,
            cancelled_by=self.cancel_request,
            waiting_events=[w.view for w in self._event_waits.values()],
            continued=self._generation,
            steps_dropped=self._steps_dropped,
        )

    def assignees(self) -> list[str]:
        """Who the run waits for now (``WfaAssignees`` values), sorted: the approvers of every
        pending approval, after escalations."""
        found: dict[str, None] = {}
        for approval in self._approvals.values():
            if approval.decision is None:
                for approver in approval.view.approvers:
                    found[assignee_value(approver)] = None
        return sorted(found)

    @property
    def awaiting_approval(self) -> bool:
        """True while at least one approval step waits for a decision."""
        return any(a.decision is None for a in self._approvals.values())

    async def abandon_continuation(self, message: str, error_type: str) -> None:
        """The host cannot continue the run as new (its next run's input would be too large): the run
        ends failed with ``message``, nothing it would have carried shown pending, parked, waiting
        or running any more, and (:data:`PATCH_ABANDON_CLOSES_WAITS`) the subscriptions and dead
        letter rows it kept open for the next run closed."""
        waits = [wait for wait in self._event_waits.values() if wait.view.subscribed]
        rows = [
            park.view.dead_letter_id for park in self._parked.values() if park.view.dead_letter_id is not None
        ]
        if (waits or rows) and self.runtime.patched(PATCH_ABANDON_CLOSES_WAITS):
            for wait in waits:
                await self._finally(self.runtime.unsubscribe_events(self._subscription_of(wait)))
            closing = DeadLetterDecision(action=DeadLetterAction.CANCELLED, actor="run", reason=clip(message))
            for row_id in rows:
                await self._finally(self._resolve_row(row_id, closing))
        self._continuing = None
        self._approvals.clear()
        self._parked.clear()
        self._event_waits.clear()
        self.active.clear()
        self.waiting.clear()
        self.runtime.waiting_changed()
        for record in self.records:
            if record.status in (StepStatus.WAITING, StepStatus.RUNNING):
                self._finish(record, StepStatus.FAILED, error=message, error_type=error_type)
        self._fail(message, error_type)
        self._set_state(RunState.FAILED)

    def refuse_output(self, message: str, error_type: str) -> None:
        """The host cannot close the completed run with its output (past what Temporal or the
        payload store takes): the run ends failed with ``message``, its output dropped, its steps
        as they ended (completed, not compensated)."""
        self.output = None
        self._fail(message, error_type)
        self._set_state(RunState.FAILED)

    def _fail(self, message: str, error_type: str) -> None:
        if self.error is None:
            self.error, self.error_type = message, error_type

    def _set_state(self, state: RunState) -> None:
        if self.state != state:
            self.state = state
            self.runtime.state_changed()

    def _context(self, scope: _Scope) -> dict[str, Any]:
        return {
            "input": self.input,
            "vars": self.vars,
            "steps": scope.visible_steps(),
            "run": self._run_ctx,
            **scope.visible_locals(),
        }

    # ------------------------------------------------------------------------------- decisions

    def check_decision(self, kind: DecisionKind, decision: Decision) -> _Approval:
        """Checks that a decision can be accepted now.

        Raises:
            DecisionError: Naming why not.
        """
        waiting = [a for a in self._approvals.values() if a.decision is None]
        if not waiting:
            raise DecisionError("no approval is pending in this run")
        if decision.step_id is not None:
            matches = [a for a in waiting if decision.step_id in (a.view.step_id, a.view.path)]
            if not matches:
                names = ", ".join(a.view.path for a in waiting)
                raise DecisionError(f"no approval is pending at step {decision.step_id!r} (pending: {names})")
            if len(matches) > 1:  # the same step in several foreach items: the path says which
                names = ", ".join(a.view.path for a in matches)
                raise DecisionError(
                    f"step {decision.step_id!r} is pending in several places ({names}): name the path"
                )
            approval = matches[0]
        elif len(waiting) > 1:
            names = ", ".join(a.view.path for a in waiting)
            raise DecisionError(f"several approvals are pending ({names}): name the step")
        else:
            approval = waiting[0]
        is_task = isinstance(approval.step, HumanTaskStep)
        if is_task != (kind == DecisionKind.COMPLETE):
            what = "a human task: complete it" if is_task else "an approval: approve or reject it"
            raise DecisionError(f"step {approval.view.path!r} is {what}")
        if not may_decide(approval.view.approvers, decision.actor, decision.groups):
            raise DecisionError(
                f"{decision.actor!r} may not decide step {approval.view.path!r}"
                f" (approvers: {', '.join(approval.view.approvers)})"
            )
        problem = form_problem(approval.step, approval.view.path, kind, decision.data)
        if problem is not None:
            allowed = approval.view.fields
            refused_before = allowed is not None and any(k not in allowed for k in decision.data)
            # In an update validator (read-only, never replayed) the runtime applies the new rule
            # without asking; a signal or the update's handler asks, and replays keep what was.
            if refused_before or self.runtime.patched(PATCH_DECLARED_FORM_FIELDS):
                raise DecisionError(problem)
        return approval

    def decide(self, kind: DecisionKind, decision: Decision) -> None:
        """Accepts a decision, or records it as refused.

        Raises:
            DecisionError: When refused (the refusal is recorded in the status first).
        """
        try:
            approval = self.check_decision(kind, decision)
        except DecisionError as err:
            self.refuse_decision(kind, decision, str(err))
            raise
        approval.decision = (kind, decision)
        self.decisions.append(self._decision_record(kind, decision, refusal=None))
        self._keep_last_decisions()

    def refuse_decision(self, kind: DecisionKind, decision: Decision, refusal: str) -> None:
        """Records a well-formed decision that is refused; keeps the last :data:`MAX_REFUSALS`."""
        self.decisions.append(self._decision_record(kind, decision, refusal=refusal))
        refused = [i for i, d in enumerate(self.decisions) if not d.accepted]
        if len(refused) > MAX_REFUSALS:
            del self.decisions[refused[0]]
            self.decisions_dropped += 1
        self._keep_last_decisions()

    def _keep_last_decisions(self) -> None:
        """Drops the oldest decisions past :data:`MAX_DECISIONS`, counted in ``decisions_dropped``
        (:data:`PATCH_DECISIONS_KEPT`)."""
        excess = len(self.decisions) - MAX_DECISIONS
        if excess > 0 and self.runtime.patched(PATCH_DECISIONS_KEPT):
            del self.decisions[:excess]
            self.decisions_dropped += excess

    def refuse_message(self, name: str, actor: str | None, reason: str) -> None:
        """Records a message the run could not read or refused; keeps the last :data:`MAX_REFUSALS`."""
        self.refused_messages.append(
            RefusedMessage(
                name=clip(name, MAX_ACTOR_CHARS),
                actor=None if actor is None else clip(actor, MAX_ACTOR_CHARS),
                at=self.runtime.now(),
                reason=clip(reason),
            )
        )
        if len(self.refused_messages) > MAX_REFUSALS:
            del self.refused_messages[0]
            self.refused_messages_dropped += 1

    def _decision_record(self, kind: DecisionKind, decision: Decision, refusal: str | None) -> DecisionRecord:
        # Clipped: a message's texts must not be able to grow the status beyond the payload limit.
        return DecisionRecord(
            decision=kind,
            actor=clip(decision.actor, MAX_ACTOR_CHARS),
            step_id=None if decision.step_id is None else clip(decision.step_id, MAX_ACTOR_CHARS),
            reason=clip(decision.reason),
            at=self.runtime.now(),
            accepted=refusal is None,
            refusal=None if refusal is None else clip(refusal),
        )

    # ------------------------------------------------------------------------------ sequencing

    async def _sequence(
        self,
        steps: list[Step],
        scope: _Scope,
        *,
        top: bool = False,
        frame: _Frame | None = None,
        start: int = 0,
        boundary: Callable[[int, bool], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """Runs ``steps`` in order, following jumps among them. ``top``: the top-level steps;
        ``frame``: a branch whose steps are safe points too (see :meth:`_branch`); ``start``: where
        to begin (without a frame); ``boundary``: awaited before each step (with whether it is the
        first), a ``parallel`` branch's place to stop for a continue-as-new (see :meth:`_parallel`)."""
        index = {step.id: i for i, step in enumerate(steps)}
        if top:
            frame = _Frame(steps, self._start_position)
        i = start if frame is None else frame.index
        first = True
        if frame is not None:
            self._frames.append(frame)
        try:
            while i < len(steps):
                if frame is not None:
                    # A safe point: nothing else of the run is in flight between two steps here.
                    if not first and (self._should_continue() if top else self._should_continue_nested()):
                        raise self._stop(i)
                    first = False
                    frame.index = i
                elif boundary is not None:
                    await boundary(i, first)
                    first = False
                try:
                    await self._step(steps[i], scope)
                except _Jump as jump:
                    if jump.target not in index:
                        raise
                    i = index[jump.target]
                    continue
                i += 1
        finally:
            if frame is not None:
                self._frames.pop()

    def _safe_step(self) -> Step | None:
        """The step that is a safe point to continue as new now (the current step of the innermost
        sequence that is one), if any."""
        if not self._frames:
            return None
        frame = self._frames[-1]
        return frame.steps[frame.index] if frame.index < len(frame.steps) else None

    def _at_safe_step(self, step: Step, scope: _Scope) -> bool:
        """Whether ``step`` (in ``scope``) is the current step of the innermost safe sequence: where
        a carried wait resumes (no patch asked)."""
        return step is self._safe_step() and scope is self._root

    def _at_safe_point(self, step: Step, scope: _Scope) -> bool:
        """Whether ``step`` (in ``scope``) is where the run may continue as new while it waits: a
        top-level step, or one in a branch that is (asking the branches' patch for the latter,
        before any other patch: a history recorded before it replays its waits as they were)."""
        return self._at_safe_step(step, scope) and self._nested_ok()

    def _may_continue_nested(self) -> bool:
        """Whether waits and boundaries inside branches are safe points in this run (asks the patch:
        a history recorded before the change replays its branches as they went on)."""
        if self._continue_as_new is None or self._nested_declined:
            return False
        if not self.runtime.patched(PATCH_CONTINUE_AS_NEW_BRANCHES):
            self._nested_declined = True
            return False
        return True

    def _nested_ok(self) -> bool:
        """For a step at the safe point: top-level, or in a branch whose patch this run has."""
        return len(self._frames) == 1 or self._may_continue_nested()

    def _branch_to_resume(self, step: ConditionStep | SwitchStep) -> tuple[str, int] | None:
        """The branch of ``step`` the previous run of the chain continued in and where in it (taken
        once), if ``step`` is the one it continued in."""
        pending = self._resume_branches
        if pending and step is self._safe_step() and pending[0]["step"] == step.id:
            entry = pending.pop(0)
            return str(entry["branch"]), int(entry["position"])
        return None

    def _lane_resuming(self, step: Step, scope: _Scope) -> _Lane | None:
        """The branch (item) whose current step is ``step``, when the previous run of the chain
        carried it inside ``step``'s branch (:data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`)."""
        lane = self._lane_at(step, scope)
        return lane if lane is not None and lane.resume and lane.resume[0]["step"] == step.id else None

    def _lane_branch_to_resume(
        self, step: ConditionStep | SwitchStep, scope: _Scope
    ) -> tuple[str, int] | None:
        """The branch of ``step`` (the step a parallel branch or foreach item runs) the previous run
        of the chain carried that branch (item) in, and where in it (taken once), if any."""
        lane = self._lane_resuming(step, scope)
        if lane is None:
            return None
        entry = lane.resume.pop(0)
        return str(entry["branch"]), int(entry["position"])

    def _should_continue_nested(self) -> bool:
        """:meth:`_should_continue` between two steps of a branch (asks its own patch, only then)."""
        return self._continue_wanted() and self._may_continue_nested()

    def _stop(
        self,
        position: int,
        approval: _Approval | None = None,
        carry: Callable[[], dict[str, Any]] | None = None,
    ) -> _ContinueAsNew:
        """The continue-as-new at index ``position`` of the innermost safe sequence (where the next
        run goes on, or the wait it resumes), with the branches the run is in."""
        frames = self._frames
        indexes = [f.index for f in frames[:-1]] + [position]
        branches = [
            {"step": f.step, "branch": f.branch, "position": at}
            for f, at in zip(frames[1:], indexes[1:], strict=True)
        ]
        return _ContinueAsNew(indexes[0], approval, carry, branches)

    async def _step(self, step: Step, scope: _Scope) -> None:
        # First: a cancellation that arrives while the activation ends is held below like any.
        await self._pace(scope.prefix + step.id)
        if self.hold_steps:
            # A cancellation is on its way (the host asked Temporal for it): no step starts meanwhile;
            # the cancellation ends this wait (asyncio.CancelledError).
            await self.runtime.wait_condition(lambda: not self.hold_steps, None, "cancelling")
        path = scope.prefix + step.id
        resuming = self._resuming_at()
        if resuming is not None and step is self._safe_step() and resuming[0] == path:
            await self._resume_step(step, scope, path, resuming[1])
            return
        lane_delay = self._carried_lane_delays.get(path)
        if lane_delay is not None and isinstance(step, DelayStep) and self._lane_at(step, scope) is not None:
            await self._resume_step(step, scope, path, lane_delay.since)
            return
        person = self._carried_lane_people.get(path)
        if person is not None and person.step is step and self._lane_at(step, scope) is not None:
            await self._resume_step(step, scope, path, person.view.since)
            return
        waiting = self._carried_lane_events.get(path)
        if waiting is not None and waiting.step is step and self._lane_at(step, scope) is not None:
            await self._resume_step(step, scope, path, waiting.view.since)
            return
        lane_park = self._carried_lane_parks.get(path)
        if lane_park is not None and isinstance(step, TaskStep) and self._lane_at(step, scope) is not None:
            await self._resume_step(step, scope, path, lane_park[0].view.parked_at)
            return
        if isinstance(step, ConditionStep | SwitchStep) and self._lane_resuming(step, scope) is not None:
            # Its branch was carried inside it: its visit is counted and its record kept already.
            await self._resume_step(step, scope, path, self._started_at)
            return
        nesting = self._lane_nested_resuming(step, scope)
        if (
            isinstance(step, ParallelStep | ForeachStep)
            and nesting is not None
            and nesting.nested is not None
        ):
            # The branch was carried inside it: its visit is counted and its record kept already.
            since = nesting.nested.get("since") or self._started_at
            await self._resume_step(step, scope, path, since)
            return
        visits = self._visits[path] = self._visits.get(path, 0) + 1
        if step.max_visits is not None and visits > step.max_visits:
            raise _RunFailed(
                f"step {path!r} would run {visits} times, more than its max_visits {step.max_visits}",
                "LoopLimitExceeded",
            )
        self._executions += 1
        if self._executions > self.definition.limits.max_step_executions:
            raise _RunFailed(
                f"the run executed more than limits.max_step_executions"
                f" ({self.definition.limits.max_step_executions}) steps",
                "StepLimitExceeded",
            )
        self._count_run_work(STEP_WORK)
        self._check_history(path)
        record = StepRecord(
            id=step.id,
            path=path,
            type=step.type,
            name=step.label,
            status=StepStatus.RUNNING,
            started_at=self.runtime.now(),
        )
        self.records.append(record)
        await self._run_step(step, scope, path, record, visits, resumed=False)

    def _check_depth(
        self, value: Any, what: str, *, failure: type[Exception] = Exception, attempts: int = 1
    ) -> Any:
        """``value``, unless it nests deeper than :data:`VALUE_MAX_DEPTH`: then it fails with
        ``ValueTooDeep`` (:data:`PATCH_VALUE_DEPTH`), before the value reaches a payload nobody could
        read back (an output or variable the run keeps, a task's input, a ``succeed`` step's or the
        run's output, which a template may nest from literals and variables). ``failure``
        :class:`ActionFailedError`: a task's own failure, which its ``on_failure`` handles (see
        :meth:`_admit`); otherwise the run fails."""
        if json_depth(value) > VALUE_MAX_DEPTH and self.runtime.patched(PATCH_VALUE_DEPTH):
            message = f"{what} nests lists and objects more than {VALUE_MAX_DEPTH} levels deep, more than a run keeps"
            if failure is ActionFailedError:
                raise ActionFailedError(message, "ValueTooDeep", attempts)
            raise _RunFailed(message, "ValueTooDeep")
        return value

    async def _pace(self, path: str) -> None:
        """Ends the activation before a step once it executed :data:`TASK_STEP_BUDGET` steps
        (:data:`PATCH_TASK_STEP_BUDGET`); the steps after it run in the next. Steps are counted
        from the start of a workflow task (an action's result or a timer begins a new one) or from
        the last :meth:`Runtime.end_task`."""
        key = self.runtime.task_key()
        if key != self._steps_task_key:
            self._steps_task_key, self._task_steps = key, 0
        self._task_steps += 1
        if self._task_steps <= TASK_STEP_BUDGET or not self.runtime.patched(PATCH_TASK_STEP_BUDGET):
            return
        await self.runtime.end_task(f"{path}: {TASK_STEP_BUDGET} steps ran without a pause")
        self._steps_task_key, self._task_steps = self.runtime.task_key(), 1

    def _check_history(self, path: str) -> None:
        """Fails the run before a step starts once its history is near Temporal's limit (see
        :data:`PATCH_HISTORY_GUARD`); compensations always start (they have the room left), also
        after a wait in one (which shows the run's state as waiting, not compensating)."""
        if self._compensating:
            return
        events, size = self.runtime.history_used()
        if events < HISTORY_GUARD_EVENTS and size < HISTORY_GUARD_BYTES:
            return
        if not self.runtime.patched(PATCH_HISTORY_GUARD):
            return
        raise _RunFailed(
            f"the run's history reached {events} events ({size} bytes) as step {path!r} was to start,"
            f" where the run cannot continue as new (limits: {HISTORY_GUARD_EVENTS} events,"
            f" {HISTORY_GUARD_BYTES} bytes): it stops before Temporal's own limit would terminate it."
            " Keep long loops and waits at the top level, in condition/switch branches, or in the"
            " branches of a parallel step or foreach there while none of them waits, where the run"
            " continues as new, or move the loop into a subflow",
            "HistoryLimit",
        )

    def _resuming_at(self) -> tuple[str, datetime] | None:
        """The path of the step a previous run of the chain stopped in (the ``condition`` or
        ``switch`` of a branch it continued in, then the wait), and since when it waits or runs
        (None when this run did not start in a wait or a branch)."""
        if self._resume_branches:
            entry = self._resume_branches[0]
            return str(entry["step"]), self._started_at
        if self._carried_parallel is not None:
            return str(self._carried_parallel["step"]), self._carried_parallel.get("since", self._started_at)
        if self._carried_approval is not None:
            return self._carried_approval.view.path, self._carried_approval.view.since
        if self._carried_park is not None:
            return self._carried_park.view.path, self._carried_park.view.parked_at
        if self._carried_delay is not None:
            return self._carried_delay.path, self._carried_delay.since
        if self._carried_task is not None:
            return self._carried_task.view.path, self._carried_task.view.since
        if self._carried_event is not None:
            return self._carried_event.view.path, self._carried_event.view.since
        return None

    async def _resume_step(self, step: Step, scope: _Scope, path: str, since: datetime) -> None:
        """Goes on with the step a previous run of the chain stopped in (continued as new while it
        waited, or in its branch): its visit is counted and its record kept already."""
        record = self._open_record(path)
        if record is None:  # dropped from the carried records: show the step again
            running = isinstance(step, DelayStep | ConditionStep | SwitchStep | ParallelStep | ForeachStep)
            record = StepRecord(
                id=step.id,
                path=path,
                type=step.type,
                name=step.label,
                status=StepStatus.RUNNING if running else StepStatus.WAITING,
                started_at=since,
            )
            self.records.append(record)
        await self._run_step(step, scope, path, record, self._visits.get(path, 1), resumed=True)

    async def _run_step(
        self, step: Step, scope: _Scope, path: str, record: StepRecord, visits: int, *, resumed: bool
    ) -> None:
        continuing = False
        try:
            if not resumed and step.when is not None and not self._evaluate(step.when, self._context(scope)):
                self._finish(record, StepStatus.SKIPPED)
                return
            self.active[path] = step.label
            self.runtime.state_changed()
            output = await self._dispatch(step, scope, path, record, visits)
            if not isinstance(step, TaskStep):  # a task's output was admitted before its handling
                self._admit(path, output, copies=2 if isinstance(step, SetStep | ApprovalStep) else 1)
        except TemplateError as err:
            self._finish_open(record, StepStatus.FAILED, error=str(err), error_type="TemplateError")
            raise _RunFailed(f"step {path!r}: {err}", "TemplateError") from None
        except (_Jump, _Succeed):
            self._finish_open(record, StepStatus.COMPLETED)
            raise
        except asyncio.CancelledError:
            if self._carrying:
                continuing = True  # a branch's delay, carried into the next run: its record stays open
                raise
            self._finish_open(record, StepStatus.CANCELLED, error="cancelled", error_type="Cancelled")
            raise
        except _RunFailed as failure:
            self._finish_open(record, StepStatus.FAILED, error=failure.message, error_type=failure.error_type)
            raise
        except _ContinueAsNew:
            continuing = True  # the step goes on in the next run: its record stays open
            raise
        else:
            self._finish_open(record, StepStatus.COMPLETED, output=output)
        finally:
            if not continuing:
                scope.steps[step.id] = {
                    "status": str(record.status),
                    "output": record.output,
                    "error": record.error,
                    "error_type": record.error_type,
                    "attempts": record.attempts,
                }
            if self.active.pop(path, None) is not None:
                self.runtime.state_changed()
        scope.last_output = record.output
        if step.next is not None:
            raise _Jump(step.next)

    def _render(self, value: Any, context: Mapping[str, Any]) -> Any:
        return self._templated(render, value, context)

    def _evaluate(self, expression: str, context: Mapping[str, Any]) -> Any:
        return self._templated(evaluate, expression, context)

    def _templated(
        self, how: Callable[[Any, Mapping[str, Any]], Any], value: Any, context: Mapping[str, Any]
    ) -> Any:
        """``how(value, context)`` (render or evaluate), counting its work into this workflow task's;
        again without the value check for a run recorded before it (:data:`PATCH_TEMPLATE_VALUES`),
        without the size checks (:data:`PATCH_TEMPLATE_SIZES`), without the argument checks
        (:data:`PATCH_TEMPLATE_ARGUMENTS`) and without counting uncounted work
        (:data:`PATCH_TEMPLATE_WORK`)."""
        self._check_task_work()

        def as_recorded(
            run: Callable[[], Any],
            refused: type[TemplateError],
            patch: str,
            relaxed: Callable[[], contextlib.AbstractContextManager[None]],
        ) -> Callable[[], Any]:
            """``run``, again without a check whose ``refused`` a run recorded before ``patch``
            did not meet (as the run rendered it when it was recorded)."""

            def attempt() -> Any:
                try:
                    return run()
                except refused:
                    if self.runtime.patched(patch):
                        raise
                    with relaxed():
                        return run()

            return attempt

        checked = as_recorded(
            lambda: how(value, context), UnreadableValueError, PATCH_TEMPLATE_VALUES, unchecked_values
        )
        sized = as_recorded(checked, OversizedValueError, PATCH_TEMPLATE_SIZES, unbounded_sizes)
        argued = as_recorded(sized, ArgumentSizeError, PATCH_TEMPLATE_ARGUMENTS, unbounded_arguments)
        worked = as_recorded(argued, UncountedWorkError, PATCH_TEMPLATE_WORK, unbounded_work)
        try:
            return worked()
        finally:
            # (the last evaluation's: the one that counts)
            self._task_work += last_work()
            spent = last_evaluation_work()  # with its single operations' work
            self._task_all_work += spent
            self._run_work += spent

    def _count_run_work(self, work: int) -> None:
        """Adds a step's ``work`` to the run's; once the run's work passed :data:`RUN_WORK_BUDGET`,
        asks :data:`PATCH_RUN_WORK_BUDGET` (once) and, when it applies, sets :attr:`work_spent`."""
        self._run_work += work
        if (
            self._run_work >= RUN_WORK_BUDGET
            and self._continue_as_new is not None
            and not self._work_budget_asked
        ):
            self._work_budget_asked = True
            self.work_spent = self.runtime.patched(PATCH_RUN_WORK_BUDGET)

    def _check_task_work(self) -> None:
        """Refuses to start an evaluation once this workflow task's evaluations together spent
        ``TASK_WORK_BUDGET`` (so a task spends at most that plus one evaluation's budget)."""
        key = self.runtime.task_key()
        if key != self._task_key:
            self._task_key, self._task_work, self._task_all_work = key, 0, 0
        if self._task_work >= TASK_WORK_BUDGET and self.runtime.patched(PATCH_TASK_WORK_BUDGET):
            raise TemplateError(
                "(templates evaluated together)",
                f"the run's templates need more than {TASK_WORK_BUDGET} operations in one workflow task"
                " (concurrent foreach items or parallel branches each evaluating heavy templates);"
                " lower the concurrency or the work per template",
            )
        if self._task_all_work >= TASK_WORK_BUDGET and self.runtime.patched(PATCH_TEMPLATE_WORK):
            raise UncountedWorkError(
                "(templates evaluated together)",
                f"the run's templates need more than {TASK_WORK_BUDGET} operations in one workflow task,"
                " counting the work of their single operations (values turned into text or compared,"
                " long arguments read) as 64 steps to an operation (a loop or concurrent items"
                " evaluating heavy templates); lower the concurrency or the work per template",
            )

    def _admit(
        self,
        path: str,
        output: Any,
        *,
        copies: int = 1,
        failure: type[Exception] = Exception,
        attempts: int = 1,
    ) -> None:
        """Counts an output into the run's state, or fails the step when it would not fit.

        ``copies``: how often the run keeps it (a ``set`` step's values are its output and also
        the variables). A task's excess is raised as :class:`ActionFailedError`, so its
        ``on_failure`` handles it like any failure; other steps fail the run.
        """
        self._check_depth(output, f"step {path!r}: its output", failure=failure, attempts=attempts)
        budget = self.info.state_budget or RUN_STATE_BUDGET
        size = json_size(output, budget) * copies
        total = self._state_size + size
        if total > budget and self.runtime.patched(PATCH_PAYLOAD_BUDGETS):
            message = (
                f"step {path!r}: its output of {size} bytes would bring the run's state to {total} bytes,"
                f" over its budget of {budget} bytes"
                + (
                    " (Temporal refuses payloads over 2 MiB; WFA_PAYLOAD_STORE stores large ones by reference)"
                    if self.info.state_budget is None
                    else " (the run's state budget with the payload store, WFA_PAYLOAD_STORE_STATE_BUDGET)"
                    if self.info.state_budget_asked is None
                    else f" (the worker's maximum, WFA_STATE_BUDGET_MAX; the run asked for"
                    f" {self.info.state_budget_asked} bytes)"
                )
            )
            if failure is ActionFailedError:
                raise ActionFailedError(message, "StateBudgetExceeded", attempts)
            raise _RunFailed(message, "StateBudgetExceeded")
        self._state_size = total

    def _finish_open(
        self,
        record: StepRecord,
        status: StepStatus,
        output: Any = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Finishes the record unless a handler already did (it knows better)."""
        if record.status in (StepStatus.RUNNING, StepStatus.WAITING):
            self._finish(record, status, output=output, error=error, error_type=error_type)

    def _finish(
        self,
        record: StepRecord,
        status: StepStatus,
        output: Any = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        now = self.runtime.now()
        record.status = status
        record.finished_at = now
        record.duration_s = (now - record.started_at).total_seconds()
        record.output = output
        record.error = error
        record.error_type = error_type

    async def _dispatch(self, step: Step, scope: _Scope, path: str, record: StepRecord, visit: int) -> Any:
        """Runs one step of any kind: the one place that maps a step kind to its evaluator (mypy
        names it, through ``assert_never``, when a new kind has no branch here)."""
        if isinstance(step, TaskStep):
            return await self._task(step, scope, path, record, visit)
        if isinstance(step, ConditionStep | SwitchStep):
            resume = self._branch_to_resume(step) or self._lane_branch_to_resume(step, scope)
            if resume is not None:
                # The previous run of the chain continued in this branch: not chosen again.
                name, start = resume
                chosen, taken = _branch_named(step, name)
                await self._branch(chosen, scope, record, taken, step=step, name=name, start=start)
                return taken
        if isinstance(step, ConditionStep):
            truth = bool(self._evaluate(step.if_, self._context(scope)))
            chosen = step.then if truth else step.else_
            taken = {"branch": "then" if truth else ("else" if chosen else None)}
            await self._branch(chosen, scope, record, taken, step=step, name="then" if truth else "else")
            return taken
        if isinstance(step, SwitchStep):
            ctx = self._context(scope)
            for i, case in enumerate(step.cases):
                if self._evaluate(case.when, ctx):
                    await self._branch(case.then, scope, record, {"case": i}, step=step, name=f"case:{i}")
                    return {"case": i}
            taken = {"case": "default" if step.default else None}
            await self._branch(step.default, scope, record, taken, step=step, name="default")
            return taken
        if isinstance(step, ParallelStep):
            return await self._parallel(step, scope, path)
        if isinstance(step, ForeachStep):
            return await self._foreach(step, scope, path, visit)
        if isinstance(step, DelayStep):
            return await self._delay(step, scope, path)
        if isinstance(step, ApprovalStep):
            return await self._approval(step, scope, path, record)
        if isinstance(step, WaitForEventStep):
            return await self._wait_for_event(step, scope, path, record)
        if isinstance(step, HumanTaskStep):
            return await self._human_task(step, scope, path, record)
        if isinstance(step, SetStep):
            values = self._render(dict(step.vars), self._context(scope))
            self.vars.update(values)
            return values
        if isinstance(step, SucceedStep):
            output = self._render(step.output, self._context(scope))
            self._check_depth(output, f"step {path!r}: its output")
            self._finish(record, StepStatus.COMPLETED, output=output)
            raise _Succeed(output)
        if isinstance(step, FailStep):
            message = self._render(step.message, self._context(scope))
            raise _RunFailed(str(message), step.error_type)
        if isinstance(step, SubflowStep):
            return await self._subflow(step, scope, path, record, visit)
        assert_never(step)

    async def _subflow(
        self, step: SubflowStep, scope: _Scope, path: str, record: StepRecord, visit: int
    ) -> Any:
        depth = self.info.subflow_depth + 1
        if depth > MAX_SUBFLOW_DEPTH:
            raise _RunFailed(
                f"step {path!r}: subflow {step.definition!r} would run at depth {depth},"
                f" deeper than {MAX_SUBFLOW_DEPTH} sub-workflows",
                "SubflowDepthExceeded",
            )
        runtime = self.runtime
        if not isinstance(runtime, SubflowRuntime):
            raise _RunFailed(f"step {path!r}: this runtime cannot run sub-workflows", "SubflowUnsupported")
        suffix = f"#{visit}" if visit > 1 else ""
        call = SubflowCall(
            step_id=step.id,
            path=path,
            definition=step.definition,
            version=step.version,
            input=self._text_of(self._render(dict(step.input), self._context(scope))),
            wait=step.wait,
            workflow_id=f"{self.info.workflow_id}/{path}{suffix}",
            activity_id=f"{path}{suffix}/subflow",
            depth=depth,
            summary=f"{step.label} (subflow {step.definition}{'' if step.version is None else f'@{step.version}'})",
            compensating=self._compensating,
        )
        try:
            output = await runtime.run_subflow(call)
        except SubflowFailedError as failure:
            self._finish(record, StepStatus.FAILED, error=failure.message, error_type=failure.error_type)
            message = f"step {path!r}: {failure.message}"
            if step.on_failure == "continue":
                return None
            if isinstance(step.on_failure, Goto):
                raise _Jump(step.on_failure.goto) from None
            raise _RunFailed(message, failure.error_type) from None
        return self._inert_data(output)

    def _holds_text_patch(self, value: Any) -> bool:
        """Whether :data:`PATCH_DATA_TEXT` applies to ``value``: asked only for data that holds
        ``${secret:``, where the two treatments differ."""
        return holds_reference(value) and self.runtime.patched(PATCH_DATA_TEXT)

    def _text_of(self, data: dict[str, Any]) -> dict[str, Any]:
        """Inert data as the text it stands for (:data:`PATCH_DATA_TEXT`): a subflow's input (the
        child escapes it on arrival) and an event's data (its fields are checked against it)."""
        return as_text(data) if self._holds_text_patch(data) else data

    def _inert_data(self, value: Any) -> Any:
        """Data that arrives inert already (a subflow's output, an event from its mailbox): sealed,
        so nothing is live and its text is kept (:data:`PATCH_DATA_TEXT`); before the patch,
        escaped once more."""
        return seal(value) if self._holds_text_patch(value) else make_inert(value)

    async def _branch(
        self,
        branch: Branch | None,
        scope: _Scope,
        record: StepRecord,
        taken: dict[str, Any],
        *,
        step: ConditionStep | SwitchStep,
        name: str,
        start: int = 0,
    ) -> None:
        """Runs the branch ``name`` of ``step``. When ``step`` is itself a safe point (a top-level
        step, or one in such a branch), so are the branch's steps (:data:`PATCH_CONTINUE_AS_NEW_BRANCHES`);
        ``start``: where a branch the previous run of the chain continued in goes on."""
        if branch is None:
            return
        try:
            if branch.goto is not None:
                raise _Jump(branch.goto)
            frame = None
            if self._continue_as_new is not None and self._at_safe_step(step, scope):
                frame = _Frame(branch.steps or [], start, step.id, name)
            lane = None if frame is not None else self._lane_at(step, scope)
            if lane is not None and self.runtime.patched(PATCH_CONTINUE_AS_NEW_LANE_BRANCHES):
                # In a parallel branch (a foreach item) that may continue as new: a wait in this
                # branch is carried as one among its own steps (with the branches it is in).
                inner = _Frame(branch.steps or [], start, step.id, name)
                lane.nest.append(inner)
                drain = lane.owner
                assert drain is not None
                try:
                    # It may stop for a continue-as-new between two of the branch's steps too.
                    await self._sequence(
                        branch.steps or [],
                        scope,
                        start=start,
                        boundary=functools.partial(self._lane_boundary, drain, lane, drain.label),
                    )
                finally:
                    if not self._carrying and lane.nest and lane.nest[-1] is inner:
                        lane.nest.pop()  # (carried: the snapshot is taken once every branch ended)
                return
            await self._sequence(branch.steps or [], scope, frame=frame)
        except (_Jump, _Succeed):
            # Leaving by a jump or a succeed still records which branch was taken.
            self._finish_open(record, StepStatus.COMPLETED, output=taken)
            raise

    # ------------------------------------------------------------------------------ step kinds

    async def _task(self, step: TaskStep, scope: _Scope, path: str, record: StepRecord, visit: int) -> Any:
        retry = step.retry or self.definition.defaults.retry
        suffix = f"#{visit}" if visit > 1 else ""
        request = ActionRequest(
            step_id=path,
            idempotency_key=f"{self.info.workflow_id}/{self.info.run_id}/{path}{suffix}",
            input=self._render_input(step, scope),
            tenant=self.info.tenant,
            retry_mode=retry.preset,
            initial_interval_s=parse_duration(retry.initial_interval).total_seconds(),
            maximum_interval_s=(
                parse_duration(retry.maximum_interval).total_seconds() if retry.maximum_interval else None
            ),
        )
        call = ActionCall(
            step_id=step.id,
            path=path,
            action=step.action,
            activity_id=path + suffix,
            summary=f"{step.label} ({step.action})",
            request=request,
            retry=retry,
            timeouts=self._step_timeouts(step),
            task_queue=step.task_queue,
            compensating=self._compensating,
        )
        redrives = 0
        # Where a park may continue as new (in a branch, by its patch: asked when it parks).
        here = self._at_safe_step(step, scope)
        lane = self._lane_at(step, scope)
        resumed = self._carried_park
        parked: _Park | None = None
        in_lane = self._carried_lane_parks.pop(path, None) if lane is not None else None
        if in_lane is not None:
            resumed, parked = in_lane  # as below, in a branch (or item)
        elif resumed is not None and here and resumed.view.path == path:
            # Continued as new while parked: the same dead letter, the failed call as it was.
            self._carried_park = None
        else:
            resumed = None
        if resumed is not None:
            call = dataclasses.replace(call, request=resumed.request, activity_id=resumed.activity_id)
            redrives = resumed.redrives
        else:  # a park carried in goes on with the request it failed with, rendered then
            self._check_depth(request.input, f"step {path!r}: its input")
        while True:
            if resumed is not None:
                failed = ActionFailedError(resumed.view.error, resumed.view.error_type, resumed.view.attempts)
                decision = await self._park(
                    step,
                    path,
                    call,
                    failed,
                    record,
                    top=here and self._nested_ok(),
                    redrives=redrives,
                    lane=lane,
                    carried=parked,
                )
                resumed = parked = None
            else:
                try:
                    result = await self.runtime.execute_action(call)
                    self._admit(path, result.output, failure=ActionFailedError, attempts=result.attempt)
                    break
                except asyncio.CancelledError:
                    # Cancelled in flight: the request may still take effect at the receiver, so the
                    # step is undone like a completed one (compensations, like actions, must be
                    # idempotent).
                    if step.compensate and self.runtime.patched(PATCH_COMPENSATE_IN_FLIGHT):
                        self._compensations.append(_Compensation(step, scope, path))
                    raise
                except ActionFailedError as failure:
                    failed = failure
                    record.attempts = failure.attempts
                    self._finish(
                        record, StepStatus.FAILED, error=failure.message, error_type=failure.error_type
                    )
                    if step.on_failure != "dead_letter":
                        self._after_failure(step.on_failure, path, failure)
                        return None
                    decision = await self._park(
                        step,
                        path,
                        call,
                        failure,
                        record,
                        top=here and self._nested_ok(),
                        redrives=redrives,
                        lane=lane,
                    )
            if decision.action == DeadLetterAction.REDRIVE:
                redrives += 1
                call = self._redrive_call(call, decision, redrives)
                record.status, record.finished_at, record.error, record.error_type = (
                    StepStatus.RUNNING,
                    None,
                    None,
                    None,
                )
                continue
            if decision.action == DeadLetterAction.SKIP:
                output = make_inert(decision.output)
                self._finish(record, StepStatus.COMPLETED, output=output)
                return output
            if decision.action == DeadLetterAction.ABORT:
                raise _RunFailed(
                    f"step {path!r} aborted by {decision.actor}: {decision.reason or failed.message}",
                    "DeadLetterAborted",
                )
            self._after_failure(step.on_park_timeout, path, failed)
            return None
        record.attempts = result.attempt
        if step.compensate:
            self._compensations.append(_Compensation(step, scope, path))
        return make_inert(result.output)

    @staticmethod
    def _after_failure(policy: Any, path: str, failure: ActionFailedError) -> None:
        """Applies a failed task's policy (``on_failure``, or ``on_park_timeout`` after a park):
        goes on (None), jumps, or ends the run."""
        message = f"step {path!r} failed after {failure.attempts} attempt(s): {failure.message}"
        if policy == "continue":
            return
        if isinstance(policy, Goto):
            raise _Jump(policy.goto)
        if policy == "compensate":
            raise _CompensateAndEnd(message, failure.error_type)
        raise _RunFailed(message, failure.error_type)

    def _render_input(self, step: TaskStep, scope: _Scope) -> dict[str, Any]:
        """The task's input rendered, except its action's static fields (an SQL statement), which
        are passed as written: run data never becomes part of them; its HTML fields
        (``AUTOESCAPED_INPUTS``) are rendered with autoescaping. Only new actions have such
        fields, so existing runs render as before."""
        value = dict(step.input)
        context = self._context(scope)
        static = static_input_fields(step.action)
        escaped = [k for k in AUTOESCAPED_INPUTS.get(step.action, ()) if k in value and k not in static]
        if not static and not escaped:
            return dict(self._render(value, context))
        rendered = self._render(
            {k: v for k, v in value.items() if k not in static and k not in escaped}, context
        )
        for key in escaped:
            rendered[key] = self._templated(render_html, value[key], context)
        return {k: value[k] if k in static else rendered[k] for k in value}

    def _redrive_call(self, call: ActionCall, decision: DeadLetterDecision, redrives: int) -> ActionCall:
        """The call for the n-th redrive: new activity id and idempotency key (the input may have
        been corrected, and a receiver may have remembered the failed request under the old key).
        The corrected input keeps the recorded values the operator left as they were
        (:data:`PATCH_REDRIVE_KEEPS_RECORDED`)."""
        recorded = call.request.input
        if decision.input is None:
            corrected = recorded
        elif holds_reference(recorded) and self.runtime.patched(PATCH_REDRIVE_KEEPS_RECORDED):
            corrected = keep_recorded(decision.input, recorded)
        else:
            corrected = make_inert(decision.input)
        request = call.request.model_copy(
            update={
                "input": corrected,
                "idempotency_key": f"{call.request.idempotency_key}~r{redrives}",
            }
        )
        base = call.activity_id.split("~r", 1)[0]
        return dataclasses.replace(call, request=request, activity_id=f"{base}~r{redrives}")

    async def _park(
        self,
        step: TaskStep,
        path: str,
        call: ActionCall,
        failure: ActionFailedError,
        record: StepRecord,
        *,
        top: bool = False,
        redrives: int = 0,
        lane: _Lane | None = None,
        carried: _Park | None = None,
    ) -> DeadLetterDecision:
        """Records a dead letter and waits for an operator's decision or the park timeout.

        A ``top`` park (a top-level task) is a safe point to continue as new while it waits; the
        next run of the chain resumes the wait on the same dead letter (``_carried_parked``). A
        park that is one of ``lane``'s own steps (:data:`PATCH_CONTINUE_AS_NEW_LANE_PARKS`) lets
        the branches stop for a continue-as-new while it waits (``carried``: the park a previous
        run of the chain carried in the branch)."""
        timeout = parse_duration(step.park_timeout or self.definition.defaults.park_timeout)

        def carry(park: _Park) -> Callable[[], dict[str, Any]] | None:
            if not top:
                return None
            position = self._position_of(step)
            return lambda: {
                DEAD_LETTER_KIND: CarriedPark(
                    position=position,
                    view=park.view,
                    decision=park.decision,
                    request=call.request,
                    activity_id=call.activity_id,
                    redrives=redrives,
                ).model_dump(mode="json")
            }

        resumed = carried or self._carried_parked
        if resumed is not None and resumed.view.path == path:
            if carried is None:
                self._carried_parked = None
            row_id = resumed.view.dead_letter_id
            assert row_id is not None  # carried only once recorded
            deadline = resumed.view.deadline or resumed.view.parked_at + timeout
            remaining = max(deadline - self.runtime.now(), timedelta(0))
            decision = await self._wait_for_decision(
                step,
                resumed,
                row_id,
                timeout,
                record,
                remaining=remaining,
                carry=carry(resumed),
                resumed=True,
                lane=None
                if lane is None
                else (lane, _LanePark(resumed, call.request, call.activity_id, redrives)),
            )
            await self._resolve_row(row_id, decision)
            record.status = StepStatus.FAILED
            return decision
        count = self._parks[path] = self._parks.get(path, 0) + 1
        park_id = call.activity_id if count == 1 else f"{call.activity_id}~p{count}"
        now = self.runtime.now()
        view = ParkedStep(
            park_id=park_id,
            step_id=step.id,
            path=path,
            action=step.action,
            input=dict(call.request.input),
            error=failure.message,
            error_type=failure.error_type,
            attempts=failure.attempts,
            parked_at=now,
            deadline=now + timeout,
        )
        park = _Park(view=view)
        # Accepts a decision from before the row is written: the row is visible to operators as
        # soon as the recording activity commits, a workflow task before the run learns its id.
        # (Only the decision bookkeeping moves: state and search attributes change, as before,
        # once the row is recorded, so the commands of runs that did not decide early are unchanged.)
        self._recording[park_id] = park
        try:
            row_id = view.dead_letter_id = await self.runtime.record_dead_letter(
                DeadLetterRecord(
                    tenant=self.info.tenant,
                    workflow_id=self.info.workflow_id,
                    run_id=self.info.run_id,
                    definition=self.definition.name,
                    version=self.definition.version,
                    park_id=park_id,
                    step_id=step.id,
                    path=path,
                    action=step.action,
                    input=view.input,
                    error=view.error,
                    error_type=view.error_type,
                    attempts=view.attempts,
                    parked_at=now,
                )
            )
        finally:
            del self._recording[park_id]
        if park.decision is None:
            in_lane = None
            if lane is not None and self.runtime.patched(PATCH_CONTINUE_AS_NEW_LANE_PARKS):
                in_lane = (lane, _LanePark(park, call.request, call.activity_id, redrives))
            decision = await self._wait_for_decision(
                step, park, row_id, timeout, record, carry=carry(park), lane=in_lane
            )
        else:  # decided while the row was being written: no wait, nothing shown as parked
            decision = park.decision
        await self._resolve_row(row_id, decision)
        record.status = StepStatus.FAILED
        return decision

    async def _wait_for_decision(
        self,
        step: TaskStep,
        park: _Park,
        row_id: int,
        timeout: timedelta,
        record: StepRecord,
        *,
        remaining: timedelta | None = None,
        carry: Callable[[], dict[str, Any]] | None = None,
        resumed: bool = False,
        lane: tuple[_Lane, _LanePark] | None = None,
    ) -> DeadLetterDecision:
        """Shows the recorded park and waits for a decision or the park timeout (``remaining`` of
        it when resumed in a continued run); closes the row if the run (or this branch) is
        cancelled meanwhile. With ``carry`` (a top-level park) the run may continue as new while
        it waits: the park stays shown and decidable until the switch, and travels in the
        snapshot. With ``lane`` (a park among a branch's own steps) the branches may stop for a
        continue-as-new while it waits: cancelled for it, the park stays shown (and decidable)
        and its row open until the switch, and travels in the branch's entry."""
        park_id, path = park.view.park_id, park.view.path
        self._parked[park_id] = park
        record.status = StepStatus.WAITING
        self._set_state(self._waiting_state())
        wake = self._continue_trigger(resumed) if carry is not None and self._may_continue_waiting() else None
        continuing = False
        wait_s = (timeout if remaining is None else remaining).total_seconds()
        if lane is not None:
            lane[0].park, lane[0].wakes = lane[1], self.runtime.now() + timedelta(seconds=wait_s)
            self._lane_waits.add(path)
        try:
            with self._waiting_at(path, step.label):
                decided = await self.runtime.wait_condition(
                    (lambda: park.decision is not None)
                    if wake is None
                    else (lambda: park.decision is not None or wake()),
                    wait_s,
                    f"{step.label}: parked (dead letter)",
                )
                if decided and park.decision is None:  # the host asks to continue as new
                    assert carry is not None
                    continuing = self._keep_waits = True
                    raise self._stop(self._position_of(step), carry=carry)
        except asyncio.CancelledError:
            if lane is not None and lane[0].park is lane[1] and self._carrying:
                # Its branch stopped for a continue-as-new: the row stays open for the next run.
                continuing = True
                raise
            # The run (or this branch) was cancelled while parked: close the row, or it would stay
            # open for a run that can no longer take a decision.
            who = self.cancel_request
            closing = DeadLetterDecision(
                action=DeadLetterAction.CANCELLED,
                actor=who.actor if who else "cancellation",
                reason=(who.reason if who else "") or "the run was cancelled while parked",
            )
            await self._finally(self._resolve_row(row_id, closing))
            raise
        finally:
            if lane is not None:
                self._lane_waits.discard(path)
                if not self._carrying:  # (carried: the snapshot is taken at the switch)
                    lane[0].park = None
            if not continuing:  # a carried park stays shown (and decidable) until the switch
                self._parked.pop(park_id, None)
                self._set_state(self._waiting_state())
        if decided and park.decision is not None:
            return park.decision
        return DeadLetterDecision(
            action=DeadLetterAction.TIMEOUT,
            actor="timeout",
            reason=f"no decision within {format_duration(timeout)}",
        )

    async def _resolve_row(self, row_id: int, decision: DeadLetterDecision) -> None:
        await self.runtime.resolve_dead_letter(
            DeadLetterResolution(
                dead_letter_id=row_id,
                tenant=self.info.tenant,
                action=decision.action,
                actor=decision.actor,
                reason=decision.reason,
                input=decision.input,
                output=decision.output,
                resolved_at=self.runtime.now(),
            )
        )

    @staticmethod
    async def _finally(work: Coroutine[Any, Any, Any]) -> None:
        """Runs ``work`` to its end even if the caller is cancelled again meanwhile (clean-up that
        must not be left half done); its failures are swallowed (they are in the step records and
        the history)."""
        task = asyncio.create_task(work)
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError, _RunFailed, _Succeed, _Jump, TemplateError):
                await asyncio.shield(task)

    def _step_timeouts(self, step: TaskStep) -> Timeouts:
        timeouts = self._timeouts.get(step.id)
        if timeouts is None:
            timeouts = self._timeouts[step.id] = resolve_timeouts(self.definition, step)
        return timeouts

    @contextlib.contextmanager
    def _waiting_at(self, path: str, label: str) -> Iterator[None]:
        """Marks a durable wait at a step (for the ``CurrentStep`` search attribute)."""
        self.waiting[path] = label
        self.runtime.waiting_changed()
        try:
            yield
        finally:
            if not self._keep_waits:
                self.waiting.pop(path, None)
                self.runtime.waiting_changed()

    def _waiting_state(self) -> RunState:
        if self._parked:
            return RunState.PARKED
        return RunState.AWAITING_APPROVAL if self.awaiting_approval else RunState.RUNNING

    def check_dead_letter(self, decision: DeadLetterDecision) -> _Park:
        """Checks that a dead letter decision can be accepted now.

        Raises:
            DeadLetterError: Naming why not.
        """
        if decision.action in (DeadLetterAction.TIMEOUT, DeadLetterAction.CANCELLED):
            raise DeadLetterError(f"{decision.action.value!r} is decided by the run, not by an operator")
        parked = [p for p in (*self._parked.values(), *self._recording.values()) if p.decision is None]
        if not parked:
            raise DeadLetterError("no step of this run is parked")
        if decision.park_id is None:
            if len(parked) > 1:
                names = ", ".join(p.view.park_id for p in parked)
                raise DeadLetterError(f"several steps are parked ({names}): name the park id")
            return parked[0]
        for park in parked:
            if decision.park_id in (park.view.park_id, park.view.path):
                return park
        names = ", ".join(p.view.park_id for p in parked)
        raise DeadLetterError(f"no step is parked as {decision.park_id!r} (parked: {names})")

    def resolve(self, decision: DeadLetterDecision) -> ParkedStep:
        """Accepts an operator's decision on a parked step (also while its row is being written:
        the returned view's ``dead_letter_id`` is then still None; the run records the decision
        in the row once it knows the id).

        Raises:
            DeadLetterError: When it cannot be accepted.
        """
        park = self.check_dead_letter(decision)
        park.decision = decision
        return park.view

    async def _join(
        self,
        factories: Sequence[Callable[[], Coroutine[Any, Any, Any]]],
        mode: JoinStrategy,
        summary: str,
        stop: Callable[[], bool] | None = None,
        confirm: Callable[[], bool] | None = None,
    ) -> tuple[int, list[Any]]:
        """Runs coroutines as concurrent tasks and joins them by ``mode``; losers are cancelled.
        ``stop``: when it becomes true first (and ``confirm``, asked then, agrees: else the join
        waits on), the tasks not done are cancelled and :class:`_Drained` is raised (the branches
        stopped for a continue-as-new).

        Returns:
            ``(winner, results)``: for ``all`` the winner is -1 and ``results`` holds every result
            in order; otherwise ``results`` holds the winner's result only.
        """
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(factory()) for factory in factories]
        order: list[int] = []
        for i, task in enumerate(tasks):
            task.add_done_callback(functools.partial(_mark_done, order, i))

        def settled() -> bool:
            if mode == JoinStrategy.ALL:
                return len(order) == len(tasks) or any(_failed(tasks[i]) for i in order)
            if mode == JoinStrategy.ANY:
                return len(order) == len(tasks) or any(
                    not _failed(tasks[i]) or _succeeded_run(tasks[i]) for i in order
                )
            return bool(order)

        drained = closing = False
        try:
            while True:
                await self.runtime.wait_condition(
                    settled if stop is None else lambda: settled() or stop(), None, summary
                )
                if stop is None or settled() or not stop():
                    break
                if confirm is None or confirm():
                    drained = True
                    break
            # The delays branches wait in are cancelled to go on in the next run, not ended.
            self._carrying = self._carrying or drained
        except GeneratorExit:
            # The run is being discarded unfinished (the worker dropped it from its cache, or shut
            # down): nothing runs any more, so nothing is awaited (awaiting here made Python report
            # "coroutine ignored GeneratorExit" for the whole run; no command is sent either way).
            closing = True
            raise
        finally:
            losers = [t for t in tasks if not t.done()]
            for task in losers:
                task.cancel()
            if losers and not closing:
                await asyncio.gather(*losers, return_exceptions=True)
            for task in tasks:  # the failures not re-raised below are seen here, not logged as lost
                if task.done() and not task.cancelled():
                    task.exception()
        if drained:
            raise _Drained()
        if mode == JoinStrategy.ALL:
            for i in order:
                if _failed(tasks[i]):
                    tasks[i].result()  # re-raises the first failure
            return -1, [t.result() for t in tasks]
        if mode == JoinStrategy.ANY:
            for i in order:
                if not _failed(tasks[i]) or _succeeded_run(tasks[i]):
                    return i, [tasks[i].result()]  # re-raises a succeed step's _Succeed
            # Every branch failed: report the first failure (by its rank when a previous run of the
            # chain carried branches that failed: they fail again in this run's first task).
            ranked = [i for i in order if _failed(tasks[i]) and _rank(tasks[i]) is not None]
            tasks[min(ranked, key=lambda i: _rank(tasks[i]) or 0) if ranked else order[0]].result()
        first = order[0]
        return first, [tasks[first].result()]

    async def _parallel(self, step: ParallelStep, scope: _Scope, path: str) -> Any:
        """Runs the branches concurrently and joins them. At a safe point, the branches may stop at
        boundaries for a continue-as-new (:data:`PATCH_CONTINUE_AS_NEW_PARALLEL`), and a run that
        continued in them goes on with each where it stopped."""
        taken = self._take_carried(step, scope)
        carried: list[dict[str, Any]] | None = None if taken is None else taken["branches"]
        drain = None
        outer = None
        if self._continue_as_new is not None and not self._at_safe_step(step, scope):
            outer = self._nesting_lane(step, scope)
        if self._continue_as_new is not None and (outer is not None or self._at_safe_step(step, scope)):
            drain = _Drain(
                [_Lane(b.steps, scope.sibling()) for b in step.branches],
                step.join,
                label=step.label,
                outer=outer,
            )
            if carried is not None:
                # A branch failing in this run ranks after those that failed before (a branch
                # listed earlier may fail before a carried one failed again; found by a probe).
                ranks = [entry["failed"]["rank"] for entry in carried if "failed" in entry]
                drain.failures = 1 + max(ranks, default=-1)

        async def run_branch(i: int, steps: list[Step]) -> Any:
            lane = None if drain is None else drain.lanes[i]
            branch_scope = scope.sibling() if lane is None or lane.scope is None else lane.scope
            start = 0
            if carried is not None:
                entry = carried[i]
                if entry.get("failed"):
                    # It failed in a previous run of the chain: it fails again, at once, as it did.
                    failed = entry["failed"]
                    kind = _CompensateAndEnd if failed["compensate"] else _RunFailed
                    failure = kind(failed["message"], failed["error_type"])
                    failure.rank = failed["rank"]

                    async def fail_again() -> Any:
                        raise failure

                    return await self._in_lane(drain, lane, fail_again)
                if entry.get("done"):
                    if lane is not None:
                        lane.done, lane.output = True, entry["output"]
                    return entry["output"]
                start, branch_scope.last_output = entry["position"], entry["last_output"]
                if lane is not None:
                    lane.resume = list(entry.get("within") or [])
                    lane.nested = entry.get("nested")

            async def body() -> Any:
                await self._sequence(
                    steps,
                    branch_scope,
                    start=start,
                    boundary=None
                    if drain is None or lane is None
                    else functools.partial(self._lane_boundary, drain, lane, step.label),
                )
                return branch_scope.last_output

            return await self._in_lane(drain, lane, body)

        factories = [functools.partial(run_branch, i, b.steps) for i, b in enumerate(step.branches)]
        since = self._open_since(path)

        def describe() -> dict[str, Any]:  # read at the switch: a decision taken meanwhile is in it
            assert drain is not None
            branches = [
                {"id": b.id, **(lane.carried(own_steps=False) or {})}
                for b, lane in zip(step.branches, drain.lanes, strict=True)
            ]
            return {**since, "step": step.id, "branches": branches}

        if drain is not None:
            drain.describe = describe
        if outer is not None:
            outer.inner = drain
        try:
            winner, results = await self._join_lanes(
                drain, factories, step.join, f"{step.label}: join {step.join}"
            )
        except _Drained:
            raise self._stop(self._position_of(step), carry=lambda: {PARALLEL_KIND: describe()}) from None
        finally:
            if outer is not None and not self._carrying:  # (carried: read once every branch ended)
                outer.inner = None
        if step.join == JoinStrategy.ALL:
            return {b.id: r for b, r in zip(step.branches, results, strict=True)}
        return {"winner": step.branches[winner].id, "output": results[0]}

    def _take_carried(self, step: ParallelStep | ForeachStep, scope: _Scope) -> dict[str, Any] | None:
        """The carried entry (:data:`PARALLEL_KIND`) of ``step`` when the previous run of the chain
        continued in it (taken once)."""
        lane = self._lane_nested_resuming(step, scope)
        if lane is not None:  # a branch's own step, carried in that branch's entry
            nested, lane.nested = lane.nested, None
            return nested
        carried = self._carried_parallel
        if carried is None or carried["step"] != step.id or not self._at_safe_step(step, scope):
            return None
        self._carried_parallel = None
        return carried

    async def _join_lanes(
        self,
        drain: _Drain | None,
        factories: Sequence[Callable[[], Coroutine[Any, Any, Any]]],
        mode: JoinStrategy,
        summary: str,
    ) -> tuple[int, list[Any]]:
        """:meth:`_join` of the branches (items) of the step at the safe point, ``drain`` their
        lanes (None where the run cannot continue as new): raises :class:`_Drained` once they all
        stopped for a continue-as-new."""
        if drain is not None and drain.outer is not None:
            # A nested step's branches: they stop as the outermost's do, which carries them all.
            self._inner_drains.append(drain)
            try:
                return await self._join(factories, mode, summary)
            finally:
                self._inner_drains.remove(drain)
        self._drain = drain or self._drain
        try:
            if drain is None:
                return await self._join(factories, mode, summary)
            return await self._join(
                factories,
                mode,
                summary,
                lambda: drain.ready(self._carry_ok(), self.runtime.now()),
                functools.partial(self._confirm_drain, drain),
            )
        finally:
            if self._drain is drain:
                self._drain = None

    async def _in_lane(
        self, drain: _Drain | None, lane: _Lane | None, body: Callable[[], Coroutine[Any, Any, Any]]
    ) -> Any:
        """Runs a branch's (or an item's) ``body``, keeping its lane's state: done with its output, or
        failed (then the branches stopped for a continue-as-new go on, and none stops again; but a
        branch of a ``join: any`` step failing with an error, which the step outlives when another
        branch succeeds, is carried as failed: :data:`PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES`)."""
        if drain is None or lane is None:
            return await body()
        try:
            output = await body()
        except asyncio.CancelledError:
            raise
        except _RunFailed as failure:
            lane.done = True
            if (
                failure.rank is None
                and drain.join == JoinStrategy.ANY
                and self.runtime.patched(PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES)
            ):
                # (one a previous run of the chain carried has its rank already, below the count)
                failure.rank = drain.failures
                drain.failures += 1
            if failure.rank is None:
                drain.off = True
                drain.root().active = False  # a failed branch is not carried
            else:
                lane.failure = failure
            raise
        except BaseException:
            lane.done = drain.off = True
            drain.root().active = False  # a failed branch is not carried
            raise
        lane.done, lane.output = True, output
        return output

    def _lane_at(self, step: Step, scope: _Scope) -> _Lane | None:
        """The branch (item) of the ``parallel`` or ``foreach`` at the safe point whose current step
        is ``step`` (one of its own steps, or one of the innermost ``condition``/``switch`` branch
        it is in: :data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`), if any."""
        drain = self._drain
        if drain is None:
            return None
        lane = drain.by_scope.get(id(scope))
        for inner in self._inner_drains if lane is None else ():
            lane = inner.by_scope.get(id(scope))
            if lane is not None:
                break
        if lane is None or lane.scope is not scope:
            return None
        steps, at = lane.here()
        return lane if at < len(steps) and steps[at] is step else None

    def _nesting_lane(self, step: ParallelStep | ForeachStep, scope: _Scope) -> _Lane | None:
        """The branch (item) whose own step ``step`` is, when its branches may stop for a
        continue-as-new as that branch's do (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`)."""
        lane = self._lane_at(step, scope)
        if lane is None or not self.runtime.patched(PATCH_CONTINUE_AS_NEW_LANE_NESTED):
            return None
        return lane

    def _lane_nested_resuming(self, step: Step, scope: _Scope) -> _Lane | None:
        """The branch (item) whose current step is ``step``, when the previous run of the chain
        carried it inside that ``parallel``/``foreach`` step (and it is back in the branches it was in)."""
        lane = self._lane_at(step, scope)
        if lane is None or lane.resume or lane.nested is None or lane.nested["step"] != step.id:
            return None
        return lane

    async def _sleep_in_lane(self, step: DelayStep, path: str, lane: _Lane, delay: CarriedDelay) -> None:
        """A branch's ``delay`` until ``delay.until``: the same timer as any delay's; meanwhile the
        run may continue as new, carrying it (the next run waits for the time that is left)."""
        wait = max(delay.until - self.runtime.now(), timedelta(0))
        lane.sleeping = delay
        self._lane_waits.add(path)
        try:
            await self.runtime.sleep(wait.total_seconds(), f"{step.label}: wait {format_duration(wait)}")
        finally:
            if not self._carrying:  # (carried: the snapshot is taken once every branch ended)
                lane.sleeping = None
            self._lane_waits.discard(path)

    def _open_since(self, path: str) -> dict[str, str]:
        """The start of the open record of the step at ``path`` (carried: the next run shows the
        step with it even if the record itself is no longer among the carried ones)."""
        record = self._open_record(path)
        return {} if record is None else {"since": record.started_at.isoformat()}

    def _open_record(self, path: str) -> StepRecord | None:
        """The most recent record of the step at ``path`` still waiting or running (a delay's stays
        running)."""
        open_states = (StepStatus.WAITING, StepStatus.RUNNING)
        return next((r for r in reversed(self.records) if r.path == path and r.status in open_states), None)

    def _confirm_drain(self, drain: _Drain) -> bool:
        """Once every branch stopped: whether what the carried entry holds fits its budget (items
        that finished meanwhile added their outputs); if not, the branches go on."""
        if drain.carry_size(PARALLEL_CARRY_BUDGET) <= PARALLEL_CARRY_BUDGET:
            return True
        drain.retry_later(self.runtime.now())
        return False

    def _carry_ok(self) -> bool:
        """Whether the branches may be carried now: no step waits but in a branch's own delay, and
        no cancellation is on its way (it goes to this run)."""
        return self._quiet() and self.cancel_request is None and not self.hold_steps

    def _quiet(self) -> bool:
        """No step of the run waits (for a dead letter decision, a timer but a branch's own
        ``delay``, a person but in a branch's own ``approval`` or ``human_task``, or an event but in
        a branch's own ``wait_for_event``: those a continue-as-new carries)."""
        return self._lane_parks_only() and all(path in self._lane_waits for path in self.waiting)

    def _lane_parks_only(self) -> bool:
        """No task is parked but among a branch's own steps (a park a continue-as-new carries)."""
        return all(park.view.path in self._lane_waits for park in self._parked.values())

    @staticmethod
    def _races(drain: _Drain, lane: _Lane, now: datetime) -> bool:
        """Whether ``lane`` may not stand now: which branch finishes first decides an ``any`` or
        ``first`` join, so a branch never waits for another there (it stands only when all the
        others sleep or stand, so the switch is at once), in its own step and in each step around
        it (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`)."""
        level: _Drain | None = drain
        mine = lane
        while level is not None:
            if level.join != JoinStrategy.ALL and not all(
                other is mine or _settled(other, now) or other.failure is not None for other in level.lanes
            ):
                return True
            if level.outer is None:
                break
            mine, level = level.outer, level.outer.owner
        return False

    def _history_pressed(self) -> bool:
        """Whether the run's history presses enough that the branches of an ``any`` or ``first``
        join stop at boundaries for a continue-as-new as an ``all`` join's do
        (:data:`PATCH_CONTINUE_AS_NEW_ANY_PRESSED`; asked only then): called where such a branch
        may not stop, with the run wanting to continue as new; pressed once the history has
        grown to twice (and 100 events more than) what it was the first time that happened in
        this run, or to half of :data:`HISTORY_GUARD_EVENTS` or :data:`HISTORY_GUARD_BYTES`, or
        the run's work to twice :data:`RUN_WORK_BUDGET`. Such
        a stop waits for the others at most :data:`PRESSED_DRAIN_WAIT_S`."""
        events, size = self.runtime.history_used()
        if self._any_held_since is None:
            self._any_held_since = events
        pressed = (
            events >= min(2 * self._any_held_since + 100, HISTORY_GUARD_EVENTS // 2)
            or size >= HISTORY_GUARD_BYTES // 2
            # The run's work presses too, at twice its budget (:data:`PATCH_RUN_WORK_BUDGET`: set
            # only where it applies): a loop raced against a long delay writes no events.
            or (self.work_spent and self._run_work >= 2 * RUN_WORK_BUDGET)
        )
        return pressed and self.runtime.patched(PATCH_CONTINUE_AS_NEW_ANY_PRESSED)

    async def _lane_boundary(self, drain: _Drain, lane: _Lane, label: str, index: int, first: bool) -> None:
        """Before step ``index`` of a ``parallel`` branch: where it stops while the branches stop
        for a continue-as-new (starting that when the host asks and no step waits), until every
        branch stands at a boundary (the join then carries them), a step starts waiting, a branch
        fails, or :data:`PARALLEL_DRAIN_WAIT_S` passed. In a ``condition``/``switch`` branch the
        branch is in (:data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`), ``index`` is of that branch's steps.
        A nested step's branches (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`) stop as the outermost
        step's do (its :meth:`_Drain.root` holds the stop)."""
        if lane.nest:
            lane.nest[-1].index = index
        else:
            lane.index = index
        if first:
            return
        steps, _ = lane.here()
        now = self.runtime.now()
        root = drain.root()
        if not root.active:
            if (
                root.off
                or drain.off
                or not self._quiet()
                or (root.not_before is not None and now < root.not_before)
                or not self._continue_wanted()
            ):
                return
            if not root.outputs_counted and root.carry_size(PARALLEL_CARRY_BUDGET) <= PARALLEL_CARRY_BUDGET:
                root.outputs_counted = self.runtime.patched(PATCH_DRAIN_FIXES)
            if root.carry_size(PARALLEL_CARRY_BUDGET) > PARALLEL_CARRY_BUDGET:
                # Too much to carry now (less once items finish and leave their steps): not every
                # boundary counts it again.
                root.retry_later(now)
                return
            pressed = False
            if self._races(drain, lane, now):
                if not self._history_pressed():
                    return
                pressed = True
            # This change's patch first: a history recorded before it asks nothing else here.
            if not self.runtime.patched(PATCH_CONTINUE_AS_NEW_PARALLEL) or (
                self._batch is None and not self._nested_ok()
            ):
                root.off = True  # replaying a run recorded before: its branches went on
                return
            root.active, root.timed = True, False
            wait = PRESSED_DRAIN_WAIT_S if pressed else PARALLEL_DRAIN_WAIT_S
            root.deadline = now + timedelta(seconds=wait)
        elif drain.outer is not None and self._races(drain, lane, now) and not self._history_pressed():
            return  # (a nested step's branch, while a stop another began is under way)
        if isinstance(steps[index], DelayStep):
            return  # it sleeps there instead of standing: a delay among its steps is carried as it is
        if isinstance(steps[index], WaitForEventStep) and self.runtime.patched(
            PATCH_CONTINUE_AS_NEW_LANE_EVENTS
        ):
            # It goes into its wait (carried as it is) instead of standing: held before it, it
            # would miss an event published meanwhile (a wait without lookback sees none before it).
            return
        timeout = None
        if not root.timed:  # the first branch to stand holds the timer of the deadline
            assert root.deadline is not None
            left = (root.deadline - now).total_seconds()
            if left <= 0:
                root.retry_later(now)
                return
            root.timed, timeout = True, left
        lane.stopped = True
        try:
            in_time = await self.runtime.wait_condition(
                lambda: not root.active or not self._carry_ok(),
                timeout,
                f"{label}: stop for continue-as-new",
            )
        except asyncio.CancelledError:
            if timeout is not None:
                # It held the stop's timer: cancelled (its nested 'any' step decided), the next
                # branch to stand takes the deadline over, or the stop would have none.
                root.timed = False
            raise
        finally:
            lane.stopped = False
        if in_time:
            root.active = False  # (once every branch stopped, the join cancels them here instead)
        else:
            root.retry_later(self.runtime.now())

    async def _foreach(self, step: ForeachStep, scope: _Scope, path: str, visit: int = 1) -> Any:
        carried = self._take_carried(step, scope)
        if carried is not None:
            # The previous run of the chain continued in it: the same items, each where it stood.
            return await self._foreach_items(
                step, scope, path, carried["items"], offset=0, concurrency=step.concurrency, carried=carried
            )
        items = self._evaluate(step.items, self._context(scope))
        if isinstance(items, Mapping) or not isinstance(items, list | tuple):
            raise _RunFailed(
                f"step {path!r}: 'items' evaluated to {type(items).__name__}, not a list", "InvalidItems"
            )
        limit = step.max_items or self.definition.limits.max_foreach_items
        if len(items) > limit:
            raise _RunFailed(f"step {path!r}: {len(items)} items exceed the limit of {limit}", "TooManyItems")
        above = FAN_OUT_ABOVE if step.fan_out_above is None else step.fan_out_above
        if (
            len(items) > above
            and isinstance(self.runtime, FanoutRuntime)
            and not _declares_compensation(step.steps)
            and self.runtime.patched(PATCH_FOREACH_CHILDREN)
        ):
            return await self._fan_out(step, scope, path, visit, list(items))
        return await self._foreach_items(
            step, scope, path, list(items), offset=0, concurrency=step.concurrency, safe=True
        )

    async def _foreach_items(
        self,
        step: ForeachStep,
        scope: _Scope,
        path: str,
        items: list[Any],
        *,
        offset: int,
        concurrency: int,
        safe: bool = False,
        carried: dict[str, Any] | None = None,
        batch_slice: bool = False,
    ) -> list[Any]:
        """Runs the body once per item in this run, at most ``concurrency`` at a time; item ``i`` of
        ``items`` is item ``offset + i`` of the foreach (its index and step paths). ``safe``: the
        step may continue as new between two steps of its items (as a ``parallel`` step's branches
        do, :data:`PATCH_CONTINUE_AS_NEW_PARALLEL`); ``carried``: where the previous run of the
        chain left each item; ``batch_slice``: the items are a fanned-out foreach's child's slice."""
        gate = asyncio.Semaphore(concurrency)
        drain = None
        outer = None
        if (
            self._continue_as_new is not None
            and (safe or carried is not None)
            and not batch_slice
            and not self._at_safe_step(step, scope)
        ):
            outer = self._nesting_lane(step, scope)
        if (
            self._continue_as_new is not None
            and (safe or carried is not None)
            and (
                batch_slice
                or self._at_safe_step(step, scope)
                or outer is not None
                # Before PATCH_DRAIN_FIXES, a foreach nested in a child's body stopped too.
                or (self._batch is not None and not self.runtime.patched(PATCH_DRAIN_FIXES))
            )
        ):
            drain = _Drain(
                [_Lane(step.steps) for _ in items], JoinStrategy.ALL, items, label=step.label, outer=outer
            )
        entries: list[dict[str, Any] | None] = [None] * len(items) if carried is None else carried["lanes"]

        async def one(i: int, item: Any) -> Any:
            lane = None if drain is None else drain.lanes[i - offset]
            entry = entries[i - offset]
            if entry is not None and entry.get("done"):
                if lane is not None:
                    lane.done, lane.output = True, entry["output"]
                return entry["output"]
            it = _Scope(
                steps={} if entry is None else dict(entry["steps"]),
                prefix=f"{path}[{i}].",
                local={step.as_: item, "index": i},
                parent=scope,
            )
            if entry is not None:
                it.last_output = entry["last_output"]
                if drain is not None and lane is not None:  # under way already: not a new item
                    drain.seat(lane, it)
                    lane.index = entry["position"]
                    lane.resume = list(entry.get("within") or [])
                    lane.nested = entry.get("nested")
            async with gate:
                if drain is not None and drain.root().active and entry is None:
                    await self._hold_item(drain, step.label)
                if drain is not None and lane is not None:
                    drain.seat(lane, it)

                async def body() -> Any:
                    await self._sequence(
                        step.steps,
                        it,
                        start=0 if entry is None else entry["position"],
                        boundary=None
                        if drain is None or lane is None
                        else functools.partial(self._lane_boundary, drain, lane, step.label),
                    )
                    if step.output is not None:
                        return self._render(step.output, self._context(it))
                    return it.last_output

                return await self._in_lane(drain, lane, body)

        factories = [functools.partial(one, offset + i, item) for i, item in enumerate(items)]
        if not factories:
            return []
        since = self._open_since(path)

        def describe() -> dict[str, Any]:  # read at the switch: a decision taken meanwhile is in it
            assert drain is not None
            lanes = [lane.carried(own_steps=True) for lane in drain.lanes]
            return {**since, "step": step.id, "items": list(items), "lanes": lanes}

        if drain is not None:
            drain.describe = describe
        if outer is not None:
            outer.inner = drain
        try:
            _, results = await self._join_lanes(
                drain, factories, JoinStrategy.ALL, f"{step.label}: {len(items)} items"
            )
        except _Drained:
            if self._batch is not None:  # a fanned-out foreach's child: its slice is all it runs
                raise _ContinueAsNew(0, carry=lambda: {PARALLEL_KIND: describe()}) from None
            raise self._stop(self._position_of(step), carry=lambda: {PARALLEL_KIND: describe()}) from None
        finally:
            if outer is not None and not self._carrying:  # (carried: read once every branch ended)
                outer.inner = None
        return results

    async def _hold_item(self, drain: _Drain, label: str) -> None:
        """No item starts while the others stop for a continue-as-new: it waits until the stop
        ends (and, since :data:`PATCH_DRAIN_FIXES`, until a step starts waiting, no started item
        is left that could stop, or the stop's deadline passes: then the items go on)."""
        summary = f"{label}: next item"
        root = drain.root()
        if not self.runtime.patched(PATCH_DRAIN_FIXES):
            await self.runtime.wait_condition(lambda: not root.active, None, summary)
            return
        timeout = None
        if not root.timed:  # no stopped item holds the timer of the deadline: this wait does
            assert root.deadline is not None
            timeout = (root.deadline - self.runtime.now()).total_seconds()
            root.timed = True
        in_time = timeout is None or timeout > 0
        if in_time:
            try:
                in_time = await self.runtime.wait_condition(
                    # (a nested step's item waits while its branch, started, could stop: the
                    # outermost step carries the item not started; PATCH_CONTINUE_AS_NEW_LANE_NESTED)
                    lambda: not root.active or not self._carry_ok() or not root.under_way(),
                    timeout,
                    summary,
                )
            except asyncio.CancelledError:
                if timeout is not None:  # it held the stop's timer: the next to wait takes it over
                    root.timed = False
                raise
        if not root.active:
            return
        if in_time:
            root.active = False  # a step waits, or no item is left to stop: the items go on
        else:
            root.retry_later(self.runtime.now())

    async def _fan_out(
        self, step: ForeachStep, scope: _Scope, path: str, visit: int, items: list[Any]
    ) -> list[Any]:
        """Runs the items in child workflows of ``batch_size`` items each. At most ``concurrency``
        items run at once across children: ``min(children, concurrency)`` children run at a time,
        each running ``concurrency // that`` of its items at once. The run keeps only the
        children's outputs (joined in item order); a failed child (after its own compensations)
        fails the step as the failed item would have, and the other children are cancelled."""
        runtime = self.runtime
        assert isinstance(runtime, FanoutRuntime)
        size = step.batch_size or FAN_OUT_BATCH_SIZE
        slices = [(offset, items[offset : offset + size]) for offset in range(0, len(items), size)]
        if self.runtime.patched(PATCH_FAN_OUT_TREE_BOUND):
            problem = await runtime.tree_problem(len(slices), f"step {path!r}")
            if problem is not None:
                raise _RunFailed(problem, "FanOutTreeLimitExceeded")
        self._check_fan_out_history(path, len(slices), None)
        running = min(len(slices), step.concurrency)
        per_child = step.concurrency // running
        gate = asyncio.Semaphore(running)
        suffix = f"#{visit}" if visit > 1 else ""
        # Each child gets the context its body may read, not (say) the whole input holding the list.
        reads = _body_reads(step)
        context = {
            "steps": dict(scope.visible_steps()) if "steps" in reads else {},
            "locals": scope.visible_locals(),
            "vars": dict(self.vars) if "vars" in reads else {},
            "input": dict(self.input) if "input" in reads else {},
            "run": dict(self._run_ctx),
        }

        async def child(k: int, offset: int, part: list[Any]) -> list[Any]:
            async with gate:
                self._check_fan_out_history(path, len(slices), k)
                call = BatchCall(
                    step_id=step.id,
                    path=path,
                    workflow_id=f"{self.info.workflow_id}/{path}{suffix}/batch-{k}",
                    definition=self.definition,
                    batch=ForeachBatch(
                        step_id=step.id,
                        path=path,
                        offset=offset,
                        items=part,
                        concurrency=per_child,
                        **context,
                    ),
                    summary=f"{step.label}: items {offset}-{offset + len(part) - 1} of {len(items)}",
                    share=running,
                    compensating=self._compensating,
                )
                try:
                    output = await runtime.run_foreach_batch(call)
                except BatchFailedError as failure:
                    message = f"step {path!r} ({temporal_id(call.workflow_id)}): {failure.message}"
                    if failure.compensated:
                        raise _CompensateAndEnd(message, failure.error_type) from None
                    raise _RunFailed(message, failure.error_type) from None
                if "succeeded" in output:
                    raise _Succeed(output["succeeded"])
                results: list[Any] = output["results"]
                return results

        factories = [functools.partial(child, k, offset, part) for k, (offset, part) in enumerate(slices)]
        _, parts = await self._join(
            factories, JoinStrategy.ALL, f"{step.label}: {len(items)} items in {len(slices)} child runs"
        )
        return [result for part in parts for result in part]

    def _check_fan_out_history(self, path: str, children: int, child: int | None) -> None:
        """Fails the run when a fan-out's ``children`` child runs cannot fit in its history (``child``
        None: before the first, by :data:`FAN_OUT_CHILD_MIN_EVENTS` each), or before child number
        ``child`` starts once the history reached the guard (:data:`PATCH_FAN_OUT_HISTORY_GUARD`).
        Compensations start as :meth:`_check_history` lets them."""
        if self._compensating:
            return
        events, size = self.runtime.history_used()
        if child is None:
            needed = events + FAN_OUT_CHILD_MIN_EVENTS * children
            if needed < HISTORY_GUARD_EVENTS:
                return
            problem = (
                f"step {path!r} would start {children} child runs, which take at least"
                f" {FAN_OUT_CHILD_MIN_EVENTS} events each of the run's history: {needed} events"
                f" with the {events} it has"
            )
        elif events < HISTORY_GUARD_EVENTS and size < HISTORY_GUARD_BYTES:
            return
        else:
            problem = (
                f"the run's history reached {events} events ({size} bytes) as step {path!r} was to"
                f" start its child run {child + 1} of {children}"
            )
        if not self.runtime.patched(PATCH_FAN_OUT_HISTORY_GUARD):
            return
        raise _RunFailed(
            f"{problem}, more than a run holds (limits: {HISTORY_GUARD_EVENTS} events,"
            f" {HISTORY_GUARD_BYTES} bytes): it stops before Temporal's own limit would terminate it."
            " Give the foreach a larger batch_size (fewer child runs), or split the list across"
            " subflows",
            "HistoryLimit",
        )

    async def _run_batch(self, batch: ForeachBatch) -> dict[str, Any]:
        """A fanned-out foreach's child: the slice through the body, in this run."""
        found = _foreach_steps(self.definition.steps, batch.step_id)
        if not found:
            raise _RunFailed(f"no foreach step {batch.step_id!r} in the definition", "InvalidBatch")
        step = found[0]  # (the one _find_foreach takes)
        problem = None
        if len(batch.items) > FAN_OUT_MAX_BATCH_SIZE:
            problem = (
                f"has {len(batch.items)} items; a fanned-out foreach's child runs at most"
                f" {FAN_OUT_MAX_BATCH_SIZE}"
            )
        elif batch.concurrency > (most := max(s.concurrency for s in found)):
            # (any foreach of that id: with duplicate ids the parent's may not be the one found)
            problem = f"runs {batch.concurrency} items at once; its step runs at most {most} (concurrency)"
        if problem is not None and self.runtime.patched(PATCH_BATCH_BOUNDS):
            raise _RunFailed(f"the foreach {step.id!r} slice {problem}", "InvalidBatch")
        scope = _Scope(steps=seal(dict(batch.steps)), local=seal(dict(batch.locals)))
        carried, self._carried_parallel = self._carried_parallel, None
        results = await self._foreach_items(
            step,
            scope,
            batch.path,
            seal(batch.items),
            offset=batch.offset,
            concurrency=batch.concurrency,
            safe=True,
            carried=carried,
            batch_slice=True,
        )
        return {"results": results}

    async def _delay(self, step: DelayStep, scope: _Scope, path: str) -> Any:
        now = self.runtime.now()
        top = self._at_safe_step(step, scope)
        lane = self._lane_at(step, scope)
        in_lane = None if lane is None else self._carried_lane_delays.pop(path, None)
        if lane is not None and in_lane is not None:
            # Its run continued as new while it waited in a branch: the timer fires as it would have.
            with self._waiting_at(path, step.label):
                await self._sleep_in_lane(step, path, lane, in_lane)
            return {"waited_s": in_lane.waited_s, "resumed_at": in_lane.until.isoformat()}
        carried = self._carried_delay
        if carried is not None and top and carried.path == path:
            # Continued as new while it waited: the timer fires at the same time as before.
            self._carried_delay = None
            until = carried.until
            wait = max(until - now, timedelta(0))
            if wait > timedelta(0):
                with self._waiting_at(path, step.label):
                    await self._sleep_at_top(step, path, carried, resumed=True)
            return {"waited_s": carried.waited_s, "resumed_at": until.isoformat()}
        if step.duration is not None:
            text = self._render(step.duration, self._context(scope))
            try:
                wait = parse_duration(str(text))
            except ValueError as err:
                raise _RunFailed(f"step {step.id!r}: {err}", "InvalidDuration") from None
        elif step.until is not None:
            text = str(self._render(step.until, self._context(scope)))
            try:
                until = datetime.fromisoformat(text)
            except ValueError:
                raise _RunFailed(
                    f"step {step.id!r}: 'until' rendered to {text!r}, not an ISO 8601 timestamp",
                    "InvalidTimestamp",
                ) from None
            if until.tzinfo is None:
                raise _RunFailed(
                    f"step {step.id!r}: 'until' timestamp {text!r} has no UTC offset", "InvalidTimestamp"
                )
            try:
                until.astimezone(UTC)
            except OverflowError:
                # (Found by an attacker's probe: the timer's end overflowed, failing the workflow
                # task again and again.)
                raise _RunFailed(
                    f"step {step.id!r}: 'until' timestamp {text!r} is outside the years 1 to 9999 in UTC",
                    "InvalidTimestamp",
                ) from None
            wait = max(until - now, timedelta(0))
        else:
            assert step.business_hours is not None
            hours = self._business_hours(step, step.business_hours, scope)
            wait = _in_business_hours(step, functools.partial(delay_until_open, now, hours))
        if wait > timedelta(0):
            with self._waiting_at(path, step.label):
                at_top = top and self._nested_ok() and self._may_continue_waiting()
                if not at_top and lane is None:
                    await self.runtime.sleep(
                        wait.total_seconds(), f"{step.label}: wait {format_duration(wait)}"
                    )
                else:
                    # A wait the run may continue as new in: carried with its absolute end.
                    delay = CarriedDelay(
                        position=self._position_of(step) if at_top or lane is None else lane.here()[1],
                        path=path,
                        since=now,
                        until=now + wait,
                        waited_s=wait.total_seconds(),
                    )
                    if at_top or lane is None:
                        await self._sleep_at_top(step, path, delay, resumed=False)
                    else:
                        await self._sleep_in_lane(step, path, lane, delay)
        return {"waited_s": wait.total_seconds(), "resumed_at": (now + wait).isoformat()}

    async def _sleep_at_top(self, step: DelayStep, path: str, delay: CarriedDelay, *, resumed: bool) -> None:
        """A top-level delay's wait until ``delay.until``, a safe point to continue as new: the
        timer runs beside a condition that also wakes when the host asks; the next run of the chain
        waits for the time that is left (the same absolute time)."""
        wait = max(delay.until - self.runtime.now(), timedelta(0))
        summary = f"{step.label}: wait {format_duration(wait)}"
        sleeper = asyncio.ensure_future(self.runtime.sleep(wait.total_seconds(), summary))
        wake = self._continue_trigger(resumed)
        try:
            await self.runtime.wait_condition(lambda: sleeper.done() or wake(), None, summary)
        except BaseException:
            sleeper.cancel()
            raise
        if sleeper.done():
            await sleeper  # its error, if it failed
            return
        sleeper.cancel()
        self._keep_waits = True
        carried = delay.model_dump(mode="json")
        raise self._stop(delay.position, carry=lambda: {DELAY_KIND: carried})

    def _business_hours(
        self, step: DelayStep | HumanTaskStep, hours: BusinessHours, scope: _Scope
    ) -> BusinessHours:
        """The step's business hours, with a templated ``timezone`` rendered and checked."""
        if not hours.templated:
            return hours
        zone = self._render(hours.timezone, self._context(scope))
        try:
            if not isinstance(zone, str):
                raise ValueError(f"{zone!r} is not a time zone name")
            check_timezone(zone)
        except ValueError as err:
            raise _RunFailed(
                f"step {step.id!r}: business_hours.timezone rendered to an invalid zone: {err}",
                "InvalidTimeZone",
            ) from None
        return hours.model_copy(update={"timezone": zone})

    async def _approval(self, step: ApprovalStep, scope: _Scope, path: str, record: StepRecord) -> Any:
        # An approval that completed (approved, or rejected with "continue" or a goto) is undone by
        # its compensation like a task. No patch guards this: only a definition that declares
        # compensate on an approval gets it, and no definition could before this change.
        try:
            output = await self._await_approval(step, scope, path, record)
        except _Jump as jump:
            # Not when nobody decided (an on_timeout goto): the README's "completed" (approved,
            # or rejected with continue or a goto); before, it joined the saga too (a review).
            timed_out = isinstance(jump, _TimedOutJump) and self.runtime.patched(PATCH_APPROVAL_TIMEOUT_SAGA)
            if step.compensate and not timed_out:
                self._compensations.append(_Compensation(step, scope, path))
            raise
        if step.compensate:
            self._compensations.append(_Compensation(step, scope, path))
        return output

    async def _await_person(
        self,
        approval: _Approval,
        scope: _Scope,
        record: StepRecord,
        waiting_for: str,
        on_timeout: Callable[[], Any],
        *,
        top: bool = False,
        resumed: bool = False,
        continue_trigger: Callable[[], bool] | None = None,
        carry: Callable[[], dict[str, Any]] | None = None,
        lane: _Lane | None = None,
    ) -> tuple[bool, Any]:
        """The one waiting mechanism of approvals and human tasks: shows the pending step, waits
        for an accepted decision, escalates on the step's ladder (reminder steps, more people) and
        gives up at the view's deadline.

        Returns:
            ``(True, None)`` once decided; ``(False, on_timeout())`` at the deadline (called while
            the step is still shown as pending, as before the mechanism was shared).

        A ``top`` wait (a top-level approval) is a safe point to continue as new: the pending step
        travels in the snapshot and a ``resumed`` one (the next run of the chain) waits on where it
        was, its links already sent. A top-level human task is one too, by its own patch:
        ``continue_trigger`` (:meth:`_continue_trigger`) wakes its wait when the host asks, and
        ``carry`` gives the snapshot's entry for it (read at the switch, so a completion sent
        meanwhile is in it). A wait that is one of ``lane``'s own steps (a ``parallel`` branch's or
        a ``foreach`` item's, :data:`PATCH_CONTINUE_AS_NEW_LANE_PEOPLE`) lets the branches stop for
        a continue-as-new while it waits; cancelled for it, it stays pending (and decidable) until
        the switch, and travels in the branch's entry.
        """
        step, view = approval.step, approval.view
        path, start, deadline = view.path, view.since, view.deadline
        self._approvals[path] = approval
        record.status = StepStatus.WAITING
        self._set_state(self._waiting_state())
        self.runtime.state_changed()  # AwaitingApproval, even when the run state stays (e.g. parked)
        continuing = False
        # A top-level approval asks as at a boundary (not while any park is open).
        top_wants = self._continue_trigger(resumed, lambda: top and self._continue_wanted())

        try:
            if step.notify is not None and not resumed:  # no patch: only steps declaring notify
                await self._send_links(approval, scope, list(view.approvers))
            while True:
                now = self.runtime.now()
                escalation = step.escalation
                wake: datetime | None = deadline
                if escalation is not None and view.escalations < escalation.max_escalations:
                    next_escalation = start + parse_duration(escalation.after) * (view.escalations + 1)
                    wake = next_escalation if wake is None else min(wake, next_escalation)
                timeout_s = None if wake is None else max((wake - now).total_seconds(), 0.0)
                with self._waiting_at(path, step.label):
                    if lane is not None:
                        lane.person, lane.wakes = approval, wake
                        self._lane_waits.add(path)
                    try:
                        decided = await self.runtime.wait_condition(
                            lambda: (
                                approval.decision is not None
                                or top_wants()
                                or (continue_trigger is not None and continue_trigger())
                            ),
                            timeout_s,
                            f"{step.label}: {waiting_for}",
                        )
                    finally:
                        if lane is not None:
                            self._lane_waits.discard(path)
                            if not self._carrying:  # (carried: the snapshot is taken at the switch)
                                lane.person = None
                    # A safe point: nothing else of the run is in flight. The wait stays marked
                    # (CurrentStep does not flap): the next run waits here again.
                    if decided and approval.decision is None and continue_trigger is not None:
                        continuing = self._keep_waits = True
                        raise self._stop(self._position_of(step), carry=carry)
                    if decided and approval.decision is None and self._should_continue():
                        continuing = self._keep_waits = True
                        raise self._stop(self._position_of(step), approval)
                if decided and approval.decision is None:
                    continue
                if decided:
                    return True, None
                if wake == deadline:
                    return False, on_timeout()
                assert escalation is not None
                view.escalations += 1
                # Against a set: a list made it 50,000 x 50,000 comparisons in one activation,
                # past the deadlock limit at every attempt (a probe). The same names, in order.
                present = set(view.approvers)
                added = [a for a in escalation.add_approvers if a not in present]
                view.approvers.extend(added)
                self.runtime.state_changed()
                if step.notify is not None and added:
                    await self._send_links(approval, scope, added)
                await self._sequence(escalation.steps, scope.sibling(f"{path}/escalation{view.escalations}/"))
        except asyncio.CancelledError:
            continuing = continuing or (lane is not None and lane.person is approval and self._carrying)
            raise
        finally:
            if not continuing:  # a continued approval stays pending (and decidable) until the switch
                self._approvals.pop(path, None)
                self._set_state(self._waiting_state())
                self.runtime.state_changed()

    async def _send_links(self, approval: _Approval, scope: _Scope, actors: list[str]) -> None:
        """Mails decision links to the people among ``actors`` the step's ``notify`` lists.

        The ``decision_links`` activity mints the tokens (they never enter history) and sends
        through the tenant's SMTP settings. A failure is shown on the pending step and does not end
        the wait: the inbox still serves.
        """
        step, view = approval.step, approval.view
        assert step.notify is not None
        links = step.notify.email
        context = self._context(scope)
        recipients = [
            LinkRecipient(actor=actor, address=str(self._render(address, context)).strip())
            for actor, address in links.to.items()
            if actor in actors
        ]
        if not recipients:
            return
        subject = str(self._render(links.subject, context)) if links.subject else view.message or step.label
        form = view.form
        request_input = DecisionLinksInput(
            workflow_id=self.info.workflow_id,
            path=view.path,
            kind=view.kind,
            subject=subject,
            message=view.message,
            description=view.description,
            recipients=recipients,
            required_fields=any(f.required for f in form),
            has_fields=bool(form),
            expires_at=view.deadline,
            account=links.account,
            since=view.since,
        ).model_dump(mode="json")
        if not self.runtime.patched(PATCH_LINK_WAITS):
            del request_input["since"]  # the input as an earlier generation sent it
        visit = self._visits.get(view.path, 1)
        sends = self._link_sends[view.path] = self._link_sends.get(view.path, 0) + 1
        key = f"{view.path}{f'#{visit}' if visit > 1 else ''}/links{sends if sends > 1 else ''}"
        call = ActionCall(
            step_id=step.id,
            path=view.path,
            action=DECISION_LINKS_ACTIVITY,
            activity_id=key,
            summary=f"{step.label}: decision links to {', '.join(r.actor for r in recipients)}",
            request=ActionRequest(
                step_id=view.path,
                idempotency_key=f"{self.info.workflow_id}/{self.info.run_id}/{key}",
                input=request_input,
                tenant=self.info.tenant,
            ),
            retry=_LINKS_RETRY,
            timeouts=_LINKS_TIMEOUTS,
            compensating=self._compensating,
        )
        try:
            await self.runtime.execute_action(call)
        except ActionFailedError as failure:
            view.notify_error = clip(f"{failure.error_type}: {failure.message}")
        else:
            view.notified.extend(r.actor for r in recipients)
        self.runtime.state_changed()

    async def _await_approval(self, step: ApprovalStep, scope: _Scope, path: str, record: StepRecord) -> Any:
        carried = self._carried_approval
        lane, in_lane = self._person_lane(step, scope, path)
        if in_lane is not None:
            approval = in_lane  # as below, in a branch
        elif carried is not None and carried.view.path == path and step is self._safe_step():
            # Continued as new while it waited: same view, deadline and escalations; a decision
            # taken while the run switched is already in it.
            self._carried_approval = None
            approval = carried
        else:
            start = self.runtime.now()
            deadline = start + parse_duration(step.timeout) if step.timeout else None
            approval = _Approval(
                view=PendingApproval(
                    step_id=step.id,
                    path=path,
                    approvers=list(step.approvers),
                    message=str(self._render(step.message, self._context(scope))),
                    fields=None if step.fields is None else [f.name for f in step.form],
                    form=step.form,
                    since=start,
                    deadline=deadline,
                ),
                step=step,
            )
        decided, timed_out = await self._await_person(
            approval,
            scope,
            record,
            "awaiting approval",
            lambda: self._approval_timeout(step, approval),
            top=self._at_safe_point(step, scope),
            resumed=approval is carried or approval is in_lane,
            lane=lane,
        )
        if not decided:
            return timed_out
        assert approval.decision is not None
        kind, decision = approval.decision
        # The decision was checked against the declared form (check_decision): its data holds
        # only declared fields, each handed to the variable of its name.
        data = make_inert(dict(decision.data))
        self.vars.update(data)
        output = {
            "decision": "approved" if kind == DecisionKind.APPROVE else "rejected",
            "actor": decision.actor,
            "reason": self._decision_text(decision.reason),
            "data": data,
            "escalations": approval.view.escalations,
        }
        if kind == DecisionKind.REJECT:
            return self._rejected(step, path, record, output)
        return output

    def _rejected(self, step: ApprovalStep, path: str, record: StepRecord, output: dict[str, Any]) -> Any:
        policy = step.on_reject
        if policy == "continue":
            return output
        self._finish(
            record,
            StepStatus.FAILED if policy == "fail" else StepStatus.COMPLETED,
            output=output,
            error=f"rejected by {output['actor']}: {output['reason']}" if policy == "fail" else None,
            error_type="ApprovalRejected" if policy == "fail" else None,
        )
        if isinstance(policy, Goto):
            raise _Jump(policy.goto)
        raise _RunFailed(
            f"step {path!r} rejected by {output['actor']}: {output['reason']}", "ApprovalRejected"
        )

    async def _human_task(self, step: HumanTaskStep, scope: _Scope, path: str, record: StepRecord) -> Any:
        top = self._at_safe_step(step, scope)
        carried = self._carried_task
        lane, in_lane = self._person_lane(step, scope, path)
        resumed = carried is not None and top and carried.view.path == path
        if in_lane is not None:
            resumed, task = True, in_lane  # as below, in a branch
        elif resumed:
            # Continued as new while it waited: same view, deadline and escalations; a completion
            # sent while the run switched is already in it.
            assert carried is not None
            self._carried_task = None
            task = carried
        else:
            task = self._new_task(step, scope, path)
        trigger: Callable[[], bool] | None = None
        carry: Callable[[], dict[str, Any]] | None = None
        if top and self._nested_ok() and self._may_continue_waiting(PATCH_CONTINUE_AS_NEW_TASKS):
            trigger = self._continue_trigger(resumed)
            position = self._position_of(step)

            def carry_task() -> dict[str, Any]:
                kind, decision = task.decision or (None, None)
                entry = CarriedApproval(position=position, view=task.view, decided=kind, decision=decision)
                return {HUMAN_TASK_KIND: entry.model_dump(mode="json")}

            carry = carry_task

        decided, timed_out = await self._await_person(
            task,
            scope,
            record,
            "awaiting task",
            lambda: self._task_timeout(step, task),
            resumed=resumed,
            continue_trigger=trigger,
            carry=carry,
            lane=lane,
        )
        if not decided:
            return timed_out
        assert task.decision is not None
        _, decision = task.decision
        return {
            "status": "completed",
            "completed_by": decision.actor,
            "comment": self._decision_text(decision.reason),
            # Checked against the declared form (check_decision); inert like all data.
            "data": make_inert(dict(decision.data)),
            "escalations": task.view.escalations,
        }

    def _decision_text(self, text: str) -> str:
        """A person's reason or comment as the run keeps it: data, inert
        (:data:`PATCH_DECISION_TEXT`; asked only of text holding a reference)."""
        if SECRET_REF_START in text and self.runtime.patched(PATCH_DECISION_TEXT):
            inert: str = make_inert(text)
            return inert
        return text

    def _person_lane(
        self, step: ApprovalStep | HumanTaskStep, scope: _Scope, path: str
    ) -> tuple[_Lane | None, _Approval | None]:
        """For an approval or human task that is one of the own steps of a branch (item) that may
        continue as new: its lane (None elsewhere, or in a history recorded before
        :data:`PATCH_CONTINUE_AS_NEW_LANE_PEOPLE`), and the pending step a previous run of the chain
        carried for it, if any (taken once)."""
        lane = self._lane_at(step, scope)
        if lane is None:
            return None, None
        carried = self._carried_lane_people.pop(path, None)
        if carried is None and not self.runtime.patched(PATCH_CONTINUE_AS_NEW_LANE_PEOPLE):
            return None, None
        return lane, carried

    def _new_task(self, step: HumanTaskStep, scope: _Scope, path: str) -> _Approval:
        start = self.runtime.now()
        deadline = None
        if step.due is not None:
            due = parse_duration(step.due)
            if step.business_hours is None:
                deadline = start + due
            else:
                hours = self._business_hours(step, step.business_hours, scope)
                deadline = _in_business_hours(step, functools.partial(add_business_time, start, due, hours))
        context = self._context(scope)
        return _Approval(
            view=PendingApproval(
                step_id=step.id,
                path=path,
                approvers=step.approvers,
                message=str(self._render(step.title, context)),
                description=str(self._render(step.description, context)),
                fields=None if step.fields is None else [f.name for f in step.form],
                form=step.form,
                since=start,
                deadline=deadline,
                kind="task",
            ),
            step=step,
        )

    def _task_timeout(self, step: HumanTaskStep, task: _Approval) -> Any:
        policy = step.on_timeout
        if policy == "continue":
            return {
                "status": "timed_out",
                "completed_by": None,
                "comment": f"not completed within {step.due}",
                "data": {},
                "escalations": task.view.escalations,
            }
        if isinstance(policy, Goto):
            raise _Jump(policy.goto)
        raise _RunFailed(f"step {task.view.path!r}: not completed within {step.due}", "TaskTimedOut")

    def _approval_timeout(self, step: ApprovalStep, approval: _Approval) -> Any:
        output: dict[str, Any] = {
            "decision": "timed_out",
            "actor": None,
            "reason": f"no decision within {step.timeout}",
            "data": {},
            "escalations": approval.view.escalations,
        }
        policy = step.on_timeout
        if policy == "approve":
            return {**output, "decision": "approved", "actor": "timeout"}
        if policy == "reject":
            record = next(r for r in reversed(self.records) if r.path == approval.view.path)
            return self._rejected(
                step, approval.view.path, record, {**output, "decision": "rejected", "actor": "timeout"}
            )
        if isinstance(policy, Goto):
            raise _TimedOutJump(policy.goto)
        raise _RunFailed(
            f"step {approval.view.path!r}: no decision within {step.timeout}", "ApprovalTimedOut"
        )

    # ------------------------------------------------------------------------------------ events

    def _event_key(self, template: str, context: Mapping[str, Any], where: str) -> str:
        key = self._render(template, context)
        text = key if isinstance(key, str) else str(key)
        if not text or len(text) > MAX_EVENT_KEY_CHARS:
            raise _RunFailed(
                f"{where}: the event key rendered to {len(text)} characters"
                f" (1 to {MAX_EVENT_KEY_CHARS} are allowed)",
                "InvalidEventKey",
            )
        return text

    async def _subscribe(self, subscription: EventSubscription, where: str) -> list[Event]:
        try:
            return await self.runtime.subscribe_events(subscription)
        except ActionFailedError as failure:
            raise _RunFailed(
                f"{where}: subscribing to events {subscription.type!r} failed: {failure.message}",
                "EventSubscribeFailed",
            ) from None

    async def _subscribe_cancel_on(self) -> None:
        """Subscribes to the ``cancel_on`` events (from the run's start on) before the first step;
        one published since the start cancels the run at once. A continued run asks from its
        chain's start: an event published while the previous run closed, or signalled to this one
        before its first step subscribed (when there is nothing yet to match it), reached no run.
        Replay-safe: what the mailbox answered is in the history."""
        since = self.info.created_at or self.info.started_at
        if self._generation and self.runtime.patched(PATCH_CANCEL_ON_FROM_CHAIN_START):
            since = self._started_at
        context = self._context(self._root)
        for i, cancel in enumerate(self.definition.cancel_on):
            key = self._event_key(cancel.key, context, f"cancel_on[{i}]")
            self._cancel_keys.append((cancel.event, key))
        for i, (event_type, key) in enumerate(self._cancel_keys):
            buffered = await self._subscribe(
                EventSubscription(
                    tenant=self.info.tenant,
                    type=event_type,
                    key=key,
                    workflow_id=self.info.workflow_id,
                    path=f"cancel_on[{i}]",
                    since=since,
                    mailbox=self._mailbox_of(event_type, key),
                ),
                f"cancel_on[{i}]",
            )
            for event in buffered:
                request = self.deliver_event(event)
                if request is not None:
                    await self._cancel_by_event(request)

    async def _cancel_by_event(self, request: CancelRequest) -> None:
        """Cancels the run for a ``cancel_on`` event found in a subscription's answer (a signalled
        one is the host's to act on: :meth:`deliver_event` returns its request)."""
        if self.cancel_hook is not None:
            # The host cancels the run as for its cancel signal (unless it is ending already);
            # the cancellation lands at this await or the next one.
            self.cancel_hook(request)
            await asyncio.sleep(0)
            return
        self.cancel_request = request
        raise asyncio.CancelledError()

    def deliver_event(self, event: Event) -> CancelRequest | None:
        """Takes an event a mailbox handed to the run.

        Another tenant's event, or one this run consumed already, is refused (recorded). An event
        matching a ``cancel_on`` entry returns the cancel request the host must carry out (the
        actor names the event). Otherwise the first waiting step whose type and key match, whose
        lookback window holds it and whose declared fields it fits consumes it; data that does
        not fit is refused (recorded) and the step waits on. An event no step waits for (a
        subscription lapsing) is dropped.
        """
        if event.tenant != self.info.tenant:
            self.refuse_message(
                "event", event.source or None, f"event {clip(event.id, 100)!r} is another tenant's"
            )
            return None
        for event_type, key in self._cancel_keys:
            if event.type == event_type and event.key == key and self.state not in FINAL_STATES:
                return CancelRequest(
                    actor=clip(f"event:{event.type}:{event.id}", MAX_ACTOR_CHARS),
                    reason=clip(f"cancel_on event {event.type!r} published by {event.source or 'unknown'}"),
                )
        taken = self._consumed_key(event)
        if taken in self._consumed_events:
            return None  # at most once per event (a lookback returns it again, say)
        if event.published_at is not None and event.published_at.tzinfo is None:
            # A mailbox stamps UTC: a time without an offset was forged (and would fail the
            # comparison below, a workflow task failing for ever).
            self.refuse_message(
                "event",
                event.source or None,
                f"event {clip(event.id, 100)!r}: its published_at has no UTC offset",
            )
            return None
        for wait in self._event_waits.values():
            if wait.event is not None or event.type != wait.view.event or event.key != wait.view.key:
                continue
            published = event.published_at
            if published is None or published < wait.since - timedelta(seconds=EVENT_CLOCK_SKEW_S):
                continue
            problem = event_fields_problem(wait.step, wait.view.path, self._text_of(event.data))
            if problem is not None:
                self.refuse_message(
                    "event", event.source or None, f"event {clip(event.id, 100)!r}: {problem}"
                )
                continue
            wait.event = event
            self._consumed_events[taken] = None
            return None
        return None

    async def _wait_for_event(
        self, step: WaitForEventStep, scope: _Scope, path: str, record: StepRecord
    ) -> Any:
        top = self._at_safe_step(step, scope)
        carried = self._carried_event
        resumed = carried is not None and top and carried.view.path == path
        lane, in_lane = self._event_lane(step, scope, path)
        if in_lane is not None:
            # As below, in a branch (or item).
            wait = in_lane
            key, since, deadline = wait.view.key, wait.since, wait.view.deadline
        elif resumed:
            # Continued as new while it waited: the same window, key and deadline; an event taken
            # while the run switched is already in it.
            assert carried is not None
            self._carried_event = None
            wait = carried
            key, since, deadline = wait.view.key, wait.since, wait.view.deadline
        else:
            start = self.runtime.now()
            key = self._event_key(step.key, self._context(scope), f"step {path!r}")
            lookback = parse_duration(step.lookback)
            deadline = start + parse_duration(step.timeout) if step.timeout else None
            since = start - lookback
            wait = _EventWait(
                view=PendingEvent(
                    step_id=step.id,
                    path=path,
                    event=step.event,
                    key=key,
                    since=start,
                    lookback_s=lookback.total_seconds(),
                    deadline=deadline,
                    mailbox=self._mailbox_of(step.event, key),
                ),
                step=step,
                since=since,
            )
        subscription = self._subscription_of(wait)
        trigger: Callable[[], bool] | None = None
        if top and self._nested_ok() and self._may_continue_waiting(PATCH_CONTINUE_AS_NEW_EVENTS):
            trigger = self._continue_trigger(resumed, event_path=path)
        if path not in self._event_waits:  # (a carried one holds its place)
            wait.rank = len(self._event_waits) and max(w.rank for w in self._event_waits.values()) + 1
        self._event_waits[path] = wait
        record.status = StepStatus.WAITING
        self.runtime.state_changed()
        continuing = False
        try:
            with self._waiting_at(path, step.label):
                if lane is not None:
                    # Subscribing, the branch stands as a wait a continue-as-new may carry (once
                    # subscribed: the stopped branches wait for it).
                    self._lane_waits.add(path)
                if wait.event is None:
                    # A resumed wait subscribes again under the same name: the mailbox's answer
                    # holds what was published since the window began (what this chain consumed
                    # is not taken twice).
                    buffered = await self._subscribe(subscription, f"step {path!r}")
                    wait.view.subscribed = True
                    self.runtime.state_changed()
                    # Strictly inside the window: the clock-skew tolerance is for signalled events only.
                    for event in buffered:
                        if (
                            wait.event is None
                            and event.published_at is not None
                            and event.published_at >= since
                            # A wait resumed after its deadline passed between the runs times out,
                            # as it would have, rather than take a later event.
                            and (
                                deadline is None
                                or event.published_at < deadline
                                or (lane is None and not self.runtime.patched(PATCH_LATE_EVENTS_REFUSED))
                            )
                        ):
                            request = self.deliver_event(event)
                            if request is not None:  # a cancel_on of the same type and key
                                await self._cancel_by_event(request)
                if wait.event is None:
                    remaining = (
                        None
                        if deadline is None
                        else max((deadline - self.runtime.now()).total_seconds(), 0.0)
                    )
                    if lane is not None:
                        lane.event, lane.wakes = wait, deadline
                    woke = await self.runtime.wait_condition(
                        (lambda: wait.event is not None)
                        if trigger is None
                        else (lambda: wait.event is not None or trigger()),
                        remaining,
                        f"{step.label}: awaiting event {step.event}",
                    )
                    if woke and wait.event is None:
                        # A safe point: the subscription stays (the next run's), and so does the
                        # wait, to take an event signalled before the switch.
                        continuing = self._keep_waits = True
                        position = self._position_of(step)

                        def carry_wait() -> dict[str, Any]:
                            entry = CarriedEventWait(
                                position=position, view=wait.view, since=wait.since, event=wait.event
                            )
                            return {EVENT_WAIT_KIND: entry.model_dump(mode="json")}

                        raise self._stop(position, carry=carry_wait)
        except asyncio.CancelledError:
            if lane is not None and lane.event is wait and self._carrying:
                # Its branch stopped for a continue-as-new: the wait (and its subscription) stays,
                # to take an event signalled before the switch; the next run waits on.
                continuing = True
            elif wait.view.subscribed:
                await self._finally(self.runtime.unsubscribe_events(subscription))
            raise
        except _RunFailed:
            # The mailbox stops signalling a wait that is over (a resumed wait holds the previous
            # run's subscription even when subscribing again failed).
            if wait.view.subscribed:
                await self._finally(self.runtime.unsubscribe_events(subscription))
            raise
        finally:
            if lane is not None:
                self._lane_waits.discard(path)
                if not self._carrying:  # (carried: the snapshot is taken at the switch)
                    lane.event = None
            if not continuing:
                self._event_waits.pop(path, None)
                self.runtime.state_changed()
        await self.runtime.unsubscribe_events(subscription)
        got = wait.event
        if got is None:
            return self._event_timeout(step, path, key)
        return {
            "event_id": got.id,
            "type": got.type,
            "key": got.key,
            "published_at": None if got.published_at is None else got.published_at.isoformat(),
            "source": got.source,
            "data": self._inert_data(dict(got.data)),
            "timed_out": False,
        }

    def _event_lane(
        self, step: WaitForEventStep, scope: _Scope, path: str
    ) -> tuple[_Lane | None, _EventWait | None]:
        """For a ``wait_for_event`` that is one of the own steps of a branch (item) that may continue
        as new: its lane (None elsewhere, or in a history recorded before
        :data:`PATCH_CONTINUE_AS_NEW_LANE_EVENTS`), and the wait a previous run of the chain carried
        for it, if any (taken once)."""
        lane = self._lane_at(step, scope)
        if lane is None:
            return None, None
        carried = self._carried_lane_events.pop(path, None)
        if carried is None and not self.runtime.patched(PATCH_CONTINUE_AS_NEW_LANE_EVENTS):
            return None, None
        return lane, carried

    def _subscription_of(self, wait: _EventWait) -> EventSubscription:
        """The mailbox subscription of an event wait (the same in every run of the chain)."""
        view = wait.view
        return EventSubscription(
            tenant=self.info.tenant,
            type=view.event,
            key=view.key,
            workflow_id=self.info.workflow_id,
            path=view.path,
            since=wait.since,
            until=view.deadline,
            mailbox=view.mailbox,
        )

    def _mailbox_of(self, event_type: str, key: str) -> str | None:
        """The mailbox a new subscription goes to: the one of its tenant, type and key
        (:data:`PATCH_MAILBOX_IDS`), or None, the legacy one, in a run of an earlier generation."""
        if not self.runtime.patched(PATCH_MAILBOX_IDS):
            return None
        return mailbox_id(self.info.tenant, event_type, key)

    def _event_timeout(self, step: WaitForEventStep, path: str, key: str) -> Any:
        policy = step.on_timeout
        if policy == "continue":
            return {
                "event_id": None,
                "type": step.event,
                "key": key,
                "published_at": None,
                "source": None,
                "data": {},
                "timed_out": True,
            }
        if isinstance(policy, Goto):
            raise _Jump(policy.goto)
        raise _RunFailed(f"step {path!r}: no event {step.event!r} within {step.timeout}", "EventTimedOut")

    # ------------------------------------------------------------------------- continue-as-new

    def _continue_wanted(self, *, waiting_parked: bool = False, event_path: str | None = None) -> bool:
        """Whether the host asks to continue as new (read-only: safe inside a wait predicate).
        ``waiting_parked``: asked by the top-level wait, which may be the run's one park;
        ``event_path``: asked by the top-level event wait of that path, which may be the run's one."""
        return (
            self._continue_as_new is not None
            and not self._continue_declined
            and (waiting_parked or self._lane_parks_only())
            and not self._recording
            and self.cancel_request is None
            # Another wait_for_event (in a branch, but one a continue-as-new carries as it is)
            # keeps its mailbox subscription: not now.
            and all(path == event_path or path in self._lane_waits for path in self._event_waits)
            and self._continue_as_new()
        )

    def _should_continue(self) -> bool:
        """Whether to continue as new at this safe point (asks the patch only then)."""
        if not self._continue_wanted():
            return False
        if not self.runtime.patched(PATCH_CONTINUE_AS_NEW):
            self._continue_declined = True  # replaying a run recorded before continue-as-new
            return False
        return True

    def _may_continue_waiting(self, patch: str = PATCH_CONTINUE_AS_NEW_WAITS) -> bool:
        """Whether a top-level wait starting now may continue as new while it waits (asks its
        patch, that of delays and parks unless told: a history recorded before the change replays
        its plain wait)."""
        return self._continue_as_new is not None and self.runtime.patched(patch)

    def _continue_trigger(
        self,
        resumed: bool,
        asks: Callable[[], bool] | None = None,
        *,
        event_path: str | None = None,
    ) -> Callable[[], bool]:
        """The part of a top-level wait's condition that wakes it to continue as new (``asks``:
        whether the host asks, by default as :meth:`_continue_wanted` does for the wait, which may
        be the run's one park or the event wait at ``event_path``). A wait a continued run resumed
        continues again only once it has seen the host not asking: a budget smaller than what a
        run spends to reach the wait (or a host asking from a run's start) would otherwise
        continue it for ever."""
        armed = not resumed

        def asking() -> bool:
            return self._continue_wanted(waiting_parked=True, event_path=event_path)

        ask = asks or asking

        def wanted() -> bool:
            nonlocal armed
            want = ask()
            armed = armed or not want
            return armed and want

        return wanted

    def _position_of(self, step: Step) -> int:
        """Index of ``step`` in the innermost safe sequence (it is that sequence's current step)."""
        frame = self._frames[-1]
        assert frame.steps[frame.index] is step, "not at the safe point"
        return frame.index

    def continuation(self) -> Continuation:
        """The snapshot the next run of the chain starts from (call once :attr:`continuing`, after
        the host let every message handler finish: a decision taken meanwhile is in it)."""
        point = self._continuing
        assert point is not None, "the run is not continuing as new"
        carried = None
        if point.approval is not None:
            kind, decision = point.approval.decision or (None, None)
            carried = CarriedApproval(
                position=point.inner, view=point.approval.view, decided=kind, decision=decision
            )
        records = self.records[-MAX_CARRIED_RECORDS:]
        return Continuation(
            generation=self._generation + 1,
            started_at=self._started_at,
            position=point.position,
            approval=carried,
            vars=dict(self.vars),
            steps=dict(self._root.steps),
            last_output=self._root.last_output,
            records=records,
            steps_dropped=self._steps_dropped + len(self.records) - len(records),
            visits=dict(self._visits),
            parks=dict(self._parks),
            executions=self._executions,
            state_size=self._state_size,
            compensations=[
                CarriedCompensation(
                    step=c.step.model_dump(mode="json", by_alias=True),
                    path=c.path,
                    scope=self._carry(c.scope),
                )
                for c in self._compensations
            ],
            decisions=list(self.decisions),
            decisions_dropped=self.decisions_dropped,
            refused_messages=list(self.refused_messages),
            refused_messages_dropped=self.refused_messages_dropped,
            cancel_request=self.cancel_request,
            # The events this run consumed: a later wait's lookback must not take one again.
            kinds={
                CONSUMED_EVENTS_KIND: list(self._consumed_events)[-MAX_CARRIED_EVENT_IDS:],
                **({BRANCHES_KIND: point.branches} if point.branches else {}),
                **(point.carry() if point.carry is not None else {}),
            },
        )

    def _carry(self, scope: _Scope) -> CarriedScope:
        root = scope.steps is self._root.steps
        return CarriedScope(
            root=root,
            prefix=scope.prefix,
            steps={} if root else dict(scope.steps),
            local=dict(scope.local),
            parent=None if scope.parent is None else self._carry(scope.parent),
        )

    def _uncarry(self, carried: CarriedScope) -> _Scope:
        return _Scope(
            steps=self._root.steps if carried.root else seal(dict(carried.steps)),
            prefix=carried.prefix,
            local=seal(dict(carried.local)),
            parent=None if carried.parent is None else self._uncarry(carried.parent),
        )

    def _restore(self, snapshot: Continuation) -> None:
        """Takes over the state a previous run of the chain carried (see :meth:`continuation`)."""
        self._consumed_events.update(dict.fromkeys(carried_ids(snapshot, CONSUMED_EVENTS_KIND)))
        self._generation = snapshot.generation
        self._started_at = snapshot.started_at
        if self._batch is None:  # (a foreach's child reads its parent's run context)
            self._run_ctx["started_at"] = snapshot.started_at.isoformat()
        self._start_position = snapshot.position
        self.vars = seal(dict(snapshot.vars))
        self._root.steps.update(seal(snapshot.steps))
        self._root.last_output = seal(snapshot.last_output)
        self.records = list(snapshot.records)
        self._steps_dropped = snapshot.steps_dropped
        self._visits = dict(snapshot.visits)
        self._parks = dict(snapshot.parks)
        self._executions = snapshot.executions
        self._state_size = snapshot.state_size
        for comp in snapshot.compensations:
            step = _STEP.validate_json(json.dumps(comp.step))
            if not isinstance(step, TaskStep | ApprovalStep):
                raise ValueError(f"carried compensation at {comp.path!r} is a {step.type} step")
            self._compensations.append(_Compensation(step, self._uncarry(comp.scope), comp.path))
        self.decisions = list(snapshot.decisions)
        self.decisions_dropped = snapshot.decisions_dropped
        self.refused_messages = list(snapshot.refused_messages)
        self.refused_messages_dropped = snapshot.refused_messages_dropped
        self.cancel_request = snapshot.cancel_request
        steps, inner = self._restore_branches(snapshot)
        carried = snapshot.approval
        if carried is not None:
            waiting = steps[carried.position] if carried.position < len(steps) else None
            if not isinstance(waiting, ApprovalStep) or waiting.id != carried.view.step_id:
                raise ValueError(
                    f"carried approval {carried.view.path!r} is not at top-level step {carried.position}"
                )
            approval = _pending_again(carried, waiting)
            # Pending from the first moment, so a decision delivered with the run's first task counts.
            self._approvals[carried.view.path] = approval
            self._carried_approval = approval
            self.state = self._waiting_state()
        self._restore_waits(snapshot, steps)
        carried_waits = [
            kind
            for kind, present in (
                ("approval", snapshot.approval is not None),
                *(
                    (kind, snapshot.kinds.get(kind) is not None)
                    for kind in (HUMAN_TASK_KIND, EVENT_WAIT_KIND, DELAY_KIND, DEAD_LETTER_KIND)
                ),
            )
            if present
        ]
        if len(carried_waits) > 1:
            raise ValueError(f"a snapshot carries one wait at most, not {', '.join(carried_waits)}")
        parallel = snapshot.kinds.get(PARALLEL_KIND)
        if parallel is not None:
            if carried_waits:
                raise ValueError(
                    f"a snapshot carries a parallel step or a wait, not both ({carried_waits[0]})"
                )
            limit = self.definition.limits.max_foreach_items
            if self._batch is not None:
                self._carried_parallel = self._check_carried_batch(parallel, self._batch, limit)
            else:
                self._carried_parallel = _check_carried_parallel(parallel, steps, inner, limit)
            lanes = _carried_lanes(self._carried_parallel)
            for key, patch, what in (
                (
                    "within",
                    PATCH_CONTINUE_AS_NEW_LANE_BRANCHES,
                    "a branch is carried inside a condition or switch",
                ),
                ("failed", PATCH_CONTINUE_AS_NEW_FAILED_BRANCHES, "a failed branch is carried"),
                (
                    "nested",
                    PATCH_CONTINUE_AS_NEW_LANE_NESTED,
                    "a branch is carried inside a parallel or foreach step among its own steps",
                ),
            ):
                if any(isinstance(lane, dict) and key in lane for lane in lanes) and not self.runtime.patched(
                    patch
                ):
                    raise ValueError(f"{what}, which a run of this generation does not do")
            for lane in lanes:
                if isinstance(lane, dict) and isinstance(lane.get("delay"), CarriedDelay):
                    delay = lane.pop("delay")
                    self._carried_lane_delays[delay.path] = delay
                if isinstance(lane, dict) and isinstance(lane.get("person"), _Approval):
                    person = lane.pop("person")
                    # Pending from the first moment, so a decision delivered with the run's first
                    # task counts.
                    self._approvals[person.view.path] = person
                    self._carried_lane_people[person.view.path] = person
                    self.state = self._waiting_state()
                if isinstance(lane, dict) and isinstance(lane.get("park"), tuple):
                    carried_park, parked_step = lane.pop("park")
                    problem = self._carried_park_problem(carried_park, parked_step)
                    if problem is not None:
                        raise ValueError(f"carried park {carried_park.view.path!r}: {problem}")
                    park = _Park(view=carried_park.view, decision=carried_park.decision)
                    # Shown and decidable from the first moment, so a decision delivered with the
                    # run's first task counts.
                    self._parked[carried_park.view.park_id] = park
                    self._carried_lane_parks[carried_park.view.path] = (carried_park, park)
                    self.state = self._waiting_state()
                if isinstance(lane, dict) and isinstance(lane.get("event"), _EventWait):
                    wait = lane.pop("event")
                    got = wait.event
                    if got is not None and any(
                        w.event is not None and self._consumed_key(w.event) == self._consumed_key(got)
                        for w in self._carried_lane_events.values()
                    ):
                        raise ValueError(
                            f"carried event wait {wait.view.path!r}: event {got.id!r} is carried"
                            " for another wait too (an event is taken once)"
                        )
                    if not self._carried_event_fits(wait):
                        raise ValueError(
                            f"carried event wait {wait.view.path!r} does not fit step {wait.step.id!r}"
                        )
                    self._carried_lane_events[wait.view.path] = wait
            # Waiting from the first moment, so an event signalled with the run's first task counts;
            # in the order they began, as the first matching wait takes an event.
            for wait in sorted(self._carried_lane_events.values(), key=lambda w: w.rank):
                self._event_waits[wait.view.path] = wait
        ending = snapshot.kinds.get(COMPENSATING_KIND)
        if ending is not None:
            self._restore_ending(ending, snapshot, bool(carried_waits) or parallel is not None)
        for kind in carried_waits:
            entry = (
                snapshot.approval.position
                if kind == "approval" and snapshot.approval
                else snapshot.kinds[kind]["position"]
            )
            if entry != inner:
                raise ValueError(f"the carried {kind} is at step {entry}, the run goes on at {inner}")

    def _restore_ending(self, data: Any, snapshot: Continuation, waits: bool) -> None:
        """Takes over a run that continued as new while it compensated: the compensations left are
        carried already (``snapshot.compensations``); this run runs them and ends as it says."""
        if waits or snapshot.kinds.get(BRANCHES_KIND) or snapshot.approval is not None:
            raise ValueError("a run carried while it compensates carries no wait or branch besides")
        if snapshot.position != len(self.definition.steps):
            raise ValueError("a run carried while it compensates goes on after its last step")
        if self._batch is not None or not self.runtime.patched(PATCH_CONTINUE_AS_NEW_COMPENSATING):
            raise ValueError("a run carried while it compensates, which a run of this generation does not do")
        carried = CarriedEnding.model_validate(data)
        self._ending = RunState.COMPENSATED if carried.ending == "compensated" else RunState.FAILED
        self.error, self.error_type, self.output = carried.error, carried.error_type, carried.output
        self.state = RunState.COMPENSATING

    def _check_carried_batch(self, data: Any, batch: ForeachBatch, limit: int) -> dict[str, Any]:
        """The carried entry of a fanned-out foreach's child: its slice, each item where it stood."""
        step = _find_foreach(self.definition.steps, batch.step_id)
        if step is None or not isinstance(data, dict) or set(data) - {"since"} != {"step", "items", "lanes"}:
            raise ValueError(f"the carried slice of foreach {batch.step_id!r} is malformed")
        if data["items"] != batch.items:
            raise ValueError(f"the carried items of {step.id!r} are not the child's slice")
        return _check_carried_foreach(
            data, [step], 0, limit, path=batch.path, offset=batch.offset, concurrency=batch.concurrency
        )

    def _restore_branches(self, snapshot: Continuation) -> tuple[list[Step], int]:
        """Takes over the branches the previous run continued in (``kinds``), checked against the
        definition; returns the steps of the innermost (the top-level steps without any) and where
        in them the run goes on."""
        steps = self.definition.steps
        position = snapshot.position
        # A run carried while it compensates goes on after the last step (it runs none again).
        past_end = COMPENSATING_KIND in snapshot.kinds and position == len(steps)
        if position >= len(steps) and not past_end:
            raise ValueError(f"the run would go on at step {position}; the definition has {len(steps)}")
        entries = snapshot.kinds.get(BRANCHES_KIND) or []
        if not isinstance(entries, list):
            raise ValueError("carried branches are not a list")
        for depth, entry in enumerate(entries):
            steps, position = _enter_branch(entry, steps, position, f"carried branch {depth}")
        self._resume_branches = [dict(e) for e in entries]
        return steps, position

    def _restore_waits(self, snapshot: Continuation, steps: list[Step]) -> None:
        """Takes over a delay, park, human task or event wait the previous run stopped in
        (``kinds``), at ``position`` of ``steps`` (the innermost sequence it continued in)."""
        event_data = snapshot.kinds.get(EVENT_WAIT_KIND)
        if event_data is not None:
            carried_wait = aware(CarriedEventWait.model_validate_json(json.dumps(event_data)))
            pending = carried_wait.view
            at = steps[carried_wait.position] if carried_wait.position < len(steps) else None
            if not isinstance(at, WaitForEventStep) or at.id != pending.step_id or at.event != pending.event:
                raise ValueError(
                    f"carried event wait {pending.path!r} is not at top-level step {carried_wait.position}"
                )
            wait = _EventWait(view=pending, step=at, since=carried_wait.since, event=carried_wait.event)
            if pending.path != at.id or not self._carried_event_fits(wait):
                raise ValueError(f"carried event wait {pending.path!r} does not fit step {at.id!r}")
            # Waiting from the first moment, so an event signalled with the run's first task counts.
            self._event_waits[pending.path] = wait
            self._carried_event = wait
        task_data = snapshot.kinds.get(HUMAN_TASK_KIND)
        if task_data is not None:
            carried_task = aware(CarriedApproval.model_validate_json(json.dumps(task_data)))
            view = carried_task.view
            waiting = steps[carried_task.position] if carried_task.position < len(steps) else None
            if not isinstance(waiting, HumanTaskStep) or waiting.id != view.step_id or view.kind != "task":
                raise ValueError(
                    f"carried human task {view.path!r} is not at top-level step {carried_task.position}"
                )
            task = _pending_again(carried_task, waiting)
            # Pending from the first moment, so a completion delivered with the run's first task counts.
            self._approvals[view.path] = task
            self._carried_task = task
            self.state = self._waiting_state()
        delay_data = snapshot.kinds.get(DELAY_KIND)
        if delay_data is not None:
            delay = aware(CarriedDelay.model_validate_json(json.dumps(delay_data)))
            step = steps[delay.position] if delay.position < len(steps) else None
            if not isinstance(step, DelayStep) or step.id != delay.path:
                raise ValueError(f"carried delay {delay.path!r} is not at top-level step {delay.position}")
            self._carried_delay = delay
        park_data = snapshot.kinds.get(DEAD_LETTER_KIND)
        if park_data is not None:
            carried = aware(CarriedPark.model_validate_json(json.dumps(park_data)))
            step = steps[carried.position] if carried.position < len(steps) else None
            if (
                not isinstance(step, TaskStep)
                or step.id != carried.view.step_id
                or carried.view.dead_letter_id is None
            ):
                raise ValueError(
                    f"carried park {carried.view.path!r} is not at top-level step {carried.position}"
                )
            park = _Park(view=carried.view, decision=carried.decision)
            # Shown and decidable from the first moment, so a decision delivered with the run's
            # first task counts.
            self._parked[carried.view.park_id] = park
            self._carried_park, self._carried_parked = carried, park
            self.state = self._waiting_state()

    def _carried_park_problem(self, carried: CarriedPark, step: TaskStep) -> str | None:
        """What does not fit in a park a branch (item) carried, if anything: its deadline must be
        the step's park timeout after it parked, a carried decision one an operator takes, its ids
        and idempotency key the ones its call and redrives gave it (this workflow's, this
        tenant's), and its dead letter row not carried for another branch."""
        view, request, redrives = carried.view, carried.request, carried.redrives
        timeout = parse_duration(step.park_timeout or self.definition.defaults.park_timeout)
        if view.deadline != view.parked_at + timeout:
            return "its deadline is not its step's park timeout after it parked"
        operator = (DeadLetterAction.REDRIVE, DeadLetterAction.SKIP, DeadLetterAction.ABORT)
        if carried.decision is not None and carried.decision.action not in operator:
            return f"a carried {carried.decision.action.value!r} decision is the run's to take"
        base = carried.activity_id.split("~r", 1)[0]
        path, _, visit = base.partition("#")
        chain = "".join(f"~r{i}" for i in range(1, redrives + 1))
        if (
            redrives < 0
            or path != view.path
            or (visit and not (visit.isdigit() and int(visit) > 1))
            or carried.activity_id != (base if not redrives else f"{base}~r{redrives}")
            or not (
                view.park_id == carried.activity_id or self._park_number_ok(carried.activity_id, view.park_id)
            )
        ):
            return f"its activity id {carried.activity_id!r} or park id {view.park_id!r} is not its step's"
        key = request.idempotency_key
        prefix = f"{self.info.workflow_id}/"
        if (
            not key.startswith(prefix)
            or key[len(prefix) :].partition("/")[2] != base + chain
            or request.tenant != self.info.tenant
            or request.step_id != view.path
        ):
            return "its request is not its step's call in this run's workflow"
        if any(p.view.dead_letter_id == view.dead_letter_id for _, p in self._carried_lane_parks.values()):
            return f"its dead letter row {view.dead_letter_id} is carried for another park too"
        return None

    def _park_number_ok(self, activity_id: str, park_id: str) -> bool:
        """Whether ``park_id`` is ``activity_id``'s park number 2 or above (``~p<n>``). Before
        :data:`PATCH_PARK_IDS_PAST_NINE` only 2-9 and 20-99, ... were read (a genuine ``~p10`` was
        refused and the chain failed); the patch is asked only for such a number."""
        number = park_id.removeprefix(f"{activity_id}~p") if park_id.startswith(f"{activity_id}~p") else ""
        if re.fullmatch(r"[2-9][0-9]*", number):
            return True
        return bool(re.fullmatch(r"1[0-9]+", number)) and self.runtime.patched(PATCH_PARK_IDS_PAST_NINE)

    def _carried_event_fits(self, wait: _EventWait) -> bool:
        """Whether the event a carried wait took while the run switched (if any) is one its step
        takes: of its type and key, this tenant's, consumed by the chain, with fields it accepts; and
        whether its window and deadline are the step's from the wait's start."""
        step, view = wait.step, wait.view
        lookback = parse_duration(step.lookback)
        if (
            view.lookback_s != lookback.total_seconds()
            or wait.since != view.since - lookback
            or view.deadline != (view.since + parse_duration(step.timeout) if step.timeout else None)
        ):
            return False
        try:  # its key and path make the subscription it goes on under (a forged empty key does not)
            self._subscription_of(wait)
        except ValueError:
            return False
        got = wait.event
        return got is None or (
            (got.type, got.key, got.tenant) == (wait.step.event, wait.view.key, self.info.tenant)
            and self._consumed_key(got) in self._consumed_events
            and event_fields_problem(wait.step, wait.view.path, self._text_of(got.data)) is None
        )

    # ---------------------------------------------------------------------------- compensation

    async def _wind_up(self, ending: RunState) -> None:
        """The run ends without completing (as ``ending``): ends a carried wait it never went back
        into, then runs the compensations."""
        await self._drop_unresumed()
        await self._compensate(ending)

    def _consumed_key(self, event: Event) -> str:
        """How the run remembers ``event`` as taken: by its type, key and id
        (:data:`PATCH_EVENT_IDS_BY_ADDRESS`; by its id alone in runs of earlier generations)."""
        if self._events_by_address is None:
            self._events_by_address = self.runtime.patched(PATCH_EVENT_IDS_BY_ADDRESS)
        if not self._events_by_address:
            return event.id
        address = hashlib.sha256(f"{event.type}\0{event.key}".encode()).hexdigest()[:16]
        return f"{address}:{event.id}"

    def _carried_within_paths(self, parallel: dict[str, Any], prefix: str = "") -> set[str]:
        """The paths of the ``condition``/``switch`` steps the carried branches (items) are in
        (:data:`PATCH_CONTINUE_AS_NEW_LANE_BRANCHES`), and of the nested steps they are carried in
        (:data:`PATCH_CONTINUE_AS_NEW_LANE_NESTED`), with theirs: their records stay open across a
        switch. ``prefix``: of a nested step's paths."""
        paths: set[str] = set()
        if "lanes" in parallel:  # a foreach: each item's steps under its index
            batch = self._batch if not prefix else None
            base = batch.path if batch is not None else prefix + str(parallel["step"])
            offset = batch.offset if batch is not None else 0
            places = [(f"{base}[{offset + i}].", lane) for i, lane in enumerate(parallel["lanes"])]
        else:
            places = [(prefix, lane) for lane in parallel["branches"]]
        for at, lane in places:
            if not isinstance(lane, dict):
                continue
            paths |= {f"{at}{frame['step']}" for frame in lane.get("within") or []}
            nested = lane.get("nested")
            if isinstance(nested, dict):
                paths.add(f"{at}{nested['step']}")
                paths |= self._carried_within_paths(nested, at)
        return paths

    async def _drop_unresumed(self) -> None:
        """Ends the wait (and branches) a previous run of the chain carried, when this run ends
        before going back into them (see :data:`PATCH_DROP_UNRESUMED`)."""
        task, event, approval = self._carried_task, self._carried_event, self._carried_approval
        delay, park, parked = self._carried_delay, self._carried_park, self._carried_parked
        branches, parallel, lanes = self._resume_branches, self._carried_parallel, self._carried_lane_delays
        people, events = self._carried_lane_people, self._carried_lane_events
        lane_parks = self._carried_lane_parks
        if not (
            task
            or event
            or approval
            or delay
            or park
            or branches
            or parallel
            or lanes
            or people
            or events
            or lane_parks
        ):
            return
        if not self.runtime.patched(PATCH_DROP_UNRESUMED):
            return  # a history recorded before: the carried wait stayed as it was
        self._carried_task = self._carried_event = self._carried_approval = None
        self._carried_delay, self._carried_park, self._carried_parked = None, None, None
        paths = {str(entry["step"]) for entry in branches}
        if parallel is not None:
            paths.add(str(parallel["step"]))
            paths |= self._carried_within_paths(parallel)
        paths |= set(lanes)
        self._resume_branches, self._carried_parallel, self._carried_lane_delays = [], None, {}
        self._carried_lane_people, self._carried_lane_events, self._carried_lane_parks = {}, {}, {}
        for person in (task, approval, *people.values()):
            if person is not None:
                self._approvals.pop(person.view.path, None)
                paths.add(person.view.path)
        if delay is not None:
            paths.add(delay.path)
        for wait in (event, *events.values()):
            if wait is not None:
                self._event_waits.pop(wait.view.path, None)
                paths.add(wait.view.path)
                await self._finally(self.runtime.unsubscribe_events(self._subscription_of(wait)))
        for parked_view in [p.view for p in (parked, *(p for _, p in lane_parks.values())) if p is not None]:
            self._parked.pop(parked_view.park_id, None)
            paths.add(parked_view.path)
            row_id = parked_view.dead_letter_id
            if row_id is not None:
                who = self.cancel_request
                closing = DeadLetterDecision(
                    action=DeadLetterAction.CANCELLED,
                    actor=who.actor if who else "run",
                    reason="the run ended before it went back to the park",
                )
                await self._finally(self._resolve_row(row_id, closing))
        open_states = (StepStatus.WAITING, StepStatus.RUNNING)
        for record in self.records:
            if record.path in paths and record.status in open_states:
                self._finish(
                    record,
                    StepStatus.CANCELLED,
                    error="the run ended before this step went on (it had continued as new)",
                    error_type="Cancelled",
                )
        self.runtime.state_changed()  # no longer awaiting approval (the run's state is the end's)

    async def _compensate(self, ending: RunState) -> None:
        """Runs the compensation steps of completed tasks, most recent first, for a run that ends
        as ``ending``. A compensation that fails is recorded and the others still run. Between two
        of them, a failed or compensated run continues as new when the host asks
        (:data:`PATCH_CONTINUE_AS_NEW_COMPENSATING`), after one at least: the next run runs the
        rest."""
        self.hold_steps = False  # the cancellation (if one was on its way) has come: compensations run
        if not self._compensations:
            return
        previous = self.state
        self._set_state(RunState.COMPENSATING)
        if self._ending is None:
            # Compensations get a budget of their own: a run stopped by max_step_executions must
            # still undo its work (the count is still bounded, by the same limit, across the runs
            # of a chain: a continued run's compensations go on counting).
            self._executions = 0
        self._compensating = True
        ran = 0
        try:
            while self._compensations:
                if ran and self._continue_compensating(ending):
                    self._switching_ending = ending
                    raise _ContinueAsNew(
                        len(self.definition.steps), carry=lambda: self._carried_ending(ending)
                    )
                ran += 1
                comp = self._compensations.pop()
                # A compensation always finishes: a further cancellation (Temporal's cancel after the
                # cancel signal, say) must not leave work half undone. Its failures are in the step
                # records; the others still run.
                await self._finally(
                    self._sequence(comp.step.compensate or [], comp.scope.sibling(f"compensate/{comp.path}/"))
                )
        finally:
            self._compensating = False
        self.state = previous

    @property
    def compensating_switch(self) -> bool:
        """True when :meth:`run` returned to continue as new between two compensations."""
        return self._continuing is not None and self._switching_ending is not None

    async def compensate_here(self) -> RunResult:
        """The host cannot continue as new a run that stopped between two compensations (its next
        run's input would be too large): the compensations left run in this run, which then ends
        as it would have (no further switch)."""
        ending = self._switching_ending
        assert ending is not None, "not stopped between compensations"
        assert self._continuing is not None, "not stopped to continue as new"
        self._continuing = None
        self._switch_declined = True
        if self.runtime.patched(PATCH_COMPENSATE_HERE_BUDGET):
            self._ending = ending  # resumed compensating: the budget they began with goes on counting
        await self._compensate(ending)
        self._set_state(ending)
        return self.result()

    def _continue_compensating(self, ending: RunState) -> bool:
        """Whether a run compensating to end as ``ending`` continues as new before its next
        compensation (see :data:`PATCH_CONTINUE_AS_NEW_COMPENSATING`)."""
        return (
            ending in (RunState.FAILED, RunState.COMPENSATED)
            and not self._switch_declined
            and self._batch is None
            and self._continue_as_new is not None
            and self.cancel_request is None
            and self._continue_as_new()
            and self.runtime.patched(PATCH_CONTINUE_AS_NEW_COMPENSATING)
        )

    def _carried_ending(self, ending: RunState) -> dict[str, Any]:
        """The snapshot's entry of a run continuing as new while it compensates."""
        carried = CarriedEnding(
            ending="compensated" if ending == RunState.COMPENSATED else "failed",
            error=self.error,
            error_type=self.error_type,
            output=self.output,
        )
        return {COMPENSATING_KIND: carried.model_dump(mode="json")}
