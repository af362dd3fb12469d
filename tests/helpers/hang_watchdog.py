"""An autouse fixture that turns a hung async test into a failure naming where it waits.

A test still running after :func:`hang_after` seconds is hung, not slow (the slowest take a few
minutes on a busy 2-core box). The watchdog then prints the stack of every asyncio task to stderr
(pytest shows it with the failure) and cancels the test, or the fixture teardown it hangs in (a
worker whose shutdown never ends), so one hang fails one test instead of stalling the whole suite
until CI's own limit, with nothing said about where it waited. (A cancelled teardown raises
``CancelledError``, which pytest does not catch there: the test's other fixtures are then torn down
after the next test, not before it. Late, but the session goes on.)
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

DEFAULT_HANG_S = 1200.0


def hang_after() -> float:
    """Seconds after which a test counts as hung (``WFA_TEST_HANG_S``, default 20 minutes)."""
    return float(os.environ.get("WFA_TEST_HANG_S") or DEFAULT_HANG_S)


def _cancel_hung_test(name: str, after: float) -> None:
    tasks = asyncio.all_tasks()
    print(f"\n--- {name} still running after {after:g} s; its {len(tasks)} asyncio tasks:", file=sys.stderr)
    for task in tasks:
        task.print_stack(limit=12, file=sys.stderr)
    # pytest-asyncio runs the test's own coroutine as a task of the session loop, and each async
    # fixture's teardown as a task of ``async_finalizer``: a test that has returned may hang in the
    # teardown of a fixture (a worker whose shutdown never ends), which is cancelled the same way.
    names = {getattr(task.get_coro(), "__name__", None): task for task in tasks}
    hung = names.get(name) or names.get("async_finalizer")
    if hung is not None:
        hung.cancel(f"hung: still running after {after:g} s (every task's stack is on stderr)")


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def hang_watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Cancels an async test that runs longer than :func:`hang_after`, after printing its tasks."""
    after = hang_after()
    timer = asyncio.get_running_loop().call_later(after, _cancel_hung_test, request.node.originalname, after)
    try:
        yield
    finally:
        timer.cancel()
