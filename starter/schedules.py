"""Schedule triggers as Temporal Schedules: written from the registry's active versions.

A definition's ``schedule`` triggers are live while its version is active. :func:`sync_schedules`
brings Temporal in line with the registry for one name: it creates or updates one Temporal
Schedule per schedule trigger of the active version and deletes the schedules of every trigger id
that any other version of the name declared. It is idempotent, so it is also the repair: the client
runs it after every activate, rollback, archive and activating register, and ``wfa schedules sync``
runs it on demand (for instance after Temporal was unreachable during an activation).

Each schedule's action starts the generic workflow exactly as :meth:`FlowClient.start_run` does
(:meth:`FlowClient.run_start`: the same input, search attributes, summary and memo), with the
definition of the version active when the schedule was written: each fire is pinned to it. The
schedule itself carries the ``Tenant``, ``DefinitionName``, ``DefinitionVersion`` and
``DefinitionHash`` search attributes, so ``temporal schedule list`` and the Web UI's Schedules page
show what it runs.

Schedule ids are ``<definition>:<trigger id>@<tenant>`` (unambiguous: neither a definition name
nor a trigger id holds ``:`` or ``@``, and a tenant holds no ``@``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import ListScheduleMatchingTimesRequest
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from interpreter.durations import parse_duration
from interpreter.model import OverlapPolicy, ScheduleTrigger
from interpreter.state import RunInput
from starter.errors import InvalidInputError, ScheduleNotFoundError, ServerUnavailableError
from workflows.search_attributes import DEFINITION_HASH, DEFINITION_NAME, DEFINITION_VERSION, TENANT

if TYPE_CHECKING:
    from activities.store.repository import DefinitionStore, ResolvedDefinition
    from starter.client import FlowClient

__all__ = [
    "ScheduleInfo",
    "SyncResult",
    "backfill_schedule",
    "list_schedules",
    "pause_schedule",
    "schedule_id",
    "sync_all_schedules",
    "sync_schedules",
    "trigger_schedule",
    "unpause_schedule",
]

_OVERLAP = {policy: ScheduleOverlapPolicy[policy.name] for policy in OverlapPolicy}


def schedule_id(tenant: str, definition: str, trigger_id: str) -> str:
    """The Temporal Schedule id of a schedule trigger: ``<definition>:<trigger id>@<tenant>``."""
    return f"{definition}:{trigger_id}@{tenant}"


def _workflow_id_prefix(tenant: str, definition: str, trigger_id: str) -> str:
    """The id of a schedule's runs, before the time Temporal appends (``...-2026-12-01T18:00:00Z``):
    the parts to be read, and a digest of all three that tells the schedules apart. Before,
    ``{definition}-{trigger}-{tenant}`` joined parts that may hold ``-``: definition ``a-b``'s
    trigger ``c`` and definition ``a``'s trigger ``b-c``, in one tenant or two sharing a namespace,
    fired runs of one id, and one schedule's fires were lost (``already running``, said to nobody:
    an attacker's probe)."""
    from interpreter.events import parts_digest

    return f"{definition}-{trigger_id}-{tenant}-{parts_digest(tenant, definition, trigger_id)}"


def _catchup_window(trigger: ScheduleTrigger) -> timedelta:
    """The trigger's catch-up window as Temporal keeps it: at least 10 s (a shorter one, which
    definitions registered before the rule may hold, was stored as 10 s, and the schedule read
    as OUT OF SYNC for ever)."""
    from interpreter.validate import MIN_CATCHUP_WINDOW

    return max(parse_duration(trigger.catchup_window), MIN_CATCHUP_WINDOW)


class SyncResult(BaseModel):
    """What :func:`sync_schedules` did for one name (schedule ids)."""

    name: str
    version: int | None
    written: list[str] = []
    deleted: list[str] = []


