"""Per-run CPU of the pieces of work the generic workflow adds, measured without a server.

    python -m bench.components [--iterations 300]

Companion of :mod:`bench.run`, to attribute the worker-CPU difference between the generic workflow (A)
and the hand-written baseline (B) without profiler distortion. Each figure is CPU time of this thread
(``time.thread_time``), median over 5 rounds of ``--iterations`` repetitions, in microseconds per run:

* ``sandbox instance``: what the worker does once per run (per cache miss) before the first
  activation: a fresh sandbox re-imports the workflow's module and every non-passthrough module it
  imports, then ``@workflow.defn`` re-validates the class (``SandboxedWorkflowRunner.prepare_workflow``
  does exactly this). Shown with the product's restrictions (``worker.workflow_runner()``) and with
  ``workflows.search_attributes`` also passed through, to size that fix. The generic workflow no
  longer runs in the sandbox (``workflows.generic.SANDBOXED``): for A this row is the cost it
  paid before; B, a sandboxed hand-written workflow, still pays its own.
* ``engine``: the interpreter's own work for one 5-step run (templating, ActionRequests, step
  records, timeouts/retry resolution, result), on a fake runtime whose actions return at once.
* ``runtime glue``: what ``_TemporalRuntime.execute_action`` computes per step before calling the
  SDK (retry policy and timeouts re-parsed from strings), times 5.
* ``payloads``: encoding the input at the client and decoding it in the worker, and encoding the
  result in the worker, with the pydantic data converter (worker side only is counted).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import temporalio.workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from bench.baseline import BaselineWorkflow, definition_data, expected_output
from interpreter.actions import ActionResult
from interpreter.durations import parse_duration
from interpreter.engine import ActionCall, Engine, RunInfo
from interpreter.state import RunInput, RunState
from interpreter.validate import load_definition
from worker import PASSTHROUGH_MODULES
from workflows.generic import RunDefinitionWorkflow


def cpu_us_per_iteration(fn: Callable[[], Any], iterations: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the thread CPU time per call of ``fn``, in microseconds."""
    fn()  # warm caches (template compilation, imports)
    samples = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(iterations):
            fn()
        samples.append((time.thread_time() - t0) / iterations * 1e6)
    return statistics.median(samples)


class _FakeRuntime:
    def __init__(self) -> None:
        self.calls: list[ActionCall] = []

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    async def execute_action(self, call: ActionCall) -> ActionResult:
        self.calls.append(call)
        return ActionResult(output=call.request.input.get("value"), attempt=1)

    async def sleep(self, seconds: float, summary: str) -> None:
        raise AssertionError("no delays in this workload")

    async def wait_condition(
        self, predicate: Callable[[], bool], timeout_s: float | None, summary: str
    ) -> bool:
        raise AssertionError("no waits in this workload")

    async def end_task(self, summary: str) -> None:
        raise AssertionError("no long loops in this workload")

    def state_changed(self) -> None:
        pass

    def task_key(self) -> int:
        return len(self.calls)  # each action's result arrives in a workflow task of its own

    def history_used(self) -> tuple[int, int]:
        return len(self.calls) * 6, len(self.calls) * 600  # far below any limit

    def patched(self, patch_id: str) -> bool:
        return True


def _run_engine(definition: Any, loop: asyncio.AbstractEventLoop) -> None:
    info = RunInfo(workflow_id="wf", run_id="run", started_at=datetime(2026, 1, 1, tzinfo=UTC))
    engine = Engine(definition, {"n": 7}, _FakeRuntime(), info)
    result = loop.run_until_complete(engine.run())
    assert result.state == RunState.COMPLETED, result
    assert result.output == expected_output(7), result


