"""The gateway's memory: latest per symbol, bounded history (count and bytes), realized closes,
redeliveries dropped, retained nowcast/status kept and cleared, extra fields passed through."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from device.topics import Topics
from device.web.settings import HistorySettings
from device.web.store import Store
from tests.device.web.conftest import (
    make_store,
    nowcast_payload,
    price_payload,
    real_bars,
    status_payload,
    trend_payload,
)

BARS = real_bars(300)


def test_latest_forecast_and_closes_follow_the_bars() -> None:
    store = make_store()
    for bar in BARS[:5]:
        store.ingest("forecast/price/SPX", price_payload(bar))
        store.ingest("forecast/trend/SPX", trend_payload(bar))
    view = store.symbol("SPX", 100)
    assert view is not None and view.price is not None and view.trend is not None
    assert view.price["seq"] == 4 and view.trend["seq"] == 4
    assert [c.close for c in view.closes] == [b.close for b in BARS[:5]]
    assert len(view.prices) == len(view.trends) == 5


def test_redeliveries_and_late_forecasts_are_dropped() -> None:
    store = make_store()
    for bar in (BARS[0], BARS[2], BARS[2], BARS[1]):
        store.ingest("forecast/price/SPX", price_payload(bar))
    view = store.symbol("SPX", 100)
    assert view is not None and view.price is not None
    assert view.price["seq"] == 2 and len(view.prices) == 2
    assert store.counters["stale"] == 2
    assert [c.seq for c in view.closes] == [0, 2]


def test_invalid_payloads_and_mismatched_topics_are_counted_not_kept() -> None:
    store = make_store()
    assert store.ingest("forecast/price/SPX", b"{not json") is None
    assert store.ingest("forecast/price/NDX", price_payload(BARS[0])) is None  # says SPX
    assert store.ingest("market/SPX/bar", b"{}") is None
    assert store.counters["invalid"] == 2
    assert store.symbols() == []


def test_the_topic_prefix_is_honoured() -> None:
    store = Store(HistorySettings(), Topics("site1/"))
    assert store.ingest("forecast/price/SPX", price_payload(BARS[0])) is None
    assert store.ingest("site1/forecast/price/SPX", price_payload(BARS[0])) is not None


@settings(max_examples=25, deadline=None)
@given(points=st.integers(1, 50), budget=st.integers(4096, 40_000), n=st.integers(1, 120))
def test_history_stays_within_its_count_and_byte_bounds(points: int, budget: int, n: int) -> None:
    store = make_store(points=points, bytes_per_symbol=budget)
    for bar in BARS[:n]:
        store.ingest("forecast/price/SPX", price_payload(bar))
        store.ingest("forecast/trend/SPX", trend_payload(bar))
    view = store.symbol("SPX", 10_000)
    assert view is not None
    assert len(view.prices) <= points and len(view.trends) <= points and len(view.closes) <= points
    assert view.prices and view.prices[-1]["seq"] == n - 1  # the latest always stays
    held = store.stats()["bytes"]
    assert held <= budget or (len(view.prices) == len(view.trends) == len(view.closes) == 1)


def test_new_symbols_beyond_the_bound_are_dropped() -> None:
    store = make_store(max_symbols=2)
    for symbol in ("SPX", "NDX", "CAC"):
        bar = real_bars(1, symbol)[0]
        store.ingest(f"forecast/price/{symbol}", price_payload(bar))
    assert [v.symbol for v in store.symbols()] == ["NDX", "SPX"]
    assert store.counters["dropped"] == 1


def test_nowcast_extra_fields_pass_through_and_a_cleared_retained_message_removes_it() -> None:
    store = make_store()
    extra = [{"series": "cpi", "weight": 0.2}]  # a field this gateway's schema does not know
    store.ingest("nowcast/gdp/us", nowcast_payload(contributions=extra))
    assert store.named("nowcast")["us"]["contributions"] == extra
    store.ingest("fleet/a1/status", status_payload())
    assert store.named("status")["a1"]["online"] is True
    update = store.ingest("fleet/a1/status", b"")
    assert update is not None and update.data is None
    assert store.named("status") == {}


def test_take_updates_keeps_the_latest_per_name_in_arrival_order() -> None:
    store = make_store()
    store.ingest("forecast/price/SPX", price_payload(BARS[0]))
    store.ingest("fleet/a1/status", status_payload())
    store.ingest("forecast/price/SPX", price_payload(BARS[1]))
    updates = store.take_updates()
    assert [(u.kind, u.name) for u in updates] == [("status", "a1"), ("price", "SPX")]
    assert updates[1].data is not None and updates[1].data["seq"] == 1
    assert store.take_updates() == []
    assert json.loads(json.dumps(updates[1].as_json()))["name"] == "SPX"
