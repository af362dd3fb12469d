"""Tenant API keys for the gateway's ``/events`` endpoint, stored as SHA-256 hashes.

A key is ``wfa_`` and 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits), so a
plain SHA-256 is the right hash: nothing to brute-force, and one indexed look-up per request.
The key is shown once, by :func:`create_key` (``wfa keys api create --tenant T``), and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import select, update

from activities.store.database import SessionFactory, db_errors
from activities.store.models import ApiKeyRow
from activities.store.repository import check_tenant

__all__ = ["KEY_PREFIX", "ApiKeyInfo", "authenticate", "create_key", "hash_key", "list_keys", "revoke_key"]

KEY_PREFIX = "wfa_"
_KEY_SHAPE = re.compile(r"^wfa_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


class ApiKeyInfo(BaseModel):
    """A stored key, without the key."""

    id: int
    tenant: str
    name: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    """The stored form of a key (hex SHA-256)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _url(session_factory: SessionFactory) -> str:
    bind = session_factory.kw.get("bind")
    return str(getattr(bind, "url", "the database"))


async def create_key(
    session_factory: SessionFactory, tenant: str, name: str, actor: str
) -> tuple[str, ApiKeyInfo]:
    """Creates a key of ``tenant`` and returns it (the only time it is seen) with its record.

    Raises:
        InvalidTenantError: A malformed tenant.
        ValueError: A malformed name.
    """
    check_tenant(tenant)
    if not _NAME.match(name):
        raise ValueError(f"{name[:120]!r} is not a key name (1-100 of A-Z a-z 0-9 _ . : -)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with db_errors(_url(session_factory), tenant), session_factory() as session, session.begin():
        row = ApiKeyRow(tenant=tenant, name=name, key_hash=hash_key(key), created_by=actor[:200])
        session.add(row)
        await session.flush()
        await session.refresh(row)
        info = _info(row)
    return key, info


def _info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


async def authenticate(session_factory: SessionFactory, key: str) -> str | None:
    """The tenant of a valid (known, not revoked) key, else None.

    A value of the wrong shape is refused without a query. The look-up is by hash (an index
    equality); the found hash is compared again in constant time.
    """
    if not _KEY_SHAPE.match(key):
        return None
    digest = hash_key(key)
    async with db_errors(_url(session_factory)), session_factory() as session:
        row = (
            await session.execute(
                select(ApiKeyRow.tenant, ApiKeyRow.key_hash).where(
                    ApiKeyRow.key_hash == digest, ApiKeyRow.revoked_at.is_(None)
                )
            )
        ).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    tenant: str = row.tenant
    return tenant


async def list_keys(session_factory: SessionFactory, tenant: str) -> list[ApiKeyInfo]:
    """The tenant's keys (revoked ones too), oldest first."""
    check_tenant(tenant)
    async with db_errors(_url(session_factory), tenant), session_factory() as session:
        rows = (
            await session.execute(select(ApiKeyRow).where(ApiKeyRow.tenant == tenant).order_by(ApiKeyRow.id))
        ).scalars()
        return [_info(row) for row in rows]


async def revoke_key(session_factory: SessionFactory, tenant: str, key_id: int) -> bool:
    """Revokes one of the tenant's keys; False when it has no such (unrevoked) key."""
    check_tenant(tenant)
    async with db_errors(_url(session_factory), tenant), session_factory() as session, session.begin():
        result = await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.tenant == tenant, ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return bool(getattr(result, "rowcount", 0))
