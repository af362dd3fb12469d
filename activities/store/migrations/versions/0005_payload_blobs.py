"""Large payloads by reference: ``payload_blobs`` holds the payloads Temporal's history refers to
(:mod:`starter.payload_store`, ``WFA_PAYLOAD_STORE=postgres``).

One row per (namespace, SHA-256 of the stored bytes): the same payload is stored once per namespace.
The bytes are what the data converter stored, i.e. encrypted when the payload codec is on. Rows are
keyed by namespace, not tenant (the SDK gives the driver the namespace of the run), so the table has
no row-level policy: platform members write and read it, tenant roles read it (a row is found only
by its digest, which a reader learns from the run's history, and it is verified on read).

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
    op.execute(f"GRANT SELECT, INSERT, DELETE ON payload_blobs TO {PLATFORM_ROLE}")
    op.execute(f"GRANT SELECT, INSERT ON payload_blobs TO {TENANT_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON payload_blobs FROM {PLATFORM_ROLE}, {TENANT_ROLE}")
    op.drop_index("ix_payload_blobs_created_at", table_name="payload_blobs")
    op.drop_table("payload_blobs")
