"""The worker caps the state budget a run's starter claims (``WFA_STATE_BUDGET_MAX``).

``WFA_PAYLOAD_STORE_STATE_BUDGET`` is set by whoever starts runs (a client, the gateway, a service
with start rights) and recorded in the run's options: without a worker-side cap it would decide how
much state the workers keep per run. Runs on the session's dev server, with an ``fs:`` store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

import starter.payload_store
import workflows.generic
from interpreter.state import RunState
from starter.client import FlowClient
from starter.payload_store import (
    DEFAULT_STATE_BUDGET,
    MAX_BLOB_BYTES,
    MAX_STATE_BUDGET,
    PayloadStoreConfigError,
    state_budget_max_from_env,
)
from tests.test_payload_store import client_of, env_of, run_with_worker
from tests.workflows.support import counting_loop, definition, eventually, record, unique
from worker import WORKFLOWS, workflow_runner
from workflows.generic import STATE_BUDGET_UNCHECKED, STORE_CODEC_MARGIN, STORED_PAYLOAD_MAX_BYTES

CHUNK = 240_000  # two of them: under an action's 512 KiB output budget, each under a template's 256 KiB
ITEMS = 36  # 36 outputs of 480 KB: 17.3 MB of state, over the 16 MiB default maximum


def heavy(name: str) -> dict[str, Any]:
    """A foreach whose collected outputs exceed 16 MiB."""
    return definition(
        name,
        [
            {
                "id": "each",
                "type": "foreach",
                "items": f"range({ITEMS}) | list",
                "concurrency": 6,
                "steps": [
                    {
                        "id": "item",
                        "type": "task",
                        "action": "echo",
                        "input": {"value": {"chunk": "{{ input.chunks }}", "item": "{{ item }}"}},
                    }
                ],
            },
            {
                "id": "count",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ steps.each.output | length }}"},
            },
        ],
        limits={"max_foreach_items": 100, "max_step_executions": 200},
    )


def test_the_maximum_is_checked() -> None:
    assert STATE_BUDGET_UNCHECKED == DEFAULT_STATE_BUDGET  # the workflow's copy of the floor
    assert state_budget_max_from_env({}) == DEFAULT_STATE_BUDGET
    assert state_budget_max_from_env({"WFA_STATE_BUDGET_MAX": str(MAX_STATE_BUDGET)}) == MAX_STATE_BUDGET
    for value, message in (
        ("lots", "WFA_STATE_BUDGET_MAX: 'lots' is not a number of bytes"),
        ("1000000", "WFA_STATE_BUDGET_MAX: 1000000 is not between 16777216 and 268435456 bytes"),
        (str(MAX_STATE_BUDGET + 1), "is not between"),
    ):
        with pytest.raises(PayloadStoreConfigError, match=message):
            state_budget_max_from_env({"WFA_STATE_BUDGET_MAX": value})


async def test_a_starter_cannot_claim_more_state_than_the_worker_allows(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacker: a starting service that claims the largest budget the options accept (256 MiB).
    The worker, left at its default maximum, gives the run 16 MiB: the foreach that keeps 17 MB
    fails as a step, the error naming the maximum and the claim. The worker's answer is recorded, so
    the history replays under another maximum. With a worker that allows 64 MiB, the same run
    completes: the claim still counts up to the worker's maximum."""
    store = f"fs:{tmp_path / 'payloads'}"
    greedy = await client_of(
        temporal_env, env_of(store=store, WFA_PAYLOAD_STORE_STATE_BUDGET=str(MAX_STATE_BUDGET))
    )
    flows = FlowClient(greedy, task_queue=task_queue, database=database_url)
    flows.engine_level = 0  # every change asked through workflow.patched: its marker shows where
    monkeypatch.delenv("WFA_STATE_BUDGET_MAX", raising=False)
    started = await flows.start_run(heavy(unique("greedy")), {"chunks": ["c" * CHUNK, "d" * CHUNK]})
    result = await run_with_worker(greedy, task_queue, started.result(timeout=600))
    assert result.state == RunState.FAILED
    assert result.error_type == "StateBudgetExceeded", result.error
    error = result.error or ""
    assert f"over its budget of {DEFAULT_STATE_BUDGET} bytes" in error
    assert "WFA_STATE_BUDGET_MAX" in error
    assert f"the run asked for {MAX_STATE_BUDGET} bytes" in error

    history = await greedy.get_workflow_handle(started.workflow_id).fetch_history()
    markers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert any(b"wfa.state_budget_max" in e.SerializeToString() for e in markers)  # the local activity
    assert any(b"state-budget-max" in e.SerializeToString() for e in markers)  # its patch
    # Replayed by a worker configured otherwise: the recorded maximum applies, no nondeterminism.
    monkeypatch.setenv("WFA_STATE_BUDGET_MAX", str(MAX_STATE_BUDGET))
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=greedy.data_converter, workflow_runner=workflow_runner()
    )
    await replayer.replay_workflow(history)

    # An operator who allows 64 MiB: the same claim now gets 64 MiB (the items and the foreach's collected list count, 34.5 MB) and the run completes.
    monkeypatch.setenv("WFA_STATE_BUDGET_MAX", str(64 * 1024 * 1024))
    started = await flows.start_run(heavy(unique("allowed")), {"chunks": ["c" * CHUNK, "d" * CHUNK]})
    result = await run_with_worker(greedy, task_queue, started.result(timeout=600))
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert record(result, "count").output == ITEMS


