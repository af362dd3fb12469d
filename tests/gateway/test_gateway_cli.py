"""The gateway's ``wfa`` commands as real processes: ``serve``, ``keys api``, ``triggers``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from uuid import uuid4

import asyncpg
import httpx
from temporalio.testing import WorkflowEnvironment

from activities.store.database import Database
from activities.store.repository import DefinitionStore
from tests.conftest import fresh_database
from tests.helpers.wfa_process import ROOT, run_wfa, wfa_env
from tests.workflows.support import eventually


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_wfa_serve_answers_health_and_readiness_and_stops_on_sigterm(
    temporal_env: WorkflowEnvironment, database_url: str
) -> None:
    port = _free_port()
    env = wfa_env(
        temporal_env.client.service_client.config.target_host, f"tq-{uuid4()}", DATABASE_URL=database_url
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "serve", "--port", str(port),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=30) as http:

            async def ready() -> int:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code
                except httpx.TransportError:
                    return 0

            assert await eventually(ready, lambda s: s == 200, timeout=120, what="/readyz 200") == 200
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).json() == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal so the process ends as signalled.
    assert process.returncode in {0, -signal.SIGTERM}, err.decode()[-2000:]
    assert b"Application shutdown complete" in err
    assert b"Traceback" not in err


async def test_wfa_keys_api_create_list_revoke(temporal_env: WorkflowEnvironment, database_url: str) -> None:
    env = wfa_env("127.0.0.1:1", "tq", DATABASE_URL=database_url)
    created = await run_wfa("--tenant", "acme", "keys", "api", "create", "--name", "billing", env=env)
    assert created.code == 0, created.describe()
    key = created.out.splitlines()[0]
    assert key.startswith("wfa_")
    assert len(key) == 47
    listed = await run_wfa("keys", "api", "list", "--tenant", "acme", env=env)
    assert listed.code == 0, listed.describe()
    assert "billing" in listed.out
    assert "active" in listed.out
    assert key not in listed.out
    key_id = listed.out.split()[0]
    revoked = await run_wfa("keys", "api", "revoke", key_id, "--tenant", "acme", env=env)
    assert revoked.code == 0, revoked.describe()
    again = await run_wfa("keys", "api", "revoke", key_id, "--tenant", "acme", env=env)
    assert again.code == 4, again.describe()  # no active key of that id: not found, as for runs
    assert f"tenant acme has no active API key {key_id}" in again.err
    other = await run_wfa("keys", "api", "revoke", key_id, "--tenant", "globex", env=env)
    assert other.code == 4, other.describe()  # another tenant's key is not found
    bad = await run_wfa("keys", "api", "create", "--tenant", "acme", "--name", "no spaces", env=env)
    assert bad.code == 2
    assert bad.clean, bad.describe()


async def test_wfa_triggers_refuse_what_is_not_declared_and_uninstall(
    postgres_server_url: str, database_url: str
) -> None:
    async with fresh_database(postgres_server_url, "wfa_trig", migrate=False) as user_url:
        plain = user_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(plain)
        try:
            await conn.execute("CREATE TABLE leads (id serial PRIMARY KEY, email text)")
            env = wfa_env("127.0.0.1:1", "tq", DATABASE_URL=database_url, WFA_SECRET_LEADS_DB=user_url)
            name = f"leads-{uuid4().hex[:6]}"
            database = Database(database_url)
            try:
                await DefinitionStore(database.session_factory, "default").register(
                    {
                        "name": name,
                        "steps": [{"id": "w", "type": "delay", "duration": "1h"}],
                        "triggers": [
                            {
                                "type": "row_change",
                                "connection": "LEADS_DB",
                                "table": "leads",
                                "operations": ["insert", "update"],
                            }
                        ],
                    },
                    "test",
                )
            finally:
                await database.close()
            args = ("--connection", "LEADS_DB", "--definition", name)
            undeclared = await run_wfa("triggers", "install", "--table", "other", *args, env=env)
            assert undeclared.code == 2, undeclared.describe()
            assert "declares no row_change trigger" in undeclared.err
            no_secret = await run_wfa(
                "triggers",
                "install",
                "--table",
                "leads",
                "--connection",
                "NOPE",
                "--definition",
                name,
                env=env,
            )
            assert no_secret.code == 2, no_secret.describe()
            # A version is no trigger's to name: changes start the active one (a probe: name@1
            # wired v1 for ever).
            pinned = await run_wfa(
                "triggers",
                "install",
                "--table",
                "leads",
                "--connection",
                "LEADS_DB",
                "--definition",
                f"{name}@1",
                env=env,
            )
            assert pinned.code == 2, pinned.describe()
            assert "--definition takes a name, not a version" in pinned.err
            # The table in another schema than the one declared (a probe: installed on
            # public.leads while the definition named sales.leads, every change failed).
            await conn.execute("CREATE SCHEMA IF NOT EXISTS sales")
            await conn.execute("CREATE TABLE IF NOT EXISTS sales.leads (id serial PRIMARY KEY)")
            elsewhere = await run_wfa("triggers", "install", "--table", "sales.leads", *args, env=env)
            assert elsewhere.code == 0, elsewhere.describe()  # declared as "leads": any schema's
            await run_wfa("triggers", "uninstall", "--table", "sales.leads", *args, env=env)
            qualified = f"{name}-sales"
            database = Database(database_url)
            try:
                await DefinitionStore(database.session_factory, "default").register(
                    {
                        "name": qualified,
                        "steps": [{"id": "w", "type": "delay", "duration": "1h"}],
                        "triggers": [
                            {"type": "row_change", "connection": "LEADS_DB", "table": "sales.leads"}
                        ],
                    },
                    "test",
                )
            finally:
                await database.close()
            wrong = await run_wfa(
                "triggers",
                "install",
                "--table",
                "leads",
                "--connection",
                "LEADS_DB",
                "--definition",
                qualified,
                env=env,
            )
            assert wrong.code == 2, wrong.describe()
            assert "'leads' is public.leads in that database" in wrong.err
            assert "declares its row_change trigger on sales.leads" in wrong.err
            installed = await run_wfa("triggers", "install", "--table", "leads", *args, env=env)
            assert installed.code == 0, installed.describe()
            assert "insert, update" in installed.out
            await conn.execute("INSERT INTO leads (email) VALUES ('a@example.com')")
            await conn.execute("UPDATE leads SET email = 'b@example.com'")
            rows = await conn.fetch(
                "SELECT operation, old_row, new_row, definition FROM wfa_outbox ORDER BY change_id"
            )
            assert [r["operation"] for r in rows] == ["insert", "update"]
            assert {r["definition"] for r in rows} == {name}
            # A change that rolls back leaves nothing in the outbox.
            with contextlib.suppress(RuntimeError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO leads (email) VALUES ('c@example.com')")
                    raise RuntimeError("roll back")
            assert await conn.fetchval("SELECT count(*) FROM wfa_outbox") == 2
            removed = await run_wfa("triggers", "uninstall", "--table", "leads", *args, env=env)
            assert removed.code == 0, removed.describe()
            assert "removed from" in removed.out
            await conn.execute("INSERT INTO leads (email) VALUES ('d@example.com')")
            assert await conn.fetchval("SELECT count(*) FROM wfa_outbox") == 2
        finally:
            await conn.close()
