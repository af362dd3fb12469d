"""API keys of the gateway's ``/events`` endpoint, stored hashed, under row-level security.

``api_keys`` holds the SHA-256 of each key (the key is a high-entropy random string printed once by
``wfa keys api create``), its tenant and a name. Like the other tenant tables it forces row-level
security with the same policy: a tenant's role sees only its tenant's keys; the gateway, which
looks a key up before it knows the tenant, connects as a platform member.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORM_ROLE = "wfa_platform"
TENANT_ROLE = "wfa_tenant"
POLICY = "tenant_isolation"
_PLATFORM = f"(SELECT pg_has_role(current_user, '{PLATFORM_ROLE}', 'MEMBER'))"
_OWN_TENANT = "tenant IN (SELECT m.tenant FROM tenant_roles m WHERE m.role = current_user::text)"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO {PLATFORM_ROLE}")
    op.execute(f"GRANT SELECT ON api_keys TO {TENANT_ROLE}")
    op.execute("ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE api_keys FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON api_keys"
        f" USING ({_PLATFORM} OR {_OWN_TENANT}) WITH CHECK ({_PLATFORM} OR {_OWN_TENANT})"
    )


def downgrade() -> None:
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON api_keys")
    op.execute(f"REVOKE ALL ON api_keys FROM {PLATFORM_ROLE}, {TENANT_ROLE}")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
