"""The definition registry and the dead letter store, on a SQLAlchemy async session factory.

Both are scoped to one tenant: every query filters on it, so a tenant never sees (nor starts, nor
resolves) another tenant's rows; for it they simply do not exist.

Definitions are immutable versions. The registry assigns version numbers (a ``version`` in the body
is ignored) and identifies a body by its content hash: the sha256 of its canonical JSON (sorted keys,
no ``version``), so registering the same body again returns the existing version. Each name has one
active version: the first registered one, then whichever is activated; a rollback goes back to the
version that was active before the current one (repeatedly, like undo), from the activations log.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from activities.store.database import db_errors
from activities.store.errors import (
    ActiveVersionError,
    DeadLetterNotFoundError,
    DefinitionNotFoundError,
    InvalidActorError,
    InvalidReferenceError,
    InvalidTenantError,
    NoActiveVersionError,
    NothingToRollBackError,
    StoreError,
    VersionArchivedError,
    VersionNotFoundError,
)
from activities.store.models import (
    ACTOR_LENGTH,
    ActivationKind,
    ActivationRow,
    DeadLetterRow,
    DeadLetterStatus,
    DefinitionHeadRow,
    DefinitionRow,
)
from interpreter.model import Definition, parse_definition
from interpreter.sizes import text_problem
from interpreter.state import DeadLetterAction, DeadLetterRecord, DeadLetterResolution
from interpreter.validate import (
    DefinitionError,
    Problem,
    check_definition,
    definition_hash,
    load_definition,
    new_definition_problems,
    unstorable_text_problems,
)

log = logging.getLogger(__name__)

__all__ = [
    "Activation",
    "ActivationEntry",
    "DeadLetter",
    "DeadLetterStore",
    "DefinitionInfo",
    "DefinitionStore",
    "NameSummary",
    "Registration",
    "ResolvedDefinition",
    "StoredDefinition",
    "content_hash",
    "park_dead_letter",
    "parse_ref",
    "resolve_dead_letter",
    "stored_body",
]

SessionFactory = async_sessionmaker[AsyncSession]

_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.-]{0,99})(?:@(?P<version>[0-9]+))?$")
MAX_VERSION_DIGITS = 9
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")

DEFAULT_TENANT = "default"


def check_tenant(tenant: str) -> str:
    """Returns ``tenant`` if it is a valid tenant name.

    Raises:
        InvalidTenantError: Empty, over 100 characters, or other characters than ``[A-Za-z0-9_.:-]``.
    """
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidTenantError(str(tenant))
    return tenant


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Splits ``name`` or ``name@3`` into the name and the version (None: the active one).

    Raises:
        InvalidReferenceError: Anything else.
    """
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise InvalidReferenceError(str(ref))
    version = match["version"]
    if version is not None and len(version.lstrip("0")) > MAX_VERSION_DIGITS:
        raise InvalidReferenceError(ref, f"no version has more than {MAX_VERSION_DIGITS} digits")
    if version is not None and int(version) < 1:
        raise InvalidReferenceError(ref, "versions start at 1")
    return match["name"], int(version) if version is not None else None


def _name(name: object) -> str:
    """``name`` if it is text (an int reached the driver, whose words came back: a probe; text
    PostgreSQL cannot hold is the driver's :class:`UnstorableDataError`, named).

    Raises:
        InvalidReferenceError: Not a string, or empty.
    """
    if not isinstance(name, str) or not name:
        raise InvalidReferenceError(repr(name)[:100], "a definition name is non-empty text")
    return name


def looks_like_ref(text_: str) -> bool:
    """Whether a string has the shape of a registry reference (``name`` or ``name@3``)."""
    return bool(_REF.match(text_.strip()))


def stored_body(document: Definition | Mapping[str, Any] | str | bytes) -> tuple[Definition, dict[str, Any]]:
    """Validates a definition and returns it with the body the registry stores.

    The body is the document as written (a :class:`Definition` built in code: the fields that were
    set), without ``version``. A new body may not use the legacy ``trigger`` field (bodies stored
    with it still load: :func:`_parse`).

    Raises:
        DefinitionError: Listing every problem with its JSON path.
    """
    if isinstance(document, Definition):
        problems = unstorable_text_problems(document) + check_definition(document)
        if problems:
            raise DefinitionError(problems, document.name)
        definition = document
        body = document.model_dump(mode="json", by_alias=True, exclude_unset=True)
    else:
        data: Mapping[str, Any] | str | bytes = document
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except json.JSONDecodeError:
                load_definition(data)  # raises with the JSON error at "$"
                raise
        definition = load_definition(data)
        body = json.loads(json.dumps(data))  # a plain JSON copy (tuples, non-str keys, ...)
    refused = new_definition_problems(definition)
    if refused:
        raise DefinitionError(refused, definition.name)
    body.pop("version", None)
    return definition, body


