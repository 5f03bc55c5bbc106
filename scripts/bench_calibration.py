"""End-to-end calibration benchmark: what a subscriber receives from a real agent (docs/CALIBRATION.md,
"Served end to end"; docs/BENCHMARKS.md).

    python -m scripts.bench_calibration BUNDLE_DIR [--keys DIR] [--series SPX NDX wti dax ftse]
                                        [--json OUT]

Starts Mosquitto on loopback and `forecaster-agent` (in a process that cannot import the training
stack) serving only BUNDLE_DIR, replays each series as bars, and scores the price forecasts a
subscriber gets: SPX's and NDX's test periods, the last 15% of each evaluation-only series
(never used for any choice). Each symbol's calibration starts fresh 500 bars before its scored
period (the issue's warm-up). Baselines on the same origins: GARCH(1,1)-t fitted on the data
before the scored period and rolling 250-day historical quantiles. Also reported: the raw model
output carried in the same payloads, and the largest difference between what was served and
the offline `Calibrator` run of scripts/price_calibration_study.py (0 when the agent does exactly
what the study measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from device.calibration import CalibrationSettings
from device.schemas import AgentStatus, PriceForecast
from forecaster.data import load_close_series
from forecaster.recipe import DataSection
from forecaster.tasks.price import baselines
from scripts.bench_agent import mosquitto
from scripts.price_calibration_study import (
    TRAINING,
    WARMUP,
    Model,
    Period,
    evaluation_period,
    print_table,
    quantile_tracking,
    score,
    targets,
    training_period,
)
from tests.support.agents import AgentProcess, agent_config
from tests.support.bundles import TrainedBundle
from tests.support.clients import Feed, persistent_client

DEFAULT_SERIES = ["SPX", "NDX", "wti", "dax", "ftse"]
AGENT = "bench-calibration"


class Inbox:
    """Raw payloads per topic, from a persistent-session subscriber (paho's thread appends)."""

    def __init__(self, url: str, filters: list[str]) -> None:
        self.payloads: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = persistent_client(url, f"bench-calibration-sub-{time.time_ns()}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.subscribe([(f, 1) for f in filters])
        if not ready.wait(10):
            raise RuntimeError("the broker did not acknowledge the subscription")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.payloads.setdefault(msg.topic, []).append(bytes(msg.payload))

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.payloads.get(topic, []))

    def get(self, topic: str) -> list[bytes]:
        with self._lock:
            return list(self.payloads.get(topic, []))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def load_period(name: str, horizons: list[int]) -> tuple[Period, list[str]]:
    """The scored period of a series and the ISO date of every close."""
    if name in TRAINING:
        period, source = training_period(name, horizons, "test"), TRAINING[name][0]
    else:
        period, source = evaluation_period(name, horizons), name
    dates = load_close_series(DataSection(source=source)).index
    return period, [d.strftime("%Y-%m-%dT00:00:00Z") for d in dates]


def replay(feed: Feed, inbox: Inbox, symbol: str, period: Period, dates: list[str], w: int) -> int:
    """Publish the bars from a window before the warm-up to the end (seq = index in the series)
    and wait for every forecast; returns how many bars were published."""
    start = max(0, period.first - WARMUP - w + 1)
    topic = f"forecast/price/{symbol}"
    expected = len(period.close) - (start + w - 1)
    for i in range(start, len(period.close)):
        feed.bar(symbol, i, dates[i], float(period.close[i]))
    feed.flush(timeout=120)
    deadline = time.monotonic() + 120 + expected / 50
    while inbox.count(topic) < expected:  # QoS 1 may repeat one: deduplicated by seq below
        if time.monotonic() > deadline:
            raise RuntimeError(f"{symbol}: {inbox.count(topic)} of {expected} forecasts arrived")
        time.sleep(0.05)
    return len(period.close) - start


def received(inbox: Inbox, symbol: str, model_name: str) -> dict[int, PriceForecast]:
    found = (PriceForecast.model_validate_json(p) for p in inbox.get(f"forecast/price/{symbol}"))
    return {f.seq: f for f in found if f.model.name == model_name}


def single_window_raw(model: Model, period: Period) -> np.ndarray:
    """`[N, H, Q]` raw quantiles from one onnxruntime run per window, from the first forecast
    of the warm-up on (NaN before)."""
    w, close = model.window, period.close.astype(np.float32)
    name = model.session.get_inputs()[0].name
    out = np.full((close.size, len(model.horizons), len(model.levels)), np.nan)
    for t in range(max(period.first - WARMUP, w - 1), close.size):
        out[t] = model.session.run(None, {name: close[None, t - w + 1 : t + 1]})[0][0]
    return out


def score_series(
    model: Model, period: Period, served: dict[int, PriceForecast]
) -> list[dict[str, Any]]:
    """Served, raw (from the same payloads) and the two baselines on the period's origins."""
    origins = np.arange(period.first, period.last + 1)
    missing = sorted(set(origins.tolist()) - served.keys())
    if missing:
        raise RuntimeError(f"{period.name}: no forecast for {len(missing)} origins")
    log_close = np.log(period.close)
    y = targets(log_close, origins, model.horizons)
    published = np.array([served[int(t)].returns for t in origins])
    raw = np.array([served[int(t)].raw or served[int(t)].returns for t in origins])
    base = baselines.baseline_forecasts(
        log_close, origins, model.horizons, model.levels, period.first - 1
    )
    # The study's offline run, from the same first forecast (`replay` starts the agent's
    # calibration WARMUP bars before the period, as the study does): what the agent reproduces.
    # One window per run as in the agent: the quantized student's dynamic activation scale
    # depends on the whole batch, so the study's batched runs differ by up to ~2e-3.
    offline_raw = single_window_raw(model, period)
    offline = quantile_tracking(
        model, period.close, offline_raw, period.first, period.last, CalibrationSettings()
    )
    scores = {
        "served": score(y, published, model.levels),
        "raw model": score(y, raw, model.levels),
        "garch": score(y, base["garch"], model.levels),
        "historical_quantiles": score(y, base["historical_quantiles"], model.levels),
    }
    garch, hist = scores["garch"]["pinball"], scores["historical_quantiles"]["pinball"]
    diff = {
        "max_diff_vs_offline": float(np.abs(published - offline).max()),
        "max_raw_diff_vs_offline": float(np.abs(raw - offline_raw[origins]).max()),
    }
    return [
        {"series": period.name, "method": label, "n": int(origins.size), **s}
        | {"vs_garch": s["pinball"] / garch, "vs_hist": s["pinball"] / hist}
        | (diff if label == "served" else {})
        for label, s in scores.items()
    ]


def print_rows(rows: list[dict[str, Any]], live: dict[str, dict[str, float]]) -> None:
    print_table(rows)
    print("\nGoals (served, every series): pinball below GARCH and historical quantiles; 80% band")
    print("80 +/- 3 pp, 90% band 90 +/- 3 pp.")
    for r in (r for r in rows if r["method"] == "served"):
        ok_loss = r["vs_garch"] < 1 and r["vs_hist"] < 1
        ok_cov = abs(r["cov80"] - 0.8) <= 0.03 and abs(r["cov90"] - 0.9) <= 0.03
        acc = live.get(r["series"], {})
        print(
            f"- {r['series']}: pinball goal {'met' if ok_loss else 'NOT met'}, coverage goal "
            f"{'met' if ok_cov else 'NOT met'}; served vs offline Calibrator: max diff "
            f"{r['max_diff_vs_offline']:.1e} (raw {r['max_raw_diff_vs_offline']:.1e}); "
            "agent status: 80% band "
            f"{100 * acc.get('80', float('nan')):.0f}% / 90% band "
            f"{100 * acc.get('90', float('nan')):.0f}% of the last scored"
        )


def agent_status(
    inbox: Inbox, ready: Callable[[AgentStatus], bool], what: str, timeout: float = 60.0
) -> AgentStatus:
    """The agent's latest retained status once `ready(status)` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = inbox.get(f"fleet/{AGENT}/status")
        status = AgentStatus.model_validate_json(found[-1]) if found else None
        if status is not None and ready(status):
            return status
        time.sleep(0.1)
    raise RuntimeError(f"the agent's status never showed {what} within {timeout:.0f} s")


def live_coverage(inbox: Inbox, symbols: list[str], bars: int) -> dict[str, dict[str, float]]:
    """The agent's own live accuracy per symbol, from its first status after all `bars`."""
    status = agent_status(inbox, lambda s: s.counters.get("received", 0) >= bars, "every bar")
    return {a.symbol: a.coverage for a in status.accuracy if a.symbol in symbols}


def run(bundle: Path, keys: Path, series: list[str], work: Path) -> list[dict[str, Any]]:
    model = Model.load(bundle)
    registry = work / "registry"
    shutil.copytree(bundle, registry / "price" / bundle.parent.name / bundle.name)
    periods = {name: load_period(name, model.horizons) for name in series}
    rows: list[dict[str, Any]] = []
    (work / "agent").mkdir()
    with mosquitto(work) as (url, _):
        config = agent_config(
            work / "agent" / "agent.toml",
            url,
            TrainedBundle(bundle, registry, keys),
            agent_id=AGENT,
        )
        inbox = Inbox(url, ["forecast/price/+", f"fleet/{AGENT}/status"])
        agent = AgentProcess(config, work / "agent.log")
        agent.start()
        feed = Feed(url, "bench-calibration-feed")
        try:
            # Bars sent before the agent's first subscription would never reach it.
            agent_status(inbox, lambda s: s.online, "online")
            bars = 0
            for period, dates in periods.values():
                t0 = time.perf_counter()
                sent = replay(feed, inbox, period.name, period, dates, model.window)
                bars += sent
                print(
                    f"{period.name}: {sent} bars replayed in {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                )
            live = live_coverage(inbox, [p.name for p, _ in periods.values()], bars)
            name = model.model_id.split("@")[0]
            for period, _ in periods.values():
                rows += score_series(model, period, received(inbox, period.name, name))
        except RuntimeError:
            print(agent.output()[-3000:], file=sys.stderr)
            raise
        finally:
            feed.close()
            inbox.close()
            if agent.alive():
                agent.terminate()
    print_rows(rows, live)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="a price bundle: <registry>/price/<name>/<ver>")
    parser.add_argument("--keys", type=Path, help="trusted keys (default: <registry>/../keys)")
    parser.add_argument("--series", nargs="+", default=DEFAULT_SERIES)
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    keys = args.keys or bundle.parents[3] / "keys"
    print(f"bundle {bundle}; settings {CalibrationSettings()}; warm-up {WARMUP}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(bundle, keys, args.series, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
