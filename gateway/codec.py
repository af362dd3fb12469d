"""The codec server: lets the Temporal Web UI (and ``temporal`` CLI) show encrypted payloads decoded.

``POST /codec/decode`` and ``POST /codec/encode`` take and answer the JSON the Web UI sends,
``{"payloads": [{"metadata": {"encoding": "<base64>", ...}, "data": "<base64>"}]}`` (Temporal's
``Payloads`` message in protobuf JSON), with the same keys as the worker (:mod:`starter.codec`).

Every request needs ``Authorization: Bearer <token>`` with one of the configured tokens (compared
in constant time). Browsers get CORS headers for the configured origins only (the Web UI's), so a
page of another origin cannot make a logged-in operator's browser decode for it.

Configuration (:func:`codec_router_from_env`):

- ``WFA_CODEC_TOKENS``: accepted bearer tokens, comma-separated (required when keys are set).
- ``WFA_CODEC_CORS_ORIGINS``: the Web UI origins, comma-separated (default
  ``http://localhost:8233`` and ``http://127.0.0.1:8233``, the dev server's UI).
- the payload keys: ``WFA_PAYLOAD_KEYS`` / ``WFA_PAYLOAD_KEYS_FILE``.
- the payload store (``WFA_PAYLOAD_STORE``, :mod:`starter.payload_store`): a payload stored by
  reference is fetched (from the namespace of the request's ``X-Namespace``) and decoded, so the Web
  UI shows it rather than its reference.

Mount it in an app with ``app.include_router(build_codec_router(codec, tokens=[...]))``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from starter.codec import codec_from_env

if TYPE_CHECKING:
    from starter.payload_store import ReferenceResolver

__all__ = [
    "CODEC_ORIGINS_ENV",
    "CODEC_TOKENS_ENV",
    "DEFAULT_ORIGINS",
    "MAX_BODY_BYTES",
    "CodecServerConfigError",
    "build_codec_router",
    "codec_router_from_env",
]

CODEC_TOKENS_ENV = "WFA_CODEC_TOKENS"
CODEC_ORIGINS_ENV = "WFA_CODEC_CORS_ORIGINS"
DEFAULT_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
MAX_BODY_BYTES = 8 * 1024 * 1024
"""A request body larger than this is refused (a payload is at most 2 MiB, x4/3 in base64)."""

_ALLOWED_HEADERS = "authorization,content-type,x-namespace"


class CodecServerConfigError(ValueError):
    """The codec server's configuration is unusable (no token, no keys)."""


