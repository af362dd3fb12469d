"""Errors of the definition registry and the dead letter store.

Every error raised on purpose subclasses :class:`StoreError`. Messages name the problem: the URL of
the database (never its password), the tenant and name of a definition, the version asked for.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ActiveVersionError",
    "DatabaseNotFoundError",
    "DatabaseUnavailableError",
    "DeadLetterNotFoundError",
    "DeadLetterResolvedError",
    "DefinitionNotFoundError",
    "EmbeddedPostgresError",
    "InvalidActorError",
    "InvalidDatabaseUrlError",
    "InvalidReferenceError",
    "InvalidRoleError",
    "InvalidTenantError",
    "MigrationsNotAppliedError",
    "NoActiveVersionError",
    "NothingToRollBackError",
    "RoleConflictError",
    "StoreError",
    "UnstorableDataError",
    "VersionArchivedError",
    "VersionNotFoundError",
]


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


# ------------------------------------------------------------------------------------ the database


class InvalidDatabaseUrlError(StoreError, ValueError):
    """A database URL that is not one (or names another database or driver than PostgreSQL's
    asyncpg), or an embedded server's state folder that is not text: a setting to correct, not an
    outage."""


class DatabaseUnavailableError(StoreError):
    """The PostgreSQL server cannot be reached or refused the connection.

    Attributes:
        url: The database URL, password hidden.
    """

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class DatabaseNotFoundError(DatabaseUnavailableError):
    """The server is up but the database named in the URL does not exist."""


class EmbeddedPostgresError(DatabaseUnavailableError):
    """The embedded PostgreSQL server (the default without ``DATABASE_URL``) could not start."""


class AccessDeniedError(StoreError, PermissionError):
    """PostgreSQL refused the statement: the connecting role lacks the privilege, or row-level
    security refused to write a row of another tenant.

    Attributes:
        url: The database URL, password hidden (its user is the role that was refused).
        tenant: The tenant the store was asked to act for, when known.
    """

    def __init__(self, message: str, url: str, tenant: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.tenant = tenant


class MigrationsNotAppliedError(StoreError):
    """The database schema is missing or older than this code (or newer than it knows).

    Attributes:
        url: The database URL, password hidden.
        current: The schema revision found (None: no schema at all).
        head: The revision this code needs.
    """

    def __init__(self, url: str, current: str | None, head: str) -> None:
        if current is None:
            what = "has no schema (migrations were never applied)"
        else:
            what = f"is at schema revision {current!r}, not {head!r} which this code needs"
        super().__init__(f"the database {url} {what}; run `wfa db upgrade` (with the same DATABASE_URL)")
        self.url = url
        self.current = current
        self.head = head


# ----------------------------------------------------------------------------------- definitions


class InvalidReferenceError(StoreError, ValueError):
    """A definition reference is neither ``name`` nor ``name@<version>``.

    Attributes:
        ref: What was given.
    """

    def __init__(self, ref: str, why: str = "") -> None:
        detail = f": {why}" if why else ""
        super().__init__(
            f"invalid definition reference {ref!r}{detail} (expected NAME or NAME@VERSION, e.g. intervention@3)"
        )
        self.ref = ref


class InvalidTenantError(StoreError, ValueError):
    """A tenant name that is empty, too long or has characters other than letters, digits, ``_.:-``."""

    def __init__(self, tenant: str) -> None:
        super().__init__(
            f"invalid tenant {tenant!r}: 1 to 100 letters, digits, '_', '.', ':' or '-', starting with a"
            " letter or digit"
        )
        self.tenant = tenant


class InvalidActorError(StoreError, ValueError):
    """Who acts (recorded with the change) is empty, too long, or holds text PostgreSQL cannot store
    (a NUL, or a lone surrogate: ``WFA_ACTOR`` of bytes that are not UTF-8 reached the database and
    ended as an internal error, found by an attacker's probe)."""


class UnstorableDataError(StoreError, ValueError):
    """A value PostgreSQL cannot hold or the driver cannot send: a NUL character, a lone surrogate,
    a malformed number (SQLSTATE class 22, or the driver's encoding error). Bad input, not an
    unavailable server (found by an attacker's probe: a raw driver error before)."""

    def __init__(self, detail: str, url: str) -> None:
        super().__init__(f"a value is data PostgreSQL cannot hold ({detail})")
        self.url = url


class DefinitionNotFoundError(StoreError, LookupError):
    """No definition with this name in the tenant (another tenant's definitions are invisible).

    Attributes:
        tenant: The tenant that asked.
        name: The definition name.
    """

    def __init__(self, tenant: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"no definition named {name!r} in tenant {tenant!r}")
        self.tenant = tenant
        self.name = name


class VersionNotFoundError(DefinitionNotFoundError):
    """The definition exists in the tenant but has no such version.

    Attributes:
        version: The version asked for.
        latest: The highest version there is.
    """

    def __init__(self, tenant: str, name: str, version: int, latest: int) -> None:
        super().__init__(
            tenant,
            name,
            f"definition {name!r} in tenant {tenant!r} has no version {version} (versions 1 to {latest})",
        )
        self.version = version
        self.latest = latest


class VersionArchivedError(StoreError):
    """An archived version cannot be activated or started.

    Attributes:
        tenant, name, version: Which version.
    """

    def __init__(self, tenant: str, name: str, version: int, doing: str) -> None:
        super().__init__(
            f"{name}@{version} (tenant {tenant!r}) is archived: it cannot be {doing};"
            " register it again as a new version to use it"
        )
        self.tenant = tenant
        self.name = name
        self.version = version


class ActiveVersionError(StoreError):
    """The active version of a definition cannot be archived.

    Attributes:
        tenant, name, version: Which version.
    """

    def __init__(self, tenant: str, name: str, version: int) -> None:
        super().__init__(
            f"{name}@{version} is the active version of {name!r} in tenant {tenant!r} and cannot be"
            f" archived; activate another version (or roll back) first"
        )
        self.tenant = tenant
        self.name = name
        self.version = version


class NothingToRollBackError(StoreError):
    """No earlier active version (that is not archived) to roll back to.

    Attributes:
        tenant, name: Which definition.
        active: Its active version, which stays active.
    """

    def __init__(self, tenant: str, name: str, active: int | None, skipped: list[int] | None = None) -> None:
        extra = f" (earlier active versions {', '.join(map(str, skipped))} are archived)" if skipped else ""
        now = f"v{active} is active" if active is not None else "it is deactivated"
        super().__init__(
            f"cannot roll back {name!r} in tenant {tenant!r}: {now} and no earlier"
            f" version was active before it{extra}"
        )
        self.tenant = tenant
        self.name = name
        self.active = active


class NoActiveVersionError(StoreError):
    """The name is deactivated: no version is active, so it cannot be started by name (nor do its
    triggers fire) until a version is activated.

    Attributes:
        tenant, name: Which definition.
    """

    def __init__(self, tenant: str, name: str) -> None:
        super().__init__(
            f"{name!r} in tenant {tenant!r} has no active version (deactivated): activate one"
            f" (wfa definitions activate {name} VERSION) or start a version (NAME@VERSION)"
        )
        self.tenant = tenant
        self.name = name


# ----------------------------------------------------------------------------------- dead letters


class DeadLetterNotFoundError(StoreError, LookupError):
    """No dead letter with this id in the tenant.

    Attributes:
        tenant: The tenant that asked.
        dead_letter_id: The id asked for.
    """

    def __init__(self, tenant: str | None, dead_letter_id: int) -> None:
        where = f" in tenant {tenant!r}" if tenant is not None else ""
        super().__init__(f"no dead letter with id {dead_letter_id}{where}")
        self.tenant = tenant
        self.dead_letter_id = dead_letter_id


class DeadLetterResolvedError(StoreError):
    """The dead letter was already resolved (redriven, skipped, aborted or timed out).

    Attributes:
        dead_letter_id: The row.
        status: Its status.
    """

    def __init__(self, dead_letter_id: int, status: str, by: str | None, at: object) -> None:
        who = f" by {by}" if by else ""
        when = f" at {at}" if at else ""
        super().__init__(f"dead letter {dead_letter_id} is already {status}{who}{when}; nothing to decide")
        self.dead_letter_id = dead_letter_id
        self.status = status


# ---------------------------------------------------------------------------------- database roles


class InvalidRoleError(StoreError, ValueError):
    """A database role name is not a plain lower-case identifier."""

    def __init__(self, role: str) -> None:
        super().__init__(
            f"invalid database role name {role!r}: 1 to 63 characters [a-z0-9_], starting with a letter"
            " or _; not pg_*, wfa_platform nor wfa_tenant"
        )
        self.role = role


class RoleConflictError(StoreError):
    """A role cannot be made a tenant's role: it belongs to another tenant, or it already sees
    every tenant (superuser, BYPASSRLS, member of the platform role)."""

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"the database role {role!r} {reason}")
        self.role = role
