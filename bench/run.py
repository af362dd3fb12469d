"""Generic workflow vs hand-written workflow: throughput, worker CPU and latency on one dev server.

    python -m bench.run --runs 200 --concurrency 50 --repeat 3

Variants, measured interleaved in one process (A B A B ..., ``--repeat`` times each):

* ``A``  - the generic workflow (``RunDefinitionWorkflow``) running a 5-step definition of templated
  ``echo`` tasks (:func:`bench.baseline.definition_data`), the ``RunOptions`` ``FlowClient.start_run``
  starts runs with by default (this build's generation; from generation 24, a compact result);
* ``A-nt`` - only with ``--no-track-step``: the same with ``RunOptions(track_current_step=False)``
  (fewer ``CurrentStep`` search attribute upserts), interleaved as A, A-nt, B;
* ``A-full`` - only with ``--full-definition``: A started with the run input as starters sent it
  before the compact form (the definition with every default written out);
* ``A-rf`` / ``A-rn`` - only with ``--result-full`` / ``--result-none``: A with
  ``RunOptions(result_steps=...)`` ``full`` / ``none`` (every field of the result's step records,
  the clients' default before generation 24 / no records; checked: 5 records / none);
* ``A-g0`` - only with ``--engine-level-0``: A at ``RunOptions(engine_level=0)``, as runs were started
  before the interpreter generations (every patch asked through ``workflow.patched``: its marker);
  A (and its other variants) run at ``ENGINE_LEVEL``, as ``FlowClient.start_run`` starts them;
* ``A-xs`` / ``A-xs-rn`` - only with ``--run-input-ref``: A / A-rn started through the product's
  converter with ``WFA_PAYLOAD_STORE=fs:<tmp>`` and ``WFA_PAYLOAD_STORE_RUN_INPUT=always`` (the run
  input by reference); their workers use the product's converter with the same store;
* ``A-xsr`` - also with ``--run-input-ref``: A-xs whose worker also has
  ``WFA_PAYLOAD_STORE_RUN_RESULT=always`` (the result, with its step records, by reference);
* ``B``  - :class:`bench.baseline.BaselineWorkflow`, the same five ``echo`` calls written by hand.

Each measurement gets a fresh worker subprocess (:mod:`bench.bench_worker`) on its own task queue,
warmed up with ``--warmup`` uncounted runs. Then ``--runs`` runs are started with at most
``--concurrency`` in flight (closed loop) and timed from the first ``start_workflow`` to the last
result. Worker CPU is utime+stime of the worker process from ``/proc/<pid>/stat``, read right before
and after the batch (all its threads, Python and the SDK's Rust core). The dev server's CPU is read
the same way, for context: it shares the machine's cores with the worker. After each batch, the
histories of ``--history-sample`` of its runs are fetched: history bytes per run is the serialized
size of the ``History`` message (every event and payload as the server stores it), median over the
sample. The machine's load average is printed with every batch.

Only binds 127.0.0.1; the dev server keeps its SQLite file in a temporary directory removed at the
end. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # `python bench/run.py` (the Makefile's `make bench`)
    sys.path.insert(0, str(REPO))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.api.history.v1 import History  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.common import TypedSearchAttributes  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from bench.baseline import STEPS, BaselineWorkflow, definition_data, expected_output  # noqa: E402
from bench.proto_coalesce import CoalescedRunDefinitionWorkflow  # noqa: E402
from bench.proto_sandboxed import SandboxedRunDefinitionWorkflow  # noqa: E402
from interpreter.state import ResultSteps, RunInput, RunOptions, RunResult, RunState  # noqa: E402
from interpreter.validate import definition_hash, load_definition  # noqa: E402
from starter.client import default_result_steps  # noqa: E402
from starter.codec import data_converter  # noqa: E402
from starter.payload_store import RUN_INPUT_ENV, STORE_ENV  # noqa: E402
from workflows.generic import ENGINE_LEVEL, WORKFLOW_NAME, RunDefinitionWorkflow  # noqa: E402
from workflows.priority import NO_TENANT, run_priority  # noqa: E402
from workflows.search_attributes import CLI_TYPES, start_attributes  # noqa: E402

HOST = "127.0.0.1"
TENANT = "default"
"""The tenant the generic workflow's runs are started for (the starter's default)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_THROUGHPUT_RATIO = 1.00
TARGET_CPU_RATIO = 1.05
TARGET_HISTORY_RATIO = 1.2