def content_hash(definition: Definition) -> str:
    """The content hash the registry keys bodies by: :func:`interpreter.validate.definition_hash`
    (canonical JSON with defaults filled in, without ``version``), the same hash a run started from
    a file carries."""
    return definition_hash(definition)


def lock_key(kind: str, name: str) -> str:
    """The ``store_locks`` key of what ``kind`` serialises for ``name``: the name's SHA-256, so any
    name fits the column."""
    return f"{kind}/{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()}"


async def lock_row(session: AsyncSession, tenant: str, key: str) -> None:
    """Locks the ``store_locks`` row of ``(tenant, key)`` until the session's transaction ends,
    inserting it first when it is not there. Row-level security keeps another tenant's login from
    seeing, inserting or locking it (migration 0007); an advisory lock, which this replaces, any
    login could take by its key and hold for good."""
    params = {"tenant": tenant, "key": key}
    await session.execute(
        text("INSERT INTO store_locks (tenant, key) VALUES (:tenant, :key) ON CONFLICT DO NOTHING"), params
    )
    await session.execute(
        text("SELECT 1 FROM store_locks WHERE tenant = :tenant AND key = :key FOR UPDATE"), params
    )


def pretty(body: Mapping[str, Any]) -> str:
    """The body as indented JSON with sorted keys (what ``show`` prints and ``diff`` compares)."""
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------------------ results


class DefinitionInfo(BaseModel):
    """One stored version (without its body)."""

    tenant: str
    name: str
    version: int
    content_hash: str
    author: str
    created_at: datetime
    archived_at: datetime | None = None
    active: bool = False

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


class StoredDefinition(DefinitionInfo):
    """One stored version with its body (as registered, without ``version``)."""

    body: dict[str, Any]

    def definition(self) -> Definition:
        """The parsed definition, with ``version`` set to the registry's version."""
        return _parse(self.name, self.version, self.content_hash, self.body)


class ResolvedDefinition(BaseModel):
    """What a run is started from: the definition (``version`` = the registry's) and its identity."""

    definition: Definition
    name: str
    version: int
    content_hash: str


class NameSummary(BaseModel):
    """One definition name: its active version and how many versions it has."""

    name: str
    active_version: int | None
    latest_version: int
    versions: int
    archived: int
    updated_by: str
    updated_at: datetime


class Registration(BaseModel):
    """The answer of :meth:`DefinitionStore.register`.

    Attributes:
        created: False when the same body was already registered (that version is returned).
        activated: Whether this call made the version active.
        active_version: The name's active version after the call (None: deactivated).
    """

    info: DefinitionInfo
    created: bool
    activated: bool
    active_version: int | None


class Activation(BaseModel):
    """The answer of activate and rollback.

    Attributes:
        previous: The version that was active before (None: the name was deactivated).
        changed: False when the version was already active.
    """

    name: str
    version: int
    previous: int | None
    changed: bool
    skipped_archived: list[int] = []


class ActivationEntry(BaseModel):
    """One entry of a name's audit log."""

    name: str
    version: int
    kind: ActivationKind
    actor: str
    at: datetime


class DeadLetter(DeadLetterRecord):
    """A dead letter row: the parked step as the run recorded it, and the decision taken on it."""

    id: int
    status: DeadLetterStatus
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    resolution: dict[str, Any] | None = None


# ------------------------------------------------------------------------------- parsed definitions

_PARSED: OrderedDict[tuple[str, int], tuple[str, Definition]] = OrderedDict()
_PARSED_MAX = 1024
"""Parsed definitions kept (about 20 KiB each for a definition like examples/intervention.json),
by content hash and version, each with the stored body it was parsed from (as canonical JSON:
Python's ``==`` takes ``1``, ``1.0`` and ``true`` for one another, JSON text does not)."""

_CHECKED: set[str] = set()
"""Content hashes of bodies that passed the whole-tree checks in this process (a few bytes each):
hashes computed here, never a row's ``content_hash`` taken on trust."""


