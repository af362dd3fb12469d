"""A name may have no active version: ``wfa definitions deactivate`` stops its triggers (and starts
by name) until a version is activated again.

* ``definition_heads.active_version`` becomes nullable (NULL: deactivated; the foreign key to
  ``definitions`` is not checked for NULL).
* The activations log records ``deactivate``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "'register', 'activate', 'rollback', 'archive'"

# The check on ``activations.kind``, whatever name it was created under (0001's name went through the
# metadata's naming convention).
DROP_KIND_CHECK = """
DO $$
DECLARE found text;
BEGIN
    FOR found IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'activations'::regclass AND contype = 'c'
          AND pg_get_constraintdef(oid) LIKE '%kind%'
    LOOP
        EXECUTE format('ALTER TABLE activations DROP CONSTRAINT %I', found);
    END LOOP;
END $$
"""


def upgrade() -> None:
    op.alter_column("definition_heads", "active_version", existing_type=sa.Integer(), nullable=True)
    op.execute(DROP_KIND_CHECK)
    op.execute(
        f"ALTER TABLE activations ADD CONSTRAINT ck_activations_kind_known CHECK (kind IN ({KINDS}, 'deactivate'))"
    )


def downgrade() -> None:
    # Fails while a name is deactivated or the log records a deactivation: activate a version first.
    op.execute(DROP_KIND_CHECK)
    op.execute(f"ALTER TABLE activations ADD CONSTRAINT ck_activations_kind_known CHECK (kind IN ({KINDS}))")
    op.alter_column("definition_heads", "active_version", existing_type=sa.Integer(), nullable=False)