async def test_a_default_budget_run_asks_the_worker_nothing(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, tmp_path: Path
) -> None:
    """A run at the default budget (16 MiB) is never capped: no local activity, no marker of the cap:
    its history is as before the cap existed."""
    client = await client_of(temporal_env, env_of(store=f"fs:{tmp_path / 'payloads'}"))
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    flows.engine_level = 0  # every change asked through workflow.patched: markers of the others
    started = await flows.start_run(
        definition(unique("plain"), [{"id": "a", "type": "task", "action": "echo", "input": {"value": 1}}]),
        {},
    )
    result = await run_with_worker(client, task_queue, started.result(timeout=120))
    assert result.state == RunState.COMPLETED
    history = await client.get_workflow_handle(started.workflow_id).fetch_history()
    markers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert markers  # the run's other patch markers
    assert not [e for e in markers if b"state-budget-max" in e.SerializeToString()]
    assert not [e for e in markers if b"wfa.state_budget_max" in e.SerializeToString()]


def _amplified(name: str, keys: int, items: int = 0) -> dict[str, Any]:
    """A definition that renders, from an empty run input, a task input of ``keys`` x 1 MB (a 90 KB
    string repeated 11 times per key): in a ``foreach`` of ``items`` at once when given, then a
    last task."""
    call = {
        "id": "item" if items else "huge",
        "type": "task",
        "action": "echo",
        "on_failure": "continue",
        "input": {"value": {f"k{i}": "{{ [vars.s] * 11 }}" for i in range(keys)}},
    }
    body: dict[str, Any] = call
    if items:
        body = {
            "id": "each",
            "type": "foreach",
            "items": f"range({items}) | list",
            "concurrency": items,
            "steps": [call],
        }
    return definition(
        unique(name),
        [
            {"id": "mk", "type": "set", "vars": {"s": "{{ 'x' * 90000 }}"}},
            body,
            {"id": "after", "type": "task", "action": "echo", "input": {"value": "done"}},
        ],
    )


# ------------------------------------------- what the store takes: its own cap (found by a probe)


def test_the_workflow_knows_the_stores_cap() -> None:
    assert STORED_PAYLOAD_MAX_BYTES == MAX_BLOB_BYTES


