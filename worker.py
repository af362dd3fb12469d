"""The worker: runs the generic workflow and every action activity.

Configuration comes from the environment:

- ``TEMPORAL_ADDRESS`` (default ``127.0.0.1:7233``)
- ``TEMPORAL_NAMESPACE`` (default ``default``)
- ``WFA_WORKER_TENANTS``: the tenants this worker serves (comma-separated). It polls each of their
  namespaces (``WFA_TENANT_NAMESPACES``, ``WFA_NAMESPACE_PER_TENANT``: :mod:`starter.tenancy`), one
  Temporal worker per namespace in this process, and runs an action only for a run of one of its
  tenants in that tenant's own namespace (before any secret is resolved). Unset: the namespace
  ``TEMPORAL_NAMESPACE`` alone, for every tenant living there. Connection settings per namespace
  come from Temporal's configuration profile named after the namespace, if any
  (``TEMPORAL_CONFIG_FILE``), else the default profile and ``TEMPORAL_ADDRESS``/``TEMPORAL_API_KEY``/
  ``TEMPORAL_TLS_*``.
- ``WFA_TENANT_OUTBOUND_ALLOW``: allowances of single tenants (``acme=10.1.0.0/16,crm.acme.internal;
  globex=...``), added to ``WFA_OUTBOUND_ALLOW`` for the runs of that tenant's namespace only (each
  namespace has its own HTTP client); a tenant sharing its namespace with another cannot have any.
- ``TEMPORAL_TASK_QUEUE`` (default ``workflow-automation``)
- ``WFA_SECRETS_FILE``: per-tenant secrets (with the hosts each may be sent to); ``WFA_SECRET_<NAME>``
  are the tenant ``default``'s (:mod:`activities.secrets`). The ``email``, ``sms``/``call`` and
  ``webhook`` actions read each tenant's mail server, SMS provider and signing secret from them
  (``SMTP_HOST``, ``TWILIO_ACCOUNT_SID``, ``WEBHOOK_SECRET``, ...: see the README).
- ``WFA_OUTBOUND_ALLOW``: networks (CIDR) and host names actions may reach although they are
  internal (loopback, private, link-local, ...); unset, nothing internal is reachable
  (:mod:`activities.outbound`).
- ``WFA_CONNECTIONS_FILE``: the tenants' named connections of the ``sql`` and ``llm`` actions
  (:mod:`activities.connections`).
- ``WFA_ACTION_MODULES``: modules holding teams' own actions, besides the installed packages' entry
  points (group ``wfa.actions``; :mod:`starter.plugins`). A team runs its actions on its own task
  queue by starting this worker with its own ``TEMPORAL_TASK_QUEUE`` (steps name it in ``task_queue``).
- ``DATABASE_URL``: the PostgreSQL store where dead letters are recorded. Without it the worker
  serves every action but not the dead-letter activities: a run that parks waits (retrying, shown
  in the Web UI) until a worker with a database records its dead letter; nothing is lost.
- ``WFA_DECISION_KEYS``: a JWKS file of the public keys decision tokens are verified with (several
  keys: rotation keeps tokens of the older key valid while it stays listed); ``WFA_DECISION_ISSUER``
  the issuer they must name (default ``wfa``); ``WFA_REQUIRE_DECISION_PROOF=1`` makes this worker
  require a token on every decide and cancel_run update, whatever the run's options say.

- ``WFA_DEPLOYMENT_NAME`` and ``WFA_BUILD_ID``: poll as this Worker Deployment Version (Temporal's
  Worker Versioning; runs are auto-upgrade). Unset: an unversioned worker.
- ``WFA_PAYLOAD_KEYS`` / ``WFA_PAYLOAD_KEYS_FILE``: payload encryption keys (:mod:`starter.codec`).
- ``WFA_PAYLOAD_STORE`` (``fs:<dir>``, ``postgres`` or ``s3://<bucket>/<prefix>``),
  ``WFA_PAYLOAD_STORE_THRESHOLD``: large payloads by reference (:mod:`starter.payload_store`);
  clients and the gateway need the same settings. ``WFA_PAYLOAD_STORE_RUN_INPUT=always``: every
  run's start input by reference whatever its size (here: the subflows and fan-out slices this
  worker starts; clients, the gateway and schedules' creators set it for the runs they start).
  ``WFA_STATE_BUDGET_MAX``: the most state a run may keep whatever its starter asks (default 16 MiB).
- ``WFA_MAX_CACHED_RUNS``: runs kept in memory between their workflow tasks (default: what half the
  memory the worker may use holds at 4 MB a run, 16 to 1,000): with the state budget, it bounds the
  worker's memory (:func:`cached_runs_from_env`).
- ``WFA_PRIORITY_TENANTS``: the tenants whose definitions may ask priority 1 or 2 for what their
  runs schedule (comma-separated, ``*`` all; unset: none; :mod:`workflows.priority`).
- ``WFA_METRICS_ADDRESS``: a Prometheus endpoint (``host:port``) with the SDK's and the product's
  metrics; ``WFA_METRICS_SAMPLE_S``/``WFA_METRICS_SAMPLE_LIMIT`` the sampled gauges;
  ``OTEL_EXPORTER_OTLP_ENDPOINT``: OTLP/HTTP traces (:mod:`starter.telemetry`).

SIGTERM or SIGINT stops polling and lets in-flight activities finish (up to
``WORKER_SHUTDOWN_GRACE_S``, default 30 s) before the process exits (exit 0). A worker the server
stops serving (its polls refused) ends the process with exit 1 (:func:`run_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import build_activities
from activities.base import HEARTBEAT_SEND_EVERY_MAX
from activities.connections import ConnectionsConfigError, connections
from activities.dead_letters import build_store_activities
from activities.email import EmailActions
from activities.events import build_event_activities
from activities.input_check import input_check_settings
from activities.notify import DecisionLinks
from activities.outbound import OutboundPolicy, build_http_client
from activities.plugins import plugin_activities
from activities.run_control import end_task, priority_granted, request_cancel
from activities.secrets import (
    SecretsConfigError,
    configure_secret_store,
    configure_tenant_scope,
    store_from_env,
)
from activities.sql import SqlActions
from activities.store.database import DATABASE_URL_ENV, SessionFactory, open_database
from activities.store.errors import StoreError
from activities.subflows import max_runs_per_tree_from_env, subflow_input_problems, tree_runs
from interpreter.actions import ActionPluginError
from starter import tokens
from starter.codec import PayloadKeysError, data_converter
from starter.payload_store import PayloadStoreConfigError, state_budget_max, state_budget_max_from_env
from starter.plugins import load_configured_action_plugins
from starter.telemetry import (
    METRICS_ADDRESS_ENV,
    GaugeSampler,
    build_runtime,
    configure_tracing,
    sample_settings,
    sampling,
    shutdown_tracing,
)
from starter.tenancy import TenancyConfigError, WorkerScope, namespace_connect_config
from workflows import decision_tokens
from workflows.generic import WORKFLOWS
from workflows.mailbox import EventMailboxWorkflow

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "workflow-automation"

log = logging.getLogger("worker")

# Deterministic, side-effect-free modules the sandboxed workflows (the event mailbox; the generic
# workflow runs outside the sandbox, see workflows.generic.SANDBOXED) use: imported once, outside the
# sandbox, so the interpreter's compiled-template cache survives across runs and jinja2's internals
# (which take locks) are not re-imported into every workflow's sandbox.
PASSTHROUGH_MODULES = (
    "interpreter",
    "jinja2",
    "markupsafe",
    "pydantic",
    "pydantic_core",
    "zoneinfo",
    "workflows.search_attributes",
    # The decision verifier the worker configures (keys stay in this process, never in history).
    "workflows.decision_tokens",
    "jwt",
    "cryptography",
    # Step spans (workflows/telemetry.py); the SDK's replay-safe tracer provider lives outside.
    "opentelemetry",
)

DECISION_KEYS_ENV = "WFA_DECISION_KEYS"
REQUIRE_PROOF_ENV = "WFA_REQUIRE_DECISION_PROOF"


def load_decision_verifier(environ: Mapping[str, str]) -> decision_tokens.DecisionVerifier | None:
    """The decision verifier the environment configures, or None without ``WFA_DECISION_KEYS``.

    Raises:
        ValueError: The key file cannot be read or holds no usable key; or proof is required
            without keys.
    """
    required = environ.get(REQUIRE_PROOF_ENV, "").strip().lower() in ("1", "true", "yes")
    path = environ.get(DECISION_KEYS_ENV)
    if not path:
        if required:
            raise ValueError(f"{REQUIRE_PROOF_ENV} is set but {DECISION_KEYS_ENV} names no key set")
        return None
    try:
        with open(path, encoding="utf-8") as file:
            jwks = json.load(file)
    except (OSError, ValueError) as err:
        raise ValueError(f"{DECISION_KEYS_ENV}: cannot read the key set {path}: {err}") from None
    issuer = tokens.configured_issuer(environ)
    try:
        return decision_tokens.DecisionVerifier.from_jwks(jwks, issuer, required=required)
    except decision_tokens.KeySetError as err:
        raise ValueError(f"{DECISION_KEYS_ENV}: {path}: {err}") from None


def workflow_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox with the interpreter and its libraries passed through."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


DEADLOCK_TIMEOUT_S = 8.0
"""How long one activation of workflow code may run before the SDK calls it a deadlock (TMPRL1101).

