"""Serving the gateway with uvicorn (``wfa serve``, ``python -m gateway``, the demo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator

from gateway.config import GatewayConfig, GatewayConfigError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "running", "serve"]

DEFAULT_HOST = os.environ.get("WFA_GATEWAY_HOST", "127.0.0.1")
DEFAULT_PORT = int(os.environ.get("WFA_GATEWAY_PORT", "8000") or 8000)


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: GatewayConfig | None = None) -> int:
    """Serves the gateway until SIGINT/SIGTERM; returns an exit code (2 for a bad configuration).

    uvicorn's own limits apply below the app's: it answers malformed HTTP with 400 and caps header
    sizes; ``--proxy-headers`` is off (put the gateway behind a proxy that sets them if needed).
    """
    import uvicorn

    from gateway.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from starter.client import engine_level_from_env
    from starter.payload_store import PayloadStoreConfig
    from starter.tenancy import tls_setting_problem

    try:
        # Settings the tenants' clients read when a first request connects them: refused here
        # (the payload keys are read by create_app's codec server).
        engine_level_from_env()  # the generation runs are started at
        PayloadStoreConfig.from_env()  # WFA_PAYLOAD_STORE and the settings that go with it
        tls = tls_setting_problem(os.environ)
        if tls is not None:
            raise GatewayConfigError(tls)
        app = create_app(config)
    except (GatewayConfigError, ValueError) as err:  # also the inbox's and codec server's settings
        sys.stderr.write(f"gateway: {err}\n")
        return 2
    uvicorn.run(app, host=host, port=port, proxy_headers=False, server_header=False, log_level="info")
    return 0


@contextlib.asynccontextmanager
async def running(
    config: GatewayConfig | None = None, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Serves the gateway on this event loop while the block runs (the demo, tests); yields its URL.

    ``port`` 0 (or a port in use) takes any free port.
    """
    import uvicorn

    from gateway.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.bind((host, 0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_level=log_level, lifespan="on", server_header=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the gateway stopped before it started")
            await asyncio.sleep(0.02)
        bound = sock.getsockname()
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