# ----------------------------------------------------------------------------------------- processes


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) consumed so far by ``pid``, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    fields = data[data.rindex(b")") + 2 :].split()  # fields[0] is field 3 (state)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15
    return (utime + stime) / CLK_TCK


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One ``temporal server start-dev`` on 127.0.0.1 with a fresh SQLite file in ``state_dir``.

    Uses :class:`starter.devserver.DevServer` when it is importable and starts; otherwise launches
    the CLI directly with the product's search attributes.
    """

    def __init__(self, state_dir: Path, in_memory: bool = False) -> None:
        self.state_dir = state_dir
        self.in_memory = in_memory
        self.address = ""
        self.pid = 0
        self.how = ""
        self._devserver: Any = None
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        if not self.in_memory:
            await self._start_devserver()
        if not self.address:
            await self._start_cli()

    async def _start_devserver(self) -> None:
        try:
            from starter.devserver import DevServer

            server = DevServer(self.state_dir, port=0, ui_port=0, host=HOST, log_level="error")
            await server.astart()
        except Exception as err:  # fall back to launching the CLI ourselves
            print(f"starter.devserver not usable ({type(err).__name__}: {err}); starting the CLI directly")
        else:
            self._devserver, self.address, self.pid = server, server.address, server.pid
            self.how = "starter.devserver.DevServer (SQLite file in a temp dir)"

    async def _start_cli(self) -> None:
        binary = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
        port, ui_port = free_port(), free_port()
        cmd = [binary, "server", "start-dev", "--headless", "--ip", HOST, "--port", str(port),
               "--ui-port", str(ui_port), "--log-level", "error"]  # fmt: skip
        if not self.in_memory:
            cmd += ["--db-filename", str(self.state_dir / "temporal.db")]
        for name, type_word in CLI_TYPES.items():
            cmd += ["--search-attribute", f"{name}={type_word}"]
        log = (self.state_dir / "temporal.log").open("ab")
        # Popen returns at once; readiness is awaited below.
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.address, self.pid = f"{HOST}:{port}", self._proc.pid
        where = "in-memory SQLite" if self.in_memory else "SQLite file in a temp dir"
        self.how = f"temporal server start-dev --headless ({where})"
        deadline = time.monotonic() + 30
        while True:
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()
                return
            except Exception:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def stop(self) -> None:
        if self._devserver is not None:
            await self._devserver.astop()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


class WorkerProcess:
    """A :mod:`bench.bench_worker` subprocess polling its own task queue."""

    def __init__(
        self,
        address: str,
        task_queue: str,
        cprofile_out: Path | None,
        pycache: Path | None,
        log_dir: Path,
        *,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.extra_args = list(extra_args)
        self.address = address
        self.task_queue = task_queue
        self.cprofile_out = cprofile_out
        self.pycache = pycache
        self.log_path = log_dir / f"worker-{task_queue}.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        args = [sys.executable, "-m", "bench.bench_worker", self.address, self.task_queue, *self.extra_args]
        if self.cprofile_out is not None:
            args += ["--cprofile", str(self.cprofile_out)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        if self.pycache is not None:
            # The sandbox re-imports the workflow modules for every run: without a bytecode cache
            # (PYTHONDONTWRITEBYTECODE=1 and a source checkout) it recompiles them from source each
            # time. Deployed code has .pyc files, so give the worker a cache outside the repository.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        log = open(self.log_path, "ab")  # noqa: ASYNC230, SIM115 - the child writes to it
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
            )
        finally:
            log.close()  # the child has its own descriptor
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=60)
        if line.strip() != b"READY":
            raise RuntimeError(
                f"bench worker did not start (said {line!r}, exit code {self.proc.returncode}):\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 25) -> str:
        """The end of the worker's stderr (SDK errors such as failing workflow tasks land there)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no worker log)"
        return "\n".join(text.splitlines()[-lines:]) or "(the worker log is empty)"

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=60)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class PySpy:
    """``py-spy record`` on the worker during the measured batch: raw (collapsed) stacks of the
    threads holding the GIL, i.e. Python code running; the SDK's Rust threads are not seen."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.proc = await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(self.pid), "--format", "raw", "--output", str(self.out),
            "--rate", str(self.rate), "--gil", "--nonblocking", "--full-filenames", "--function",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # attach

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# Where Python CPU goes in the worker, first match wins (frame substrings, any depth of the stack).
SPY_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sandbox: new instance per run (module re-import, @workflow.defn)", ("_create_instance (",)),
    ("workflow code: search attribute upserts (SDK call)", ("upsert_search_attributes (",)),
    (
        "telemetry: step metrics and spans (workflows/telemetry.py)",
        ("workflows/telemetry.py", "opentelemetry/"),
    ),
    ("pinning: definition hash check", ("interpreter/pinning.py",)),
    ("workflow code: other SDK calls (execute_activity, now, ...)", ("temporalio/workflow/",)),
    ("generic: _publish (besides the upsert call)", ("_publish (",)),
    ("interpreter: templates (jinja)", ("interpreter/templates.py",)),
    ("interpreter: engine, durations, models", ("interpreter/",)),
    ("activities (echo + SDK activity path)", ("activities/", "temporalio/worker/_activity.py")),
    ("payload conversion (pydantic converter)", ("temporalio/converter/", "temporalio/contrib/pydantic.py")),
    ("SDK: activations, payload visitors, sandbox plumbing", ("temporalio/worker/",)),
    ("other (asyncio loop, bridge, ...)", ("",)),
)


def classify_spy(path: Path) -> dict[str, int]:
    """Samples per :data:`SPY_CATEGORIES` entry in one raw py-spy file."""
    counts = {name: 0 for name, _ in SPY_CATEGORIES}
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        for name, needles in SPY_CATEGORIES:
            if any(needle in stack for needle in needles):
                counts[name] += int(n)
                break
    return counts


def print_spy(spy_dir: Path, variants: list[Variant], results: list[Measurement], rate: int) -> None:
    print(f"\n=== py-spy ({rate} Hz, GIL-holding samples, measured batches only): Python CPU ms per run")
    per_variant: dict[str, dict[str, float]] = {}
    for v in variants:
        runs = sum(m.runs for m in results if m.variant == v.key)
        totals = {name: 0 for name, _ in SPY_CATEGORIES}
        for f in sorted(spy_dir.glob(f"worker-{v.key}-rep*.txt")):
            for name, c in classify_spy(f).items():
                totals[name] += c
        per_variant[v.key] = {name: 1000 * c / rate / runs for name, c in totals.items()} if runs else {}
    keys = [v.key for v in variants]
    print(f"{'category':<66}" + "".join(f"{k:>9}" for k in keys) + f"{'A-B':>9}")
    for name, _ in SPY_CATEGORIES:
        row = [per_variant[k].get(name, 0.0) for k in keys]
        diff = per_variant["A"].get(name, 0.0) - per_variant["B"].get(name, 0.0)
        print(f"{name:<66}" + "".join(f"{x:>9.2f}" for x in row) + f"{diff:>9.2f}")
    tot = [sum(per_variant[k].values()) for k in keys]
    diff = sum(per_variant["A"].values()) - sum(per_variant["B"].values())
    print(
        f"{'total Python (GIL-holding) samples':<66}" + "".join(f"{x:>9.2f}" for x in tot) + f"{diff:>9.2f}"
    )


# ------------------------------------------------------------------------------------------ variants


CLIENT_RESULT_STEPS = default_result_steps(ENGINE_LEVEL)
"""What ``FlowClient`` at this build's generation asks results to carry, unless told otherwise."""


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    track_step: bool | None  # None: the baseline
    # The workflow A's variants run: the product's, or a bench.proto_* subclass of it.
    workflow: type[RunDefinitionWorkflow] = RunDefinitionWorkflow
    full_definition: bool = False  # the run input as starters sent it before the compact form
    # RunOptions.result_steps: FlowClient's default without WFA_RESULT_STEPS (compact from
    # generation 24; FULL: left out of the input).
    result_steps: ResultSteps = CLIENT_RESULT_STEPS
    # RunOptions.engine_level: FlowClient starts runs at the build's generation (no patch markers);
    # 0 is how runs were started before the generations (every patch asked: markers).
    engine_level: int = ENGINE_LEVEL
    # Started through the product's converter with WFA_PAYLOAD_STORE=fs:<dir> and
    # WFA_PAYLOAD_STORE_RUN_INPUT=always (the run input by reference); its worker reads the store.
    run_input_ref: bool = False
    # With run_input_ref: its worker also has WFA_PAYLOAD_STORE_RUN_RESULT=always (the result by
    # reference).
    result_ref: bool = False


