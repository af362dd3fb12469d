"""Values nested past what a run can read back (Temporal's payloads are read with pydantic, which
refuses JSON nested past about 200 levels). An HTTP answer like ``[[[[...]]]]`` from a server the
definition calls is data, not a way to stop a run: it fails its step, which ``on_failure``
handles; before, the workflow could not decode the activity's result and its task failed for ever."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from interpreter.sizes import VALUE_MAX_DEPTH, json_depth
from interpreter.state import RunState, StepStatus
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, failure_of, record, start, unique


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def test_an_http_answer_nested_past_what_a_run_keeps_fails_its_step(
    client: Client, task_queue: str, worker: Worker, http_server: RecordingServer
) -> None:
    json_type = {"content-type": "application/json"}
    http_server.route("GET", "/deep", [(200, json_type, _nested(210))])
    http_server.route("GET", "/fits", [(200, json_type, _nested(VALUE_MAX_DEPTH - 2))])

    def get(step_id: str, path: str) -> dict[str, Any]:
        return {
            "id": step_id,
            "type": "task",
            "action": "http",
            "input": {"method": "GET", "url": f"{http_server.url}{path}"},
            "retry": {"maximum_attempts": 3, "initial_interval": "100ms"},
            "on_failure": "continue",
        }

    handle = await start(
        client, task_queue, definition(unique("deep-http"), [get("deep", "/deep"), get("fits", "/fits")])
    )
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    deep = record(result, "deep")
    assert (deep.status, deep.error_type, deep.attempts) == (StepStatus.FAILED, "ActionOutputTooDeep", 1)
    assert f"more than {VALUE_MAX_DEPTH} levels deep" in (deep.error or "")
    assert http_server.side_effects(path="/deep") == 1  # not retried: the same answer would come back
    fits = record(result, "fits")
    assert fits.status == StepStatus.COMPLETED
    assert fits.output["status_code"] == 200
    assert json_depth(fits.output["body"]) == VALUE_MAX_DEPTH - 2


async def test_a_template_nesting_a_variable_deeper_each_turn_fails_the_run_in_words(
    client: Client, task_queue: str, worker: Worker
) -> None:
    steps = [
        {"id": "init", "type": "set", "vars": {"x": 1}},
        {"id": "wrap", "type": "set", "vars": {"x": "{{ [vars.x] }}"}, "max_visits": 300},
        {"id": "again", "type": "condition", "if": "true", "then": {"goto": "wrap"}, "max_visits": 300},
    ]
    handle = await start(
        client, task_queue, definition(unique("deep-var"), steps, limits={"max_step_executions": 1000})
    )
    cause, result = await failure_of(handle)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ValueTooDeep"
    assert "step 'wrap'" in cause.message
    assert result is not None
    assert len([r for r in result.steps if r.id == "wrap"]) == VALUE_MAX_DEPTH
