"""The edge agent against a real Mosquitto, run as `forecaster-agent` in a subprocess that cannot
import torch, pandas, statsmodels, arch or forecaster."""

from __future__ import annotations

import array
import fcntl
import json
import sqlite3
import subprocess
import sys
import termios
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.bundle import load_bundle
from device.keys import load_trusted_keys
from device.mqtt import read_available
from device.outbox import Outbox, OutMessage, WindowState
from device.runtime import OnnxModel
from device.schemas import AgentStatus, DeadLetter, PriceForecast
from device.topics import forecast_key
from tests.integration.conftest import (
    EDGE_ONLY,
    ROOT,
    AgentProcess,
    Collector,
    Feed,
    TrainedBundle,
    agent_config,
    bar_payload,
    persistent_client,
    secured_address,
    sp500_closes,
)
from tests.support.waits import in_step, wait_until

pytestmark = pytest.mark.integration

AGENT = "test-agent"


def run_bundle(bundle) -> OnnxModel:
    return OnnxModel(load_bundle(bundle.path, load_trusted_keys([bundle.keys_dir])))


def wait_status(sub: Collector, predicate, timeout: float = 20.0) -> AgentStatus:
    """The latest heartbeat of the test agent once `predicate` holds for it."""
    found = sub.wait_for(
        f"fleet/{AGENT}/status",
        lambda s: bool(s) and predicate(AgentStatus.model_validate(s[-1])),
        timeout,
    )
    return AgentStatus.model_validate(found[-1])


def price_forecasts(sub: Collector, symbol: str = "SPX") -> dict[str, PriceForecast]:
    """Forecasts by key: what a client that drops QoS 1 duplicates keeps."""
    out: dict[str, PriceForecast] = {}
    for raw in sub.on(f"forecast/price/{symbol}"):
        f = PriceForecast.model_validate(raw)
        out.setdefault(f.key, f)
    return out


def wait_seqs(sub: Collector, seqs: range, timeout: float = 30.0) -> dict[int, PriceForecast]:
    sub.wait_for(
        "forecast/price/SPX",
        lambda _: {f.seq for f in price_forecasts(sub).values()} >= set(seqs),
        timeout,
    )
    return {f.seq: f for f in price_forecasts(sub).values()}


def online_window(sub: Collector, bundle: TrainedBundle) -> int:
    """The bundle's window, once the test agent's heartbeat says it is online."""
    w = run_bundle(bundle).manifest.window
    wait_status(sub, lambda s: s.online)
    return w


def start_warm(
    agent: AgentProcess, bundle: TrainedBundle, sub: Collector, feed: Feed, extra: int
) -> tuple[AgentProcess, int, list[tuple[str, float]]]:
    """Once the started `agent` is online, feed it a first window of real SPX closes and wait for
    its first forecast; returns the agent, the window and the window + `extra` closes."""
    w = online_window(sub, bundle)
    bars = sp500_closes(w + extra)
    for seq in range(w):
        feed.bar("SPX", seq, *bars[seq])
    feed.flush()
    wait_seqs(sub, range(w - 1, w))
    return agent, w, bars


