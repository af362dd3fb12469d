"""A run a worker drops unfinished is closed without Python reporting "coroutine ignored
GeneratorExit".

A worker that shuts down (or drops a run from its cache) leaves the run's suspended coroutines to
the garbage collector, which closes them: GeneratorExit is thrown in where each waits. The engine's
join of concurrent branches (``parallel``, ``foreach``) waited there for its cancelled branches in
a ``finally``: a coroutine that awaits while it is being closed ignores GeneratorExit, and Python
reported it as an unraisable RuntimeError for the whole run (19 times in one run of the suite). A
dropped run now closes quietly: nothing is awaited, and no command is sent either way.

Real dev server, the product's worker.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client

from interpreter.state import RunState
from tests.workflows.support import approvals_in_a_foreach, collector_held, start, wait_state
from worker import build_worker


@contextmanager
def _unraisable() -> Iterator[list[str]]:
    """What Python reports as unraisable meanwhile (an exception raised where none can propagate,
    such as in a coroutine the collector closes)."""
    seen: list[str] = []
    previous = sys.unraisablehook

    def hook(report: Any) -> None:
        seen.append(f"{report.exc_type.__name__}: {report.exc_value} in {report.object!r}")

    sys.unraisablehook = hook
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


async def test_a_run_dropped_while_its_branches_wait_closes_quietly(
    client: Client, task_queue: str, http_client: httpx.AsyncClient
) -> None:
    doc = approvals_in_a_foreach("dropped-join")
    with collector_held():  # the run's coroutines are closed below, where the report is watched
        async with build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)):
            run = await start(client, task_queue, doc)
            await wait_state(run, RunState.AWAITING_APPROVAL, timeout=60)
        # The worker is gone; the run's suspended coroutines wait for the collector.
        with _unraisable() as seen:
            found = gc.collect()
    assert found > 0  # the dropped run's objects were collected here
    assert [s for s in seen if "GeneratorExit" in s] == [], seen
    await run.terminate("test over")
