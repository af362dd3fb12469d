"""Records the histories that ``tests/workflows/test_replay.py`` replays.

Run ``python -m tests.record_histories`` (or ``make histories``) from the repository root. It starts
an in-memory dev server, a local HTTP server and an in-process worker, runs one representative
definition per scenario (every step kind, approvals, compensation, cancellation, retries) and writes
``tests/histories/<name>.json``::

    {"name": ..., "description": ..., "workflow_id": ..., "definition": {...}, "input": {...},
     "outcome": "completed" | "failed" | ..., "history": <the history as Temporal JSON>}

Re-record only on purpose: the committed files are the runs in flight that the current workflow
code must still replay. A change that breaks replay of an old history needs ``workflow.patched``,
not a re-recording.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.subflows import SUBFLOW_RESOLVE
from interpreter.inert import make_inert
from interpreter.state import (
    CancelRequest,
    DeadLetterAction,
    DeadLetterDecision,
    DeadLetterRecord,
    DeadLetterResolution,
    Decision,
    DecisionKind,
    DecisionRequest,
    RunInput,
    RunOptions,
    RunStatus,
    SubflowDefinition,
    SubflowLookup,
)
from interpreter.validate import definition_hash, load_definition
from starter.client import FlowClient
from starter.devserver import EPHEMERAL_STARTUP_TIMEOUT, ensure_search_attributes, find_temporal_cli
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import counting_loop
from worker import build_worker
from workflows.generic import DEAD_LETTER_PARK, DEAD_LETTER_RESOLVE, WORKFLOW_NAME, RunDefinitionWorkflow
from workflows.search_attributes import ALL_KEYS, start_attributes

HISTORIES = Path(__file__).resolve().parent / "histories"

Driver = Callable[[WorkflowHandle[Any, Any]], Awaitable[None]]
Publisher = Callable[[WorkflowHandle[Any, Any], FlowClient], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    definition: Callable[[str], dict[str, Any]]  # base URL of the HTTP server -> definition
    input: dict[str, Any]
    drive: Driver | None = None  # what a user does while the run is open
    named: bool = False  # started under the definition's name (the dynamic workflow), not RunDefinition
    options: dict[str, Any] | RunOptions | None = None  # RunOptions (or its fields: a dry run)
    publish: Publisher | None = None  # what a publisher of events does while the run is open
    child: str | None = None  # also record this child's history (its id after the run's and "/")
    attributes: bool = False  # started with the search attributes a client of its generation sets
    raw: bool = False  # started with the document as it is, unchecked (as a raw client may)
    first_run: bool = False  # the chain's first run is recorded, not the run it ended in


async def _status(handle: WorkflowHandle[Any, Any]) -> RunStatus:
    return await handle.query(RunDefinitionWorkflow.status)


async def _until(
    handle: WorkflowHandle[Any, Any], check: Callable[[RunStatus], bool], timeout: float = 30
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check(await _status(handle)):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{handle.id}: condition not reached within {timeout}s")
        await asyncio.sleep(0.1)


def _http(step_id: str, url: str, body: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "task",
        "action": "http",
        "input": {"method": "POST", "url": url, "json": body},
        **extra,
    }


def _echo(step_id: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    step_input = extra.pop("input", {"value": value})
    return {"id": step_id, "type": "task", "action": "echo", "input": step_input, **extra}


def _sequential_kinds(base: str) -> dict[str, Any]:
    return {
        "name": "replay-sequential-kinds",
        "steps": [
            _echo("greet", {"hello": "{{ input.who }}"}),
            _http("post", f"{base}/orders", {"who": "{{ steps.greet.output.hello }}"}),
            {"id": "init", "type": "set", "vars": {"amount": "{{ input.amount }}"}},
            {
                "id": "size",
                "type": "condition",
                "if": "vars.amount > 100",
                "then": {"steps": [{"id": "big", "type": "set", "vars": {"size": "big"}}]},
                "else": {"steps": [{"id": "small", "type": "set", "vars": {"size": "small"}}]},
            },
            {
                "id": "tier",
                "type": "switch",
                "cases": [{"when": "vars.size == 'big'", "then": {"steps": [_echo("gold", "gold")]}}],
                "default": {"steps": [_echo("basic", "basic")]},
            },
            _echo("skipped", "never", when="vars.amount < 0"),
            _echo(
                "flaky",
                input={"value": "ok", "fail": "Flaky", "succeed_on_attempt": 2},
                retry={"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 3},
            ),
            _echo("optional", input={"fail": "Down", "non_retryable": True}, on_failure="continue"),
            _echo("primary", input={"fail": "Down", "non_retryable": True}, on_failure={"goto": "fallback"}),
            _echo("jumped_over", "never"),
            _echo("fallback", "plan B"),
            {"id": "count", "type": "set", "vars": {"i": 0}},
            _echo("tick", "{{ vars.i }}", max_visits=3),
            {"id": "inc", "type": "set", "vars": {"i": "{{ vars.i + 1 }}"}, "max_visits": 3},
            {
                "id": "again",
                "type": "condition",
                "if": "vars.i < 3",
                "then": {"goto": "tick"},
                "max_visits": 3,
            },
            {"id": "done", "type": "succeed", "output": {"size": "{{ vars.size }}", "ticks": "{{ vars.i }}"}},
            _echo("after_succeed", "never"),
        ],
    }


def _concurrent_kinds(base: str) -> dict[str, Any]:
    return {
        "name": "replay-concurrent-kinds",
        "steps": [
            {
                "id": "both",
                "type": "parallel",
                "branches": [
                    {"id": "left", "steps": [_echo("l", "L", input={"value": "L", "sleep_s": 0.2})]},
                    {"id": "right", "steps": [_http("r", f"{base}/right", {"side": "right"})]},
                ],
            },
            {
                "id": "either",
                "type": "parallel",
                "join": "any",
                "branches": [
                    {"id": "broken", "steps": [_echo("b", input={"fail": "Down", "non_retryable": True})]},
                    {"id": "working", "steps": [_echo("w", input={"value": "W", "sleep_s": 0.2})]},
                ],
            },
            {
                "id": "race",
                "type": "parallel",
                "join": "first",
                "branches": [
                    {
                        "id": "tortoise",
                        "steps": [
                            _echo(
                                "slow", input={"value": "slow", "sleep_s": 60}, timeouts={"heartbeat": "2s"}
                            )
                        ],
                    },
                    {"id": "hare", "steps": [_echo("fast", "fast")]},
                ],
            },
            {
                "id": "loop",
                "type": "foreach",
                "items": "input.items",
                "concurrency": 2,
                "steps": [_http("work", f"{base}/work", {"item": "{{ item }}", "index": "{{ index }}"})],
                "output": "{{ steps.work.output.status_code }}",
            },
            # Lets the race's loser report its cancellation before the run ends.
            {"id": "linger", "type": "delay", "duration": "3s"},
        ],
    }


def _fan_out(base: str) -> dict[str, Any]:
    return {
        "name": "replay-fan-out",
        "steps": [
            _echo("before", "{{ input.label }}"),
            {
                "id": "loop",
                "type": "foreach",
                "items": "input.items",
                "concurrency": 2,
                "fan_out_above": 3,
                "batch_size": 3,
                "steps": [_echo("double", "{{ item * 2 }}")],
                "output": "{{ steps.double.output + index }}",
            },
            _echo("after", "{{ steps.loop.output }}"),
        ],
    }


def _subflows(base: str) -> dict[str, Any]:
    return {
        "name": "replay-subflows",
        "steps": [
            {"id": "off", "type": "subflow", "definition": "replay-child", "input": {"n": 1}, "wait": False},
            {"id": "sub", "type": "subflow", "definition": "replay-child", "input": {"n": 2}},
            _echo("after", "{{ steps.sub.output.output }}"),
        ],
    }


def _typed_subflows(base: str) -> dict[str, Any]:
    return {
        "name": "replay-typed-subflows",
        "steps": [
            {
                "id": "refused",
                "type": "subflow",
                "definition": TYPED_CHILD,
                "input": {"n": "two"},
                "on_failure": "continue",
            },
            {"id": "sub", "type": "subflow", "definition": TYPED_CHILD, "input": {"n": 2}},
            _echo("after", "{{ steps.refused.error_type }} {{ steps.sub.output.output }}"),
        ],
    }


TYPED_CHILD = "replay-typed-child"
"""The child :func:`_resolve_subflow` answers with an ``input_schema`` (an integer ``n``)."""


TEXT_CHILD = "replay-text-child"
"""The child :func:`_resolve_subflow` answers with an ``echo`` of its input's ``note``."""
SECRET_LIKE_TEXT = "a ${secret:API_TOKEN} b $${secret:API_TOKEN} c"
"""Data that looks like a reference and an escaped one (patch ``data-text``)."""