The SDK's 2 s is wall time, and on a small machine under load a bounded activation (the
interpreter caps template work per task, see ``TASK_WORK_BUDGET``) takes many times its CPU time:
at a load of 20 on 2 cores a tenth of a CPU. A false deadlock fails the task, and the SDK may then be
unable to evict the interrupted run ("Eviction processed, but N tasks remain"), leaving it stuck on
this worker. 8 s stays under the server's 10 s workflow task timeout. The SDK has no option for it:
:func:`build_worker` sets its worker's attribute, and ``tests/test_worker_slots.py`` fails if an SDK
upgrade renames it."""


def tolerate_slow_activations(worker: Worker, seconds: float = DEADLOCK_TIMEOUT_S) -> Worker:
    """Sets the SDK's deadlock detection limit of ``worker`` to ``seconds`` (see
    :data:`DEADLOCK_TIMEOUT_S`).

    Raises:
        RuntimeError: The SDK no longer has the attribute (an upgrade changed it).
    """
    workflows = getattr(worker, "_workflow_worker", None)
    if workflows is None or not hasattr(workflows, "_deadlock_timeout_seconds"):
        raise RuntimeError(
            "this temporalio version has no deadlock timeout to set: see worker.DEADLOCK_TIMEOUT_S"
        )
    if workflows._deadlock_timeout_seconds is not None:  # None: debug mode, no detection at all
        workflows._deadlock_timeout_seconds = seconds
    return worker


WORKFLOW_TASK_SLOTS_ENV = "WFA_WORKFLOW_TASK_SLOTS"
"""Workflow tasks the worker runs at once (default :func:`default_workflow_task_slots`)."""


def default_workflow_task_slots(cpus: int | None = None) -> int:
    """Two per CPU the process may use (:func:`cpu_limit`, unless ``cpus`` is given), at least four:
    workflow code runs under the GIL, so more slots than the CPUs can serve only lengthen every
    task. The SDK's default of 100 lets a burst of first tasks on a small machine each take seconds,
    tripping the SDK's 2 s deadlock detector and the 10 s workflow task timeout (measured with
    10,000 runs starting on 2 cores: see the README's *Benchmarks*)."""
    return max(4, 2 * (cpu_limit() if cpus is None else cpus))


