"""The checked-in JSON Schema matches the models, and the generator CLI behaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interpreter.model import STEP_TYPES
from interpreter.schema import JSON_SCHEMA_DIALECT, SCHEMA_PATH, definition_schema, main, render_schema


def test_checked_in_schema_matches_the_models() -> None:
    assert SCHEMA_PATH.exists(), f"{SCHEMA_PATH} is missing: run `make schema` and commit it"
    current = SCHEMA_PATH.read_text(encoding="utf-8")
    if current != render_schema():
        pytest.fail(
            f"{SCHEMA_PATH} is stale: the definition models changed. Run `make schema`"
            " (python -m interpreter.schema) and commit the result.",
            pytrace=False,
        )


def test_rendering_is_deterministic_pretty_and_sorted() -> None:
    text = render_schema()
    assert text == render_schema()
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert text.startswith('{\n  "$defs": {\n')
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert data == definition_schema()


def test_schema_describes_the_definition_format() -> None:
    schema = definition_schema()
    assert schema["$schema"] == JSON_SCHEMA_DIALECT
    assert schema["title"] == "Definition"
    assert schema["required"] == ["name", "steps"]
    assert schema["additionalProperties"] is False
    steps = schema["properties"]["steps"]
    mapping = steps["items"]["discriminator"]["mapping"]
    assert steps["items"]["discriminator"]["propertyName"] == "type"
    assert sorted(mapping) == sorted(STEP_TYPES)
    defs = schema["$defs"]
    for ref in mapping.values():
        step = defs[ref.removeprefix("#/$defs/")]
        assert step["additionalProperties"] is False  # unknown fields are refused, as in the models
        assert {"id", "type"} <= set(step["required"])
    # aliases are used: the JSON spells them "if", "else" and "as"
    assert {"if", "then", "else"} <= set(defs["ConditionStep"]["properties"])
    assert "if_" not in defs["ConditionStep"]["properties"]
    assert "as" in defs["ForeachStep"]["properties"]
    assert defs["RetryPolicy"]["properties"]["maximum_attempts"]["minimum"] == 1


def test_main_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nested" / "definition.schema.json"
    assert main(["--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_schema()
    assert f"wrote {target}" in capsys.readouterr().out
    assert main(["--check", "--output", str(target)]) == 0


def test_check_fails_on_a_stale_or_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "definition.schema.json"
    assert main(["--check", "--output", str(target)]) == 1
    assert "is missing: run `make schema`" in capsys.readouterr().err
    target.write_text(render_schema().replace('"Definition"', '"Old"'), encoding="utf-8")
    assert main(["--check", "--output", str(target)]) == 1
    assert "is stale: run `make schema`" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") != render_schema()  # --check never writes
