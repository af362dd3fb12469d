"""``python -m gateway [--host H] [--port P]``: serve the gateway with uvicorn (see :mod:`gateway.app`)."""

from __future__ import annotations

import argparse
import sys

from gateway.serve import DEFAULT_HOST, DEFAULT_PORT, serve


def main(argv: list[str] | None = None) -> int:
    """Parses the options and serves until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m gateway", description="Serve the gateway.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