async def test_an_input_a_definition_amplifies_past_the_state_budget_fails_its_step(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, tmp_path: Path
) -> None:
    """The attacker: a definition alone (an empty run input) renders a task's input of 69 MB, a
    90 KB string repeated 770 times, past what the store takes (64 MiB): its workflow task failed on
    every retry, the run stuck, the worker serializing it each time. Now an input over the run's
    state budget fails its step (``PayloadTooLarge``), which ``on_failure`` handles."""
    client = await client_of(temporal_env, env_of(store=f"fs:{tmp_path / 'payloads'}"))
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    document = _amplified("amplified", 70)
    started = await flows.start_run(document, {})
    result = await run_with_worker(client, task_queue, started.result(timeout=120))
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    failed = record(result, "huge")
    assert failed.error_type == "PayloadTooLarge"
    assert f"more than one input may take ({DEFAULT_STATE_BUDGET} bytes: the run's state budget" in (
        failed.error or ""
    )
    assert record(result, "after").output == "done"


CAPPED = 4 * 1024 * 1024
"""The store's cap in the tests below: 4 MiB, under the default 16 MiB state budget, as a worker
allowing 256 MiB has it above the real 64 MiB."""


async def _capped_store(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **env: str,
) -> tuple[Client, FlowClient]:
    """A client with an ``fs:`` store whose cap (the store's and the workflow's) is :data:`CAPPED`
    (and the other settings ``env`` names)."""
    monkeypatch.setattr(starter.payload_store, "MAX_BLOB_BYTES", CAPPED)
    monkeypatch.setattr(workflows.generic, "STORED_PAYLOAD_MAX_BYTES", CAPPED)
    client = await client_of(temporal_env, env_of(store=f"fs:{tmp_path / 'payloads'}", **env))
    return client, FlowClient(client, task_queue=task_queue, database=database_url)


def _ten_copies(copies: int) -> dict[str, Any]:
    """A foreach of 10 items, each echoing ``copies`` copies of ``input.chunk``."""
    return {
        "id": "each",
        "type": "foreach",
        "items": "range(10) | list",
        "steps": [
            {
                "id": "item",
                "type": "task",
                "action": "echo",
                "input": {"value": ["{{ input.chunk }}"] * copies},
            }
        ],
    }


async def test_a_result_over_what_the_store_takes_is_returned_without_its_records(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker may allow a state budget (up to 256 MiB) above what the store takes in one payload
    (64 MiB): a run whose result with its step records passed the store's cap failed its last
    workflow task on every retry (found by a probe: 90 items of 480 KB). Here the store's cap is
    lowered to 4 MiB and the run's records hold 5 MB: the result comes back without them (the
    output is all there), as one over Temporal's limit does without the store."""
    client, flows = await _capped_store(temporal_env, task_queue, database_url, tmp_path, monkeypatch)
    document = definition(
        unique("records"),
        [_ten_copies(3)],
        output={"items": "{{ steps.each.output | length }}"},
    )
    started = await flows.start_run(document, {"chunk": "y" * 85_000})
    result = await run_with_worker(client, task_queue, started.result(timeout=120))
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert result.output == {"items": 10}
    assert result.steps == []


async def test_an_input_over_what_the_store_takes_fails_its_step_whatever_the_budget(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A budget above the store's cap (here the cap lowered to 4 MiB under the default 16 MiB, as a
    worker allowing 256 MiB has it above 64 MiB): an input between the two fails its step too,
    bounded by the store's cap less the codec's margin (found by a review: it went to the store,
    which refused it, and the workflow task failed for ever)."""
    client, flows = await _capped_store(temporal_env, task_queue, database_url, tmp_path, monkeypatch)
    document = _amplified("between", 6)  # 6 MB
    started = await flows.start_run(document, {})
    result = await run_with_worker(client, task_queue, started.result(timeout=120))
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert record(result, "huge").error_type == "PayloadTooLarge"
    assert f"({CAPPED - STORE_CODEC_MARGIN} bytes" in (record(result, "huge").error or "")
    assert record(result, "after").output == "done"


async def test_many_amplified_inputs_fail_their_steps_without_being_serialized(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, tmp_path: Path
) -> None:
    """The probe's second shape: a foreach of 24 items at once, each rendering a 55 MB input. Each
    fails its step on its quick count, none serialized (before: 1.3 GB per attempt, past the
    workflow task's timeout, retried for ever); no workflow task fails."""
    client = await client_of(temporal_env, env_of(store=f"fs:{tmp_path / 'payloads'}"))
    flows = FlowClient(client, task_queue=task_queue, database=database_url)
    document = _amplified("many", 55, items=24)
    started = await flows.start_run(document, {})
    result = await run_with_worker(client, task_queue, started.result(timeout=120))
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    items = [r for r in result.steps if r.id == "item"]
    assert [r.error_type for r in items] == ["PayloadTooLarge"] * 24
    assert all("is over " in (r.error or "") for r in items)
    history = await client.get_workflow_handle(started.workflow_id).fetch_history()
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]


