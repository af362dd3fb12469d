"""Approval form fields are declared: the attacker's data first, then every rule of the form.

The attack: an approval without ``fields`` merged whatever a decision's data held into ``vars``,
so an approver (or a forger) replaced ``vars.payout_url`` and the run's secret-bearing request
went to another host. Now a decision carries only the declared fields, each checked against its
declaration, and no field may hand a variable another step writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interpreter.engine import PATCH_DECLARED_FORM_FIELDS, DecisionError, Engine, RunInfo
from interpreter.model import FormField
from interpreter.state import Decision, DecisionKind, RunState
from interpreter.validate import DefinitionError, definition_hash, load_definition
from tests.interpreter.fake_runtime import FakeRuntime

APPROVE, REJECT = DecisionKind.APPROVE, DecisionKind.REJECT
PAYOUT = "https://payouts.example.test/pay"


def approval(step_id: str = "review", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "approval", "approvers": ["alice"], **fields}


def doc(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "test", "steps": list(steps)}


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_definition(data, known_actions=["echo"])
    return [(p.path, p.message) for p in info.value.problems]


def payout_definition(**review: Any) -> dict[str, Any]:
    """The attacked definition: a payout URL set by the definition, an approval, then the payout."""
    return doc(
        {"id": "init", "type": "set", "vars": {"payout_url": PAYOUT}},
        approval(**review),
        {"id": "pay", "type": "task", "action": "echo", "input": {"url": "{{ vars.payout_url }}"}},
    )


class OldRuntime(FakeRuntime):
    """A runtime replaying a history recorded before the declared-form-fields change."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def patched(self, patch_id: str) -> bool:
        self.asked.append(patch_id)
        return patch_id != PATCH_DECLARED_FORM_FIELDS


async def waiting_engine(
    definition: dict[str, Any], rt: FakeRuntime | None = None
) -> tuple[Engine, FakeRuntime, Any]:
    rt = rt or FakeRuntime()

    async def echo(call: Any, attempt: int) -> Any:
        del attempt
        return call.request.input

    rt.on("echo", echo)
    engine = Engine(
        load_definition(definition, known_actions=["echo"]),
        {},
        rt,
        RunInfo(workflow_id="wf-1", run_id="run-1", started_at=rt.now()),
    )
    main = rt.spawn(engine.run())
    await rt.run_until(lambda: engine.awaiting_approval)
    return engine, rt, main


# ------------------------------------------------------------------------------- the attack


async def test_payout_url_cannot_be_overwritten_through_form_data() -> None:
    engine, rt, main = await waiting_engine(payout_definition(fields=["comment"]))
    forged = Decision(actor="alice", data={"payout_url": "https://evil.test/", "comment": "ok"})
    with pytest.raises(DecisionError, match=r"unknown form fields \['payout_url'\] for step 'review'"):
        engine.check_decision(APPROVE, forged)
    with pytest.raises(DecisionError, match=r"\(allowed: \['comment'\]\)"):
        engine.decide(APPROVE, forged)
    assert engine.decisions[-1].accepted is False
    engine.decide(APPROVE, Decision(actor="alice", data={"comment": "ok"}))
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert rt.calls[0].input == {"url": PAYOUT}
    assert engine.vars == {"payout_url": PAYOUT, "comment": "ok"}


async def test_without_fields_a_decision_carries_no_data() -> None:
    engine, rt, main = await waiting_engine(payout_definition())
    with pytest.raises(DecisionError, match=r"unknown form fields \['payout_url'\].*declares no fields"):
        engine.decide(APPROVE, Decision(actor="alice", data={"payout_url": "https://evil.test/"}))
    engine.decide(APPROVE, Decision(actor="alice", reason="fine"))
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert rt.calls[0].input == {"url": PAYOUT}


def test_a_field_may_not_hand_a_variable_a_set_step_writes() -> None:
    [(path, message)] = problems(payout_definition(fields=["comment", "payout_url"]))
    assert path == "$.steps[1].fields[1]"
    assert message.startswith(
        "form field 'payout_url' would overwrite vars.payout_url, set by step 'init' at"
        " $.steps[0].vars.payout_url"
    )


def test_a_field_may_not_hand_a_variable_another_approval_hands() -> None:
    found = problems(
        doc(approval("first", fields=["comment"]), approval("second", fields=[{"name": "comment"}]))
    )
    assert [p for p, _ in found] == ["$.steps[0].fields[0]", "$.steps[1].fields[0]"]
    assert "another approval's form field (step 'second')" in found[0][1]


