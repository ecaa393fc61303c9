"""The HTTP routes of `hearth serve` (FastAPI): OpenAI's endpoints, /health, keys and limits.

- `POST /v1/chat/completions`, `POST /v1/completions`: serve/completions.py does the work;
- `GET /v1/models` (and `/v1/models/{id}`): the one model this server has;
- `GET /health`: 200 once the model is loaded, 503 while it loads or the server stops.

With an API key every endpoint but /health wants `Authorization: Bearer KEY` (401 without).
A body over `max_body` bytes is a 413. Every error, whatever raised it, is OpenAI's
`{"error": {...}}` body; nothing a request sends can stop the server.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import completions, wire

MAX_BODY_BYTES = 4 * 1024 * 1024  # far more text than any context holds
DRAIN_CAP = 64 * 1024 * 1024  # an oversized body is read (and dropped) up to this, so the 413 arrives


@dataclass
class ServerState:
    """What the routes share: the service once the model is loaded, the names it answers to."""

    model_id: str
    model_names: set[str]
    api_key: str | None = None
    max_body: int = MAX_BODY_BYTES
    service: Any = None  # runtime.service.GenerationService; None while loading
    stopping: bool = False
    log: Callable[[str], None] | None = None  # -v: one line per request (with its prompt's beginning)
    report_error: Callable[[str], None] | None = None  # an internal error, one line (no prompt text)
    created: int = field(default_factory=wire.now)


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="hearth", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hearth = state

    @app.exception_handler(wire.WireError)
    async def wire_error(_request: Request, exc: wire.WireError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = wire.WireError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        error = wire.WireError(500, f"internal error: {type(exc).__name__}", code="internal_error")
        return JSONResponse(error.body(), status_code=500)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.stopping:
            return JSONResponse({"status": "stopping"}, status_code=503)
        if state.service is None:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok", "model": state.model_id, **state.service.status()})

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        _authorize(request, state)
        return JSONResponse({"object": "list", "data": [_model_card(state)]})

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, request: Request) -> JSONResponse:
        _authorize(request, state)
        _check_model(model, state)
        return JSONResponse(_model_card(state))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _generate(request, state, "chat")

    @app.post("/v1/completions")
    async def text_completions(request: Request) -> Response:
        return await _generate(request, state, "completion")

    return app


async def _generate(request: Request, state: ServerState, kind: str) -> Response:
    try:
        return await _serve_request(request, state, kind)
    except wire.WireError:
        raise
    except Exception as exc:  # a bug, not the client's fault: one line on stderr, a 500, serve on
        if state.report_error:
            state.report_error(f"internal error on {request.url.path}: {type(exc).__name__}: {exc}")
        if os.environ.get("HEARTH_DEBUG"):
            raise
        raise wire.WireError(500, f"internal error: {type(exc).__name__}", code="internal_error") from None


async def _serve_request(request: Request, state: ServerState, kind: str) -> Response:
    _authorize(request, state)
    service = _ready(state)
    parsed = wire.parse_request(wire.parse_body(await _read_body(request, state.max_body)), kind)
    _check_model(parsed.model, state)
    exchange = completions.Exchange(parsed, state.model_id)
    exchange.jobs = await asyncio.to_thread(completions.prepare, service, parsed)
    completions.submit(service, exchange)
    if parsed.stream:
        return StreamingResponse(_logged_stream(service, exchange, state), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    body = await completions.whole(service, exchange, lambda: _disconnected(request))
    if body is None:  # the client left: nobody reads this
        return Response(status_code=499)
    if state.log:
        state.log(completions.summary(exchange, body))
    return JSONResponse(body)


async def _logged_stream(service, exchange, state: ServerState):
    async for part in completions.stream(service, exchange):
        yield part
    if state.log:
        state.log(completions.summary(exchange, None))


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _authorize(request: Request, state: ServerState) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.api_key.encode()):
        raise wire.WireError(401, "missing or wrong API key: send the header Authorization: Bearer KEY",
                             code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _ready(state: ServerState):
    if state.stopping:
        raise wire.WireError(503, "the server is shutting down", code="server_stopping", headers={"Retry-After": "5"})
    if state.service is None:
        raise wire.WireError(503, "the model is still loading", code="model_loading", headers={"Retry-After": "1"})
    return state.service


def _check_model(model: str, state: ServerState) -> None:
    if model not in state.model_names:
        raise wire.WireError(404, f"the model {model!r} does not exist here; this server has {state.model_id!r}",
                             param="model", code="model_not_found")


def _model_card(state: ServerState) -> dict:
    return {"id": state.model_id, "object": "model", "created": state.created, "owned_by": "hearth"}


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 once it is over `limit` (the rest is read and dropped, up to a cap,
    so the client, still sending, gets the answer rather than a reset connection)."""
    declared = request.headers.get("content-length", "")
    over = declared.isdigit() and int(declared) > limit
    body, seen = bytearray(), 0
    async for part in request.stream():
        seen += len(part)
        if seen > limit:
            over = True
        if over:
            if seen > DRAIN_CAP:
                break
            continue
        body += part
    if over:
        raise wire.WireError(413, f"the request body is over {limit} bytes", code="request_too_large")
    return bytes(body)