def _parse(name: str, version: int, digest: str, body: Mapping[str, Any]) -> Definition:
    """The parsed definition of a stored body, validated as on registration.

    Versions are immutable, so the parsed definitions of recent look-ups are kept, and a body with
    the content of one that passed the whole-tree checks once is only parsed again.

    A row's ``content_hash`` is a column its tenant's own database login may write (row-level
    security lets a tenant write its own rows), so it is not taken on trust: a body is refused
    unless it has the hash its row records, and a kept definition is reused only for a row whose
    body is, as canonical JSON text, the one it was parsed from. A row of one tenant claiming
    another's hash gets neither that tenant's parsed definition nor its body's pass of the checks;
    rows of any tenants holding the same body share one entry.

    Raises:
        DefinitionError: The body is not a valid definition, or not the one its hash names.
    """
    key = (digest, version)
    found = _PARSED.get(key)
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, TypeError, ValueError):  # load_definition below says what is wrong
        text = ""
    if found is not None and text and found[0] == text:
        _PARSED.move_to_end(key)
        return found[1]
    document = {**body, "version": version}
    if digest in _CHECKED:
        try:
            definition = parse_definition(document)
        except (ValueError, RecursionError):
            definition = load_definition(document)  # raises with JSON paths, or on the depth
    else:
        definition = load_definition(document)
    actual = content_hash(definition)
    if actual != digest:
        raise DefinitionError(
            [
                Problem(
                    "$",
                    f"the stored body of {name!r} version {version} has the content hash {actual!r},"
                    f" not the {digest!r} its row records: the row was changed outside the registry;"
                    " register the definition again",
                )
            ],
            name,
        )
    _CHECKED.add(digest)
    if text:
        _PARSED[key] = (text, definition)
        _PARSED.move_to_end(key)
    if len(_PARSED) > _PARSED_MAX:
        _PARSED.popitem(last=False)
    return definition


# ------------------------------------------------------------------------------------- the registry


# The look-ups of resolve, built once (building a statement costs more than running it here).
_RESOLVED = (DefinitionRow.version, DefinitionRow.body, DefinitionRow.content_hash, DefinitionRow.archived_at)
_ACTIVE = (
    select(*_RESOLVED)
    .join(
        DefinitionHeadRow,
        (DefinitionHeadRow.tenant == DefinitionRow.tenant)
        & (DefinitionHeadRow.name == DefinitionRow.name)
        & (DefinitionHeadRow.active_version == DefinitionRow.version),
    )
    .where(DefinitionHeadRow.tenant == bindparam("tenant"), DefinitionHeadRow.name == bindparam("name"))
)
_PINNED = select(*_RESOLVED).where(
    DefinitionRow.tenant == bindparam("tenant"),
    DefinitionRow.name == bindparam("name"),
    DefinitionRow.version == bindparam("version"),
)


