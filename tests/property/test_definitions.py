"""Validation of generated definitions, and the content hash's independence of key order.

Malformed definitions are made by injecting one known fault into a valid example (``examples/``) at a
generated place: none may be accepted, and the refusal must name the JSON path where the fault was
put. Valid definitions are made by changes that keep an example valid: none may be refused. A
definition's hash must not depend on the order of keys at any depth.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from interpreter.durations import format_duration, parse_duration
from interpreter.model import STEP_TYPES
from interpreter.validate import DefinitionError, definition_hash, load_definition
from tests.property.support import at, checks, example_documents, steps_of, strings_of

DOCUMENTS = example_documents()

Draw = st.DrawFn
# A fault puts one mistake into a document (in place) and returns the JSON paths where a refusal
# may name it: the field it changed, or (for a value that is itself a structure) a place inside it.
Fault = Callable[[Draw, dict[str, Any]], set[str]]

NAME = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
BROKEN_TEMPLATES = ["{{", "{{ input. }}", "{% if %}", "{{ (1 }}", "{{ }}", "{% for %}", "{{ input.a | }}"]
BROKEN_EXPRESSIONS = ["input.x ==", "(", "1 +", "input..a", "[1, 2", "not", "{{ input.x }}"]
BAD_DURATIONS = ["3 days", "P1Y", "P2M", "-5s", "5m1h", "30", "1x", "", "PT", "1.5.5s", "10 s s", "P1DT"]
# Characters that durations are made of, so generated bad ones are near misses, not just noise.
# No braces: a duration-or-template field would read a string with "{{" as a template.
DURATION_ALPHABET = "0123456789.,+-PTYMWDHSmswdhy "


def _ids(document: dict[str, Any]) -> set[str]:
    return {step["id"] for _, seq, i in steps_of(document) for step in [seq[i]]}


def _fresh_id(draw: Draw, document: dict[str, Any], prefix: str) -> str:
    taken = _ids(document)
    return draw(NAME.map(lambda n: f"{prefix}{n}").filter(lambda n: n not in taken), label="id")


def _step(draw: Draw, document: dict[str, Any], kind: str | None = None) -> tuple[str, dict[str, Any]]:
    found: list[tuple[str, dict[str, Any]]] = [
        (path, seq[i]) for path, seq, i in steps_of(document) if kind in (None, seq[i]["type"])
    ]
    chosen: tuple[str, dict[str, Any]] = draw(st.sampled_from(found), label="step")
    return chosen


def _bad_duration(draw: Draw) -> str:
    def refused(text: str) -> bool:
        try:
            parse_duration(text)
        except ValueError:
            return True
        return False

    near_miss = st.text(alphabet=DURATION_ALPHABET, max_size=12).filter(refused)
    return draw(st.one_of(st.sampled_from(BAD_DURATIONS), near_miss), label="duration")


# ------------------------------------------------------------------------------------------ faults


def unknown_field(draw: Draw, document: dict[str, Any]) -> set[str]:
    objects = [("$", document)] + [(path, seq[i]) for path, seq, i in steps_of(document)]
    for path, step in list(objects[1:]):
        for key in ("retry", "timeouts", "then", "else", "default", "escalation", "business_hours"):
            if isinstance(step.get(key), dict):
                objects.append((f"{path}.{key}", step[key]))
    for key in ("defaults", "trigger", "limits"):
        if isinstance(document.get(key), dict):
            objects.append((f"$.{key}", document[key]))
    path, target = draw(st.sampled_from(objects), label="object")
    key = draw(NAME.map(lambda n: f"x_{n}"), label="key")  # no model has a field named x_...
    target[key] = draw(st.one_of(st.integers(), st.text(STORABLE, max_size=5), st.none()), label="value")
    return {f"{path}.{key}"}


def wrong_type(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document)
    keys = sorted(k for k in step if k not in {"type", "input", "vars", "output"})
    key = draw(st.sampled_from(keys), label="field")
    value = step[key]
    if isinstance(value, str):
        wrong: list[Any] = [123, [value], {"x": 1}, 1.5]
    elif isinstance(value, bool):
        wrong = ["maybe", [value], {"x": 1}]
    elif isinstance(value, int):
        wrong = ["many", [value], {"x": 1}, 1.5]
    elif isinstance(value, list):
        wrong = ["oops", 7, {"x": 1}]
    else:
        wrong = ["oops", 7, [1]]
    step[key] = draw(st.sampled_from(wrong), label="wrong value")
    return {f"{path}.{key}"}


def wrong_root_type(draw: Draw, document: dict[str, Any]) -> set[str]:
    key = draw(st.sampled_from(["name", "version", "description", "steps", "trigger", "defaults"]))
    value = document.get(key)
    document[key] = draw(
        st.sampled_from(
            [7, ["x"]] if isinstance(value, str) else ["oops", 1.5] if key != "steps" else [7, "oops"]
        )
    )
    return {f"$.{key}"}


def duplicate_id(draw: Draw, document: dict[str, Any]) -> set[str]:
    steps = [(path, seq[i]) for path, seq, i in steps_of(document)]
    (first, a), (second, b) = draw(st.lists(st.sampled_from(steps), min_size=2, max_size=2, unique_by=id))
    b["id"] = a["id"]
    return {f"{first}.id", f"{second}.id"}


def jump_to_a_missing_step(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document)
    step["next"] = _fresh_id(draw, document, "missing_")
    return {f"{path}.next"}


def loop_without_max_visits(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, seq, index = draw(st.sampled_from(list(steps_of(document))), label="jumping step")
    target = seq[draw(st.integers(0, index), label="target index")]
    target.pop("max_visits", None)
    seq[index]["next"] = target["id"]
    return {f"{path}.next"}


def bad_duration(draw: Draw, document: dict[str, Any]) -> set[str]:
    bad = _bad_duration(draw)
    places = ["defaults"] + [
        path for path, seq, i in steps_of(document) if seq[i]["type"] in {"task", "delay", "approval"}
    ]
    where = draw(st.sampled_from(places), label="where")
    if where == "defaults":
        field = draw(st.sampled_from(["timeouts.start_to_close", "retry.initial_interval", "park_timeout"]))
        parent, _, name = f"defaults.{field}".rpartition(".")
        holder = document
        for part in parent.split("."):
            holder = holder.setdefault(part, {})
        holder[name] = bad
        return {f"$.defaults.{field}"}
    step = at(document, where)
    if step["type"] == "task":
        field = draw(
            st.sampled_from(["timeouts.start_to_close", "timeouts.heartbeat", "retry.maximum_interval"])
        )
        group, name = field.split(".")
        step[group] = {name: bad}
        return {f"{where}.{field}"}
    if step["type"] == "delay":
        for key in ("duration", "until", "business_hours"):
            step.pop(key, None)
        step["duration"] = bad
        return {f"{where}.duration"}
    step["timeout"] = bad
    step.pop("escalation", None)  # its 'after' must be shorter than a valid timeout
    return {f"{where}.timeout"}


def bad_template(draw: Draw, document: dict[str, Any]) -> set[str]:
    templates = [
        (path, holder, key)
        for step_path, seq, i in steps_of(document)
        for field in ("input", "vars", "output", "message", "until")
        if field in seq[i]
        for path, holder, key in (
            [(f"{step_path}.{field}", seq[i], field)]
            if isinstance(seq[i][field], str)
            else strings_of(seq[i][field], f"{step_path}.{field}")
        )
        if "{{" in holder[key] or "{%" in holder[key]
    ]
    path, holder, key = draw(st.sampled_from(templates), label="template")
    holder[key] = f"{holder[key]} {draw(st.sampled_from(BROKEN_TEMPLATES), label='broken')}"
    return {path}


def bad_expression(draw: Draw, document: dict[str, Any]) -> set[str]:
    places: list[tuple[str, dict[str, Any], str]] = []
    for path, seq, i in steps_of(document):
        step = seq[i]
        places.append((f"{path}.when", step, "when"))  # adding one is as wrong as spoiling one
        places.extend((f"{path}.{key}", step, key) for key in ("if", "items") if key in step)
        places.extend(
            (f"{path}.cases[{k}].when", case, "when") for k, case in enumerate(step.get("cases", []))
        )
    path, holder, key = draw(st.sampled_from(places), label="expression")
    holder[key] = draw(st.sampled_from(BROKEN_EXPRESSIONS), label="broken")
    return {path}


def reference_to_a_missing_step(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document, "task")
    missing = _fresh_id(draw, document, "missing_")
    key = draw(NAME, label="input key")
    step.setdefault("input", {})[key] = f"{{{{ steps.{missing}.output }}}}"
    return {f"{path}.input.{key}"}


def unknown_step_type(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document)
    step["type"] = draw(NAME.filter(lambda n: n not in STEP_TYPES), label="type")
    return {path}


def missing_required_field(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document)
    required = ["id", "type"] + (["action"] if step["type"] == "task" else [])
    field = draw(st.sampled_from(required), label="field")
    del step[field]
    return {path} if field == "type" else {f"{path}.{field}"}


def out_of_range(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document)
    choice = draw(st.sampled_from(["max_visits", "retry", "limits"]), label="bound")
    if choice == "limits":
        field = draw(st.sampled_from(["max_depth", "max_step_executions", "max_foreach_items"]))
        document.setdefault("limits", {})[field] = draw(st.sampled_from([0, -1, 10**8]))
        return {f"$.limits.{field}"}
    if choice == "retry" and step["type"] == "task":
        step["retry"] = {"maximum_attempts": draw(st.sampled_from([0, -3, 1001, 10**12]))}
        return {f"{path}.retry.maximum_attempts"}
    step["max_visits"] = draw(st.sampled_from([0, -1, 5001, 10**12]))
    return {f"{path}.max_visits"}


def unknown_action(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document, "task")
    step["action"] = draw(NAME.map(lambda n: f"x_{n}"), label="action")
    return {f"{path}.action"}


def bad_step_id(draw: Draw, document: dict[str, Any]) -> set[str]:
    path, step = _step(draw, document)
    step["id"] = draw(st.sampled_from(["has space", "1starts_with_digit", "", "dot.ted", "x" * 65, "é"]))
    return {f"{path}.id"}


FAULTS: list[Fault] = [
    unknown_field,
    wrong_type,
    wrong_root_type,
    duplicate_id,
    jump_to_a_missing_step,
    loop_without_max_visits,
    bad_duration,
    bad_template,
    bad_expression,
    reference_to_a_missing_step,
    unknown_step_type,
    missing_required_field,
    out_of_range,
    unknown_action,
    bad_step_id,
]


@st.composite
def malformed(draw: Draw) -> tuple[str, str, dict[str, Any], set[str]]:
    """(example file, fault name, the document with the fault, the paths that may name it)."""
    name = draw(st.sampled_from(sorted(DOCUMENTS)), label="example")
    document = copy.deepcopy(DOCUMENTS[name])
    fault = draw(st.sampled_from(FAULTS), label="fault")
    paths = fault(draw, document)
    return name, fault.__name__, document, paths


@checks(600)
@given(malformed())
def test_a_definition_with_an_injected_fault_is_refused_naming_where(
    case: tuple[str, str, dict[str, Any], set[str]],
) -> None:
    name, fault, document, paths = case
    event(fault)
    with pytest.raises(DefinitionError) as refused:
        load_definition(document)
    named = [p.path for p in refused.value.problems]
    assert any(
        path == where or path.startswith((f"{where}.", f"{where}[")) for path in named for where in paths
    ), f"{fault} in {name} at {sorted(paths)}: problems name {named}"


# ---------------------------------------------------------------------------- valid by construction

# Each keeps a valid document valid; several are applied in turn.
Change = Callable[[Draw, dict[str, Any]], None]
SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="{}%#\x00"), max_size=40)
STORABLE = st.characters(codec="utf-8", exclude_characters="\x00")
"""Any character a definition may hold: not a NUL (PostgreSQL refuses it) nor a lone surrogate."""


def relabel(draw: Draw, document: dict[str, Any]) -> None:
    _, step = _step(draw, document)
    step["name"] = draw(st.text(STORABLE, max_size=60), label="name")


def redescribe(draw: Draw, document: dict[str, Any]) -> None:
    document["description"] = draw(st.text(STORABLE, max_size=100), label="description")


def bound_visits(draw: Draw, document: dict[str, Any]) -> None:
    _, step = _step(draw, document)
    step["max_visits"] = draw(st.integers(1, 5000), label="max_visits")


def jump_forward(draw: Draw, document: dict[str, Any]) -> None:
    _, seq, index = draw(st.sampled_from(list(steps_of(document))), label="jumping step")
    if index + 1 < len(seq):
        seq[index]["next"] = seq[draw(st.integers(index + 1, len(seq) - 1), label="target index")]["id"]


def bounded_loop(draw: Draw, document: dict[str, Any]) -> None:
    _, seq, index = draw(st.sampled_from(list(steps_of(document))), label="jumping step")
    target = seq[draw(st.integers(0, index), label="target index")]
    target["max_visits"] = draw(st.integers(1, 5000), label="max_visits")
    seq[index]["next"] = target["id"]


def insert_set_step(draw: Draw, document: dict[str, Any]) -> None:
    sequences = [seq for _, seq, _ in steps_of(document)]
    seq = draw(st.sampled_from(sequences), label="sequence")
    value = st.one_of(st.integers(), st.booleans(), st.none(), SAFE_TEXT, st.just("{{ input | length }}"))
    variables = draw(st.dictionaries(NAME, value, min_size=1, max_size=3), label="vars")
    step = {"id": _fresh_id(draw, document, "s_"), "type": "set", "vars": variables}
    seq.insert(draw(st.integers(0, len(seq)), label="position"), step)


def retry_attempts(draw: Draw, document: dict[str, Any]) -> None:
    _, step = _step(draw, document, "task")
    step.setdefault("retry", {})["maximum_attempts"] = draw(st.integers(1, 1000), label="attempts")


def delay_duration(draw: Draw, document: dict[str, Any]) -> None:
    delays = [(p, s) for p, seq, i in steps_of(document) for s in [seq[i]] if s["type"] == "delay"]
    if delays:
        _, step = draw(st.sampled_from(delays), label="delay")
        for key in ("duration", "until", "business_hours"):
            step.pop(key, None)
        td = draw(st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=400)))
        step["duration"] = format_duration(td)


def guard(draw: Draw, document: dict[str, Any]) -> None:
    _, step = _step(draw, document)
    step["when"] = draw(
        st.sampled_from(["true", "input.flag", "input.n > 3 and not input.skip", "'a' in input"])
    )


CHANGES: list[Change] = [
    relabel,
    redescribe,
    bound_visits,
    jump_forward,
    bounded_loop,
    insert_set_step,
    retry_attempts,
    delay_duration,
    guard,
]


def shuffled(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with the keys of every object, at every depth, in a new order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {k: shuffled(value[k], rnd) for k in keys}
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    return value


def reversed_keys(value: Any) -> Any:
    """The same JSON value with the keys of every object, at every depth, in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


