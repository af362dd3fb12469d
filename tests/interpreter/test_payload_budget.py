"""Payload budgets: an output that would bring the run's state past its budget fails its step, and
the step's ``on_failure`` handles it; nothing is left for Temporal to refuse later."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_core import to_json

from interpreter.engine import PATCH_TEMPLATE_VALUES, PATCH_VALUE_DEPTH
from interpreter.sizes import (
    ID_MAX_BYTES,
    RUN_STATE_BUDGET,
    VALUE_MAX_DEPTH,
    json_size,
    json_written_size,
    temporal_id,
)
from interpreter.state import RunState, StepStatus
from tests.interpreter.fake_runtime import FakeRuntime
from tests.interpreter.test_engine import rec, run, task

BIG = "x" * (RUN_STATE_BUDGET // 3 - 100)  # three fit, the fourth does not


async def test_a_task_output_over_the_budget_is_a_step_failure_on_failure_handles() -> None:
    rt = FakeRuntime()
    rt.returning("echo", BIG)
    steps: list[dict[str, Any]] = [
        task("a"),
        task("b"),
        task("c", on_failure="continue"),
        task("d", on_failure="continue"),
    ]
    result, _, _ = await run(steps, rt)
    assert result.state == RunState.COMPLETED
    assert rec(result, "a").status == StepStatus.COMPLETED
    assert rec(result, "b").status == StepStatus.COMPLETED
    assert rec(result, "c").status == StepStatus.COMPLETED
    failed = rec(result, "d")
    assert failed.status == StepStatus.FAILED
    assert failed.error_type == "StateBudgetExceeded"
    assert f"budget of {RUN_STATE_BUDGET} bytes" in (failed.error or "")
    assert json_size(result.model_dump(mode="json")) < 2 * 1024 * 1024


async def test_a_foreach_adding_up_past_the_budget_fails_the_run_with_a_message() -> None:
    """The probe that left a run RUNNING forever: 450 items of 2.5 KB each, collected."""
    rt = FakeRuntime()
    rt.returning("echo", "y" * 2500)
    steps: list[dict[str, Any]] = [
        {
            "id": "each",
            "type": "foreach",
            "items": "range(450) | list",
            "max_items": 1000,
            "steps": [task("item")],
        }
    ]
    result, _, _ = await run(steps, rt)
    assert result.state == RunState.FAILED
    assert result.error_type == "StateBudgetExceeded"
    assert json_size(result.model_dump(mode="json")) < 2 * 1024 * 1024


async def test_within_the_budget_nothing_changes() -> None:
    rt = FakeRuntime()
    rt.returning("echo", "z" * 10_000)
    result, _, _ = await run([task(f"s{i}") for i in range(20)], rt)
    assert result.state == RunState.COMPLETED


def test_an_id_past_temporals_limit_is_fitted_uniquely_and_stably() -> None:
    short = "each[3].call"
    assert temporal_id(short) == short  # ids that fit are kept, as in every recorded history
    exact = "x" * ID_MAX_BYTES
    assert temporal_id(exact) == exact
    long_a = "a" * 700 + "[1]." + "é" * 400 + ".call"
    long_b = "a" * 700 + "[2]." + "é" * 400 + ".call"  # differs only in the part left out
    fitted = temporal_id(long_a)
    assert len(fitted.encode()) <= ID_MAX_BYTES
    assert fitted == temporal_id(long_a)  # the same path gives the same id on replay
    assert fitted != temporal_id(long_b)  # two paths differing only near the middle stay two ids
    assert fitted.startswith("a" * 600)  # readable in the Web UI
    assert fitted.endswith("é.call")
    assert "\ufffd" not in fitted  # no character cut in half


@pytest.mark.parametrize(
    "text",
    ["plain", "\x01" * 1000, 'a "quoted" \\ path\n\t\r\b\f', "héllo wörld", "日本語", "emoji 😀", "\x7f", ""],
    ids=["ascii", "control", "escapes", "latin", "cjk", "astral", "del", "empty"],
)
def test_a_string_is_counted_as_temporals_converter_writes_it(text: str) -> None:
    # Patch task-input-escapes paces a task's input by json_written_size: a string counts exactly
    # what pydantic (Temporal's converter here) writes, where json_size counted a control
    # character one byte of six (a review's finding: an input of them passed the pacing 6x).
    assert json_written_size(text) == len(to_json(text))
    assert json_written_size({"k": [text, text]}) >= len(to_json({"k": [text, text]}))


def test_the_written_count_is_never_far_short_of_what_is_written() -> None:
    # Numbers and separators are counted as by json_size: never less than two thirds of what is
    # written (the bound the pacing's 4 MiB arithmetic in the README rests on).
    worst = [-1] * 1000
    assert json_written_size(worst) * 3 >= len(to_json(worst)) * 2
    mixed = {"": 0, "a": [None, True, 1.5, -7, 10**30], "\x02": {"\u00e9": "\x03" * 50}}
    assert json_written_size(mixed) * 3 >= len(to_json(mixed)) * 2
    assert json_written_size(mixed) >= json_size(mixed)
    # The limit stops the count: a string alone past it is not escaped.
    assert json_written_size(["\x01" * 10_000], limit=100) > 100


async def test_a_template_returning_a_number_no_reader_takes_fails_from_the_patch_on() -> None:
    # Patch template-values. Found by an attacker's probe: a set step kept a 5,001-digit number
    # ({{ (10**100)**50 }}), which pydantic refuses to read back (past 4,300 digits): a fan-out
    # slice returning it left its parent's workflow task failing for ever. Within a template a
    # large number is fine; only what it returns is bounded.
    steps: list[dict[str, Any]] = [
        {"id": "fine", "type": "set", "vars": {"r": "{{ ((10**100)**50) % 7 }}", "n": "{{ (10**100)**38 }}"}},
        {"id": "huge", "type": "set", "vars": {"n": "{{ (10**100)**50 }}"}},
    ]
    result, _, _ = await run(steps)
    assert (result.state, result.error_type) == (RunState.FAILED, "TemplateError")
    assert "a number of 16,610 bits" in (result.error or "")
    assert rec(result, "fine").output == {"r": (10**5000) % 7, "n": 10**3800}  # 3,801 digits: kept
    old = FakeRuntime()
    old.declined.add(PATCH_TEMPLATE_VALUES)  # a run recorded before the patch goes on as it did
    result, engine, _ = await run(steps, old)
    assert result.state == RunState.COMPLETED
    assert engine.vars["n"] == 10**5000


@pytest.mark.parametrize("template", ["{{ 'a\\ud800' }}", "x {{ '\\udfff' }} y"], ids=["native", "text"])
async def test_a_template_returning_a_lone_surrogate_fails_from_the_patch_on(template: str) -> None:
    # Patch template-values. Found by a review: a jinja literal makes a lone surrogate, which
    # UTF-8 cannot write; in a run's output or a fail step's message the converter refused the
    # closing command in every workflow task.
    steps: list[dict[str, Any]] = [{"id": "odd", "type": "set", "vars": {"s": template}}]
    result, _, _ = await run(steps)
    assert (result.state, result.error_type) == (RunState.FAILED, "TemplateError")
    assert "a lone surrogate character" in (result.error or "")
    old = FakeRuntime()
    old.declined.add(PATCH_TEMPLATE_VALUES)  # a run recorded before the patch goes on as it did
    result, engine, _ = await run(steps, old)
    assert result.state == RunState.COMPLETED
    assert any("\ud800" <= c <= "\udfff" for c in engine.vars["s"])


async def test_a_value_nested_past_what_a_run_keeps_fails_its_step_from_the_patch_on() -> None:
    """A template may nest a variable one level deeper each turn; past VALUE_MAX_DEPTH the step
    fails (patch value-depth), as an output over the state budget does."""
    steps: list[dict[str, Any]] = [
        {"id": "init", "type": "set", "vars": {"x": 1}},
        {"id": "wrap", "type": "set", "vars": {"x": "{{ [vars.x] }}"}, "max_visits": 100},
        {"id": "again", "type": "condition", "if": "true", "then": {"goto": "wrap"}, "max_visits": 100},
    ]
    result, _, _ = await run(steps)
    assert (result.state, result.error_type) == (RunState.FAILED, "ValueTooDeep")
    assert [r.path for r in result.steps].count("wrap") == VALUE_MAX_DEPTH  # {"x": [...64 deep]} is 65
    old = FakeRuntime()
    old.declined.add(PATCH_VALUE_DEPTH)  # a run recorded before the patch goes on as it did
    result, _, _ = await run(steps, old)
    assert (result.state, result.error_type) == (RunState.FAILED, "LoopLimitExceeded")
    task_steps = [task("get", on_failure="continue"), task("after")]
    rt = FakeRuntime()
    deep: Any = 1
    for _ in range(VALUE_MAX_DEPTH + 1):
        deep = [deep]
    rt.returning("echo", deep, "fine")
    result, _, _ = await run(task_steps, rt)
    assert result.state == RunState.COMPLETED  # a task's excess is its own failure, on_failure handles it
    assert (rec(result, "get").status, rec(result, "get").error_type) == (StepStatus.FAILED, "ValueTooDeep")
    assert rec(result, "after").output == "fine"


async def test_a_task_input_or_an_output_a_template_nests_too_deep_fails_the_run_before_it_leaves() -> None:
    """Values that never pass through the state budget (a task's input, a succeed step's output, the
    run's output) are held to the same depth before they reach a payload."""
    deep: Any = "x"
    for _ in range(VALUE_MAX_DEPTH - 4):
        deep = [deep]
    wrapped = {"a": {"b": {"c": {"d": {"e": "{{ input.deep }}"}}}}}  # 5 levels around it: 65
    cases: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
        "step 'call': its input": ([task("call", input=wrapped)], {}),
        "step 'done': its output": ([{"id": "done", "type": "succeed", "output": wrapped}], {}),
        "the run's output": ([{"id": "s", "type": "set", "vars": {"k": 1}}], {"output": wrapped}),
    }
    for what, (steps, extra) in cases.items():
        rt = FakeRuntime()
        result, _, _ = await run(steps, rt, {"deep": deep}, **extra)
        assert (result.state, result.error_type) == (RunState.FAILED, "ValueTooDeep"), what
        assert result.output is None  # the failed run's result does not carry it either
        assert (
            result.error
            == f"{what} nests lists and objects more than {VALUE_MAX_DEPTH} levels deep, more than a run keeps"
        )
        assert rt.calls == []
        old = FakeRuntime()
        old.declined.add(PATCH_VALUE_DEPTH)
        result, _, _ = await run(steps, old, {"deep": deep}, **extra)
        assert result.state == RunState.COMPLETED, what
