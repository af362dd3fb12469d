"""The content hash of a stored definition must not move when the model grows.

The registry keys bodies by :func:`interpreter.validate.definition_hash` (canonical JSON with every
default filled in), and runs started from the registry carry it. A field added to any definition
model changes that canonical JSON unless the model lists it in ``LATER_FIELDS``: this test pins the
hash of one definition that uses every step kind of the first stored version of the model, so such a
change fails here instead of silently re-keying every stored definition.
"""

from __future__ import annotations

from typing import Any

from interpreter.validate import definition_hash, load_definition

EVERY_KIND: dict[str, Any] = {
    "name": "every-kind",
    "version": 3,
    "description": "one of each step kind",
    "trigger": {"type": "event", "event": "thing.happened"},
    "defaults": {"retry": {"maximum_attempts": 2}},
    "steps": [
        {"id": "call", "type": "task", "action": "echo", "input": {"x": "{{ input.x }}"}},
        {
            "id": "check",
            "type": "condition",
            "if": "steps.call.output.x == 1",
            "then": {"steps": [{"id": "one", "type": "set", "vars": {"n": 1}}]},
            "else": {"goto": "wait"},
        },
        {
            "id": "pick",
            "type": "switch",
            "cases": [
                {"when": "vars.n == 1", "then": {"steps": [{"id": "p1", "type": "set", "vars": {"p": 1}}]}}
            ],
            "default": {"steps": [{"id": "p0", "type": "set", "vars": {"p": 0}}]},
        },
        {
            "id": "fan",
            "type": "parallel",
            "branches": [
                {"id": "a", "steps": [{"id": "a1", "type": "task", "action": "echo", "input": {}}]},
                {"id": "b", "steps": [{"id": "b1", "type": "task", "action": "echo", "input": {}}]},
            ],
        },
        {
            "id": "each",
            "type": "foreach",
            "items": "input.list",
            "steps": [{"id": "item", "type": "task", "action": "echo", "input": {"i": "{{ item }}"}}],
        },
        {"id": "wait", "type": "delay", "duration": "1h"},
        {
            "id": "ok",
            "type": "approval",
            "approvers": ["alice"],
            "timeout": "2d",
            "fields": ["comment", {"name": "amount", "type": "number", "required": True}],
        },
        {"id": "done", "type": "succeed", "output": {"ok": True}},
        {"id": "boom", "type": "fail", "message": "never"},
    ],
}

# Recorded from the model as it stood when the registry first stored definitions with all of the
# above; it only changes if the canonical JSON of existing content changes, which must not happen.
PINNED = "da80508a95bc7973ada3bcc29597c5e2c9566bfdafad611613516e19a5b5ae10"


def test_the_hash_of_existing_content_does_not_move_as_the_model_grows() -> None:
    definition = load_definition(EVERY_KIND, known_actions=["echo"])
    assert definition_hash(definition) == PINNED


def test_new_fields_at_their_defaults_are_left_out_but_count_once_set() -> None:
    definition = load_definition(EVERY_KIND, known_actions=["echo"])
    with_trigger = load_definition(
        {**EVERY_KIND, "triggers": [{"type": "event", "event": "thing.happened"}]}, known_actions=["echo"]
    )
    assert definition_hash(with_trigger) != definition_hash(definition)


def test_cancel_on_at_its_default_is_left_out_but_counts_once_set() -> None:
    definition = load_definition(EVERY_KIND, known_actions=["echo"])
    cancelling = load_definition(
        {**EVERY_KIND, "cancel_on": [{"event": "thing.withdrawn", "key": "{{ input.id }}"}]},
        known_actions=["echo"],
    )
    assert definition_hash(definition) == PINNED
    assert definition_hash(cancelling) != PINNED
