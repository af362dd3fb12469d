"""Database roles: which credentials see which tenant's rows (row-level security, migration 0002).

PostgreSQL itself keeps tenants apart, whatever SQL a client sends: every table of the store has a
policy that lets a role through only to the rows of the tenant ``tenant_roles`` maps it to. Three
kinds of role connect:

* **a tenant's role** (:func:`grant_tenant`): a login of one tenant's services. It reads and writes
  only that tenant's rows (SELECT, INSERT, UPDATE through the group role ``wfa_tenant``; no DELETE);
  another tenant's rows are invisible to it and writing another tenant's value is refused.
* **the platform** (:func:`grant_platform`): members of ``wfa_platform`` see every tenant. The worker
  (it parks and resolves every tenant's dead letters), the operators and the role that runs the
  migrations.
* **a superuser** (the embedded server's ``postgres``, the ``docker-compose.yml`` default) bypasses
  row-level security: the single-role deployment, which isolates nothing at this layer.

::

    await grant_tenant(admin_url, "acme", "acme_app", password="...")
    await grant_platform(admin_url, "wfa_worker", password="...")

``admin_url`` is a role that may create roles (CREATEROLE or superuser) and is a platform member.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from activities.store.database import create_engine, db_errors
from activities.store.errors import InvalidRoleError, RoleConflictError
from activities.store.repository import check_tenant

__all__ = [
    "PLATFORM_ROLE",
    "TENANT_ROLE",
    "RoleGrant",
    "TenantRole",
    "check_role",
    "grant_platform",
    "grant_tenant",
    "list_tenant_roles",
    "revoke_tenant",
]

PLATFORM_ROLE = "wfa_platform"
"""Its members see and write every tenant's rows."""

TENANT_ROLE = "wfa_tenant"
"""Holds the table privileges of tenant roles; which rows they reach is ``tenant_roles``' business."""

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleGrant(BaseModel):
    """What a grant did.

    Attributes:
        created: The role did not exist and was created (LOGIN).
        password_set: A password was set.
        tenant: The tenant the role now belongs to (None: a platform role).
    """

    role: str
    tenant: str | None
    created: bool
    password_set: bool


class TenantRole(BaseModel):
    """One row of ``tenant_roles``."""

    role: str
    tenant: str
    granted_by: str
    granted_at: datetime


def check_role(role: str) -> str:
    """Returns ``role`` if it is a plain lower-case identifier that is not reserved.

    Raises:
        InvalidRoleError: Anything else (``pg_*``, ``wfa_platform`` and ``wfa_tenant`` are reserved).
    """
    if (
        not isinstance(role, str)
        or not _ROLE.match(role)
        or role.startswith("pg_")
        or role in (PLATFORM_ROLE, TENANT_ROLE)
    ):
        raise InvalidRoleError(str(role))
    return role