A = Variant("A", "generic workflow (RunDefinition)", True)
A_NT = Variant("A-nt", "generic, track_current_step=False", False)
A_CO = Variant(
    "A-co",
    "generic, PROTOTYPE: upserts coalesced per activation",
    True,
    workflow=CoalescedRunDefinitionWorkflow,
)
A_SB = Variant(
    "A-sb", "generic, inside the workflow sandbox (as before)", True, workflow=SandboxedRunDefinitionWorkflow
)
A_FULL = Variant("A-full", "generic, input with the full definition dump", True, full_definition=True)
A_RF = Variant("A-rf", "generic, result_steps=full", True, result_steps=ResultSteps.FULL)
A_RN = Variant("A-rn", "generic, result_steps=none", True, result_steps=ResultSteps.NONE)
A_G0 = Variant(
    "A-g0",
    "generic, engine_level=0 (patch markers, as before)",
    True,
    engine_level=0,
    result_steps=ResultSteps.FULL,  # what a client at generation 0 asks for by default
)
A_XS = Variant(
    "A-xs", "generic, run input by reference (WFA_PAYLOAD_STORE_RUN_INPUT)", True, run_input_ref=True
)
A_XS_RN = Variant(
    "A-xs-rn",
    "generic, result_steps=none, run input by reference",
    True,
    result_steps=ResultSteps.NONE,
    run_input_ref=True,
)
A_XSR = Variant(
    "A-xsr",
    "generic, run input and result by reference (WFA_PAYLOAD_STORE_RUN_INPUT, _RUN_RESULT)",
    True,
    run_input_ref=True,
    result_ref=True,
)
B = Variant("B", "hand-written baseline", None)


