"""On-line calibration in the agent against a real Mosquitto: what a subscriber receives (raw model
output, correction, published quantiles), the live accuracy in the retained status, and the
calibration state surviving a SIGKILL mid-stream exactly."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from device.schemas import AgentStatus, PriceForecast
from tests.integration.test_agent import run_bundle
from tests.support.agents import agent_config
from tests.support.calibration import is_fresh
from tests.support.clients import Collector, sp500_closes
from tests.support.waits import in_step

pytestmark = pytest.mark.integration

STEADY, KILLED = "steady", "killed"


def forecasts_of(sub: Collector, agent: str) -> list[PriceForecast]:
    """Every copy received (QoS 1 may repeat one), of one agent's SPX forecasts."""
    found = (PriceForecast.model_validate(r) for r in sub.on("forecast/price/SPX"))
    return [f for f in found if f.agent == agent]


def wait_forecasts(sub: Collector, agent: str, seqs: range, timeout: float = 60.0) -> None:
    sub.wait_for(
        "forecast/price/SPX",
        lambda _: {f.seq for f in forecasts_of(sub, agent)} >= set(seqs),
        timeout,
    )


def latest_status(sub: Collector, agent: str, predicate, timeout: float = 20.0) -> AgentStatus:
    def ok(found: list[dict]) -> bool:
        mine = [AgentStatus.model_validate(s) for s in found if s.get("agent") == agent]
        return bool(mine) and predicate(mine[-1])

    found = sub.wait_for("fleet/+/status", ok, timeout)
    return [AgentStatus.model_validate(s) for s in found if s["agent"] == agent][-1]


def test_a_sigkill_mid_stream_changes_no_later_forecast_or_correction(
    tmp_path: Path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    """Two agents get the same feed; one is SIGKILLed while bars stream in and restarted. Every
    forecast it publishes, corrections included, equals the uninterrupted agent's; both publish
    the raw model output beside the correction, and the status reports live accuracy."""
    sub = collector("forecast/price/SPX", "fleet/+/status")
    configs = {}
    for agent in (STEADY, KILLED):
        (tmp_path / agent).mkdir()
        configs[agent] = agent_config(
            tmp_path / agent / "agent.toml", broker.url, quick_price_bundle, agent_id=agent
        )
    agent_process(configs[STEADY])
    killed = agent_process(configs[KILLED])
    for agent in (STEADY, KILLED):
        latest_status(sub, agent, lambda s: s.online)
    model = run_bundle(quick_price_bundle)
    w = model.manifest.window
    bars = sp500_closes(w + 200)
    kill_at = w + 60

    def steady_has(seq: int) -> bool:  # bars before the first full window lead to no forecast
        return seq < w - 1 or seq in {f.seq for f in forecasts_of(sub, STEADY)}

    def stream(seqs: range) -> None:
        # a live feed, not one burst: at most 20 bars ahead of the steady agent's forecasts
        for seq in in_step(seqs, steady_has, lead=20, timeout=60):
            feed.bar("SPX", seq, *bars[seq])
        feed.flush()

    sender = threading.Thread(target=stream, args=(range(len(bars)),))
    sender.start()
    wait_forecasts(sub, KILLED, range(kill_at, kill_at + 1))
    killed.kill()  # bars keep coming; the broker queues them in the killed agent's session
    sender.join(60)
    agent_process(configs[KILLED])

    seqs = range(w - 1, len(bars))
    wait_forecasts(sub, STEADY, seqs)
    wait_forecasts(sub, KILLED, seqs)
    steady = {f.seq: f for f in forecasts_of(sub, STEADY)}
    assert sorted(steady) == list(seqs)
    for f in forecasts_of(sub, KILLED):
        s = steady[f.seq]
        assert (f.returns, f.prices, f.raw, f.correction) == (
            s.returns,
            s.prices,
            s.raw,
            s.correction,
        ), f.seq

    # The payload: the model's own output, the correction, and their sum (never crossing).
    for seq, f in steady.items():
        closes = np.array([c for _, c in bars[seq - w + 1 : seq + 1]], dtype=np.float32)
        expected, _ = model.run_window(closes[None, :])
        np.testing.assert_array_equal(np.array(f.raw, dtype=np.float32), expected[0])
        returns = np.array(f.returns)
        np.testing.assert_allclose(returns, np.array(f.raw) + np.array(f.correction), atol=1e-12)
        assert (np.diff(returns, axis=1) >= 0).all()
    # nothing scored yet at the first forecast (a fresh state's correction), later ones corrected
    assert is_fresh(steady[w - 1]) and not is_fresh(steady[max(steady)])

    # The status: live accuracy of the served version on SPX, over what was scored so far.
    n = len(seqs)
    horizons = model.manifest.horizons or []
    status = latest_status(
        sub, STEADY, lambda s: bool(s.accuracy) and s.counters["received"] == len(bars)
    )
    [acc] = status.accuracy
    assert (acc.symbol, acc.model) == ("SPX", f"{model.manifest.model_id}@{model.manifest.version}")
    assert acc.scored == sum(min(n - h, acc.window) for h in horizons)
    assert set(acc.coverage) == {"80", "90"}
    assert 0.5 < acc.coverage["80"] <= acc.coverage["90"] <= 1.0
    assert 0 < acc.pinball < 0.05
    # ... and the restarted agent (which handled part of the stream) reports the same numbers,
    # from the state it resumed.
    latest_status(
        sub, KILLED, lambda s: s.counters["received"] > 0 and s.accuracy == status.accuracy
    )
