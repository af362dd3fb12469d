"""Business events: what is published, how it is addressed, and how runs subscribe to it.

An event has a type (``family.answered``), a correlation key (the family's id), an id (unique per
publisher: publishing the same id again delivers nothing new) and data (inert, bounded). Events of
one tenant, type and key meet the runs waiting for them in one *event mailbox* workflow
(:mod:`workflows.mailbox`) whose workflow id is :func:`mailbox_id`. Everything here is pure and
deterministic: the generic workflow, the mailbox, the activities and the client share it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from interpreter.model import EVENT_TYPE_PATTERN

MAILBOX_WORKFLOW = "EventMailbox"
"""Workflow type of the event mailbox."""
EVENT_SIGNAL = "event"
"""Signal by which a mailbox hands an event to a subscribed run."""
SUBSCRIBE_ACTIVITY = "event_subscribe"
"""Activity a run calls to subscribe to a mailbox (Update-With-Start: the mailbox may not exist yet)."""
PUBLISH_UPDATE = "publish"
DELIVER_UPDATE = "deliver"
"""Update by which a publisher hands an event it published at a mailbox's id to the same address's
legacy mailbox (:func:`legacy_mailbox_id`), for the waits subscribed there: signalled, its id
remembered, not kept for lookbacks (the mailbox at the new id keeps it)."""
SUBSCRIBE_UPDATE = "subscribe"
UNSUBSCRIBE_SIGNAL = "unsubscribe"

MAX_EVENT_ID_CHARS = 200
MAX_EVENT_KEY_CHARS = 1000
MAX_EVENT_DATA_BYTES = 64 * 1024
"""Largest event data (as JSON): it is kept in the mailbox and lands in a step's output."""
MAX_BUFFERED_EVENTS = 100
"""Events a mailbox keeps for late waiters; older ones are dropped first."""
MAX_BUFFERED_BYTES = 512 * 1024
"""Most bytes (as the worker writes them) of the events a mailbox keeps; older ones are dropped
first, the newest always kept. A ``subscribe`` answer holds at most this (it lands in the run's
history as an activity's result, as an action's output would), and the state a mailbox carries
when it continues as new stays well under Temporal's 2 MiB. Before (found by an attacker's probe),
70 events of 60 KB (each within :data:`MAX_EVENT_DATA_BYTES`) made that state 4 MB: the mailbox's
workflow task failed at every attempt, and no event of its key could be published or waited for
until they aged out; 40 of them made a lookback's answer 2.4 MB, with the same effect."""
PATCH_MAILBOX_BYTES = "mailbox-bytes"
"""Patch id (the mailbox's ``workflow.patched``): events dropped past :data:`MAX_BUFFERED_BYTES`,
asked where one would be dropped, so a mailbox's history recorded before replays as it was."""
PATCH_MAILBOX_CARRY = "mailbox-bytes-carry"
"""Patch id: the same bound where the mailbox continues as new, asked apart (the SDK keeps a
patch's first answer for the rest of a run): a mailbox that took its events before the bound, and
whose continue-as-new failed for their size, carries only what fits when a new build takes it."""
MAX_SUBSCRIBERS = 1000
"""Runs (waits) one mailbox serves at once; a subscription beyond is refused (the step fails)."""
MAX_SUBSCRIPTION_BYTES = 640 * 1024
"""Most bytes (as the worker writes them) of the waits one mailbox serves; a subscription beyond is
refused (the step fails, ``EventSubscribeFailed``). The mailbox carries them when it continues as
new, beside its events (:data:`MAX_BUFFERED_BYTES`) and remembered ids
(:data:`MAX_REMEMBERED_ID_BYTES`), within Temporal's 2 MiB. Before (found by a review), 1,000
waits with 1,000-character keys of control characters took that state past 6 MB, and the mailbox's
workflow task failed at every attempt."""
MAX_REMEMBERED_IDS = 1000
"""Event ids a mailbox remembers to refuse a republished event, besides the buffered ones."""
MAX_REMEMBERED_ID_BYTES = 256 * 1024
"""Most bytes (as written) of the remembered ids a mailbox carries on continuing as new: the
oldest not buffered are forgotten first (:data:`PATCH_MAILBOX_SEEN_BYTES`). 1,100 ids of 200
control characters are 1.3 MB as JSON."""
PATCH_MAILBOX_SEEN_BYTES = "mailbox-seen-bytes"
"""Patch id: the remembered ids past :data:`MAX_REMEMBERED_ID_BYTES` are forgotten where the mailbox
continues as new (asked only where one would be), so a mailbox whose continue-as-new failed for
their size carries what fits when a new build takes it."""
EVENT_CLOCK_SKEW_S = 5.0
"""Tolerance between the mailbox's clock (which stamps ``published_at``) and the run's (which
starts the wait): a signalled event stamped up to this long before the wait's lookback window is
still taken, so an event published just after the subscription is never lost to clock skew."""