def outbox_rows(state_dir: Path) -> int:
    with sqlite3.connect(state_dir / "outbox.sqlite", timeout=5) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def test_replay_forecasts_equal_running_the_bundle_directly(
    tmp_path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    sub = collector("forecast/#", "fleet/#")
    agent_process(agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle))
    model = run_bundle(quick_price_bundle)
    m = model.manifest
    w = m.window
    wait_status(sub, lambda s: s.online)
    bars = sp500_closes(w + 30)
    for seq, (ts, close) in enumerate(bars):
        feed.bar("SPX", seq, ts, close)
    for seq, (ts, close) in enumerate(bars[:5]):  # a symbol still short of the window
        feed.bar("NDX", seq, ts, close)
    feed.flush()

    by_seq = wait_seqs(sub, range(w - 1, len(bars)))
    assert sorted(by_seq) == list(range(w - 1, len(bars)))
    for seq, f in by_seq.items():
        closes = np.array([c for _, c in bars[seq - w + 1 : seq + 1]], dtype=np.float32)
        expected, _ = model.run_window(closes[None, :])
        np.testing.assert_array_equal(np.array(f.raw, dtype=np.float32), expected[0])
        assert f.last_close == bars[seq][1]
        np.testing.assert_allclose(f.prices, f.last_close * np.exp(f.returns), rtol=1e-12)
        assert f.ts == datetime.fromisoformat(bars[seq][0])
        assert f.key == forecast_key(AGENT, "SPX", seq, m.model_id)
        assert (f.model.name, f.model.version, f.model.sha256) == (
            m.name,
            m.version,
            m.model_sha256,
        )
        assert (f.horizons, f.quantiles) == (m.horizons, m.quantiles)
        assert f.latency_ms > 0
    assert price_forecasts(sub, "NDX") == {}

    status = wait_status(sub, lambda s: s.counters["received"] == len(bars) + 5)
    assert status.online
    assert status.warming["NDX"] == f"5/{max(x['window'] for x in status.models)} bars"
    assert "SPX" not in status.warming
    assert {"id": m.model_id, "version": m.version, "sha256": m.model_sha256}.items() <= next(
        x for x in status.models if x["id"] == m.model_id
    ).items()
    assert status.counters["dead_letters"] == 0
    assert status.counters["forecasts"] >= len(by_seq)
    assert {"p50", "p99"} <= status.latency_ms.keys()


_GOOD = {
    "symbol": "SPX",
    "ts": "2020-01-02T00:00:00Z",
    "open": 1.0,
    "high": 1.0,
    "low": 1.0,
    "close": 1.0,
    "volume": 1.0,
}
_BAD_VALUES = st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -1.0, "x", None])


@st.composite
def bad_item(draw) -> tuple[str, Any]:
    """A payload the agent must reject: ("raw", bytes) or a rule applied at publish time."""
    kind = draw(st.sampled_from(["bytes", "missing", "value", "symbol", "dup", "old"]))
    if kind == "bytes":
        return "raw", draw(st.binary(max_size=300))
    if kind == "missing":
        return "drop", draw(st.sampled_from([*_GOOD, "seq"]))
    if kind == "value":
        return "value", (draw(st.sampled_from(["open", "close", "low"])), draw(_BAD_VALUES))
    if kind == "symbol":
        return "symbol", draw(st.sampled_from(["NDX", "spx", "SPX/1"]))
    return kind, None


def test_bad_payloads_each_give_one_dead_letter_and_the_agent_keeps_forecasting(
    tmp_path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    sub = collector("forecast/price/SPX", f"fleet/{AGENT}/deadletter", f"fleet/{AGENT}/status")
    config = agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle)
    agent, w, bars = start_warm(agent_process(config), quick_price_bundle, sub, feed, 200)
    state = {"seq": w - 1}

    def payload(rule: str, arg: Any) -> bytes:
        last = state["seq"]
        good = {**_GOOD, "seq": last + 1}
        if rule == "raw":
            return arg
        if rule == "drop":
            good.pop(arg)
        elif rule == "value":
            good[arg[0]] = arg[1]
        elif rule == "symbol":
            good["symbol"] = arg
        elif rule == "dup":
            return bar_payload("SPX", last, *bars[last])
        else:
            good["seq"] = max(0, last - 3)
        return json.dumps(good).encode()

    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.lists(bad_item(), min_size=1, max_size=4))
    def check(items: list[tuple[str, Any]]) -> None:
        before = len(sub.on(f"fleet/{AGENT}/deadletter"))
        sent = [payload(*item) for item in items]
        for p in sent:
            feed.raw("market/SPX/bar", p)
        state["seq"] += 1
        feed.bar("SPX", state["seq"], *bars[state["seq"]])
        feed.flush()
        wait_seqs(sub, range(state["seq"], state["seq"] + 1))
        letters = [DeadLetter.model_validate(d) for d in sub.on(f"fleet/{AGENT}/deadletter")]
        new = letters[before:]
        assert [d.payload for d in new] == [p.decode("utf-8", errors="replace") for p in sent]
        assert all(d.reason and d.topic == "market/SPX/bar" for d in new)

    check()
    assert agent.alive()
    letters = [DeadLetter.model_validate(d) for d in sub.on(f"fleet/{AGENT}/deadletter")]
    status = wait_status(sub, lambda s: s.counters["dead_letters"] == len(letters))
    assert status.counters["errors"] == 0