def workflow_task_slots_from_env(environ: Mapping[str, str]) -> int:
    """``WFA_WORKFLOW_TASK_SLOTS``, or the default.

    Raises:
        ValueError: Not a whole number from 2 to 1000.
    """
    raw = environ.get(WORKFLOW_TASK_SLOTS_ENV, "").strip()
    if not raw:
        return default_workflow_task_slots()
    if not raw.isdigit() or not 2 <= int(raw) <= 1000:
        raise ValueError(f"{WORKFLOW_TASK_SLOTS_ENV} must be a whole number from 2 to 1000, not {raw[:40]!r}")
    return int(raw)


CACHED_RUNS_ENV = "WFA_MAX_CACHED_RUNS"
"""How many runs the worker keeps in memory between their workflow tasks (Temporal's sticky cache)."""
DEFAULT_CACHED_RUNS = 1000
"""The most cached runs by default (the SDK's default), on a machine with the memory for them."""
MIN_CACHED_RUNS = 16
"""The fewest cached runs by default, however little memory: below that, most tasks would replay."""
CACHED_RUN_BYTES = 4 * 1024 * 1024
"""What one cached run may cost the worker: a run that keeps its whole default state budget
(1.5 MiB) grew the worker by about 3.9 MB (an attacker's probe; the README's *Memory*)."""


