"""The README's "Failure semantics per action" table says what the actions do: each action's rows
name exactly the error types its module documents, with the same retryability."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import activities.llm
import activities.messaging
import activities.sql

README = Path(__file__).resolve().parents[1] / "README.md"
COMMON = {"InvalidActionInput"}


def readme_rows(action: str) -> dict[str, str]:
    section = README.read_text().split("### Failure semantics per action", 1)[1]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and action in re.findall(r"`([a-z_]+)`", cells[0]):
            for name in re.findall(r"`([A-Za-z]+)`", cells[1]):
                rows[name] = cells[2]
    return rows


def documented(module: object) -> dict[str, str]:
    """``type -> yes/no`` from the module docstring's table."""
    rows: dict[str, str] = {}
    for line in (module.__doc__ or "").splitlines():
        match = re.match(r"^(.*?)\s{2,}(yes|no)\s{2,}(.*)$", line)
        if match:
            for name in re.findall(r"``([A-Za-z]+)``", match.group(3)):
                rows[name] = match.group(2)
    return rows


@pytest.mark.parametrize(("action", "module"), [("sql", activities.sql), ("llm", activities.llm)])
def test_the_table_agrees_with_the_module(action: str, module: object) -> None:
    in_readme = readme_rows(action)
    in_module = documented(module)
    assert in_readme, f"no rows for {action}"
    assert in_readme == in_module


@pytest.mark.parametrize("action", ["sms", "call", "sms_status", "call_status"])
def test_the_messaging_rows_agree_with_the_module(action: str) -> None:
    """The messaging actions share one module and one set of rows; the refusals common to every
    action (listed above the table) are not repeated there."""
    common = COMMON | {"SecretNotFound", "SecretHostRefused", "OutboundRefused"}
    in_module = {k: v for k, v in documented(activities.messaging).items() if k not in common}
    assert readme_rows(action) == in_module
