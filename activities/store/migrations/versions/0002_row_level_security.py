"""Row-level security: a tenant's database role reads and writes only its tenant's rows.

* ``tenant_roles`` maps a database role (a login of one tenant's services) to its tenant. Only the
  platform writes it; a tenant role reads its own row and nothing else.
* ``wfa_platform`` (NOLOGIN): its members see and write every tenant's rows (the worker, which parks
  and resolves every tenant's dead letters; the operators; the role that runs the migrations, which
  is made a member here). Superusers bypass row-level security altogether.
* ``wfa_tenant`` (NOLOGIN): holds the table privileges of tenant roles (SELECT, INSERT, UPDATE; no
  DELETE, the store never deletes). Membership alone shows nothing: the policies only let a role
  through to the tenant ``tenant_roles`` maps it to.
* The four tables get ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` (the owner is held to the policies
  too, so it must be a platform member like any other) and one policy each: the row's tenant is the
  connecting role's tenant, or the role is a platform member. ``USING`` hides other tenants' rows
  from SELECT, UPDATE and DELETE; ``WITH CHECK`` refuses an INSERT or UPDATE that writes another
  tenant's value.
* The idempotency key of ``dead_letters`` now includes the tenant, so one tenant's row can never
  collide with (or be returned for) another tenant's parked step.

Roles are shared by every database of a server, so they are created only when missing and are not
dropped by the downgrade (it revokes what it granted in this database).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORM_ROLE = "wfa_platform"
TENANT_ROLE = "wfa_tenant"
TABLES = ("definitions", "definition_heads", "activations", "dead_letters")
POLICY = "tenant_isolation"

# Evaluated once per statement (an InitPlan), not once per row.
_PLATFORM = f"(SELECT pg_has_role(current_user, '{PLATFORM_ROLE}', 'MEMBER'))"
_OWN_TENANT = "tenant IN (SELECT m.tenant FROM tenant_roles m WHERE m.role = current_user::text)"

_CREATE_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {role} NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object THEN NULL;  -- created meanwhile by a migration of another database
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'permission denied: the role {role} does not exist and % may not create it;'
            ' run `wfa db upgrade` once as a role with CREATEROLE, or have an administrator run'
            ' CREATE ROLE {role} NOLOGIN', current_user
            USING ERRCODE = 'insufficient_privilege';
END
$$
"""

_JOIN_PLATFORM = f"""
DO $$
BEGIN
    IF NOT pg_has_role(current_user, '{PLATFORM_ROLE}', 'MEMBER') THEN
        EXECUTE format('GRANT {PLATFORM_ROLE} TO %I', current_user);
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'permission denied: % runs the migrations, so it must be a member of {PLATFORM_ROLE}'
            ' (the tables force row-level security on their owner too); have an administrator run'
            ' GRANT {PLATFORM_ROLE} TO %', current_user, current_user
            USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "tenant_roles",
        sa.Column("role", sa.String(63), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("granted_by", sa.String(63), server_default=sa.text("CURRENT_USER"), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("role", name="pk_tenant_roles"),
    )
    op.create_index("ix_tenant_roles_tenant", "tenant_roles", ["tenant"])

    op.drop_constraint("uq_dead_letters_workflow_id_run_id_park_id", "dead_letters", type_="unique")
    op.create_unique_constraint(
        "uq_dead_letters_tenant_workflow_id_run_id_park_id",
        "dead_letters",
        ["tenant", "workflow_id", "run_id", "park_id"],
    )

    op.execute(_CREATE_ROLE.format(role=PLATFORM_ROLE))
    op.execute(_CREATE_ROLE.format(role=TENANT_ROLE))
    op.execute(_JOIN_PLATFORM)

    tables = ", ".join(TABLES)
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables}, tenant_roles TO {PLATFORM_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {tables} TO {TENANT_ROLE}")
    op.execute(f"GRANT SELECT ON tenant_roles TO {TENANT_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version TO {PLATFORM_ROLE}, {TENANT_ROLE}")  # the schema check
    op.execute(
        f"DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO {PLATFORM_ROLE}, {TENANT_ROLE}',"
        " current_schema()); END $$"
    )

    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table}"
            f" USING ({_PLATFORM} OR {_OWN_TENANT}) WITH CHECK ({_PLATFORM} OR {_OWN_TENANT})"
        )
    op.execute("ALTER TABLE tenant_roles ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tenant_roles FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY own_mapping ON tenant_roles"
        f" USING ({_PLATFORM} OR role = current_user::text) WITH CHECK ({_PLATFORM})"
    )


def downgrade() -> None:
    op.execute("DROP POLICY IF EXISTS own_mapping ON tenant_roles")
    for table in TABLES:
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    tables = ", ".join(TABLES)
    op.execute(f"REVOKE ALL ON {tables} FROM {PLATFORM_ROLE}, {TENANT_ROLE}")
    op.execute(f"REVOKE ALL ON alembic_version FROM {PLATFORM_ROLE}, {TENANT_ROLE}")
    op.drop_constraint("uq_dead_letters_tenant_workflow_id_run_id_park_id", "dead_letters", type_="unique")
    op.create_unique_constraint(
        "uq_dead_letters_workflow_id_run_id_park_id", "dead_letters", ["workflow_id", "run_id", "park_id"]
    )
    op.drop_index("ix_tenant_roles_tenant", table_name="tenant_roles")
    op.drop_table("tenant_roles")
