"""The published JSON Schema and the models agree: cases generated from the schema.

Two directions:

* what the schema accepts, the models accept (the definition's, and each task input's by its
  action's model), or refuses only for a rule the schema cannot express
  (a custom validator: duration and template syntax, time zones, cross-field rules), never for a
  type, a missing or unknown field, an enum or a bound;
* a schema-valid case with one value replaced by a value of another JSON type: when the schema
  refuses it the model refuses it too (``"maximum_attempts": "3"``), and when the schema allows it
  (an ``Any`` value such as a step's ``input``) the model does not refuse it for its type.

One known difference, in the schema's favour: JSON Schema counts ``3.0`` as an integer, while the
model (like Python's ``json``, which reads it as a float) refuses it where an integer is expected.

The schema is recursive (steps hold steps), which hypothesis-jsonschema cannot generate from, so
generation uses the published schema with its ``$ref`` inlined and recursion cut after one level of
nesting (a nested step list then holds only step kinds without nested steps). The verdict of the
schema is always the published schema's, checked by ``jsonschema`` with ECMA-262 pattern semantics
(``$`` matches only at the very end, as in JSON Schema and pydantic, not before a final newline as
in Python's ``re``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import validators

from interpreter.actions import ACTION_INPUTS, action_input_error_kinds
from interpreter.model import STEP_TYPES, Step, TaskStep, children, parse_definition
from interpreter.schema import definition_schema
from tests.helpers.hypothesis_jsonschema_compat import from_schema

SCHEMA = definition_schema()

# Model refusals that are rules beyond the schema (custom validators), not disagreements.
_RULES_BEYOND_THE_SCHEMA = frozenset({"value_error", "assertion_error"})

_FALSE: dict[str, Any] = {"not": {}}
DEPTH = 1
"""Steps of every kind at the top level; nested step lists hold ``_LEAF`` steps only."""
_LEAF = "SetStep"


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if not isinstance(instance, str):
        return
    ecma = re.sub(r"(?<!\\)\$$", r"\\Z", pattern)  # ECMA-262 '$' without the multiline flag
    if re.search(ecma, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
_VALIDATOR = _Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


_STEP_DEFS = frozenset(
    ref["$ref"].removeprefix("#/$defs/") for ref in SCHEMA["properties"]["steps"]["items"]["oneOf"]
)


def _inline(node: Any, defs: dict[str, Any], depth: int, max_depth: int) -> Any:
    """``node`` with every ``$ref`` inlined; a step nested deeper than ``max_depth`` is a ``_LEAF``
    step (a step kind without nested steps), other kinds become unsatisfiable there."""
    if isinstance(node, list):
        return [_inline(item, defs, depth, max_depth) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name in _STEP_DEFS:
            if depth >= max_depth:
                return _FALSE if name != _LEAF else _inline(defs[name], defs, depth, max_depth)
            return _inline(defs[name], defs, depth + 1, max_depth)
        return _inline(defs[name], defs, depth, max_depth)
    return {
        # The step union's members exclude each other by their "type" constant, so "anyOf" means
        # the same as "oneOf" there, and costs the generator no cross-checking of every member.
        ("anyOf" if key == "oneOf" else key): _inline(value, defs, depth, max_depth)
        for key, value in node.items()
        if key not in ("discriminator", "$defs", "$schema", "description", "title", "default")
    }


GENERATION_SCHEMA = _inline(SCHEMA, SCHEMA["$defs"], 0, max_depth=DEPTH)
STEP_KINDS = [kind for kind in GENERATION_SCHEMA["properties"]["steps"]["items"]["anyOf"] if kind != _FALSE]


def _definitions_with(kind: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Definitions whose top-level steps are of one kind (one schema per kind: a union of every
    kind is several times slower to generate from)."""
    schema = {**GENERATION_SCHEMA, "properties": dict(GENERATION_SCHEMA["properties"])}
    schema["properties"]["steps"] = {"type": "array", "minItems": 1, "maxItems": 2, "items": kind}
    return from_schema(schema)


DEFINITIONS = st.one_of([_definitions_with(kind) for kind in STEP_KINDS])


def schema_accepts(document: Any) -> bool:
    return _VALIDATOR.is_valid(document)


