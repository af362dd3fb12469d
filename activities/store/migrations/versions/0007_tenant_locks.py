"""What a tenant's login may lock and write: nothing that holds up another tenant.

Found by an attacker's probe holding tenant B's database login:

- The registry serialised writes to a name with an advisory lock keyed by tenant and name, and any
  login may take any advisory lock: B held A's key, and A's ``register``, ``activate`` and
  ``rollback`` of that name waited for good. The registry now locks a row of ``store_locks``
  (``tenant``, ``key``), which row-level security keeps B from seeing, inserting or locking.
- ``wfa_tenant`` had table-wide ``INSERT`` and ``UPDATE``, which PostgreSQL takes as leave to
  ``LOCK TABLE`` in any mode: B froze the registry and the dead letters of every tenant and of the
  worker. It now has them on named columns, which allow no lock stronger than a read's.
- Those columns leave out ``id``: B chose ids itself, learning from the primary key's refusals
  which ids A's rows hold, and taking the ids the shared counters would give A next, so that A's
  ``register`` and the worker's parking of A's dead letters failed again and again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORM_ROLE = "wfa_platform"
TENANT_ROLE = "wfa_tenant"
TABLES = ("definitions", "definition_heads", "activations", "dead_letters")
POLICY = "tenant_isolation"
_PLATFORM = f"(SELECT pg_has_role(current_user, '{PLATFORM_ROLE}', 'MEMBER'))"
_OWN_TENANT = "tenant IN (SELECT m.tenant FROM tenant_roles m WHERE m.role = current_user::text)"

# Every column but ``id``, read from the table as migrated (a later column needs its own grant).
_GRANT_COLUMNS = """
DO $$
DECLARE columns text;
BEGIN
    SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) INTO columns
    FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = '{table}' AND column_name <> 'id';
    EXECUTE format('GRANT INSERT (%s), UPDATE (%s) ON {table} TO {role}', columns, columns);
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "store_locks",
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "key", name="pk_store_locks"),
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON store_locks TO {PLATFORM_ROLE}")
    # UPDATE on a column only: what SELECT ... FOR UPDATE needs, and no LOCK TABLE beyond a read's.
    op.execute(f"GRANT SELECT, INSERT (tenant, key), UPDATE (key) ON store_locks TO {TENANT_ROLE}")
    op.execute("ALTER TABLE store_locks ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE store_locks FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON store_locks"
        f" USING ({_PLATFORM} OR {_OWN_TENANT}) WITH CHECK ({_PLATFORM} OR {_OWN_TENANT})"
    )
    op.execute(f"REVOKE INSERT, UPDATE ON {', '.join(TABLES)} FROM {TENANT_ROLE}")
    for table in TABLES:
        op.execute(_GRANT_COLUMNS.format(table=table, role=TENANT_ROLE))


def downgrade() -> None:
    tables = ", ".join(TABLES)
    # Revoking the table privilege takes the column privileges with it; then as 0002 granted them.
    op.execute(f"REVOKE INSERT, UPDATE ON {tables} FROM {TENANT_ROLE}")
    op.execute(f"GRANT INSERT, UPDATE ON {tables} TO {TENANT_ROLE}")
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON store_locks")
    op.execute(f"REVOKE ALL ON store_locks FROM {PLATFORM_ROLE}, {TENANT_ROLE}")
    op.drop_table("store_locks")