def test_a_set_step_nested_anywhere_counts_and_a_loop_is_its_own_writer() -> None:
    nested_set = {
        "id": "branch",
        "type": "condition",
        "if": "true",
        "then": {"steps": [{"id": "later", "type": "set", "vars": {"note": "x"}}]},
    }
    [(path, message)] = problems(doc(approval(fields=["note"]), nested_set))
    assert (path, "set by step 'later'" in message) == ("$.steps[0].fields[0]", True)
    # The same approval met again (a foreach item, a loop) hands the same variable: allowed.
    looped = {"id": "each", "type": "foreach", "items": "[1, 2]", "steps": [approval(fields=["note"])]}
    load_definition(doc(looped), known_actions=["echo"])


# ---------------------------------------------------------------------------- declarations


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["a", {"name": "a"}], "form fields ['a'] are declared more than once"),
        ([{"name": "a", "values": ["x"]}], "field 'a': 'values' applies only to type 'enum'"),
        ([{"name": "a", "type": "enum"}], "enum field 'a' needs 'values' (the allowed values)"),
        ([{"name": "a", "type": "enum", "values": ["x", "x"]}], "enum field 'a' lists ['x'] more than once"),
        (
            [{"name": "a", "type": "number", "max_length": 3}],
            "field 'a': 'max_length' applies only to type 'string'",
        ),
        (
            [{"name": "a", "type": "enum", "values": []}],
            "List should have at least 1 item after validation, not 0",
        ),
        ([{"name": "a", "type": "text"}], "should be 'string', 'number', 'boolean', 'enum' or 'date'"),
        ([{"name": "a", "required": "yes"}], "should be a valid boolean"),
        ([{"name": "a", "max_length": 0}], "should be greater than or equal to 1"),
        ([{"name": "a", "label": "A"}], "unknown field"),
    ],
)
def test_bad_declarations_are_refused_in_words(fields: list[Any], message: str) -> None:
    found = problems(doc(approval(fields=fields)))
    assert any(message in m for _, m in found), found


@pytest.mark.parametrize("name", ["payout-url", "1st", "a b", "vars.x", "", "x" * 65])
def test_field_names_are_identifiers(name: str) -> None:
    for declared in (name, {"name": name}):
        found = problems(doc(approval(fields=[declared])))
        assert found
        assert all(path.startswith("$.steps[0].fields[0]") for path, _ in found), found


def test_a_bare_name_is_an_optional_string_field_and_keeps_the_content_hash() -> None:
    example = Path(__file__).parents[2] / "examples" / "expense-approval.json"
    # The body as it was stored before the example declared `triggers` (its legacy `trigger` still
    # loads, as stored bodies must).
    text = example.read_text().replace(
        '"triggers": [{"type": "event", "id": "submitted", "event": "expense.submitted"}],',
        '"trigger": {"type": "event", "event": "expense.submitted"},',
    )
    assert '"trigger": {' in text
    definition = load_definition(text)
    assert '"fields": ["comment"]' in text
    # Written out, the shorthand stays the shorthand: the hash of a stored body does not move.
    assert json.dumps(definition.model_dump(mode="json", by_alias=True)).count('"fields": ["comment"]') == 1
    assert definition_hash(definition) == "c16a1328b5c674e313c8a1d509e5b1123515ee8d2e3d1f08ddaec18260c84966"
    step = load_definition(doc(approval(fields=["note"])), known_actions=["echo"]).steps[0]
    assert step.form == [FormField(name="note")]  # type: ignore[union-attr]


# -------------------------------------------------------------------------------- decisions

FORM: list[Any] = [
    {"name": "comment", "max_length": 10},
    {"name": "amount", "type": "number", "required": True},
    {"name": "urgent", "type": "boolean"},
    {"name": "next_action", "type": "enum", "values": ["demo", "nurture"]},
    {"name": "call_date", "type": "date"},
    "notes",
]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"amount": 1, "role": "admin"},
            "unknown form fields ['role'] for step 'review' (allowed: ['comment', 'amount', 'urgent', 'next_action', 'call_date', 'notes'])",
        ),
        ({}, "form field 'amount' of step 'review' is required"),
        ({"amount": "5"}, "form field 'amount' of step 'review' must be a number, got a string"),
        ({"amount": True}, "form field 'amount' of step 'review' must be a number, got a boolean"),
        (
            {"amount": 1, "comment": "x" * 11},
            "form field 'comment' of step 'review' is 11 characters long (at most 10)",
        ),
        (
            {"amount": 1, "notes": "x" * 1001},
            "form field 'notes' of step 'review' is 1001 characters long (at most 1000)",
        ),
        ({"amount": 1, "comment": 3}, "form field 'comment' of step 'review' must be a string, got a number"),
        ({"amount": 1, "comment": None}, "form field 'comment' of step 'review' must be a string, got null"),
        (
            {"amount": 1, "urgent": "true"},
            "form field 'urgent' of step 'review' must be true or false, got a string",
        ),
        (
            {"amount": 1, "next_action": "call"},
            "form field 'next_action' of step 'review' must be one of ['demo', 'nurture'], got 'call'",
        ),
        ({"amount": 1, "next_action": ["demo"]}, "must be one of ['demo', 'nurture'], got a list"),
        (
            {"amount": 1, "call_date": "2026-02-30"},
            "form field 'call_date' of step 'review' must be a date as YYYY-MM-DD, got '2026-02-30'",
        ),
        ({"amount": 1, "call_date": "2026-12-01T10:00:00Z"}, "must be a date as YYYY-MM-DD"),
        ({"amount": 1, "call_date": "20261201"}, "must be a date as YYYY-MM-DD"),
        ({"amount": 1, "call_date": 20261201}, "must be a date (YYYY-MM-DD), got a number"),
        ({"amount": float("inf")}, "form field 'amount' of step 'review' must be a finite number"),
    ],
)
async def test_data_that_does_not_fit_the_form_is_refused_naming_field_and_step(
    data: dict[str, Any], message: str
) -> None:
    engine, _, _ = await waiting_engine(doc(approval(fields=FORM)))
    with pytest.raises(DecisionError) as info:
        engine.decide(APPROVE, Decision(actor="alice", data=data))
    assert message in str(info.value)
    assert engine.decisions[-1].refusal == str(info.value)
    assert engine.awaiting_approval  # nothing changed