def _data_text(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-data-text",
        "steps": [
            {
                "id": "answer",
                "type": "wait_for_event",
                "event": "text.sent",
                "key": "{{ input.family }}",
                "fields": [{"name": "note", "type": "string"}],
                "timeout": "1m",
            },
            {
                "id": "sub",
                "type": "subflow",
                "definition": TEXT_CHILD,
                "input": {"note": "{{ steps.answer.output.data.note }}"},
            },
            _echo("after", "{{ steps.sub.output.output }}"),
        ],
    }


async def _publish_text(handle: WorkflowHandle[Any, Any], flows: FlowClient) -> None:
    await _until(handle, lambda s: any(w.path == "answer" and w.subscribed for w in s.waiting_events))
    family = str((await handle.describe()).id)
    await flows.publish_event("text.sent", family, {"note": SECRET_LIKE_TEXT}, start_triggers=False)


@activity.defn(name=SUBFLOW_RESOLVE)
async def _resolve_subflow(lookup: SubflowLookup) -> SubflowDefinition:
    """The recorder has no registry: a history holds only the definition the activity answered
    (replay runs no activity); tests/workflows/test_subflow.py resolves against the real store."""
    typed = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    child = load_definition(
        {
            "name": lookup.definition,
            "steps": [
                _echo("work", "{{ input.note }}" if lookup.definition == TEXT_CHILD else "{{ input.n * 2 }}")
            ],
            "output": "{{ steps.work.output }}",
            **({"input_schema": typed} if lookup.definition == TYPED_CHILD else {}),
        }
    )
    return SubflowDefinition(definition=child, content_hash=definition_hash(child))


def _delays(base: str) -> dict[str, Any]:
    return {
        "name": "replay-delays",
        "steps": [
            {"id": "pause", "type": "delay", "duration": "{{ input.pause }}"},
            {"id": "until", "type": "delay", "until": "{{ input.until }}"},
            {
                "id": "hours",
                "type": "delay",
                "business_hours": {
                    "timezone": "Europe/Paris",
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "start": "00:00",
                    "end": "24:00",
                },
            },
        ],
    }


def _approval(base: str) -> dict[str, Any]:
    return {
        "name": "replay-approval",
        "steps": [
            _echo("prep", "ready"),
            {
                "id": "review",
                "type": "approval",
                "approvers": ["alice"],
                "message": "Approve {{ input.amount }}?",
                "fields": ["note"],
                "timeout": "1h",
                "escalation": {
                    "after": "2s",
                    "add_approvers": ["boss"],
                    "steps": [_http("notify", f"{base}/notify", {"text": "waiting"})],
                },
            },
            {"id": "second", "type": "approval", "approvers": ["alice", "bob"], "on_reject": "continue"},
            {
                "id": "third",
                "type": "approval",
                "approvers": ["carol"],
                "timeout": "2s",
                "on_timeout": "approve",
            },
        ],
    }


async def _drive_approval(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, lambda s: any(p.escalations == 1 for p in s.pending_approvals))
    # Refused: recorded by the signal handler (a signal is always in history).
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="mallory"))
    with contextlib.suppress(WorkflowUpdateFailedError):  # refused by the validator: no trace in history
        await handle.execute_update(
            RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="mallory")
        )
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.APPROVE, actor="boss", data={"note": "escalated"}),
    )
    await _until(handle, lambda s: any(p.step_id == "second" for p in s.pending_approvals))
    await handle.signal(RunDefinitionWorkflow.reject, Decision(actor="bob", reason="not now"))


def _people(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-people",
        "steps": [
            {
                "id": "call",
                "type": "human_task",
                "title": "Call {{ input.family }}",
                "description": "no answer to the SMS",
                "candidate_groups": ["coordinators"],
                "fields": [{"name": "reached", "type": "boolean", "required": True}],
                "due": "1h",
                "escalation": {
                    "after": "2s",
                    "add_approvers": ["group:supervisors"],
                    "steps": [_echo("nudge")],
                },
            },
            {
                "id": "sign_off",
                "type": "approval",
                "approvers": ["alice", "group:finance"],
                "fields": ["note"],
            },
        ],
    }


async def _drive_people(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, lambda s: any(p.escalations == 1 for p in s.pending_approvals))
    with contextlib.suppress(WorkflowUpdateFailedError):  # a required field missing: refused, no trace
        await handle.execute_update(
            RunDefinitionWorkflow.decide,
            DecisionRequest(decision=DecisionKind.COMPLETE, actor="sam", groups=["supervisors"]),
        )
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(
            decision=DecisionKind.COMPLETE, actor="sam", groups=["supervisors"], data={"reached": True}
        ),
    )
    await _until(handle, lambda s: any(p.step_id == "sign_off" for p in s.pending_approvals))
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(
            decision=DecisionKind.APPROVE, actor="carol", groups=["finance"], data={"note": "ok"}
        ),
    )


def _order(base: str) -> dict[str, Any]:
    no_retry = {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 1}
    return {
        "name": "replay-compensation",
        "steps": [
            _http(
                "reserve",
                f"{base}/reserve",
                {"sku": "{{ input.sku }}"},
                retry=no_retry,
                compensate=[
                    _http("release", f"{base}/release", {"r": "{{ steps.reserve.output.body.json }}"})
                ],
            ),
            _http(
                "charge",
                f"{base}/charge",
                {"amount": 5},
                retry=no_retry,
                compensate=[_http("refund", f"{base}/refund", {"c": 1})],
            ),
            _http("ship", f"{base}/ship", {"sku": "{{ input.sku }}"}, retry=no_retry),
        ],
    }


def _compensated_order(base: str) -> dict[str, Any]:
    document = _order(base)
    document["name"] = "replay-named-compensated"
    document["steps"][-1]["on_failure"] = "compensate"
    return document


def _long_delay(name: str) -> Callable[[str], dict[str, Any]]:
    def build(base: str) -> dict[str, Any]:
        return {
            "name": name,
            "steps": [
                _http(
                    "reserve",
                    f"{base}/reserve",
                    {"sku": "S"},
                    compensate=[_http("release", f"{base}/release", {"sku": "S"})],
                ),
                {"id": "wait", "type": "delay", "duration": "3d"},
                _http("ship", f"{base}/ship", {"sku": "S"}),
            ],
        }

    return build


def _cancel_in_flight(base: str) -> dict[str, Any]:
    return {
        "name": "replay-cancel-in-flight",
        "steps": [
            _echo(
                "reserve",
                input={"value": "R-1", "sleep_s": 60},
                timeouts={"start_to_close": "2m", "heartbeat": "2s"},
                compensate=[_echo("release", {"reservation": "R-1"})],
            ),
            _echo("ship", "S-1"),
        ],
    }


async def _drive_cancel_in_flight(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, lambda s: s.current_steps == ["reserve"])
    await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="ops", reason="recording"))


async def _in_delay(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, lambda s: s.current_steps == ["wait"])


async def _drive_cancel_signal(handle: WorkflowHandle[Any, Any]) -> None:
    await _in_delay(handle)
    await handle.signal(RunDefinitionWorkflow.cancel, CancelRequest(actor="ops", reason="recording"))


async def _drive_cancel_temporal(handle: WorkflowHandle[Any, Any]) -> None:
    await _in_delay(handle)
    await handle.cancel()


def _single_approval(base: str) -> dict[str, Any]:
    return {
        "name": "replay-messages",
        "steps": [_echo("prep", "ready"), {"id": "review", "type": "approval", "approvers": ["bob"]}],
    }


async def _drive_messages(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, lambda s: bool(s.pending_approvals))
    await handle.signal("approve", {"actor": 5})  # malformed: recorded as refused
    await handle.signal("reject")  # no argument: recorded as refused
    await handle.signal("aprove", {"actor": "bob"})  # unknown name: recorded as refused
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="bob", reason="x" * 2000))  # too large
    await handle.signal("cancel", {"actor": ["ops"]})  # malformed cancel
    await _until(handle, lambda s: len(s.refused_messages) == 4 and len(s.decisions) == 1)
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="bob", reason="fine"))


def _form_data(base: str) -> dict[str, Any]:
    return {
        "name": "replay-form-data",
        "steps": [
            {"id": "review", "type": "approval", "approvers": ["bob"]},
            {"id": "second", "type": "approval", "approvers": ["bob"]},
            _http("notify", f"{base}/notify", {"note": "{{ vars.note | default('none') }}"}),
        ],
    }


async def _drive_form_data(handle: WorkflowHandle[Any, Any]) -> None:
    # Data for approvals that declare no fields: accepted before patch declared-form-fields (and
    # merged into vars), refused after it (recorded for the signal, no trace for the update).
    await _until(handle, lambda s: any(p.step_id == "review" for p in s.pending_approvals))
    await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="bob", data={"note": "by signal"}))
    await _until(handle, lambda s: len(s.decisions) == 1)
    if not (await _status(handle)).decisions[0].accepted:
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="bob", reason="no data"))
    await _until(handle, lambda s: any(p.step_id == "second" for p in s.pending_approvals))
    with contextlib.suppress(WorkflowUpdateFailedError):
        await handle.execute_update(
            RunDefinitionWorkflow.decide,
            DecisionRequest(decision=DecisionKind.APPROVE, actor="bob", data={"note": "by update"}),
        )
    if sum(d.accepted for d in (await _status(handle)).decisions) < 2:
        await handle.signal(RunDefinitionWorkflow.approve, Decision(actor="bob", reason="no data"))