class DefinitionStore:
    """The definition registry of one tenant.

    Args:
        session_factory: An ``async_sessionmaker`` on the store's database
            (:attr:`activities.store.database.Database.session_factory`).
        tenant: Every read and write is scoped to it.
    """

    def __init__(self, session_factory: SessionFactory, tenant: str = DEFAULT_TENANT) -> None:
        self.session_factory = session_factory
        self.tenant = check_tenant(tenant)
        self._reader = _reader(session_factory)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        async with db_errors(_url_of(self.session_factory), self.tenant), self.session_factory() as session:
            yield session

    async def _lock(self, session: AsyncSession, name: str) -> None:
        """Serialises writes to one name (released at commit)."""
        await lock_row(session, self.tenant, lock_key("definitions", _name(name)))

    def _where(self, name: str) -> Any:
        return (DefinitionRow.tenant == self.tenant) & (DefinitionRow.name == _name(name))

    def _info(self, row: DefinitionRow, active_version: int | None) -> DefinitionInfo:
        return DefinitionInfo(
            tenant=row.tenant,
            name=row.name,
            version=row.version,
            content_hash=row.content_hash,
            author=row.author,
            created_at=row.created_at,
            archived_at=row.archived_at,
            active=row.version == active_version,
        )

    async def _head(self, session: AsyncSession, name: str) -> DefinitionHeadRow:
        head = await session.get(DefinitionHeadRow, (self.tenant, _name(name)), populate_existing=True)
        if head is None:
            raise DefinitionNotFoundError(self.tenant, name)
        return head

    async def _version(self, session: AsyncSession, name: str, version: int) -> DefinitionRow:
        row = await session.scalar(
            select(DefinitionRow).where(self._where(name), DefinitionRow.version == version)
        )
        if row is None:
            raise await self._missing(session, name, version)
        return row

    async def _missing(
        self, session: AsyncSession | AsyncConnection, name: str, version: int | None
    ) -> StoreError:
        latest = await session.scalar(select(func.max(DefinitionRow.version)).where(self._where(name)))
        if latest is None or version is None:
            return DefinitionNotFoundError(self.tenant, name)
        return VersionNotFoundError(self.tenant, name, version, latest)

    async def _deactivated(self, conn: AsyncConnection, name: str) -> bool:
        found = await conn.scalar(
            select(func.count()).where(
                DefinitionHeadRow.tenant == self.tenant,
                DefinitionHeadRow.name == name,
                DefinitionHeadRow.active_version.is_(None),
            )
        )
        return bool(found)

    def _log(self, session: AsyncSession, name: str, version: int, kind: ActivationKind, actor: str) -> None:
        session.add(
            ActivationRow(tenant=self.tenant, name=name, version=version, kind=kind.value, actor=actor)
        )

    def _set_head(
        self, session: AsyncSession, head: DefinitionHeadRow, version: int | None, actor: str
    ) -> None:
        head.active_version = version
        head.updated_by = actor
        head.updated_at = func.now()
        session.add(head)

    # ------------------------------------------------------------------------------------ writes

    async def register(
        self,
        document: Definition | Mapping[str, Any] | str | bytes,
        author: str,
        *,
        activate: bool = False,
    ) -> Registration:
        """Validates a definition and stores it as the name's next version.

        An identical body (same content hash under this name) is not stored again: its existing
        version is returned (``created`` False). The first version of a name becomes active; later
        ones only with ``activate=True``.

        Args:
            document: A mapping, JSON text or a :class:`Definition`; its ``version`` is ignored.
            author: Who registers it (recorded).
            activate: Make this version active.

        Raises:
            DefinitionError: The definition is invalid (listing JSON paths), a schedule's fixed
                input included (checked in a separate process: ``activities.input_check``);
                nothing is stored.
            VersionArchivedError: ``activate`` of an identical body whose version is archived.
            InputCheckBusyError, InputCheckFailedError: A schedule's fixed input could not be
                checked now; nothing is stored.
        """
        _require_actor(author, "author")
        definition, body = stored_body(document)
        from activities.input_check import schedule_input_problems

        fixed = await schedule_input_problems(definition, owner=self.tenant)
        if fixed:
            raise DefinitionError(fixed, definition.name)
        name, digest = definition.name, content_hash(definition)
        async with self._session() as session, session.begin():
            await self._lock(session, name)
            row = await session.scalar(
                select(DefinitionRow).where(self._where(name), DefinitionRow.content_hash == digest)
            )
            head = await session.get(DefinitionHeadRow, (self.tenant, name))
            created = row is None
            if row is None:
                latest = await session.scalar(
                    select(func.max(DefinitionRow.version)).where(self._where(name))
                )
                row = DefinitionRow(
                    tenant=self.tenant,
                    name=name,
                    version=(latest or 0) + 1,
                    body=body,
                    content_hash=digest,
                    author=author,
                )
                session.add(row)
                await session.flush()
                self._log(session, name, row.version, ActivationKind.REGISTER, author)
            activated = False
            if head is None:
                head = DefinitionHeadRow(
                    tenant=self.tenant, name=name, active_version=row.version, updated_by=author
                )
                session.add(head)
                await session.flush()
                self._log(session, name, row.version, ActivationKind.ACTIVATE, author)
                activated = True
            elif activate and head.active_version != row.version:
                if row.archived_at is not None:
                    raise VersionArchivedError(self.tenant, name, row.version, "activated")
                self._set_head(session, head, row.version, author)
                self._log(session, name, row.version, ActivationKind.ACTIVATE, author)
                activated = True
            active_version = head.active_version
            info = self._info(row, active_version)
        return Registration(info=info, created=created, activated=activated, active_version=active_version)

    async def activate(self, name: str, version: int, actor: str) -> Activation:
        """Makes ``version`` the active version of ``name`` (new runs by name use it).

        Raises:
            DefinitionNotFoundError / VersionNotFoundError: Unknown name or version in this tenant.
            VersionArchivedError: The version is archived.
        """
        _require_actor(actor, "actor")
        async with self._session() as session, session.begin():
            await self._lock(session, name)
            head = await self._head(session, name)
            row = await self._version(session, name, version)
            previous = head.active_version
            if previous == version:
                return Activation(name=name, version=version, previous=previous, changed=False)
            if row.archived_at is not None:
                raise VersionArchivedError(self.tenant, name, version, "activated")
            self._set_head(session, head, version, actor)
            self._log(session, name, version, ActivationKind.ACTIVATE, actor)
        return Activation(name=name, version=version, previous=previous, changed=True)

    async def rollback(self, name: str, actor: str) -> Activation:
        """Activates the version that was active before the current one.

        Repeated rollbacks keep going back (a rollback undoes the activation it rolls back), and
        archived versions are passed over.

        Raises:
            DefinitionNotFoundError: Unknown name in this tenant.
            NothingToRollBackError: No earlier active version that is not archived.
        """
        _require_actor(actor, "actor")
        async with self._session() as session, session.begin():
            await self._lock(session, name)
            head = await self._head(session, name)
            entries = (
                await session.execute(
                    select(ActivationRow.kind, ActivationRow.version)
                    .where(
                        ActivationRow.tenant == self.tenant,
                        ActivationRow.name == name,
                        ActivationRow.kind.in_(
                            [ActivationKind.ACTIVATE.value, ActivationKind.ROLLBACK.value]
                        ),
                    )
                    .order_by(ActivationRow.id)
                )
            ).all()
            stack: list[int] = []
            for kind, version in entries:
                if kind == ActivationKind.ROLLBACK.value:
                    while stack and stack[-1] != version:
                        stack.pop()
                    if not stack:
                        stack.append(version)
                elif not stack or stack[-1] != version:
                    stack.append(version)
            current = head.active_version
            archived = set(
                (
                    await session.scalars(
                        select(DefinitionRow.version).where(
                            self._where(name), DefinitionRow.archived_at.is_not(None)
                        )
                    )
                ).all()
            )
            skipped: list[int] = []
            target: int | None = None
            for version in reversed(stack[:-1] if stack and stack[-1] == current else stack):
                if version == current:
                    continue
                if version in archived:
                    if version not in skipped:
                        skipped.append(version)
                    continue
                target = version
                break
            if target is None:
                raise NothingToRollBackError(self.tenant, name, current, skipped)
            self._set_head(session, head, target, actor)
            self._log(session, name, target, ActivationKind.ROLLBACK, actor)
        return Activation(name=name, version=target, previous=current, changed=True, skipped_archived=skipped)

    async def archive(self, name: str, version: int, actor: str) -> DefinitionInfo:
        """Archives a version: it can no longer be activated or started (it can still be shown).

        Raises:
            DefinitionNotFoundError / VersionNotFoundError: Unknown name or version in this tenant.
            ActiveVersionError: It is the active version.
        """
        _require_actor(actor, "actor")
        async with self._session() as session, session.begin():
            await self._lock(session, name)
            head = await self._head(session, name)
            row = await self._version(session, name, version)
            if head.active_version == version:
                raise ActiveVersionError(self.tenant, name, version)
            if row.archived_at is None:
                row.archived_at = datetime.now(UTC)
                self._log(session, name, version, ActivationKind.ARCHIVE, actor)
                await session.flush()
            return self._info(row, head.active_version)

    async def deactivate(self, name: str, actor: str) -> Activation | None:
        """Leaves ``name`` without an active version: its triggers stop and it cannot be started
        by name (``name@N`` still can) until a version is activated; a rollback activates the
        version that was active last.

        Returns:
            None when it was already deactivated, else the version that was active (``version``
            and ``previous``; ``changed`` True).

        Raises:
            DefinitionNotFoundError: Unknown name in this tenant.
        """
        _require_actor(actor, "actor")
        async with self._session() as session, session.begin():
            await self._lock(session, name)
            head = await self._head(session, name)
            previous = head.active_version
            if previous is None:
                return None
            self._set_head(session, head, None, actor)
            self._log(session, name, previous, ActivationKind.DEACTIVATE, actor)
        return Activation(name=name, version=previous, previous=previous, changed=True)

    # ------------------------------------------------------------------------------------- reads

    async def resolve(self, ref: str) -> ResolvedDefinition:
        """The definition a run of ``ref`` starts from: ``name`` is the active version, ``name@3``
        that version (one query; parsed bodies are cached, versions being immutable).

        Raises:
            InvalidReferenceError: ``ref`` is not ``name`` or ``name@N``.
            DefinitionNotFoundError / VersionNotFoundError: Not in this tenant.
            VersionArchivedError: A pinned version that is archived.
        """
        name, version = parse_ref(ref)
        params: dict[str, str | int]
        if version is None:
            query, params = _ACTIVE, {"tenant": self.tenant, "name": name}
        else:
            query, params = _PINNED, {"tenant": self.tenant, "name": name, "version": version}
        # One statement outside a transaction (no BEGIN/ROLLBACK round trips): the hot path of starts.
        async with db_errors(_url_of(self.session_factory), self.tenant), self._reader.connect() as conn:
            found = (await conn.execute(query, params)).first()
            if found is None:
                if version is None and await self._deactivated(conn, name):
                    raise NoActiveVersionError(self.tenant, name)
                raise await self._missing(conn, name, version)
        stored_version, body, digest, archived_at = found
        if archived_at is not None:
            raise VersionArchivedError(self.tenant, name, stored_version, "started")
        return ResolvedDefinition(
            definition=_parse(name, stored_version, digest, body),
            name=name,
            version=stored_version,
            content_hash=digest,
        )

    async def active_definitions(self, name: str | None = None) -> list[ResolvedDefinition]:
        """The active version of every name of the tenant (or of ``name`` only), sorted by name:
        what the live triggers are read from (one query; bodies parsed once per process)."""
        query = (
            select(DefinitionRow.name, *_RESOLVED)
            .join(
                DefinitionHeadRow,
                (DefinitionHeadRow.tenant == DefinitionRow.tenant)
                & (DefinitionHeadRow.name == DefinitionRow.name)
                & (DefinitionHeadRow.active_version == DefinitionRow.version),
            )
            .where(DefinitionHeadRow.tenant == self.tenant)
            .order_by(DefinitionRow.name)
        )
        if name is not None:
            query = query.where(DefinitionHeadRow.name == name)
        async with db_errors(_url_of(self.session_factory), self.tenant), self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ResolvedDefinition(
                definition=_parse(row_name, version, digest, body),
                name=row_name,
                version=version,
                content_hash=digest,
            )
            for row_name, version, body, digest, _archived in rows
        ]

    @asynccontextmanager
    async def sync_lock(self, name: str) -> AsyncIterator[None]:
        """Serialises the writers of one name's triggers elsewhere (its Temporal Schedules): held
        while reading the active version and writing what follows from it, so two activations'
        syncs cannot leave the older version's schedule behind (the later sync reads the later
        version). A separate lock from the registry's writes, which it never delays."""
        async with self._session() as session, session.begin():
            await lock_row(session, self.tenant, lock_key("trigger-sync", _name(name)))
            yield

    async def trigger_ids(self, name: str, kind: str) -> list[str]:
        """The ids of the triggers of one kind that any version of ``name`` declares (archived ones
        too), sorted: everything a sync may have to remove."""
        from interpreter.model import ScheduleTrigger

        async with self._session() as session:
            bodies = (await session.scalars(select(DefinitionRow.body).where(self._where(name)))).all()
        defaults = {"schedule": ScheduleTrigger.model_fields["id"].default}
        ids: set[str] = set()
        for body in bodies:
            triggers = body.get("triggers") if isinstance(body, dict) else None
            for trigger in triggers if isinstance(triggers, list) else []:
                if isinstance(trigger, dict) and trigger.get("type") == kind:
                    ids.add(str(trigger.get("id", defaults.get(kind, kind))))
        return sorted(ids)

    async def get(self, name: str, version: int | None = None) -> StoredDefinition:
        """One version with its body (archived ones too); ``None``: the active version.

        Raises:
            DefinitionNotFoundError / VersionNotFoundError: Not in this tenant.
        """
        async with self._session() as session:
            head = await self._head(session, name)
            wanted = head.active_version if version is None else version
            if wanted is None:
                raise NoActiveVersionError(self.tenant, name)
            row = await self._version(session, name, wanted)
            info = self._info(row, head.active_version)
            return StoredDefinition(**info.model_dump(), body=row.body)

    async def show(self, ref: str) -> StoredDefinition:
        """:meth:`get` of a reference (``name`` or ``name@3``)."""
        name, version = parse_ref(ref)
        return await self.get(name, version)

    async def list_names(self) -> list[NameSummary]:
        """Every name of the tenant with its active version, sorted by name."""
        query = (
            select(
                DefinitionRow.name,
                DefinitionHeadRow.active_version,
                func.max(DefinitionRow.version),
                func.count(),
                func.count(DefinitionRow.archived_at),
                DefinitionHeadRow.updated_by,
                DefinitionHeadRow.updated_at,
            )
            .join(
                DefinitionHeadRow,
                (DefinitionHeadRow.tenant == DefinitionRow.tenant)
                & (DefinitionHeadRow.name == DefinitionRow.name),
            )
            .where(DefinitionRow.tenant == self.tenant)
            .group_by(
                DefinitionRow.name,
                DefinitionHeadRow.active_version,
                DefinitionHeadRow.updated_by,
                DefinitionHeadRow.updated_at,
            )
            .order_by(DefinitionRow.name)
        )
        async with self._session() as session:
            rows = (await session.execute(query)).all()
        return [
            NameSummary(
                name=name,
                active_version=active,
                latest_version=latest,
                versions=count,
                archived=archived,
                updated_by=by,
                updated_at=at,
            )
            for name, active, latest, count, archived, by, at in rows
        ]

    async def list_versions(self, name: str) -> list[DefinitionInfo]:
        """Every version of ``name``, oldest first.

        Raises:
            DefinitionNotFoundError: Not in this tenant.
        """
        async with self._session() as session:
            head = await self._head(session, name)
            rows = (
                await session.scalars(
                    select(DefinitionRow).where(self._where(name)).order_by(DefinitionRow.version)
                )
            ).all()
        return [self._info(row, head.active_version) for row in rows]

    async def history(self, name: str) -> list[ActivationEntry]:
        """The audit log of ``name``, oldest first.

        Raises:
            DefinitionNotFoundError: Not in this tenant.
        """
        async with self._session() as session:
            await self._head(session, name)
            rows = (
                await session.scalars(
                    select(ActivationRow)
                    .where(ActivationRow.tenant == self.tenant, ActivationRow.name == name)
                    .order_by(ActivationRow.id)
                )
            ).all()
        return [
            ActivationEntry(
                name=r.name, version=r.version, kind=ActivationKind(r.kind), actor=r.actor, at=r.at
            )
            for r in rows
        ]

    async def diff(self, name: str, v1: int, v2: int) -> str:
        """A unified diff of two versions' bodies as indented JSON with sorted keys ("" if equal).

        Raises:
            DefinitionNotFoundError / VersionNotFoundError: Not in this tenant.
        """
        async with self._session() as session:
            await self._head(session, name)
            old = await self._version(session, name, v1)
            new = await self._version(session, name, v2)
        return "".join(
            difflib.unified_diff(
                pretty(old.body).splitlines(keepends=True),
                pretty(new.body).splitlines(keepends=True),
                fromfile=f"{name}@{v1}",
                tofile=f"{name}@{v2}",
            )
        )


