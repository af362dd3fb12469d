"""Alembic environment of the store's migrations.

Run programmatically: :func:`activities.store.database.upgrade_database` (``wfa db upgrade``) passes
an open connection in ``config.attributes["connection"]``. Without one (alembic's own command line
with ``-x url=...`` or ``$DATABASE_URL``), it connects itself.

New revision: ``python -c "from alembic import command; from activities.store.database import
alembic_config; command.revision(alembic_config(), 'what changed')"``, then write its upgrade and
downgrade by hand (tests/store checks that the models and the migrations agree).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from activities.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=config.get_main_option("version_table") or "alembic_version",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from activities.store.database import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ["DATABASE_URL"]

    async def run() -> None:
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(run())


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "postgresql://",
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=config.get_main_option("version_table") or "alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    _online()
