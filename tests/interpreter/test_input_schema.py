"""``input_schema`` and ``triggers`` at validation, and run inputs against the schema (no Temporal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interpreter.input_schema import MAX_SCHEMA_BYTES, input_problems, schema_problems
from interpreter.validate import DefinitionError, definition_hash, load_definition
from starter.definitions import load

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["order"],
    "$defs": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}},
    "properties": {
        "order": {
            "type": "object",
            "required": ["id", "items"],
            "properties": {
                "id": {"type": "string"},
                "email": {"type": "string", "format": "email"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/sku"}, "maxItems": 3},
            },
        },
        "weird key": {"type": "integer"},
    },
}


def definition(**extra: Any) -> dict[str, Any]:
    return {"name": "typed", "steps": [{"id": "done", "type": "succeed"}], **extra}


def problems_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        load(document)
    return [(p.path, p.message) for p in caught.value.problems]


def test_an_input_is_checked_with_the_json_path_of_each_problem() -> None:
    typed = load_definition(definition(input_schema=SCHEMA))
    assert input_problems(typed, {"order": {"id": "o-1", "items": ["ABC-1"]}}) == []
    found = [
        (p.path, p.message)
        for p in input_problems(
            typed,
            {"order": {"id": 7, "email": "nope", "items": ["ABC-1", "abc", 3, "X", "Y"]}, "weird key": "x"},
        )
    ]
    paths = [path for path, _ in found]
    assert paths == sorted(paths)
    assert ("$.order.id", "7 is not of type 'string'") in found
    assert ("$.order.email", "'nope' is not a 'email'") in found
    assert ("$.order.items[1]", "'abc' does not match '^[A-Z]{3}-[0-9]+$'") in found
    assert ("$.order.items[2]", "3 is not of type 'string'") in found
    assert any(path == "$.order.items" and "is too long" in message for path, message in found)
    assert ('$["weird key"]', "'x' is not of type 'integer'") in found
    missing = input_problems(typed, {})
    assert [(p.path, p.message) for p in missing] == [("$", "'order' is a required property")]
    assert input_problems(typed, [1])[0].path == "$"  # type: ignore[arg-type]


def test_without_a_schema_any_object_is_accepted() -> None:
    untyped = load_definition(definition())
    assert input_problems(untyped, {"anything": [1, {"x": None}]}) == []


def test_an_unusable_schema_is_refused_at_validation() -> None:
    found = problems_of(
        definition(
            input_schema={
                "type": "objekt",
                "properties": {
                    "a": {"$ref": "https://example.org/schema.json"},
                    "b": {"type": "string", "pattern": "^(a+)+$"},
                    "c": {"$ref": "#/$defs/c"},
                },
                "patternProperties": {"^(x*)*$": {}},
            }
        )
    )
    paths = [path for path, _ in found]
    assert "$.input_schema.type" in paths
    assert "$.input_schema.properties.a.$ref" in paths  # nothing is ever fetched
    assert "$.input_schema.properties.b.pattern" in paths
    assert "$.input_schema.patternProperties" in paths
    assert "$.input_schema.properties.c.$ref" not in paths  # local references are fine
    too_big = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    assert [path for path, _ in problems_of(definition(input_schema=too_big))] == ["$.input_schema"]
    assert schema_problems({"type": "object"}) == []


async def test_a_schedule_input_is_checked_outside_the_pure_validator() -> None:
    """Loading a definition never runs its schema (the pure validator runs wherever a stored
    definition is loaded; a schema can make checking slow): registration and ``wfa validate`` check
    each schedule's fixed input in a separate process (``activities.input_check``)."""
    from activities.input_check import schedule_input_problems

    trigger = {"type": "schedule", "every": "5m", "input": {"order": {"id": 1}}}
    document = definition(input_schema=SCHEMA, triggers=[trigger])
    found = [(p.path, p.message) for p in await schedule_input_problems(load_definition(document))]
    assert (
        "$.triggers[0].input.order",
        "does not match input_schema: 'items' is a required property",
    ) in found
    assert ("$.triggers[0].input.order.id", "does not match input_schema: 1 is not of type 'string'") in found


