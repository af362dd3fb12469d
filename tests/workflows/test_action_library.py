"""The ``llm`` and ``sql`` actions end to end on the dev server: retries by the step's policy, data
that stays inert, branches on their outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.connections import Connections, configure_connections
from activities.secrets import FileSecretStore, Secret, configure_secret_store
from interpreter.state import StepStatus
from tests.activities.test_llm import API_KEY, PATH, SCHEMA, completion
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, record, start, unique


@pytest.fixture
def configured(http_server: RecordingServer) -> Iterator[None]:
    configure_connections(
        Connections.parse(
            {
                "default": {
                    "llm": {
                        "default": {
                            "base_url": f"{http_server.url}/v1",
                            "model": "test-model",
                            "api_key": "${secret:LLM_KEY}",
                        }
                    }
                }
            }
        )
    )
    configure_secret_store(FileSecretStore({"default": {"LLM_KEY": Secret(API_KEY)}}))
    yield
    configure_connections(None)
    configure_secret_store(None)


@pytest.mark.usefixtures("configured")
async def test_invalid_then_valid_on_the_dev_server(
    client: Client,
    task_queue: str,
    worker: Worker,
    http_server: RecordingServer,
) -> None:
    valid = {"sentiment": "negative", "score": 0.2}
    http_server.route(
        "POST",
        PATH,
        [
            (200, {}, completion("I think it is negative")),
            (500, {}, {"error": "overloaded"}),
            (200, {}, completion(json.dumps(valid))),
        ],
    )
    doc = definition(
        unique("llm-retry"),
        [
            {
                "id": "classify",
                "type": "task",
                "action": "llm",
                "input": {"prompt": "Review: {{ input.review }}", "json_schema": SCHEMA},
                "retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 4},
                "timeouts": {"start_to_close": "30s"},
            },
            {
                "id": "route",
                "type": "condition",
                "if": "steps.classify.output.json.sentiment == 'negative'",
                "then": {"steps": [{"id": "escalate", "type": "set", "vars": {"escalated": True}}]},
            },
        ],
    )
    result = await (await start(client, task_queue, doc, {"review": "It broke. {{ 7 * 7 }}"})).result()
    step = record(result, "classify")
    assert (step.status, step.attempts) == (StepStatus.COMPLETED, 3)
    assert step.output["json"] == valid
    assert record(result, "escalate").status == StepStatus.COMPLETED
    prompts = [r.json["messages"][-1]["content"] for r in http_server.requests(path=PATH)]
    # The run's data is inert: the template in the review reached the model as text.
    assert prompts == ["Review: It broke. {{ 7 * 7 }}"] * 3


@pytest.mark.usefixtures("configured")
async def test_answers_that_stay_invalid_fail_the_step_with_the_reason(
    client: Client,
    task_queue: str,
    worker: Worker,
    http_server: RecordingServer,
) -> None:
    http_server.route("POST", PATH, [(200, {}, completion('{"sentiment": "unsure", "score": 1}'))])
    doc = definition(
        unique("llm-invalid"),
        [
            {
                "id": "classify",
                "type": "task",
                "action": "llm",
                "input": {"prompt": "x", "json_schema": SCHEMA},
                "retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 2},
                "timeouts": {"start_to_close": "30s"},
                "on_failure": "continue",
            }
        ],
    )
    result = await (await start(client, task_queue, doc)).result()
    step = record(result, "classify")
    assert (step.status, step.attempts, step.error_type) == (StepStatus.FAILED, 2, "LlmAnswerInvalid")
    assert "sentiment" in (step.error or "")