def _cgroup_dirs(cgroup: Path, self_cgroup: Path, controller: str) -> list[tuple[Path, bool]]:
    """The directories of this process's cgroup and of each cgroup above it for ``controller``
    (``memory``, ``cpu``), as ``/proc/self/cgroup`` names them, and those at the mount's root, each
    with whether it is cgroup v2 (one hierarchy) or v1 (the controller's own, ``<mount>/<controller>``)."""
    places: list[tuple[Path, bool]] = [(cgroup, True), (cgroup / controller, False)]
    with contextlib.suppress(OSError):
        for line in self_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                bases, v2 = [cgroup], True
            elif controller in controllers.split(","):
                # v1 mounts a hierarchy under the names of its controllers (``cpu,cpuacct``), most
                # systems linking each controller's name (``cpu``) to it: either will do.
                bases, v2 = list(dict.fromkeys([cgroup / controller, cgroup / controllers])), False
                places.append((cgroup / controllers, False))
            else:
                continue
            for base in bases:
                here = base / path.strip().lstrip("/")
                while here != base and base in here.parents:
                    places.append((here, v2))
                    here = here.parent
    return places


def _cgroup_files(cgroup: Path, self_cgroup: Path) -> list[Path]:
    """The memory limit files of this process's cgroup and of each cgroup above it (v2
    ``memory.max``, v1 ``memory.limit_in_bytes`` in the memory hierarchy)."""
    return [
        directory / ("memory.max" if v2 else "memory.limit_in_bytes")
        for directory, v2 in _cgroup_dirs(cgroup, self_cgroup, "memory")
    ]


def _cpu_quota(directory: Path, v2: bool) -> float | None:
    """The CPUs a cgroup's quota allows (quota over period), None when it sets none."""
    if v2:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
    else:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    if int(quota) <= 0 or int(period) <= 0:  # v1's -1: no quota
        return None
    return int(quota) / int(period)


