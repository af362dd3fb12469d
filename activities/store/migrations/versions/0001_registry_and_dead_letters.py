"""Definition registry (definitions, definition_heads, activations) and dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", postgresql.JSONB(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("archived_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_definitions"),
        sa.UniqueConstraint("tenant", "name", "version", name="uq_definitions_tenant_name_version"),
        sa.UniqueConstraint("tenant", "name", "content_hash", name="uq_definitions_tenant_name_content_hash"),
        sa.CheckConstraint("version >= 1", name="ck_definitions_version_positive"),
    )
    op.create_table(
        "definition_heads",
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "name", name="pk_definition_heads"),
        sa.ForeignKeyConstraint(
            ["tenant", "name", "active_version"],
            ["definitions.tenant", "definitions.name", "definitions.version"],
            name="fk_definition_heads_definitions",
        ),
    )
    op.create_table(
        "activations",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activations"),
        sa.ForeignKeyConstraint(
            ["tenant", "name", "version"],
            ["definitions.tenant", "definitions.name", "definitions.version"],
            name="fk_activations_definitions",
        ),
        sa.CheckConstraint(
            "kind IN ('register', 'activate', 'rollback', 'archive')", name="ck_activations_kind_known"
        ),
    )
    op.create_index("ix_activations_tenant_name_id", "activations", ["tenant", "name", "id"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("definition", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("park_id", sa.Text(), nullable=False),
        sa.Column("step_id", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("input", postgresql.JSONB(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("parked_at", TZ, nullable=False),
        sa.Column("status", sa.String(20), server_default="open", nullable=False),
        sa.Column("resolved_by", sa.String(200), nullable=True),
        sa.Column("resolved_at", TZ, nullable=True),
        sa.Column("resolution", postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint(
            "workflow_id", "run_id", "park_id", name="uq_dead_letters_workflow_id_run_id_park_id"
        ),
        sa.CheckConstraint(
            "status IN ('open', 'redriven', 'skipped', 'aborted', 'timed_out', 'cancelled')",
            name="ck_dead_letters_status_known",
        ),
    )
    op.create_index(
        "ix_dead_letters_tenant_status_parked_at", "dead_letters", ["tenant", "status", "parked_at"]
    )
    op.create_index("ix_dead_letters_tenant_workflow_id", "dead_letters", ["tenant", "workflow_id"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("activations")
    op.drop_table("definition_heads")
    op.drop_table("definitions")
