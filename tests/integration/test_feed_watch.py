"""The replayer and the live view against a real Mosquitto: every bar arrives once, in order, as
a valid `Bar`; the view drops QoS 1 redeliveries; the CLI reports counts and one-line errors."""

from __future__ import annotations

import io
import queue
import re
import subprocess
import threading
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from rich.console import Console

from device.mqtt import connect, parse_broker_url
from device.schemas import AgentStatus, Bar
from device.topics import Topics
from forecaster.ops.feeds import dataset_bars, interleave, replay
from forecaster.ops.watch import ForecastBoard, watch
from tests.conftest import Broker
from tests.forecaster.test_watch import price_forecast
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
SENTINEL = "nowcast/gdp/sentinel/get"


def subscribe(broker: Broker, topic: str) -> tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]:
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = connect(parse_broker_url(broker.url), "collector")
    client.on_message = lambda _c, _u, msg: inbox.put(msg)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(5)
    return client, inbox


def drain(
    inbox: queue.Queue[mqtt.MQTTMessage],
    count: int,
    sentinel: tuple[mqtt.Client, str],
    timeout: float = 10.0,
) -> list:
    """`count` messages, then every other one before the sentinel: the collector's own publish on
    `sentinel[1]`, a topic it reads. The broker hands a subscriber its messages in order, so what
    was sent before the sentinel arrives before it: proof that nothing more followed."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(inbox.get(timeout=0.1))
        except queue.Empty:
            continue
    client, topic = sentinel
    client.publish(topic, b"sentinel", qos=1).wait_for_publish(5)
    while (msg := inbox.get(timeout=max(0.1, deadline - time.monotonic()))).topic != topic:
        got.append(msg)
    return got


def test_replay_delivers_every_bar_once_in_order(broker: Broker) -> None:
    spx = dataset_bars("sp500", start=date(2016, 1, 1), limit=150)
    ndx = dataset_bars("nasdaq", start=date(2016, 1, 1), limit=150, seq_start=1000)
    sent = list(interleave([spx, ndx]))
    collector, inbox = subscribe(broker, "site1/market/+/bar")
    feed = connect(parse_broker_url(broker.url), "feed")
    try:
        result = replay(sent, feed, 0.0, Topics("site1/"))
    finally:
        feed.disconnect()
        feed.loop_stop()
    assert (result.published, result.acknowledged) == (300, 300)
    assert result.per_symbol == {"SPX": 150, "NDX": 150}
    got = drain(inbox, 300, (collector, "site1/market/SENTINEL/bar"))
    collector.disconnect()
    assert len(got) == 300
    bars = [Bar.model_validate_json(m.payload) for m in got]
    assert [m.topic for m in got] == [f"site1/market/{b.symbol}/bar" for b in bars]
    assert bars == sent  # one connection, QoS 1: the broker keeps the publish order
    assert [b.seq for b in bars if b.symbol == "NDX"] == list(range(1000, 1150))


def test_replay_is_paced_and_can_be_stopped(broker: Broker) -> None:
    bars = dataset_bars("sp500", start=date(2017, 1, 1), limit=40)
    feed = connect(parse_broker_url(broker.url), "feed")
    try:
        result = replay(bars[:25], feed, 50.0, Topics())
        assert result.published == result.acknowledged == 25
        # 24 intervals of 20 ms; the schedule does not drift with the time spent publishing.
        assert 24 / 50 - 0.01 <= result.elapsed_s < 24 / 50 + 0.25
        stop = threading.Event()
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        stopped = replay(bars, feed, 20.0, Topics(), stop=stop)
        timer.join()
    finally:
        feed.disconnect()
        feed.loop_stop()
    assert stopped.stopped
    assert 3 <= stopped.published <= 9
    assert stopped.acknowledged == stopped.published


def test_watch_drops_redeliveries_and_reads_heartbeats(broker: Broker) -> None:
    bars = dataset_bars("sp500", start=date(2016, 1, 1), limit=3)
    address = parse_broker_url(broker.url)
    topics = Topics()
    publisher = connect(address, "agent-like")
    status = AgentStatus(agent="a1", online=True, models=[{"id": "price/spx"}])
    publisher.publish(topics.status("a1"), status.model_dump_json(), qos=1, retain=True)
    board = ForecastBoard(topics, history=10)
    out = io.StringIO()
    subscribed = threading.Event()
    viewer = threading.Thread(
        target=watch,
        args=(address,),
        kwargs={
            "duration": 2.5,
            "board": board,
            "console": Console(file=out, width=160),
            "subscribed": subscribed,
        },
    )
    viewer.start()
    assert subscribed.wait(10)
    for bar in bars:
        payload = price_forecast(bar).model_dump_json()
        for _ in range(2):  # the same forecast twice, as a QoS 1 redelivery would arrive
            publisher.publish(topics.price_forecast("SPX"), payload, qos=1).wait_for_publish(5)
    publisher.publish(topics.price_forecast("SPX"), b"garbage", qos=1).wait_for_publish(5)
    viewer.join(10)
    publisher.disconnect()
    publisher.loop_stop()
    assert not viewer.is_alive()
    assert (board.received, board.duplicates, board.invalid) == (3, 3, 1)
    assert board.statuses["a1"].online
    assert board.price[("SPX", "spx")].forecast.seq == bars[-1].seq
    text = out.getvalue()
    assert "SPX" in text and "a1 online" in text and "3 redeliveries dropped" in text


def test_cli_replay_publishes_csv_and_dataset_bars(broker: Broker) -> None:
    collector, inbox = subscribe(broker, "market/+/bar")
    result = run_cli(
        "feed", "replay",
        "--dataset", "sp500",
        "--csv", str(ROOT / "models" / "data" / "nasdaq_close.csv"),
        "--symbols", "SPX,NDX",
        "--copies", "3",
        "--start", "2018-01-01",
        "--limit", "20",
        "--rate", "0",
        "--broker", broker.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "published 120 bars" in result.stdout
    assert "120 acknowledged" in result.stdout
    got = [
        Bar.model_validate_json(m.payload)
        for m in drain(inbox, 120, (collector, "market/SENTINEL/bar"))
    ]
    collector.disconnect()
    assert len(got) == 120
    symbols = {b.symbol for b in got}
    assert symbols == {f"{s}{i:02d}" for s in ("SPX", "NDX") for i in range(3)}
    for symbol in symbols:
        assert [b.seq for b in got if b.symbol == symbol] == list(range(20))
    ndx = [b for b in got if b.symbol == "NDX01"]
    assert all(b.open == b.close and b.volume == 0 for b in ndx)  # close-only CSV


def test_cli_replay_to_an_absent_broker_is_one_line(tmp_path: Path) -> None:
    from tests.conftest import free_port

    result = run_cli(
        "feed", "replay", "--dataset", "sp500", "--limit", "5",
        "--broker", f"mqtt://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach broker" in lines[0]


def test_cli_replay_over_tls_with_a_client_certificate(secured: tuple[Broker, Path]) -> None:
    """The production broker config: the `feed` account over TLS may publish bars; the
    `analyst` account may not, and the replay says the broker refused them."""
    broker, creds = secured
    agent_addr = replace(
        parse_broker_url(f"mqtts://localhost:{broker.port}"),
        ca_file=creds / "ca.crt",
        username="kiosk-01",
        password=(creds / "accounts" / "kiosk-01.password").read_text().strip(),
    )
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    agent = connect(agent_addr, "kiosk-01")
    agent.on_message = lambda _c, _u, msg: inbox.put(msg)
    subscribed = threading.Event()
    agent.on_subscribe = lambda *_a: subscribed.set()
    # The kiosk account reads market/+/bar and nowcast requests, and may write nowcast/#: its
    # own request on SENTINEL marks the end of what the feed sent before it.
    agent.subscribe([("market/+/bar", 1), (SENTINEL, 1)])
    assert subscribed.wait(5)

    def replay_as(user: str) -> subprocess.CompletedProcess[str]:
        password = (creds / "accounts" / f"{user}.password").read_text().strip()
        return run_cli(
            "feed", "replay", "--dataset", "sp500", "--limit", "10", "--rate", "0",
            "--broker", f"mqtts://{user}:{password}@localhost:{broker.port}",
            "--ca", str(creds / "ca.crt"),
            "--cert", str(creds / "clients" / f"{user}.crt"),
            "--key", str(creds / "clients" / f"{user}.key"),
        )  # fmt: skip

    ok = replay_as("feed")
    assert ok.returncode == 0, ok.stderr
    assert "published 10 bars" in ok.stdout
    assert [
        Bar.model_validate_json(m.payload).seq for m in drain(inbox, 10, (agent, SENTINEL))
    ] == list(range(10))
    refused = replay_as("analyst")
    late = drain(inbox, 0, (agent, SENTINEL))
    agent.disconnect()
    agent.loop_stop()
    assert refused.returncode == 1
    # Mosquitto drops the connection of a client whose publish its ACL denies, with or without
    # first sending the refusing PUBACK (eclipse-mosquitto#2579): either way the replay says
    # which permission to check
    assert re.fullmatch(
        r"error: (the broker refused \d+ bar\(s\) \(\d+ x Not authorized\); check that this "
        r"account may publish on market/<symbol>/bar|the broker closed the connection after \d+ "
        r"messages without acknowledging any; check that this account may publish on "
        r"market/SPX/bar)\n",
        refused.stderr,
    ), refused.stderr
    assert late == []