def cpu_limit(
    cgroup: Path = Path("/sys/fs/cgroup"),
    self_cgroup: Path = Path("/proc/self/cgroup"),
    affinity: int | None = None,
) -> int:
    """The CPUs this process may use: those its affinity allows (``affinity``, default
    ``os.sched_getaffinity``, else ``os.cpu_count``), at most the lowest CPU quota set on its cgroup
    or one above it (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), rounded
    up; at least 1. A container limited to 2 CPUs on a 32-core host has 2, not 32."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = os.cpu_count() or 1
    cpus = max(1, affinity)
    for directory, v2 in _cgroup_dirs(cgroup, self_cgroup, "cpu"):
        with contextlib.suppress(OSError, ValueError):
            quota = _cpu_quota(directory, v2)
            if quota is not None:
                cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def memory_limit(
    cgroup: Path = Path("/sys/fs/cgroup"),
    meminfo: Path = Path("/proc/meminfo"),
    self_cgroup: Path = Path("/proc/self/cgroup"),
) -> int | None:
    """The bytes of memory this process may use: the lowest limit set on its cgroup or one above
    it (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), at most the machine's (``MemTotal``);
    None when neither can be read (not Linux)."""
    limits: list[int] = []
    for path in _cgroup_files(cgroup, self_cgroup):
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip()
            if text != "max":
                limits.append(int(text))
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) * 1024)
    positive = [limit for limit in limits if limit > 0]
    return min(positive) if positive else None


def default_cached_runs(memory: int | None) -> int:
    """The default of ``WFA_MAX_CACHED_RUNS`` for a worker that may use ``memory`` bytes: as many
    runs as half of it holds at :data:`CACHED_RUN_BYTES` each, from :data:`MIN_CACHED_RUNS` to
    :data:`DEFAULT_CACHED_RUNS` (1,000 from 8 GiB up; 128 in a 1 GiB container); 1,000 when the
    memory is not known."""
    if memory is None:
        return DEFAULT_CACHED_RUNS
    return max(MIN_CACHED_RUNS, min(DEFAULT_CACHED_RUNS, memory // 2 // CACHED_RUN_BYTES))


def cached_runs_from_env(environ: Mapping[str, str], memory: int | None = None) -> int:
    """``WFA_MAX_CACHED_RUNS``, or :func:`default_cached_runs` of ``memory`` (default: the
    process's :func:`memory_limit`).

    A cached run holds its state in memory: a run that keeps its whole state budget (1.5 MiB
    without the payload store; with it, what the run asks up to ``WFA_STATE_BUDGET_MAX``) takes
    about 4 MB of the worker's memory at 1.5 MiB, so a thousand such runs waiting take about 4 GB.
    This bounds it for the whole process (:func:`per_namespace` splits it among the namespaces the
    process serves); a run not in the cache is replayed from its history at its next task.

    Raises:
        ValueError: Not a whole number from 1 to 100,000.
    """
    raw = environ.get(CACHED_RUNS_ENV, "").strip()
    if not raw:
        return default_cached_runs(memory_limit() if memory is None else memory)
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise ValueError(f"{CACHED_RUNS_ENV} must be a whole number from 1 to 100000, not {raw[:40]!r}")
    return int(raw)


def per_namespace(total: int, namespaces: int, least: int) -> int:
    """What each namespace's worker gets of a process-wide figure (``WFA_WORKFLOW_TASK_SLOTS``,
    ``WFA_MAX_CACHED_RUNS``): a process serving several namespaces runs one SDK worker for each,
    and each worker's slots and cache are its own, so without the split a process serving ten
    namespaces would run ten times the workflow tasks at once and cache ten times the runs. An even
    share, at least ``least`` (the SDK's minimum; the total is then exceeded, which the start log
    shows: each namespace's figures beside the process's)."""
    return max(least, total // max(1, namespaces))


SHUTDOWN_GRACE_ENV = "WORKER_SHUTDOWN_GRACE_S"
"""How long SIGTERM/SIGINT lets in-flight activities finish, in seconds (default 30)."""
MAX_SHUTDOWN_GRACE_S = 86_400


def shutdown_grace_from_env(environ: Mapping[str, str]) -> timedelta:
    """``WORKER_SHUTDOWN_GRACE_S``: seconds, from 0 to a day (default 30).

    Raises:
        ValueError: Not a number of seconds in that range (the message names the variable).
    """
    raw = environ.get(SHUTDOWN_GRACE_ENV, "").strip() or "30"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_SHUTDOWN_GRACE_S:  # also NaN
        raise ValueError(
            f"{SHUTDOWN_GRACE_ENV} must be a number of seconds from 0 to {MAX_SHUTDOWN_GRACE_S}, not {raw[:40]!r}"
        )
    return timedelta(seconds=seconds)


DEPLOYMENT_NAME_ENV = "WFA_DEPLOYMENT_NAME"
"""Worker Deployment Versioning: the deployment this worker belongs to (with ``WFA_BUILD_ID``)."""
BUILD_ID_ENV = "WFA_BUILD_ID"
"""Worker Deployment Versioning: this worker's build id (the version of the interpreter it runs)."""
MAX_DEPLOYMENT_ID_LENGTH = 255
"""The longest deployment name or build id taken (the server's bound depends on its id length limit)."""


def deployment_from_env(environ: Mapping[str, str]) -> WorkerDeploymentVersion | None:
    """The worker's deployment version from ``WFA_DEPLOYMENT_NAME`` and ``WFA_BUILD_ID`` (both or
    neither; None: an unversioned worker).

    Raises:
        ValueError: Only one of the two is set, or one breaks Temporal's rules for them.
    """
    name = environ.get(DEPLOYMENT_NAME_ENV, "").strip()
    build = environ.get(BUILD_ID_ENV, "").strip()
    if not name and not build:
        return None
    if not name or not build:
        raise ValueError(f"set both {DEPLOYMENT_NAME_ENV} and {BUILD_ID_ENV} (or neither)")
    # Temporal's own rules, refused here rather than by the server's answer to the first poll (the
    # SDK then stops polling, and the process would wait for a shutdown that never ends).
    for variable, value in ((DEPLOYMENT_NAME_ENV, name), (BUILD_ID_ENV, build)):
        if len(value) > MAX_DEPLOYMENT_ID_LENGTH or value.startswith("__"):
            raise ValueError(
                f"{variable} must be at most {MAX_DEPLOYMENT_ID_LENGTH} characters and not start with '__',"
                f" not {value[:40]!r}"
            )
    if "." in name or ":" in name:
        raise ValueError(
            f"{DEPLOYMENT_NAME_ENV} cannot contain '.' or ':' (Temporal's rule), not {name[:40]!r}"
        )
    return WorkerDeploymentVersion(deployment_name=name, build_id=build)


