"""Validation: every rule refuses a bad definition with the exact JSON path of the problem."""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import pytest

from interpreter.actions import KNOWN_ACTIONS
from interpreter.engine import resolve_timeouts
from interpreter.model import STEP_TYPES, Definition, TaskStep
from interpreter.validate import DefinitionError, Problem, check_definition, definition_hash, load_definition

KNOWN = ", ".join(sorted(KNOWN_ACTIONS))

# ------------------------------------------------------------------------------------ helpers


def task(step_id: str = "a", action: str = "echo", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "task", "action": action, **fields}


def doc(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "test", "steps": list(steps), **fields}


def problems(data: Any, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_definition(data, **kwargs)
    return [(p.path, p.message) for p in info.value.problems]


def only_problem(data: Any, **kwargs: Any) -> tuple[str, str]:
    found = problems(data, **kwargs)
    assert len(found) == 1, found
    return found[0]


def nested(depth: int) -> dict[str, Any]:
    """A task wrapped in ``depth - 1`` conditions: its nesting depth is ``depth``."""
    step = task("leaf")
    for level in range(depth - 1):
        step = {"id": f"c{level}", "type": "condition", "if": "true", "then": {"steps": [step]}}
    return step


JUMP_BOUNDARY = (
    "jumps may only target steps in the same sequence or an enclosing one, and never leave a parallel"
    " branch, a foreach body, a compensation or an escalation"
)

# ------------------------------------------------------------------------- a valid definition

EVERY_KIND: dict[str, Any] = {
    "name": "every-kind",
    "version": 3,
    "description": "Uses every step kind once.",
    "trigger": {"type": "event", "event": "record.created"},
    "defaults": {"retry": {"maximum_attempts": 4}, "timeouts": {"start_to_close": "1m"}},
    "limits": {"max_depth": 4, "max_step_executions": 100, "max_foreach_items": 50},
    "steps": [
        {
            "id": "fetch",
            "name": "Fetch the order",
            "type": "task",
            "action": "http",
            "input": {"url": "https://example.test/orders/{{ input.order_id }}", "method": "GET"},
            "retry": {
                "preset": "linear",
                "initial_interval": "2s",
                "maximum_interval": "10s",
                "maximum_attempts": 5,
                "non_retryable_error_types": ["HttpClientError"],
            },
            "timeouts": {"start_to_close": "30s", "heartbeat": "10s", "schedule_to_close": "5m"},
            "on_failure": {"goto": "give_up"},
            "compensate": [{"id": "unfetch", "type": "task", "action": "echo", "input": {"undo": True}}],
        },
        {"id": "remember", "type": "set", "vars": {"total": "{{ steps.fetch.output.body.total }}"}},
        {
            "id": "answer",
            "type": "wait_for_event",
            "event": "family.answered",
            "key": "{{ input.family_id }}",
            "fields": ["note", {"name": "answer", "type": "enum", "values": ["yes", "no"]}],
            "timeout": "3d",
            "lookback": "1d",
            "on_timeout": "continue",
        },
        {
            "id": "big",
            "type": "condition",
            "if": "vars.total > 1000",
            "then": {
                "steps": [
                    {
                        "id": "sign_off",
                        "type": "approval",
                        "approvers": ["finance"],
                        "message": "Approve {{ vars.total }}?",
                        "fields": ["comment"],
                        "timeout": "2d",
                        "on_timeout": "reject",
                        "on_reject": {"goto": "give_up"},
                        "escalation": {
                            "after": "1d",
                            "add_approvers": ["cfo"],
                            "max_escalations": 1,
                            "steps": [
                                {"id": "nudge", "type": "task", "action": "echo", "input": {"to": "cfo"}}
                            ],
                        },
                    }
                ]
            },
            "else": {"goto": "route"},
        },
        {
            "id": "route",
            "type": "switch",
            "cases": [
                {
                    "when": "vars.total > 500",
                    "then": {"steps": [{"id": "mid", "type": "delay", "duration": "1h"}]},
                }
            ],
            "default": {"steps": [{"id": "small", "type": "delay", "until": "{{ input.ship_at }}"}]},
        },
        {
            "id": "fan",
            "type": "parallel",
            "join": "all",
            "branches": [
                {"id": "notify", "steps": [{"id": "mail", "type": "task", "action": "echo"}]},
                {
                    "id": "office",
                    "steps": [
                        {
                            "id": "open",
                            "type": "delay",
                            "business_hours": {"timezone": "America/Chicago", "days": ["mon", "fri"]},
                        }
                    ],
                },
            ],
        },
        {
            "id": "lines",
            "type": "foreach",
            "items": "steps.fetch.output.body.lines",
            "as": "line",
            "concurrency": 4,
            "max_items": 50,
            "steps": [
                {"id": "check_line", "type": "task", "action": "echo", "input": {"sku": "{{ line.sku }}"}}
            ],
            "output": "{{ steps.check_line.output }}",
        },
        {
            "id": "ship",
            "type": "subflow",
            "definition": "shipping",
            "version": 2,
            "input": {"order": "{{ input.order_id }}"},
        },
        {
            "id": "call_family",
            "type": "human_task",
            "title": "Call {{ input.order_id }}",
            "candidate_groups": ["coordinators"],
            "fields": [{"name": "outcome", "type": "enum", "values": ["reached", "no_answer"]}],
            "due": "2d",
            "on_timeout": "continue",
        },
        {"id": "poll", "type": "delay", "duration": "10s", "max_visits": 5},
        {"id": "again", "type": "condition", "if": "input.repeat", "then": {"goto": "poll"}},
        {"id": "done", "type": "succeed", "output": {"total": "{{ vars.total }}"}, "when": "vars.total > 0"},
        {
            "id": "give_up",
            "type": "fail",
            "message": "could not process {{ input.order_id }}",
            "error_type": "Order.Failed",
        },
    ],
    "output": {"lines": "{{ steps.lines.output }}"},
}


def test_a_definition_using_every_step_kind_is_valid() -> None:
    definition = load_definition(EVERY_KIND)
    assert isinstance(definition, Definition)
    kinds: set[str] = set()

    def collect(steps: list[Any]) -> None:
        from interpreter.model import children

        for step in steps:
            kinds.add(step.type)
            for _, inner, _ in children(step):
                collect(inner)

    collect(definition.steps)
    assert kinds == set(STEP_TYPES)
    assert check_definition(definition) == []


def test_json_text_and_bytes_are_accepted_and_hash_is_stable() -> None:
    text = json.dumps(EVERY_KIND)
    from_text = load_definition(text)
    from_bytes = load_definition(text.encode())
    assert from_text == from_bytes == load_definition(EVERY_KIND)
    assert definition_hash(from_text) == definition_hash(load_definition(json.loads(text)))
    changed = copy.deepcopy(EVERY_KIND)
    changed["steps"][0]["input"]["method"] = "HEAD"
    assert definition_hash(load_definition(changed)) != definition_hash(from_text)
    assert len(definition_hash(from_text)) == 64


# ---------------------------------------------------------------------------- document level


def test_invalid_json_text() -> None:
    path, message = only_problem('{"name": "x", "steps": [}')
    assert path == "$"
    assert message.startswith("not valid JSON: ")


@pytest.mark.parametrize("data", [[1, 2], "[1, 2]", "42", b'"text"', None])
def test_definition_must_be_an_object(data: Any) -> None:
    assert only_problem(data) == ("$", "a definition is a JSON object")


def test_missing_and_empty_steps() -> None:
    assert only_problem({"name": "x"}) == ("$.steps", "required field is missing")
    path, message = only_problem({"name": "x", "steps": []})
    assert path == "$.steps"
    assert "at least 1 item" in message


def test_bad_definition_name() -> None:
    path, message = only_problem(doc(task(), name="Not A Slug!"))
    assert path == "$.name"
    assert "should match pattern" in message


def test_error_message_lists_every_problem_with_the_name() -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition(doc(task("a", next="zz"), task("a"), task("b", action="nope")))
    err = info.value
    assert err.name == "test"
    assert [p.path for p in err.problems] == ["$.steps[1].id", "$.steps[2].action", "$.steps[0].next"]
    text = str(err)
    assert text.startswith("invalid workflow definition 'test' (3 problems):\n")
    assert "  $.steps[0].next: jump to unknown step 'zz'" in text
    assert str(Problem("$.x", "bad")) == "$.x: bad"


# ------------------------------------------------------------------------- types and fields


def test_unknown_step_type() -> None:
    path, message = only_problem(doc({"id": "a", "type": "teleport"}))
    assert path == "$.steps[0]"
    assert message == f"unknown step type 'teleport' (known: {', '.join(STEP_TYPES)})"


def test_step_without_type() -> None:
    assert only_problem(doc({"id": "a"}))[0] == "$.steps[0]"
    assert only_problem(doc({"id": "a"}))[1].startswith("step has no 'type'")


def test_unknown_step_type_nested_in_a_parallel_branch() -> None:
    data = doc(
        {
            "id": "p",
            "type": "parallel",
            "branches": [{"id": "b", "steps": [task("x"), {"id": "y", "type": "nap"}]}],
        }
    )
    path, message = only_problem(data)
    assert path == "$.steps[0].branches[0].steps[1]"
    assert message.startswith("unknown step type 'nap'")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (doc(task(colour="red")), "$.steps[0].colour"),
        (doc(task(), colour="red"), "$.colour"),
        (doc(task(retry={"attempts": 3})), "$.steps[0].retry.attempts"),
        (
            doc({"id": "c", "type": "condition", "if": "true", "then": {"steps": [task("x", priority=1)]}}),
            "$.steps[0].then.steps[0].priority",
        ),
        (
            doc({"id": "f", "type": "foreach", "items": "input.xs", "steps": [task()], "parallel": 2}),
            "$.steps[0].parallel",
        ),
    ],
)
def test_unknown_field(data: dict[str, Any], path: str) -> None:
    assert only_problem(data) == (path, "unknown field")


