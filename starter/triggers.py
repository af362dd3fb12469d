"""The live triggers: those of each definition's active version, read from the registry.

There is no separate state to drift: a trigger is live exactly while a version declaring it is the
active one of its name. The gateway (webhooks, row changes) and event delivery ask here which
triggers are live; schedules are also written to Temporal (:mod:`starter.schedules`).

::

    for live in await live_triggers(flows, "webhook", "order-fulfilment"):
        ...  # live.trigger is a WebhookTrigger; start with flows.start_run(live.ref, data)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from interpreter.model import EventTrigger, RowChangeTrigger, ScheduleTrigger, WebhookTrigger

if TYPE_CHECKING:
    from activities.store.repository import DefinitionStore, ResolvedDefinition, SessionFactory
    from starter.client import FlowClient

__all__ = [
    "TRIGGER_KINDS",
    "LiveTrigger",
    "live_triggers",
    "live_triggers_in",
    "live_triggers_of_every_tenant",
]

AnyTrigger = ScheduleTrigger | WebhookTrigger | EventTrigger | RowChangeTrigger

TRIGGER_KINDS = ("schedule", "webhook", "event", "row_change")


@dataclass(frozen=True)
class LiveTrigger:
    """A trigger of an active version.

    Attributes:
        tenant: Whose definition it is.
        definition: The definition name.
        version: The active version that declares it.
        content_hash: That version's content hash.
        trigger: The trigger as declared (``trigger.type`` is its kind, ``trigger.id`` its id).
        resolved: The active version itself (its parsed definition), to check input against
            (:func:`interpreter.input_schema.input_problems`) and start from.
    """

    tenant: str
    definition: str
    version: int
    content_hash: str
    trigger: AnyTrigger
    resolved: ResolvedDefinition

    @property
    def ref(self) -> str:
        """``name@version``: start runs with it to pin them to the version that declared the trigger."""
        return f"{self.definition}@{self.version}"


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in TRIGGER_KINDS:
        raise ValueError(f"unknown trigger kind {kind!r} (known: {', '.join(TRIGGER_KINDS)})")


def _lives(tenant: str, resolved: ResolvedDefinition, kind: str | None) -> list[LiveTrigger]:
    return [
        LiveTrigger(
            tenant=tenant,
            definition=resolved.name,
            version=resolved.version,
            content_hash=resolved.content_hash,
            trigger=trigger,
            resolved=resolved,
        )
        for trigger in resolved.definition.triggers
        if kind is None or trigger.type == kind
    ]


async def live_triggers_of_every_tenant(
    session_factory: SessionFactory, kind: str | None = None, definition: str | None = None
) -> list[LiveTrigger]:
    """The live triggers of every tenant the store's login may see (a platform login: all), sorted
    by tenant and definition: for a service that serves every tenant, such as a row-change
    listener. Pass the session factory of :class:`activities.store.database.Database`.

    Raises:
        ValueError: ``kind`` is not a trigger kind.
    """
    from activities.store.repository import active_definitions_of_every_tenant

    _check_kind(kind)
    found: list[LiveTrigger] = []
    for tenant, resolved in await active_definitions_of_every_tenant(session_factory, definition):
        found.extend(_lives(tenant, resolved, kind))
    return found


async def live_triggers_in(
    store: DefinitionStore, kind: str | None = None, definition: str | None = None
) -> list[LiveTrigger]:
    """:func:`live_triggers` on a tenant's registry directly (no Temporal client needed).

    Raises:
        ValueError: ``kind`` is not one of :data:`TRIGGER_KINDS`.
    """
    _check_kind(kind)
    found: list[LiveTrigger] = []
    for resolved in await store.active_definitions(definition):
        found.extend(_lives(store.tenant, resolved, kind))
    return found


async def live_triggers(
    client: FlowClient, kind: str | None = None, definition: str | None = None
) -> list[LiveTrigger]:
    """The live triggers of the client's tenant: those its active versions declare, sorted by
    definition name then declaration order.

    Args:
        client: Its tenant's registry is read.
        kind: Only ``schedule``, ``webhook``, ``event`` or ``row_change`` triggers.
        definition: Only this definition's.

    Raises:
        ValueError: ``kind`` is not a trigger kind.
        DatabaseUnavailableError: The store cannot be reached.
    """
    return await live_triggers_in(await client.definitions(), kind, definition)