def _literal(value: str) -> str:
    """``value`` as an escaped string constant (utility statements take no bind parameters)."""
    if "\x00" in value:
        raise ValueError("a password cannot contain NUL characters")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _password(password: str) -> str:
    """What ``PASSWORD`` is given: a SCRAM-SHA-256 verifier computed here (as psql's ``\\password``
    does), so the password itself never reaches the server nor its statement log.

    A password outside printable ASCII is sent as it is (the server would SASLprep-normalise it,
    which this module does not reimplement); it is then stored as a verifier all the same.
    """
    if not all(" " <= char <= "~" for char in password):
        return _literal(password)
    salt, iterations = secrets.token_bytes(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"'SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}'"


async def _role_flags(conn: AsyncConnection, role: str) -> Any:
    return (
        await conn.execute(
            text(
                "SELECT rolsuper, rolbypassrls, pg_has_role(oid, :platform, 'MEMBER')"
                " FROM pg_roles WHERE rolname = :role"
            ),
            {"role": role, "platform": PLATFORM_ROLE},
        )
    ).first()


async def _ensure_login(conn: AsyncConnection, role: str, password: str | None) -> bool:
    """Creates ``role`` (LOGIN, no special attributes) when missing, sets its password if given;
    returns whether it was created."""
    exists = await _role_flags(conn, role)
    secret = f" PASSWORD {_password(password)}" if password is not None else ""
    if exists is None:
        # exec_driver_sql: no bind-parameter parsing of the ":" in a password or a verifier.
        await conn.exec_driver_sql(
            f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS{secret}'
        )
        return True
    if password is not None:
        await conn.exec_driver_sql(f'ALTER ROLE "{role}"{secret}')
    return False


async def grant_tenant(
    admin_url: str | URL, tenant: str, role: str, *, password: str | None = None
) -> RoleGrant:
    """Makes ``role`` the database role of ``tenant``'s services (creating it if missing).

    Args:
        admin_url: A URL of a role that may create roles and is a platform member.
        tenant: The tenant whose rows the role reads and writes (and no other's).
        role: The login; created (LOGIN, no special attributes) when missing.
        password: Set as the role's password (None: leave it, e.g. for certificate logins).

    Raises:
        InvalidTenantError, InvalidRoleError: Malformed names.
        RoleConflictError: The role belongs to another tenant, or it already sees every tenant
            (superuser, BYPASSRLS, member of ``wfa_platform``).
        AccessDeniedError: ``admin_url``'s role may not create or grant roles.
        MigrationsNotAppliedError: The schema has no ``tenant_roles`` (run ``wfa db upgrade``).
    """
    check_tenant(tenant)
    check_role(role)
    engine = create_engine(admin_url, poolclass=NullPool)
    try:
        async with db_errors(admin_url), engine.begin() as conn:
            mapped = await conn.scalar(
                text("SELECT tenant FROM tenant_roles WHERE role = :role"), {"role": role}
            )
            if mapped is not None and mapped != tenant:
                raise RoleConflictError(
                    role, f"already belongs to tenant {mapped!r}; revoke it first (wfa db revoke-tenant)"
                )
            flags = await _role_flags(conn, role)
            if flags is not None and any(flags):
                why = (
                    "is a superuser"
                    if flags[0]
                    else "has BYPASSRLS"
                    if flags[1]
                    else f"is in {PLATFORM_ROLE}"
                )
                raise RoleConflictError(
                    role, f"{why}, so it sees every tenant; give each tenant a role of its own"
                )
            created = await _ensure_login(conn, role, password)
            await conn.execute(text(f'GRANT {TENANT_ROLE} TO "{role}"'))
            await conn.execute(
                text(
                    "INSERT INTO tenant_roles (role, tenant) VALUES (:role, :tenant) ON CONFLICT DO NOTHING"
                ),
                {"role": role, "tenant": tenant},
            )
    finally:
        await engine.dispose()
    return RoleGrant(role=role, tenant=tenant, created=created, password_set=password is not None)


async def grant_platform(admin_url: str | URL, role: str, *, password: str | None = None) -> RoleGrant:
    """Makes ``role`` a member of ``wfa_platform``: it sees every tenant (the worker, operators).

    Raises:
        InvalidRoleError: A malformed name.
        RoleConflictError: The role is a tenant's.
        AccessDeniedError: ``admin_url``'s role may not create or grant roles.
    """
    check_role(role)
    engine = create_engine(admin_url, poolclass=NullPool)
    try:
        async with db_errors(admin_url), engine.begin() as conn:
            mapped = await conn.scalar(
                text("SELECT tenant FROM tenant_roles WHERE role = :role"), {"role": role}
            )
            if mapped is not None:
                raise RoleConflictError(
                    role, f"belongs to tenant {mapped!r}; a platform role must be another login"
                )
            created = await _ensure_login(conn, role, password)
            await conn.execute(text(f'GRANT {PLATFORM_ROLE} TO "{role}"'))
    finally:
        await engine.dispose()
    return RoleGrant(role=role, tenant=None, created=created, password_set=password is not None)


async def revoke_tenant(admin_url: str | URL, role: str) -> str | None:
    """Unmaps ``role`` from its tenant and revokes ``wfa_tenant`` (the login itself is kept).

    Returns:
        The tenant it belonged to (None: it belonged to none).
    """
    check_role(role)
    engine = create_engine(admin_url, poolclass=NullPool)
    try:
        async with db_errors(admin_url), engine.begin() as conn:
            tenant: str | None = await conn.scalar(
                text("DELETE FROM tenant_roles WHERE role = :role RETURNING tenant"), {"role": role}
            )
            if await _role_flags(conn, role) is not None:
                await conn.execute(text(f'REVOKE {TENANT_ROLE} FROM "{role}"'))
    finally:
        await engine.dispose()
    return tenant


async def list_tenant_roles(url: str | URL) -> list[TenantRole]:
    """The rows of ``tenant_roles`` the connecting role may see (all of them for the platform)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with db_errors(url), engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT role, tenant, granted_by, granted_at FROM tenant_roles ORDER BY tenant, role"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return [TenantRole(role=r, tenant=t, granted_by=b, granted_at=a) for r, t, b, a in rows]
