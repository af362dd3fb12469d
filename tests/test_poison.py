"""The poison corpus: hostile definitions and hostile data against a real dev server and a real
``worker.py`` process, configured as in production (outbound policy, per-tenant secrets, a store).

For every case: the run reaches a final state (failed, compensated, completed, cancelled) or parks
as a dead letter within a bounded time, or is refused before it starts; afterwards the worker
process is alive, its peak memory stayed under a stated bound, no request reached the "internal"
server on 127.0.0.1, and no copy of the canary secret reached the public stand-in (127.0.0.2) where
only inert text was due. Real traffic goes to loopback only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from interpreter.state import (
    CancelRequest,
    DeadLetterAction,
    DeadLetterDecision,
    DecisionKind,
    DecisionRequest,
    RunInput,
    RunOptions,
    RunState,
    RunStatus,
)
from interpreter.templates import TemplateError
from interpreter.validate import DefinitionError, load_definition
from tests.helpers.http_server import RecordedRequest, RecordingServer
from workflows.generic import RunDefinitionWorkflow

ROOT = Path(__file__).resolve().parents[1]
CANARY = 'p0ison-c4n4ry-" \\ é +/=?&'
PEAK_MEMORY_BOUND_MB = 1024
"""The worker's peak resident memory (VmHWM) after the whole corpus; a worker serving nothing uses
about 150 MB here, the template bomb alone used to allocate 6.5 GB."""
RUN_DEADLINE_S = 120.0
"""Every run must be final or parked this long after the corpus starts (they run concurrently on a
busy 2-core machine; most settle in seconds)."""

FINAL = {RunState.COMPLETED, RunState.COMPENSATED, RunState.FAILED, RunState.CANCELLED}


@dataclass
class Case:
    """One hostile definition or input.

    ``expect``: the state the run must settle in (or ``"refused"``: refused before it starts);
    ``error_type``: the run's (or the refusal's) error type, when it says something;
    ``then``: what an operator does once the run parked or waits, and the state it must reach.
    """

    name: str
    steps: list[dict[str, Any]]
    run_input: dict[str, Any] = field(default_factory=dict)
    expect: RunState | str = RunState.FAILED
    error_type: str | None = None
    tenant: str = "acme"
    then: Callable[[WorkflowHandle[Any, Any]], Any] | None = None
    then_expect: RunState | None = None


def http(step_id: str, url: str, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"method": "POST", "url": url, "json": {"step": step_id}}
    fields.update(extra.pop("input", {}))
    return {
        "id": step_id,
        "type": "task",
        "action": "http",
        "input": fields,
        "retry": {"maximum_attempts": 1},
        **extra,
    }


def echo(step_id: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "task",
        "action": "echo",
        "input": {"value": value},
        "retry": {"maximum_attempts": 1},
        **extra,
    }


def setvar(step_id: str, template: str) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "vars": {"x": template}}


def build_cases(internal: str, port: int, public: str, temporal: str) -> list[Case]:
    ssrf_urls = {
        "loopback": f"{internal}/admin",
        "localhost": f"http://localhost:{port}/admin",
        "decimal": f"http://2130706433:{port}/admin",
        "hex": f"http://0x7f000001:{port}/admin",
        "short": f"http://127.1:{port}/admin",
        "ipv6 loopback": f"http://[::1]:{port}/admin",
        "ipv4-mapped": f"http://[::ffff:127.0.0.1]:{port}/admin",
        "unspecified": f"http://0.0.0.0:{port}/admin",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "rfc1918 10": "http://10.0.0.1/",
        "rfc1918 192": "http://192.168.1.1/",
        "cgnat": "http://100.64.0.1/",
        "ula": "http://[fd00::1]/",
        "nat64": f"http://[64:ff9b::7f00:1]:{port}/admin",
        "temporal's own port": f"http://{temporal}/api/v1/namespaces/default/workflows",
    }
    cases = [
        Case(f"ssrf {name}", [http("steal", url)], error_type="OutboundRefused")
        for name, url in ssrf_urls.items()
    ]
    cases.append(
        Case("ssrf by redirect", [http("hop", f"{public}/redirect")], error_type="HttpUnexpectedStatus")
    )

    bombs = {
        "shared references": "{{ ['x' * 100000] * 100000 }}",
        "nested ranges": "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        "scan in a loop": "{% for a in range(10000) %}{% set y = 'q' in input.s %}{% endfor %}",
        "filter chain": "{% for a in range(1000) %}{% set y = input['items']|map('string')|join(',') %}{% endfor %}",
        "printing in a loop": "{% for a in range(10000) %}{{ input.s }}{% endfor %}",
        "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}",
    }
    big_data = {"s": "y" * 200_000, "items": list(range(10_000))}
    cases += [
        Case(f"bomb {name}", [setvar("boom", t)], big_data, error_type="TemplateError")
        for name, t in bombs.items()
    ]
    cases += [
        Case(
            "bomb in a task input",
            [echo("boom", "{{ (input['items'] * 10) | map('string') | join(',') }}")],
            big_data,
            error_type="TemplateError",
        ),
        Case(
            "bomb in a when",
            [
                {
                    **echo("guarded", 1),
                    "when": "(input['items'] * 10) | map('string') | join(',') | length > 0",
                }
            ],
            big_data,
            error_type="TemplateError",
        ),
        Case(
            "bomb in foreach items",
            [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "(input['items'] * 10) | map('string') | list",
                    "steps": [echo("one", "{{ item }}")],
                }
            ],
            big_data,
            error_type="TemplateError",
        ),
        Case(
            "heavy templates in 100 concurrent items (one workflow task)",
            [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "range(100) | list",
                    "concurrency": 100,
                    "steps": [
                        setvar(
                            "heavy",
                            "{% for a in range(1000) %}{% set y = input['items']|map('string')|join(',') %}{% endfor %}",
                        ),
                        {"id": "pause", "type": "delay", "duration": "1s"},
                    ],
                }
            ],
            {"items": list(range(30))},
            error_type="TemplateError",
        ),
        Case(
            "bomb in a parallel branch",
            [
                {
                    "id": "both",
                    "type": "parallel",
                    "branches": [
                        {"id": "a", "steps": [setvar("boom", bombs["nested ranges"])]},
                        {"id": "b", "steps": [echo("fine", 1)]},
                    ],
                }
            ],
            error_type="TemplateError",
        ),
    ]

    cases += [
        Case(
            "outputs adding up past 2 MiB",
            [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "range(450) | list",
                    "concurrency": 20,
                    "fan_out_above": 10000,  # in the run: every item's step record is the run's state
                    "steps": [echo("item", "{{ input.chunk }}")],
                }
            ],
            {"chunk": "z" * 2500},
            error_type="StateBudgetExceeded",
        ),
        Case(
            # Fanned out, the items' records stay in the children: only the joined list is the
            # run's, and it is what goes past the budget here (450 x 4 KB).
            "fanned-out outputs adding up past 2 MiB",
            [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "range(450) | list",
                    "concurrency": 20,
                    "steps": [echo("item", "{{ input.chunk }}")],
                }
            ],
            {"chunk": "z" * 4000},
            error_type="StateBudgetExceeded",
        ),
        Case(
            "one output over its budget",
            [echo("huge", "{{ input.parts }}")],
            {"parts": ["w" * 200_000] * 3},
            error_type="ActionOutputTooLarge",
        ),
        Case(
            "outputs over the state budget, handled",
            [echo(f"s{i}", "{{ input.parts }}", on_failure="continue") for i in range(5)],
            {"parts": ["v" * 200_000] * 2},
            expect=RunState.COMPLETED,
        ),
    ]

    def parked(step_id: str = "pay") -> list[dict[str, Any]]:
        return [
            http(
                step_id,
                f"{public}/fail",
                input={"json": {"note": "{{ input.note }}"}},
                on_failure="dead_letter",
            )
        ]

    async def skip_with_a_long_actor(handle: WorkflowHandle[Any, Any]) -> None:
        # Over 200 characters the run refuses it before history (a raw client's 1.4 MB actor got a
        # run terminated); a NUL within the bound reaches the row, scrubbed.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                RunDefinitionWorkflow.resolve_dead_letter,
                DeadLetterDecision(
                    action=DeadLetterAction.SKIP, actor="o" * 150 + "\x00" + "p" * 150, output={}
                ),
            )
        assert "actor is 301 characters long" in str(refused.value.cause)
        await handle.execute_update(
            RunDefinitionWorkflow.resolve_dead_letter,
            DeadLetterDecision(action=DeadLetterAction.SKIP, actor="o" * 90 + "\x00" + "p" * 90, output={}),
        )

    async def cancel_with_a_huge_actor(handle: WorkflowHandle[Any, Any]) -> None:
        await handle.signal(
            RunDefinitionWorkflow.cancel, CancelRequest(actor="c" * 10_000 + "\x00", reason="\x00")
        )

    async def redrive_with_a_reference(handle: WorkflowHandle[Any, Any]) -> None:
        await handle.execute_update(
            RunDefinitionWorkflow.resolve_dead_letter,
            DeadLetterDecision(
                action=DeadLetterAction.REDRIVE,
                actor="ops",
                input={"method": "POST", "url": f"{public}/inert", "json": {"t": "${secret:ACME_TOKEN}"}},
            ),
        )

    cases += [
        Case("NUL reaching a dead letter", parked(), {"note": "a\x00b"}, expect=RunState.PARKED),
        Case(
            "a dead-letter decision with a long actor and a NUL",
            parked(),
            {"note": "n"},
            expect=RunState.PARKED,
            then=skip_with_a_long_actor,
            then_expect=RunState.COMPLETED,
        ),
        Case(
            "a 10 KB cancel while parked",
            parked(),
            {"note": "c"},
            expect=RunState.PARKED,
            then=cancel_with_a_huge_actor,
            then_expect=RunState.CANCELLED,
        ),
        Case(
            "a reference in redrive input",
            parked(),
            {"note": "r"},
            expect=RunState.PARKED,
            then=redrive_with_a_reference,
            then_expect=RunState.COMPLETED,
        ),
    ]

    async def approve_with_a_reference(handle: WorkflowHandle[Any, Any]) -> None:
        await handle.execute_update(
            RunDefinitionWorkflow.decide,
            DecisionRequest(
                decision=DecisionKind.APPROVE,
                actor="manager",
                reason="ok",
                data={"t": "${secret:ACME_TOKEN}"},
            ),
        )

    cases += [
        Case(
            "a reference in run input",
            [http("send", f"{public}/inert", input={"json": {"t": "{{ input.t }}"}})],
            {"t": "${secret:ACME_TOKEN}"},
            expect=RunState.COMPLETED,
        ),
        Case(
            "a reference in a response",
            [
                http("ask", f"{public}/echo-reference"),
                http("send", f"{public}/inert", input={"json": {"t": "{{ steps.ask.output.body.next }}"}}),
            ],
            expect=RunState.COMPLETED,
        ),
        Case(
            "a reference in approval form data",
            [
                {"id": "ok", "type": "approval", "approvers": ["manager"], "fields": ["t"]},
                http("send", f"{public}/inert", input={"json": {"t": "{{ vars.t }}"}}),
            ],
            expect=RunState.AWAITING_APPROVAL,
            then=approve_with_a_reference,
            then_expect=RunState.COMPLETED,
        ),
        Case(
            "another tenant's secret",
            [http("steal", f"{public}/inert", input={"json": {"t": "${secret:ACME_TOKEN}"}})],
            tenant="evil",
            error_type="SecretNotFound",
        ),
        Case(
            "a secret to a host it does not name",
            [http("leak", f"{public}/inert", input={"json": {"t": "${secret:ACME_TOKEN}"}})],
            error_type="SecretHostRefused",
        ),
        Case(
            "data completing a reference",
            [http("send", f"{public}/inert", input={"json": {"t": "${{ input.t }}"}})],
            {"t": "secret:ACME_TOKEN}"},
            expect="refused",
        ),
        Case(
            "data naming the secret",
            [http("send", f"{public}/inert", input={"json": {"t": "${secret:{{ input.t }}}"}})],
            {"t": "ACME_TOKEN"},
            expect="refused",
        ),
    ]
    return cases


class WorkerProcess:
    """``python worker.py`` as operators run it, with its peak memory readable from /proc."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._out = log.open("ab")
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_memory_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


