"""MQTT test clients: a persistent-session subscriber that records, a QoS 1 feed of bars, real
S&P 500 closes, and a TCP link that can be cut to simulate a network partition."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes

from device.mqtt import BrokerAddress, new_client, new_properties, parse_broker_url
from tests.support.waits import wait_until

__all__ = ["Collector", "Feed", "Link", "bar_payload", "persistent_client", "sp500_closes"]


@dataclass
class Collector:
    """A persistent-session subscriber that records every message it gets."""

    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    seen: list[mqtt.MQTTMessage] = field(default_factory=list)

    @classmethod
    def subscribed(
        cls, url: str | BrokerAddress, client_id: str, *filters: str, timeout: float = 10.0
    ) -> Collector:
        """A persistent client recording `filters` at QoS 1, returned once the broker acknowledged
        the subscription (so nothing published afterwards can be missed)."""
        client = persistent_client(url, client_id)
        c = cls(client)
        ready = threading.Event()
        client.on_message = lambda _c, _u, msg: c.messages.put(msg)
        client.on_subscribe = lambda *_: ready.set()
        client.subscribe([(f, 1) for f in filters])
        assert ready.wait(timeout), "subscription not acknowledged"
        return c

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
        def found() -> tuple[list[dict[str, Any]], ...]:
            messages = self.on(topic_filter)  # in a tuple: an empty list may be what is awaited
            return (messages,) if predicate(messages) else ()

        return wait_until(found, timeout, f"messages on {topic_filter}")[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def persistent_client(url: str | BrokerAddress, client_id: str) -> mqtt.Client:
    """A client whose session (and QoS 1 queue) survives its own and the broker's restarts."""
    address = url if isinstance(url, BrokerAddress) else parse_broker_url(url)
    client = new_client(address, client_id)
    # paho annotates the delays as int but sleeps them as given: sub-second retries for tests
    client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
    props = new_properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(address.host, address.port, keepalive=5, clean_start=False, properties=props)
    client.loop_start()
    return client


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
        wait_until(lambda: not self.pending, timeout, "the broker's acknowledgements", 0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Link:
    """A TCP relay to the broker that can be cut: `cut()` stops forwarding the client's bytes
    (the broker hears nothing more: no PUBACKs, no PUBLISHes) and `reset()` drops every
    connection with whatever it held and forwards new ones again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        # Bound to port 0 and then read: no other process can take the port in between.
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._server.settimeout(0.2)
        # Set while the client's bytes are forwarded; cleared by `cut`, set again by `reset`.
        self._forwarding_on = threading.Event()
        self._forwarding_on.set()
        # Client-to-broker pipes running, and those that have seen the cut (see `cut`).
        self._forwarding: set[int] = set()
        self._paused: set[int] = set()
        self._paused_changed = threading.Condition()
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
        me = threading.get_ident()
        if from_client:
            with self._paused_changed:
                self._forwarding.add(me)
        try:
            self._forward(src, dst, from_client, me)
        finally:
            with self._paused_changed:
                self._forwarding.discard(me)
                self._paused.discard(me)
                self._paused_changed.notify_all()
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _forward(self, src: socket.socket, dst: socket.socket, from_client: bool, me: int) -> None:
        while not self._closed.is_set():
            if from_client and not self._forwarding_on.is_set():
                with self._paused_changed:
                    self._paused.add(me)
                    self._paused_changed.notify_all()
                self._forwarding_on.wait(0.1)  # until `reset` (bounded: `close` may come first)
                continue
            if from_client and me in self._paused:
                with self._paused_changed:
                    self._paused.discard(me)
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

    def cut(self, timeout: float = 5.0) -> None:
        """Stop forwarding the client's bytes; returns once every client-to-broker pipe has
        stopped (a read it had under way is forwarded first)."""
        self._forwarding_on.clear()
        with self._paused_changed:
            stopped = self._paused_changed.wait_for(
                lambda: self._forwarding <= self._paused, timeout
            )
        assert stopped, "the link kept forwarding after the cut"

    def reset(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        with self._paused_changed:
            self._paused.clear()  # the pipes of these pairs end; new ones start forwarding
        for a, b in pairs:
            for s in (a, b):
                s.close()
        self._forwarding_on.set()

    def close(self) -> None:
        self._closed.set()
        self.reset()
        self._server.close()
