"""Broker URLs and paho-mqtt v2 clients (MQTT v5) with bounded waits, shared by every command."""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.errors import AgentError, ConfigError

__all__ = [
    "BrokerAddress",
    "backoff_delay",
    "connect",
    "new_client",
    "new_properties",
    "parse_broker_url",
    "read_available",
    "write_pending",
]

logger = logging.getLogger(__name__)


def new_properties(packet_type: int) -> Properties:
    """MQTT v5 properties for one packet type (paho's constructor carries no annotations)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call,unused-ignore]  # strict only


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker listens and how to authenticate; parsed from `mqtt[s]://user:pass@host:port`."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host[:1883]`, `mqtts://host[:8883]`, optional `user:password@`; else ConfigError."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ConfigError(f"broker URL {url!r} is not mqtt://host:port or mqtts://host:port")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r} has an invalid port") from exc
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def new_client(
    address: BrokerAddress, client_id: str = "", *, manual_ack: bool = False
) -> mqtt.Client:
    """An unconnected MQTT v5 client with the address's credentials and TLS settings applied."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    # Small packets (acks, forecasts) must not wait for Nagle's algorithm: it adds milliseconds.
    client.on_socket_open = _no_delay
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        try:
            client.tls_set(
                ca_certs=str(address.ca_file) if address.ca_file else None,
                certfile=str(address.cert_file) if address.cert_file else None,
                keyfile=str(address.key_file) if address.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"TLS settings for {address.url}: {exc}") from exc
    return client


def _no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    # Not every socket is TCP (unix sockets, websockets): then there is nothing to turn off.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


def read_available(
    client: mqtt.Client,
    timeout: float,
    max_reads: int = 64,
    enough: Callable[[], bool] | None = None,
    linger: float = 0.0,
) -> MQTTErrorCode:
    """For a client driven by its owner's thread (paho's external-loop API, no loop()): wait up to
    `timeout` for input, then read what has arrived, not just one packet; keepalive included.
    With `linger`, keep reading what arrives up to `linger` seconds after the first packet, so
    that inputs arriving close together are handled in one pass.

    Stops early once `enough()` is true: nothing is written while this reads, so a flood of input
    would otherwise hold back every acknowledgement and publish the owner has queued."""
    sock = client.socket()
    if sock is None:
        return mqtt.MQTT_ERR_NO_CONN
    until: float | None = None  # end of the linger, from the first packet on
    for _ in range(max_reads):
        # A TLS socket may hold decrypted bytes that select() cannot see.
        buffered = getattr(sock, "pending", lambda: 0)()
        if until is not None:
            timeout = max(0.0, until - time.monotonic())
        try:
            readable, _, _ = select.select([sock], [], [], 0 if buffered else timeout)
        except (OSError, ValueError):
            return mqtt.MQTT_ERR_CONN_LOST
        if not (readable or buffered):
            break
        rc = client.loop_read()
        if rc != mqtt.MQTT_ERR_SUCCESS or client.socket() is None:
            return rc or mqtt.MQTT_ERR_CONN_LOST
        if enough is not None and enough():
            break
        if until is None:
            until = time.monotonic() + linger
    return client.loop_misc()


def write_pending(client: mqtt.Client, packets: int) -> MQTTErrorCode:
    """Send what is queued; with several packets, cork the socket so they leave as few TCP
    segments instead of one each (Linux TCP_CORK)."""
    if not client.want_write():
        return mqtt.MQTT_ERR_SUCCESS
    sock = client.socket()
    corked = (
        sock
        if packets > 1 and hasattr(socket, "TCP_CORK") and isinstance(sock, socket.socket)
        else None
    )
    if corked is not None:
        corked.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    try:
        return client.loop_write()
    finally:
        # loop_write may have dropped the connection: only a socket still in use is uncorked
        reconnected = client.socket() is not corked
        if corked is not None and not reconnected:
            with contextlib.suppress(OSError):
                corked.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter": a delay in [d/2, d], d = min(cap, base*2^n),
    so a fleet reconnecting after a broker restart spreads out instead of arriving at once."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return ceiling / 2.0 + (rng or random).uniform(0.0, ceiling / 2.0)


def connect(
    address: BrokerAddress,
    client_id: str = "",
    *,
    timeout: float = 10.0,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    will: tuple[str, bytes, int, bool] | None = None,
    keepalive: int = 30,
) -> mqtt.Client:
    """A connected client with its network loop running; raises AgentError if not connected in
    `timeout` seconds. For tools (feed, watch, publish); the agent manages its own reconnects."""
    client = new_client(address, client_id)
    if will is not None:
        client.will_set(*will)
    connected = threading.Event()
    result: dict[str, int] = {}

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        result["rc"] = rc.value
        connected.set()

    client.on_connect = on_connect
    props = new_properties(PacketTypes.CONNECT)
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    try:
        client.connect(
            address.host,
            address.port,
            keepalive=keepalive,
            clean_start=clean_start,
            properties=props,
        )
    except OSError as exc:
        raise AgentError(f"cannot reach broker {address.url}: {exc.strerror or exc}") from exc
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        raise AgentError(f"broker {address.url} did not answer within {timeout:g} s")
    if result.get("rc", 0) != 0:
        client.loop_stop()
        raise AgentError(f"broker {address.url} refused the connection", result["rc"])
    return client
