"""What a run closes with must fit in Temporal's payload limit (2 MiB), on a real dev server. Found
by an attacker's probe: a definition alone (no input) can build a list of a million control
characters (two ``set`` steps, then ``{{ [vars.b] * 4 }}``: a template keeps a list's type, and
each string in it is under the 256 KB string bound), six bytes each as JSON. Returned as the run's
output, or rendered into a ``fail`` step's message, it made the SDK refuse the run's closing
command (``PayloadsTooLarge``) in every workflow task: the run stayed running, with no message,
until its timeout. Now such a run fails, saying why, and a long message is cut. The same file
holds what a run keeps that no reader could take back (a 5,001-digit number, a lone surrogate),
a status answer whose variables pass the limit, and the replay of a run that closed within the
codec's margin before the output check.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, Worker

from interpreter.state import RunResult, RunState
from starter.cli import print_status
from tests.workflows.support import (
    Handle,
    compensated_echo,
    definition,
    events,
    eventually,
    failure_of,
    replay,
    start,
    status,
    unique,
)
from worker import workflow_runner
from workflows.generic import (
    ENGINE_LEVEL,
    PATCH_LEVELS,
    PATCH_RUN_OUTPUT_TOO_LARGE,
    GenericRun,
    RunDefinitionWorkflow,
)
from workflows.search_attributes import RUN_STATE

# 250,000 control characters in a variable, within the run's state budget as counted (one byte
# each; 1.5 MB as JSON), built by the definition itself.
BUILD = [
    {"id": "a", "type": "set", "vars": {"a": "{{ '\u0001' * 50000 }}"}},
    {"id": "b", "type": "set", "vars": {"b": "{{ vars.a ~ vars.a ~ vars.a ~ vars.a ~ vars.a }}"}},
]
HUGE = "{{ [vars.b] * 4 }}"  # a million control characters: 6 MB as JSON


async def _fails_in_words(
    client: Client,
    task_queue: str,
    document: dict[str, Any],
    error_type: str | None,
    run_input: dict[str, Any] | None = None,
    level: int = ENGINE_LEVEL,
) -> tuple[Handle, ApplicationError, RunResult]:
    """Starts ``document`` and awaits its failure: an ApplicationError (of ``error_type``) and the
    failed RunResult in its details, and no workflow task failed on the way (before the fixes the
    run hung, failing its closing task, until the 60 s timeout)."""
    handle = await start(
        client, task_queue, document, run_input, engine_level=level, execution_timeout=timedelta(seconds=60)
    )
    cause, result = await failure_of(handle)
    assert isinstance(cause, ApplicationError), repr(cause)
    if error_type is not None:
        assert cause.type == error_type, (cause.type, cause.message[:500])
    assert result is not None
    assert result.state == RunState.FAILED
    assert await events(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) == []
    return handle, cause, result


@pytest.mark.parametrize("level", [0, ENGINE_LEVEL], ids=["asked", "generation"])
@pytest.mark.parametrize(
    "ending",
    [
        [{"id": "done", "type": "succeed", "output": HUGE}],
        [{"id": "noop", "type": "set", "vars": {"c": 1}}],  # with the definition's output below
    ],
    ids=["succeed", "definition-output"],
)
async def test_a_run_output_past_the_payload_limit_fails_the_run_in_words(
    client: Client, task_queue: str, worker: Worker, level: int, ending: list[dict[str, Any]]
) -> None:
    extra = {"output": {"big": HUGE}} if ending[0]["type"] == "set" else {}
    document = definition(unique("output"), [*BUILD, *ending], **extra)
    handle, cause, result = await _fails_in_words(
        client, task_queue, document, "RunOutputTooLarge", level=level
    )
    assert "the run's output is" in cause.message
    assert "more than Temporal's payload limit" in cause.message
    assert result.output is None
    # The status and the RunState search attribute say so too (the steps as they ended).
    answer = await status(handle)
    assert (answer.state, answer.output, answer.error_type) == (RunState.FAILED, None, "RunOutputTooLarge")
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(RUN_STATE) == "failed"


@pytest.mark.parametrize("compensate", [False, True], ids=["alone", "compensations"])
async def test_a_fail_message_past_the_payload_limit_is_cut(
    client: Client, task_queue: str, worker: Worker, compensate: bool
) -> None:
    before = [compensated_echo("charge", "ok", "refund", "refunded")] if compensate else []
    document = definition(
        unique("message"), [*before, *BUILD, {"id": "boom", "type": "fail", "message": HUGE}]
    )
    handle, cause, result = await _fails_in_words(client, task_queue, document, "WorkflowFailed")
    assert len(cause.message) < 40_000
    assert "(cut:" in cause.message
    assert result.error == cause.message
    if compensate:  # a fail step's compensations run, as before (the records, too large, left out)
        scheduled = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        ids = [e.activity_task_scheduled_event_attributes.activity_id for e in scheduled]
        assert any("refund" in i for i in ids), ids
    # The closed run's status answers too, its message cut the same way.
    answer = await status(handle)
    assert answer.error == cause.message


async def test_a_fan_out_slice_returning_a_number_no_reader_takes_fails_its_run_in_words(
    client: Client, task_queue: str, worker: Worker
) -> None:
    # Patch template-values. Found by an attacker's probe: each slice kept a 5,001-digit number
    # and returned it; pydantic refuses numbers past 4,300 digits, so the parent could not read
    # the slice's result and its workflow task failed again and again until the run timed out.
    # Now the template fails in the slice, which fails its parent's step, in words.
    huge = {"id": "big", "type": "set", "vars": {"n": "{{ (10**100)**50 }}"}}
    each = {"id": "each", "type": "foreach", "items": "[1, 2]", "fan_out_above": 0, "steps": [huge]}
    document = definition(unique("digits"), [each, {"id": "done", "type": "succeed", "output": {"ok": 1}}])
    _, cause, _ = await _fails_in_words(client, task_queue, document, None)
    assert "a number of 16,610 bits" in cause.message, cause.message


async def test_a_status_whose_variables_pass_the_payload_limit_answers_without_them(
    client: Client, task_queue: str, worker: Worker
) -> None:
    # Found by an attacker's probe: 750,000 control characters in variables (counted 750 KB by
    # the state budget, 4.5 MB as JSON) made every status query fail (the answer over 2 MiB),
    # while the run waited for a person and after. Now the answer leaves the variables out and
    # says so.
    wide = {"id": "c", "type": "set", "vars": {"c": "{{ [vars.a, vars.a] }}"}}
    wait = {"id": "ok", "type": "approval", "approvers": ["ann"], "timeout": "3s", "on_timeout": "approve"}
    done = {"id": "done", "type": "succeed", "output": {"ok": 1}}
    document = definition(unique("wide"), [*BUILD, wide, wait, done])
    handle = await start(
        client, task_queue, document, engine_level=ENGINE_LEVEL, execution_timeout=timedelta(seconds=60)
    )
    waiting = await eventually(
        lambda: status(handle), lambda s: bool(s.pending_approvals), what="the approval"
    )
    assert waiting.left_out == ["vars"]
    assert waiting.vars == {}
    shown = io.StringIO()
    print_status(handle.id, waiting, shown)  # `wfa status` says so too
    assert "Left out of this answer (too large for Temporal's payload limit): vars" in shown.getvalue()
    assert [a.step_id for a in waiting.pending_approvals] == ["ok"]
    result = await handle.result()
    assert (result.state, result.output) == (RunState.COMPLETED, {"ok": 1})
    closed = await status(handle)
    assert (closed.state, closed.left_out) == (RunState.COMPLETED, ["vars"])


async def test_a_status_whose_human_task_texts_pass_the_payload_limit_answers_with_them_cut(
    client: Client, task_queue: str, worker: Worker
) -> None:
    # A human task's title and description are rendered from data, each up to 256 KiB (the
    # rendered-string bound): 250,000 control characters each are 3 MB as JSON, so every status
    # query failed while the task waited for a person (the inbox finds tasks in that answer). Now
    # the largest part goes first, only as far as needed: the title is cut, the description and
    # the variables (300 KB) stay.
    texts = "{{ vars.a ~ vars.a ~ vars.a ~ vars.a ~ vars.a }}"
    task = {"id": "review", "type": "human_task", "assignee": "ann", "title": texts, "description": texts}
    task |= {"due": "1h", "on_timeout": "continue"}
    done = {"id": "done", "type": "succeed", "output": {"ok": 1}}
    document = definition(unique("texts"), [BUILD[0], task, done])
    handle = await start(
        client, task_queue, document, engine_level=ENGINE_LEVEL, execution_timeout=timedelta(seconds=60)
    )
    waiting = await eventually(
        lambda: status(handle), lambda s: bool(s.pending_approvals), what="the human task"
    )
    assert waiting.left_out == ["pending_approvals.message"]
    [pending] = waiting.pending_approvals
    assert (pending.step_id, pending.kind) == ("review", "task")
    assert pending.message.endswith("… (250000 characters)")
    assert len(pending.description) == 250_000
    assert len(waiting.vars["a"]) == 50_000
    await handle.execute_update("decide", {"decision": "complete", "actor": "ann"})
    result = await handle.result()
    assert (result.state, result.output) == (RunState.COMPLETED, {"ok": 1})


async def test_a_status_whose_parked_inputs_pass_the_payload_limit_answers_without_them(
    client: Client, task_queue: str, store_worker: Worker
) -> None:
    # Two parked steps each keep their input, 200,000 control characters (1.2 MB as JSON): every
    # status query failed while they waited for an operator. Now the answer leaves the parked
    # inputs out (their dead letter rows keep them) and keeps the rest.
    value = "{{ vars.a ~ vars.a ~ vars.a ~ vars.a }}"
    failing = {"type": "task", "action": "echo", "input": {"value": value, "fail": "Boom"}}
    failing |= {"retry": {"maximum_attempts": 1}, "on_failure": "dead_letter"}
    branches = [{"id": f"b{n}", "steps": [{"id": f"call{n}", **failing}]} for n in (1, 2)]
    both = {"id": "both", "type": "parallel", "branches": branches}
    document = definition(
        unique("parked"), [BUILD[0], both, {"id": "done", "type": "succeed", "output": {"ok": 1}}]
    )
    handle = await start(
        client, task_queue, document, engine_level=ENGINE_LEVEL, execution_timeout=timedelta(seconds=60)
    )
    waiting = await eventually(lambda: status(handle), lambda s: len(s.parked) == 2, what="both parks")
    assert waiting.left_out == ["parked.input"]
    assert sorted((p.step_id, p.input) for p in waiting.parked) == [("call1", {}), ("call2", {})]
    assert all(p.dead_letter_id is not None for p in waiting.parked)
    assert len(waiting.vars["a"]) == 50_000
    for parked in waiting.parked:  # an operator skips both
        skip = {"action": "skip", "actor": "ops", "park_id": parked.park_id, "output": "skipped"}
        await handle.execute_update("resolve_dead_letter", skip)
    result = await handle.result()
    assert (result.state, result.output) == (RunState.COMPLETED, {"ok": 1})


async def test_a_run_that_closed_within_the_codec_margin_replays_as_recorded(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Patch run-output-too-large. Found by a review: a result between 2 MiB less the codec's
    # margin (1 KiB) and 2 MiB closed before (no codec, or a small one), and refusing it unasked
    # made the recorded history fail to replay (a RunState upsert and a failure where the history
    # completed). Recorded here by the build before (its closing check left out), replayed by this
    # one; a run started now fails in words, as the codec's framing could take it past the limit.
    document = definition(
        unique("margin"),
        [*BUILD, {"id": "done", "type": "succeed", "output": "{{ [vars.b, vars.a, input.c] }}"}],
    )
    run_input = {"c": "x" * 296_500}  # the result: 2,096,569 bytes, within the margin
    monkeypatch.setattr(GenericRun, "_closable", lambda self, result, run: result)
    before = await start(
        client, task_queue, document, run_input, engine_level=PATCH_LEVELS[PATCH_RUN_OUTPUT_TOO_LARGE] - 1
    )
    recorded = await before.result()
    assert recorded.state == RunState.COMPLETED
    history = await before.fetch_history()
    monkeypatch.undo()
    replayer = Replayer(
        workflows=[RunDefinitionWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    replayed = await replay(replayer, history)
    assert replayed.replay_failure is None, repr(replayed.replay_failure)
    _, cause, _ = await _fails_in_words(client, task_queue, document, "RunOutputTooLarge", run_input)
    assert "the run's output is 2,096,569 bytes serialized" in cause.message


@pytest.mark.parametrize(
    "ending",
    [
        {"id": "boom", "type": "fail", "message": "{{ 'a\\ud800' }}"},
        {"id": "done", "type": "succeed", "output": "bad {{ '\\udfff' }}"},
        # (An email's html body is rendered on its own, autoescaped: a review found it unchecked.)
        {
            "id": "mail",
            "type": "task",
            "action": "email",
            "input": {"to": "a@example.com", "subject": "hi", "html": "<p>{{ 'x\\ud800' }}</p>"},
        },
    ],
    ids=["fail-message", "output", "email-html"],
)
async def test_a_lone_surrogate_from_a_template_fails_the_run_in_words(
    client: Client, task_queue: str, worker: Worker, ending: dict[str, Any]
) -> None:
    # Patch template-values. Found by a review: a jinja literal makes a lone surrogate, which
    # UTF-8 cannot write: the converter refused the run's closing command in every workflow task,
    # and the run stayed running until its timeout. Now the template fails.
    document = definition(unique("surrogate"), [ending])
    _, cause, _ = await _fails_in_words(client, task_queue, document, "TemplateError")
    assert "a lone surrogate character" in cause.message