async def active_definitions_of_every_tenant(
    session_factory: SessionFactory, name: str | None = None
) -> list[tuple[str, ResolvedDefinition]]:
    """``(tenant, active version)`` of every name of every tenant the connecting login may see
    (a platform login: all; a tenant's login: its own, by row-level security), sorted by tenant
    and name. For services that serve every tenant (the gateway's listeners): an active version
    whose row is not a valid definition with the hash it records (a tenant's own login may write its
    rows) is left out, with an error in the log, so one tenant's row does not stop the others'."""
    query = (
        select(DefinitionRow.tenant, DefinitionRow.name, *_RESOLVED)
        .join(
            DefinitionHeadRow,
            (DefinitionHeadRow.tenant == DefinitionRow.tenant)
            & (DefinitionHeadRow.name == DefinitionRow.name)
            & (DefinitionHeadRow.active_version == DefinitionRow.version),
        )
        .order_by(DefinitionRow.tenant, DefinitionRow.name)
    )
    if name is not None:
        query = query.where(DefinitionHeadRow.name == name)
    async with (
        db_errors(_url_of(session_factory), "every tenant"),
        _reader(session_factory).connect() as conn,
    ):
        rows = (await conn.execute(query)).all()
    found: list[tuple[str, ResolvedDefinition]] = []
    for tenant, row_name, version, body, digest, _archived in rows:
        try:
            definition = _parse(row_name, version, digest, body)
        except DefinitionError as err:  # one tenant's row (its login may write it) stops no other's
            log.error("tenant %r: active version %s@%s left out: %s", tenant, row_name, version, err)
            continue
        found.append(
            (
                tenant,
                ResolvedDefinition(
                    definition=definition, name=row_name, version=version, content_hash=digest
                ),
            )
        )
    return found


