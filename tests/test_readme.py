"""The README's claims that code can check: its example definition is valid."""

from __future__ import annotations

import json
from pathlib import Path

from interpreter.model import TaskStep
from interpreter.validate import load_definition

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_definition_is_valid() -> None:
    text = README.read_text()
    block = text.split("## A definition", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    definition = load_definition(json.loads(block))
    assert definition.name == "intervention"
    assert [s.id for s in definition.steps] == ["email", "wait", "office_hours", "check", "answered", "done"]
    assert all(s.action == "http" for s in definition.steps if isinstance(s, TaskStep))