def test_triggers_are_checked_as_a_whole() -> None:
    found = problems_of(
        definition(
            triggers=[
                {"type": "schedule", "cron": "*/5 * *"},
                {"type": "schedule", "every": "1m", "timezone": "Mars/Olympus"},
                {"type": "event", "id": "e", "event": "a.b"},
                {"type": "event", "id": "e", "event": "c.d"},
                {"type": "schedule", "id": "fast", "every": "500ms"},
                {"type": "schedule", "id": "tz", "cron": "CRON_TZ=UTC 0 9 * * *"},
            ]
        )
    )
    paths = [path for path, _ in found]
    assert paths == [
        "$.triggers[0].cron",
        "$.triggers[1].id",
        "$.triggers[1].timezone",
        "$.triggers[3].id",
        "$.triggers[4].every",
        "$.triggers[5].cron",
    ]
    ok = load(
        definition(triggers=[{"type": "schedule", "cron": "0 9 * * mon-fri", "timezone": "Europe/Berlin"}])
    )
    assert ok.triggers[0].id == "schedule"
    assert load(definition(triggers=[{"type": "schedule", "cron": "@daily"}]))


def test_new_definitions_may_not_use_the_legacy_trigger_but_stored_ones_load(tmp_path: Path) -> None:
    legacy = definition(trigger={"type": "schedule", "schedule": "*/5 * * * *"})
    found = problems_of(legacy)
    assert found[0][0] == "$.trigger"
    assert "triggers" in found[0][1]
    file = tmp_path / "legacy.json"
    file.write_text(json.dumps(legacy))
    with pytest.raises(DefinitionError, match=r"\$\.trigger: .*declare 'triggers'"):
        load(file)
    # With other problems too, the legacy field is named among them.
    assert "$.trigger" in [path for path, _ in problems_of({**legacy, "steps": []})]
    # What is stored or recorded still loads (the registry and the worker parse with load_definition).
    assert load_definition(legacy).trigger.type == "schedule"


def test_input_schema_and_triggers_keep_old_hashes() -> None:
    """Fields added later leave the content hash alone while at their default."""
    plain = load_definition(definition())
    text = json.dumps(definition(triggers=[], input_schema=None))
    assert definition_hash(load_definition(text)) == definition_hash(plain)
    assert definition_hash(load_definition(definition(input_schema={"type": "object"}))) != definition_hash(
        plain
    )


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_example_declares_triggers_not_the_legacy_field(path: Path) -> None:
    document = json.loads(path.read_text())
    assert "trigger" not in document
    load(path)


def test_the_uptime_check_example_is_a_real_five_minute_schedule() -> None:
    uptime = load(EXAMPLES / "uptime-check.json")
    [trigger] = uptime.triggers
    assert trigger.type == "schedule"
    assert trigger.every == "5m"  # type: ignore[union-attr]
    assert input_problems(uptime, trigger.input) == []  # type: ignore[union-attr]
    assert [p.path for p in input_problems(uptime, {"api": "ftp://x"})] == ["$.api"]


def test_nested_quantifiers_are_found_as_the_regular_expression_finds_them() -> None:
    """The hazard check reads patterns in one pass (the regular expression it replaces backtracked:
    5 s on a 32 KB pattern, blocking the ``llm`` activity's event loop: an attacker's probe). Both
    agree on 100,000 patterns drawn from the characters that matter, and on the probe's patterns."""
    import random

    from interpreter.input_schema import _NESTED_QUANTIFIER, _nests_quantifiers

    alphabet = ["(", ")", "\\", "*", "+", "{", "}", ",", "1", "a", "\n", "?", "\u0663", "|", "(a+)", "{2,}"]
    draw = random.Random(20261207)
    for _ in range(100_000):
        pattern = "".join(draw.choice(alphabet) for _ in range(draw.randint(0, 16)))
        assert _nests_quantifiers(pattern) == bool(_NESTED_QUANTIFIER.search(pattern)), repr(pattern)
    for pattern in ("(" + "a*" * 300 + ")", "(\\(" * 300 + "a+)+", "(a{" + "1" * 300 + "})*", "x(a|b+){2}"):
        assert _nests_quantifiers(pattern) == bool(_NESTED_QUANTIFIER.search(pattern)), pattern[:40]