def test_bad_step_id() -> None:
    path, message = only_problem(doc(task("1st step")))
    assert path == "$.steps[0].id"
    assert "should match pattern" in message


def test_bad_on_failure_names_both_alternatives() -> None:
    path, message = only_problem(doc(task(on_failure="explode")))
    assert path == "$.steps[0].on_failure"
    assert message == (
        "should be 'fail', 'continue', 'compensate' or 'dead_letter' or {\"goto\": \"<step id>\"}"
    )


@pytest.mark.parametrize(
    "branch",
    [{"steps": [task("x")], "goto": "a"}, {}],
)
def test_branch_has_exactly_one_of_steps_or_goto(branch: dict[str, Any]) -> None:
    data = doc({"id": "c", "type": "condition", "if": "true", "then": branch})
    assert only_problem(data) == ("$.steps[0].then", "a branch has exactly one of 'steps' or 'goto'")


# ------------------------------------------------------------------------------------ actions


KNOWN = ", ".join(sorted(KNOWN_ACTIONS))
"""The registry's actions as the message lists them."""


def test_unknown_action() -> None:
    assert only_problem(doc(task(action="smtp"))) == (
        "$.steps[0].action",
        f"unknown action 'smtp' (known: {KNOWN})",
    )


def test_known_actions_can_be_given() -> None:
    load_definition(doc(task(action="smtp")), known_actions=["smtp"])
    assert only_problem(doc(task(action="echo")), known_actions=["smtp"]) == (
        "$.steps[0].action",
        "unknown action 'echo' (known: smtp)",
    )


