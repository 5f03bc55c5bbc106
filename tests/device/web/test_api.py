"""The HTTP API with FastAPI's TestClient: payloads as the agent sent them, 404/422 as JSON,
security headers, auth refused when on, the stream's events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from device.web.app import CSP, create_app
from device.web.auth import Authenticator, hash_password, hash_token
from device.web.settings import AuthSettings, StreamSettings, WebSettings
from device.web.store import Store
from device.web.stream import Hub
from tests.device.web.conftest import (
    make_store,
    nowcast_payload,
    price_payload,
    real_bars,
    status_payload,
    trend_payload,
)

BARS = real_bars(10)


def fill(store: Store) -> None:
    for bar in BARS:
        store.ingest("forecast/price/SPX", price_payload(bar))
        store.ingest("forecast/trend/SPX", trend_payload(bar))
    store.ingest("nowcast/gdp/us", nowcast_payload(track=[1.0, 2.0]))
    store.ingest("fleet/a1/status", status_payload())


def test_symbol_detail_is_what_the_agent_published(client: TestClient, store: Store) -> None:
    fill(store)
    sent = json.loads(price_payload(BARS[-1]))
    detail = client.get("/api/v1/symbols/SPX", params={"limit": 3}).json()
    assert detail["price"]["prices"] == sent["prices"]
    assert detail["price"]["model"] == sent["model"]
    assert [c["close"] for c in detail["closes"]] == [b.close for b in BARS[-3:]]
    assert len(detail["prices"]) == len(detail["trends"]) == 3
    summary = client.get("/api/v1/symbols").json()
    assert summary[0]["symbol"] == "SPX" and summary[0]["last_close"] == BARS[-1].close


def test_nowcast_fleet_and_gateway(client: TestClient, store: Store) -> None:
    fill(store)
    nowcast = client.get("/api/v1/nowcasts/us").json()
    assert nowcast["band"] == {"lo": 0.9, "hi": 4.6, "levels": [0.1, 0.9]}
    assert nowcast["track"] == [1.0, 2.0]  # an extra field passes through
    assert client.get("/api/v1/nowcasts").json()[0]["region"] == "us"
    assert client.get("/api/v1/fleet").json()[0]["agent"] == "a1"
    info = client.get("/api/v1/gateway").json()
    assert info["symbols"] == 1 and info["counters"]["messages"] == 22


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/symbols/NOPE", 404),
        ("/api/v1/nowcasts/eu", 404),
        ("/api/v1/symbols/SPX?limit=0", 422),
        ("/api/v1/symbols/SPX?limit=abc", 422),
        ("/api/v1/symbols/bad%20symbol", 422),
        ("/api/v1/stream?symbols=a,,b", 422),
    ],
)
def test_bad_requests_get_a_json_reason(
    client: TestClient, store: Store, path: str, status: int
) -> None:
    fill(store)
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


def test_nothing_but_reads(client: TestClient) -> None:
    assert client.post("/api/v1/symbols").status_code == 405
    assert client.delete("/api/v1/fleet").status_code == 405


def test_head_answers_like_get_without_a_body(client: TestClient, store: Store) -> None:
    store.ingest("forecast/price/SPX", price_payload(BARS[0]))
    for path, status in [
        ("/api/v1/symbols", 200),
        ("/api/v1/symbols/SPX?limit=3", 200),
        ("/api/v1/symbols/NOPE", 404),
        ("/api/v1/symbols/SPX?limit=0", 422),
        ("/", 200),
        ("/static/app.js", 200),
        ("/static/icon-180.png", 200),  # the iOS home-screen icon (scripts/make_icon.py)
    ]:
        get, head = client.get(path), client.head(path)
        assert (head.status_code, head.content) == (status, b""), path
        assert head.headers["content-type"] == get.headers["content-type"]
        assert (
            head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
        )
        assert head.headers["content-security-policy"] == CSP
    assert client.head("/api/v1/stream").status_code == 405  # HEAD opens no stream


def test_a_full_gateway_refuses_new_stream_clients_with_503() -> None:
    app = create_app(WebSettings(stream={"max_clients": 1}), make_store(), listen=False)
    hub: Hub = app.state.hub

    async def scenario() -> httpx.Response:
        holder = hub.events(None)
        waiting = asyncio.ensure_future(anext(holder))
        await asyncio.sleep(0)  # the one allowed client is registered
        assert hub.clients == 1 and hub.full()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/api/v1/stream")
        waiting.cancel()
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 503
    assert response.json() == {"detail": "too many stream clients"}
    assert response.headers["content-security-policy"] == CSP


def test_security_headers_and_closed_cors(client: TestClient) -> None:
    response = client.get("/", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200 and "Forecaster" in response.text
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "access-control-allow-origin" not in response.headers
    for asset in ("/static/app.js", "/static/app.css", "/sw.js", "/manifest.webmanifest"):
        assert client.get(asset).status_code == 200, asset


def test_cors_opens_only_to_named_origins(store: Store) -> None:
    settings = WebSettings.model_validate({"http": {"cors_origins": ["https://ok.example"]}})
    with TestClient(create_app(settings, store, listen=False)) as c:
        ok = c.get("/api/v1/symbols", headers={"Origin": "https://ok.example"})
        bad = c.get("/api/v1/symbols", headers={"Origin": "https://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "https://ok.example"
    assert "access-control-allow-origin" not in bad.headers


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_requests_without_credentials_are_refused_when_auth_is_on(store: Store) -> None:
    auth = {"users": {"ana": hash_password("s3cret", n=2**10)}, "tokens": [hash_token("tok")]}
    settings = WebSettings.model_validate({"auth": auth, "http": {"host": "0.0.0.0"}})
    with TestClient(create_app(settings, store, listen=False)) as c:
        for path in ("/", "/api/v1/symbols", "/api/v1/stream", "/static/app.js"):
            refused = c.get(path)
            assert refused.status_code == 401, path
            assert refused.json() == {"detail": "authentication required"}
            assert refused.headers["www-authenticate"].startswith("Basic")
        assert c.get("/api/v1/symbols", headers=basic("ana", "wrong")).status_code == 401
        assert c.get("/api/v1/symbols", headers=basic("bob", "s3cret")).status_code == 401
        assert c.get("/api/v1/symbols", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/v1/symbols", headers=basic("ana", "s3cret")).status_code == 200
        assert c.get("/api/v1/symbols", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_passwords_are_salted_and_garbage_headers_refused() -> None:
    assert hash_password("x", n=2**10) != hash_password("x", n=2**10)
    auth = Authenticator(AuthSettings(users={"ana": hash_password("pw", n=2**10)}))
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x", ""):
        assert not auth.allows(header)


def test_open_access_only_on_loopback() -> None:
    with pytest.raises(ValueError, match="not loopback"):
        WebSettings.model_validate({"http": {"host": "0.0.0.0"}})
    assert WebSettings.model_validate({"http": {"host": "::1"}}).http.loopback
    with pytest.raises(ValueError, match="scrypt"):
        WebSettings.model_validate({"auth": {"users": {"ana": "plain-text"}}})


def frame_json(frame: bytes) -> list[dict[str, object]]:
    head, data, tail = frame.split(b"\r\n", 2)
    assert head == b"event: update" and tail == b"\r\n"
    return json.loads(data.removeprefix(b"data: "))


def test_the_stream_batches_updates_and_drops_a_client_that_falls_behind() -> None:
    async def scenario() -> tuple[list[list[dict[str, object]]], bool]:
        store = make_store()
        hub = Hub(store, StreamSettings(queue_batches=2))
        fast, slow = hub.events(frozenset({"SPX"})), hub.events(None)
        waiting = [asyncio.ensure_future(anext(it)) for it in (fast, slow)]
        await asyncio.sleep(0)  # both clients registered and waiting
        batches = []
        for bar in BARS[:4]:
            store.ingest("forecast/price/SPX", price_payload(bar))
            ndx = bar.model_copy(update={"symbol": "NDX"})
            store.ingest("forecast/price/NDX", price_payload(ndx))
            hub.publish(store.take_updates())
            batches.append(frame_json(await (waiting[0] if bar.seq == 0 else anext(fast))))
        first_slow = frame_json(await waiting[1])  # it read one, then stopped reading
        rest = []
        with contextlib.suppress(StopAsyncIteration):
            while True:
                rest.append(await anext(slow))
        return [first_slow, *batches], len(rest) < 3 and hub.clients == 1

    batches, dropped = asyncio.run(scenario())
    assert [(u["kind"], u["name"]) for u in batches[0]] == [("price", "SPX"), ("price", "NDX")]
    assert [[(u["kind"], u["name"]) for u in b] for b in batches[1:]] == [[("price", "SPX")]] * 4
    assert [b[0]["data"]["seq"] for b in batches[1:]] == [0, 1, 2, 3]
    assert dropped


def test_a_change_goes_out_at_once_and_what_follows_is_coalesced() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], float, list[dict[str, Any]], float]:
        store = make_store()
        hub = Hub(store, StreamSettings(interval_ms=3000))
        hub.start()
        events = hub.events(None)
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        start = time.monotonic()
        # From another thread, as paho's network thread writes the store.
        await asyncio.to_thread(store.ingest, "forecast/price/SPX", price_payload(BARS[0]))
        lone = frame_json(await asyncio.wait_for(first, 10))
        lone_s = time.monotonic() - start
        for bar in BARS[1:4]:
            await asyncio.to_thread(store.ingest, "forecast/price/SPX", price_payload(bar))
        burst = frame_json(await asyncio.wait_for(anext(events), 10))
        burst_s = time.monotonic() - start
        await hub.stop()
        return lone, lone_s, burst, burst_s

    lone, lone_s, burst, burst_s = asyncio.run(scenario())
    assert [u["data"]["seq"] for u in lone] == [0]  # type: ignore[index]
    assert lone_s < 1.5  # sent at once, not on the 3 s tick
    assert [u["data"]["seq"] for u in burst] == [3]  # type: ignore[index]  # the latest only
    assert burst_s >= 2.9  # after the interval: one write for the three