class ScheduleInfo(BaseModel):
    """A schedule trigger of an active version and its Temporal Schedule.

    Attributes:
        id: The schedule id.
        definition: The definition name.
        trigger: The trigger id.
        active_version: The version active in the registry.
        version: The version the schedule starts (None: no schedule exists).
        in_sync: The schedule exists and starts the active version with its trigger as declared,
            at the interpreter generation this client starts runs at (``WFA_ENGINE_LEVEL``).
        spec: ``every 5m`` or ``cron */5 * * * *``, with the time zone.
        paused: Paused by an operator (``wfa schedules pause``).
        note: The schedule's note (why it was paused).
        next_fires: The next few fire times.
        recent_runs: Workflow ids of the most recent runs it started, newest last.
        actions: How many runs it started.
        generation: The interpreter generation its runs start at (``RunOptions.engine_level``;
            None when its action cannot be read here, e.g. encrypted with a key this client lacks).
    """

    id: str
    definition: str
    trigger: str
    active_version: int
    version: int | None
    in_sync: bool
    spec: str
    paused: bool = False
    note: str = ""
    next_fires: list[datetime] = []
    recent_runs: list[str] = []
    actions: int = 0
    generation: int | None = None


def _spec_text(trigger: ScheduleTrigger) -> str:
    what = f"every {trigger.every}" if trigger.every is not None else f"cron {trigger.cron}"
    return f"{what} ({trigger.timezone})"


def _spec(trigger: ScheduleTrigger) -> ScheduleSpec:
    jitter = parse_duration(trigger.jitter) if trigger.jitter is not None else None
    if trigger.every is not None:
        return ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=parse_duration(trigger.every))],
            time_zone_name=trigger.timezone,
            jitter=jitter,
        )
    assert trigger.cron is not None  # the model requires one of the two
    return ScheduleSpec(cron_expressions=[trigger.cron], time_zone_name=trigger.timezone, jitter=jitter)


def _attributes(flows: FlowClient, resolved: ResolvedDefinition) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(TENANT, flows.tenant),
            SearchAttributePair(DEFINITION_NAME, resolved.name),
            SearchAttributePair(DEFINITION_VERSION, resolved.version),
            SearchAttributePair(DEFINITION_HASH, resolved.content_hash),
        ]
    )


def _schedule(
    flows: FlowClient, resolved: ResolvedDefinition, trigger: ScheduleTrigger, state: ScheduleState | None
) -> Schedule:
    definition = resolved.definition
    start = flows.run_start(definition, resolved.content_hash, "schedule", dict(trigger.input))
    start.memo["trigger"] = trigger.id
    action = ScheduleActionStartWorkflow(
        start.workflow_type,
        start.input,
        id=_workflow_id_prefix(flows.tenant, resolved.name, trigger.id),
        task_queue=flows.task_queue,
        typed_search_attributes=start.search_attributes,
        static_summary=f"{start.static_summary} (schedule {trigger.id})",
        static_details=start.static_details,
        memo=start.memo,
        priority=start.priority,
    )
    note = f"{resolved.name} v{resolved.version}, trigger {trigger.id!r}; written by wfa from the registry"
    return Schedule(
        action=action,
        spec=_spec(trigger),
        policy=SchedulePolicy(overlap=_OVERLAP[trigger.overlap], catchup_window=_catchup_window(trigger)),
        # An operator's pause survives a new version: the schedule is updated, not recreated.
        state=state if state is not None and state.paused else ScheduleState(note=note),
    )


def _updater(
    flows: FlowClient,
    resolved: ResolvedDefinition,
    trigger: ScheduleTrigger,
    attributes: TypedSearchAttributes,
) -> Any:
    def updater(update: ScheduleUpdateInput) -> ScheduleUpdate:
        old = update.description.schedule.state
        return ScheduleUpdate(schedule=_schedule(flows, resolved, trigger, old), search_attributes=attributes)

    return updater


def _unavailable(flows: FlowClient, err: RPCError, doing: str) -> Exception:
    if err.status == RPCStatusCode.INVALID_ARGUMENT:
        return InvalidInputError(f"Temporal refused to {doing}: {err.message}")
    return ServerUnavailableError(
        f"cannot {doing} on the Temporal server at {flows.address}: {err.message}", flows.address
    )


