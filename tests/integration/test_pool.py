"""A pool of agents splitting one feed by symbol-affine partitions, on a real Mosquitto: every bar
forecast exactly once, by its symbol's owner, on that symbol's true window, even across a SIGKILL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.bundle import load_bundle
from device.keys import load_trusted_keys
from device.partition import owner
from device.runtime import OnnxModel
from device.schemas import AgentStatus, PriceForecast
from tests.integration.conftest import AgentProcess, Collector, agent_config, sp500_closes

pytestmark = pytest.mark.integration

# Twelve series of real S&P 500 closes (different stretches of it), one per symbol.
SYMBOLS = ("SPX", "NDX", "CAC", "SMI", "DAX", "FTSE", "N225", "HSI", "STOXX", "IBEX", "AEX", "OMX")
EXTRA_BARS = 8  # forecasts per symbol: the first when the window fills, then one per bar


def _start_pool(tmp_path: Path, broker_url: str, bundle, count: int) -> list[AgentProcess]:
    agents = []
    for index in range(count):
        folder = tmp_path / f"member-{index}"
        folder.mkdir()
        config = agent_config(folder / "agent.toml", broker_url, bundle, agent_id=f"pool-{index}")
        with config.open("a") as f:
            f.write(f"[partition]\nindex = {index}\ncount = {count}\n")
        agent = AgentProcess(config=config, log=folder / "agent.log")
        agent.start()
        agents.append(agent)
    return agents


def _statuses(sub: Collector) -> dict[str, AgentStatus]:
    return {
        s.agent: s for s in (AgentStatus.model_validate(raw) for raw in sub.on("fleet/+/status"))
    }


def _wait_statuses(sub: Collector, count: int, predicate, timeout: float = 30.0) -> None:
    sub.wait_for(
        "fleet/+/status",
        lambda _: len(s := _statuses(sub)) == count and all(predicate(x) for x in s.values()),
        timeout,
    )


@pytest.mark.parametrize("count", [2, 3])
def test_a_pool_forecasts_every_bar_once_by_its_owner_through_a_sigkill(
    tmp_path, broker, quick_price_bundle, collector, feed, count
) -> None:
    sub = collector("forecast/price/+", "fleet/+/status")
    agents = _start_pool(tmp_path, broker.url, quick_price_bundle, count)
    try:
        model = OnnxModel(
            load_bundle(quick_price_bundle.path, load_trusted_keys([quick_price_bundle.keys_dir]))
        )
        w = model.manifest.window or 0
        _wait_statuses(sub, count, lambda s: s.online)
        bars = {
            s: sp500_closes(w + EXTRA_BARS, start=1000 + 300 * i) for i, s in enumerate(SYMBOLS)
        }
        n = w + EXTRA_BARS
        for seq in range(n):
            if seq == n - EXTRA_BARS // 2:
                agents[1].kill()  # mid-stream, while its bars and forecasts are in flight
            for symbol in SYMBOLS:
                feed.bar(symbol, seq, *bars[symbol][seq])
        feed.flush()
        agents[1].start()  # its bars waited in its persistent session

        expected = {(s, seq) for s in SYMBOLS for seq in range(w - 1, n)}
        sub.wait_for(
            "forecast/price/+",
            lambda found: {(f["symbol"], f["seq"]) for f in found} >= expected,
            60,
        )
        by_key: dict[str, PriceForecast] = {}
        for raw in sub.on("forecast/price/+"):
            f = PriceForecast.model_validate(raw)
            by_key.setdefault(f.key, f)
        assert {(f.symbol, f.seq) for f in by_key.values()} == expected  # once each, by key
        for f in by_key.values():
            assert f.agent == f"pool-{owner(f.symbol, count)}"
            assert not f.seq_gap
            closes = np.array([c for _, c in bars[f.symbol][f.seq - w + 1 : f.seq + 1]])
            offline, _ = model.run_window(closes[None, :].astype(np.float32))
            # The model's own output (the published returns add the on-line calibration).
            model_said = f.returns if f.raw is None else f.raw
            np.testing.assert_array_equal(np.array(model_said, dtype=np.float32), offline[0])
        assert {f.agent for f in by_key.values()} == {f"pool-{k}" for k in range(count)}

        _wait_statuses(
            sub,
            count,
            lambda s: (
                s.online
                and s.counters["received"] - s.counters["redelivered"] > 0
                and s.symbols
                == sorted(x for x in SYMBOLS if owner(x, count) == s.partition["index"])
            ),
        )
        for s in _statuses(sub).values():
            assert s.partition["count"] == count
            assert s.counters["dead_letters"] == 0 and s.counters["seq_gaps"] == 0
            assert s.counters["not_owned"] > 0 and not s.seq_gaps
    finally:
        for agent in agents:
            if agent.alive():
                agent.kill()


def test_a_seq_gap_is_counted_logged_and_marked_on_the_forecasts_it_touches(
    tmp_path, broker, quick_price_bundle, collector, feed
) -> None:
    sub = collector("forecast/price/+", "fleet/+/status")
    [agent] = _start_pool(tmp_path, broker.url, quick_price_bundle, 1)
    try:
        w = load_bundle(
            quick_price_bundle.path, load_trusted_keys([quick_price_bundle.keys_dir])
        ).manifest.window
        assert w is not None
        _wait_statuses(sub, 1, lambda s: s.online)
        bars = sp500_closes(w + 10)
        jump = w + 3  # seqs 0 .. w+2, then w+5 ..: two bars of SPX went elsewhere
        seqs = [*range(jump), *range(jump + 2, len(bars) + 2)]
        for seq, (ts, close) in zip(seqs, bars, strict=True):
            feed.bar("SPX", seq, ts, close)
        feed.flush()
        found = sub.wait_for("forecast/price/SPX", lambda f: len(f) >= len(bars) - w + 1, 30)
        flagged = {f["seq"]: f["seq_gap"] for f in found}
        # A window straddles the jump from the first bar after it until the jump leaves it.
        after = seqs.index(jump + 2)
        assert flagged == {s: after <= i < after + w - 1 for i, s in enumerate(seqs) if i >= w - 1}
        _wait_statuses(sub, 1, lambda s: s.seq_gaps == {"SPX": 1} and s.counters["seq_gaps"] == 1)
        assert "SPX: seq jumped from" in agent.output()
    finally:
        agent.kill()
