"""The gateway releases what the payload store holds when it shuts down: the codec server's
reference resolver (its per-namespace drivers and their database engines) and the drivers in the
tenants' clients' data converters. On a real uvicorn server, the embedded PostgreSQL and the
session's dev server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from temporalio.api.common.v1 import Payload
from temporalio.converter import StorageDriverClaim, StorageDriverStoreContext
from temporalio.testing import WorkflowEnvironment

from gateway.app import create_app
from gateway.codec import codec_server_from_env
from gateway.config import GatewayConfig
from gateway.state import GatewayState
from starter.payload_store import PostgresDriver, ReferenceResolver
from tests.test_payload_store import REFERENCE_TYPE, reference_to
from tests.workflows.support import eventually

KEY = base64.b64encode(b"G" * 32).decode()
TOKEN = "gateway-shutdown-token-0123456789"


def store_env(database_url: str) -> dict[str, str]:
    return {
        "WFA_PAYLOAD_KEYS": f"g={KEY}",
        "WFA_CODEC_TOKENS": TOKEN,
        "WFA_PAYLOAD_STORE": "postgres",
        "DATABASE_URL": database_url,
    }


async def _true(value: Any) -> Any:
    return value


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[int]:
    """Runs ``app`` on a real uvicorn server (lifespan on); stops it, as SIGTERM would, on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _true(server.started), bool, what="the server")
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 60)


async def stored_reference(database_url: str, namespace: str) -> tuple[Payload, Payload]:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'{"order": "shut-down"}')
    driver = PostgresDriver(database_url, namespace=namespace)
    try:
        [claim] = await driver.store(StorageDriverStoreContext(), [payload])
    finally:
        await driver.close()
    return payload, reference_to(StorageDriverClaim(claim.claim_data), PostgresDriver.NAME)


async def test_the_codec_resolver_is_closed_when_the_server_stops(database_url: str) -> None:
    """The router's lifespan runs within the app's (as in ``create_app``): after a request that
    opened two namespaces' drivers, stopping the server drops them and disposes their engines."""
    payload, reference = await stored_reference(database_url, "acme")
    server = codec_server_from_env(store_env(database_url))
    assert server is not None
    router, resolver = server
    assert isinstance(resolver, ReferenceResolver)
    closed_by_app: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        closed_by_app.append(True)

    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    async with serving(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        body = json.dumps(
            {
                "payloads": [
                    {
                        "metadata": {k: base64.b64encode(v).decode() for k, v in reference.metadata.items()},
                        "data": base64.b64encode(reference.data).decode(),
                    }
                ]
            }
        )
        answers = {}
        for namespace in ("acme", "globex"):
            response = await http.post(
                "/codec/decode",
                content=body,
                headers={"Authorization": f"Bearer {TOKEN}", "X-Namespace": namespace},
            )
            assert response.status_code == 200, response.text
            answers[namespace] = response.json()["payloads"][0]
        assert base64.b64decode(answers["acme"]["data"]) == payload.data  # resolved
        assert base64.b64decode(answers["globex"]["metadata"]["messageType"]) == REFERENCE_TYPE  # not
        drivers = list(resolver._drivers.values())
        assert len(drivers) == 2
        assert all(isinstance(d, PostgresDriver) and d._database is not None for d in drivers)
    assert closed_by_app == [True]
    assert resolver._drivers == {}
    assert all(isinstance(d, PostgresDriver) and d._database is None for d in drivers)


async def test_the_gateway_closes_its_clients_payload_drivers(
    database_url: str, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GatewayState.close`` (the gateway app's lifespan end) closes the database engines of the
    payload-store drivers in its tenants' data converters; and a gateway with the codec server and
    the store on starts and stops cleanly on a real server."""
    for name, value in store_env(database_url).items():
        monkeypatch.setenv(name, value)
    address = temporal_env.client.service_client.config.target_host
    config = GatewayConfig(address=address, database_url=database_url)
    state = GatewayState(config)
    flows = await state.client("default")
    storage = flows.client.data_converter.external_storage
    assert storage is not None
    [driver] = storage.drivers
    assert isinstance(driver, PostgresDriver)
    await driver.database()  # as a stored payload read or written through this client would
    assert driver._database is not None
    await state.close()
    assert driver._database is None

    async with (
        serving(create_app(config)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        preflight = await http.options("/codec/decode", headers={"Origin": "http://localhost:8080"})
        assert preflight.status_code == 204
        # A payload of 400 KB (they may be 2 MiB) to encode and decode: the gateway's own 256 KiB
        # body limit refused it before the codec's 8 MiB did (a probe).
        big = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}}
        big["data"] = base64.b64encode(json.dumps("x" * 400_000).encode()).decode()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        encoded = await http.post("/codec/encode", json={"payloads": [big]}, headers=auth)
        assert encoded.status_code == 200, encoded.text[:300]
        decoded = await http.post("/codec/decode", json=encoded.json(), headers=auth)
        assert decoded.status_code == 200, decoded.text[:300]
        assert decoded.json()["payloads"][0]["data"] == big["data"]
        too_large = await http.post("/events", content=b"x" * 300_000, headers=auth)
        assert too_large.status_code == 413  # the rest of the gateway keeps its limit