def _shape_problem(body: bytes) -> str | None:
    """What makes ``body`` other than the Web UI's ``{"payloads": [...]}``, or None.

    Protobuf's JSON reader took ``[]`` as an empty message and base64 that is not (``***``) as
    empty bytes, so a malformed request was answered 200 with nothing (found by a probe).
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as err:
        return str(err)[:200]
    if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
        return "a JSON object with a list of payloads"
    for index, payload in enumerate(document["payloads"]):
        if not isinstance(payload, dict):
            return f"payload {index} is not an object"
        metadata = payload.get("metadata", {})
        values = [payload.get("data", "")] + (
            list(metadata.values()) if isinstance(metadata, dict) else [None]
        )
        for value in values:
            if not isinstance(value, str):
                return f"payload {index} holds a value that is not base64 text"
            standard = value.replace("-", "+").replace("_", "/")  # protobuf's JSON takes both
            try:
                base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
            except binascii.Error:
                return f"payload {index} holds text that is not base64"
    return None


def build_codec_router(
    codec: PayloadCodec,
    *,
    tokens: Sequence[str],
    allowed_origins: Sequence[str] = DEFAULT_ORIGINS,
    prefix: str = "/codec",
    resolve: Callable[[Sequence[Payload], str], Awaitable[list[Payload]]] | None = None,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> APIRouter:
    """The codec endpoints as a router.

    Args:
        codec: The payload codec (the worker's keys).
        tokens: Accepted bearer tokens (at least one; each at least 16 characters).
        allowed_origins: Origins that get CORS headers (the Web UI's).
        prefix: Where the endpoints live.
        resolve: Replaces payloads stored by reference with the stored ones before decoding
            (given the payloads and the request's namespace).
        on_close: Awaited when the application shuts down (the router's lifespan, which FastAPI
            runs within the app's): closes what ``resolve`` holds.

    Raises:
        CodecServerConfigError: No token, or a short one.
    """
    accepted = [t.encode() for t in tokens if t]
    if not accepted:
        raise CodecServerConfigError(f"the codec server needs at least one bearer token ({CODEC_TOKENS_ENV})")
    if any(len(t) < 16 for t in accepted):
        raise CodecServerConfigError(f"{CODEC_TOKENS_ENV}: a token is shorter than 16 characters")
    origins = frozenset(o.rstrip("/") for o in allowed_origins if o)

    @contextlib.asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if on_close is not None:
                await on_close()

    router = APIRouter(prefix=prefix, tags=["codec"], lifespan=lifespan)

    def cors(request: Request, response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    def authorised(request: Request) -> bool:
        if len(request.headers.getlist("authorization")) > 1:  # which one would it be?
            return False
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            return False
        given = value.strip(" \t").encode()  # HTTP's whitespace only, as for API keys
        # Compare with every token (no early exit): the time taken says nothing about which matched.
        return sum(hmac.compare_digest(given, token) for token in accepted) > 0

    def problem(request: Request, status: int, message: str) -> Response:
        body = json.dumps({"error": message})
        return cors(request, Response(body, status_code=status, media_type="application/json"))

    async def apply(request: Request, encode: bool) -> Response:
        if not authorised(request):
            response = problem(request, 401, "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return problem(request, 413, f"request body over {MAX_BODY_BYTES} bytes")
        shape = _shape_problem(body)
        if shape is not None:
            return problem(request, 400, f'not {{"payloads": [...]}} JSON: {shape}')
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError) as err:
            return problem(request, 400, f'not {{"payloads": [...]}} JSON: {str(err)[:200]}')
        try:
            if encode:
                result = await codec.encode(payloads.payloads)
            else:
                found: Sequence[Payload] = payloads.payloads
                if resolve is not None:
                    found = await resolve(found, request.headers.get("x-namespace") or "default")
                result = await codec.decode(found)
        except ValueError as err:  # unknown key id, altered data
            return problem(request, 422, str(err)[:300])
        except TypeError:  # metadata of another shape than this codec writes (a probe)
            return problem(request, 422, "a payload is not one this codec wrote or reads")
        text = json_format.MessageToJson(Payloads(payloads=result))
        return cors(request, Response(text, media_type="application/json"))

    @router.post("/decode")
    async def decode(request: Request) -> Response:
        """Decrypts payloads (the Web UI's request shape)."""
        return await apply(request, encode=False)

    @router.post("/encode")
    async def encode(request: Request) -> Response:
        """Encrypts payloads with the current key."""
        return await apply(request, encode=True)

    @router.options("/decode")
    @router.options("/encode")
    async def preflight(request: Request) -> Response:
        """CORS preflight: answered without a token (browsers send none), for allowed origins."""
        return cors(request, Response(status_code=204))

    return router


def codec_router_from_env(env: Mapping[str, str] | None = None) -> APIRouter | None:
    """The router the environment configures, or None when no payload keys are configured. Its
    lifespan (run within the app's) closes the payload-store resolver at shutdown.

    Raises:
        CodecServerConfigError: Keys but no usable token, or unusable keys.
    """
    server = codec_server_from_env(env)
    return server[0] if server is not None else None


def codec_server_from_env(
    env: Mapping[str, str] | None = None,
) -> tuple[APIRouter, ReferenceResolver | None] | None:
    """The router and the payload-store resolver it reads references with (None without
    ``WFA_PAYLOAD_STORE``), or None when no payload keys are configured.

    Raises:
        CodecServerConfigError: See :func:`codec_router_from_env`.
    """
    from starter.codec import PayloadKeysError

    source = os.environ if env is None else env
    try:
        codec = codec_from_env(source)
    except PayloadKeysError as err:
        raise CodecServerConfigError(str(err)) from None
    if codec is None:
        return None
    tokens = [t.strip() for t in source.get(CODEC_TOKENS_ENV, "").split(",") if t.strip()]
    origins_text = source.get(CODEC_ORIGINS_ENV)
    origins = [o.strip() for o in origins_text.split(",")] if origins_text else list(DEFAULT_ORIGINS)
    from starter.payload_store import reference_resolver_from_env

    try:
        resolver = reference_resolver_from_env(source)
    except PayloadKeysError as err:  # the store's settings
        raise CodecServerConfigError(str(err)) from None
    router = build_codec_router(
        codec,
        tokens=tokens,
        allowed_origins=origins,
        resolve=resolver.resolve if resolver is not None else None,
        on_close=resolver.close if resolver is not None else None,
    )
    return router, resolver
