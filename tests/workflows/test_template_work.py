"""Templates doing work no budget counted fail their step; they no longer hold a workflow task for
ever (found by an attacker's probe: ``'x' | replace('y', c)`` of a nested list built a gigabyte of
text, one more level ran out of memory, an OOM kill retried for ever; and a loop of 480 ``set``
steps, each comparing values in single operations, held one workflow task 46 s, past the deadlock
limit at every attempt). On the dev server with the real worker: the run fails with a message
naming the problem, and another run on the same worker completes meanwhile."""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from tests.workflows.support import definition, hostile_beside_a_bystander, unique
from workflows.generic import ENGINE_LEVEL

REPLACE = (
    "{% set a = ['x' * 1000] * 100 %}{% set b = [a] * 100 %}{% set c = [b] * 100 %}"
    "{{ 'x' | replace('y', c) | length }}"
)


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 0], ids=["this-generation", "patch-asked"])
async def test_an_argument_turned_into_text_whole_fails_its_step(
    client: Client, task_queue: str, worker: Worker, level: int
) -> None:
    document = definition(unique("replace"), [{"id": "s", "type": "set", "vars": {"x": REPLACE}}])
    _, failed, markers = await hostile_beside_a_bystander(client, task_queue, document, engine_level=level)
    assert failed.error_type == "TemplateError"
    assert failed.error is not None
    assert "would be turned into text" in failed.error, failed.error
    assert ('"template-work"' in " ".join(markers)) == (level == 0)


async def test_a_loop_of_evaluations_heavy_in_single_operations_fails_in_its_task(
    client: Client, task_queue: str, worker: Worker
) -> None:
    """The probe's loop: each visit compares two lists of 10,000 numbers ten times over, a few
    operations of the work budget and two million steps of single operations; 480 visits ran in
    one workflow task. The task's evaluations now count those steps too: the run fails, naming it."""
    steps = [
        {"id": "init", "type": "set", "vars": {"big": "{{ range(10000) | list }}", "i": 0}},
        {
            "id": "s",
            "type": "set",
            "max_visits": 5000,
            "vars": {"x": "{{ [[vars.big] * 10] * 10 == [[vars.big] * 10] * 10 }}", "i": "{{ vars.i + 1 }}"},
        },
        {"id": "c", "type": "condition", "max_visits": 5000, "if": "vars.i < 480", "then": {"goto": "s"}},
    ]
    document = {**definition(unique("loop"), steps), "limits": {"max_step_executions": 10000}}
    _, failed, _ = await hostile_beside_a_bystander(client, task_queue, document, engine_level=ENGINE_LEVEL)
    assert failed.error is not None
    assert "counting the work of their single operations" in failed.error, failed.error