@pytest.fixture
def internal() -> Iterator[RecordingServer]:
    with RecordingServer("127.0.0.1") as server:
        yield server


@pytest.fixture
def public() -> Iterator[RecordingServer]:
    with RecordingServer("127.0.0.2") as server:
        server.route("POST", "/fail", [(500, {}, {"error": "declined"})])
        server.route("POST", "/redirect", [(302, {"Location": "http://127.0.0.1:1/admin"}, None)])
        server.route("POST", "/echo-reference", [(200, {}, {"next": "${secret:ACME_TOKEN}"})])
        yield server


async def _status(handle: WorkflowHandle[Any, Any]) -> RunStatus:
    status: RunStatus = await handle.query(RunDefinitionWorkflow.status)
    return status


async def _settle(handle: WorkflowHandle[Any, Any], accept: set[RunState], deadline: float) -> RunStatus:
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.wait_for(_status(handle), timeout=10)
            if last.state in accept:
                return last
        except Exception as exc:  # a query that keeps failing is what a stuck run looks like
            last = exc
        await asyncio.sleep(0.3)
    raise AssertionError(f"{handle.id} did not settle in {sorted(accept)}: last {last!r}")


async def test_the_poison_corpus_leaves_no_run_stuck_and_the_worker_alive(
    client: Client,
    task_queue: str,
    internal: RecordingServer,
    public: RecordingServer,
    database_url: str,
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"acme": {"ACME_TOKEN": {"value": CANARY, "hosts": ["api.acme.test"]}}}))
    address = client.service_client.config.target_host
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "DATABASE_URL": database_url,
        "WFA_SECRETS_FILE": str(secrets),
        "WFA_OUTBOUND_ALLOW": "127.0.0.2/32",  # the public stand-in only: 127.0.0.1 is "internal"
        "WORKER_SHUTDOWN_GRACE_S": "5",
        "PYTHONUNBUFFERED": "1",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    port = int(internal.url.rsplit(":", 1)[1])
    cases = build_cases(internal.url, port, public.url, address)
    assert len(cases) >= 40
    try:
        handles: dict[str, WorkflowHandle[Any, Any]] = {}
        refused: dict[str, str] = {}
        for case in cases:
            document = {"name": "poison", "steps": case.steps}
            try:
                definition = load_definition(document)
            except (DefinitionError, TemplateError) as err:
                refused[case.name] = str(err)
                continue
            handles[case.name] = await client.start_workflow(
                RunDefinitionWorkflow.run,
                RunInput(definition=definition, input=case.run_input, options=RunOptions(tenant=case.tenant)),
                id=f"poison-{uuid4().hex[:10]}",
                task_queue=task_queue,
            )
        deadline = time.monotonic() + RUN_DEADLINE_S

        async def play(case: Case) -> tuple[str, RunStatus]:
            handle = handles[case.name]
            assert isinstance(case.expect, RunState)
            # The expected state, or any final one (a wrong final state is reported, not waited out).
            try:
                status = await _settle(handle, {case.expect} | FINAL, deadline)
            except AssertionError as err:
                raise AssertionError(f"case {case.name}: {err}") from None
            if case.then is not None and status.state == case.expect:
                await case.then(handle)
                assert case.then_expect is not None
                status = await _settle(handle, {case.then_expect}, deadline)
            return case.name, status

        settled = dict(await asyncio.gather(*(play(c) for c in cases if c.name in handles)))

        problems = []
        for case in cases:
            if case.expect == "refused":
                if case.name not in refused:
                    problems.append(f"{case.name}: expected a refusal before the run starts")
                continue
            if case.name not in settled:
                problems.append(f"{case.name}: refused unexpectedly: {refused.get(case.name)}")
                continue
            status = settled[case.name]
            want = case.then_expect or case.expect
            if status.state != want:
                problems.append(
                    f"{case.name}: {status.state} ({status.error_type}: {status.error}), expected {want}"
                )
            elif case.error_type and case.then is None and status.error_type != case.error_type:
                problems.append(
                    f"{case.name}: error type {status.error_type} ({status.error}), expected {case.error_type}"
                )
        assert problems == [], "\n".join(problems)

        assert worker.alive(), worker.log.read_text()[-3000:]
        peak = worker.peak_memory_mb()
        assert peak < PEAK_MEMORY_BOUND_MB, f"worker peak memory {peak:.0f} MB"
        assert internal.requests() == [], [r.path for r in internal.requests()]
        inert: list[RecordedRequest] = public.requests(path="/inert")
        assert len(inert) == 4, [r.json for r in inert]
        for request in inert:
            assert request.json == {"t": "${secret:ACME_TOKEN}"}, request.json
        received = json.dumps([r.json for r in public.requests()], ensure_ascii=False) + "".join(
            r.body.decode("utf-8", "replace") for r in public.requests()
        )
        assert CANARY not in received
        print(
            f"poison corpus: {len(cases)} cases, {len(refused)} refused before starting, "
            f"{len(settled)} runs settled, 0 stuck; worker alive, peak {peak:.0f} MB; "
            f"internal requests {len(internal.requests())}"
        )
    finally:
        worker.stop()
