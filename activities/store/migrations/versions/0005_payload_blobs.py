"""Large payloads by reference: ``payload_blobs`` holds the payloads Temporal's history refers to
(:mod:`starter.payload_store`, ``WFA_PAYLOAD_STORE=postgres``).

One row per (namespace, SHA-256 of the stored bytes): the same payload is stored once per namespace.
The bytes are what the data converter stored, i.e. encrypted when the payload codec is on. Rows are
keyed by namespace, not tenant (the SDK gives the driver the namespace of the run, and a namespace
may serve several tenants), so a tenant policy cannot separate them: only platform members (the
worker, the gateway, operators) read and write the table. Tenant roles get no privilege on it, and
row-level security with a platform-only policy holds even a role that was granted one by hand.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORM_ROLE = "wfa_platform"
TENANT_ROLE = "wfa_tenant"
POLICY = "platform_only"
_PLATFORM = f"(SELECT pg_has_role(current_user, '{PLATFORM_ROLE}', 'MEMBER'))"


def upgrade() -> None:
    op.create_table(
        "payload_blobs",
        sa.Column("namespace", sa.String(1000), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "digest", name="pk_payload_blobs"),
    )
    op.create_index("ix_payload_blobs_created_at", "payload_blobs", ["created_at"])
    # UPDATE: a store replaces a row whose bytes do not match its digest (ON CONFLICT DO UPDATE).
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON payload_blobs TO {PLATFORM_ROLE}")
    op.execute(f"REVOKE ALL ON payload_blobs FROM {TENANT_ROLE}")
    op.execute("ALTER TABLE payload_blobs ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE payload_blobs FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY {POLICY} ON payload_blobs USING ({_PLATFORM}) WITH CHECK ({_PLATFORM})")


def downgrade() -> None:
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON payload_blobs")
    op.execute(f"REVOKE ALL ON payload_blobs FROM {PLATFORM_ROLE}, {TENANT_ROLE}")
    op.drop_index("ix_payload_blobs_created_at", table_name="payload_blobs")
    op.drop_table("payload_blobs")
