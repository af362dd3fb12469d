"""A template whose arguments do the work fails its step; it no longer holds a workflow task for
ever (found by an attacker's probe: ``select('in', input.b)`` scanned an 80,000-item list for each
of 30,000 items, past the deadlock limit at every attempt, the run Running with its task failing;
``tojson(1000000)`` in 20 concurrent foreach items took the worker's memory to 5.9 GB). On the dev
server with the real worker: the run fails with a message naming the problem, or the step's
``on_failure`` applies, and another run on the same worker completes meanwhile."""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from tests.workflows.support import definition, hostile_beside_a_bystander, unique
from workflows.generic import ENGINE_LEVEL

SELECT_IN = "{{ input.a | select('in', input.b) | list | length }}"
LISTS = {"a": list(range(30_000)), "b": list(range(-1, -80_001, -1))}


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 0], ids=["this-generation", "patch-asked"])
async def test_a_test_reading_a_long_list_for_every_item_fails_its_step(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    document = definition(unique("select-in"), [{"id": "pick", "type": "set", "vars": {"x": SELECT_IN}}])
    _, failed, markers = await hostile_beside_a_bystander(
        client, task_queue, document, LISTS, engine_level=level
    )
    assert failed.error_type == "TemplateError"
    assert failed.error is not None
    assert "a test such as 'in' given a long list" in failed.error, failed.error
    assert ('"template-arguments"' in " ".join(markers)) == (level == 0)


async def test_concurrent_items_indenting_past_the_limit_fail_the_run(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """The probe's foreach: 20 items at once, each rendering ``tojson(1000000)`` of 1,000 numbers
    (a gigabyte each, before: the worker took 5.9 GB and the task failed with a deadlock, the run
    Running). The first item's template fails the run, naming it; another run completes."""
    items = {
        "id": "each",
        "type": "foreach",
        "items": "range(20) | list",
        "concurrency": 20,
        "steps": [
            {
                "id": "big",
                "type": "task",
                "action": "echo",
                "input": {"value": "{{ range(1000) | list | tojson(1000000) }}"},
            }
        ],
    }
    document = definition(unique("indent"), [items])
    cause, _, _ = await hostile_beside_a_bystander(client, task_queue, document, engine_level=ENGINE_LEVEL)
    assert "tojson's indent would make text of 1,000,001,001 characters" in str(cause), cause
