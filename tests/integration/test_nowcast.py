"""The GDP nowcast end to end against a real Mosquitto: one agent serves price, trend and GDP at
once; `forecaster feed macro` replays real releases; the retained nowcast equals running the GDP
bundle on the cloud's information set; `mosquitto_rr` and `forecaster nowcast` get it through the
MQTT v5 response topic with the correlation data echoed; the panel survives a restart; bad input
is dead-lettered; the cron job republishes."""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from device.agent import Agent
from device.bundle import load_bundle
from device.keys import load_trusted_keys
from device.mqtt import parse_broker_url
from device.plugins import DEFAULT_PLUGINS
from device.runtime import OnnxModel
from device.schemas import (
    DeadLetter,
    Nowcast,
    NowcastFailure,
    PriceForecast,
    TrendForecast,
)
from device.settings import load_settings
from forecaster.data.macro import load_macro_panel
from forecaster.ops.macro_feed import macro_releases
from forecaster.ops.nowcast import TRACK_COLUMNS, request_nowcast
from forecaster.tasks.gdp.student import stack_inputs
from tests.integration.conftest import ROOT, Collector, agent_config, sp500_closes
from tests.support.bundles import TrainedBundle
from tests.support.cli import run_cli

pytestmark = pytest.mark.integration

AGENT = "test-agent"
FORECASTER = [sys.executable, "-m", "forecaster.cli"]
MOSQUITTO_RR = shutil.which("mosquitto_rr") or "/usr/bin/mosquitto_rr"
# Every value of 2008Q3's window (2008-01..2008-09, GDP 2008Q1-Q2) is released in this span.
START, END = date(2008, 1, 1), date(2008, 8, 31)
PERIOD = ("--start", START.isoformat(), "--end", END.isoformat())
QUARTER = "2008Q3"
SAME = ("region", "quarter", "nowcast", "band", "information", "model", "as_of")


def nowcast_config(tmp_path: Path, broker_url: str, bundle: TrainedBundle, cron: str = "") -> Path:
    """The test agent, with the nowcast cron off unless given (so nothing else publishes)."""
    path = agent_config(tmp_path / "agent.toml", broker_url, bundle, agent_id=AGENT)
    path.write_text(path.read_text() + f"[nowcast]\ncron = {json.dumps(cron)}\n")
    return path


def model(bundle: TrainedBundle) -> OnnxModel:
    return OnnxModel(load_bundle(bundle.path, load_trusted_keys([bundle.keys_dir])))


def wait_online(sub: Collector, predicate=lambda s: True, timeout: float = 20.0) -> dict:
    found = sub.wait_for(
        f"fleet/{AGENT}/status",
        lambda s: bool(s) and s[-1]["online"] and predicate(s[-1]),
        timeout,
    )
    return found[-1]


def mosquitto_rr(port: int, region: str = "us", correlation: str = "analyst-1") -> tuple[str, str]:
    """The real mosquitto_rr: request, wait for the answer; (correlation data, payload)."""
    args = ["-V", "mqttv5", "-h", "127.0.0.1", "-p", str(port), "-W", "5", "-m", "{}"]
    args += ["-t", f"nowcast/gdp/{region}/get", "-e", "reply/analyst/1"]
    args += ["-D", "PUBLISH", "correlation-data", correlation, "-F", "%D %p"]
    result = subprocess.run(
        [MOSQUITTO_RR, *args],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 0, result.stderr
    got, _, payload = result.stdout.strip().partition(" ")
    return got, payload


def same_nowcast(a: Nowcast, b: Nowcast) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in SAME)