def _instant(value: datetime) -> datetime:
    """A time the mailbox and runs compare with their clocks and add lookbacks and tolerances to:
    with a zone (a naive one raised TypeError in the comparison, failing the workflow task on
    every retry) and between the years 1900 and 9000 (near the calendar's ends, the arithmetic
    overflowed the same way). Only a raw client sends others: the product's come from a clock."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError("a time must have a time zone (e.g. ending in Z or +00:00)")
    if not 1900 <= value.year <= 9000:
        raise ValueError("a time must be between the years 1900 and 9000")
    return value


Instant = Annotated[datetime, AfterValidator(_instant)]
"""A :class:`datetime` with a zone, in the years 1900-9000 (:func:`_instant`)."""


class Event(BaseModel):
    """One published event, as a mailbox keeps it and hands it to runs.

    Attributes:
        id: Unique per event: publishing the same id again is a duplicate (nothing is delivered
            or started again).
        type: The event type (same pattern as in definitions).
        key: The correlation key a wait renders from its ``key`` template.
        tenant: Whose event it is; a run of another tenant refuses it.
        data: The event's data: inert (never a template nor a secret reference).
        published_at: When the mailbox accepted it (its clock); set by the mailbox.
        source: Who published it (``cli``, ``gateway:<key id>``, ...), recorded.
    """

    id: str = Field(min_length=1, max_length=MAX_EVENT_ID_CHARS)
    type: str = Field(pattern=EVENT_TYPE_PATTERN)
    key: str = Field(min_length=1, max_length=MAX_EVENT_KEY_CHARS)
    tenant: str = Field(min_length=1, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)
    published_at: datetime | None = None
    """Not an :data:`Instant` here: a run handed an event signal with such a time refuses it itself
    (``Engine.deliver_event``, in words) or, at the calendar's ends, compares it harmlessly, and
    runs recorded before took it that way (a ``cancel_on`` match cancelled). The mailbox's own
    state requires an :data:`Instant` (:class:`MailboxState`); it stamps what it is published."""
    source: str = Field(default="", max_length=200)


MAX_PATH_CHARS = 8000
"""Longest step path a subscription names: a valid definition's paths stay well under it (at most
``limits.max_depth`` 20 levels of a 64-character id and an item index, inside a compensation or
escalation), and may pass Temporal's 1,000-byte id limit, which only the ids made from them meet
(:func:`interpreter.sizes.temporal_id`)."""


class EventSubscription(BaseModel):
    """A run's subscription to a mailbox: what a wait (or a ``cancel_on``) listens for.

    Attributes:
        workflow_id: The subscribing run, signalled with each new event.
        path: The waiting step's path (``cancel_on[0]`` for a cancel_on entry); with the workflow
            id it names the subscription.
        since: Buffered events published at or after this time are returned at once (the wait's
            start minus its lookback).
        until: The subscription lapses at this time (the wait's deadline); None: until the run
            unsubscribes or can no longer be signalled.
    """

    tenant: str = Field(min_length=1, max_length=100)
    type: str = Field(pattern=EVENT_TYPE_PATTERN)
    key: str = Field(min_length=1, max_length=MAX_EVENT_KEY_CHARS)
    workflow_id: str = Field(min_length=1, max_length=1000)
    path: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    since: Instant
    until: Instant | None = None
    mailbox: str | None = Field(default=None, max_length=1000, exclude_if=lambda mailbox: mailbox is None)
    """The mailbox's workflow id: :func:`mailbox_id` or :func:`legacy_mailbox_id` of the tenant,
    type and key (None, not written: the legacy one, as runs before generation 23 subscribe)."""

    @model_validator(mode="after")
    def _mailbox_of_its_address(self) -> EventSubscription:
        if self.mailbox is not None and self.mailbox not in (
            mailbox_id(self.tenant, self.type, self.key),
            legacy_mailbox_id(self.tenant, self.type, self.key),
        ):
            raise ValueError("the mailbox is not the one of the subscription's tenant, type and key")
        return self

    @property
    def subscriber(self) -> str:
        """Names the subscription in its mailbox."""
        return f"{self.workflow_id}\n{self.path}"

    @property
    def mailbox_workflow(self) -> str:
        """The workflow id of the mailbox it subscribes at."""
        return self.mailbox or legacy_mailbox_id(self.tenant, self.type, self.key)


class PublishResult(BaseModel):
    """What the mailbox answers to a publication.

    Attributes:
        duplicate: The mailbox had already accepted an event with this id (nothing delivered).
        delivered_to: Workflow ids of the runs signalled with it.
        published_at: When the mailbox accepted it (the first time, for a duplicate it still holds).
    """

    event_id: str
    mailbox: str
    duplicate: bool
    delivered_to: list[str] = Field(default_factory=list)
    published_at: datetime | None = None


class MailboxState(BaseModel):
    """What a mailbox carries across continue-as-new."""

    tenant: str
    type: str
    key: str
    events: list[Event] = Field(default_factory=list)
    subscriptions: list[EventSubscription] = Field(default_factory=list)
    seen_ids: list[str] = Field(default_factory=list)

    @field_validator("events")
    @classmethod
    def _stamped(cls, events: list[Event]) -> list[Event]:
        """The mailbox compares and adds to its events' times: each is an :data:`Instant`."""
        for event in events:
            if event.published_at is not None:
                _instant(event.published_at)
        return events


def parts_digest(*parts: str | int) -> str:
    """The first 32 hex digits of the SHA-256 of ``parts`` as a compact JSON array: what tells ids
    built of parts that may hold their separator apart (a mailbox's, a webhook delivery's and a row
    change's workflow id)."""
    address = json.dumps(list(parts), separators=(",", ":"))
    return hashlib.sha256(address.encode()).hexdigest()[:32]


def mailbox_id(tenant: str, event_type: str, key: str) -> str:
    """The workflow id of the mailbox of one tenant, event type and correlation key.

    ``events-{tenant}-{type}-{digest}``, the digest of all three: the tenant and the type are there
    to be read (the Web UI, search), the digest tells the mailboxes apart. The key is only hashed:
    it may be long or hold characters a workflow id should not, and it is business data that search
    and the Web UI show in ids. Before generation 23 (:func:`legacy_mailbox_id`, ``evt-``) only the
    key was hashed, and tenants and types that hold ``-`` could name one mailbox: in a namespace
    shared by tenants, ``acme`` publishing ``corp-order.paid`` took the mailbox of ``acme-corp``'s
    ``order.paid`` on the same key first, and ``acme-corp``'s publishes and waits there were
    refused for up to 7 days (found by an attacker's probe). The prefixes differ so that no legacy
    id, whose key an attacker chooses, is one of these (a review: the key
    ``["acme-corp","order.paid","K"]`` made a legacy id equal to a new one).
    """
    return f"events-{tenant}-{event_type}-{parts_digest(tenant, event_type, key)}"


def legacy_mailbox_id(tenant: str, event_type: str, key: str) -> str:
    """The workflow id of the same mailbox as builds before generation 23 named it, and as runs
    started before that generation still do: the key's digest alone (ambiguous, see
    :func:`mailbox_id`). Publishers of this build reach the waits subscribed there too
    (``starter.events.publish_event``)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"evt-{tenant}-{event_type}-{digest}"


def oldest_past_bound(sizes: list[int]) -> int:
    """How many of the oldest events (of these ``sizes`` as written, oldest first) go for the rest
    to hold at most :data:`MAX_BUFFERED_BYTES`; the newest always stays. The mailbox's buffer and
    its ``subscribe`` answers, and the subscribe activity's merged answer, keep the rest."""
    total, past = sum(sizes), 0
    while total > MAX_BUFFERED_BYTES and past < len(sizes) - 1:
        total -= sizes[past]
        past += 1
    return past


def event_data_problem(data: Any) -> str | None:
    """Why ``data`` cannot be an event's data (not a JSON object, or too large), or None."""
    if not isinstance(data, dict):
        return f"event data must be a JSON object, got {type(data).__name__}"
    try:
        size = len(json.dumps(data, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError) as err:
        return f"event data is not JSON: {err}"
    if size > MAX_EVENT_DATA_BYTES:
        return f"event data is {size} bytes (at most {MAX_EVENT_DATA_BYTES})"
    return None