async def test_data_that_fits_is_merged_under_the_declared_names() -> None:
    engine, rt, main = await waiting_engine(doc(approval(fields=FORM)))
    data = {
        "amount": 12.5,
        "comment": "x" * 10,
        "urgent": False,
        "next_action": "demo",
        "call_date": "2026-12-24",
        "notes": "",
    }
    engine.decide(APPROVE, Decision(actor="alice", data=data))
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert engine.vars == data


async def test_any_json_number_fits_a_number_field() -> None:
    engine, rt, main = await waiting_engine(doc(approval(fields=[{"name": "n", "type": "number"}])))
    engine.check_decision(APPROVE, Decision(actor="alice", data={"n": 10**400}))  # no overflow
    engine.check_decision(APPROVE, Decision(actor="alice", data={"n": -0.5}))
    engine.decide(APPROVE, Decision(actor="alice", data={"n": 0}))
    await rt.run(main)
    assert engine.vars == {"n": 0}


async def test_a_rejection_may_leave_out_required_fields_but_not_break_types() -> None:
    definition = doc(approval(fields=FORM, on_reject="continue"))
    engine, rt, main = await waiting_engine(definition)
    with pytest.raises(DecisionError, match="must be a number"):
        engine.decide(REJECT, Decision(actor="alice", data={"amount": "lots"}))
    engine.decide(REJECT, Decision(actor="alice", reason="no", data={"comment": "too much"}))
    result = await rt.run(main)
    assert result.state == RunState.COMPLETED
    assert engine.vars == {"comment": "too much"}


async def test_the_status_shows_the_declared_form() -> None:
    engine, _, _ = await waiting_engine(doc(approval(fields=FORM)))
    [pending] = engine.status().pending_approvals
    assert pending.fields == ["comment", "amount", "urgent", "next_action", "call_date", "notes"]
    assert [f.model_dump(mode="json", exclude_defaults=True) for f in pending.form][:2] == [
        {"name": "comment", "max_length": 10},
        {"name": "amount", "type": "number", "required": True},
    ]
    engine_without, _, _ = await waiting_engine(doc(approval()))
    [pending] = engine_without.status().pending_approvals
    assert (pending.fields, pending.form) == (None, [])


# ------------------------------------------------------------------------------------ replay


async def test_a_history_recorded_before_the_change_replays_what_it_accepted() -> None:
    # Replaying (the patch's marker absent), a decision only the new rule refuses is accepted as it
    # was, and merged as it was; the patch is asked only there.
    rt = OldRuntime()
    engine, rt, main = await waiting_engine(payout_definition(), rt)
    assert rt.asked == []
    engine.decide(APPROVE, Decision(actor="alice", data={"payout_url": "https://evil.test/"}))
    assert rt.asked == [PATCH_DECLARED_FORM_FIELDS]
    await rt.run(main)
    assert engine.vars["payout_url"] == "https://evil.test/"


async def test_what_the_old_rule_refused_is_refused_without_asking_the_patch() -> None:
    rt = OldRuntime()
    engine, _, _ = await waiting_engine(payout_definition(fields=["comment"]), rt)
    with pytest.raises(DecisionError, match="unknown form fields"):
        engine.decide(APPROVE, Decision(actor="alice", data={"payout_url": "https://evil.test/"}))
    engine.decide(APPROVE, Decision(actor="alice", data={"comment": "fine"}))
    assert rt.asked == []  # a decision that fits asks nothing either