class Workload:
    """Starts one run of a variant and checks its result."""

    def __init__(self) -> None:
        self.definition = load_definition(definition_data())
        self.hash = definition_hash(self.definition)
        # What the product's starter (FlowClient.start_run) sets at start: the search attributes
        # (so the workflow does not upsert them itself) and the tenant's fairness key. Before
        # 2026-12-02 the benchmark left out ``Tenant`` and the priority (about 70 bytes per run).
        self.priority = run_priority(TENANT, self.definition.priority, grants=NO_TENANT)

    def identity(self, engine_level: int) -> TypedSearchAttributes:
        """The search attributes at start of a run at ``engine_level`` (from generation 26
        without ``CurrentStep``, as FlowClient starts runs)."""
        return start_attributes(
            self.definition.name, self.definition.version, self.hash, TENANT, engine_level=engine_level
        )

    async def start(
        self, client: Client, variant: Variant, n: int, wf_id: str, tq: str
    ) -> WorkflowHandle[Any, Any]:
        if variant.track_step is None:
            return await client.start_workflow(BaselineWorkflow.run, n, id=wf_id, task_queue=tq)
        run_input = RunInput(
            definition=self.definition,
            input={"n": n},
            options=RunOptions(
                track_current_step=variant.track_step,
                result_steps=variant.result_steps,
                engine_level=variant.engine_level,
            ),
        )
        if variant.full_definition:
            # The shape starters sent before RunInput serialized its definition compactly: every
            # field, defaults included (a plain dict, so the model's serializer does not apply).
            full = {
                **run_input.model_dump(mode="json"),
                "definition": self.definition.model_dump(mode="json"),
            }
            return await client.start_workflow(
                WORKFLOW_NAME,
                full,
                id=wf_id,
                task_queue=tq,
                search_attributes=self.identity(variant.engine_level),
                priority=self.priority,
                result_type=RunResult,
            )
        return await client.start_workflow(
            variant.workflow.run,
            run_input,
            id=wf_id,
            task_queue=tq,
            search_attributes=self.identity(variant.engine_level),
            priority=self.priority,
        )

    @staticmethod
    def check(variant: Variant, n: int, result: Any) -> None:
        want = expected_output(n)
        got = result if variant.track_step is None else result.output
        if variant.track_step is not None:
            assert isinstance(result, RunResult), result
            assert result.state == RunState.COMPLETED, result
            records = 0 if variant.result_steps == ResultSteps.NONE else STEPS
            assert len(result.steps) == records, result
        if got != want:
            raise AssertionError(f"{variant.key}: run {n} returned {got!r}, expected {want!r}")


@dataclass
class Measurement:
    variant: str
    rep: int
    runs: int
    wall_s: float
    throughput: float
    worker_cpu_s: float
    server_cpu_s: float
    latencies_s: list[float] = field(repr=False)
    history_bytes: list[int] = field(default_factory=list, repr=False)
    """Serialized size of the history of each sampled run (--history-sample of the batch)."""

    @property
    def history_bytes_per_run(self) -> float:
        return statistics.median(self.history_bytes) if self.history_bytes else 0.0

    @property
    def worker_cpu_ms_per_run(self) -> float:
        return 1000 * self.worker_cpu_s / self.runs

    @property
    def server_cpu_ms_per_run(self) -> float:
        return 1000 * self.server_cpu_s / self.runs

    @property
    def p50_ms(self) -> float:
        return 1000 * percentile(self.latencies_s, 50)

    @property
    def p95_ms(self) -> float:
        return 1000 * percentile(self.latencies_s, 95)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Bench:
    """What every measurement shares."""

    args: argparse.Namespace
    client: Client
    server: Server
    workload: Workload
    ref_client: Client  # the product's converter storing run inputs by reference (A-xs, A-xs-rn)
    store: Path  # the payload store's directory (fs:)
    tmp: Path  # server state, worker logs, bytecode cache
    pycache: Path | None  # bytecode cache for the workers (None: inherit the environment)
    profile_dir: Path | None  # --cprofile
    spy_dir: Path | None  # --py-spy