def test_unknown_action_in_a_compensation() -> None:
    data = doc(task("a", compensate=[task("undo", action="rollback")]))
    assert only_problem(data)[0] == "$.steps[0].compensate[0].action"


# ---------------------------------------------------------------------------------- ids, jumps


def test_duplicate_ids_even_across_nesting() -> None:
    assert only_problem(doc(task("a"), task("a"))) == (
        "$.steps[1].id",
        "duplicate step id 'a' (first at $.steps[0])",
    )
    data = doc(task("a"), {"id": "p", "type": "parallel", "branches": [{"id": "b", "steps": [task("a")]}]})
    assert only_problem(data) == (
        "$.steps[1].branches[0].steps[0].id",
        "duplicate step id 'a' (first at $.steps[0])",
    )


@pytest.mark.parametrize(
    ("step", "path"),
    [
        (task("a", next="nowhere"), "$.steps[0].next"),
        (task("a", on_failure={"goto": "nowhere"}), "$.steps[0].on_failure.goto"),
        ({"id": "c", "type": "condition", "if": "true", "then": {"goto": "nowhere"}}, "$.steps[0].then.goto"),
        (
            {
                "id": "c",
                "type": "condition",
                "if": "true",
                "then": {"steps": [task("x")]},
                "else": {"goto": "nowhere"},
            },
            "$.steps[0].else.goto",
        ),
        (
            {"id": "s", "type": "switch", "cases": [{"when": "true", "then": {"goto": "nowhere"}}]},
            "$.steps[0].cases[0].then.goto",
        ),
        (
            {
                "id": "s",
                "type": "switch",
                "cases": [{"when": "true", "then": {"steps": [task()]}}],
                "default": {"goto": "nowhere"},
            },
            "$.steps[0].default.goto",
        ),
        (
            {"id": "ap", "type": "approval", "approvers": ["x"], "on_timeout": {"goto": "nowhere"}},
            "$.steps[0].on_timeout.goto",
        ),
        (
            {"id": "ap", "type": "approval", "approvers": ["x"], "on_reject": {"goto": "nowhere"}},
            "$.steps[0].on_reject.goto",
        ),
    ],
)
def test_jump_to_a_missing_step(step: dict[str, Any], path: str) -> None:
    assert only_problem(doc(step)) == (path, "jump to unknown step 'nowhere'")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (
            doc(
                {
                    "id": "p",
                    "type": "parallel",
                    "branches": [{"id": "b", "steps": [task("x", next="after")]}],
                },
                task("after"),
            ),
            "$.steps[0].branches[0].steps[0].next",
        ),
        (
            doc(
                {
                    "id": "p",
                    "type": "parallel",
                    "branches": [
                        {
                            "id": "b",
                            "steps": [
                                {"id": "c", "type": "condition", "if": "true", "then": {"goto": "after"}}
                            ],
                        }
                    ],
                },
                task("after"),
            ),
            "$.steps[0].branches[0].steps[0].then.goto",
        ),
        (
            doc(
                {
                    "id": "p",
                    "type": "parallel",
                    "branches": [
                        {"id": "b1", "steps": [task("x", next="y")]},
                        {"id": "b2", "steps": [task("y")]},
                    ],
                }
            ),
            "$.steps[0].branches[0].steps[0].next",
        ),
        (
            doc(
                {
                    "id": "f",
                    "type": "foreach",
                    "items": "input.xs",
                    "steps": [task("x", on_failure={"goto": "after"})],
                },
                task("after"),
            ),
            "$.steps[0].steps[0].on_failure.goto",
        ),
        (doc(task("a", compensate=[task("undo", next="b")]), task("b")), "$.steps[0].compensate[0].next"),
        (
            doc(
                {
                    "id": "ap",
                    "type": "approval",
                    "approvers": ["x"],
                    "escalation": {"after": "1h", "steps": [task("n", next="z")]},
                },
                task("z"),
            ),
            "$.steps[0].escalation.steps[0].next",
        ),
        # into a nested sequence, or into a sibling branch of a condition
        (
            doc(
                task("x", next="in"),
                {"id": "c", "type": "condition", "if": "true", "then": {"steps": [task("in")]}},
            ),
            "$.steps[0].next",
        ),
        (
            doc(
                {
                    "id": "c",
                    "type": "condition",
                    "if": "true",
                    "then": {"steps": [task("in")]},
                    "else": {"steps": [task("e", next="in")]},
                }
            ),
            "$.steps[0].else.steps[0].next",
        ),
    ],
)
def test_jump_across_a_boundary_is_refused(data: dict[str, Any], path: str) -> None:
    found_path, message = only_problem(data)
    assert found_path == path
    assert message.endswith(JUMP_BOUNDARY)
    assert message.startswith("cannot jump to ")


