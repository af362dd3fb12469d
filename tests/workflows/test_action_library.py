"""The ``llm`` and ``sql`` actions end to end on the dev server: retries by the step's policy, data
that stays inert, branches on their outputs."""

from __future__ import annotations

import json

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.connections import Connections, configure_connections
from interpreter.state import StepStatus
from tests.activities.test_llm import API_KEY, PATH, SCHEMA, completion, configured  # noqa: F401 (a fixture)
from tests.helpers.http_server import RecordingServer
from tests.workflows.support import definition, record, start, unique


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


async def test_sql_steps_bind_the_runs_data_and_a_switch_reads_their_rows(
    client: Client, task_queue: str, worker: Worker, postgres_server_url: str
) -> None:
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    from activities.store.database import create_engine
    from tests.conftest import fresh_database

    async with fresh_database(postgres_server_url, "wfa_sqlrun", migrate=False) as url:
        engine = create_engine(url, poolclass=NullPool)
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE contacts (email text PRIMARY KEY, note text)"))
        configure_connections(Connections.parse({"default": {"sql": {"crm": {"url": url}}}}))
        try:
            doc = definition(
                unique("sql-run"),
                [
                    {
                        "id": "save",
                        "type": "task",
                        "action": "sql",
                        "input": {
                            "connection": "crm",
                            "statement": "INSERT INTO contacts (email, note) VALUES (:email, :note)"
                            " ON CONFLICT (email) DO NOTHING",
                            "parameters": {"email": "{{ input.email }}", "note": "{{ input.note }}"},
                        },
                        "timeouts": {"start_to_close": "30s"},
                    },
                    {
                        "id": "count",
                        "type": "task",
                        "action": "sql",
                        "input": {"connection": "crm", "statement": "SELECT count(*) AS n FROM contacts"},
                        "timeouts": {"start_to_close": "30s"},
                    },
                    {
                        "id": "check",
                        "type": "switch",
                        "cases": [
                            {
                                "when": "steps.count.output.rows[0].n == 1",
                                "then": {"steps": [{"id": "one", "type": "set", "vars": {"saved": True}}]},
                            }
                        ],
                    },
                ],
            )
            note = "x'); DROP TABLE contacts; -- {{ 6 * 7 }}"
            result = await (
                await start(client, task_queue, doc, {"email": "a@example.org", "note": note})
            ).result()
        finally:
            configure_connections(None)
        assert record(result, "save").output["rows_affected"] == 1
        assert record(result, "one").status == StepStatus.COMPLETED
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT note FROM contacts"))).scalar_one()
        await engine.dispose()
    assert stored == note  # bound as data: neither SQL nor a template
