"""``wfa`` as a real subprocess (``python -m starter`` from this checkout), as a user's script runs it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DOCUMENTED_EXIT_CODES = frozenset({0, 1, 2, 3, 4, 5, 6})
"""The exit codes the README documents (130, Ctrl-C, is exercised in ``tests/test_cli_settings_probe.py``)."""

HANG_LIMIT_S = 120.0
"""A process still running after this long is killed and counted as "did not exit" (never expected:
the slowest command here waits 0.5 s for a run)."""


@dataclass(frozen=True)
class Outcome:
    """How one ``wfa`` process ended.

    Attributes:
        args: Its arguments.
        code: Its exit code; negative for a signal (-6: abort), None if it had to be killed.
        out: What it printed on stdout; ``err`` on stderr.
    """

    args: tuple[str, ...]
    code: int | None
    out: str
    err: str

    @property
    def clean(self) -> bool:
        """A documented exit code, and no traceback or interpreter abort on stderr."""
        return (
            self.code in DOCUMENTED_EXIT_CODES
            and "Traceback" not in self.err
            and "Fatal Python error" not in self.err
        )

    def describe(self) -> str:
        """One line for an assertion message."""
        args = " ".join(arg if len(arg) < 60 else f"{arg[:40]}...({len(arg)} chars)" for arg in self.args)
        return f"wfa {args} -> {self.code}: {self.err.strip()[-400:]}"


def wfa_env(address: str, task_queue: str, **extra: str) -> dict[str, str]:
    """The environment of a ``wfa`` process: this checkout first on the path, the given server."""
    env = {key: value for key, value in os.environ.items() if key != "WFA_DEBUG"}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_TASK_QUEUE": task_queue,
            **extra,
        }
    )
    return env


async def run_wfa(*args: str, env: Mapping[str, str]) -> Outcome:
    """Runs ``python -m starter ARGS`` and waits for it to exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter",
        *args,
        cwd=ROOT,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), HANG_LIMIT_S)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        return Outcome(
            args, None, out.decode(errors="replace"), err.decode(errors="replace") + "\n(killed: hung)"
        )
    return Outcome(args, process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def run_many(
    commands: list[tuple[str, ...]], env: Mapping[str, str], concurrency: int = 3
) -> list[Outcome]:
    """Runs every command, ``concurrency`` processes at a time; outcomes in command order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(args: tuple[str, ...]) -> Outcome:
        async with gate:
            return await run_wfa(*args, env=env)

    return list(await asyncio.gather(*(one(args) for args in commands)))