def test_jumps_allowed_within_a_body_and_from_a_condition_to_the_enclosing_sequence() -> None:
    load_definition(
        doc(
            {"id": "c", "type": "condition", "if": "true", "then": {"steps": [task("inner", next="last")]}},
            task("skipped"),
            task("last"),
            {
                "id": "p",
                "type": "parallel",
                "branches": [{"id": "b", "steps": [task("p1", next="p3"), task("p2"), task("p3")]}],
            },
            {
                "id": "f",
                "type": "foreach",
                "items": "input.xs",
                "steps": [task("f1", next="f3"), task("f2"), task("f3")],
            },
        )
    )


@pytest.mark.parametrize(
    ("data", "path", "target"),
    [
        (doc({"id": "s", "type": "set", "vars": {"x": 1}}, task("a", next="s")), "$.steps[1].next", "s"),
        (doc(task("a", next="a")), "$.steps[0].next", "a"),
        (
            doc(
                task("top"),
                {"id": "c", "type": "condition", "if": "true", "then": {"steps": [task("x", next="top")]}},
            ),
            "$.steps[1].then.steps[0].next",
            "top",
        ),
        (
            doc(
                {
                    "id": "f",
                    "type": "foreach",
                    "items": "input.xs",
                    "steps": [task("s"), task("b", on_failure={"goto": "s"})],
                }
            ),
            "$.steps[0].steps[1].on_failure.goto",
            "s",
        ),
        (
            doc(task("wait"), {"id": "check", "type": "condition", "if": "true", "then": {"goto": "wait"}}),
            "$.steps[1].then.goto",
            "wait",
        ),
    ],
)
def test_backward_jump_needs_max_visits(data: dict[str, Any], path: str, target: str) -> None:
    assert only_problem(data) == (
        path,
        f"jump back to {target!r} makes a loop without a bound: set max_visits on step {target!r}",
    )
    for step in data["steps"]:
        if step["id"] == target:
            step["max_visits"] = 10
            break
    else:
        data["steps"][0]["steps"][0]["max_visits"] = 10  # the foreach body case
    load_definition(data)


# ------------------------------------------------------------------------ durations and zones


@pytest.mark.parametrize(
    ("step", "path", "text"),
    [
        (task(timeouts={"start_to_close": "5 parsecs"}), "$.steps[0].timeouts.start_to_close", "5 parsecs"),
        (task(retry={"initial_interval": "10"}), "$.steps[0].retry.initial_interval", "10"),
        (task(retry={"maximum_interval": "P1M"}), "$.steps[0].retry.maximum_interval", "P1M"),
        ({"id": "d", "type": "delay", "duration": "5x"}, "$.steps[0].duration", "5x"),
        ({"id": "d", "type": "delay", "duration": "-5s"}, "$.steps[0].duration", "-5s"),
        (
            {"id": "ap", "type": "approval", "approvers": ["x"], "timeout": "soon"},
            "$.steps[0].timeout",
            "soon",
        ),
        (
            {"id": "ap", "type": "approval", "approvers": ["x"], "escalation": {"after": "1h1h"}},
            "$.steps[0].escalation.after",
            "1h1h",
        ),
    ],
)
def test_malformed_durations(step: dict[str, Any], path: str, text: str) -> None:
    found_path, message = only_problem(doc(step))
    assert found_path == path
    assert message.startswith(f"invalid duration {text!r}")


def test_zero_durations_are_refused_where_they_make_no_sense() -> None:
    assert only_problem(doc(task(retry={"initial_interval": "0s"}))) == (
        "$.steps[0].retry",
        "initial_interval must be greater than zero",
    )
    assert only_problem(doc(task(timeouts={"start_to_close": "0s"}))) == (
        "$.steps[0].timeouts",
        "start_to_close must be greater than zero",
    )
    assert only_problem(doc({"id": "ap", "type": "approval", "approvers": ["x"], "timeout": "0s"})) == (
        "$.steps[0]",
        "timeout must be greater than zero",
    )


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "localtime", "CST6CDT/x", "", "America"])
def test_unknown_time_zone(zone: str) -> None:
    data = doc({"id": "d", "type": "delay", "business_hours": {"timezone": zone}})
    assert only_problem(data) == (
        "$.steps[0].business_hours.timezone",
        f"unknown time zone {zone!r}: use an IANA name like 'America/Chicago'",
    )


def test_bad_business_hours_fields() -> None:
    data = doc({"id": "d", "type": "delay", "business_hours": {"timezone": "UTC", "start": "9:00"}})
    path, message = only_problem(data)
    assert (path, message.startswith("invalid time '9:00'")) == ("$.steps[0].business_hours.start", True)
    data = doc(
        {"id": "d", "type": "delay", "business_hours": {"timezone": "UTC", "start": "18:00", "end": "09:00"}}
    )
    assert only_problem(data) == ("$.steps[0].business_hours", "start '18:00' must be before end '09:00'")


# ---------------------------------------------------------------------- templates, expressions


