"""Payloads of the MQTT contract around real S&P 500 closes, and a gateway app without MQTT."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from device.schemas import (
    AgentStatus,
    Bar,
    InformationSet,
    ModelRef,
    Nowcast,
    NowcastBand,
)
from device.topics import Topics
from device.web.app import create_app
from device.web.settings import HistorySettings, WebSettings
from device.web.store import Store
from tests.forecaster.test_watch import price_forecast, trend_forecast
from tests.integration.conftest import sp500_closes


def real_bars(n: int, symbol: str = "SPX") -> list[Bar]:
    return [
        Bar(symbol=symbol, ts=ts, open=c, high=c, low=c, close=c, volume=1.0, seq=i)
        for i, (ts, c) in enumerate(sp500_closes(n))
    ]


def price_payload(bar: Bar) -> bytes:
    return price_forecast(bar).model_dump_json().encode()


def trend_payload(bar: Bar) -> bytes:
    return trend_forecast(bar).model_dump_json().encode()


def nowcast_payload(**extra: object) -> bytes:
    nowcast = Nowcast(
        agent="a1",
        region="us",
        quarter="2009Q3",
        nowcast=2.8,
        band=NowcastBand(lo=0.9, hi=4.6, levels=(0.1, 0.9)),
        information=InformationSet(
            months=("2007-01", "2009-09"),
            gdp_quarters=("2007Q1", "2009Q2"),
            latest={"cpi": "2009-09"},
            missing=3,
            cells=96,
        ),
        model=ModelRef(name="us", version="1", sha256="0" * 64),
        as_of=datetime(2009, 10, 15, tzinfo=UTC),
        latency_ms=1.5,
    )
    data = json.loads(nowcast.model_dump_json())
    return json.dumps({**data, **extra}).encode()


def status_payload(agent: str = "a1", online: bool = True) -> bytes:
    return AgentStatus(agent=agent, online=online, uptime_s=60).model_dump_json().encode()


def make_store(**limits: int) -> Store:
    return Store(HistorySettings(**limits), Topics())


@pytest.fixture
def settings() -> WebSettings:
    return WebSettings()


@pytest.fixture
def store() -> Store:
    return make_store()


@pytest.fixture
def app(settings: WebSettings, store: Store) -> FastAPI:
    return create_app(settings, store, listen=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
