"""``worker.py`` as a real subprocess of this checkout, as an operator runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Starts ``python worker.py`` in the repository with ``env``; its output is appended to ``log``."""
    return subprocess.Popen(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


async def exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The process's exit code once it exits; kills it and fails if it is still running after ``timeout``."""
    for _ in range(int(timeout * 10)):
        code = proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError(f"worker did not exit within {timeout}s")