async def run_batch(
    bench: Bench, variant: Variant, worker: WorkerProcess, runs: int, tag: str
) -> tuple[float, list[float], list[str]]:
    """``runs`` runs on ``worker``, at most ``--concurrency`` in flight. Returns (wall seconds,
    latencies, ids). Fails after ``--batch-timeout`` seconds, showing the worker's log: a workflow
    task that keeps failing (e.g. an import error in a file being edited) otherwise hangs forever."""
    client, workload, tq = (
        bench.ref_client if variant.run_input_ref else bench.client,
        bench.workload,
        worker.task_queue,
    )
    gate = asyncio.Semaphore(bench.args.concurrency)
    latencies: list[float] = []
    ids: list[str] = []

    async def one(n: int) -> None:
        async with gate:
            wf_id = f"bench-{tag}-{n}"
            t0 = time.perf_counter()
            handle = await workload.start(client, variant, n, wf_id, tq)
            result = await handle.result()
            latencies.append(time.perf_counter() - t0)
            workload.check(variant, n, result)
            ids.append(wf_id)

    t_start = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(runs))), bench.args.batch_timeout)
    except TimeoutError:
        raise RuntimeError(
            f"{variant.key}: {runs - len(ids)} of {runs} runs unfinished after {bench.args.batch_timeout:g}s;"
            f" last lines of the worker log:\n{worker.log_tail()}"
        ) from None
    return time.perf_counter() - t_start, latencies, ids


async def measure(bench: Bench, variant: Variant, rep: int) -> tuple[Measurement, str]:
    """One measured batch of ``variant`` on a fresh, warmed-up worker. Returns it and one run id."""
    args, server, profile_dir, spy_dir = bench.args, bench.server, bench.profile_dir, bench.spy_dir
    # The key padded to one width: the task queue is in every run's id and in each activity's
    # idempotency key, so a longer variant key would add history bytes of its own (~100 per run).
    tq = f"bench-{variant.key:-<8}-{rep}-{uuid.uuid4().hex[:8]}"
    cprofile_out = profile_dir / f"worker-{variant.key}-rep{rep}.pstats" if profile_dir else None
    extra = ["--payload-store", str(bench.store)] if variant.run_input_ref else []
    if variant.result_ref:
        extra.append("--payload-store-result")
    worker = WorkerProcess(server.address, tq, cprofile_out, bench.pycache, bench.tmp, extra_args=extra)
    await worker.start()
    spy: PySpy | None = None
    try:
        if args.warmup:
            await run_batch(bench, variant, worker, args.warmup, f"{tq}-warm")
        if spy_dir is not None:
            spy = PySpy(worker.pid, spy_dir / f"worker-{variant.key}-rep{rep}.txt", args.py_spy_rate)
            await spy.start()
        await asyncio.sleep(args.settle)
        w0, s0 = proc_cpu_s(worker.pid), proc_cpu_s(server.pid)
        wall, latencies, ids = await run_batch(bench, variant, worker, args.runs, tq)
        w1, s1 = proc_cpu_s(worker.pid), proc_cpu_s(server.pid)
    finally:
        if spy is not None:
            await spy.stop()
        await worker.stop()
    # After the CPU readings: fetching histories is not part of the measured batch.
    sample = sorted(ids)[: args.history_sample]
    sizes = [await history_bytes(bench.client, wf_id) for wf_id in sample]
    m = Measurement(variant.key, rep, args.runs, wall, args.runs / wall, w1 - w0, s1 - s0, latencies, sizes)
    return m, ids[0]


async def history_bytes(client: Client, wf_id: str) -> int:
    """Bytes of a closed run's history: the serialized size of the ``History`` message the server
    returns (every event, with its payloads as stored, i.e. after any codec; this benchmark has
    none), which is what the server stores and a worker fetches to replay the run."""
    history = await client.get_workflow_handle(wf_id).fetch_history()
    return History(events=history.events).ByteSize()


async def history_shape(client: Client, wf_id: str) -> dict[str, int]:
    """Events in a run's history, and how many of them are search attribute upserts."""
    history = await client.get_workflow_handle(wf_id).fetch_history()
    upserts = sum(
        1 for e in history.events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    )
    wft = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    size = sum(e.ByteSize() for e in history.events)
    by_type: dict[str, int] = {}
    for e in history.events:
        name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_").lower()
        by_type[name] = by_type.get(name, 0) + e.ByteSize()
    return {
        "events": len(history.events),
        "upserts": upserts,
        "workflow_tasks": wft,
        "bytes": size,
        "bytes_by_event_type": by_type,
    }