_READERS: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def _reader(session_factory: SessionFactory) -> AsyncEngine:
    """The session factory's engine in autocommit mode (same pool), for single-statement reads."""
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError(
            "the store needs a session factory bound to an AsyncEngine (async_sessionmaker(engine))"
        )
    reader = _READERS.get(bind)
    if reader is None:
        reader = bind.execution_options(isolation_level="AUTOCOMMIT")
        _READERS[bind] = reader
    return reader


def _url_of(session_factory: SessionFactory) -> Any:
    bind = session_factory.kw.get("bind")
    return getattr(bind, "url", "the store's database")


def _require_actor(actor: str, what: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidActorError(f"{what} must be a non-empty name (it is recorded)")
    if len(actor) > 200:
        raise InvalidActorError(f"{what} is longer than 200 characters")
    problem = text_problem(actor)
    if problem is not None:
        raise InvalidActorError(
            f"{what} has {problem}, which cannot be stored (from WFA_ACTOR? it must be UTF-8)"
        )


# ---------------------------------------------------------------------------------- dead letters

_STATUS_OF = {
    DeadLetterAction.REDRIVE: DeadLetterStatus.REDRIVEN,
    DeadLetterAction.SKIP: DeadLetterStatus.SKIPPED,
    DeadLetterAction.ABORT: DeadLetterStatus.ABORTED,
    DeadLetterAction.TIMEOUT: DeadLetterStatus.TIMED_OUT,
    DeadLetterAction.CANCELLED: DeadLetterStatus.CANCELLED,
}


def _dead_letter(row: DeadLetterRow) -> DeadLetter:
    return DeadLetter.model_validate(row, from_attributes=True)


def _storable(value: Any) -> Any:
    """``value`` as PostgreSQL can store it: JSON-compatible, and no NUL character in any string
    (text and jsonb refuse it; it becomes U+FFFD). A row that cannot be written would leave the
    run's recording activity retrying for ever."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {_storable(str(key)): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _storable(str(value))


def _storable_text(value: str | None, limit: int | None = None) -> str | None:
    """A text column's value: no NUL, and cut to the column's length."""
    if value is None:
        return None
    text: str = _storable(value)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


async def park_dead_letter(session_factory: SessionFactory, record: DeadLetterRecord) -> int:
    """Records a parked step; idempotent on ``(tenant, workflow_id, run_id, park_id)`` (a retried
    activity gets the same row id).

    Returns:
        The row id.
    """
    check_tenant(record.tenant)
    values = {
        key: _storable(value) if isinstance(value, str | dict | list) else value
        for key, value in record.model_dump(mode="python").items()
    }
    values["input"] = json.loads(json.dumps(values["input"], default=str))
    async with (
        db_errors(_url_of(session_factory), record.tenant),
        session_factory() as session,
        session.begin(),
    ):
        inserted = await session.scalar(
            insert(DeadLetterRow)
            .values(**values, status=DeadLetterStatus.OPEN.value)
            .on_conflict_do_nothing(index_elements=["tenant", "workflow_id", "run_id", "park_id"])
            .returning(DeadLetterRow.id)
        )
        if inserted is not None:
            return int(inserted)
        existing = await session.scalar(
            select(DeadLetterRow.id).where(
                DeadLetterRow.tenant == record.tenant,
                DeadLetterRow.workflow_id == record.workflow_id,
                DeadLetterRow.run_id == record.run_id,
                DeadLetterRow.park_id == record.park_id,
            )
        )
        assert existing is not None, "a conflicting row must exist"
        return int(existing)


async def resolve_dead_letter(
    session_factory: SessionFactory, resolution: DeadLetterResolution
) -> DeadLetter:
    """Records the decision taken on a dead letter: status, who, when, and the reason, corrected
    input or supplied output. Idempotent: a row already resolved keeps its first decision.

    Returns:
        The row after the call.

    Raises:
        DeadLetterNotFoundError: No such row.
    """
    tenant = resolution.tenant
    decision: dict[str, Any] = {"action": resolution.action.value, "reason": resolution.reason}
    if resolution.input is not None:
        decision["input"] = resolution.input
    if resolution.output is not None or resolution.action == DeadLetterAction.SKIP:
        decision["output"] = resolution.output
    decision = _storable(json.loads(json.dumps(decision, default=str)))
    scope = [DeadLetterRow.id == resolution.dead_letter_id, DeadLetterRow.tenant == tenant]
    async with db_errors(_url_of(session_factory), tenant), session_factory() as session, session.begin():
        await session.execute(
            update(DeadLetterRow)
            .where(*scope, DeadLetterRow.status == DeadLetterStatus.OPEN.value)
            .values(
                status=_STATUS_OF[resolution.action].value,
                resolved_by=_storable_text(resolution.actor, ACTOR_LENGTH),
                resolved_at=resolution.resolved_at,
                resolution=decision,
            )
        )
        row = await session.scalar(
            select(DeadLetterRow).where(*scope).execution_options(populate_existing=True)
        )
        if row is None:
            raise DeadLetterNotFoundError(tenant, resolution.dead_letter_id)
        return _dead_letter(row)


class DeadLetterStore:
    """The dead letters of one tenant, for operators (the workflow writes through the activities).

    Args:
        session_factory: An ``async_sessionmaker`` on the store's database.
        tenant: Every query is scoped to it.
    """

    def __init__(self, session_factory: SessionFactory, tenant: str = DEFAULT_TENANT) -> None:
        self.session_factory = session_factory
        self.tenant = check_tenant(tenant)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        async with db_errors(_url_of(self.session_factory), self.tenant), self.session_factory() as session:
            yield session

    async def park(self, record: DeadLetterRecord) -> int:
        """See :func:`park_dead_letter`; the record must belong to this tenant."""
        if record.tenant != self.tenant:
            raise ValueError(f"dead letter of tenant {record.tenant!r} given to the store of {self.tenant!r}")
        return await park_dead_letter(self.session_factory, record)

    async def list(
        self,
        status: DeadLetterStatus | str | None = DeadLetterStatus.OPEN,
        *,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first.

        Args:
            status: Only this status (``open`` by default); None or ``"all"``: every status.
            workflow_id: Only this run's.
            limit: At most this many.
        """
        query = select(DeadLetterRow).where(DeadLetterRow.tenant == self.tenant)
        if status is not None and status != "all":
            query = query.where(DeadLetterRow.status == DeadLetterStatus(status).value)
        if workflow_id is not None:
            query = query.where(DeadLetterRow.workflow_id == workflow_id)
        query = query.order_by(DeadLetterRow.parked_at, DeadLetterRow.id).limit(limit)
        async with self._session() as session:
            rows = (await session.scalars(query)).all()
        return [_dead_letter(row) for row in rows]

    async def get(self, dead_letter_id: int) -> DeadLetter:
        """One dead letter of this tenant.

        Raises:
            DeadLetterNotFoundError: No such id in this tenant.
        """
        async with self._session() as session:
            row = await session.scalar(
                select(DeadLetterRow).where(
                    DeadLetterRow.id == dead_letter_id, DeadLetterRow.tenant == self.tenant
                )
            )
        if row is None:
            raise DeadLetterNotFoundError(self.tenant, dead_letter_id)
        return _dead_letter(row)