async def sync_schedules(flows: FlowClient, name: str) -> SyncResult:
    """Brings the Temporal Schedules of ``name`` in line with its active version (idempotent).

    Creates or updates the schedule of each ``schedule`` trigger of the active version (an
    operator's pause is kept) and deletes the schedules of trigger ids that only other versions
    declare. Touches Temporal only when some version of the name declares a schedule.

    Raises:
        ServerUnavailableError: Temporal could not be reached (nothing is lost: sync again).
        InvalidRunInputError: A trigger's input does not match the definition's input_schema
            (nothing is written).
        InputCheckUnavailableError: A trigger's input could not be checked now (nothing is written).
    """
    store = await flows.definitions()
    if not await store.trigger_ids(name, "schedule"):
        active = await store.active_definitions(name)
        return SyncResult(name=name, version=active[0].version if active else None)
    async with store.sync_lock(name):
        return await _sync_locked(flows, store, name)


async def _sync_locked(flows: FlowClient, store: DefinitionStore, name: str) -> SyncResult:
    candidates = await store.trigger_ids(name, "schedule")
    active = await store.active_definitions(name)
    resolved = active[0] if active else None
    result = SyncResult(name=name, version=resolved.version if resolved else None)
    desired = {
        trigger.id: trigger
        for trigger in (resolved.definition.triggers if resolved else [])
        if isinstance(trigger, ScheduleTrigger)
    }
    if resolved is not None:
        from starter.client import check_run_input

        for trigger in desired.values():
            await check_run_input(resolved.definition, trigger.input, tenant=flows.tenant)
    client = flows.client
    try:
        for trigger_id in candidates:
            if trigger_id in desired:
                continue
            sid = schedule_id(flows.tenant, name, trigger_id)
            try:
                await client.get_schedule_handle(sid).delete()
                result.deleted.append(sid)
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
        for trigger_id, trigger in sorted(desired.items()):
            assert resolved is not None
            sid = schedule_id(flows.tenant, name, trigger_id)
            attributes = _attributes(flows, resolved)
            try:
                await client.create_schedule(
                    sid,
                    _schedule(flows, resolved, trigger, None),
                    search_attributes=attributes,
                    memo={"tenant": flows.tenant, "definition": name, "trigger": trigger_id},
                )
            except ScheduleAlreadyRunningError:
                await client.get_schedule_handle(sid).update(_updater(flows, resolved, trigger, attributes))
            result.written.append(sid)
    except RPCError as err:
        raise _unavailable(flows, err, f"write the schedules of {name!r}") from None
    except RuntimeError as err:  # the SDK's connection errors
        raise ServerUnavailableError(
            f"cannot write the schedules of {name!r} on the Temporal server at {flows.address}: {err}",
            flows.address,
        ) from None
    return result


async def sync_all_schedules(flows: FlowClient) -> list[SyncResult]:
    """:func:`sync_schedules` for every name of the tenant."""
    store = await flows.definitions()
    return [await sync_schedules(flows, summary.name) for summary in await store.list_names()]