def waiting_bytes(sock: object) -> int:
    """Bytes received on `sock` and not read yet (FIONREAD)."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock, termios.FIONREAD, buf)
    return buf[0]


def test_broker_restart_mid_stream_loses_no_forecast(
    tmp_path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    sub = collector("forecast/price/SPX", f"fleet/{AGENT}/status")
    agent = agent_process(agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle))
    w = online_window(sub, quick_price_bundle)
    bars = sp500_closes(w + 150)

    halfway, stopped, queued, resumed = (threading.Event() for _ in range(4))
    down = range(len(bars) // 2 + 1, len(bars) * 3 // 4 + 1)  # published while the broker is down

    def forecast(seq: int) -> bool:  # bars before the first full window lead to no forecast
        return seq < w - 1 or seq in {f.seq for f in price_forecasts(sub).values()}

    def publish() -> None:
        # a live feed, at most 10 bars ahead of the agent's forecasts: the restart falls in the
        # middle of the stream, with the agent still working on what came before it
        for seq in in_step(range(down.start), forecast, lead=10):
            feed.bar("SPX", seq, *bars[seq])
        halfway.set()
        assert stopped.wait(30)
        for seq in down:  # they wait in the feed's client until the broker is back
            feed.bar("SPX", seq, *bars[seq])
        queued.set()
        # A bar published while paho re-sends its queue can overtake the queued ones (a known
        # client-side reordering on reconnect, paho.mqtt.golang#731 and others): the agent would
        # rightly dead-letter the older ones as out of order. So nothing more until it is re-sent.
        assert resumed.wait(30)
        for seq in in_step(range(down.stop, len(bars)), lambda k: forecast(down.stop + k), 10):
            feed.bar("SPX", seq, *bars[seq])

    publisher = threading.Thread(target=publish)
    publisher.start()
    assert halfway.wait(30)
    broker.stop()
    stopped.set()
    assert queued.wait(30)
    broker.start()
    feed.flush(30)  # the feed's queue, re-sent in order
    resumed.set()
    publisher.join(30)
    feed.flush(30)

    by_seq = wait_seqs(sub, range(w - 1, len(bars)), timeout=60)
    assert sorted(by_seq) == list(range(w - 1, len(bars)))
    assert agent.alive()


def test_sigkill_during_a_partition_then_restart_delivers_the_outbox(
    tmp_path, broker, link, quick_price_bundle, agent_process, collector, feed
) -> None:
    """The link to the broker is cut, so forecasts pile up in the outbox and no bar is
    acknowledged; the agent is SIGKILLed. After a restart the outbox is delivered, the bars the
    broker re-sends are recognised as already processed, and the rest of the stream follows."""
    sub = collector("forecast/price/SPX", f"fleet/{AGENT}/status")
    config = agent_config(tmp_path / "agent.toml", link.url, quick_price_bundle)
    receive_maximum = 40
    config.write_text(
        config.read_text().replace("[broker]", f"[broker]\nreceive_maximum = {receive_maximum}")
    )
    agent, w, bars = start_warm(agent_process(config), quick_price_bundle, sub, feed, 80)

    link.cut()
    for seq in range(w, len(bars)):
        feed.bar("SPX", seq, *bars[seq])
    feed.flush()
    state = tmp_path / "state"
    # No acknowledgement gets through the cut, so the broker hands the agent exactly Receive
    # Maximum bars: all it will get, one forecast each in the outbox.
    wait_until(lambda: outbox_rows(state) == receive_maximum, 20, "a full outbox", 0.1)
    rows = receive_maximum
    agent.kill()
    killed_at = time.time()
    link.reset()
    assert outbox_rows(state) == rows  # the spool survives SIGKILL

    restarted = agent_process(config)
    by_seq = wait_seqs(sub, range(w - 1, len(bars)), timeout=60)
    assert sorted(by_seq) == list(range(w - 1, len(bars)))
    # Forecasts for the bars processed before the kill come from the outbox, not recomputed.
    early = [f for f in by_seq.values() if f.produced_at.timestamp() < killed_at]
    assert len(early) > 1
    # Each key exactly once: nothing reached the broker through the cut link.
    raw = sub.on("forecast/price/SPX")
    assert len(raw) == len({r["key"] for r in raw})
    status = wait_status(sub, lambda s: s.counters["received"] > 0 and s.counters["backlog"] == 0)
    assert status.counters["redelivered"] > 0
    assert status.counters["dead_letters"] == 0
    assert restarted.alive()


def test_a_restarted_agent_sends_new_forecasts_ahead_of_its_backlog(
    tmp_path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    """What a kill in the middle of a catch-up leaves: SPX's window and thousands of messages the
    broker never acknowledged. The forecast of a bar that arrives after the restart goes out
    before that backlog has drained; the backlog follows, complete and in its own order."""
    sub = collector("forecast/price/#", f"fleet/{AGENT}/status")
    w = run_bundle(quick_price_bundle).manifest.window
    bars = sp500_closes(w + 1)
    backlog = 20_000
    box = Outbox(tmp_path / "state" / "outbox.sqlite", max_bytes=64 * 2**20)
    box.commit(
        [
            OutMessage("forecast/price/OLD", json.dumps({"n": n, "pad": "x" * 200}).encode())
            for n in range(backlog)
        ],
        [WindowState("SPX", w - 1, bars[w - 1][0], w, np.array([c for _, c in bars[:w]]))],
    )
    box.close()
    agent_process(agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle))
    wait_status(sub, lambda s: s.online)
    feed.bar("SPX", w, *bars[w])
    feed.flush()

    def delivered() -> list[str]:
        return [m.topic for m in sub.drain() if m.topic.startswith("forecast/")]

    order: list[str] = []

    def all_arrived() -> bool:
        order[:] = delivered()  # every forecast so far, in arrival order
        return order.count("forecast/price/OLD") >= backlog and "forecast/price/SPX" in order

    wait_until(all_arrived, 60, "the backlog and the new forecast", 0.1)
    assert order.count("forecast/price/SPX") == 1
    assert order.index("forecast/price/SPX") < backlog  # not behind the whole backlog
    old = [json.loads(m.payload)["n"] for m in sub.seen if m.topic == "forecast/price/OLD"]
    assert old == list(range(backlog))


def test_reading_stops_once_the_owner_has_enough(broker, feed) -> None:
    """`read_available` returns after `enough()` instead of reading a whole flood, so what the
    agent queued (acknowledgements, forecasts) goes out between batches."""
    client = persistent_client(broker.url, "reader")
    client.loop_stop()  # driven by read_available from here on
    got: list[str] = []
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, msg: got.append(msg.topic)
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe("flood/#", qos=0)
    deadline = time.monotonic() + 10
    while not subscribed.is_set():
        assert time.monotonic() < deadline
        read_available(client, 0.1)
        client.loop_write()
    for i in range(500):
        feed.raw(f"flood/{i}", b"x")
    feed.flush()
    sock = client.socket()
    assert sock is not None
    # Each QoS 0 PUBLISH: fixed header (2), topic length (2), topic, properties length (1), "x".
    size = sum(2 + 2 + len(f"flood/{i}") + 1 + 1 for i in range(500))
    wait_until(lambda: waiting_bytes(sock) >= size, 10, "all 500 in the socket", 0.02)
    read_available(client, 1.0, max_reads=1000, enough=lambda: len(got) >= 10)
    assert len(got) == 10
    read_available(client, 1.0, max_reads=1000)
    assert len(got) == 500
    client.disconnect()


def test_sigterm_flushes_and_says_offline(
    tmp_path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    sub = collector("forecast/price/SPX", f"fleet/{AGENT}/status")
    agent = agent_process(agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle))
    w = online_window(sub, quick_price_bundle)
    for seq, bar in enumerate(sp500_closes(w + 20)):
        feed.bar("SPX", seq, *bar)
    feed.flush()
    wait_seqs(sub, range(w - 1, w + 20))
    assert agent.terminate() == 0
    status = wait_status(sub, lambda s: not s.online)
    assert status.counters["received"] == w + 20
    assert outbox_rows(tmp_path / "state") == 0
    assert "Traceback" not in agent.output()


def test_symbols_removed_from_the_config_are_unsubscribed_and_dead_lettered(
    tmp_path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    sub = collector(f"fleet/{AGENT}/deadletter", f"fleet/{AGENT}/status", "forecast/price/#")
    first = agent_process(agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle))
    wait_status(sub, lambda s: s.online)
    assert first.terminate() == 0
    bars = sp500_closes(3)
    for seq, bar in enumerate(bars):  # queued in the agent's session while it is down
        feed.bar("NDX", seq, *bar)
        feed.bar("SPX", seq, *bar)
    feed.flush()
    config = agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle, symbols=["SPX"])
    agent_process(config)
    letters = sub.wait_for(f"fleet/{AGENT}/deadletter", lambda d: len(d) >= 3, timeout=20)
    assert all("unknown symbol 'NDX'" in d["reason"] for d in letters)
    status = wait_status(sub, lambda s: s.online and s.counters["received"] == 6)
    assert set(status.warming) == {"SPX"}
    feed.bar("NDX", 3, *bars[0])
    feed.bar("SPX", 3, *bars[0])  # the sentinel: handled after NDX's bar, were it delivered
    feed.flush()
    status = wait_status(sub, lambda s: s.warming.get("SPX", "").startswith("4/"))
    assert status.counters["received"] == 7
    assert len(sub.on(f"fleet/{AGENT}/deadletter")) == 3  # no longer subscribed


def test_agent_over_tls_with_its_own_account(
    tmp_path, secured, quick_price_bundle, agent_process
) -> None:
    """deploy/mosquitto.conf: TLS, passwords and the per-agent ACL allow all the agent does."""
    broker, creds = secured
    password = (creds / "accounts" / "kiosk-01.password").read_text().strip()
    config = agent_config(
        tmp_path / "agent.toml",
        f"mqtts://localhost:{broker.port}",
        quick_price_bundle,
        agent_id="kiosk-01",
        broker_settings={
            "username": "kiosk-01",
            "password": password,
            "ca_file": str(creds / "ca.crt"),
        },
    )
    analyst = tls_collector(secured, "analyst", "forecast/price/SPX")
    operator = tls_collector(secured, "trainer", "fleet/kiosk-01/status")
    agent = agent_process(config)
    feed = Feed(secured_address(secured, "feed"), "tls-feed")
    try:
        operator.wait_for("fleet/kiosk-01/status", lambda s: bool(s) and s[-1]["online"], 20)
        w = run_bundle(quick_price_bundle).manifest.window
        for seq, bar in enumerate(sp500_closes(w + 5)):
            feed.bar("SPX", seq, *bar)
        feed.flush()
        by_seq = wait_seqs(analyst, range(w - 1, w + 5))
        assert all(f.agent == "kiosk-01" for f in by_seq.values())
        assert agent.alive()
        assert agent.terminate() == 0
        assert "refused" not in agent.output()
    finally:
        for c in (feed, analyst, operator):
            c.close()


def tls_collector(secured, user: str, topic: str) -> Collector:
    collector = Collector(persistent_client(secured_address(secured, user), f"tls-{user}"))
    ready = threading.Event()
    collector.client.on_message = lambda _c, _u, msg: collector.messages.put(msg)
    collector.client.on_subscribe = lambda *_: ready.set()
    collector.client.subscribe(topic, qos=1)
    assert ready.wait(5), f"{user} could not subscribe to {topic}"
    return collector


def test_the_import_blocker_really_blocks_the_training_stack() -> None:
    result = subprocess.run(
        [sys.executable, str(EDGE_ONLY), "forecaster.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "not available on an edge device" in result.stderr