def model_errors(document: Any) -> list[Any]:
    """The models' refusals: the definition's, then each task input's (by its action's model)."""
    try:
        definition = parse_definition(json.dumps(document))
    except pydantic.ValidationError as err:
        return list(err.errors(include_url=False))
    errors: list[Any] = []
    pending: list[Step] = list(definition.steps)
    while pending:
        step = pending.pop()
        pending.extend(nested for _, steps, _ in children(step) for nested in steps)
        if isinstance(step, TaskStep) and step.action in ACTION_INPUTS:
            for loc, message, kinds in action_input_error_kinds(step.action, step.input):
                errors.extend(
                    {"type": kind, "loc": (step.id, "input", *loc), "msg": message} for kind in kinds
                )
    return errors


def type_errors(errors: list[Any]) -> list[Any]:
    return [e for e in errors if e["type"] not in _RULES_BEYOND_THE_SCHEMA]


# Generation from the inlined schema costs more with every step kind and action added (about 12
# minutes for 75 examples once the action library and the new step kinds were in, on a busy
# machine; one test of this file took over 25 minutes with 25 examples on 2 cores shared by two
# suites): 12 examples per test keep the check in the suite's budget; each CI run draws new ones.
_SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@_SETTINGS
@given(DEFINITIONS)
def test_what_the_schema_accepts_the_model_accepts(document: dict[str, Any]) -> None:
    errors = model_errors(document)
    if not schema_accepts(document):  # a Python-regex-only match (trailing newline): both refuse
        assert errors, f"the schema refuses, the model accepts: {document!r}"
        return
    assert not type_errors(errors), f"schema-valid document refused by the model: {errors}"


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    if path:
        yield path, value


def _other_type(value: Any) -> list[Any]:
    """Values of JSON types other than ``value``'s, the look-alikes first (``3`` -> ``"3"``)."""
    if isinstance(value, bool):
        return [str(value).lower(), int(value), None]
    if isinstance(value, int | float):
        return [str(value), bool(value), [value]]
    if isinstance(value, str):
        return [1 if value.isdigit() else 0, True, [value], {"value": value}]
    if value is None:
        return ["null", 0, False]
    if isinstance(value, list):
        return [{"items": value}, "[]", 0]
    return [[value], "{}", 1]


def _replace(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    changed = copy.deepcopy(document)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return changed


@_SETTINGS
@given(document=DEFINITIONS, data=st.data())
def test_a_value_of_another_type_is_refused_by_both_or_neither(document: dict[str, Any], data: Any) -> None:
    leaves = list(_leaves(document))
    path, value = data.draw(st.sampled_from(leaves), label="leaf")
    mutated = _replace(document, path, data.draw(st.sampled_from(_other_type(value)), label="new value"))
    errors = model_errors(mutated)
    if not schema_accepts(mutated):
        assert errors, f"the schema refuses {path} = {mutated!r}, the model accepts it"
    else:
        assert not type_errors(errors), f"the schema accepts {path}, the model refuses its type: {errors}"


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("defaults", "retry", "maximum_attempts"), "3"),
        (("defaults", "retry", "maximum_attempts"), True),
        (("defaults", "retry", "backoff_coefficient"), "2"),
        (("limits", "max_depth"), "5"),
        (("version",), "1"),
        (("description",), 7),
    ],
)
def test_the_issue_cases_are_refused_by_both(where: tuple[str, ...], value: Any) -> None:
    document: dict[str, Any] = {"name": "strict", "steps": [{"id": "a", "type": "set", "vars": {"x": 1}}]}
    target = document
    for part in where[:-1]:
        target = target.setdefault(part, {})
    target[where[-1]] = value
    assert not schema_accepts(document)
    errors = model_errors(document)
    assert [e["loc"][: len(where)] for e in errors] == [where], errors


def test_generation_covers_every_step_kind() -> None:
    """The cut recursion still leaves every step kind to generate (each must appear in the union)."""
    assert {kind["properties"]["type"]["const"] for kind in STEP_KINDS} == set(STEP_TYPES)


def test_an_http_task_without_input_is_refused_by_both() -> None:
    """Found by the generated cases: the schema let an absent input through, the model (input {}
    without a url) did not."""
    document = {"name": "n", "steps": [{"id": "a", "type": "task", "action": "http"}]}
    assert not schema_accepts(document)
    assert model_errors(document)
    echo = {"name": "n", "steps": [{"id": "a", "type": "task", "action": "echo"}]}
    assert schema_accepts(echo)
    assert not model_errors(echo)