@pytest.mark.parametrize(
    ("step", "path"),
    [
        (task(input={"x": "{{ input.x "}), "$.steps[0].input.x"),
        (task(input={"headers": {"Content Type": "{% if %}"}}), '$.steps[0].input.headers["Content Type"]'),
        (task(input={"list": ["ok", "{{ ) }}"]}), "$.steps[0].input.list[1]"),
        (task(when="input.x =="), "$.steps[0].when"),
        ({"id": "c", "type": "condition", "if": "a ==", "then": {"steps": [task()]}}, "$.steps[0].if"),
        (
            {"id": "s", "type": "switch", "cases": [{"when": "1 +", "then": {"steps": [task()]}}]},
            "$.steps[0].cases[0].when",
        ),
        ({"id": "f", "type": "foreach", "items": "input.[", "steps": [task()]}, "$.steps[0].items"),
        ({"id": "s", "type": "set", "vars": {"v": "{{ }}"}}, "$.steps[0].vars.v"),
        ({"id": "d", "type": "delay", "until": "{{ input.at "}, "$.steps[0].until"),
        ({"id": "d", "type": "delay", "duration": "{{ input.wait "}, "$.steps[0].duration"),
        ({"id": "ap", "type": "approval", "approvers": ["x"], "message": "{{ ! }}"}, "$.steps[0].message"),
        ({"id": "f", "type": "fail", "message": "{% for %}"}, "$.steps[0].message"),
    ],
)
def test_bad_template_or_expression_syntax(step: dict[str, Any], path: str) -> None:
    found_path, message = only_problem(doc(step))
    assert found_path == path
    assert message.startswith("template error in ")
    assert "syntax error" in message


def test_bad_template_in_the_definition_output() -> None:
    path, message = only_problem(doc(task(), output={"x": "{{ ( }}"}))
    assert path == "$.output.x"
    assert "syntax error" in message


# ----------------------------------------------------------------------------- retry, timeouts


@pytest.mark.parametrize(
    ("retry", "path", "message"),
    [
        (
            {"preset": "linear", "backoff_coefficient": 2},
            "$.steps[0].retry",
            "backoff_coefficient 2.0 contradicts preset 'linear' (only 'exponential' has a coefficient)",
        ),
        (
            {"preset": "constant", "backoff_coefficient": 1.5},
            "$.steps[0].retry",
            "backoff_coefficient 1.5 contradicts preset 'constant' (only 'exponential' has a coefficient)",
        ),
        (
            {"initial_interval": "10s", "maximum_interval": "1s"},
            "$.steps[0].retry",
            "maximum_interval 1s is shorter than initial_interval 10s",
        ),
        (
            {"maximum_attempts": 0},
            "$.steps[0].retry.maximum_attempts",
            "Input should be greater than or equal to 1",
        ),
        (
            {"maximum_attempts": 1001},
            "$.steps[0].retry.maximum_attempts",
            "Input should be less than or equal to 1000",
        ),
        (
            {"backoff_coefficient": 0.5},
            "$.steps[0].retry.backoff_coefficient",
            "Input should be greater than or equal to 1",
        ),
        (
            {"preset": "fibonacci"},
            "$.steps[0].retry.preset",
            "Input should be 'exponential', 'constant' or 'linear'",
        ),
        ({"non_retryable_error_types": [""]}, "$.steps[0].retry.non_retryable_error_types[0]", None),
    ],
)
def test_nonsense_retry_policies(retry: dict[str, Any], path: str, message: str | None) -> None:
    found = only_problem(doc(task(retry=retry)))
    assert found[0] == path
    if message is not None:
        assert found[1] == message


def test_retry_policy_in_defaults_is_checked_too() -> None:
    data = doc(task(), defaults={"retry": {"preset": "linear", "backoff_coefficient": 3}})
    assert only_problem(data)[0] == "$.defaults.retry"


def test_linear_with_coefficient_one_is_accepted() -> None:
    load_definition(doc(task(retry={"preset": "linear", "backoff_coefficient": 1.0})))


@pytest.mark.parametrize(
    ("timeouts", "message"),
    [
        ({"start_to_close": "10s", "heartbeat": "1m"}, "heartbeat timeout is longer than start_to_close"),
        (
            {"start_to_close": "10m", "schedule_to_close": "5m"},
            "schedule_to_close is shorter than start_to_close",
        ),
    ],
)
def test_incoherent_timeouts(timeouts: dict[str, Any], message: str) -> None:
    assert only_problem(doc(task(timeouts=timeouts))) == ("$.steps[0].timeouts", message)


def test_a_step_setting_one_timeout_takes_the_others_from_the_defaults_capped() -> None:
    """Found by a review: a step with only ``schedule_to_close: 10s`` (or only ``heartbeat``) was
    refused as "schedule_to_close is shorter than start_to_close", a field the author never set
    (the default 30 s), and reported as "not valid JSON". An inherited value is capped by the
    step's own, as Temporal caps it."""
    short = load_definition(doc(task(timeouts={"schedule_to_close": "10s"})))
    resolved = resolve_timeouts(short, cast(TaskStep, short.steps[0]))
    assert (resolved.start_to_close, resolved.schedule_to_close) == ("10s", "10s")
    beating = load_definition(doc(task(timeouts={"heartbeat": "5s"})))
    resolved = resolve_timeouts(beating, cast(TaskStep, beating.steps[0]))
    assert (resolved.start_to_close, resolved.heartbeat) == ("30s", "5s")
    capped = load_definition(
        doc(task(timeouts={"start_to_close": "2m"}), defaults={"timeouts": {"heartbeat": "5m"}})
    )
    assert resolve_timeouts(capped, cast(TaskStep, capped.steps[0])).heartbeat == "2m"