async def test_a_next_run_over_what_the_store_takes_fails_the_run_saying_so(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the store, a next run's input goes by reference up to the store's cap: one past it (here
    the cap lowered to 4 MiB, the run's state about 5 MB when its history budget asks it to continue
    as new) fails the run with ``ContinueAsNewTooLarge`` naming the store, instead of a workflow task
    the store refuses for ever; no workflow task fails."""
    client, flows = await _capped_store(temporal_env, task_queue, database_url, tmp_path, monkeypatch)
    document = definition(
        unique("next-run"),
        [
            _ten_copies(2),
            {"id": "init", "type": "set", "vars": {"n": 0}},
            *counting_loop("l", "n", 60),
        ],
        limits={"history_budget": 100},
    )
    started = await flows.start_run(document, {"chunk": "z" * 120_000})
    handle = client.get_workflow_handle(started.workflow_id)
    result = await run_with_worker(client, task_queue, started.result(timeout=120))
    assert (result.state, result.error_type) == (RunState.FAILED, "ContinueAsNewTooLarge"), result.error
    assert f"more than the payload store takes ({CAPPED - STORE_CODEC_MARGIN} bytes)" in (result.error or "")
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert not [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    ]


async def test_step_records_past_the_store_cap_under_a_small_state_budget_are_left_out(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe: with the store and a state budget at most half its cap, the result and the status
    answer were never measured (the state budget was taken to bound them), but it counts the steps'
    outputs, not their records: 180,000 ``set`` steps of 200-character names made a 72 MB result,
    past the 64 MiB cap; the run's last workflow task failed on every attempt, and every status
    query failed. Here the cap is 4 MiB, the state budget 1 MiB, and 18,000 records take 7 MB."""
    client, flows = await _capped_store(
        temporal_env,
        task_queue,
        database_url,
        tmp_path,
        monkeypatch,
        WFA_PAYLOAD_STORE_STATE_BUDGET=str(1 << 20),
    )
    named = [{"id": f"s{k}", "name": "n" * 200, "type": "set", "vars": {"v": k}} for k in range(8)]
    document = definition(
        unique("named"),
        [
            {
                "id": "each",
                "type": "foreach",
                "items": "range(2000) | list",
                "max_items": 2000,
                "fan_out_above": 10_000,
                "steps": named,
            },
            {"id": "review", "type": "approval", "approvers": ["alice"]},
        ],
        limits={"max_foreach_items": 2000, "max_step_executions": 100_000},
        output={"done": True},
    )
    started = await flows.start_run(document, {})

    async def waited_and_decided() -> Any:
        waiting = await eventually(
            lambda: flows.status(started.workflow_id),
            lambda s: s.state == RunState.AWAITING_APPROVAL,
            timeout=240,
            what="the approval, after 18,000 records",
        )
        await flows.approve(started.workflow_id, "alice")
        return waiting, await started.result(timeout=120)

    waiting, result = await run_with_worker(client, task_queue, waited_and_decided())
    assert waiting.steps_dropped > 0  # the answer kept its most recent records
    assert waiting.steps[-1].path == "review"
    assert result.state == RunState.COMPLETED, (result.error_type, result.error)
    assert result.output == {"done": True}
    assert result.steps == []  # returned without its records, as past Temporal's limit without the store