def build_worker(
    client: Client,
    task_queue: str,
    http_client: httpx.AsyncClient,
    *,
    session_factory: SessionFactory | None = None,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    graceful_shutdown_timeout: timedelta = timedelta(seconds=30),
    outbound_policy: OutboundPolicy | None = None,
    sql: SqlActions | None = None,
    deployment: WorkerDeploymentVersion | None = None,
    max_cached_workflows: int | None = None,
    max_concurrent_workflow_tasks: int | None = None,
    on_fatal_error: Callable[[BaseException], Awaitable[None]] | None = None,
) -> Worker:
    """Builds a worker for the generic workflow and all actions.

    Args:
        client: A client created with ``pydantic_data_converter``.
        task_queue: The task queue to poll.
        http_client: Shared by the ``http`` action.
        session_factory: The store's sessions; when given, the dead-letter activities are served.
        extra_workflows: More workflows on the same worker (benchmarks, tests).
        extra_activities: More activities on the same worker.
        graceful_shutdown_timeout: How long in-flight activities may finish on shutdown.
        outbound_policy: What the ``email`` action may connect to (the policy ``http_client`` was
            built with); default ``WFA_OUTBOUND_ALLOW``'s.
        sql: The ``sql`` action's database pools (closed by the caller).

    The registered action plugins (:func:`interpreter.actions.action_plugins`) are served too.
        deployment: Poll as this Worker Deployment Version (see the README's *Evolving the
            interpreter*): runs are auto-upgrade, so a waiting run moves to the deployment's
            current version at its next workflow task. None: an unversioned worker.
        max_cached_workflows: Runs kept in the worker's sticky cache (None:
            :func:`default_cached_runs` of the process's memory); a run not in the cache is
            replayed from its history at its next task.
        max_concurrent_workflow_tasks: Workflow tasks run at once (None:
            :func:`default_workflow_task_slots`).
        on_fatal_error: Called when the worker fails and stops polling (the server refuses its
            polls): ``worker.py`` then stops the process (:func:`run_workers`).
    """
    versioning = (
        None
        if deployment is None
        else WorkerDeploymentConfig(
            version=deployment,
            use_worker_versioning=True,
            default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
        )
    )
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, EventMailboxWorkflow, *extra_workflows],
        activities=[
            *build_activities(http_client, outbound_policy=outbound_policy, sql=sql),
            *build_event_activities(client),
            request_cancel,
            end_task,
            priority_granted,
            state_budget_max,
            tree_runs,
            subflow_input_problems,
            *plugin_activities(),
            DecisionLinks(EmailActions(outbound_policy or OutboundPolicy.from_env()).email).decision_links,
            *(build_store_activities(session_factory) if session_factory is not None else []),
            *extra_activities,
        ],
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        workflow_runner=workflow_runner(),
        deployment_config=versioning,
        max_cached_workflows=(
            default_cached_runs(memory_limit()) if max_cached_workflows is None else max_cached_workflows
        ),
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks or default_workflow_task_slots(),
        # Heartbeats leave with time to arrive before the step's heartbeat timeout, on a busy worker too.
        max_heartbeat_throttle_interval=HEARTBEAT_SEND_EVERY_MAX,
        on_fatal_error=on_fatal_error,
    )
    return tolerate_slow_activations(worker)


async def connect(address: str, namespace: str, **options: Any) -> Client:
    """Connects a client with the product's data converter, naming the server on failure.

    ``options`` go to ``Client.connect`` (an API key, TLS, gRPC metadata, a runtime, plugins).
    The data converter is pydantic's, with the payload codec when keys are configured
    (:func:`starter.codec.data_converter`).

    Raises:
        ConnectionError: The server cannot be reached.
        PayloadKeysError: The payload keys are unusable.
    """
    options.setdefault("data_converter", data_converter(namespace=namespace))
    try:
        return await Client.connect(address, namespace=namespace, **options)
    except RuntimeError as err:
        raise ConnectionError(
            f"cannot reach the Temporal server at {address} (namespace {namespace}): {err}"
        ) from None