@pytest.mark.parametrize(
    ("timeouts", "defaults", "path", "words"),
    [
        (
            {"heartbeat": "1m"},
            None,
            "heartbeat",
            "heartbeat 1m is longer than the start_to_close this step inherits from defaults.timeouts (30s)",
        ),
        (
            {"start_to_close": "5m"},
            {"schedule_to_close": "2m"},
            "start_to_close",
            "start_to_close 5m is longer than the schedule_to_close this step inherits from defaults.timeouts (2m)",
        ),
    ],
)
def test_a_steps_own_timeout_longer_than_its_inherited_bound_is_refused_naming_both(
    timeouts: dict[str, Any], defaults: dict[str, Any] | None, path: str, words: str
) -> None:
    extra = {"defaults": {"timeouts": {"start_to_close": "30s", **defaults}}} if defaults else {}
    found_path, message = only_problem(doc(task(timeouts=timeouts), **extra))
    assert found_path == f"$.steps[0].timeouts.{path}"
    assert message.startswith(words), message


# ------------------------------------------------------------------------------------ nesting


def test_nesting_deeper_than_max_depth() -> None:
    load_definition(doc(nested(5)))  # the default max_depth is 5
    path, message = only_problem(doc(nested(6)))
    assert path == "$.steps[0]" + ".then.steps[0]" * 5
    assert message == "nesting depth 6 exceeds limits.max_depth 5"
    path, message = only_problem(doc(nested(3), limits={"max_depth": 2}))
    assert path == "$.steps[0].then.steps[0].then.steps[0]"
    assert message == "nesting depth 3 exceeds limits.max_depth 2"


def test_nesting_counts_every_kind_of_nested_sequence() -> None:
    data = doc(
        {
            "id": "f",
            "type": "foreach",
            "items": "input.xs",
            "steps": [
                {
                    "id": "p",
                    "type": "parallel",
                    "branches": [{"id": "b", "steps": [task("a", compensate=[task("u")])]}],
                }
            ],
        },
        limits={"max_depth": 3},
    )
    assert only_problem(data) == (
        "$.steps[0].steps[0].branches[0].steps[0].compensate[0]",
        "nesting depth 4 exceeds limits.max_depth 3",
    )


def test_foreach_max_items_above_the_limit() -> None:
    data = doc(
        {"id": "f", "type": "foreach", "items": "input.xs", "max_items": 50, "steps": [task()]},
        limits={"max_foreach_items": 10},
    )
    assert only_problem(data) == ("$.steps[0].max_items", "max_items 50 exceeds limits.max_foreach_items 10")


# --------------------------------------------------------------------------- step references


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (doc(task(input={"x": "{{ steps.ghost.output }}"})), "$.steps[0].input.x"),
        (doc(task(when="steps.ghost.status == 'completed'")), "$.steps[0].when"),
        (
            doc({"id": "c", "type": "condition", "if": "steps.ghost", "then": {"steps": [task()]}}),
            "$.steps[0].if",
        ),
        (
            doc(
                {"id": "s", "type": "switch", "cases": [{"when": "steps.ghost", "then": {"steps": [task()]}}]}
            ),
            "$.steps[0].cases[0].when",
        ),
        (
            doc({"id": "f", "type": "foreach", "items": "steps.ghost.output", "steps": [task()]}),
            "$.steps[0].items",
        ),
        (
            doc(
                {
                    "id": "f",
                    "type": "foreach",
                    "items": "input.xs",
                    "steps": [task()],
                    "output": "{{ steps.ghost }}",
                }
            ),
            "$.steps[0].output",
        ),
        (doc({"id": "s", "type": "set", "vars": {"v": "{{ steps.ghost.output }}"}}), "$.steps[0].vars.v"),
        (doc({"id": "s", "type": "succeed", "output": {"o": "{{ steps.ghost }}"}}), "$.steps[0].output.o"),
        (
            doc({"id": "s", "type": "fail", "message": "failed at {{ steps.ghost.error }}"}),
            "$.steps[0].message",
        ),
        (
            doc({"id": "d", "type": "delay", "duration": "{{ steps.ghost.output.wait }}"}),
            "$.steps[0].duration",
        ),
        (doc({"id": "d", "type": "delay", "until": "{{ steps.ghost.output.at }}"}), "$.steps[0].until"),
        (
            doc({"id": "ap", "type": "approval", "approvers": ["x"], "message": "{{ steps.ghost }}"}),
            "$.steps[0].message",
        ),
        (doc(task(), output={"r": "{{ steps.ghost.output }}"}), "$.output.r"),
        (
            doc(
                {
                    "id": "p",
                    "type": "parallel",
                    "branches": [{"id": "b", "steps": [task("x", input={"y": "{{ steps.ghost }}"})]}],
                }
            ),
            "$.steps[0].branches[0].steps[0].input.y",
        ),
    ],
)
def test_reference_to_an_unknown_step(data: dict[str, Any], path: str) -> None:
    assert only_problem(data) == (path, "refers to unknown step 'steps.ghost'")