async def _drive_cancel_run(handle: WorkflowHandle[Any, Any]) -> None:
    await _in_delay(handle)
    await handle.execute_update(
        RunDefinitionWorkflow.cancel_run, CancelRequest(actor="ops", reason="recording")
    )
    await handle.cancel()


def _dry_run(base: str) -> dict[str, Any]:
    return {
        "name": "replay-dry-run",
        "steps": [
            _http("check", f"{base}/orders", {"who": "{{ input.who }}"}),
            {"id": "wait", "type": "delay", "duration": "3d"},
            {
                "id": "route",
                "type": "condition",
                "if": "steps.check.output.status_code == 200",
                "then": {"steps": [_echo("ok", "{{ steps.check.output.body.id }}")]},
            },
            _echo("charge", "never", on_failure="continue"),
        ],
    }


def _continued_approval(base: str) -> dict[str, Any]:
    del base
    echo = {"type": "task", "action": "echo"}
    return {
        "name": "replay-continued",
        "limits": {"history_budget": 100},
        "steps": [
            {
                "id": "book",
                **echo,
                "input": {"value": "booked"},
                "compensate": [{"id": "unbook", **echo, "input": {"value": "unbooked"}}],
            },
            {
                "id": "gate",
                "type": "approval",
                "approvers": ["alice"],
                "timeout": "1h",
                "escalation": {
                    "after": "1s",
                    "max_escalations": 20,
                    "add_approvers": ["bob"],
                    "steps": [{"id": "remind", **echo, "input": {"value": "reminder"}}],
                },
            },
            {
                "id": "after",
                **echo,
                "input": {"value": "{{ steps.book.output }} {{ steps.gate.output.actor }}"},
            },
        ],
    }


def _continued_task(base: str) -> dict[str, Any]:
    del base
    echo = {"type": "task", "action": "echo"}
    return {
        "name": "replay-continued-task",
        "limits": {"history_budget": 100},
        "steps": [
            {
                "id": "call",
                "type": "human_task",
                "title": "Call the family",
                "assignee": "coordinator",
                "fields": [{"name": "reached", "type": "boolean", "required": True}],
                "due": "1h",
                "escalation": {
                    "after": "1s",
                    "max_escalations": 20,
                    "add_approvers": ["lead"],
                    "steps": [{"id": "remind", **echo, "input": {"value": "reminder"}}],
                },
            },
            {
                "id": "after",
                **echo,
                "input": {
                    "value": "{{ steps.call.output.completed_by }} {{ steps.call.output.data.reached }}"
                },
            },
        ],
    }


async def _drive_continued_task(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, lambda s: s.continued >= 1 and bool(s.pending_approvals), timeout=120)
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.COMPLETE, actor="lead", data={"reached": True}),
    )


def _task_over_budget(base: str) -> dict[str, Any]:
    definition = _continued_task(base)
    # The task is the last step: the run ends with it (no step boundary to continue as new at).
    definition["steps"] = definition["steps"][:1]
    definition["output"] = {"by": "{{ steps.call.output.completed_by }}"}
    return {**definition, "name": "replay-task-over-budget"}


async def _drive_task_over_budget(handle: WorkflowHandle[Any, Any]) -> None:
    # Recorded with the code before patch continue-as-new-human-tasks: the task waited on in one
    # run past its history budget (reminders growing the history), and is completed there.
    await _until(handle, lambda s: bool(s.pending_approvals))
    deadline = asyncio.get_running_loop().time() + 120
    while (await handle.describe()).raw_description.workflow_execution_info.history_length < 130:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{handle.id}: the history did not pass its budget")
        await asyncio.sleep(0.2)
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.COMPLETE, actor="lead", data={"reached": False}),
    )


def _continued_delay(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-continued-delay",
        "limits": {"history_budget": 100},
        "steps": [
            {"id": "nap", "type": "delay", "duration": "20s"},
            {
                "id": "after",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ steps.nap.output.waited_s }}"},
            },
        ],
    }


async def _drive_continued_delay(handle: WorkflowHandle[Any, Any]) -> None:
    # Refused approvals (nothing is pending) grow the history while the delay waits.
    while (await _status(handle)).continued < 1:
        for _ in range(5):
            await handle.signal("approve", {"actor": "nobody"})
        await asyncio.sleep(0.2)


def _events(base: str) -> dict[str, Any]:
    def wait(step_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": step_id,
            "type": "wait_for_event",
            "event": "family.answered",
            "key": "{{ input.family }}",
            "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"]}],
            **extra,
        }

    return {
        "name": "replay-events",
        "cancel_on": [{"event": "family.withdrawn", "key": "{{ input.family }}"}],
        "steps": [
            wait("answer", timeout="1m"),
            wait("again", timeout="2s", lookback="1h", on_timeout="continue"),
            _echo("book", "booked", compensate=[_echo("unbook", "unbooked")]),
            wait("forever"),
        ],
    }


async def _publish_events(handle: WorkflowHandle[Any, Any], flows: FlowClient) -> None:
    family = str((await handle.describe()).id)

    def subscribed(path: str) -> Callable[[RunStatus], bool]:
        return lambda s: any(w.path == path and w.subscribed for w in s.waiting_events)

    await _until(handle, subscribed("answer"))
    await flows.publish_event("family.answered", family, {"answer": "yes", "iban": "X"}, start_triggers=False)
    await flows.publish_event(
        "family.answered", family, {"answer": "yes"}, event_id="e1", start_triggers=False
    )
    await _until(handle, subscribed("again"))
    await flows.publish_event(
        "family.answered", family, {"answer": "no"}, event_id="e1", start_triggers=False
    )
    await _until(handle, subscribed("forever"))
    await flows.publish_event("family.withdrawn", family, event_id="w1", start_triggers=False)


def _branch_loop(base: str) -> dict[str, Any]:
    del base
    echo = {"type": "task", "action": "echo"}
    # A loop in the branch of the last top-level step: the run ends with it (no top-level step
    # boundary after it to continue as new at).
    return {
        "name": "replay-branch-loop",
        "limits": {"history_budget": 100, "max_step_executions": 1000},
        "steps": [
            {"id": "init", "type": "set", "vars": {"n": 0}},
            {
                "id": "route",
                "type": "condition",
                "if": "vars.n == 0",
                "then": {
                    "steps": [
                        {"id": "work", **echo, "input": {"value": "{{ vars.n }}"}, "max_visits": 30},
                        {"id": "bump", "type": "set", "vars": {"n": "{{ vars.n + 1 }}"}, "max_visits": 30},
                        {
                            "id": "again",
                            "type": "condition",
                            "if": "vars.n < 30",
                            "then": {"goto": "work"},
                            "max_visits": 30,
                        },
                    ]
                },
            },
        ],
        "output": {"n": "{{ vars.n }}", "last": "{{ steps.work.output }}"},
    }


def _parallel_loops(base: str) -> dict[str, Any]:
    del base
    # Two loops in the branches of the last top-level step, and a branch that ends at once.
    return {
        "name": "replay-parallel-loops",
        "limits": {"history_budget": 100, "max_step_executions": 1000},
        "steps": [
            {"id": "init", "type": "set", "vars": {"a": 0, "b": 0}},
            {
                "id": "fan",
                "type": "parallel",
                "branches": [
                    {"id": "left", "steps": counting_loop("l", "a", 30)},
                    {"id": "right", "steps": counting_loop("r", "b", 20)},
                    {"id": "once", "steps": [_echo("solo", "solo")]},
                ],
            },
        ],
        "output": {"a": "{{ vars.a }}", "b": "{{ vars.b }}", "fan": "{{ steps.fan.output }}"},
    }


def _parallel_any_failed(base: str) -> dict[str, Any]:
    document = _parallel_loops(base)
    document["name"] = "replay-parallel-any-failed"
    fan = document["steps"][1]
    # A 'join: any' step: a branch fails at once, the 30-turn loop goes on and wins.
    fan["join"] = "any"
    fan["branches"][1:] = [
        {
            "id": "once",
            "steps": [
                _echo("stock", "none"),
                {"id": "no_stock", "type": "fail", "message": "no stock", "error_type": "OutOfStock"},
            ],
        }
    ]
    document["output"] = {"a": "{{ vars.a }}", "fan": "{{ steps.fan.output.winner }}"}
    return document


def _parallel_delay(base: str) -> dict[str, Any]:
    document = _parallel_loops(base)
    document["name"] = "replay-parallel-delay"
    branches = document["steps"][1]["branches"]
    # The second branch sleeps 3 s between its turns (3 of them): carried while it sleeps.
    right = branches[1]["steps"]
    right.insert(2, {"id": "nap", "type": "delay", "duration": "3s", "max_visits": 3})
    right[3]["if"] = "vars.b < 3"
    for step in right:
        if "max_visits" in step:
            step["max_visits"] = 3
    document["output"]["nap"] = "{{ steps.nap.output }}"
    return document


