"""Serving the gateway with uvicorn (``wfa serve``, ``python -m gateway``, the demo)."""

from __future__ import annotations

import logging
import os
import sys

from gateway.config import GatewayConfig, GatewayConfigError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve"]

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
    try:
        app = create_app(config)
    except GatewayConfigError as err:
        sys.stderr.write(f"gateway: {err}\n")
        return 2
    uvicorn.run(app, host=host, port=port, proxy_headers=False, server_header=False, log_level="info")
    return 0
