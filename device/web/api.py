"""The read-only HTTP API under /api/v1 (GET only): symbols, forecasts with their history and
realized closes, nowcasts, fleet status, and the live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from device.schemas import ModelRef
from device.web.store import NowcastOut, PriceOut, StatusOut, Store, SymbolView, TrendOut
from device.web.stream import Hub

__all__ = ["API_PREFIX", "build_router"]

API_PREFIX = "/api/v1"
SYMBOL = r"^[A-Za-z0-9_.^-]{1,64}$"
NAME = r"^[A-Za-z0-9_.-]{1,128}$"

SymbolPath = Annotated[str, Path(pattern=SYMBOL, description="e.g. SPX")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="history points of each kind")]


class Problem(BaseModel):
    detail: str


class CloseOut(BaseModel):
    ts: str
    seq: int
    close: float


class SymbolSummary(BaseModel):
    symbol: str
    last_close: float | None
    ts: str | None = Field(description="time of the last bar forecast")
    seq: int | None
    price_model: ModelRef | None
    trend_model: ModelRef | None
    produced_at: str | None = Field(description="when the latest forecast was made")


class SymbolDetail(BaseModel):
    symbol: str
    price: PriceOut | None
    trend: TrendOut | None
    closes: list[CloseOut] = Field(description="realized closes seen, oldest first")
    prices: list[PriceOut] = Field(description="recent price forecasts, oldest first")
    trends: list[TrendOut] = Field(description="recent trend forecasts, oldest first")


class GatewayInfo(BaseModel):
    connected: bool = Field(description="whether the gateway is connected to the broker")
    last_message_at: float | None = Field(description="Unix time of the last MQTT message")
    symbols: int
    bytes: int = Field(description="JSON bytes held in symbol histories")
    counters: dict[str, int]
    clients: int = Field(description="live stream clients")
    stale_after_s: float
    interval_ms: int


def _summary(view: SymbolView) -> SymbolSummary:
    price, trend = view.price, view.trend
    latest = max((d for d in (price, trend) if d), key=lambda d: d["produced_at"], default=None)
    close = view.closes[-1] if view.closes else None
    return SymbolSummary(
        symbol=view.symbol,
        last_close=close.close if close else None,
        ts=close.ts if close else (latest["ts"] if latest else None),
        seq=close.seq if close else (latest["seq"] if latest else None),
        price_model=ModelRef(**price["model"]) if price else None,
        trend_model=ModelRef(**trend["model"]) if trend else None,
        produced_at=latest["produced_at"] if latest else None,
    )


def _detail(view: SymbolView) -> dict[str, Any]:
    return {
        "symbol": view.symbol,
        "price": view.price,
        "trend": view.trend,
        "closes": [{"ts": c.ts, "seq": c.seq, "close": c.close} for c in view.closes],
        "prices": view.prices,
        "trends": view.trends,
    }


def build_router(store: Store, hub: Hub) -> APIRouter:  # noqa: C901 - one small closure per route
    """The routes, bound to `store` and `hub`."""
    router = APIRouter(prefix=API_PREFIX)
    missing: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}

    @router.get("/symbols", response_model=list[SymbolSummary], summary="Symbols with forecasts")
    def symbols() -> list[SymbolSummary]:
        return [_summary(v) for v in store.symbols()]

    @router.get("/symbols/{symbol}", response_model=SymbolDetail, responses=missing)
    def symbol(symbol: SymbolPath, limit: Limit = 120) -> dict[str, Any]:
        """Latest price and trend forecast, recent history and the realized closes seen."""
        view = store.symbol(symbol, limit)
        if view is None:
            raise HTTPException(404, f"no forecast for symbol {symbol!r} yet")
        return _detail(view)

    @router.get("/nowcasts", response_model=list[NowcastOut], summary="Latest nowcast per region")
    def nowcasts() -> list[dict[str, Any]]:
        return list(store.named("nowcast").values())

    @router.get("/nowcasts/{region}", response_model=NowcastOut, responses=missing)
    def nowcast(region: Annotated[str, Path(pattern=NAME)]) -> dict[str, Any]:
        """Nowcast with its band, information set and any extra fields the agent sends."""
        found = store.named("nowcast").get(region)
        if found is None:
            raise HTTPException(404, f"no nowcast for region {region!r}")
        return found

    @router.get("/fleet", response_model=list[StatusOut], summary="Retained status per agent")
    def fleet() -> list[dict[str, Any]]:
        return list(store.named("status").values())

    @router.get("/gateway", response_model=GatewayInfo, summary="The gateway's own health")
    def gateway() -> GatewayInfo:
        s = hub.settings
        return GatewayInfo(
            **store.stats(), clients=hub.clients, stale_after_s=s.stale_after_s,
            interval_ms=s.interval_ms,
        )  # fmt: skip

    @router.get(
        "/stream",
        summary="Server-Sent Events of updates",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 503: {"model": Problem}},
    )
    async def stream(
        request: Request,
        symbols: Annotated[
            str | None,
            Query(pattern=r"^[A-Za-z0-9_.^-]{1,64}(,[A-Za-z0-9_.^-]{1,64}){0,499}$"),
        ] = None,
    ) -> EventSourceResponse:
        """`update` events, each a JSON list of {kind, name, data} (kind: price, trend, nowcast,
        status; data null when cleared), batched every interval_ms; pings keep it alive."""
        if hub.full():
            raise HTTPException(503, "too many stream clients")
        wanted = frozenset(symbols.split(",")) if symbols else None

        async def events() -> AsyncIterator[ServerSentEvent | bytes]:
            yield ServerSentEvent(event="hello", data="{}", retry=2000)
            async for frame in hub.events(wanted):
                yield frame  # already an encoded SSE event

        # A named ping (not a comment) so the page can tell a silent, dead connection from a
        # quiet market; a client that takes 10 s to accept a write is dropped.
        return EventSourceResponse(
            events(),
            ping=hub.settings.ping_s,
            ping_message_factory=lambda: ServerSentEvent(event="ping", data="{}"),
            send_timeout=10,
            headers={"Cache-Control": "no-store"},
        )

    return router
