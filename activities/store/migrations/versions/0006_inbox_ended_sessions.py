"""Signed-out inbox sessions: ``inbox_ended_sessions`` holds the SHA-256 of the CSRF secret of each
session someone signed out of, until its cookie would have expired, so that every gateway process
(and a restarted one) refuses a copy of the cookie, not only the process that signed it out.

Only the gateway, a platform member, reads and writes it: tenant roles get no privilege on it, and
row-level security with a platform-only policy holds even a role that was granted one by hand.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORM_ROLE = "wfa_platform"
TENANT_ROLE = "wfa_tenant"
POLICY = "platform_only"
_PLATFORM = f"(SELECT pg_has_role(current_user, '{PLATFORM_ROLE}', 'MEMBER'))"


def upgrade() -> None:
    op.create_table(
        "inbox_ended_sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name="pk_inbox_ended_sessions"),
    )
    op.create_index("ix_inbox_ended_sessions_expires_at", "inbox_ended_sessions", ["expires_at"])
    op.execute(f"GRANT SELECT, INSERT, DELETE ON inbox_ended_sessions TO {PLATFORM_ROLE}")
    op.execute(f"REVOKE ALL ON inbox_ended_sessions FROM {TENANT_ROLE}")
    op.execute("ALTER TABLE inbox_ended_sessions ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE inbox_ended_sessions FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY {POLICY} ON inbox_ended_sessions USING ({_PLATFORM}) WITH CHECK ({_PLATFORM})")


def downgrade() -> None:
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON inbox_ended_sessions")
    op.execute(f"REVOKE ALL ON inbox_ended_sessions FROM {PLATFORM_ROLE}, {TENANT_ROLE}")
    op.drop_index("ix_inbox_ended_sessions_expires_at", table_name="inbox_ended_sessions")
    op.drop_table("inbox_ended_sessions")
