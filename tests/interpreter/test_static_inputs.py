"""Static input fields (the ``sql`` statement) are never rendered by the engine, even for a
definition that was never validated (started by a raw Temporal client): run data cannot become SQL."""

from __future__ import annotations

from typing import Any

from interpreter.actions import static_input_fields
from interpreter.engine import ActionCall, Engine, RunInfo
from interpreter.model import parse_definition
from tests.interpreter.fake_runtime import FakeRuntime


def test_the_sql_statement_is_the_static_field() -> None:
    assert static_input_fields("sql") == frozenset({"statement"})
    assert static_input_fields("http") == frozenset()
    assert static_input_fields("no-such-action") == frozenset()


async def test_an_unvalidated_template_in_a_statement_reaches_the_action_as_written() -> None:
    statement = "DELETE FROM t WHERE name = '{{ input.name }}'"
    definition = parse_definition(
        {
            "name": "raw",
            "defaults": {"timeouts": {"start_to_close": "30s"}},
            "steps": [
                {
                    "id": "q",
                    "type": "task",
                    "action": "sql",
                    "input": {
                        "connection": "c",
                        "statement": statement,
                        "parameters": {"name": "{{ input.name }}"},
                    },
                }
            ],
        }
    )
    rt = FakeRuntime()
    seen: list[dict[str, Any]] = []

    def record(call: ActionCall, attempt: int) -> Any:
        seen.append(call.request.input)
        return {"rows": []}

    rt.on("sql", record)
    engine = Engine(
        definition, {"name": "x' OR '1'='1"}, rt, RunInfo(workflow_id="w", run_id="r", started_at=rt.now())
    )
    result = await rt.run(engine.run())
    assert result.state == "completed"
    assert seen == [{"connection": "c", "statement": statement, "parameters": {"name": "x' OR '1'='1"}}]
