"""What the gateway holds while it runs: the store, and one client per tenant, opened lazily."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig

if TYPE_CHECKING:
    from temporalio.client import Client

    from activities.store.database import Database
    from starter.client import FlowClient

__all__ = ["GatewayState", "UnknownTenantError"]

log = logging.getLogger("gateway")


class UnknownTenantError(LookupError):
    """The tenant is not one the gateway serves."""


class GatewayState:
    """The store's database and the tenants' clients, shared by every request.

    Both are opened on first use (a gateway whose Temporal or database is down still starts, and
    says so on ``/readyz``), under a lock so concurrent requests open them once.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._database: Database | None = None
        self._clients: dict[str, FlowClient] = {}
        self._lock = asyncio.Lock()
        self._health: Client | None = None

    async def database(self) -> Database:
        """The store (opened and its schema revision checked on first use).

        Raises:
            DatabaseUnavailableError, MigrationsNotAppliedError: See ``open_database``.
        """
        async with self._lock:
            if self._database is None:
                from activities.store.database import open_database

                self._database = await open_database(self.config.database_url)
            return self._database

    async def client(self, tenant: str) -> FlowClient:
        """The tenant's client (its namespace and credentials), connected on first use.

        Raises:
            UnknownTenantError: Not a tenant of :attr:`GatewayConfig.tenants`.
            ServerUnavailableError: Temporal cannot be reached.
        """
        if tenant not in self.config.tenants:
            raise UnknownTenantError(tenant)
        found = self._clients.get(tenant)
        if found is not None:
            return found
        database = await self.database()
        async with self._lock:
            found = self._clients.get(tenant)
            if found is None:
                from starter.client import FlowClient

                connected = await FlowClient.connect(
                    self.config.address, task_queue=self.config.task_queue, tenant=tenant
                )
                # One store for every tenant (its rows are scoped by the client's tenant).
                found = FlowClient(
                    connected.client, task_queue=connected.task_queue, database=database, tenant=tenant
                )
                self._clients[tenant] = found
                log.info("connected tenant %s to namespace %s at %s", tenant, found.namespace, found.address)
            return found

    async def health_client(self) -> Client:
        """A Temporal connection to check the server's health with: a tenant's when one is open,
        else one of its own, made once (a tenant's client needs the database first, so a database
        that was down read as Temporal's failure on ``/readyz``: found by a probe).

        Raises:
            ServerUnavailableError: Temporal cannot be reached.
        """
        for found in self._clients.values():
            return found.client
        if self._health is None:
            from starter.client import FlowClient

            connected = await FlowClient.connect(
                self.config.address, task_queue=self.config.task_queue, tenant=self.config.tenants[0]
            )
            self._health = connected.client
        return self._health

    async def close(self) -> None:
        """Closes the store and the payload-store drivers of the clients' data converters (their
        database engines); the Temporal connections have nothing to close."""
        clients = list(self._clients.values())
        self._clients.clear()
        for found in clients:
            storage = found.client.data_converter.external_storage
            for driver in storage.drivers if storage is not None else ():
                close = getattr(driver, "close", None)
                if close is not None and inspect.isawaitable(closing := close()):
                    await closing
        database, self._database = self._database, None
        if database is not None:
            await database.close()