def _parallel_approval(base: str) -> dict[str, Any]:
    del base
    # A 30-turn loop in one branch, an approval waiting in the other.
    loop = [*counting_loop("l", "a", 30), {"id": "l_total", "type": "set", "vars": {"l_n": "{{ vars.a }}"}}]
    return {
        "name": "replay-parallel-approval",
        "limits": {"history_budget": 100, "max_step_executions": 1000},
        "steps": [
            {"id": "init", "type": "set", "vars": {"a": 0}},
            {
                "id": "fan",
                "type": "parallel",
                "branches": [
                    {"id": "loop", "steps": loop},
                    {
                        "id": "gate",
                        "steps": [
                            _echo("ask", "asked"),
                            {"id": "ok", "type": "approval", "approvers": ["alice"], "timeout": "10m"},
                        ],
                    },
                ],
            },
        ],
        "output": {"n": "{{ vars.l_n }}", "decision": "{{ steps.ok.output.decision }}"},
    }


async def _approve_after_loop(handle: WorkflowHandle[Any, Any]) -> None:
    """Approves once the loop is done and the approval pending (in the run the chain ends in)."""
    await _until(handle, lambda s: s.vars.get("l_n") == 30 and bool(s.pending_approvals), timeout=120)
    await handle.execute_update(
        RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="alice")
    )


def _parallel_nested_approval(base: str) -> dict[str, Any]:
    document = _parallel_approval(base)
    # The same 30-turn loop; the approval waits inside a condition of the other branch.
    document["name"] = "replay-parallel-nested-approval"
    document["steps"][1]["branches"][1]["steps"] = [
        _echo("ask", "asked"),
        {
            "id": "check",
            "type": "condition",
            "if": "vars.a < 5",
            "then": {
                "steps": [
                    {"id": "ok", "type": "approval", "approvers": ["alice"], "timeout": "10m"},
                    _echo("shipped", "shipped"),
                ]
            },
            "else": {"steps": [_echo("skipped", "skipped")]},
        },
    ]
    return document


def _parallel_inner_approval(base: str) -> dict[str, Any]:
    document = _parallel_approval(base)
    # The same 30-turn loop; the approval waits in a branch of a parallel step of the other branch.
    document["name"] = "replay-parallel-inner-approval"
    document["steps"][1]["branches"][1]["steps"] = [
        _echo("ask", "asked"),
        {
            "id": "inner",
            "type": "parallel",
            "branches": [
                {
                    "id": "person",
                    "steps": [
                        {"id": "ok", "type": "approval", "approvers": ["alice"], "timeout": "10m"},
                        _echo("shipped", "shipped"),
                    ],
                },
                {"id": "note", "steps": [_echo("noted", "noted")]},
            ],
        },
    ]
    return document


def _parallel_event(base: str) -> dict[str, Any]:
    document = _parallel_approval(base)
    # The same 30-turn loop; the other branch waits for an event instead of a person.
    document["name"] = "replay-parallel-event"
    document["steps"][1]["branches"][1] = {
        "id": "listen",
        "steps": [
            _echo("ask", "asked"),
            {
                "id": "answer",
                "type": "wait_for_event",
                "event": "family.answered",
                "key": "{{ input.family }}",
                "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"]}],
                "timeout": "10m",
            },
        ],
    }
    document["output"] = {"n": "{{ vars.l_n }}", "event": "{{ steps.answer.output.event_id }}"}
    return document


async def _publish_after_loop(handle: WorkflowHandle[Any, Any], flows: FlowClient) -> None:
    """Publishes the event once the loop is done and the wait subscribed (in the run the chain ends in)."""
    family = str((await handle.describe()).id)
    await _until(
        handle,
        lambda s: s.vars.get("l_n") == 30 and any(w.subscribed for w in s.waiting_events),
        timeout=120,
    )
    await flows.publish_event(
        "family.answered", family, {"answer": "yes"}, event_id="pe1", start_triggers=False
    )


@activity.defn(name=DEAD_LETTER_PARK)
async def _record_dead_letter(record: DeadLetterRecord) -> int:
    """The recorder has no store: a history holds only the row id the activity answered (replay
    runs no activity); tests/workflows/test_continue_as_new.py parks against the real store."""
    del record
    return 1


@activity.defn(name=DEAD_LETTER_RESOLVE)
async def _resolve_dead_letter(resolution: DeadLetterResolution) -> None:
    del resolution


def _parallel_park(base: str) -> dict[str, Any]:
    document = _parallel_approval(base)
    # The same 30-turn loop; the other branch's charge fails and parks on a dead letter.
    document["name"] = "replay-parallel-park"
    document["steps"][1]["branches"][1] = {
        "id": "pay",
        "steps": [
            _echo("ask", "asked"),
            _echo(
                "charge",
                input={"value": "paid", "fail": "Declined"},
                retry={"maximum_attempts": 1},
                on_failure="dead_letter",
                park_timeout="10m",
            ),
        ],
    }
    document["output"] = {"n": "{{ vars.l_n }}", "charge": "{{ steps.charge.output }}"}
    return document


async def _redrive_after_loop(handle: WorkflowHandle[Any, Any]) -> None:
    """Redrives the charge (without the failure) once the loop is done and the charge parked."""
    await _until(handle, lambda s: s.vars.get("l_n") == 30 and bool(s.parked), timeout=120)
    await handle.execute_update(
        RunDefinitionWorkflow.resolve_dead_letter,
        DeadLetterDecision(action=DeadLetterAction.REDRIVE, actor="ops", input={"value": "paid"}),
    )


def _redrive_text(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-redrive-text",
        "steps": [
            _echo(
                "charge",
                input={"value": "{{ input.note }}", "fail": "Declined"},
                retry={"maximum_attempts": 1},
                on_failure="dead_letter",
                park_timeout="10m",
            ),
        ],
        "output": {"charge": "{{ steps.charge.output }}"},
    }


async def _redrive_as_shown(handle: WorkflowHandle[Any, Any]) -> None:
    """Redrives the charge without its failure, its value as the dead letter shows it (escaped)."""
    await _until(handle, lambda s: bool(s.parked))
    await handle.execute_update(
        RunDefinitionWorkflow.resolve_dead_letter,
        DeadLetterDecision(
            action=DeadLetterAction.REDRIVE, actor="ops", input={"value": make_inert(SECRET_LIKE_TEXT)}
        ),
    )


def _decision_text(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-decision-text",
        "steps": [
            {"id": "review", "type": "approval", "approvers": ["alice"], "timeout": "1h"},
            {"id": "call", "type": "human_task", "assignee": "alice", "title": "Call"},
            _echo(
                "after",
                {"reason": "{{ steps.review.output.reason }}", "comment": "{{ steps.call.output.comment }}"},
            ),
        ],
    }


async def _decide_with_text(handle: WorkflowHandle[Any, Any]) -> None:
    """Approves, then completes the task, each with text that looks like a reference."""
    await _until(handle, lambda s: any(p.step_id == "review" for p in s.pending_approvals))
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", reason=SECRET_LIKE_TEXT),
    )
    await _until(handle, lambda s: any(p.step_id == "call" for p in s.pending_approvals))
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.COMPLETE, actor="alice", reason=SECRET_LIKE_TEXT),
    )


def _template_sizes(base: str) -> dict[str, Any]:
    del base
    squaring = (
        "{% set ns = namespace(a=10**100) %}{% for i in range(22) %}{% set ns.a = ns.a * ns.a %}"
        "{% endfor %}{{ ns.a % 7 }}"
    )
    return {
        "name": "replay-template-sizes",
        "steps": [
            _echo("before", "ok"),
            {"id": "boom", "type": "set", "vars": {"x": squaring}},
        ],
    }


def _template_arguments(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-template-arguments",
        "steps": [
            _echo("before", "ok"),
            {
                "id": "pick",
                "type": "set",
                "vars": {"x": "{{ input.a | select('in', input.b) | list | length }}"},
            },
            _echo("after", "ok"),
        ],
    }


def _template_work(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-template-work",
        "steps": [
            _echo("before", "ok"),
            {
                "id": "pad",
                "type": "set",
                "vars": {"x": "{{ range(25) | map('center', 100000) | list | length }}"},
            },
            _echo("after", "ok"),
        ],
    }


def _template_work_task(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-template-work-task",
        "steps": [
            {"id": "init", "type": "set", "vars": {"big": "{{ range(10000) | list }}", "i": 0}},
            {
                "id": "s",
                "type": "set",
                "max_visits": 20,
                "vars": {
                    "x": "{{ [[vars.big] * 10] * 10 == [[vars.big] * 10] * 10 }}",
                    "i": "{{ vars.i + 1 }}",
                },
            },
            {"id": "c", "type": "condition", "max_visits": 20, "if": "vars.i < 12", "then": {"goto": "s"}},
            _echo("after", "ok"),
        ],
    }


RUN_WORK_TURNS = 4200
"""Turns of :func:`_run_work_budget`'s loop: 21,000 steps, past what a run's work budget holds."""