async def list_schedules(flows: FlowClient, definition: str | None = None) -> list[ScheduleInfo]:
    """The schedule triggers of the tenant's active versions with their Temporal Schedules,
    sorted by id (read from the registry and described one by one: no visibility lag).

    Raises:
        ServerUnavailableError: Temporal could not be reached.
        DefinitionNotFoundError: ``definition`` names no definition of the tenant (it listed "no
            schedule triggers", exit 0, where ``sync`` of the same name is exit 4: a probe).
    """
    from starter.triggers import live_triggers

    if definition is not None:
        await (await flows.definitions()).history(definition)  # DefinitionNotFoundError when unknown
    found: list[ScheduleInfo] = []
    for live in await live_triggers(flows, "schedule", definition):
        trigger = live.trigger
        assert isinstance(trigger, ScheduleTrigger)
        sid = schedule_id(flows.tenant, live.definition, trigger.id)
        info = ScheduleInfo(
            id=sid,
            definition=live.definition,
            trigger=trigger.id,
            active_version=live.version,
            version=None,
            in_sync=False,
            spec=_spec_text(trigger),
        )
        try:
            description = await flows.client.get_schedule_handle(sid).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise _unavailable(flows, err, "describe the schedules") from None
            found.append(info)
            continue
        version = description.typed_search_attributes.get(DEFINITION_VERSION)
        digest = description.typed_search_attributes.get(DEFINITION_HASH)
        info.version = version
        info.generation = await _generation(flows, description)
        info.in_sync = (
            version == live.version
            and digest == live.content_hash
            and _same(description, flows, live.resolved, trigger)
            and info.generation in (None, flows.engine_level)
        )
        info.paused = description.schedule.state.paused
        info.note = description.schedule.state.note or ""
        info.next_fires = list(description.info.next_action_times[:3])
        info.recent_runs = [
            str(getattr(action.action, "workflow_id", "")) for action in description.info.recent_actions
        ]
        info.actions = description.info.num_actions
        found.append(info)
    return sorted(found, key=lambda item: item.id)


async def _generation(flows: FlowClient, description: ScheduleDescription) -> int | None:
    """The interpreter generation the schedule's action starts runs at (decoded from its input with
    the client's converter and codec), None when it cannot be read here."""
    action = description.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or len(action.args) != 1:
        return None
    payload = action.args[0]
    if not isinstance(payload, Payload):
        return None
    try:
        [run_input] = await flows.client.data_converter.decode([payload], [RunInput])
    except (ValueError, TypeError, KeyError, RuntimeError):
        return None
    return run_input.options.engine_level if isinstance(run_input, RunInput) else None


def _same(
    description: ScheduleDescription,
    flows: FlowClient,
    resolved: ResolvedDefinition,
    trigger: ScheduleTrigger,
) -> bool:
    """Whether a schedule's spec and policy are what the trigger declares, and its runs' ids (its
    action is otherwise checked through the version and hash search attributes). A schedule
    written before run ids carried a digest reads as out of sync until ``wfa schedules sync``."""
    schedule = description.schedule
    wanted = _spec(trigger)
    spec = schedule.spec
    action = schedule.action
    return (
        isinstance(action, ScheduleActionStartWorkflow)
        and action.id == _workflow_id_prefix(flows.tenant, resolved.name, trigger.id)
        and schedule.policy.overlap == _OVERLAP[trigger.overlap]
        and schedule.policy.catchup_window == _catchup_window(trigger)
        and [i.every for i in spec.intervals] == [i.every for i in wanted.intervals]
        and (spec.time_zone_name or "UTC") == (wanted.time_zone_name or "UTC")
        and (spec.jitter or timedelta(0)) == (wanted.jitter or timedelta(0))
        and (not wanted.cron_expressions or bool(spec.calendars or spec.cron_expressions))
    )


async def _own(flows: FlowClient, ref: str) -> str:
    """The schedule id of ``ref`` (``definition``, ``definition:trigger`` or a full id), among the
    tenant's live schedule triggers.

    Raises:
        ScheduleNotFoundError: No such live schedule trigger in the tenant.
        InvalidInputError: ``definition`` alone when it has several schedule triggers.
    """
    from starter.triggers import live_triggers

    if not isinstance(ref, str) or not 0 < len(ref) <= 300:
        raise InvalidInputError("a schedule is named by DEFINITION, DEFINITION:TRIGGER or its id")
    text, _, tenant = ref.partition("@")
    if tenant and tenant != flows.tenant:
        raise ScheduleNotFoundError(ref)
    definition, _, trigger_id = text.partition(":")
    try:
        lives = await live_triggers(flows, "schedule", definition)
    except InvalidInputError:
        raise ScheduleNotFoundError(ref) from None
    ids = [schedule_id(flows.tenant, live.definition, live.trigger.id) for live in lives]
    if trigger_id:
        wanted = schedule_id(flows.tenant, definition, trigger_id)
        if wanted in ids:
            return wanted
        raise ScheduleNotFoundError(ref)
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise ScheduleNotFoundError(ref)
    raise InvalidInputError(f"{definition!r} has several schedules ({', '.join(ids)}): name one")