def _runtime_glue(call: ActionCall) -> None:
    # Mirrors workflows.generic._TemporalRuntime.execute_action up to the SDK call.
    retry = call.retry
    RetryPolicy(
        initial_interval=parse_duration(retry.initial_interval),
        backoff_coefficient=retry.coefficient,
        maximum_interval=parse_duration(retry.maximum_interval) if retry.maximum_interval else None,
        maximum_attempts=retry.maximum_attempts,
        non_retryable_error_types=list(retry.non_retryable_error_types) or None,
    )
    for value in (call.timeouts.start_to_close, call.timeouts.schedule_to_close, call.timeouts.heartbeat):
        if value:
            parse_duration(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.components")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep sys.dont_write_bytecode as inherited (PYTHONDONTWRITEBYTECODE=1 makes the sandbox "
        "recompile the workflow modules from source for every run)",
    )
    args = parser.parse_args(argv)
    if not args.no_bytecode_cache:
        sys.dont_write_bytecode = False
        sys.pycache_prefix = tempfile.mkdtemp(prefix="wfa-bench-pycache-")
    print(f"bytecode cache: {'off' if sys.dont_write_bytecode else 'on'}")
    it = args.iterations

    definition = load_definition(definition_data())
    loop = asyncio.new_event_loop()
    rows: list[tuple[str, float, float]] = []  # (what, A us/run, B us/run)

    # Sandbox instantiation, once per run.
    product = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )
    with_sa = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            *PASSTHROUGH_MODULES, "workflows.search_attributes"
        )
    )
    defn_a = temporalio.workflow._Definition.must_from_class(RunDefinitionWorkflow)
    defn_b = temporalio.workflow._Definition.must_from_class(BaselineWorkflow)

    async def in_loop(fn: Callable[[], Any]) -> float:  # the SDK binds each instance to the running loop
        return cpu_us_per_iteration(fn, max(it // 3, 20))

    sandbox_a = loop.run_until_complete(in_loop(lambda: product.prepare_workflow(defn_a)))
    sandbox_b = loop.run_until_complete(in_loop(lambda: product.prepare_workflow(defn_b)))
    sandbox_a_sa = loop.run_until_complete(in_loop(lambda: with_sa.prepare_workflow(defn_a)))
    rows.append(("sandbox instance (product passthrough list)", sandbox_a, sandbox_b))
    rows.append(("  same, workflows.search_attributes passed through", sandbox_a_sa, sandbox_b))

    # The interpreter's own work for one run.
    engine_us = cpu_us_per_iteration(lambda: _run_engine(definition, loop), it)
    rows.append(("engine: one 5-step run on a fake runtime", engine_us, 0.0))

    runtime = _FakeRuntime()
    info = RunInfo(workflow_id="wf", run_id="run", started_at=datetime(2026, 1, 1, tzinfo=UTC))
    loop.run_until_complete(Engine(definition, {"n": 7}, runtime, info).run())
    calls = runtime.calls
    glue_us = cpu_us_per_iteration(lambda: [_runtime_glue(c) for c in calls], it)
    rows.append(("runtime glue: retry policy + timeouts parsed, x5", glue_us, 0.0))
    parse_us = cpu_us_per_iteration(lambda: parse_duration("30s"), it * 10)

    # Payload conversion on the worker: decode the input, encode the result.
    conv = pydantic_data_converter.payload_converter
    run_input = RunInput(definition=definition, input={"n": 7})
    in_a, in_b = conv.to_payloads([run_input]), conv.to_payloads([7])
    engine = Engine(definition, {"n": 7}, _FakeRuntime(), info)
    result_a = loop.run_until_complete(engine.run())
    dec_a = cpu_us_per_iteration(lambda: conv.from_payloads(in_a, [RunInput]), it)
    dec_b = cpu_us_per_iteration(lambda: conv.from_payloads(in_b, [int]), it)
    enc_a = cpu_us_per_iteration(lambda: conv.to_payloads([result_a]), it)
    enc_b = cpu_us_per_iteration(lambda: conv.to_payloads([expected_output(7)]), it)
    rows.append(("payloads: decode workflow input", dec_a, dec_b))
    rows.append(("payloads: encode workflow result", enc_a, enc_b))
    size_a = sum(p.ByteSize() for p in in_a) + sum(p.ByteSize() for p in conv.to_payloads([result_a]))
    size_b = sum(p.ByteSize() for p in in_b) + sum(
        p.ByteSize() for p in conv.to_payloads([expected_output(7)])
    )

    print(f"{'per run, CPU microseconds':<55} {'A':>9} {'B':>9} {'A-B':>9}")
    print("-" * 85)
    total_a = total_b = 0.0
    for what, a, b in rows:
        print(f"{what:<55} {a:>9.0f} {b:>9.0f} {a - b:>9.0f}")
        if not what.startswith("  "):
            total_a, total_b = total_a + a, total_b + b
    print("-" * 85)
    print(f"{'total of the rows above':<55} {total_a:>9.0f} {total_b:>9.0f} {total_a - total_b:>9.0f}")
    print(f"\nparse_duration('30s'): {parse_us:.1f} us per call (not cached)")
    print(f"input+result payload bytes per run: A {size_a}, B {size_b}")
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
