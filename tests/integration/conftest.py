"""Helpers for agent tests: the agent as a real subprocess, a collecting subscriber, a feed of
real S&P 500 bars, and a TCP link that can be cut to simulate a network partition."""

from __future__ import annotations

import contextlib
import getpass
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.mqtt import BrokerAddress, new_client, parse_broker_url
from tests.conftest import Broker, TrainedBundle, free_port

ROOT = Path(__file__).resolve().parents[2]
EDGE_ONLY = Path(__file__).with_name("edge_only.py")


def agent_config(
    path: Path,
    broker_url: str,
    bundle: TrainedBundle,
    agent_id: str = "test-agent",
    broker_settings: dict[str, Any] | None = None,
    **top: Any,
) -> Path:
    """An agent.toml for a test: quick reconnects, a fast heartbeat, the trained bundle."""
    lines = [f"agent_id = {json.dumps(agent_id)}", f'state_dir = "{path.parent / "state"}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    lines += [
        "[broker]",
        f"url = {json.dumps(broker_url)}",
        "reconnect_min_s = 0.1",
        "reconnect_max_s = 0.5",
        "keepalive_s = 5",
        *(f"{k} = {json.dumps(v)}" for k, v in (broker_settings or {}).items()),
        "[models]",
        f'dir = "{bundle.registry}"',
        f'trusted_keys = ["{bundle.keys_dir}"]',
        "[status]",
        "interval_s = 0.5",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AgentProcess:
    """`forecaster-agent` in a subprocess that cannot import the training stack."""

    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(EDGE_ONLY), "device.cli", "--config", str(self.config)],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[[Path], AgentProcess]]:
    started: list[AgentProcess] = []

    def make(config: Path) -> AgentProcess:
        agent = AgentProcess(config=config, log=tmp_path / "agent.log")
        agent.start()
        started.append(agent)
        return agent

    yield make
    for agent in started:
        if agent.alive():
            agent.kill()