def test_one_agent_serves_price_trend_and_the_gdp_nowcast(  # noqa: PLR0915 (one agent's life, step on step)
    tmp_path, broker, quick_bundles, agent_process, collector, feed
) -> None:
    sub = collector("forecast/#", "nowcast/#", f"fleet/{AGENT}/#")
    config = nowcast_config(tmp_path, broker.url, quick_bundles["gdp"])
    agent = agent_process(config)
    status = wait_online(sub)
    assert {m["id"] for m in status["models"]} == {"price/spx", "trend/spx", "gdp/us"}

    # market bars and macro releases at the same time
    window = max(m["window"] for m in status["models"] if m["task"] != "gdp")
    bars = sp500_closes(window + 2)
    for seq, bar in enumerate(bars):
        feed.bar("SPX", seq, *bar)
    replay = subprocess.run(
        [*FORECASTER, "feed", "macro", "--broker", broker.url, "--rate", "0", *PERIOD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr
    releases = macro_releases(START, END)
    series = len({r.series for r in releases})  # the recipe's panel and gdp, in 2008
    assert f"published {len(releases)} releases of {series} series" in replay.stdout
    feed.flush()

    last = len(bars) - 1
    price = PriceForecast.model_validate(
        sub.wait_for("forecast/price/SPX", lambda f: any(x["seq"] == last for x in f), 20)[-1]
    )
    price_model = model(quick_bundles["price"])
    closes = np.array([c for _, c in bars[-(price_model.manifest.window or 0) :]], np.float32)
    expected, _ = price_model.run_window(closes[None])
    # The model's own output; the published returns add the agent's on-line calibration.
    model_said = price.returns if price.raw is None else price.raw
    np.testing.assert_array_equal(np.array(model_said, dtype=np.float32), expected[0])
    trend = TrendForecast.model_validate(
        sub.wait_for("forecast/trend/SPX", lambda f: any(x["seq"] == last for x in f), 20)[-1]
    )
    assert trend.model.name == "spx" and abs(sum(trend.proba) - 1) < 1e-4

    # one retained nowcast per release, the last one as of the last release
    as_of = releases[-1].released_at
    found = sub.wait_for("nowcast/gdp/us", lambda n: len(n) >= len(releases), 30)
    assert len(found) == len(releases)
    nowcast = Nowcast.model_validate(found[-1])
    assert (nowcast.quarter, nowcast.as_of, nowcast.agent) == (QUARTER, as_of, AGENT)
    assert nowcast.information.latest["gdp"] == "2008Q2"
    assert nowcast.information.months == ("2008-01", "2008-09")
    # ... equal to the GDP bundle run directly on the cloud's information set
    panel = load_macro_panel()
    info = panel.info_set(pd.Period(QUARTER, "Q"), pd.Timestamp(as_of.replace(tzinfo=None)), 3)
    monthly, gdp = stack_inputs([info])
    gdp_model = model(quick_bundles["gdp"])
    outputs, _ = gdp_model.run({"monthly": monthly, "gdp": gdp})
    assert nowcast.nowcast == float(outputs["nowcast"][0])
    assert (nowcast.band.lo, nowcast.band.hi) == tuple(float(x) for x in outputs["band"][0])
    assert nowcast.information.missing == int(np.isnan(monthly).sum() + np.isnan(gdp).sum())
    m = gdp_model.manifest
    assert (nowcast.model.name, nowcast.model.version, nowcast.model.sha256) == (
        m.name,
        m.version,
        m.model_sha256,
    )
    late = collector("nowcast/gdp/us")  # a client arriving later gets the retained copy
    late.wait_for("nowcast/gdp/us", bool, 5)
    assert late.seen[0].retain
    assert Nowcast.model_validate_json(late.seen[0].payload) == nowcast

    # mosquitto_rr: the reply on the response topic, correlation data echoed
    correlation, payload = mosquitto_rr(broker.port)
    assert correlation == "analyst-1"
    assert same_nowcast(Nowcast.model_validate_json(payload), nowcast)
    correlation, payload = mosquitto_rr(broker.port, region="ea", correlation="x-2")
    refused = NowcastFailure.model_validate_json(payload)
    assert correlation == "x-2" and "no GDP nowcast for region 'ea'" in refused.error

    # `forecaster nowcast` prints it
    shown = subprocess.run(
        [*FORECASTER, "nowcast", "--region", "us", "--broker", broker.url, "--timeout", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"US GDP nowcast {QUARTER}" in shown.stdout
    assert f"{nowcast.nowcast:+.2f} % q/q annualized" in shown.stdout
    assert "source   reply" in shown.stdout

    # no agent to answer: the client shows the retained nowcast
    assert agent.terminate() == 0
    address = parse_broker_url(broker.url)
    fallback = request_nowcast(address, "us", timeout=1.0)
    assert fallback.source == "retained" and fallback.nowcast == nowcast
    assert "no agent answered within 1 s" in fallback.note

    # restart: the panel survived, so a request right after the restart gets the same nowcast
    agent_process(config)
    answer = request_nowcast(address, "us", timeout=20)
    assert answer.source == "reply" and same_nowcast(answer.nowcast, nowcast)
    # ... and republishes the retained nowcast from the stored panel with the model it runs
    found = sub.wait_for("nowcast/gdp/us", lambda n: len(n) > len(releases), 20)
    assert len(found) == len(releases) + 1
    assert same_nowcast(Nowcast.model_validate(found[-1]), nowcast)

    # bad input: dead letters with reasons, and the agent keeps serving
    good = releases[-1].model_dump(mode="json")
    feed.raw("macro/gold", json.dumps({**good, "series": "gold"}).encode())
    feed.raw("macro/aaa", json.dumps({**good, "series": "aaa", "period": "2008Q3"}).encode())
    feed.raw("macro/aaa", json.dumps({**good, "series": "aaa", "value": "NaN"}).encode())
    feed.raw("macro/wti", json.dumps(good).encode())
    feed.raw("nowcast/gdp/us/get", b"{}")  # no response topic: nowhere to answer
    feed.flush()
    letters = [
        DeadLetter.model_validate(d)
        for d in sub.wait_for(f"fleet/{AGENT}/deadletter", lambda d: len(d) >= 5, 20)
    ]
    reasons = [d.reason for d in letters]
    assert "unknown series 'gold'" in reasons[0]
    assert "aaa is monthly" in reasons[1]
    assert "value: must be a finite number" in reasons[2]
    assert "differs from the topic" in reasons[3]
    assert "response topic" in reasons[4]

    # a redelivery changes nothing; a revision is accepted and recomputed
    before = len(sub.on("nowcast/gdp/us"))
    feed.raw(f"macro/{releases[-1].series}", releases[-1].model_dump_json().encode())
    revised = releases[-1].model_copy(
        update={"value": releases[-1].value + 1.0, "released_at": datetime(2008, 9, 2, 12, 0)}
    )
    feed.raw(f"macro/{revised.series}", revised.model_dump_json().encode())
    # The sentinel: the revision again, a redelivery handled after it. The status that counts
    # it follows every nowcast the messages before it led to.
    feed.raw(f"macro/{revised.series}", revised.model_dump_json().encode())
    feed.flush()
    after = sub.wait_for("nowcast/gdp/us", lambda n: len(n) > before, 20)
    wait_online(sub, lambda s: s["counters"].get("redelivered", 0) >= 2)
    assert len(sub.on("nowcast/gdp/us")) == before + 1  # only the revision made one
    update = Nowcast.model_validate(after[-1])
    assert update.as_of.replace(tzinfo=None) == revised.released_at
    assert update.quarter == QUARTER and update.nowcast != nowcast.nowcast
    status = wait_online(sub, lambda s: s["counters"].get("redelivered", 0) >= 1)
    assert status["counters"]["dead_letters"] == 5 and status["counters"]["errors"] == 0


def test_the_cron_job_republishes_the_nowcast(tmp_path, broker, quick_bundles, collector, feed):
    """In process, so the scheduled job can be fired instead of waited for."""
    sub = collector("nowcast/gdp/us")
    settings = load_settings(
        nowcast_config(tmp_path, broker.url, quick_bundles["gdp"], "0 6 * * *")
    )
    agent = Agent(settings, DEFAULT_PLUGINS)
    agent.start()
    try:
        releases = macro_releases(START, END)[-12:]
        for r in releases:
            feed.raw(f"macro/{r.series}", r.model_dump_json().encode())
        feed.flush()
        first = sub.wait_for("nowcast/gdp/us", lambda n: len(n) >= len(releases), 20)[-1]
        job = agent.scheduler.get_job("nowcast")
        assert (str(job.trigger.fields[5]), str(job.trigger.fields[6])) == ("6", "0")  # 06:00
        job.func()
        again = sub.wait_for("nowcast/gdp/us", lambda n: len(n) > len(releases), 20)[-1]
        assert again["as_of"] == first["as_of"] and again["nowcast"] == first["nowcast"]
        assert again["produced_at"] > first["produced_at"]
    finally:
        agent.stop()
    assert agent.fatal is None


def test_the_news_and_the_track_of_the_nowcast(
    tmp_path, broker, quick_bundles, agent_process, collector
):
    """Real releases through `forecaster feed macro`: the retained nowcast carries the impacts
    of its release time (the month-end market batch: Shapley values), summing to its revision;
    `{"history": true}` returns the track; `forecaster nowcast --history --csv` writes it."""
    sub = collector("nowcast/#", f"fleet/{AGENT}/status")
    agent_process(nowcast_config(tmp_path, broker.url, quick_bundles["gdp"]))
    wait_online(sub)
    start, end = date(2008, 5, 1), END
    replay = run_cli(
        "feed", "macro", "--broker", broker.url, "--rate", "0",
        "--start", start.isoformat(), "--end", end.isoformat(),
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    releases = macro_releases(start, end)
    found = sub.wait_for("nowcast/gdp/us", lambda n: len(n) >= len(releases), 30)
    latest = Nowcast.model_validate(found[-1])
    batch = {(r.series, r.period) for r in releases if r.released_at == latest.as_of}
    assert len(batch) > 1 and latest.attribution == "shapley"
    assert {(i.series, i.period) for i in latest.impacts} == batch
    assert abs(math.fsum(i.impact_pp for i in latest.impacts) - latest.revision) <= 1e-9
    assert latest.revision == latest.nowcast - latest.previous

    answer = request_nowcast(parse_broker_url(broker.url), "us", timeout=10, history=True)
    assert answer.source == "reply" and answer.history is not None
    track = answer.history.track
    assert {e.quarter for e in track} == {"2008Q2", "2008Q3"}  # May's releases: 2008Q2
    assert track[-1].impacts == latest.impacts and track[-1].nowcast == latest.nowcast
    for before, after in itertools.pairwise(track):
        assert abs(math.fsum(i.impact_pp for i in after.impacts) - after.revision) <= 1e-9
        if before.quarter == after.quarter:  # each step starts where the last one ended
            assert abs(after.previous - before.nowcast) <= 1e-6

    table = tmp_path / "track.csv"
    shown = run_cli("nowcast", "--broker", broker.url, "--history", "--csv", str(table))
    assert shown.returncode == 0, shown.stderr
    assert "GDP nowcast track" in shown.stdout
    rows = list(csv.DictReader(table.open()))
    assert tuple(rows[0]) == TRACK_COLUMNS
    assert len(rows) == sum(len(e.impacts) for e in track)
    last = [r for r in rows if r["time"] == rows[-1]["time"]]
    assert {(r["series"], r["period"]) for r in last} == batch
    assert float(last[0]["nowcast"]) == round(latest.nowcast, 4)
    assert abs(sum(float(r["impact_pp"]) for r in last) - float(last[0]["revision"])) < 1e-3

    plain = run_cli("nowcast", "--broker", broker.url)
    assert plain.returncode == 0, plain.stderr
    assert f"{latest.revision:+.2f} pp from {latest.previous:+.2f}" in plain.stdout
    top = max(latest.impacts, key=lambda i: abs(i.impact_pp))
    assert f"{top.impact_pp:+.3f}" in plain.stdout
    misuse = run_cli("nowcast", "--broker", broker.url, "--csv", str(table))
    assert misuse.returncode == 1 and "use it with --history" in misuse.stderr
