"""A hostile template fails its step; it no longer holds a workflow task for ever (found by an
attacker's probe: a product squared in a loop, and a list amplified by shared references turned
into text, each ran one C call past the worker's deadlock limit, retried for ever, stalling every
tenant's runs on the worker). On the dev server with the real worker: the run fails with a message
naming the problem, and another run on the same worker completes meanwhile."""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from tests.workflows.support import definition, hostile_beside_a_bystander, unique
from workflows.generic import ENGINE_LEVEL

SQUARING = (
    "{% set ns = namespace(a=10**100) %}{% for i in range(22) %}{% set ns.a = ns.a * ns.a %}"
    "{% endfor %}{{ ns.a % 7 }}"
)
AMPLIFIED = (
    "{% set a = range(10000) | list %}{% set a = [a]*10 %}{% set a = [a]*10 %}{% set a = [a]*10 %}"
    "{% set a = [a]*10 %}{{ a | string | length }}"
)


@pytest.mark.parametrize("level", [ENGINE_LEVEL, 0], ids=["this-generation", "patch-asked"])
@pytest.mark.parametrize("template", [SQUARING, AMPLIFIED], ids=["squaring", "amplified"])
async def test_a_template_whose_cost_the_budget_did_not_see_fails_its_step(
    client: Client, task_queue: str, worker: Worker, template: str, level: int
) -> None:
    document = definition(unique("bomb"), [{"id": "boom", "type": "set", "vars": {"x": template}}])
    _, failed, markers = await hostile_beside_a_bystander(client, task_queue, document, engine_level=level)
    assert failed.error_type == "TemplateError"
    assert failed.error is not None
    assert "too large" in failed.error or "characters" in failed.error, failed.error
    assert ('"template-sizes"' in " ".join(markers)) == (level == 0)