# ------------------------------------------------------------------------------------------ reporting


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """``min-max`` and the range relative to the median."""
    m = med(values)
    rel = (max(values) - min(values)) / m * 100 if m else 0.0
    return f"{min(values):.3g}-{max(values):.3g} (±{rel / 2:.0f}%)"


def report(
    results: list[Measurement], variants: list[Variant], shapes: dict[str, dict[str, int]]
) -> dict[str, Any]:
    by = {v.key: [m for m in results if m.variant == v.key] for v in variants}
    print()
    header = (
        f"{'variant':<6} {'runs/s med':>10} {'runs/s min-max':>22} {'wCPU ms/run':>11} "
        f"{'wCPU min-max':>24} {'sCPU ms/run':>11} {'p50 ms':>7} {'p95 ms':>7} {'events':>6} {'upserts':>7}"
        f" {'hist B/run':>10}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {}
    for v in variants:
        ms = by[v.key]
        thr = [m.throughput for m in ms]
        cpu = [m.worker_cpu_ms_per_run for m in ms]
        scpu = [m.server_cpu_ms_per_run for m in ms]
        p50 = [m.p50_ms for m in ms]
        p95 = [m.p95_ms for m in ms]
        shape = shapes.get(v.key, {})
        print(
            f"{v.key:<6} {med(thr):>10.1f} {spread(thr):>22} {med(cpu):>11.2f} {spread(cpu):>24} "
            f"{med(scpu):>11.2f} {med(p50):>7.0f} {med(p95):>7.0f} {shape.get('events', 0):>6} "
            f"{shape.get('upserts', 0):>7} {med([m.history_bytes_per_run for m in ms]):>10.0f}"
        )
        summary[v.key] = {
            "label": v.label,
            "throughput_runs_per_s": thr,
            "worker_cpu_ms_per_run": cpu,
            "server_cpu_ms_per_run": scpu,
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "history_bytes_per_run": [m.history_bytes_per_run for m in ms],
            "history": shape,
        }
    print()
    base = by[B.key]
    ratios: dict[str, Any] = {}
    for v in variants:
        if v is B:
            continue
        ms = by[v.key]
        thr_pairs = [a.throughput / b.throughput for a, b in zip(ms, base, strict=True)]
        cpu_pairs = [a.worker_cpu_s / b.worker_cpu_s for a, b in zip(ms, base, strict=True)]
        thr_of_meds = med([m.throughput for m in ms]) / med([m.throughput for m in base])
        cpu_of_meds = med([m.worker_cpu_ms_per_run for m in ms]) / med(
            [m.worker_cpu_ms_per_run for m in base]
        )
        hist_pairs = [
            a.history_bytes_per_run / b.history_bytes_per_run
            for a, b in zip(ms, base, strict=True)
            if b.history_bytes_per_run
        ]
        hist_ratio = med(hist_pairs) if hist_pairs else float("nan")
        ok_thr = "ok" if thr_of_meds >= TARGET_THROUGHPUT_RATIO else "MISSED"
        ok_cpu = "ok" if cpu_of_meds <= TARGET_CPU_RATIO else "MISSED"
        print(
            f"throughput({v.key})/throughput(B): {thr_of_meds:.3f} (ratio of medians; "
            f"per-repetition pairs median {med(thr_pairs):.3f}, range {min(thr_pairs):.3f}-{max(thr_pairs):.3f})"
            f"  target >= {TARGET_THROUGHPUT_RATIO}: {ok_thr}"
        )
        print(
            f"worker CPU per run ({v.key})/(B):   {cpu_of_meds:.3f} (ratio of medians; "
            f"per-repetition pairs median {med(cpu_pairs):.3f}, range {min(cpu_pairs):.3f}-{max(cpu_pairs):.3f})"
            f"  target <= {TARGET_CPU_RATIO}: {ok_cpu}"
        )
        if hist_pairs:
            ok_hist = "ok" if hist_ratio <= TARGET_HISTORY_RATIO else "MISSED"
            print(
                f"history bytes per run ({v.key})/(B): {hist_ratio:.3f} (median of per-repetition pairs; "
                f"range {min(hist_pairs):.3f}-{max(hist_pairs):.3f})  target <= {TARGET_HISTORY_RATIO}: {ok_hist}"
            )
        ratios[v.key] = {
            "throughput_ratio_of_medians": thr_of_meds,
            "throughput_ratio_pairs": thr_pairs,
            "cpu_ratio_of_medians": cpu_of_meds,
            "cpu_ratio_pairs": cpu_pairs,
            "history_bytes_ratio": hist_ratio,
            "history_bytes_ratio_pairs": hist_pairs,
        }
    return {"variants": summary, "ratios_vs_B": ratios}


def print_profiles(profile_dir: Path, variants: list[Variant], top: int) -> None:
    import pstats

    for v in variants:
        files = sorted(profile_dir.glob(f"worker-{v.key}-rep*.pstats"))
        if not files:
            continue
        stats = pstats.Stats(str(files[0]))
        for extra in files[1:]:
            stats.add(str(extra))
        print(
            f"\n=== cProfile, worker of {v.key} (all measured + warm-up runs of {len(files)} workers), by tottime"
        )
        stats.sort_stats("tottime").print_stats(top)


# ------------------------------------------------------------------------------------------------ main


def _load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _output_dir(path: str | None) -> Path | None:
    if not path:
        return None
    out = Path(path).absolute()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: str, bench: Bench, results: list[Measurement], summary: dict[str, Any]) -> None:
    payload = {
        "args": vars(bench.args),
        "cpus": os.cpu_count(),
        "server": bench.server.how,
        "measurements": [
            {**asdict(m), "p50_ms": m.p50_ms, "p95_ms": m.p95_ms, "latencies_s": None} for m in results
        ],
        **summary,
    }
    Path(path).write_text(json.dumps(payload, indent=2))


