"""The inbox finds a person's work in full when a run's ``status`` answer had to cut it, on a real
server. A status answer fits in Temporal's 2 MiB (``RunStatus.left_out``): a run with hundreds of
tasks waiting at once lists the first that fit, and tasks with large forms are listed without
them. Found by a review: the inbox read only that answer, so it listed fewer tasks than the person
had, showed a task past the cut as "already decided", and showed a form left out as empty. It now
reads what was cut from the ``pending_approvals`` query (``FlowClient.waiting_at`` and
``FlowClient.every_pending_approval``).
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from gateway.inbox.auth import Person
from gateway.inbox.router import _item_context, find_work
from interpreter.state import FINAL_STATES, RunInput, RunOptions, RunStatus
from interpreter.validate import load_definition
from starter.client import FlowClient
from starter.errors import PendingApprovalsUnknownError
from starter.operations import watch
from tests.workflows.support import eventually, status, unique
from tests.workflows.test_status_fitting import hundreds_of_tasks
from workflows.generic import RunDefinitionWorkflow

TENANT = "acme"
ALICE = Person(TENANT, "alice")


async def _waiting(
    client: Client, task_queue: str, steps: list[dict[str, Any]], run_input: dict[str, Any], count: int
) -> tuple[WorkflowHandle[Any, Any], RunStatus]:
    """A run of ``steps`` for the tenant, once ``count`` tasks wait in it."""
    run = RunInput(
        definition=load_definition(
            {"name": unique("cut"), "limits": {"max_step_executions": 2000}, "steps": steps}
        ),
        input=run_input,
        options=RunOptions(tenant=TENANT, publish_assignees=True),
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        run,
        id=unique("cut-run"),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=5),
    )

    def all_waiting(answer: RunStatus) -> bool:
        waiting = len(answer.pending_approvals) + answer.pending_approvals_dropped
        return waiting >= count or answer.state in FINAL_STATES

    answer = await eventually(lambda: status(handle), all_waiting, timeout=120, what=f"{count} waiting")
    assert answer.state not in FINAL_STATES, (answer.state, answer.error)
    return handle, answer


async def _work_in(flows: FlowClient, run_id: str) -> list[str]:
    return [item.approval.path for item in (await find_work(flows, ALICE, 50)).items if item.run == run_id]


async def test_hundreds_of_tasks_waiting_at_once_are_all_in_the_inbox(
    client: Client, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps, run_input = hundreds_of_tasks("alice")
    handle, answer = await _waiting(client, task_queue, steps, run_input, 500)
    flows = FlowClient(client, task_queue=task_queue, tenant=TENANT)
    try:
        assert "pending_approvals" in answer.left_out
        listed = [a.path for a in answer.pending_approvals]
        assert 100 < len(listed) < 500
        assert answer.pending_approvals_dropped == 500 - len(listed)
        every = [a.path for a in await flows.pending_approvals(handle.id)]
        assert len(every) == len(set(every)) == 500
        assert set(listed) < set(every)
        # The inbox lists all 500 (before: the ones the status listed).
        await eventually(
            lambda: _work_in(flows, handle.id),
            lambda paths: sorted(paths) == sorted(every),
            timeout=60,
            what="all 500 in alice's inbox",
        )
        # `wfa watch` lists every waiting task too (before: the ones the status listed; a review).
        watched = io.StringIO()
        with pytest.raises(TimeoutError):
            await watch(flows, handle.id, watched, interval=0.2, timeout=0.1)
        waits = [
            line.split("waiting: approval ", 1)[1]
            for line in watched.getvalue().splitlines()
            if "waiting: approval" in line
        ]
        assert sorted(wait.split(" by ", 1)[0] for wait in waits) == sorted(every)
        # A task past the cut is shown as waiting, its texts in full (before: "already decided").
        last = next(path for path in reversed(every) if path not in listed)
        _, pending = await _item_context(flows, handle.id, last)
        assert pending is not None
        assert (pending.path, pending.message, pending.description) == (last, run_input["t"], run_input["t"])
        # It is decided as any other, and then no longer waits.
        await flows.complete_task(handle.id, "alice", step_id=last)
        await eventually(
            lambda: _item_context(flows, handle.id, last), lambda found: found[1] is None, what="decided"
        )
        assert len(await flows.pending_approvals(handle.id)) == 499
        # When the run cannot answer the query (a worker of a build before it, played here by the
        # query failing), whether such a step waits cannot be told: said so, not "already decided"
        # (a review); the list falls back to the tasks the status holds.
        other = next(path for path in every if path not in listed and path != last)

        async def unanswered(*_: Any) -> None:
            raise PendingApprovalsUnknownError("no answer")

        monkeypatch.setattr(FlowClient, "_approvals_page", unanswered)
        with pytest.raises(PendingApprovalsUnknownError):
            await _item_context(flows, handle.id, other)
        assert set(await _work_in(flows, handle.id)) <= set(listed)
    finally:
        await handle.terminate("test over")


async def test_a_form_left_out_of_the_status_is_shown_in_full(
    client: Client, task_queue: str, worker: Worker
) -> None:
    values = [f"{n:03d}" + "v" * 197 for n in range(100)]
    form = [{"name": f"f{i}", "type": "enum", "values": values} for i in range(10)]  # 200 KB
    task = {
        "id": "review",
        "type": "human_task",
        "assignee": "alice",
        "title": "Review {{ item }}",
        "fields": form,
    }
    steps = [{"id": "each", "type": "foreach", "items": "input.items", "concurrency": 20, "steps": [task]}]
    handle, answer = await _waiting(client, task_queue, steps, {"items": list(range(20))}, 20)
    flows = FlowClient(client, task_queue=task_queue, tenant=TENANT)
    try:
        assert answer.left_out == ["pending_approvals.form"]
        path = answer.pending_approvals[7].path
        assert answer.pending_approvals[7].form == []  # what the inbox showed: an empty form
        _, pending = await _item_context(flows, handle.id, path)
        assert pending is not None
        assert [(f.name, f.values) for f in pending.form] == [(f"f{i}", values) for i in range(10)]
    finally:
        await handle.terminate("test over")
