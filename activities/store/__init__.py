"""The store: the versioned definition registry and the dead letters, in PostgreSQL.

A side-effect family like the actions: the worker uses it for the dead letter activities
(:mod:`activities.dead_letters`), the starter for the registry. See :mod:`.database` (connecting,
migrations), :mod:`.embedded` (the default server), :mod:`.repository` (the operations), :mod:`.models`
(the tables), :mod:`.roles` (which database login sees which tenant: row-level security) and
:mod:`.errors`.
"""

from __future__ import annotations

from activities.store.database import (
    DATABASE_URL_ENV,
    Database,
    head_revision,
    open_database,
    safe_url,
    upgrade_database,
)
from activities.store.errors import (
    AccessDeniedError,
    ActiveVersionError,
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    DeadLetterNotFoundError,
    DeadLetterResolvedError,
    DefinitionNotFoundError,
    EmbeddedPostgresError,
    InvalidReferenceError,
    InvalidTenantError,
    MigrationsNotAppliedError,
    NoActiveVersionError,
    NothingToRollBackError,
    StoreError,
    VersionArchivedError,
    VersionNotFoundError,
)
from activities.store.repository import (
    Activation,
    ActivationEntry,
    DeadLetter,
    DeadLetterStore,
    DefinitionInfo,
    DefinitionStore,
    NameSummary,
    Registration,
    ResolvedDefinition,
    StoredDefinition,
    content_hash,
    parse_ref,
)

__all__ = [
    "DATABASE_URL_ENV",
    "AccessDeniedError",
    "Activation",
    "ActivationEntry",
    "ActiveVersionError",
    "Database",
    "DatabaseNotFoundError",
    "DatabaseUnavailableError",
    "DeadLetter",
    "DeadLetterNotFoundError",
    "DeadLetterResolvedError",
    "DeadLetterStore",
    "DefinitionInfo",
    "DefinitionNotFoundError",
    "DefinitionStore",
    "EmbeddedPostgresError",
    "InvalidReferenceError",
    "InvalidTenantError",
    "MigrationsNotAppliedError",
    "NameSummary",
    "NoActiveVersionError",
    "NothingToRollBackError",
    "Registration",
    "ResolvedDefinition",
    "StoreError",
    "StoredDefinition",
    "VersionArchivedError",
    "VersionNotFoundError",
    "content_hash",
    "head_revision",
    "open_database",
    "parse_ref",
    "safe_url",
    "upgrade_database",
]
