"""The API fuzzed from its own OpenAPI document: no 5xx, every response matches its schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from device.web.app import create_app
from device.web.settings import WebSettings
from tests.device.web.conftest import (
    make_store,
    nowcast_payload,
    price_payload,
    real_bars,
    status_payload,
    trend_payload,
)

store = make_store()
for bar in real_bars(5):
    store.ingest("forecast/price/SPX", price_payload(bar))
    store.ingest("forecast/trend/SPX", trend_payload(bar))
store.ingest("nowcast/gdp/us", nowcast_payload())
store.ingest("fleet/a1/status", status_payload())
app = create_app(WebSettings(), store, listen=False)
# The stream never ends; it has its own tests.
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app).exclude(path="/api/v1/stream")


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case: schemathesis.Case) -> None:
    case.call_and_validate()
