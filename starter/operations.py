"""What an operator asks of the runs: ``wfa stats``, ``wfa watch``, ``wfa diagram`` and bulk
dead-letter decisions.

Everything here reads what Temporal and the store already hold (the visibility store's search
attributes, the run's ``status`` query, the dead-letter rows); nothing is recorded twice.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel

from interpreter.model import Definition, Step, children, jump_targets
from interpreter.state import RunState, RunStatus, StepStatus

if TYPE_CHECKING:
    from activities.store.repository import DeadLetter
    from starter.client import FlowClient, RunSummary

__all__ = [
    "DeadLetterFilter",
    "Stats",
    "mermaid",
    "percentile",
    "run_stats",
    "watch",
]

CLOSED_STATES = {
    RunState.COMPLETED.value,
    RunState.FAILED.value,
    RunState.CANCELLED.value,
    RunState.COMPENSATED.value,
}
STATS_RUN_LIMIT = 10_000
DETAIL_CONCURRENCY = 8


# -------------------------------------------------------------------------------------------- stats


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class StepFailures(BaseModel):
    """How many of the examined runs failed at one step (by step path)."""

    step: str
    failures: int
    error_types: dict[str, int]


class Stats(BaseModel):
    """A definition's runs over a window.

    Attributes:
        runs: Runs started in the window (at most the limit; ``truncated`` says whether more exist).
        by_state: Runs per state (open ones included).
        success_rate: Completed runs over closed runs (None when none closed).
        duration_p50_s, duration_p95_s: Durations of closed runs, start to close.
        failing_steps: Steps where closed runs failed most, from each failed or compensated run's
            status (at most ``detail_limit`` runs examined: ``detailed_runs``).
        decision_p50_s, decision_p95_s: Time from an approval step's start to its decision, over
            the decided approvals of the examined runs (``decisions``).
    """

    definition: str
    tenant: str
    since: datetime
    runs: int
    truncated: bool
    by_state: dict[str, int]
    closed: int
    success_rate: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    failing_steps: list[StepFailures]
    decisions: int
    decision_p50_s: float | None
    decision_p95_s: float | None
    detailed_runs: int
    details_unavailable: int
    unavailable_because: str | None = None
    """Why the first of the runs whose status could not be read could not (None when all were)."""


def summarise(
    definition: str,
    tenant: str,
    since: datetime,
    runs: Sequence[RunSummary],
    statuses: Sequence[RunStatus],
    *,
    truncated: bool,
    details_unavailable: int = 0,
) -> Stats:
    """The figures of :class:`Stats` from listed runs and the statuses fetched for some of them."""
    by_state = Counter(run.state for run in runs)
    closed = [run for run in runs if run.state in CLOSED_STATES and run.closed_at is not None]
    durations = [
        (run.closed_at - run.started_at).total_seconds() for run in closed if run.closed_at is not None
    ]
    completed = sum(1 for run in closed if run.state == RunState.COMPLETED.value)
    failures: dict[str, Counter[str]] = {}
    decision_times: list[float] = []
    for status in statuses:
        for record in status.steps:
            if record.type == "approval" and record.duration_s is not None and record.finished_at is not None:
                decision_times.append(record.duration_s)
        if status.state in (RunState.FAILED, RunState.COMPENSATED):
            failed = [r for r in status.steps if r.status == StepStatus.FAILED]
            if failed:
                last = failed[-1]
                failures.setdefault(last.path, Counter())[last.error_type or "error"] += 1
    failing = sorted(
        (
            StepFailures(step=path, failures=sum(types.values()), error_types=dict(types.most_common()))
            for path, types in failures.items()
        ),
        key=lambda f: (-f.failures, f.step),
    )
    return Stats(
        definition=definition,
        tenant=tenant,
        since=since,
        runs=len(runs),
        truncated=truncated,
        by_state=dict(sorted(by_state.items())),
        closed=len(closed),
        success_rate=(completed / len(closed)) if closed else None,
        duration_p50_s=percentile(durations, 0.5),
        duration_p95_s=percentile(durations, 0.95),
        failing_steps=failing[:10],
        decisions=len(decision_times),
        decision_p50_s=percentile(decision_times, 0.5),
        decision_p95_s=percentile(decision_times, 0.95),
        detailed_runs=len(statuses),
        details_unavailable=details_unavailable,
    )


async def run_stats(
    flows: FlowClient,
    definition: str,
    since: timedelta,
    *,
    limit: int = 1000,
    detail_limit: int = 200,
    now: datetime | None = None,
) -> Stats:
    """A definition's runs of the client's tenant started within ``since`` (dry runs left out:
    rehearsals, not runs).

    Outcomes and durations come from the visibility store (search attributes: no run is replayed);
    the failing steps and the approvals' time to decision come from the ``status`` query of at
    most ``detail_limit`` runs (the newest; a closed run's query replays its history on a worker).
    """
    from starter.client import MAX_LIST_LIMIT, _run_summary, runs_query
    from starter.errors import InvalidInputError

    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInputError(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {limit!r}")
    if isinstance(detail_limit, bool) or not isinstance(detail_limit, int) or not 0 <= detail_limit <= 1000:
        raise InvalidInputError(f"detail limit must be a whole number from 0 to 1000, not {detail_limit!r}")
    start = (now or datetime.now(UTC)) - since
    # Dry runs are rehearsals: they raised the rates (a probe).
    query = f"{runs_query(flows.tenant, definition=definition, dry_runs=False)} AND StartTime > '{start.isoformat()}'"
    runs: list[RunSummary] = []
    async for execution in flows.client.list_workflows(
        query, limit=limit + 1, page_size=min(limit + 1, 1000)
    ):
        runs.append(_run_summary(execution, flows.tenant))
    truncated = len(runs) > limit
    runs = runs[:limit]
    examined = [r for r in runs if r.state in CLOSED_STATES or r.awaiting_approval][:detail_limit]
    gate = asyncio.Semaphore(DETAIL_CONCURRENCY)
    reasons: list[str] = []

    async def one(run: RunSummary) -> RunStatus | None:
        async with gate:
            try:
                return await flows.status(run.workflow_id)
            except Exception as err:  # deleted by retention, no worker to answer, no store or key
                reasons.append(str(err) or type(err).__name__)
                return None

    fetched = await asyncio.gather(*(one(run) for run in examined))
    statuses = [s for s in fetched if s is not None]
    stats = summarise(
        definition,
        flows.tenant,
        start,
        runs,
        statuses,
        truncated=truncated,
        details_unavailable=len(fetched) - len(statuses),
    )
    if reasons:
        stats.unavailable_because = reasons[0][:500]
    return stats


def _seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def print_stats(stats: Stats, out: TextIO) -> None:
    """The human-readable form of ``wfa stats``."""
    more = " (limit reached: more runs exist)" if stats.truncated else ""
    print(
        f"{stats.definition} (tenant {stats.tenant}), runs started since {stats.since:%Y-%m-%d %H:%M} UTC:"
        f" {stats.runs}{more}",
        file=out,
    )
    for state, count in stats.by_state.items():
        print(f"  {state:<18} {count}", file=out)
    rate = "-" if stats.success_rate is None else f"{stats.success_rate:.1%}"
    print(f"success rate (completed / closed): {rate} of {stats.closed} closed", file=out)
    print(
        f"duration of closed runs: p50 {_seconds_text(stats.duration_p50_s)},"
        f" p95 {_seconds_text(stats.duration_p95_s)}",
        file=out,
    )
    print(
        f"time to decision ({stats.decisions} approvals): p50 {_seconds_text(stats.decision_p50_s)},"
        f" p95 {_seconds_text(stats.decision_p95_s)}",
        file=out,
    )
    if stats.failing_steps:
        print("where runs fail most:", file=out)
        for failing in stats.failing_steps:
            types = ", ".join(f"{t} x{n}" for t, n in failing.error_types.items())
            print(f"  {failing.step:<30} {failing.failures}  ({types})", file=out)
    else:
        print("where runs fail most: no failed step among the examined runs", file=out)
    unavailable = f", {stats.details_unavailable} unavailable" if stats.details_unavailable else ""
    print(f"(step figures from {stats.detailed_runs} runs' status{unavailable})", file=out)
    if stats.unavailable_because:
        print(f"(the first unavailable: {stats.unavailable_because})", file=out)


# -------------------------------------------------------------------------------------------- watch


async def watch(
    flows: FlowClient,
    workflow_id: str,
    out: TextIO,
    *,
    interval: float = 1.0,
    timeout: float | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> RunStatus:
    """Prints a run's progress as it goes (steps started and ended, waits, decisions) until it ends.

    Reads the ``status`` query every ``interval`` seconds (a query writes nothing to the run's
    history). Returns the last status.

    Raises:
        TimeoutError: ``timeout`` passed before the run ended.
    """
    seen: dict[str, str] = {}
    waits: tuple[str, ...] = ()
    decisions = 0
    state = ""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        status = await flows.status(workflow_id)
        if status.state.value != state:
            state = status.state.value
            print(f"{_clock()} run {workflow_id}: {state}", file=out)
        # Counted with the dropped ones: the run keeps only its last decisions.
        total = status.decisions_dropped + len(status.decisions)
        for decided in status.decisions[max(0, len(status.decisions) - (total - decisions)) :]:
            verdict = "accepted" if decided.accepted else f"refused ({decided.refusal})"
            print(f"{_clock()}   {decided.decision.value} by {decided.actor}: {verdict}", file=out)
        decisions = total
        for record in status.steps:
            key = f"{record.path}#{record.started_at.isoformat()}"
            if seen.get(key) == record.status.value:
                continue
            seen[key] = record.status.value
            detail = ""
            if record.status == StepStatus.FAILED and record.error:
                detail = f": {record.error_type}: {record.error[:200]}"
            elif record.duration_s is not None:
                detail = f" ({_seconds_text(record.duration_s)}, attempts {record.attempts})"
            print(f"{_clock()}   {record.path} [{record.type}] {record.status.value}{detail}", file=out)
        now_waits = tuple(
            # All of them, also when the status had to cut their list (left_out names it).
            [
                f"approval {p.path} by {', '.join(p.approvers)}"
                for p in await flows.every_pending_approval(workflow_id, status)
            ]
            + [f"dead letter {p.path} (id {p.dead_letter_id})" for p in status.parked]
            + [f"event {w.event} with key {w.key[:100]} at {w.path}" for w in status.waiting_events]
        )
        if now_waits != waits:
            waits = now_waits
            for wait in waits:
                print(f"{_clock()}   waiting: {wait}", file=out)
        if status.state.value in CLOSED_STATES:
            if status.error:
                print(f"{_clock()} ended {state}: {status.error_type}: {status.error}", file=out)
            return status
        if deadline is not None and loop.time() >= deadline:
            raise TimeoutError(f"run {workflow_id!r} still {state} after {timeout:g}s")
        await sleep(interval)


def _clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


# ------------------------------------------------------------------------------------------ diagram


def _label(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return re.sub(r'["<>`]', "'", text).replace("\n", " ")[:80]


class _Diagram:
    def __init__(self, taken: set[str], failed: set[str]) -> None:
        self.lines: list[str] = []
        self.ids: dict[str, str] = {}
        self.taken = taken
        self.failed = failed
        self.jumps: list[tuple[str, str]] = []

    def node(self, path: str, step: Step) -> str:
        node = self.ids.setdefault(path, f"s{len(self.ids)}")
        name = getattr(step, "name", "") or ""
        text = f"{step.id} ({step.type})" + (f"<br/>{_label(name)}" if name and name != step.id else "")
        shape = ("{{", "}}") if step.type in ("condition", "switch") else ("[", "]")
        if step.type in ("approval", "human_task", "wait_for_event", "delay"):
            shape = ("([", "])")
        self.lines.append(f'    {node}{shape[0]}"{text}"{shape[1]}')
        return node

    def sequence(self, steps: Sequence[Step], prefix: str, entry: str | None, label: str = "") -> str | None:
        """Draws a sequence; returns its last node (None if empty)."""
        previous = entry
        first = True
        for step in steps:
            path = prefix + step.id
            node = self.node(path, step)
            if previous is not None:
                arrow = f"-->|{_label(label)}|" if first and label else "-->"
                self.lines.append(f"    {previous} {arrow} {node}")
            first = False
            for target_label, target in jump_targets(step):
                self.jumps.append((node, f"{target_label}:{target}"))
            tails: list[str] = []
            for suffix, nested, boundary in children(step):
                nested_prefix = f"{path}/" if boundary in ("compensate", "escalation") else prefix
                if boundary == "foreach":
                    nested_prefix = f"{path}[*]."
                tail = self.sequence(nested, nested_prefix, node, suffix.strip(".").split(".")[0])
                if tail is not None and boundary not in ("compensate", "escalation"):
                    tails.append(tail)
            if step.type in ("succeed", "fail"):
                self.lines.append(f"    {node} --> finish")
                previous = None
                continue
            if tails:
                join = f"j{len(self.ids)}_{len(self.lines)}"
                self.lines.append(f"    {join}(( ))")
                for tail in tails:
                    self.lines.append(f"    {tail} --> {join}")
                if step.type in ("condition", "switch"):
                    self.lines.append(f"    {node} -.->|otherwise| {join}")
                previous = join
            else:
                previous = node
        return previous

    def by_id(self, step_id: str) -> str | None:
        for path, node in self.ids.items():
            if path.rsplit("/", 1)[-1].rsplit(".", 1)[-1] == step_id:
                return node
        return None


def mermaid(definition: Definition, *, taken: Iterable[str] = (), failed: Iterable[str] = ()) -> str:
    """A Mermaid flowchart of a definition: a node per step (named by its id and type), nested
    sequences inside their step, dashed arrows for jumps (``goto``). Steps whose paths are in
    ``taken`` (a run's path) are highlighted, those in ``failed`` marked as failed."""
    taken_set = {_base_path(p) for p in taken}
    failed_set = {_base_path(p) for p in failed}
    diagram = _Diagram(taken_set, failed_set)
    start = "start"
    diagram.lines.append(f'    {start}(("{_label(definition.name)} v{definition.version}"))')
    last = diagram.sequence(definition.steps, "", start)
    diagram.lines.insert(1, "    finish((end))")
    if last is not None:
        diagram.lines.append(f"    {last} --> finish")
    for source, target in diagram.jumps:
        label, _, step_id = target.partition(":")
        node = diagram.by_id(step_id)
        if node is not None:
            text = label.strip(".").replace(".", " ") or "goto"
            diagram.lines.append(f"    {source} -.->|{_label(text)}| {node}")
    lines = ["flowchart TD", *diagram.lines]
    hit = sorted({node for path, node in diagram.ids.items() if path in taken_set})
    bad = sorted({node for path, node in diagram.ids.items() if path in failed_set})
    if hit:
        lines.append("    classDef taken fill:#d4f5dc,stroke:#1f7a35,stroke-width:2px")
        lines.append(f"    class {','.join(hit)} taken")
    if bad:
        lines.append("    classDef failed fill:#fbd9d9,stroke:#a11,stroke-width:2px")
        lines.append(f"    class {','.join(bad)} failed")
    return "\n".join(lines) + "\n"


def _base_path(path: str) -> str:
    """A run's step path with loop indexes folded (``reviews[2].score`` -> ``reviews[*].score``)."""
    return re.sub(r"\[\d+\]\.", "[*].", path)


def run_path(status: RunStatus) -> tuple[list[str], list[str]]:
    """The step paths a run went through, and those that failed, from its status."""
    taken = [r.path for r in status.steps if r.status != StepStatus.SKIPPED]
    failed = [r.path for r in status.steps if r.status == StepStatus.FAILED]
    return taken, failed


# --------------------------------------------------------------------------------- bulk dead letters


class DeadLetterFilter(BaseModel):
    """Which open dead letters a bulk decision applies to; every given criterion must match."""

    definition: str | None = None
    step: str | None = None
    error_type: str | None = None
    older_than: timedelta | None = None

    def matches(self, row: DeadLetter, now: datetime) -> bool:
        if self.definition is not None and row.definition != self.definition:
            return False
        if self.step is not None and self.step not in (row.step_id, row.path):
            return False
        if self.error_type is not None and row.error_type != self.error_type:
            return False
        return not (self.older_than is not None and now - row.parked_at < self.older_than)

    def describe(self) -> str:
        parts = [
            f"definition {self.definition}" if self.definition else "",
            f"step {self.step}" if self.step else "",
            f"error type {self.error_type}" if self.error_type else "",
            f"parked more than {self.older_than} ago" if self.older_than else "",
        ]
        return ", ".join(p for p in parts if p) or "all open dead letters"


def select_dead_letters(
    rows: Iterable[DeadLetter], where: DeadLetterFilter, now: datetime
) -> list[DeadLetter]:
    return [row for row in rows if where.matches(row, now)]