def test_references_that_are_not_steps_are_not_flagged() -> None:
    load_definition(
        doc(
            task("a", input={"x": "{{ input.steps.ghost }}", "y": "{{ vars.steps.ghost }}"}),
            {
                "id": "f",
                "type": "fail",
                "message": "see steps.ghost in the runbook",
            },  # plain text, no template
        )
    )


def test_reference_to_a_known_step() -> None:
    load_definition(doc(task("a"), task("b", input={"x": "{{ steps.a.output }}"})))


# ----------------------------------------------------------------------------- approval, delay


def test_approval_escalation_after_timeout_is_refused() -> None:
    message = "escalation 'after' must be shorter than the approval timeout"
    for after in ("1h", "3h"):
        data = doc(
            {
                "id": "ap",
                "type": "approval",
                "approvers": ["x"],
                "timeout": "1h",
                "escalation": {"after": after},
            }
        )
        assert only_problem(data) == ("$.steps[0]", message)
    nested_approval = doc(
        {
            "id": "p",
            "type": "parallel",
            "branches": [
                {
                    "id": "b",
                    "steps": [
                        {
                            "id": "ap",
                            "type": "approval",
                            "approvers": ["x"],
                            "timeout": "1h",
                            "escalation": {"after": "2h"},
                        }
                    ],
                }
            ],
        }
    )
    assert only_problem(nested_approval) == ("$.steps[0].branches[0].steps[0]", message)
    load_definition(
        doc(
            {
                "id": "ap",
                "type": "approval",
                "approvers": ["x"],
                "timeout": "1h",
                "escalation": {"after": "59m"},
            }
        )
    )


def test_approval_needs_approvers() -> None:
    path, message = only_problem(doc({"id": "ap", "type": "approval", "approvers": []}))
    assert path == "$.steps[0].approvers"
    assert "at least 1 item" in message


@pytest.mark.parametrize(
    "fields",
    [
        {"duration": "1h", "until": "{{ input.at }}"},
        {"duration": "1h", "business_hours": {"timezone": "UTC"}},
        {},
    ],
)
def test_delay_needs_exactly_one_mode(fields: dict[str, Any]) -> None:
    assert only_problem(doc({"id": "d", "type": "delay", **fields})) == (
        "$.steps[0]",
        "a delay has exactly one of 'duration', 'until' or 'business_hours'",
    )


def test_several_problems_in_nested_steps_are_all_reported() -> None:
    data = doc(
        {
            "id": "p",
            "type": "parallel",
            "branches": [
                {"id": "b1", "steps": [task("x", action="smtp")]},
                {
                    "id": "b2",
                    "steps": [task("x"), {"id": "d", "type": "delay", "duration": "1h", "next": "gone"}],
                },
            ],
        }
    )
    assert problems(data) == [
        ("$.steps[0].branches[0].steps[0].action", f"unknown action 'smtp' (known: {KNOWN})"),
        (
            "$.steps[0].branches[1].steps[0].id",
            "duplicate step id 'x' (first at $.steps[0].branches[0].steps[0])",
        ),
        ("$.steps[0].branches[1].steps[1].next", "jump to unknown step 'gone'"),
    ]


def test_a_task_without_any_close_timeout_is_refused() -> None:
    path, message = only_problem(doc(task("a"), defaults={"timeouts": {"heartbeat": "5s"}}))
    assert path == "$.steps[0].timeouts"
    assert "no start_to_close or schedule_to_close timeout" in message
    load_definition(doc(task("a", timeouts={"schedule_to_close": "1m"}), defaults={"timeouts": {}}))


def test_durations_beyond_a_century_are_refused() -> None:
    path, message = only_problem(doc({"id": "d", "type": "delay", "duration": "999999999d"}))
    assert path == "$.steps[0].duration"
    assert "too large (at most 36600 days)" in message


@pytest.mark.parametrize("name", ["input", "vars", "steps", "run", "index"])
def test_foreach_as_may_not_hide_a_template_variable(name: str) -> None:
    step = {"id": "f", "type": "foreach", "items": "[1]", "as": name, "steps": [task("x")]}
    path, message = only_problem(doc(step))
    assert path == "$.steps[0].as"
    assert f"'{name}' would hide the template variable" in message


# ---------------------------------------------------------- zones from templates, approval saga


def test_a_business_hours_zone_may_be_a_template_checked_for_syntax_only() -> None:
    hours = {"timezone": "{{ input.family.timezone }}"}
    load_definition(doc({"id": "office", "type": "delay", "business_hours": hours}))
    path, message = only_problem(
        doc({"id": "office", "type": "delay", "business_hours": {"timezone": "{{ x"}})
    )
    assert path == "$.steps[0].business_hours.timezone"
    assert "template error" in message
    path, message = only_problem(doc({"id": "o", "type": "delay", "business_hours": {"timezone": "Mars/X"}}))
    assert "unknown time zone 'Mars/X'" in message


def test_an_approval_compensation_is_a_boundary_like_a_tasks() -> None:
    gate = {
        "id": "gate",
        "type": "approval",
        "approvers": ["a"],
        "compensate": [task("undo", next="after")],
    }
    path, message = only_problem(doc(gate, task("after")))
    assert path == "$.steps[0].compensate[0].next"
    assert "never leave" in message
    ok = {**gate, "compensate": [task("undo")]}
    definition = load_definition(doc(ok, task("after")))
    without = load_definition(doc({k: v for k, v in ok.items() if k != "compensate"}, task("after")))
    assert definition_hash(definition) != definition_hash(without)
    assert "compensate" not in without.model_dump(by_alias=True)["steps"][0]  # old hashes unchanged


