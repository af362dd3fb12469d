"""The suite's hang watchdog: a hung test fails alone, with the stack of where it waits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pytest(where: Path) -> subprocess.CompletedProcess[str]:
    """pytest on ``where``'s ``test_sample.py``, the watchdog's limit 2 seconds."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=session",
            "-o",
            "asyncio_default_test_loop_scope=session",
            "test_sample.py",
        ],
        check=False,
        cwd=where,
        env={**os.environ, "PYTHONPATH": str(REPO), "WFA_TEST_HANG_S": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_hung_test_fails_with_its_stack_and_the_session_goes_on(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.helpers.hang_watchdog import hang_watchdog  # noqa: F401\n"
    )
    (tmp_path / "test_sample.py").write_text(
        "import asyncio\n"
        "async def test_waits_forever():\n"
        "    await asyncio.Event().wait()\n"
        "async def test_after_it():\n"
        "    await asyncio.sleep(0)\n"
        "def test_sync():\n"
        "    pass\n"
    )
    done = _pytest(tmp_path)
    out = done.stdout
    assert done.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert "FAILED test_sample.py::test_waits_forever" in out, out
    assert "hung: still running after 2 s" in out, out
    # Where it waited, from the task stacks the watchdog printed.
    assert "test_waits_forever still running after 2 s" in out, out
    assert 'test_sample.py", line 3, in test_waits_forever' in out, out


def test_a_fixture_hung_in_its_teardown_fails_its_test_and_the_session_goes_on(tmp_path: Path) -> None:
    """A worker whose shutdown never returns (a fixture's teardown) must not stall the suite: the
    watchdog cancels the teardown and the test errors, naming where it waited."""
    (tmp_path / "conftest.py").write_text(
        "from tests.helpers.hang_watchdog import hang_watchdog  # noqa: F401\n"
    )
    (tmp_path / "test_sample.py").write_text(
        "import asyncio\n"
        "import pytest_asyncio\n"
        "@pytest_asyncio.fixture(loop_scope='session')\n"
        "async def stuck_worker():\n"
        "    yield 1\n"
        "    await asyncio.Event().wait()\n"
        "async def test_uses_it(stuck_worker):\n"
        "    assert stuck_worker == 1\n"
        "async def test_after_it():\n"
        "    await asyncio.sleep(0)\n"
    )
    done = _pytest(tmp_path)
    out = done.stdout
    assert done.returncode == 1, out
    assert "2 passed, 1 error" in out, out
    assert "ERROR test_sample.py::test_uses_it" in out, out
    assert "test_uses_it still running after 2 s" in out, out
    # Where it waited: the teardown's traceback runs through the fixture's line 6.
    assert "test_sample.py:6: " in out, out
