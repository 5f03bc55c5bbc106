"""The ASGI application: API, page and static assets, behind authentication and security
headers. FastAPI (on Starlette) gives validated parameters and the OpenAPI document for free;
uvicorn serves it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from device.topics import Topics
from device.web.api import API_PREFIX, build_router
from device.web.auth import Authenticator
from device.web.listener import Listener
from device.web.settings import WebSettings
from device.web.store import Store
from device.web.stream import Hub

__all__ = ["CSP", "STREAM_PATH", "create_app"]

logger = logging.getLogger(__name__)

STATIC = Path(str(resources.files("device.web") / "static"))
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; worker-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]


STREAM_PATH = f"{API_PREFIX}/stream"


def _head_as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """HEAD answered as the GET it asks about (status and headers, no body): FastAPI routes take
    GET only. The stream is left out: a HEAD there is refused rather than opening a stream."""
    done = False

    async def headers_only(message: Message) -> None:
        nonlocal done
        if message["type"] != "http.response.body":
            await send(message)
        elif not done:
            done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return {**scope, "method": "GET"}, headers_only


class Guard:
    """Pure ASGI middleware (it does not buffer the event stream): answers HEAD like GET, asks
    for credentials when auth is on, and adds the security headers to every response (FastAPI
    refuses every other method with 405: the routes are GET only)."""

    def __init__(self, app: ASGIApp, auth: Authenticator, tls: bool) -> None:
        self.app = app
        self.auth = auth
        self.headers = [*_HEADERS]
        if tls:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization")
        # In a worker thread: a first basic login runs scrypt (tens of ms), which must not stall
        # the event loop and every stream on it.
        return await run_in_threadpool(
            self.auth.allows, header.decode("latin-1") if header else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        if scope["method"] == "HEAD" and scope["path"] != STREAM_PATH:
            scope, send = _head_as_get(scope, send)
        if self.auth.enabled and not await self._allowed(scope):
            realm = self.auth.settings.realm
            response = JSONResponse(
                {"detail": "authentication required"},
                status_code=401,
                headers={"WWW-Authenticate": f'Basic realm="{realm}", Bearer realm="{realm}"'},
            )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def create_app(
    settings: WebSettings, store: Store | None = None, *, listen: bool = True
) -> FastAPI:
    """The gateway; `listen=False` (tests) leaves the MQTT side out and `store` to the caller."""
    store = store or Store(settings.history, Topics(settings.topic_prefix))
    hub = Hub(store, settings.stream)
    listener = Listener(settings, store) if listen else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if listener is not None:
            listener.start()
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            if listener is not None:
                listener.stop()

    app = FastAPI(
        title="Forecaster web gateway",
        version="1",
        summary="Read-only forecasts, nowcasts and fleet status from the edge agents.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # Swagger UI loads scripts from a CDN: against the CSP and offline use
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.store, app.state.hub = store, hub
    app.include_router(build_router(store, hub))
    _pages(app)
    _errors(app)
    if settings.http.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.http.cors_origins, allow_methods=["GET"],
            allow_headers=["Authorization"],
        )  # fmt: skip
    tls = settings.http.ssl_certfile is not None
    app.add_middleware(Guard, auth=Authenticator(settings.auth), tls=tls)
    return app


def _pages(app: FastAPI) -> None:
    def page(name: str, media: str | None = None) -> FileResponse:
        return FileResponse(STATIC / name, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return page("index.html")

    @app.get("/sw.js", include_in_schema=False)
    def service_worker() -> FileResponse:
        # Served from the root so that its scope is the whole site.
        return page("sw.js", "text/javascript")

    @app.get("/manifest.webmanifest", include_in_schema=False)
    def manifest() -> FileResponse:
        return page("manifest.webmanifest", "application/manifest+json")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_r: Request, exc: Exception) -> JSONResponse:
        # Never a traceback to the client: it is in the log.
        logger.exception("internal error", exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)
