"""One run tree (a run and every run started under it) counts at most ``WFA_MAX_RUNS_PER_TREE`` runs.

The adversary: a tenant's definition that starts itself detached from a foreach. The depth limit
(5) and the open-children cap (2,000 per run) bound each run, not the tree: three items per level
make 364 runs with the root, 2,000 would make 3.2e16. The ``subflow_resolve`` activity counts the
tree by Temporal's ``RootRunId`` and refuses a subflow once the tree holds the worker's bound
(``SubflowTreeLimitExceeded``), which the step's ``on_failure`` handles. On the session's dev
server and the embedded PostgreSQL (the registry).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.subflows import (
    DEFAULT_MAX_RUNS_PER_TREE,
    MAX_RUNS_PER_TREE_ENV,
    TREE_RUNS,
    max_runs_per_tree_from_env,
)
from interpreter.state import RunResult, RunState
from starter.client import FlowClient
from tests.helpers.worker_process import exit_code, spawn_worker
from tests.workflows.support import eventually, unique
from workflows import generic

LIMIT = 20
ITEMS = 3
UNBOUNDED = sum(ITEMS**level for level in range(6))
"""The root and five levels of three: what the definition starts without the tree bound (364)."""


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def run_tree(
    client: Client, flows: FlowClient, definition: str | dict[str, Any]
) -> tuple[RunResult, str, int]:
    """Runs ``definition`` (a worker with the registry's activities polls: the ``store_worker``
    fixture) until every run of its tree closed: its result, the tree's visibility query, and how
    many runs the tree counts."""
    run = await flows.start_run(definition)
    result = await run.result(timeout=120)
    tree = f"RootRunId = '{run.run_id}'"
    await eventually(
        lambda: count(client, f"{tree} AND ExecutionStatus = 'Running'"),
        lambda n: n == 0,
        timeout=180,
        what="every run of the tree closed",
    )
    return result, tree, await count(client, tree)


@pytest.fixture
def bounded(store_worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Worker:
    """A worker with the registry's activities polling, the tree bound at :data:`LIMIT`
    (``WFA_MAX_RUNS_PER_TREE`` is read at each check)."""
    monkeypatch.setenv(MAX_RUNS_PER_TREE_ENV, str(LIMIT))
    return store_worker


async def test_a_definition_that_starts_itself_stops_at_the_tree_bound(
    client: Client, flows: FlowClient, bounded: Worker
) -> None:
    name = unique("bomb")
    itself = {"id": "again", "type": "subflow", "definition": name, "wait": False, "on_failure": "continue"}
    foreach = {"id": "each", "type": "foreach", "items": f"range({ITEMS}) | list", "concurrency": ITEMS}
    await flows.register({"name": name, "steps": [{**foreach, "steps": [itself]}]}, author="mallory")
    result, tree, total = await run_tree(client, flows, name)
    assert result.state == RunState.COMPLETED, result.error
    # This worker counts the starts it grants at once (20 here, twice); past the bound only by
    # starts made after a recount from visibility (every 2 s per tree) that its lag undercounts.
    assert LIMIT <= total <= 5 * LIMIT < UNBOUNDED, total
    refused = []
    async for execution in client.list_workflows(tree):
        result = await flows.result(execution.id, timeout=30)
        assert result.state == RunState.COMPLETED, result.error  # on_failure: continue held
        refused += [r for r in result.steps if r.error_type == "SubflowTreeLimitExceeded"]
    assert refused
    assert "already counts" in (refused[0].error or "")
    assert f"({MAX_RUNS_PER_TREE_ENV}={LIMIT})" in (refused[0].error or "")


async def test_nested_fanned_out_steps_stop_at_the_tree_bound(
    client: Client, flows: FlowClient, bounded: Worker
) -> None:
    """Nested fanned-out foreach steps (4 outer slices, each item fanning out 8 more) would make 37
    runs; each fan-out first counts the tree, so with a bound of 20 the second (or third) inner
    fan-out is refused and the run fails naming it (patch ``fan-out-tree-bound``)."""
    call = {"id": "call", "type": "task", "action": "echo", "input": {"value": "{{ item }}"}}
    inner = {"id": "inner", "type": "foreach", "items": "range(8) | list", "concurrency": 8}
    outer = {"id": "outer", "type": "foreach", "items": "range(4) | list", "concurrency": 1}
    fan_out = {"fan_out_above": 0, "batch_size": 1}
    document = {
        "name": unique("nested"),
        "steps": [{**outer, **fan_out, "steps": [{**inner, **fan_out, "steps": [call]}]}],
    }
    result, _, total = await run_tree(client, flows, document)
    assert (result.state, result.error_type) == (RunState.FAILED, "FanOutTreeLimitExceeded"), result.error
    assert f"past the most this worker lets one tree start ({MAX_RUNS_PER_TREE_ENV}={LIMIT})" in (
        result.error or ""
    )
    # The outer fan-out reserves its 4 slices (the worker counts what it grants at once): 1 + 4 + 8
    # leaves no room for the second inner fan-out, 11 runs. When the count is read again from
    # visibility (every 2 s per tree) it no longer holds the reservation: the second gets through
    # and the third is refused, 20; a long visibility lag could let one more through, 29. Without
    # the bound: 1 + 4 + 4 x 8 = 37.
    assert 11 <= total <= 29 < 1 + 4 + 4 * 8, total


async def test_the_bound_is_read_from_the_environment_and_a_bad_value_stops_the_worker(
    tmp_path: Path,
) -> None:
    assert max_runs_per_tree_from_env({}) == DEFAULT_MAX_RUNS_PER_TREE == 20_000
    assert max_runs_per_tree_from_env({MAX_RUNS_PER_TREE_ENV: " 50_000 "}) == 50_000
    for bad in ("9", "1000001", "lots", "-5"):
        with pytest.raises(
            ValueError, match=rf"^{MAX_RUNS_PER_TREE_ENV}: '{bad}' is not a whole number of runs"
        ):
            max_runs_per_tree_from_env({MAX_RUNS_PER_TREE_ENV: bad})

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "WFA_", "OTEL_"))}
    env |= {"TEMPORAL_ADDRESS": "127.0.0.1:1", "PYTHONUNBUFFERED": "1", MAX_RUNS_PER_TREE_ENV: "lots"}
    log = tmp_path / "worker.log"
    assert await exit_code(spawn_worker(env, log), timeout=60) == 2
    text = log.read_text()
    assert f"{MAX_RUNS_PER_TREE_ENV}: 'lots' is not a whole number of runs from 10 to 1,000,000" in text
    assert "Traceback" not in text


def test_the_workflow_names_the_activity_and_variable_as_the_activities_do() -> None:
    """The workflow module does not import the activities; its copies of their names must match."""
    assert (generic.TREE_RUNS, generic.MAX_RUNS_PER_TREE_ENV) == (TREE_RUNS, MAX_RUNS_PER_TREE_ENV)
