"""The determinism contract is held by the linter, not by care.

Workflow code (``interpreter/``, ``workflows/``) is replayed, so a clock, a random number, the
environment or I/O there breaks runs in flight. ``pyproject.toml`` bans them with ruff's banned-api
rule (TID251) and refuses the builtin ``open()`` (PTH123) in those two packages only. These tests
inject such a line into a copy of a real module, in a directory laid out like the repository with
the project's ruff configuration, and run ruff on it as ``make lint`` does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_RULES = {"TID251", "PTH123"}

# (imports, expression): each a way workflow code could reach a clock, randomness, the environment
# or I/O. The imports go inside the injected function so the module's own imports stay untouched.
FORBIDDEN: dict[str, tuple[str, str]] = {
    "datetime.now on the imported class": ("from datetime import datetime", "datetime.now()"),
    "datetime.utcnow through the module": ("import datetime as dt", "dt.datetime.utcnow()"),
    "date.today": ("from datetime import date", "date.today()"),
    "time.time": ("import time", "time.time()"),
    "time.monotonic imported by name": ("from time import monotonic", "monotonic()"),
    "time.perf_counter": ("import time", "time.perf_counter()"),
    "time.sleep": ("import time", "time.sleep(1)"),
    "random.random": ("import random", "random.random()"),
    "random.choice imported by name": ("from random import choice", "choice([1, 2])"),
    "secrets.token_hex": ("import secrets", "secrets.token_hex()"),
    "uuid.uuid4": ("import uuid", "uuid.uuid4()"),
    "uuid1 imported by name": ("from uuid import uuid1", "uuid1()"),
    "os.environ": ("import os", "os.environ['HOME']"),
    "os.getenv": ("import os", "os.getenv('HOME')"),
    "environ imported by name": ("from os import environ", "environ.get('HOME')"),
    "builtin open": ("", "open('settings.json').read()"),
    "builtins.open": ("import builtins", "builtins.open('settings.json')"),
    "Path.read_text": ("from pathlib import Path", "Path('settings.json').read_text()"),
    "io": ("import io", "io.FileIO('settings.json')"),
    "socket": ("import socket", "socket.create_connection(('example.org', 80))"),
    "subprocess": ("import subprocess", "subprocess.run(['true'])"),
    "threading": ("import threading", "threading.Thread(target=print)"),
    "multiprocessing": ("import multiprocessing", "multiprocessing.Process(target=print)"),
    "concurrent.futures": ("from concurrent.futures import ThreadPoolExecutor", "ThreadPoolExecutor()"),
    "httpx": ("import httpx", "httpx.get('http://example.org')"),
    "sqlalchemy": ("import sqlalchemy", "sqlalchemy.create_engine('sqlite://')"),
    "asyncpg": ("import asyncpg", "asyncpg.connect()"),
    "asyncio.wait": ("import asyncio", "asyncio.wait([])"),
    "as_completed imported by name": ("from asyncio import as_completed", "as_completed([])"),
    "platform": ("import platform", "platform.node()"),
    "ZoneInfo.from_file": ("from zoneinfo import ZoneInfo", "ZoneInfo.from_file(None)"),
}

# Real modules of the two packages the contract covers, and one outside it.
GUARDED = ["interpreter/engine.py", "workflows/generic.py"]
UNGUARDED = "activities/echo.py"


def _inject(source: str, imports: str, expression: str) -> tuple[str, set[int]]:
    """``source`` with a function using ``expression`` appended, and the lines that may be named."""
    lines = source.rstrip("\n").split("\n")
    lines += ["", "", "def _injected() -> object:"]
    named = set()
    if imports:
        lines.append(f"    {imports}")
        named.add(len(lines))
    lines += ["", f"    return {expression}"]
    named.add(len(lines))
    return "\n".join(lines) + "\n", named


def _copy(relative: str, case: str) -> str:
    """Where the copy of ``relative`` with ``case`` injected goes: next to it, in the same package."""
    slug = "".join(c if c.isalnum() else "_" for c in case)
    return relative.removesuffix(".py") + f"__{slug}.py"


@dataclass(frozen=True)
class Linted:
    named: dict[str, set[int]]  # copy -> the lines where the injection is
    problems: dict[str, list[dict[str, Any]]]  # copy -> ruff's findings (rule code, location, ...)


@pytest.fixture(scope="module")
def linted(tmp_path_factory: pytest.TempPathFactory) -> Linted:
    """A directory laid out like the repository (its ruff configuration, the real modules and one
    copy of each per injected case), linted by one ruff run as ``make lint`` runs it: the project
    configuration found from the working directory."""
    tree = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    named: dict[str, set[int]] = {}
    for relative in [*GUARDED, UNGUARDED]:
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        source = (ROOT / relative).read_text()
        (tree / relative).write_text(source)
        named[relative] = set()
        for case, (imports, expression) in FORBIDDEN.items():
            injected, lines = _inject(source, imports, expression)
            (tree / _copy(relative, case)).write_text(injected)
            named[_copy(relative, case)] = lines
    completed = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "json", "."],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode in {0, 1}, completed.stderr
    problems: dict[str, list[dict[str, Any]]] = {relative: [] for relative in named}
    for problem in json.loads(completed.stdout):
        problems[Path(problem["filename"]).relative_to(tree).as_posix()].append(problem)
    return Linted(named, problems)


def _contract_violations(linted: Linted, relative: str) -> set[int]:
    return {p["location"]["row"] for p in linted.problems[relative] if p["code"] in CONTRACT_RULES}


@pytest.mark.parametrize("relative", GUARDED)
def test_the_modules_as_committed_keep_the_contract(linted: Linted, relative: str) -> None:
    assert linted.problems[relative] == []


@pytest.mark.parametrize("relative", GUARDED)
@pytest.mark.parametrize("case", sorted(FORBIDDEN))
def test_a_clock_randomness_environment_or_io_in_workflow_code_is_refused(
    linted: Linted, relative: str, case: str
) -> None:
    copy = _copy(relative, case)
    assert _contract_violations(linted, copy) & linted.named[copy], (
        f"{case} in {relative} not refused: {linted.problems[copy]}"
    )


@pytest.mark.parametrize("case", sorted(FORBIDDEN))
def test_the_contract_does_not_reach_activities(linted: Linted, case: str) -> None:
    """Activities do I/O by design: the same lines there are no contract violation."""
    assert _contract_violations(linted, _copy(UNGUARDED, case)) == set()