@dataclass
class Collector:
    """A persistent-session subscriber that records every message it gets."""

    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    seen: list[mqtt.MQTTMessage] = field(default_factory=list)

    def drain(self) -> list[mqtt.MQTTMessage]:
        while True:
            try:
                self.seen.append(self.messages.get_nowait())
            except queue.Empty:
                return self.seen

    def on(self, topic_filter: str) -> list[dict[str, Any]]:
        return [
            json.loads(m.payload)
            for m in self.drain()
            if mqtt.topic_matches_sub(topic_filter, m.topic) and m.payload
        ]

    def wait_for(
        self, topic_filter: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.on(topic_filter)
            if predicate(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {topic_filter}; have {len(found)}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def persistent_client(url: str | BrokerAddress, client_id: str) -> mqtt.Client:
    """A client whose session (and QoS 1 queue) survives its own and the broker's restarts."""
    address = url if isinstance(url, BrokerAddress) else parse_broker_url(url)
    client = new_client(address, client_id)
    client.reconnect_delay_set(0.1, 0.5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(address.host, address.port, keepalive=5, clean_start=False, properties=props)
    client.loop_start()
    return client


@pytest.fixture
def collector(broker) -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(*filters: str, url: str | None = None) -> Collector:
        client = persistent_client(url or broker.url, f"collector-{len(made)}")
        c = Collector(client)
        ready = threading.Event()
        client.on_message = lambda _c, _u, msg: c.messages.put(msg)
        client.on_subscribe = lambda *_: ready.set()
        client.subscribe([(f, 1) for f in filters])
        assert ready.wait(5), "subscription not acknowledged"
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def sp500_closes(n: int, start: int = 4000) -> list[tuple[str, float]]:
    """`n` real daily closes of the S&P 500 (shipped with `arch`), as (ISO date, close)."""
    import arch.data.sp500

    frame = arch.data.sp500.load().iloc[start : start + n]
    return [(d.strftime("%Y-%m-%dT00:00:00Z"), float(c)) for d, c in frame["Adj Close"].items()]


def bar_payload(symbol: str, seq: int, ts: str, close: float) -> bytes:
    return json.dumps(
        {
            "symbol": symbol,
            "ts": ts,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": 1000.0,
            "seq": seq,
        }
    ).encode()


class Feed:
    """Publishes bars at QoS 1 from a persistent session (so an outage delays, never loses)."""

    def __init__(self, url: str | BrokerAddress, client_id: str = "feed") -> None:
        self.client = persistent_client(url, client_id)
        self.pending: set[int] = set()
        self._early: set[int] = set()  # acknowledged before `raw` recorded them
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        with self._lock:
            if mid in self.pending:
                self.pending.discard(mid)
            else:
                self._early.add(mid)

    def bar(self, symbol: str, seq: int, ts: str, close: float) -> None:
        self.raw(f"market/{symbol}/bar", bar_payload(symbol, seq, ts, close))

    def raw(self, topic: str, payload: bytes) -> None:
        # Queued by paho even while the broker is away, and sent on reconnect. Not under the
        # lock: paho's network thread may hold its own lock while calling `_on_publish`.
        mid = self.client.publish(topic, payload, qos=1).mid
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
            else:
                self.pending.add(mid)

    def flush(self, timeout: float = 20.0) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        deadline = time.monotonic() + timeout
        while self.pending:
            assert time.monotonic() < deadline, f"{len(self.pending)} bar(s) never acknowledged"
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def feed(broker) -> Iterator[Feed]:
    f = Feed(broker.url)
    yield f
    f.close()


class Link:
    """A TCP relay to the broker that can be cut: `cut()` stops forwarding the client's bytes
    (the broker hears nothing more: no PUBACKs, no PUBLISHes) and `reset()` drops every
    connection with whatever it held and forwards new ones again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        src.settimeout(0.1)
        while not self._closed.is_set():
            if from_client and self._cut.is_set():
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._cut.set()

    def reset(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                s.close()
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.reset()
        self._server.close()


@pytest.fixture
def link(broker) -> Iterator[Link]:
    relay = Link(broker.port)
    yield relay
    relay.close()


# ----- the production broker config (deploy/) with credentials made in the test ---------------

SECURED_AGENTS = ("kiosk-01", "gw-02")


@pytest.fixture(scope="session")
def fleet_credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/make-credentials.sh output (CA, broker certificate, passwords, ACL) for two agents."""
    creds = tmp_path_factory.mktemp("fleet") / "creds"
    subprocess.run(
        [
            "bash",
            str(ROOT / "deploy" / "make-credentials.sh"),
            str(creds),
            "localhost",
            *SECURED_AGENTS,
        ],
        check=True,
        capture_output=True,
    )
    return creds


def start_secured(work: Path, creds: Path) -> Broker:
    """deploy/mosquitto.conf with its paths pointed at `creds`, on a free loopback port."""
    port = free_port()
    config = (ROOT / "deploy" / "mosquitto.conf").read_text()
    config = config.replace("/etc/mosquitto/forecaster", str(creds))
    config = config.replace("/var/lib/mosquitto/", f"{work}/")
    config = config.replace("listener 8883", f"listener {port} 127.0.0.1")
    (work / "mosquitto.conf").write_text(config + f"\nuser {getpass.getuser()}\n")
    broker = Broker(port=port, config=work / "mosquitto.conf", workdir=work)
    broker.start()
    return broker


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, fleet_credentials: Path
) -> Iterator[tuple[Broker, Path]]:
    """One secured broker for a whole test module."""
    broker = start_secured(tmp_path_factory.mktemp("secured"), fleet_credentials)
    yield broker, fleet_credentials
    broker.stop()


def secured_address(secured: tuple[Broker, Path], user: str | None) -> BrokerAddress:
    """TLS to the secured broker, as `user` with the password made for it (None: anonymous)."""
    broker, creds = secured
    base = BrokerAddress(host="localhost", port=broker.port, tls=True, ca_file=creds / "ca.crt")
    if user is None:
        return base
    password = (creds / "accounts" / f"{user}.password").read_text().strip()
    return replace(base, username=user, password=password)
