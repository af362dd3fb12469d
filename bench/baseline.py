"""The benchmark's workload, twice: as a definition for the generic workflow (A) and as a hand-written
Temporal workflow (B) that makes exactly the same activity calls.

Both run five sequential ``echo`` steps ``s1`` .. ``s5``. Step ``sK`` echoes
``"{n}-{output of s(K-1)}"`` (``s1`` echoes ``"{n}-start"``), so A exercises jinja templating on every
step, and both end with the same string, e.g. ``"7-7-7-7-7-start"`` for ``n = 7``.

For B to be a fair baseline, every activity call is the one the generic workflow makes
(:func:`bench.echo_call.echo`: same request, activity id, summary, timeout and retry policy).

The baseline takes a plain ``int``: this module is re-imported into the sandbox for every run, so a
pydantic input model defined here would be rebuilt per run (about 1 ms of CPU) and flatter A.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.echo_call import ACTION, echo

STEPS = 5
BASELINE_WORKFLOW_NAME = "BenchBaseline"


def step_id(k: int) -> str:
    """Id of the k-th step (1-based)."""
    return f"s{k}"


def definition_data(steps: int = STEPS) -> dict[str, Any]:
    """The definition run by the generic workflow (A): ``steps`` templated ``echo`` tasks."""
    body: list[dict[str, Any]] = []
    for k in range(1, steps + 1):
        prev = "start" if k == 1 else f"{{{{ steps.{step_id(k - 1)}.output }}}}"
        body.append(
            {
                "id": step_id(k),
                "type": "task",
                "action": ACTION,
                "input": {"value": f"{{{{ input.n }}}}-{prev}"},
            }
        )
    return {"name": "bench-echo-chain", "steps": body, "output": f"{{{{ steps.{step_id(steps)}.output }}}}"}


def expected_output(n: int, steps: int = STEPS) -> str:
    """What both workflows return for input ``n``."""
    value = "start"
    for _ in range(steps):
        value = f"{n}-{value}"
    return value


@workflow.defn(name=BASELINE_WORKFLOW_NAME)
class BaselineWorkflow:
    """Hand-written equivalent of the 5-step definition: five sequential ``echo`` activities."""

    @workflow.run
    async def run(self, n: int) -> str:
        value: Any = "start"
        for k in range(1, STEPS + 1):
            path = step_id(k)
            value = await echo(path, f"{n}-{value}", f"{path} ({ACTION})")
        return str(value)