def _run_work_budget(base: str) -> dict[str, Any]:
    del base
    turns = RUN_WORK_TURNS
    return {
        "name": "replay-run-work-budget",
        "limits": {"max_step_executions": 5 * turns + 10},
        "steps": [
            {"id": "init", "type": "set", "vars": {"i": 0}},
            {"id": "bump", "type": "set", "vars": {"i": "{{ vars.i + 1 }}"}, "max_visits": turns},
            *(
                {"id": f"s{k}", "type": "set", "vars": {f"v{k}": "{{ vars.i }}"}, "max_visits": turns}
                for k in range(3)
            ),
            {
                "id": "again",
                "type": "condition",
                "if": f"vars.i < {turns}",
                "then": {"goto": "bump"},
                "max_visits": turns,
            },
            {"id": "done", "type": "succeed", "output": {"turns": "{{ vars.i }}"}},
        ],
    }


TOKEN_HEAVY_TEMPLATE = "{{ input.a }}x" * 1700
"""A template of 10,200 tokens (six a repeat), past ``MAX_DEFINITION_TEMPLATE_TOKENS``."""


def _template_tokens(base: str) -> dict[str, Any]:
    del base
    return {
        "name": "replay-template-tokens",
        "steps": [{"id": "long", "type": "set", "vars": {"x": TOKEN_HEAVY_TEMPLATE}}, _echo("after", "ok")],
    }


def _foreach_loops(base: str) -> dict[str, Any]:
    del base
    echo = {"type": "task", "action": "echo"}
    tick = "{{ (steps.tick.output if steps.tick is defined else steps.seed.output) + 1 }}"
    # 6 items, 2 at a time, each looping 5 turns (its counter in its own steps).
    return {
        "name": "replay-foreach-loops",
        "limits": {"history_budget": 100, "max_step_executions": 1000},
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": "range(6) | list",
                "concurrency": 2,
                "output": "{{ item }}:{{ steps.tick.output }}",
                "steps": [
                    {"id": "seed", **echo, "input": {"value": 0}},
                    {"id": "tick", **echo, "input": {"value": tick}, "max_visits": 5},
                    {
                        "id": "more",
                        "type": "condition",
                        "if": "steps.tick.output < 5",
                        "then": {"goto": "tick"},
                        "max_visits": 5,
                    },
                ],
            },
        ],
        "output": {"each": "{{ steps.each.output }}"},
    }


def _branch_waits(base: str) -> dict[str, Any]:
    del base
    echo = {"type": "task", "action": "echo"}
    return {
        "name": "replay-branch-waits",
        "limits": {"history_budget": 100, "max_step_executions": 1000},
        "steps": [
            {"id": "init", "type": "set", "vars": {"n": 0}},
            {
                "id": "route",
                "type": "condition",
                "if": "vars.n == 0",
                "then": {
                    "steps": [
                        {
                            "id": "work",
                            **echo,
                            "input": {"value": "{{ vars.n }}"},
                            "max_visits": 30,
                            "compensate": [{"id": "undo", **echo, "input": {"value": "undo"}}],
                        },
                        {"id": "bump", "type": "set", "vars": {"n": "{{ vars.n + 1 }}"}, "max_visits": 30},
                        {
                            "id": "again",
                            "type": "condition",
                            "if": "vars.n < 25",
                            "then": {"goto": "work"},
                            "max_visits": 30,
                        },
                        {"id": "nap", "type": "delay", "duration": "2s"},
                        {
                            "id": "gate",
                            "type": "approval",
                            "approvers": ["alice"],
                            "timeout": "1h",
                            "escalation": {
                                "after": "1s",
                                "max_escalations": 3,
                                "add_approvers": ["bob"],
                                "steps": [{"id": "remind", **echo, "input": {"value": "r"}}],
                            },
                        },
                        {
                            "id": "call",
                            "type": "human_task",
                            "title": "Call",
                            "assignee": "coordinator",
                            "fields": [{"name": "reached", "type": "boolean", "required": True}],
                            "due": "1h",
                        },
                        {
                            "id": "answer",
                            "type": "wait_for_event",
                            "event": "family.answered",
                            "key": "{{ input.family }}",
                            "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"]}],
                            "timeout": "5m",
                        },
                        {
                            "id": "pick",
                            "type": "switch",
                            "cases": [
                                {
                                    "when": "true",
                                    "then": {
                                        "steps": [
                                            {"id": "nap2", "type": "delay", "duration": "1s"},
                                            {
                                                "id": "last",
                                                **echo,
                                                "input": {"value": "{{ steps.answer.output.event_id }}"},
                                            },
                                        ]
                                    },
                                }
                            ],
                        },
                        {"id": "bad", "type": "fail", "message": "end"},
                    ]
                },
            },
        ],
    }


async def _publish_branch_waits(handle: WorkflowHandle[Any, Any], flows: FlowClient) -> None:
    family = str((await handle.describe()).id)
    await _until(handle, lambda s: any(a.path == "gate" for a in s.pending_approvals), timeout=120)
    await asyncio.sleep(2.5)
    await handle.execute_update(
        RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="bob")
    )
    await _until(handle, lambda s: any(a.path == "call" for a in s.pending_approvals), timeout=60)
    await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.COMPLETE, actor="coordinator", data={"reached": True}),
    )
    await _until(handle, lambda s: any(w.subscribed for w in s.waiting_events), timeout=60)
    await flows.publish_event(
        "family.answered", family, {"answer": "yes"}, event_id="bw1", start_triggers=False
    )


def _event_wait_budget(base: str) -> dict[str, Any]:
    del base
    # One step: the run ends with the wait (no step boundary to continue as new at).
    return {
        "name": "replay-event-wait-budget",
        "limits": {"history_budget": 100},
        "steps": [
            {
                "id": "answer",
                "type": "wait_for_event",
                "event": "family.answered",
                "key": "{{ input.family }}",
                "fields": [{"name": "answer", "type": "enum", "values": ["yes", "no"]}],
                "timeout": "5m",
            }
        ],
        "output": {"event": "{{ steps.answer.output.event_id }}"},
    }


async def _noise(handle: WorkflowHandle[Any, Any]) -> None:
    """Refused approvals (nothing is pending): four events each, growing the history of a wait."""
    for _ in range(5):
        await handle.signal("approve", {"actor": "nobody"})
    await asyncio.sleep(0.2)


async def _publish_over_budget(handle: WorkflowHandle[Any, Any], flows: FlowClient) -> None:
    # Recorded with the code before patch continue-as-new-event-waits: the wait stays in one run
    # past its budget, and the event is taken there.
    family = str((await handle.describe()).id)
    await _until(handle, lambda s: any(w.subscribed for w in s.waiting_events))
    while (await handle.describe()).raw_description.workflow_execution_info.history_length < 130:
        await _noise(handle)
    await flows.publish_event(
        "family.answered", family, {"answer": "no"}, event_id="b1", start_triggers=False
    )


async def _publish_continued(handle: WorkflowHandle[Any, Any], flows: FlowClient) -> None:
    family = str((await handle.describe()).id)
    await _until(handle, lambda s: any(w.subscribed for w in s.waiting_events))
    while (await _status(handle)).continued < 1:
        await _noise(handle)
    await _until(handle, lambda s: any(w.subscribed for w in s.waiting_events))
    await flows.publish_event(
        "family.answered", family, {"answer": "yes"}, event_id="c1", start_triggers=False
    )


async def _drive_continued(handle: WorkflowHandle[Any, Any]) -> None:
    await _until(handle, lambda s: s.continued >= 1 and bool(s.pending_approvals), timeout=120)
    await handle.execute_update(
        RunDefinitionWorkflow.decide, DecisionRequest(decision=DecisionKind.APPROVE, actor="bob")
    )


