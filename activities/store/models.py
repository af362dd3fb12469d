"""The tables of the definition registry and the dead letters (SQLAlchemy 2.0 declarative).

The schema itself is created by the alembic migrations in ``migrations/`` (a test checks that these
models and the migrations agree). Every table has a ``tenant`` column and every query filters on it.

* ``definitions``: immutable versions. ``(tenant, name, version)`` and ``(tenant, name,
  content_hash)`` are unique: the same body is never stored twice under one name.
* ``definition_heads``: the active version of each name.
* ``activations``: the audit log (register, activate, rollback, archive) with actor and time; a
  rollback goes back through it.
* ``dead_letters``: parked steps and the operator's decision on each.
* ``store_locks``: rows the registry locks to serialise writes to one name (migration 0007).
* ``tenant_roles``: which database role belongs to which tenant. PostgreSQL's row-level security
  (migration 0002) lets a tenant's role see and write only its tenant's rows of the four tables
  above, whatever SQL it sends; members of ``wfa_platform`` see every tenant (see ``roles.py``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ActivationKind",
    "ActivationRow",
    "Base",
    "DeadLetterRow",
    "DeadLetterStatus",
    "DefinitionHeadRow",
    "DefinitionRow",
    "PayloadBlobRow",
    "StoreLockRow",
    "TenantRoleRow",
]

TENANT_LENGTH = 100
NAME_LENGTH = 100
ACTOR_LENGTH = 200
ROLE_LENGTH = 63
"""PostgreSQL's limit on identifiers (NAMEDATALEN - 1)."""

# Named constraints, so migrations can refer to them and autogenerate compares them reliably.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class ActivationKind(StrEnum):
    """What an entry of the activations log records."""

    REGISTER = "register"
    ACTIVATE = "activate"
    ROLLBACK = "rollback"
    ARCHIVE = "archive"
    DEACTIVATE = "deactivate"


class DeadLetterStatus(StrEnum):
    """Where a dead letter is: open until an operator (or the park timeout) decides."""

    OPEN = "open"
    REDRIVEN = "redriven"
    SKIPPED = "skipped"
    ABORTED = "aborted"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class Base(DeclarativeBase):
    """Declarative base with the naming convention."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONB, datetime: DateTime(timezone=True)}


class DefinitionRow(Base):
    """One immutable version of a definition."""

    __tablename__ = "definitions"
    __table_args__ = (
        UniqueConstraint("tenant", "name", "version"),
        UniqueConstraint("tenant", "name", "content_hash"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DefinitionHeadRow(Base):
    """The active version of one name (None: deactivated, no version is active)."""

    __tablename__ = "definition_heads"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant", "name", "active_version"],
            ["definitions.tenant", "definitions.name", "definitions.version"],
            name="fk_definition_heads_definitions",
        ),
    )

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    active_version: Mapped[int | None] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ActivationRow(Base):
    """One entry of the audit log of a name."""

    __tablename__ = "activations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant", "name", "version"],
            ["definitions.tenant", "definitions.name", "definitions.version"],
            name="fk_activations_definitions",
        ),
        CheckConstraint(
            "kind IN ('register', 'activate', 'rollback', 'archive', 'deactivate')", name="kind_known"
        ),
        Index("ix_activations_tenant_name_id", "tenant", "name", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadLetterRow(Base):
    """A parked step: what failed, and what an operator decided."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("tenant", "workflow_id", "run_id", "park_id"),
        CheckConstraint(
            "status IN ('open', 'redriven', 'skipped', 'aborted', 'timed_out', 'cancelled')",
            name="status_known",
        ),
        Index("ix_dead_letters_tenant_status_parked_at", "tenant", "status", "parked_at"),
        Index("ix_dead_letters_tenant_workflow_id", "tenant", "workflow_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    workflow_id: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(Text)
    definition: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    park_id: Mapped[str] = mapped_column(Text)
    step_id: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    input: Mapped[dict[str, Any]] = mapped_column(JSONB)
    error: Mapped[str] = mapped_column(Text)
    error_type: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    parked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), server_default=DeadLetterStatus.OPEN.value)
    resolved_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class TenantRoleRow(Base):
    """A database role of one tenant's services (written by the platform, read by row security)."""

    __tablename__ = "tenant_roles"
    __table_args__ = (Index("ix_tenant_roles_tenant", "tenant"),)

    role: Mapped[str] = mapped_column(String(ROLE_LENGTH), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    granted_by: Mapped[str] = mapped_column(String(ROLE_LENGTH), server_default=text("CURRENT_USER"))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKeyRow(Base):
    """A tenant's API key for the gateway's ``/events`` endpoint, stored as the SHA-256 of the key
    (the key itself is printed once, when it is created, and never stored)."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PayloadBlobRow(Base):
    """A payload Temporal's history refers to (``WFA_PAYLOAD_STORE=postgres``,
    :mod:`starter.payload_store`): the stored bytes (encrypted when the codec is on) under the
    run's namespace and their SHA-256."""

    __tablename__ = "payload_blobs"
    __table_args__ = (Index("ix_payload_blobs_created_at", "created_at"),)

    namespace: Mapped[str] = mapped_column(String(1000), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StoreLockRow(Base):
    """A row the registry locks (``SELECT ... FOR UPDATE``) to serialise writes to one name of one
    tenant: row-level security keeps another tenant's login from seeing or locking it, where any
    login could take an advisory lock of any key (migration 0007). ``key`` is what is locked
    (:func:`activities.store.repository.lock_key`)."""

    __tablename__ = "store_locks"

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)


class EndedSessionRow(Base):
    """An inbox session someone signed out of, by the SHA-256 of its CSRF secret, until its cookie
    would have expired: every gateway process refuses its cookie (:mod:`gateway.inbox.ended`)."""

    __tablename__ = "inbox_ended_sessions"
    __table_args__ = (Index("ix_inbox_ended_sessions_expires_at", "expires_at"),)

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
