"""Typed run input: a definition's ``input_schema`` (JSON Schema, draft 2020-12).

Two checks, both before anything starts (never in workflow code):

* :func:`schema_problems`: the schema itself, at ``wfa validate`` and registration: a valid draft
  2020-12 schema, at most :data:`MAX_SCHEMA_BYTES` of JSON, references only inside itself (a
  definition is untrusted: no ``$ref`` may make the validator fetch a URL), and no ``pattern`` with
  a quantified group that itself holds a quantifier (the classic catastrophic-backtracking shape;
  Python's ``re`` has no time limit, and the input comes from outside).
* :func:`input_problems`: a run's input against the schema, for every way a run starts (the
  client and ``wfa start``, schedules, webhooks, events, row changes). Each problem names the JSON
  path inside the input (``$.customer.email``).

The ``llm`` action's ``json_schema`` is held to the same rules (:func:`schema_hazards`), and its
answer is checked with :func:`schema_value_problems`, also in a process of its own
(``activities.input_check``).

``jsonschema`` is imported on first use, so workflow code importing the model never loads it.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

    from interpreter.model import Definition
    from interpreter.validate import Problem

__all__ = [
    "MAX_INPUT_PROBLEMS",
    "MAX_SCHEMA_BYTES",
    "SchemaUnusableError",
    "clip",
    "input_problems",
    "schema_hazards",
    "schema_input_problems",
    "schema_problems",
    "schema_value_problems",
]

MAX_SCHEMA_BYTES = 64 * 1024
"""The largest ``input_schema`` (as compact JSON) a definition may declare."""

MAX_INPUT_PROBLEMS = 20
"""At most this many problems are reported for one input (the first ones by path)."""
MAX_SCANNED_ERRORS = 200
"""At most this many errors are collected from the validator (each message may quote the value it
is about): the problems reported are the first ones by path among them."""

# A group holding a quantifier, itself quantified: (a+)+, (\w*)*, (x{2,})+ ... As a regular
# expression, which :func:`_nests_quantifiers` finds in linear time (this one backtracks: 5 s on a
# 32 KB pattern, found by an attacker's probe); kept as the reference its tests compare with.
_NESTED_QUANTIFIER = re.compile(
    r"\((?:[^()\\]|\\.)*(?:[*+]|\{\d*,?\d*\})(?:[^()\\]|\\.)*\)(?:[*+]|\{\d*,?\d*\})"
)
# A quantifier in braces: possessive, so a brace of many digits never closed is read once.
_BRACE_QUANTIFIER = re.compile(r"\{\d*+,?+\d*+\}")


def _quantifier_at(pattern: str, at: int) -> int:
    """The length of the quantifier (``*``, ``+``, ``{m,n}``) starting at ``at``, or 0."""
    if pattern.startswith(("*", "+"), at):
        return 1
    found = _BRACE_QUANTIFIER.match(pattern, at)
    return 0 if found is None else found.end() - at


def _nests_quantifiers(pattern: str) -> bool:
    """Whether ``pattern`` holds what :data:`_NESTED_QUANTIFIER` finds, in one pass: from any
    ``(``, tokens (a character but ``(``, ``)`` and ``\\``, or ``\\`` and one character but a
    newline), one of which starts a quantifier, up to ``)``, followed by a quantifier."""
    size, i = len(pattern), 0
    while True:
        start = pattern.find("(", i)
        if start < 0:
            return False
        j, quantified = start + 1, False
        while j < size:
            char = pattern[j]
            if char == "\\":
                if j + 1 >= size or pattern[j + 1] == "\n":
                    break
                j += 2
            elif char in "()":
                break
            else:
                quantified = quantified or _quantifier_at(pattern, j) > 0
                j += 1
        if j < size and pattern[j] == ")" and quantified and _quantifier_at(pattern, j + 1):
            return True
        # A "(" before j was read as an escaped one ("\\("): from it, the same tokens lead to
        # the same stop, with fewer of them, so it cannot match either; j is where to look next.
        i = j


def _points(schema: Any, ref: str) -> bool:
    """Whether the JSON pointer of ``ref`` (``#/$defs/name``) names a place in ``schema``."""
    from urllib.parse import unquote

    here = schema
    for raw in unquote(ref[2:]).split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        else:
            return False
    return True


def _path(base: str, parts: Iterator[Any] | Any) -> str:
    path = base
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(str(part))}]"
    return path


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (path, object) of a JSON value: the objects a schema keyword can sit in."""
    stack = [(path, value)]
    while stack:
        here, item = stack.pop()
        if isinstance(item, dict):
            yield here, item
            stack.extend((_path(here, [key]), sub) for key, sub in item.items())
        elif isinstance(item, list):
            stack.extend((f"{here}[{i}]", sub) for i, sub in enumerate(item))


def schema_problems(schema: Mapping[str, Any], path: str = "$.input_schema") -> list[Problem]:
    """What is wrong with a declared ``input_schema`` (empty when it is usable).

    Args:
        schema: The declared schema.
        path: The JSON path of the schema in the definition (problems are placed under it).
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    from interpreter.validate import Problem

    try:
        size = len(json.dumps(schema, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as err:
        return [Problem(path, f"not representable as JSON: {err}")]
    if size > MAX_SCHEMA_BYTES:
        return [Problem(path, f"the schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed")]
    problems: list[Problem] = []
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        problems.append(
            Problem(_path(path, err.absolute_path), f"not a valid JSON Schema (draft 2020-12): {err.message}")
        )
    except RecursionError:
        return [Problem(path, "nested too deeply")]
    return problems + schema_hazards(schema, path)


class SchemaUnusableError(ValueError):
    """A schema that cannot be applied to a value (an unresolvable reference, ...)."""


def schema_hazards(schema: Mapping[str, Any], path: str = "$", *, pointers: bool = False) -> list[Problem]:
    """What makes a schema unsafe to check untrusted values with, apart from its validity as a JSON
    Schema: a reference outside it (nothing is fetched) and a ``pattern`` with a nested quantifier.

    Args:
        schema: The declared schema (``input_schema``, an ``llm`` step's ``json_schema``).
        path: The JSON path of the schema in the definition (problems are placed under it).
        pointers: Also a JSON-pointer reference (``#/$defs/...``) that points at nothing (checked
            when only the schema's root may hold ``$id``). Not for ``input_schema``: stored
            definitions are loaded with its rules, which never had this one.
    """
    from interpreter.validate import Problem

    problems: list[Problem] = []
    nodes = sorted(_walk(schema, path))
    pointers = pointers and not any("$id" in node for here, node in nodes if here != path)
    for here, node in nodes:
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str) and not ref.startswith("#"):
                problems.append(
                    Problem(
                        f"{here}.{keyword}",
                        f"{ref[:200]!r} refers outside the schema: only references inside it (#/$defs/...)"
                        " are allowed (nothing is fetched)",
                    )
                )
            elif pointers and isinstance(ref, str) and ref.startswith("#/") and not _points(schema, ref):
                problems.append(
                    Problem(f"{here}.{keyword}", f"{ref[:200]!r} refers to nothing in the schema")
                )
        patterns: list[tuple[str, Any]] = [(f"{here}.pattern", node.get("pattern"))]
        if isinstance(node.get("patternProperties"), dict):
            patterns.extend((f"{here}.patternProperties", key) for key in node["patternProperties"])
        for where, pattern in patterns:
            if isinstance(pattern, str) and _nests_quantifiers(pattern):
                problems.append(
                    Problem(
                        where,
                        f"pattern {pattern[:200]!r} repeats a group that repeats itself (like (a+)+):"
                        " such patterns can take exponential time on hostile input; rewrite it",
                    )
                )
    return problems


@functools.lru_cache(maxsize=256)
def _validator(canonical: str, *, dialect: bool = False) -> Validator:
    """The validator of a schema: draft 2020-12 with its formats asserted (an ``input_schema``),
    or (``dialect``) the draft its ``$schema`` names, formats only annotations (``json_schema``)."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    schema = json.loads(canonical)
    if dialect:
        return validator_for(schema, default=Draft202012Validator)(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def input_problems(definition: Definition, input: Any) -> list[Problem]:
    """The problems of a run input against the definition's ``input_schema`` (empty: acceptable).

    Without a schema every JSON object is acceptable (the input must still be an object). Paths
    are inside the input, rooted at ``$`` (``$.order.items[2].sku``); at most
    :data:`MAX_INPUT_PROBLEMS` are returned, sorted by path.

    Args:
        definition: The definition the run would start from.
        input: The run input, as decoded from JSON.
    """
    return schema_input_problems(definition.input_schema, input)


def schema_input_problems(schema: Mapping[str, Any] | None, input: Any) -> list[Problem]:
    """:func:`input_problems` against a schema (a definition's ``input_schema``, or None)."""
    from interpreter.validate import Problem

    if not isinstance(input, Mapping):
        return [Problem("$", f"the run input must be a JSON object, not {type(input).__name__}")]
    if schema is None:
        return []  # without loading jsonschema: most definitions declare no schema
    try:
        return _problems(_validator(json.dumps(schema, sort_keys=True, separators=(",", ":"))), dict(input))
    except RecursionError:
        return [Problem("$", "the input is nested too deeply")]
    except SchemaUnusableError as err:
        return [Problem("$", f"the definition's input_schema cannot be applied: {err}")]


def schema_value_problems(schema: Mapping[str, Any], value: Any) -> list[Problem]:
    """The problems of any JSON value (an ``llm`` step's answer) against a schema of the draft its
    ``$schema`` names (2020-12 by default; ``format`` not asserted): as :func:`input_problems`.

    Raises:
        SchemaUnusableError: The schema cannot be applied (an unresolvable reference, ...).
    """
    from interpreter.validate import Problem

    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    try:
        return _problems(_validator(canonical, dialect=True), value)
    except RecursionError:
        return [Problem("$", "the value is nested too deeply")]


def _problems(validator: Validator, value: Any) -> list[Problem]:
    """The first :data:`MAX_INPUT_PROBLEMS` problems of ``value`` by path.

    Raises:
        RecursionError: The value (or the schema) is nested too deeply.
        SchemaUnusableError: The schema cannot be applied.
    """
    from jsonschema.exceptions import ValidationError

    from interpreter.validate import Problem

    found: list[Problem] = []
    try:
        errors: list[ValidationError] = list(
            itertools.islice(validator.iter_errors(value), MAX_SCANNED_ERRORS)
        )
    except RecursionError:
        raise
    except Exception as err:  # a schema that cannot be applied (e.g. an unresolvable reference)
        raise SchemaUnusableError(clip(f"{type(err).__name__}: {err}", 500)) from None
    for error in errors:
        found.append(Problem(_path("$", error.absolute_path), _message(error)))
    found.sort(key=lambda problem: (problem.path, problem.message))
    return found[:MAX_INPUT_PROBLEMS]


def _message(error: Any) -> str:
    return clip(str(error.message), 500)


def clip(text: str, most: int) -> str:
    """``text``, or its first ``most`` - 1 characters and "…"."""
    return text if len(text) <= most else text[: most - 1] + "…"