def scenarios() -> list[Scenario]:
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    return [
        Scenario(
            "sequential_kinds",
            "task (echo, http), set, condition, switch, when, retries, on_failure "
            "continue and goto, a goto loop, succeed",
            _sequential_kinds,
            {"who": "ada", "amount": 500},
        ),
        Scenario(
            "concurrent_kinds",
            "parallel all/any/first (the loser's activity cancelled), foreach with "
            "concurrency 2, a duration delay",
            _concurrent_kinds,
            {"items": [1, 2, 3, 4]},
        ),
        Scenario(
            "delays",
            "delay by templated duration, until a timestamp, and business hours (open)",
            _delays,
            {"pause": "1s", "until": soon},
        ),
        Scenario(
            "approval",
            "approval escalated after 2s (notify, approver added), refused signal and update, "
            "approved by update; rejected by signal (continue); timed out (approve)",
            _approval,
            {"amount": 42},
            _drive_approval,
        ),
        Scenario(
            "compensation",
            "reserve -> charge -> ship fails: refund and release in reverse order, run fails",
            _order,
            {"sku": "X"},
        ),
        Scenario(
            "cancel_signal",
            "the cancel signal during a 3-day delay: compensation, run cancelled",
            _long_delay("replay-cancel-signal"),
            {},
            _drive_cancel_signal,
        ),
        Scenario(
            "cancel_temporal",
            "Temporal cancellation during a 3-day delay: compensation, run cancelled",
            _long_delay("replay-cancel-temporal"),
            {},
            _drive_cancel_temporal,
        ),
        Scenario(
            "messages",
            "malformed, unknown and oversized signals recorded as refused (bounded-decisions patch), "
            "then approved by signal",
            _single_approval,
            {},
            _drive_messages,
        ),
        Scenario(
            "cancel_run",
            "the cancel_run update then Temporal cancellation during a 3-day delay: compensation, "
            "run closed as Canceled",
            _long_delay("replay-cancel-run"),
            {},
            _drive_cancel_run,
        ),
        Scenario(
            "form_data",
            "form data sent to approvals that declare no fields, by signal and by update: accepted "
            "and merged before patch declared-form-fields, refused after it",
            _form_data,
            {},
            _drive_form_data,
        ),
        Scenario(
            "continued_approval",
            "the last run of a chain that continued as new (history_budget 100) while an approval "
            "with a reminder every second waited: it resumes the approval (deadline, escalations, "
            "the compensation of the first run's step), approved by update, completes",
            _continued_approval,
            {},
            _drive_continued,
        ),
        Scenario(
            "continued_delay",
            "the last run of a chain that continued as new (history_budget 100, refused approve "
            "signals growing the history) while a 20s delay waited: it waits for the time that was "
            "left (patch continue-as-new-waits), then completes",
            _continued_delay,
            {},
            _drive_continued_delay,
        ),
        Scenario(
            "continued_human_task",
            "the last run of a chain that continued as new (history_budget 100) while a human task "
            "with a reminder every second waited (patch continue-as-new-human-tasks): it resumes the "
            "task (due time, escalations, the added assignee), completed by update, completes",
            _continued_task,
            {},
            _drive_continued_task,
        ),
        Scenario(
            "task_over_budget",
            "recorded before patch continue-as-new-human-tasks: a human task with a reminder every "
            "second waited in one run past its history_budget of 100 events (no continue-as-new), "
            "completed by update at about 130 events; replays without continuing",
            _task_over_budget,
            {},
            _drive_task_over_budget,
        ),
        Scenario(
            "branch_loop_over_budget",
            "recorded before patch continue-as-new-in-branches: a 30-iteration loop inside a "
            "top-level condition's branch ran in one run past its history_budget of 100 events "
            "(about 190); replays without continuing",
            _branch_loop,
            {},
        ),
        Scenario(
            "branch_waits_over_budget",
            "recorded with the engine before continue-as-new reached waits and branches (af644c4): "
            "in a top-level condition's branch, a 25-iteration loop with compensations, a delay, an "
            "escalated approval, a human task, a wait_for_event and a nested switch's delay, all in "
            "one run past its history_budget of 100 events (about 400), then a fail: the "
            "compensations run; replays without continuing",
            _branch_waits,
            {},
            publish=_publish_branch_waits,
        ),
        Scenario(
            "continued_in_branch",
            "the last run of a chain that continued as new (history_budget 100) between two steps "
            "of a loop inside a top-level condition's branch (patch continue-as-new-in-branches): "
            "it goes on in the branch, without choosing it again, and completes",
            _branch_loop,
            {},
        ),
        Scenario(
            "parallel_loops_over_budget",
            "recorded before patch continue-as-new-in-parallel, at generation 2: loops of 30 and 20 "
            "turns in two branches of a top-level parallel step ran in one run past its "
            "history_budget of 100 events (about 330); replays without continuing",
            _parallel_loops,
            {},
            options=RunOptions(engine_level=2),
        ),
        Scenario(
            "continued_in_parallel",
            "the last run of a chain (generation 3) that continued as new (history_budget 100) "
            "inside a top-level parallel step whose two branches loop (patch "
            "continue-as-new-in-parallel): it goes on with each branch where it stood, the finished "
            "branch's output carried, and completes",
            _parallel_loops,
            {},
            options=RunOptions(engine_level=3),
        ),
        Scenario(
            "continued_in_parallel_delay",
            "the last run of a chain (generation 3) that continued as new (history_budget 100) "
            "inside a top-level parallel step while one branch slept in a 3 s delay between its "
            "turns and the other looped (patch continue-as-new-in-parallel): the carried delay's "
            "timer is for the time left, and the run completes",
            _parallel_delay,
            {},
            options=RunOptions(engine_level=3),
        ),
        Scenario(
            "parallel_any_failed_over_budget",
            "a run of generation 5 (before patch continue-as-new-failed-branches): in a top-level "
            "'join: any' parallel step a branch fails at once while a 30-turn loop goes on past the "
            "history_budget of 100 events, all in one run (the failed branch kept the loop from "
            "stopping); the loop wins; replays without continuing",
            _parallel_any_failed,
            {},
            options=RunOptions(engine_level=5),
        ),
        Scenario(
            "continued_after_failed_branch",
            "the last run of a chain (generation 6) that continued as new (history_budget 100) "
            "inside a top-level 'join: any' parallel step after one of its branches failed (patch "
            "continue-as-new-failed-branches): the failed branch, carried as failed, fails again at "
            "once, the loop goes on and wins, and the run completes",
            _parallel_any_failed,
            {},
            options=RunOptions(engine_level=6),
        ),
        Scenario(
            "parallel_approval_over_budget",
            "recorded before patch continue-as-new-lane-people, at generation 3: an approval waits "
            "in one branch of a top-level parallel step while the other loops 30 turns past the "
            "history_budget of 100 events, all in one run (the waiting approval kept the branches "
            "from stopping); approved after the loop; replays without continuing",
            _parallel_approval,
            {},
            drive=_approve_after_loop,
            options=RunOptions(engine_level=3),
        ),
        Scenario(
            "continued_in_parallel_approval",
            "the last run of a chain (generation 4) that continued as new (history_budget 100) "
            "inside a top-level parallel step while an approval waited in one branch and the other "
            "looped (patch continue-as-new-lane-people): the approval is pending from the run's "
            "start with its carried view, approved after the loop, and the run completes",
            _parallel_approval,
            {},
            drive=_approve_after_loop,
            options=RunOptions(engine_level=4),
        ),
        Scenario(
            "parallel_nested_approval_over_budget",
            "a run of generation 5 (before patch continue-as-new-lane-branches): an approval waits "
            "inside a condition's branch in one branch of a top-level parallel step while the other "
            "loops 30 turns past the history_budget of 100 events, all in one run (the nested "
            "approval kept the branches from stopping); approved after the loop; replays without "
            "continuing",
            _parallel_nested_approval,
            {},
            drive=_approve_after_loop,
            options=RunOptions(engine_level=5),
        ),
        Scenario(
            "continued_in_parallel_nested_approval",
            "the last run of a chain (generation 6) that continued as new (history_budget 100) "
            "inside a top-level parallel step while an approval waited inside a condition's branch "
            "in one branch and the other looped (patch continue-as-new-lane-branches): the next run "
            "goes back into that branch without evaluating the condition again (false by then), the "
            "approval pending from its start, approved after the loop, and the run completes",
            _parallel_nested_approval,
            {},
            drive=_approve_after_loop,
            options=RunOptions(engine_level=6),
        ),
        Scenario(
            "parallel_inner_approval_over_budget",
            "a run of generation 6 (before patch continue-as-new-lane-nested): an approval waits in "
            "a branch of a parallel step inside one branch of a top-level parallel step while the "
            "other loops 30 turns past the history_budget of 100 events, all in one run (the nested "
            "approval kept the branches from stopping); approved after the loop; replays without "
            "continuing",
            _parallel_inner_approval,
            {},
            drive=_approve_after_loop,
            options=RunOptions(engine_level=6),
        ),
        Scenario(
            "continued_in_parallel_inner_approval",
            "the last run of a chain (generation 7) that continued as new (history_budget 100) "
            "inside a top-level parallel step while an approval waited in a branch of a parallel "
            "step inside one of its branches and the other looped (patch "
            "continue-as-new-lane-nested): the next run goes back into the nested step, the "
            "approval pending from its start, approved after the loop, and the run completes",
            _parallel_inner_approval,
            {},
            drive=_approve_after_loop,
            options=RunOptions(engine_level=7),
        ),
        Scenario(
            "parallel_event_over_budget",
            "recorded before patch continue-as-new-lane-events, at generation 4: a wait_for_event "
            "waits in one branch of a top-level parallel step while the other loops 30 turns past "
            "the history_budget of 100 events, all in one run (the waiting event kept the branches "
            "from stopping); the event is published after the loop; replays without continuing",
            _parallel_event,
            {},
            publish=_publish_after_loop,
            options=RunOptions(engine_level=4),
        ),
        Scenario(
            "continued_in_parallel_event",
            "the last run of a chain (generation 5) that continued as new (history_budget 100) "
            "inside a top-level parallel step while a wait_for_event waited in one branch and the "
            "other looped (patch continue-as-new-lane-events): the wait is carried with its key, "
            "window and deadline, subscribes again, takes the event published after the loop, and "
            "the run completes",
            _parallel_event,
            {},
            publish=_publish_after_loop,
            options=RunOptions(engine_level=5),
        ),
        Scenario(
            "parallel_park_over_budget",
            "recorded before patch continue-as-new-lane-parks, at generation 4: a task parks on a "
            "dead letter in one branch of a top-level parallel step while the other loops 30 turns "
            "past the history_budget of 100 events, all in one run (the park kept the branches "
            "from stopping); redriven after the loop; replays without continuing",
            _parallel_park,
            {},
            drive=_redrive_after_loop,
            options=RunOptions(engine_level=4),
        ),
        Scenario(
            "continued_in_parallel_park",
            "the last run of a chain (generation 5) that continued as new (history_budget 100) "
            "inside a top-level parallel step while a task was parked on a dead letter in one "
            "branch and the other looped (patch continue-as-new-lane-parks): the park is shown "
            "from the run's start with its carried row, redriven after the loop, and the run "
            "completes",
            _parallel_park,
            {},
            drive=_redrive_after_loop,
            options=RunOptions(engine_level=5),
        ),
        Scenario(
            "foreach_loops_over_budget",
            "recorded before patch continue-as-new-in-parallel, at generation 2: a foreach of 6 "
            "items, 2 at a time, each looping 5 turns, ran in one run past its history_budget of "
            "100 events (about 250); replays without continuing",
            _foreach_loops,
            {},
            options=RunOptions(engine_level=2),
        ),
        Scenario(
            "continued_in_foreach",
            "the last run of a chain (generation 3) that continued as new (history_budget 100) "
            "inside a top-level foreach whose items loop (patch continue-as-new-in-parallel): it "
            "goes on with the same items, each done, where it stood or not started, and completes",
            _foreach_loops,
            {},
            options=RunOptions(engine_level=3),
        ),
        Scenario(
            "people",
            "a human task for a candidate group, escalated after 2s (reminder, another group added), "
            "completed by a member of the added group; then an approval decided by a group member; "
            "WfaAssignees kept (publish_assignees)",
            _people,
            {"family": "the Nguyens"},
            _drive_people,
            RunOptions(publish_assignees=True),
        ),
        Scenario(
            "cancel_in_flight",
            "the cancel signal while a task with a compensation is in flight: the activity is "
            "cancelled, its compensation runs (patch compensate-in-flight-on-cancel), run cancelled",
            _cancel_in_flight,
            {},
            _drive_cancel_in_flight,
        ),
        Scenario(
            "named_compensated",
            "started under the definition's name (dynamic workflow); ship fails with on_failure "
            "compensate: refund and release, the execution closes as failed with type RunCompensated "
            "(patch compensated-closes-failed)",
            _compensated_order,
            {"sku": "X"},
            named=True,
        ),
        Scenario(
            "named_cancel_signal",
            "started under the definition's name; the cancel signal during a 3-day delay asks Temporal "
            "to cancel the run through an activity (patch cancel-signal-canceled): compensation, closed "
            "as Canceled",
            _long_delay("replay-named-cancel-signal"),
            {},
            _drive_cancel_signal,
            named=True,
        ),
        Scenario(
            "dry_run",
            "a dry run: no activity, a canned output steering a condition, a canned failure handled by"
            " on_failure continue, a delay that does not wait",
            _dry_run,
            {"who": "ada"},
            options={
                "dry_run": True,
                "canned_outputs": {
                    "check": {"status_code": 200, "body": {"id": "o-1"}},
                    "charge": {"$error": {"type": "HttpClientError", "message": "402"}},
                },
            },
        ),
        Scenario(
            "foreach_fan_out",
            "a foreach of 7 items over fan_out_above 3 (patch foreach-children): 3 child workflows of"
            " at most 3 items, 2 items in flight across them, outputs joined in item order",
            _fan_out,
            {"label": "x", "items": [1, 2, 3, 4, 5, 6, 7]},
        ),
        Scenario(
            "foreach_fan_out_history_guard_children",
            "foreach_fan_out at interpreter generation 19 (patch history-guard-children): the run"
            " holds room in its history for each child's result, and each child's input carries it"
            " (RunOptions.result_limit)",
            _fan_out,
            {"label": "x", "items": [1, 2, 3, 4, 5, 6, 7]},
            options={"engine_level": 19},
        ),
        Scenario(
            "foreach_fan_out_slice_results",
            "foreach_fan_out at interpreter generation 25 (patch slice-results-output): each child"
            " returns its output alone, without its step records, and no marker",
            _fan_out,
            {"label": "x", "items": [1, 2, 3, 4, 5, 6, 7]},
            options={"engine_level": 25},
            child="loop/batch-1",
        ),
        Scenario(
            "foreach_fan_out_slice_results_asked",
            "foreach_fan_out started by a raw client (generation 0) on a build of generation 25: each"
            " child asks patch slice-results-output (a marker) and returns its output alone",
            _fan_out,
            {"label": "x", "items": [1, 2, 3, 4, 5, 6, 7]},
            child="loop/batch-1",
        ),
        Scenario(
            "subflows_history_guard",
            "a detached subflow, then a waited-for one, at interpreter generation 20 (patches"
            " history-guard-subflows and child-send-pacing): the run holds room for each resolved"
            " definition (the resolving activity bounded by SubflowLookup.max_bytes) and for the"
            " waited-for child's result, and counts each child's definition into what it sends",
            _subflows,
            {},
            options={"engine_level": 20},
        ),
        Scenario(
            "subflows_input_schema",
            "two subflows of a child declaring an input_schema, at interpreter generation 27 (patch"
            " subflow-input-schema): the first's input refused by a local activity (InvalidRunInput,"
            " on_failure continue, no child started), the second's accepted",
            _typed_subflows,
            {},
            options={"engine_level": 27},
        ),
        Scenario(
            "subflows_input_schema_asked",
            "subflows_input_schema started by a raw client (generation 0): each subflow asks patch"
            " subflow-input-schema (a marker) before its check",
            _typed_subflows,
            {},
        ),
        Scenario(
            "data_text",
            "an event whose data holds text like a secret reference, then a subflow given it and an"
            " echo of the subflow's output, at interpreter generation 28 (patch data-text): each"
            " crossing keeps the text (sealed, not escaped again)",
            _data_text,
            {},
            publish=_publish_text,
            options={"engine_level": 28},
            child="sub",
        ),
        Scenario(
            "data_text_before",
            "data_text at generation 27 (patch data-text is never asked): each crossing escapes the"
            " text again, as runs of that generation do",
            _data_text,
            {},
            publish=_publish_text,
            options={"engine_level": 27},
            child="sub",
        ),
        Scenario(
            "redrive_keeps_recorded",
            "a task whose input holds data like a secret reference parks on a dead letter and is"
            " redriven with that value as the row shows it, at interpreter generation 29 (patch"
            " redrive-keeps-recorded): the redriven input keeps the recorded value, not escaped"
            " again",
            _redrive_text,
            {"note": SECRET_LIKE_TEXT},
            drive=_redrive_as_shown,
            options={"engine_level": 29},
        ),
        Scenario(
            "template_sizes",
            "a set step squaring a number in a loop (recorded at generation 0: patch"
            " template-sizes asked, a marker): the step fails with 'product result is too large',"
            " the run fails",
            _template_sizes,
            {},
        ),
        Scenario(
            "template_tokens",
            "a definition whose templates hold 10,200 tokens, started unchecked by a raw client at"
            " generation 0 (patch template-tokens asked, a marker): the run fails before its first"
            " step (InvalidRunInput), nothing compiled. template_tokens_before.json is the same run"
            " recorded by the build before the patch (no marker: it ran both steps); this build"
            " would record the refused run, so that one is not re-recorded",
            _template_tokens,
            {"a": 1},
            raw=True,
        ),
        Scenario(
            "template_arguments",
            "a set step filtering 3,000 items by 'in' a list of 1,000 (recorded at generation 0:"
            " patch template-arguments asked, a marker): the 'in' test reads the list at every call,"
            " more than the render's 2 Mi steps for arguments; the step fails (ArgumentSizeError),"
            " the run fails. template_arguments_before.json is the same run recorded by the build"
            " before the patch (no marker: it counted none and ran the last step); this build would"
            " record the refused run, so that one is not re-recorded",
            _template_arguments,
            {"a": list(range(3000)), "b": list(range(-1, -1001, -1))},
        ),
        Scenario(
            "template_work",
            "a set step padding 25 items to 100,000 characters each with map('center') (recorded at"
            " generation 0: patch template-work asked, a marker): 2.5 million characters made in"
            " single calls, more than the render's 2 Mi steps of uncounted work; the step fails"
            " (UncountedWorkError), the run fails. template_work_before.json is the same run"
            " recorded by the build before the patch (no marker: it counted none and ran the last"
            " step); this build would record the refused run, so that one is not re-recorded",
            _template_work,
            {},
        ),
        Scenario(
            "template_work_task",
            "a loop of set steps, each comparing lists of 10,000 numbers ten times over (two million"
            " steps of single operations, a few operations), in one workflow task (recorded at"
            " generation 0: patch template-work asked, a marker): the task's evaluations count those"
            " steps too (64 to an operation), and a visit among the twelve fails"
            " (UncountedWorkError), the run fails. template_work_task_before.json is the same run"
            " recorded by the build before the patch (no marker: it ran the twelve visits and the"
            " last step); this build would record the"
            " refused run, so that one is not re-recorded",
            _template_work_task,
            {},
        ),
        Scenario(
            "run_work_budget",
            "a loop of set steps that call nothing, 21,000 steps, at generation 0 (patch"
            " run-work-budget asked, a marker): past 1,000,000 operations of work (50 a step and"
            " its templates') the run continues as new; this is its first run. run_work_budget_before.json"
            " is the same run recorded by the build before the patch (no marker: one run of every step)",
            _run_work_budget,
            {},
            first_run=True,
        ),
        Scenario(
            "decision_text",
            "an approval's reason and a task's comment holding text like a secret reference and an"
            " escaped one, at interpreter generation 30 (patch decision-text): both kept inert,"
            " echoed as their text",
            _decision_text,
            {},
            drive=_decide_with_text,
            options={"engine_level": 30},
        ),
        Scenario(
            "events",
            "wait_for_event: an event with an undeclared field refused, one consumed, republished "
            "(duplicate), not taken again through a lookback (timeout, continue); then cancel_on: "
            "the compensation runs, run cancelled",
            _events,
            {},
            publish=_publish_events,
        ),
        Scenario(
            "events_mailbox_ids",
            "events at interpreter generation 23 (patch mailbox-ids): each wait and the cancel_on "
            "subscribe at, and unsubscribe from, the mailbox named by the digest of tenant, type "
            "and key",
            _events,
            {},
            publish=_publish_events,
            options={"engine_level": 23},
        ),
        Scenario(
            "event_wait_over_budget",
            "recorded before patch continue-as-new-event-waits: a wait_for_event waited in one run "
            "past its history_budget of 100 events (refused approve signals growing the history), "
            "the event taken there at about 130 events; replays without continuing",
            _event_wait_budget,
            {},
            publish=_publish_over_budget,
        ),
        Scenario(
            "continued_event_wait",
            "the last run of a chain that continued as new (history_budget 100, refused approve "
            "signals) while a wait_for_event waited (patch continue-as-new-event-waits): it "
            "subscribes again with the same window and takes the event published then",
            _event_wait_budget,
            {},
            publish=_publish_continued,
        ),
        Scenario(
            "approval_engine_level",
            "the approval scenario started under the definition's name at interpreter generation 1 "
            "(RunOptions.engine_level, as FlowClient starts runs): every change applies from the "
            "start, no patch marker, no TemporalChangeVersion upsert",
            _approval,
            {"amount": 42},
            _drive_approval,
            named=True,
            options={"engine_level": 1},
        ),
        Scenario(
            "continued_approval_engine_level",
            "continued_approval at interpreter generation 1: the last run of the chain (it carries "
            "the generation in its options) resumes the approval and completes, without markers",
            _continued_approval,
            {},
            _drive_continued,
            options={"engine_level": 1},
        ),
        Scenario(
            "compact_run_input",
            "continued_approval at interpreter generation 24 (patch compact-run-input), its result "
            "compact: every run of the chain was started by an input without the options that hold "
            "their default; the last run resumes the approval and completes",
            _continued_approval,
            {},
            _drive_continued,
            options={"engine_level": 24, "result_steps": "compact"},
        ),
        Scenario(
            "approval_unset_current_step",
            "the approval scenario at interpreter generation 26 (patch unset-current-step), CurrentStep"
            " upserted at every step: started, as a client of the generation starts it, with the"
            " search attributes but without CurrentStep; it upserts CurrentStep where a run that"
            " started with CurrentStep = '' does",
            _approval,
            {"amount": 42},
            _drive_approval,
            named=True,
            options={"engine_level": 26, "current_step": "every_step"},
            attributes=True,
        ),
        Scenario(
            "branch_waits_engine_level",
            "branch_waits_over_budget's definition at interpreter generation 1: it continues as new "
            "in the condition's branch (loop, delay, escalated approval, human task, wait_for_event, "
            "nested switch), then fails and compensates, without a patch marker",
            _branch_waits,
            {},
            publish=_publish_branch_waits,
            options={"engine_level": 1},
        ),
    ]


