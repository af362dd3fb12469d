"""The README's claims that code can check: its example definition is valid, every ``wfa`` command
it shows parses with the real CLI parser (subcommands, flags, choices, JSON arguments, example
files), and its run-state tables list exactly the states a run can be in. That the commands also
work against a running demo is checked in ``tests/test_demo.py``."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import shlex
from pathlib import Path

from interpreter.model import TaskStep
from interpreter.state import RunState
from interpreter.validate import load_definition
from starter.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
WFA_PREFIXES = ("wfa", ".venv/bin/wfa")
JSON_OPTIONS = {"--input": dict, "--data": dict, "--output": object}


def test_the_readme_example_definition_is_valid() -> None:
    text = README.read_text()
    block = text.split("## A definition", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    definition = load_definition(json.loads(block))
    assert definition.name == "intervention"
    assert [s.id for s in definition.steps] == ["email", "wait", "office_hours", "check", "answered", "done"]
    assert all(s.action == "http" for s in definition.steps if isinstance(s, TaskStep))


# ------------------------------------------------------------------------------- shell examples


def code_blocks(text: str, *languages: str) -> list[str]:
    """The bodies of the fenced code blocks in those languages, in order."""
    pattern = rf"^```(?:{'|'.join(map(re.escape, languages))})\n(.*?)^```"
    return re.findall(pattern, text, re.M | re.S)


def shell_lines(block: str) -> list[str]:
    """The block's lines, with ``\\``-continued lines joined."""
    return block.replace("\\\n", " ").splitlines()


def wfa_commands(text: str) -> list[str]:
    """Every line of a ``sh`` or ``text`` block that runs ``wfa`` (also as ``.venv/bin/wfa``)."""
    return [
        line.strip()
        for block in code_blocks(text, "sh", "text")
        for line in shell_lines(block)
        if line.strip().split(" ", 1)[0] in WFA_PREFIXES
    ]


def _unbracket(token: str) -> str:
    """``[--run`` -> ``--run``, ``ID]`` -> ``ID``: the README's optional parts, not JSON brackets."""
    if token.startswith("[") and token.count("[") > token.count("]"):
        token = token[1:]
    if token.endswith("]") and token.count("]") > token.count("["):
        token = token[:-1]
    return token


def variants(line: str) -> list[list[str]]:
    """The argument lists a README line stands for: optional ``[...]`` parts included and every
    alternative of ``a|b|c`` taken in turn (JSON values are left alone)."""
    tokens = [t for t in (_unbracket(t) for t in shlex.split(line, comments=True)[1:]) if t]
    choices = [t.split("|") if "|" in t and not t.startswith(("{", "[", "'", '"')) else [t] for t in tokens]
    return [list(combination) for combination in itertools.product(*choices)]


def problems_of(argv: list[str]) -> list[str]:
    """What is wrong with one ``wfa`` argument list, by the real parser and the argument checks."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit:
        return [stderr.getvalue().strip().splitlines()[-1]]
    found = []
    for option, value in itertools.pairwise(argv):
        if option in JSON_OPTIONS and not value.startswith("@"):  # @FILE: the reader's own file
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as err:
                found.append(f"{option} {value!r} is not JSON: {err}")
                continue
            if not isinstance(parsed, JSON_OPTIONS[option]):
                found.append(f"{option} {value!r} is not a JSON object")
    found += [f"{t}: no such file" for t in argv if t.startswith("examples/") and not (ROOT / t).is_file()]
    return found


def test_the_checks_catch_what_they_are_for() -> None:
    """Each kind of mistake a README line could make is reported (so the next test can fail)."""
    assert problems_of(["statuss", "x"])
    assert problems_of(["status", "x", "--watch"])
    assert problems_of(["dead-letters", "list", "--status", "closed"])
    assert problems_of(["approve", "x", "--actor", "m", "--data", "{...}"])
    assert problems_of(["start", "examples/no-such.json"])
    assert problems_of(["approve", "x"])  # --actor is required
    assert not problems_of(["approve", "x", "--actor", "m", "--data", '{"comment": "ok"}'])
    assert variants("wfa dead-letters list [--status open|all] [--run ID]") == [
        ["dead-letters", "list", "--status", "open", "--run", "ID"],
        ["dead-letters", "list", "--status", "all", "--run", "ID"],
    ]
    assert variants("""wfa dead-letters redrive 17 [--input '{"url": "http://x/[1]"}']  # a comment""") == [
        ["dead-letters", "redrive", "17", "--input", '{"url": "http://x/[1]"}']
    ]


def test_every_wfa_command_in_the_readme_parses() -> None:
    commands = wfa_commands(README.read_text())
    assert len(commands) >= 20, commands  # the extraction itself works
    problems = {
        " ".join(argv): found for line in commands for argv in variants(line) if (found := problems_of(argv))
    }
    assert not problems, json.dumps(problems, indent=2)


# ----------------------------------------------------------------------------------- run states


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first markdown table after ``heading``."""
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # without the header and the --- line


def test_the_run_states_table_lists_every_state_once() -> None:
    rows = _table_after(README.read_text(), "### Run states")
    listed = [row[0].strip("`") for row in rows]
    assert sorted(listed) == sorted(state.value for state in RunState)
    assert all(row[1] for row in rows)  # each with its meaning


def test_the_search_attribute_table_lists_every_state() -> None:
    rows = _table_after(README.read_text(), "### Web UI")
    (row,) = [row for row in rows if row[0] == "`RunState`"]
    assert re.findall(r"`([a-z_]+)`", row[2]) == [state.value for state in RunState]


def test_every_make_target_the_readme_names_exists() -> None:
    text = README.read_text()
    named = set(re.findall(r"`make ([a-z][a-z-]*)`", text))
    named |= {m for b in code_blocks(text, "sh") for m in re.findall(r"^make ([a-z][a-z-]*)", b, re.M)}
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert {"demo", "test"} <= named
    assert named <= targets, named - targets
