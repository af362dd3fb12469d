"""The gateway: an HTTP service for what comes from outside (webhooks, events, health).

::

    app = create_app()                      # GatewayConfig.from_env()
    uvicorn.run(app, host="127.0.0.1", port=8000)

or ``wfa serve --host 0.0.0.0 --port 8000`` / ``python -m gateway``. OpenAPI docs at ``/docs``.

It faces the internet, so every request is held to the same rules before any route sees it:
the body is limited while it streams in (:mod:`gateway.limits`), JSON is parsed strictly
(:mod:`gateway.jsonbody`), every refusal is ``{"error": code, "detail": message}`` with a 4xx
status, and anything unexpected is logged and answered with a bare 500 (no traceback, no message
of the exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.limits import BodyLimitMiddleware
from gateway.state import GatewayState

__all__ = ["create_app"]

log = logging.getLogger("gateway")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = _error(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "path": "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"][1:]),
            "message": e["msg"],
        }
        for e in exc.errors()[:20]
    ]
    return _error(
        422,
        "invalid_request",
        "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5]),
        problems=problems,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(500, "internal_error", "the gateway failed to handle this request; it was logged")


def _store_errors_as_503(app: FastAPI) -> None:
    """The store or Temporal being unreachable, or no input check to be had, is a 503 with the reason
    (not a 500)."""
    from activities.store.errors import DatabaseUnavailableError, MigrationsNotAppliedError
    from starter.errors import InputCheckUnavailableError, ServerUnavailableError

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable on %s: %s", request.url.path, exc)
        kind = "temporal" if isinstance(exc, ServerUnavailableError) else "database"
        return _error(503, "unavailable", f"the {kind} is not reachable; try again later")

    for error in (DatabaseUnavailableError, MigrationsNotAppliedError, ServerUnavailableError):
        app.add_exception_handler(error, unavailable)

    async def unchecked(request: Request, exc: Exception) -> JSONResponse:
        log.warning("input check unavailable on %s: %s", request.url.path, exc)
        response = _error(503, "unavailable", f"{exc}; try again later")
        response.headers["Retry-After"] = "5"
        return response

    app.add_exception_handler(InputCheckUnavailableError, unchecked)


async def _check_temporal(state: GatewayState) -> None:
    client = await state.health_client()
    await client.service_client.check_health()


async def _check_database(state: GatewayState) -> None:
    from sqlalchemy import text

    database = await state.database()
    async with database.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def _install_optional_routers(app: FastAPI, state: GatewayState) -> dict[str, int]:
    """Routers of other features, when their modules are present and the environment configures
    them: the approvals inbox (``gateway.inbox``) and the payload codec server (``gateway.codec``).
    Returns the path prefixes that take larger bodies than the gateway's limit, with their limit.

    Raises:
        ValueError: Their configuration is set but unusable (``InboxConfigError``,
            ``CodecServerConfigError``).
    """
    try:
        inbox = importlib.import_module("gateway.inbox")
    except ModuleNotFoundError:
        inbox = None
    if inbox is not None and hasattr(inbox, "install_inbox"):
        # From the environment, with what the gateway adds (a review: building the configuration
        # here skipped it): sign-outs kept in its database, only the tenants it serves, and a
        # page for a tenant it does not.
        inbox.install_inbox(app, state.config)
    larger: dict[str, int] = {}
    try:
        codec = importlib.import_module("gateway.codec")
    except ModuleNotFoundError:
        codec = None
    if codec is not None and hasattr(codec, "codec_router_from_env"):
        router = codec.codec_router_from_env()
        if router is not None:
            app.include_router(router)
            larger[router.prefix + "/"] = codec.MAX_BODY_BYTES  # its payloads: up to 2 MiB each
    return larger


def create_app(config: GatewayConfig | None = None) -> FastAPI:
    """The gateway application.

    Args:
        config: Default :meth:`GatewayConfig.from_env`.

    Returns:
        A FastAPI app; its lifespan runs the row-change listener (when ``row_changes`` are
        configured) and closes the tenants' clients and the store on shutdown.
    """
    config = config or GatewayConfig.from_env()
    state = GatewayState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        listener: asyncio.Task[None] | None = None
        if config.row_changes:
            from gateway.rowchanges import run_listeners

            listener = asyncio.create_task(run_listeners(state), name="row-change listener")
        try:
            yield
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await state.close()

    app = FastAPI(
        title="Workflow automation gateway",
        summary="Webhook triggers, events and health of the workflow automation service.",
        version="1",
        lifespan=lifespan,
    )
    # A path with a slash too many or too few is a 404: Starlette's redirect for it wrote the
    # request's Host header into the Location (a probe), and resent a POST's body to the new path.
    app.router.redirect_slashes = False
    app.state.gateway = state
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    _store_errors_as_503(app)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Temporal and the database are reachable (503 with the reason otherwise)",
        responses={503: {"description": "A dependency is not reachable"}},
    )
    async def readyz() -> JSONResponse:
        problems: dict[str, str] = {}
        for name, check in (("temporal", _check_temporal), ("database", _check_database)):
            try:
                await asyncio.wait_for(check(state), timeout=config.ready_timeout_s)
            except TimeoutError:
                problems[name] = f"no answer within {config.ready_timeout_s:g}s"
            except Exception as err:
                # Anyone may ask: the reason names the kind of failure, the log the rest (the
                # message held the database's user, host, port and name: found by a probe).
                problems[name] = f"{type(err).__name__} (the gateway's log says more)"
                log.warning("readyz: %s: %s: %s", name, type(err).__name__, str(err)[:500])
        if problems:
            detail = "; ".join(f"{name}: {why}" for name, why in problems.items())
            return _error(503, "not_ready", detail, checks=problems)
        return JSONResponse({"status": "ready", "checks": {"temporal": "ok", "database": "ok"}})

    # HEAD too: load balancers probe with it (it was 405, the gateway read as down: a probe). Out
    # of the schema: one route of both methods gave the OpenAPI document duplicate operation ids.
    for path, endpoint in (("/healthz", healthz), ("/readyz", readyz)):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    from gateway.events import router as events_router
    from gateway.webhooks import router as webhooks_router

    app.include_router(webhooks_router)
    app.include_router(events_router)
    larger = _install_optional_routers(app, state)
    # Outermost: the body limit applies before routing, to every route (including 404s).
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, larger=larger)
    return app