def _deep_value(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def _nested_parallels(levels: int, innermost: dict[str, Any]) -> list[dict[str, Any]]:
    steps = [innermost]
    for level in range(levels):
        steps = [{"id": f"p{level}", "type": "parallel", "branches": [{"id": f"b{level}", "steps": steps}]}]
    return steps


def test_the_deepest_valid_definition_fits_a_run_input_and_a_deeper_one_is_refused() -> None:
    """Temporal's payloads are read with pydantic, which refuses JSON nested past about 200 levels:
    a definition the registry accepted must be readable in its run's input."""
    from interpreter.sizes import VALUE_MAX_DEPTH
    from interpreter.state import RunInput
    from starter.client import _check_document
    from starter.errors import InvalidInputError
    from starter.inputs import check_json

    task = {"id": "t", "type": "task", "action": "echo", "input": {"value": _deep_value(VALUE_MAX_DEPTH - 1)}}
    # 20 levels of nesting, each a parallel step (the most JSON levels per level of steps).
    deepest = doc(*_nested_parallels(19, task), limits={"max_depth": 20})
    definition = load_definition(deepest)
    payload = RunInput(definition=definition).model_dump_json()
    assert RunInput.model_validate_json(payload).definition == definition
    _check_document(deepest)  # what the client checks before registering or starting it
    _check_document(json.dumps(deepest))
    # A value (run input, event data, decision data) is held to what a run keeps of one.
    check_json(_deep_value(VALUE_MAX_DEPTH - 1), "the run input")
    with pytest.raises(
        InvalidInputError, match=f"the run input is nested more than {VALUE_MAX_DEPTH} levels"
    ):
        check_json(_deep_value(VALUE_MAX_DEPTH + 1), "the run input")
    # A value past what a run keeps, or JSON text past what Python's parser takes: a problem, not
    # a crash or a definition whose runs cannot start.
    deep = doc({"id": "s", "type": "set", "vars": {"x": _deep_value(196)}})
    too_deep = (
        "the definition nests lists and objects more than 160 levels deep, more than a run's input can carry"
    )
    assert only_problem(deep) == ("$", too_deep)
    text = '{"name": "x", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(DefinitionError, match="more than 160 levels deep"):
        load_definition(text)


# ------------------------------------------------------------------------------------ text


def test_text_the_registry_or_a_payload_cannot_hold_is_a_problem_at_its_path() -> None:
    """A NUL character (PostgreSQL refuses it) or a lone surrogate (no UTF-8 writes it) in any string
    or key: ``wfa validate`` passed such a definition, then the registry failed on the NUL in the
    database's words, and the surrogate read as "Invalid JSON: unexpected end of hex escape"."""
    stored = "which cannot be stored"
    assert only_problem(doc(task(), description="a\x00b")) == (
        "$.description",
        f"has a NUL character (\\u0000), {stored}",
    )
    assert only_problem(doc(task(input={"to": "x\ud800"}))) == (
        "$.steps[0].input.to",
        f"has a lone surrogate (text no UTF-8 can encode), {stored}",
    )
    assert only_problem(json.dumps(doc(task(input={"k\udc80": 1})))) == (  # as JSON text too
        '$.steps[0].input["k\\udc80"]',
        f"this key has a lone surrogate (text no UTF-8 can encode), {stored}",
    )
    many = problems(doc(*(task(f"s{i}", input={"v": "\x00"}) for i in range(9))))
    assert [path for path, _ in many] == [
        *(f"$.steps[{i}].input.v" for i in range(5)),
        "$",
    ]  # five are enough
    assert many[-1][1] == "and 4 more strings or keys like these"
    with pytest.raises(DefinitionError) as info:
        load_definition({"name": "bad\x00name", "steps": [task()]})
    assert info.value.name is None  # the error's name is quoted wherever it is shown
    load_definition(doc(task(input={"to": "ann é 😀"})))  # other text is fine


def test_a_definition_built_in_code_with_such_text_is_refused_where_it_is_loaded() -> None:
    from starter.definitions import load

    built = Definition.model_validate({"name": "built", "steps": [task(input={"to": "\x00"})]})
    with pytest.raises(DefinitionError) as info:
        load(built)
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("$.steps[0].input.to", "has a NUL character (\\u0000), which cannot be stored")
    ]


def test_a_default_park_timeout_of_nothing_is_refused_as_a_steps_is() -> None:
    """A probe: a step's ``park_timeout: "0s"`` was refused, the same as ``defaults`` was not."""
    from interpreter.validate import new_definition_problems

    document = {
        "name": "parks",
        "defaults": {"park_timeout": "0s"},
        "steps": [{"id": "s", "type": "set", "vars": {"a": 1}}],
    }
    problems = new_definition_problems(load_definition(document))
    assert [(p.path, p.message) for p in problems] == [
        ("$.defaults.park_timeout", "park_timeout must be greater than zero")
    ]
    assert new_definition_problems(load_definition({**document, "defaults": {"park_timeout": "1s"}})) == []
