"""The gateway's MQTT side: one read-only subscriber that feeds the store. It never publishes
(no will, no publish call anywhere in the package), and deploy's ACL gives its account read
access only, so a bug could not publish either."""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from device.errors import AgentError
from device.mqtt import new_client
from device.web.settings import WebSettings
from device.web.store import Store

__all__ = ["Listener"]

logger = logging.getLogger(__name__)


class Listener:
    """Subscribes to forecasts, nowcasts and statuses (retained ones arrive on every
    (re)subscribe, which is how the view recovers after a restart) on paho's own thread."""

    def __init__(self, settings: WebSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        topics = store.topics
        self.filters = [topics.forecast_filter(), topics.nowcast("+"), topics.status_filter()]
        broker = settings.broker
        self.address = broker.address()
        self.client = new_client(self.address, broker.client_id)
        # paho's stubs say int; it takes seconds as a float.
        self.client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background: a broker that is down at start is retried, not fatal."""
        try:
            self.client.connect_async(
                self.address.host, self.address.port, keepalive=self.settings.broker.keepalive_s
            )
        except (OSError, ValueError) as exc:
            raise AgentError(f"cannot connect to {self.address.url}: {exc}") from exc
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            logger.error("broker %s refused the gateway: %s", self.address.url, rc)
            return
        logger.info("connected to %s; subscribing to %s", self.address.url, self.filters)
        client.subscribe([(f, 1) for f in self.filters])
        self.store.set_connected(True)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        logger.warning("disconnected from %s: %s", self.address.url, rc)
        self.store.set_connected(False)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.store.ingest(msg.topic, bytes(msg.payload))
