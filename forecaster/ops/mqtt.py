"""The one MQTT client of the operator tools (feed, watch, fleet, nowcast, demo): a connection
with its network loop, SUBACK-confirmed subscriptions, acknowledged publishes and a bounded inbox;
every wait has a timeout and broker failures are `FeedError`s. Built on `device.mqtt`."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.errors import DeviceError
from device.mqtt import BrokerAddress, connect
from forecaster.errors import FeedError

__all__ = ["Inbox", "ToolClient", "tool_client"]

logger = logging.getLogger(__name__)

MessageHandler = Callable[[mqtt.MQTTMessage], None]


class Inbox:
    """Messages from paho's network thread for the tool's own thread, at most `maxsize`.

    When full, the OLDEST message is dropped and counted in `dropped`: the callback must never
    block (that would stall paho's acks and keepalive) nor raise (paho would log and lose it),
    and what these tools want is the newest state (a status, an answer), not the oldest."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise FeedError(f"an inbox holds at least one message, not {maxsize}")
        self._items: deque[mqtt.MQTTMessage] = deque(maxlen=maxsize)
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, msg: mqtt.MQTTMessage) -> None:
        with self._ready:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(msg)
            self._ready.notify()

    def get(self, timeout: float) -> mqtt.MQTTMessage | None:
        """The oldest message, waiting up to `timeout` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while not self._items:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._ready.wait(left)
            return self._items.popleft()


class ToolClient:
    """A connected client (see `tool_client`); `client` is the paho client for what this does not
    cover (e.g. handing it to `feeds.replay`)."""

    def __init__(self, client: mqtt.Client, inbox: Inbox, on_message: MessageHandler | None):
        self.client = client
        self.inbox = inbox
        self._handler = on_message or inbox.put
        self._acked: dict[int, list[ReasonCode]] = {}
        self._filters: list[tuple[str, int]] = []
        self._cond = threading.Condition()
        client.on_message = lambda _c, _u, msg: self._handler(msg)
        client.on_subscribe = self._on_subscribe
        client.on_connect = self._on_connect

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Properties
    ) -> None:
        with self._cond:
            self._acked[mid] = list(reasons)
            self._cond.notify_all()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        # After an automatic reconnect the session starts clean: subscribe again.
        if not getattr(rc, "is_failure", False) and self._filters:
            self.client.subscribe(list(self._filters))

    def subscribe(self, filters: Sequence[str], qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK, so nothing sent after this returns is missed."""
        pairs = [(f, qos) for f in filters]
        with self._cond:
            rc, mid = self.client.subscribe(pairs)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise FeedError(
                    f"cannot subscribe to {', '.join(filters)}: {mqtt.error_string(rc)}"
                )
            self._filters += pairs
            if not self._cond.wait_for(lambda: mid in self._acked, timeout):
                raise FeedError(f"the broker did not acknowledge the subscription in {timeout:g} s")
            reasons = self._acked.pop(mid)
        refused = [f for f, r in zip(filters, reasons, strict=False) if r.is_failure]
        if refused:  # e.g. an ACL: the tool then sees only what it may read, as before
            logger.warning("the broker refused the subscription to %s", ", ".join(refused))

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        properties: Properties | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Publish and, for QoS > 0, wait up to `timeout` seconds for the broker's ack."""
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise FeedError(f"publishing on {topic} failed: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:  # paho: dropped (queue full, disconnect)
            raise FeedError(f"publishing on {topic} failed: {exc}") from exc
        if not info.is_published():
            raise FeedError(
                f"the broker did not acknowledge the message on {topic} in {timeout:g} s"
            )

    def messages(self, timeout: float, *, quiet: float | None = None) -> Iterator[mqtt.MQTTMessage]:
        """Inbox messages until `timeout` seconds pass, or `quiet` seconds pass without one."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.inbox.get(min(left, quiet) if quiet is not None else left)
            if msg is None:
                return
            yield msg

    def close(self) -> None:
        if self.inbox.dropped:
            logger.warning("dropped the %d oldest messages of a full inbox", self.inbox.dropped)
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def tool_client(
    address: BrokerAddress,
    client_id: str = "",
    *,
    inbox_size: int = 10_000,
    on_message: MessageHandler | None = None,
    timeout: float = 10.0,
) -> Iterator[ToolClient]:
    """A connected `ToolClient`, disconnected on exit. Messages go to its inbox, or to
    `on_message` (called on paho's thread: it must be quick and must not raise)."""
    try:
        client = connect(address, client_id, timeout=timeout)
    except DeviceError as exc:
        raise FeedError(str(exc)) from exc
    tool = ToolClient(client, Inbox(inbox_size), on_message)
    try:
        yield tool
    finally:
        tool.close()