async def _act(flows: FlowClient, ref: str, doing: str, action: Any) -> str:
    sid = await _own(flows, ref)
    try:
        await action(flows.client.get_schedule_handle(sid))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ScheduleNotFoundError(
                f"{sid} (declared by the active version but not written: wfa schedules sync)"
            ) from None
        raise _unavailable(flows, err, doing) from None
    return sid


async def pause_schedule(flows: FlowClient, ref: str, note: str = "") -> str:
    """Pauses a schedule (no fires until unpaused; a new active version keeps it paused)."""
    return await _act(flows, ref, "pause the schedule", lambda h: h.pause(note=note or "paused with wfa"))


async def unpause_schedule(flows: FlowClient, ref: str, note: str = "") -> str:
    """Unpauses a schedule."""
    return await _act(
        flows, ref, "unpause the schedule", lambda h: h.unpause(note=note or "unpaused with wfa")
    )


async def trigger_schedule(flows: FlowClient, ref: str) -> str:
    """Starts one run now, as a fire would (the schedule's overlap policy applies)."""
    return await _act(flows, ref, "trigger the schedule", lambda h: h.trigger())


async def backfill_schedule(
    flows: FlowClient, ref: str, start: datetime, end: datetime, overlap: OverlapPolicy | None = None
) -> str:
    """Runs the fires a schedule would have made between ``start`` (exclusive) and ``end``, now.

    Raises:
        InvalidInputError: ``start`` is not before ``end``, or a time has no time zone.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInputError("backfill times need a time zone (e.g. 2026-12-01T09:00:00Z)")
    if start >= end:
        raise InvalidInputError("backfill: the start must be before the end")
    if start < _EPOCH:  # Temporal starts there and said it backfilled from the year 1
        raise InvalidInputError(f"backfill: the start must be 1970-01-01 or later, not {start.isoformat()}")
    backfill = ScheduleBackfill(start_at=start, end_at=end, overlap=_OVERLAP[overlap] if overlap else None)

    async def bounded(handle: ScheduleHandle) -> None:
        # Fires run at once, paused or not, and nothing stops a backfill once given: a range of
        # millions of fires went on starting runs long after (found by a probe).
        request = ListScheduleMatchingTimesRequest(
            namespace=flows.client.namespace,
            schedule_id=handle.id,
            start_time=_timestamp(start),
            end_time=_timestamp(end),
        )
        fires = len((await flows.client.workflow_service.list_schedule_matching_times(request)).start_time)
        if fires > MAX_BACKFILL_FIRES:
            raise InvalidInputError(
                f"backfill: {start.isoformat()} to {end.isoformat()} holds {fires:,}"
                f"{' or more' if fires >= _MATCHING_TIMES_CAP else ''} fires of {handle.id}, more than"
                f" {MAX_BACKFILL_FIRES} at once: backfill shorter ranges"
            )
        await handle.backfill(backfill)

    return await _act(flows, ref, "backfill the schedule", bounded)


MAX_BACKFILL_FIRES = 500
"""The most runs one backfill may start (each at once, whatever the schedule's pause)."""

_MATCHING_TIMES_CAP = 1000
"""The most times Temporal's server lists for a range (``ListScheduleMatchingTimes``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def describe_sync(results: Sequence[SyncResult]) -> list[str]:
    """One line per schedule written or deleted (what the CLI prints)."""
    lines: list[str] = []
    for result in results:
        lines.extend(f"schedule {sid} starts {result.name} v{result.version}" for sid in result.written)
        lines.extend(f"schedule {sid} deleted" for sid in result.deleted)
    return lines
