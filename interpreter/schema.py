"""The JSON Schema of the definition format, generated from the pydantic models.

Editors and other tools validate definitions against the checked-in
``schema/definition.schema.json``; the models in :mod:`interpreter.model` are the source of truth.
Regenerate it after changing a model::

    python -m interpreter.schema            # or: make schema
    python -m interpreter.schema --check    # exit 1 if the checked-in file is stale (CI)

The schema covers structure only (types, fields, patterns, bounds), including each action's input
(from the registry :data:`interpreter.actions.ACTION_INPUTS`: a task's ``action`` is one of its
names, and its ``input`` is that action's model, where any value may instead be a template string,
checked at run time). The rules that need the whole definition (jump targets, loops, nesting depth,
template syntax) are checked by :func:`interpreter.validate.load_definition`, which remains the
authority.

Generation is pure; only :func:`main` touches the file system.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interpreter.actions import ACTION_INPUTS
from interpreter.model import Definition

__all__ = ["JSON_SCHEMA_DIALECT", "SCHEMA_PATH", "definition_schema", "main", "render_schema"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The dialect pydantic generates."""

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "definition.schema.json"
"""Where the checked-in schema lives in the repository."""


def definition_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow definition (field names as written in JSON, e.g. ``if``).

    Returns:
        ``Definition.model_json_schema(by_alias=True)`` with the ``$schema`` dialect added.
    """
    schema = Definition.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    task = defs["TaskStep"]
    task["properties"]["action"]["enum"] = list(ACTION_INPUTS)
    task["allOf"] = []
    for name, model in ACTION_INPUTS.items():
        title = f"{model.__name__}"
        inner = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(inner.pop("$defs", {}))
        defs[title] = _templatable(inner)
        then: dict[str, Any] = {"properties": {"input": {"$ref": f"#/$defs/{title}"}}}
        if inner.get("required"):
            then["required"] = ["input"]  # an absent input is {}, which lacks the required fields
        task["allOf"].append(
            {"if": {"properties": {"action": {"const": name}}, "required": ["action"]}, "then": then}
        )
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


TEMPLATE_STRING: dict[str, Any] = {
    "type": "string",
    "pattern": "\\{\\{|\\{%",
    "description": "a template, rendered at run time to a value of the expected type",
}
"""A string with template syntax, allowed wherever an action input holds a typed value."""


def _templatable(schema: dict[str, Any]) -> dict[str, Any]:
    """An action input's object schema where each field's value (and each item or value inside
    it) may instead be a template string."""

    def value(node: dict[str, Any]) -> dict[str, Any]:
        node = dict(node)
        if isinstance(node.get("items"), dict):
            node["items"] = value(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = value(node["additionalProperties"])
        annotations: dict[str, Any] = {
            k: node.pop(k) for k in ("title", "description", "default") if k in node
        }
        if not node or node == {"type": "string"}:
            return {**annotations, **node}  # any value, or any string already
        return {**annotations, "anyOf": [node, TEMPLATE_STRING]}

    def static(node: dict[str, Any]) -> dict[str, Any]:
        # A field that must be literal text (an SQL statement): no template, and none inside it.
        node = {k: v for k, v in node.items() if k != "x-static"}
        return {**node, "not": {"pattern": STATIC_REFUSED_PATTERN}}

    out = dict(schema)
    out["properties"] = {
        name: static(field) if field.get("x-static") else value(field)
        for name, field in schema.get("properties", {}).items()
    }
    return out


STATIC_REFUSED_PATTERN = "\\{\\{|\\{%|\\{#"
"""Template syntax, refused in fields that must be static text."""


def render_schema() -> str:
    """The schema as the checked-in file holds it: indented JSON, sorted keys, trailing newline."""
    return json.dumps(definition_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the schema file, or with ``--check`` verifies it is current.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when written or current, 1 when ``--check`` finds the file stale.
    """
    parser = argparse.ArgumentParser(
        prog="python -m interpreter.schema", description="Write the workflow definition JSON Schema."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the models")
    parser.add_argument(
        "--output", type=Path, default=SCHEMA_PATH, help=f"schema file (default: {SCHEMA_PATH})"
    )
    args = parser.parse_args(argv)
    expected = render_schema()
    path: Path = args.output
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != expected:
            state = "is missing" if current is None else "is stale"
            sys.stderr.write(f"{path} {state}: run `make schema` (python -m interpreter.schema)\n")
            return 1
        sys.stdout.write(f"{path} is up to date\n")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(expected, encoding="utf-8")
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