def without_stack_traces(value: Any) -> Any:
    """Blanks failure stack traces: they name the recording machine's paths and replay ignores them."""
    if isinstance(value, dict):
        return {k: "" if k == "stackTrace" else without_stack_traces(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_stack_traces(v) for v in value]
    return value


async def record(scenario: Scenario, client: Client, task_queue: str, base: str, out: Path) -> str:
    document = scenario.definition(base)
    workflow_id = f"replay-{scenario.name.replace('_', '-')}-{uuid4().hex[:8]}"
    run_input = {"family": workflow_id, **scenario.input} if scenario.publish is not None else scenario.input
    options = (
        scenario.options
        if isinstance(scenario.options, RunOptions)
        else RunOptions(**(scenario.options or {}))
    )
    if scenario.raw:
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            WORKFLOW_NAME,
            {"definition": document, "input": run_input, "options": options.model_dump(mode="json")},
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=5),
        )
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        return await _write(out, scenario.name, scenario.description, handle, document, run_input)
    parsed = load_definition(document)
    attributes = (
        start_attributes(
            parsed.name,
            parsed.version,
            definition_hash(parsed),
            options.tenant,
            engine_level=options.engine_level,
        )
        if scenario.attributes
        else None
    )
    handle = await client.start_workflow(
        document["name"] if scenario.named else WORKFLOW_NAME,
        RunInput(definition=parsed, input=run_input, options=options),
        id=workflow_id,
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=5),
        search_attributes=attributes,
    )
    if scenario.drive is not None:
        await scenario.drive(handle)
    if scenario.publish is not None:
        await scenario.publish(handle, FlowClient(client, task_queue=task_queue))
    with contextlib.suppress(WorkflowFailureError):  # failed or cancelled runs are recorded as they are
        await handle.result()
    recorded, ended = handle, None
    if scenario.first_run:  # recorded as it was, the chain's outcome its last run's
        recorded = client.get_workflow_handle(workflow_id, run_id=handle.first_execution_run_id)
        ended = str((await _status(handle)).state)
    outcome = await _write(out, scenario.name, scenario.description, recorded, document, run_input, ended)
    if scenario.child is not None:  # replayed too: tests/workflows/test_replay.py globs every file
        child = client.get_workflow_handle(f"{workflow_id}/{scenario.child}")
        description = f"{scenario.description} (its child {scenario.child})"
        await _write(out, f"{scenario.name}_child", description, child, document, {})
    return outcome