@st.composite
def valid(draw: Draw) -> tuple[str, list[str], dict[str, Any]]:
    """(example file, the changes made, the changed document)."""
    name = draw(st.sampled_from(sorted(DOCUMENTS)), label="example")
    document = copy.deepcopy(DOCUMENTS[name])
    changes = draw(st.lists(st.sampled_from(CHANGES), min_size=1, max_size=5), label="changes")
    for change in changes:
        change(draw, document)
    return name, [c.__name__ for c in changes], document


@checks(300)
@given(valid(), st.randoms(use_true_random=True))
def test_a_definition_changed_in_valid_ways_is_accepted_in_any_key_order(
    case: tuple[str, list[str], dict[str, Any]], rnd: random.Random
) -> None:
    name, changes, document = case
    try:
        definition = load_definition(document)
        reordered = load_definition(shuffled(document, rnd))
    except DefinitionError as err:
        pytest.fail(f"{name} after {changes} refused: {err}")
    assert definition_hash(reordered) == definition_hash(definition)


@checks(200)
@given(st.sampled_from(sorted(DOCUMENTS)), st.randoms(use_true_random=True))
def test_the_content_hash_does_not_depend_on_key_order(name: str, rnd: random.Random) -> None:
    document = DOCUMENTS[name]
    expected = definition_hash(load_definition(document))
    assert definition_hash(load_definition(shuffled(document, rnd))) == expected
    # Every object's keys reversed: surely another order, at every depth.
    assert definition_hash(load_definition(reversed_keys(document))) == expected
    # JSON text in any key order hashes the same as the mapping.
    assert definition_hash(load_definition(json.dumps(shuffled(document, rnd)))) == expected