async def warm_up_server(bench: Bench, variants: list[Variant]) -> None:
    """One uncounted round of every variant, so the first measured batch does not pay for the
    server's own warm-up (namespace caches, SQLite pages, ...)."""
    tq = f"bench-warmup-{uuid.uuid4().hex[:8]}"
    # The product's converter reads plain payloads too: one worker warms every variant up.
    extra = ["--payload-store", str(bench.store)] if any(v.run_input_ref for v in variants) else []
    worker = WorkerProcess(bench.server.address, tq, None, bench.pycache, bench.tmp, extra_args=extra)
    await worker.start()
    try:
        for v in variants:
            await run_batch(bench, v, worker, bench.args.warmup, f"{tq}-{v.key}")
    finally:
        await worker.stop()


async def amain(args: argparse.Namespace) -> int:
    variants = [
        A,
        *([A_FULL] if args.full_definition else []),
        *([A_NT] if args.no_track_step else []),
        *([A_CO] if args.coalesce_proto else []),
        *([A_SB] if args.sandboxed else []),
        *([A_RF] if args.result_full else []),
        *([A_RN] if args.result_none else []),
        *([A_G0] if args.engine_level_0 else []),
        *([A_XS, A_XS_RN, A_XSR] if args.run_input_ref else []),
        B,
    ]
    t_begin = time.monotonic()
    profile_dir, spy_dir = _output_dir(args.cprofile), _output_dir(args.py_spy)
    with tempfile.TemporaryDirectory(prefix="wfa-bench-") as tmp:
        server = Server(Path(tmp), in_memory=args.in_memory)
        await server.start()
        try:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            store = Path(tmp) / "payloads"
            ref_client = await Client.connect(
                server.address,
                data_converter=data_converter(
                    {STORE_ENV: f"fs:{store}", RUN_INPUT_ENV: "always"}, namespace=client.namespace
                ),
            )
            bench = Bench(
                args=args,
                client=client,
                server=server,
                workload=Workload(),
                ref_client=ref_client,
                store=store,
                tmp=Path(tmp),
                pycache=None if args.no_bytecode_cache else Path(tmp) / "pycache",
                profile_dir=profile_dir,
                spy_dir=spy_dir,
            )
            print(f"server {server.address} via {server.how}; load average {_load()}")
            print(f"{os.cpu_count()} CPUs, python {platform.python_version()}, {platform.platform()}")
            print(
                f"runs={args.runs} concurrency={args.concurrency} repeat={args.repeat} warmup={args.warmup}"
                f" order={' '.join(v.key for v in variants)} x{args.repeat}"
                f"{' (fixed)' if args.fixed_order else ', rotated by one each round'}"
                f" bytecode cache={'inherited env' if bench.pycache is None else 'on (temp dir)'}"
            )
            if args.warmup:
                await warm_up_server(bench, variants)
            results: list[Measurement] = []
            sample_ids: dict[str, str] = {}
            for rep in range(args.repeat):
                # Each round starts with the next variant, so every variant runs in every position
                # (the first batch of a round was seen to run slower or faster than the others).
                shift = 0 if args.fixed_order else rep % len(variants)
                for v in variants[shift:] + variants[:shift]:
                    m, wf_id = await measure(bench, v, rep)
                    sample_ids.setdefault(v.key, wf_id)
                    results.append(m)
                    print(
                        f"  rep {rep} {v.key:<5} {m.throughput:7.1f} runs/s  wall {m.wall_s:6.2f}s  "
                        f"worker CPU {m.worker_cpu_ms_per_run:6.2f} ms/run  server CPU "
                        f"{m.server_cpu_ms_per_run:6.2f} ms/run  p50 {m.p50_ms:5.0f} ms  p95 {m.p95_ms:5.0f} ms  "
                        f"history {m.history_bytes_per_run:6.0f} B/run  load {_load()}",
                        flush=True,
                    )
            shapes = {k: await history_shape(client, wf_id) for k, wf_id in sample_ids.items()}
            summary = report(results, variants, shapes)
            for k, shape in shapes.items():
                print(f"history of one {k} run: {shape}")
            if spy_dir:
                print_spy(spy_dir, variants, results, args.py_spy_rate)
            print(f"total time {time.monotonic() - t_begin:.0f}s; load average {_load()}")
            if args.json:
                _write_json(args.json, bench, results, summary)
        finally:
            await server.stop()
    if profile_dir:
        print_profiles(profile_dir, variants, args.profile_top)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=200, help="measured runs per batch (default 200)")
    p.add_argument("--concurrency", type=int, default=50, help="runs in flight at once (default 50)")
    p.add_argument("--repeat", type=int, default=3, help="batches per variant, interleaved (default 3)")
    p.add_argument("--warmup", type=int, default=20, help="uncounted runs per worker first (default 20)")
    p.add_argument(
        "--batch-timeout",
        type=float,
        default=300,
        help="seconds before a batch is declared stuck (default 300)",
    )
    p.add_argument("--settle", type=float, default=0.5, help="seconds of idle between warm-up and batch")
    p.add_argument(
        "--no-track-step",
        action="store_true",
        help="also run A with RunOptions(track_current_step=False) as variant A-nt (A, A-nt, B interleaved)",
    )
    p.add_argument(
        "--full-definition",
        action="store_true",
        help="also run A-full: A started with the run input as starters sent it before the compact "
        "form (the definition with every default), to compare history bytes and CPU",
    )
    p.add_argument(
        "--history-sample",
        type=int,
        default=50,
        help="runs per batch whose history is fetched to measure history bytes per run (default 50)",
    )
    p.add_argument(
        "--coalesce-proto",
        action="store_true",
        help="also run A-co: bench/proto_coalesce.py, a PROTOTYPE of the generic workflow with one search "
        "attribute upsert per activation (measures a proposed fix; not product code)",
    )
    p.add_argument(
        "--sandboxed",
        action="store_true",
        help="also run A-sb: bench/proto_sandboxed.py, the generic workflow run inside the workflow "
        "sandbox, as it was before it left it (measures what leaving it saves)",
    )
    p.add_argument(
        "--fixed-order",
        action="store_true",
        help="run the variants in the same order every round (default: each round starts with the next one)",
    )
    p.add_argument(
        "--in-memory",
        action="store_true",
        help="run the dev server with in-memory SQLite (default: starter.devserver, SQLite file in a temp dir)",
    )
    p.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run workers with the inherited environment (e.g. PYTHONDONTWRITEBYTECODE=1) instead of "
        "a bytecode cache in the temp dir",
    )
    p.add_argument(
        "--result-full",
        action="store_true",
        help="also run A with RunOptions(result_steps='full') as variant A-rf (the default before generation 24)",
    )
    p.add_argument(
        "--result-none",
        action="store_true",
        help="also run A with RunOptions(result_steps='none') as variant A-rn (no step records in the result)",
    )
    p.add_argument(
        "--engine-level-0",
        action="store_true",
        help="also run A at RunOptions(engine_level=0) as variant A-g0 (every patch asked: markers)",
    )
    p.add_argument(
        "--run-input-ref",
        action="store_true",
        help="also run A and A-rn with the run input by reference (WFA_PAYLOAD_STORE=fs:, "
        "WFA_PAYLOAD_STORE_RUN_INPUT=always) as variants A-xs and A-xs-rn",
    )
    p.add_argument("--json", metavar="PATH", help="also write the raw figures as JSON")
    p.add_argument(
        "--cprofile",
        metavar="DIR",
        help="profile every worker with cProfile (all threads) into DIR/*.pstats and print the top "
        "functions; inflates CPU figures, so measure without it",
    )
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        help="sample each worker with py-spy (pip install py-spy) during the measured batch into DIR and "
        "print where the Python CPU goes per run; low overhead, but figures then include it",
    )
    p.add_argument("--py-spy-rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--profile-top", type=int, default=40, help="functions shown per variant with --cprofile")
    args = p.parse_args(argv)
    if args.runs < 1 or args.concurrency < 1 or args.repeat < 1 or args.warmup < 0:
        p.error("--runs, --concurrency and --repeat must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    code = asyncio.run(amain(args))
    sys.stdout.flush()
    os._exit(code)  # the SDK's native threads can abort interpreter finalisation


if __name__ == "__main__":
    main()