async def connect_namespaces(scope: WorkerScope, **extra: Any) -> dict[str, Client]:
    """A client per namespace the worker serves (each with that namespace's profile, if any).

    ``extra`` goes to every ``Client.connect`` (a runtime with metrics, tracing plugins).

    Raises:
        ConnectionError: A server cannot be reached.
        TenancyConfigError: A configuration profile is unusable.
    """
    clients: dict[str, Client] = {}
    for namespace in scope.namespaces:
        options = namespace_connect_config(namespace, namespace)
        address = options.pop("target_host", None) or DEFAULT_ADDRESS
        options.pop("namespace")
        clients[namespace] = await connect(address, namespace, **options, **extra)
    return clients


async def main() -> int:
    """Runs the worker until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    task_queue = os.environ.get("TEMPORAL_TASK_QUEUE", DEFAULT_TASK_QUEUE)
    try:
        grace = shutdown_grace_from_env(os.environ)
        verifier = load_decision_verifier(os.environ)
        deployment = deployment_from_env(os.environ)
        workflow_slots = workflow_task_slots_from_env(os.environ)
        cached_runs = cached_runs_from_env(os.environ)
        state_budget_max_from_env(os.environ)
        max_runs_per_tree_from_env(os.environ)
        input_check_settings(os.environ)
    except ValueError as err:
        log.error("%s", err)
        return 2
    decision_tokens.configure(verifier)
    if verifier is not None:
        log.info(
            "decision tokens: %d key(s), issuer %s, proof required: %s",
            len(verifier.keys),
            verifier.issuer,
            verifier.required,
        )
    try:
        connections()  # a broken connections file stops the start, not the first sql or llm step
    except ConnectionsConfigError as err:
        log.error("%s", err)
        return 2
    try:
        plugins = load_configured_action_plugins()
        plugin_activities()  # imports every plugin's function now: a broken one stops the start
    except ActionPluginError as err:
        log.error("%s", err)
        return 2
    if plugins:
        log.info("action plugins: %s", ", ".join(f"{p.name} ({p.function})" for p in plugins))
    try:
        runtime = build_runtime()
        sample_interval, sample_limit = sample_settings()
    except ValueError as err:
        log.error("%s", err)
        return 2
    telemetry: dict[str, Any] = {}
    if runtime is not None:
        telemetry["runtime"] = runtime
        log.info("metrics on http://%s/metrics", os.environ[METRICS_ADDRESS_ENV])
    tracing = configure_tracing()
    if tracing:
        telemetry["plugins"] = tracing
        log.info("traces exported by OTLP")
    try:
        scope = WorkerScope.from_env()
        allowances = scope.allowances()
        clients = await connect_namespaces(scope, **telemetry)
    except TenancyConfigError as err:
        log.error("%s", err)
        return 2
    except ConnectionError as err:
        log.error("%s", err)
        return 2
    except PayloadKeysError as err:  # the store's settings' errors name their variable
        log.error("%s%s", "" if isinstance(err, PayloadStoreConfigError) else "payload encryption: ", err)
        return 2
    configure_tenant_scope(scope)
    # httpx logs every request URL at INFO, after secrets are filled in: never log them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    try:
        base = OutboundPolicy.from_env()
        policies = {
            namespace: OutboundPolicy.parse([*map(str, base.allow_networks), *base.allow_hosts, *extra])
            for namespace, extra in allowances.items()
        }
    except ValueError as err:
        log.error("outbound allowances: %s", err)
        return 2
    try:
        configure_secret_store(store_from_env())
    except SecretsConfigError as err:
        log.error("%s", err)
        return 2
    database = None
    if os.environ.get(DATABASE_URL_ENV):
        try:
            database = await open_database(os.environ[DATABASE_URL_ENV])
        except StoreError as err:
            log.error("%s", err)
            return 2
    else:
        log.warning("no %s: dead letters cannot be recorded by this worker", DATABASE_URL_ENV)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failures: list[BaseException] = []

    async def failed(err: BaseException) -> None:  # a worker stopped polling: stop the process
        failures.append(err)
        stop.set()

    async with contextlib.AsyncExitStack() as stack:
        # One HTTP client per namespace: a tenant's allowances (and pooled connections) serve only
        # the runs of its namespace.
        workers = []
        slots_each = per_namespace(workflow_slots, len(clients), 2)
        cached_each = per_namespace(cached_runs, len(clients), 1)
        sql = SqlActions()
        stack.push_async_callback(sql.close)
        for namespace, client in clients.items():
            http_client = await stack.enter_async_context(build_http_client(policies[namespace]))
            workers.append(
                build_worker(
                    client,
                    task_queue,
                    http_client,
                    session_factory=database.session_factory if database else None,
                    graceful_shutdown_timeout=grace,
                    outbound_policy=policies[namespace],
                    sql=sql,
                    deployment=deployment,
                    max_concurrent_workflow_tasks=slots_each,
                    max_cached_workflows=cached_each,
                    on_fatal_error=failed,
                )
            )
        for namespace, client in clients.items():
            tenants = scope.tenants_of(namespace)
            log.info(
                "worker polling %s on %s (namespace %s, tenants %s, deployment %s, workflow task slots %d,"
                " cached runs %d%s)",
                task_queue,
                client.service_client.config.target_host,
                namespace,
                "any" if tenants is None else ", ".join(tenants),
                "none" if deployment is None else f"{deployment.deployment_name}@{deployment.build_id}",
                slots_each,
                cached_each,
                ""
                if len(clients) == 1
                else f"; the process's {workflow_slots} and {cached_runs} shared by {len(clients)} namespaces",
            )
        sampler = (
            GaugeSampler(runtime.metric_meter, list(clients.values()), task_queue, sample_limit)
            if runtime is not None
            else None
        )
        await stack.enter_async_context(sampling(sampler, sample_interval))
        code = await run_workers(workers, stop, grace, failures)
    if database is not None:
        await database.close()
    if tracing:
        await asyncio.to_thread(shutdown_tracing)
    if code == 0:
        log.info("worker stopped")
    else:
        log.info("worker stopped after a failure (exit %d)", code)
    return code


def _causes(err: BaseException) -> str:
    """The error and its causes, outermost first ("Workflow worker failed: Poll failure: ... worker
    deployment name cannot contain '.'"): the SDK's own message names only the worker."""
    parts: list[str] = []
    found: BaseException | None = err
    while found is not None and len(parts) < 5:
        parts.append(str(found)[:500] or type(found).__name__)
        found = found.__cause__
    return ": ".join(parts)


SHUTDOWN_MARGIN_S = 10.0
"""How long past the grace period the workers may take to stop before the process exits anyway."""


async def run_workers(
    workers: Sequence[Worker], stop: asyncio.Event, grace: timedelta, failures: Sequence[BaseException]
) -> int:
    """Runs the workers until ``stop`` is set (SIGTERM/SIGINT, or a worker's fatal error, which
    :func:`build_worker`'s ``on_fatal_error`` appends to ``failures``), then stops them.

    Returns:
        The process's exit code: 0, or 1 when a worker failed (the server refused its polls) or
        the workers did not stop within ``grace`` and :data:`SHUTDOWN_MARGIN_S`. A worker whose
        polls failed may never finish its own shutdown (the SDK waits for its poller loops), so
        the wait is bounded: the process exits instead of staying up without polling.
    """
    runs = [asyncio.create_task(worker.run()) for worker in workers]
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({*runs, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopping = [
        asyncio.create_task(worker.shutdown())
        for worker, run in zip(workers, runs, strict=True)
        if not run.done()
    ]
    if stopping:
        log.info("shutting down: finishing in-flight activities (up to %s)", grace)
    done, pending = await asyncio.wait({*runs, *stopping}, timeout=grace.total_seconds() + SHUTDOWN_MARGIN_S)
    stopped.cancel()
    for task in pending:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: not logged again
    errors: list[BaseException] = [*failures]
    errors += [e for t in done if not t.cancelled() and (e := t.exception()) is not None]
    if errors:
        log.error("worker failed: %s", _causes(errors[0]))
    if pending:
        log.error(
            "the worker did not stop within %s and the %.0f s margin: exiting", grace, SHUTDOWN_MARGIN_S
        )
    return 1 if errors or pending else 0


def run_to_exit() -> int:
    """Runs :func:`main` and returns its exit code without waiting for the tasks it left behind
    (``asyncio.run`` would cancel them and wait: an activity that ignores its cancellation would
    keep the process up past the grace period :func:`run_workers` bounds)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(main())


if __name__ == "__main__":
    code = run_to_exit()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: the SDK's native runtime threads can abort it (SIGABRT,
    # temporalio/sdk-python#300), which would turn a clean exit code into -6.
    os._exit(code)