async def _write(
    out: Path,
    name: str,
    description: str,
    handle: WorkflowHandle[Any, Any],
    document: dict[str, Any],
    run_input: dict[str, Any],
    outcome: str | None = None,
) -> str:
    """Writes ``<name>.json``: the run's history as it ended, with what it ran; returns its state
    (or ``outcome``, the state of the chain it began)."""
    outcome = outcome or str((await _status(handle)).state)
    history = await handle.fetch_history()
    body = {
        "name": name,
        "description": description,
        "workflow_id": handle.id,
        "definition": document,
        "input": run_input,
        "outcome": outcome,
        "history": without_stack_traces(json.loads(history.to_json())),
    }
    (out / f"{name}.json").write_text(json.dumps(body, indent=1) + "\n")
    return outcome


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these scenarios (default: all)")
    parser.add_argument("--out", type=Path, default=HISTORIES)
    args = parser.parse_args(argv)
    chosen = [s for s in scenarios() if not args.names or s.name in args.names]
    if not chosen:
        parser.error(f"no such scenario; known: {', '.join(s.name for s in scenarios())}")
    args.out.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT,
        dev_server_existing_path=find_temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    try:
        await ensure_search_attributes(env.client)
        task_queue = f"record-{uuid4()}"
        with RecordingServer() as server:
            server.route("POST", "/ship", [(422, {}, {"error": "no stock"})])
            async with (
                httpx.AsyncClient() as http_client,
                build_worker(
                    env.client,
                    task_queue,
                    http_client,
                    graceful_shutdown_timeout=timedelta(0),
                    extra_activities=[_record_dead_letter, _resolve_dead_letter, _resolve_subflow],
                ),
            ):
                outcomes = await asyncio.gather(
                    *(record(s, env.client, task_queue, server.url, args.out) for s in chosen)
                )
        for scenario, outcome in zip(chosen, outcomes, strict=True):
            print(f"{args.out / (scenario.name + '.json')}: {outcome}")
    finally:
        await env.shutdown()
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # As wfa does (starter.cli.main): the SDK's native threads can abort interpreter finalisation
    # ("Fatal Python error: PyGILState_Release", exit 134) after the histories were written.
    os._exit(code)
