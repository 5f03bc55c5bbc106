"""The production broker config in deploy/: TLS, no anonymous access, per-agent ACLs."""

from __future__ import annotations

import queue
from dataclasses import replace

import paho.mqtt.client as mqtt
import pytest

from device.errors import AgentError
from device.mqtt import BrokerAddress, connect
from tests.integration.conftest import secured_address as address

pytestmark = pytest.mark.integration


def subscriber(addr: BrokerAddress, topic: str) -> tuple[mqtt.Client, queue.Queue[str]]:
    received: queue.Queue[str] = queue.Queue()
    client = connect(addr, f"sub-{addr.username}-{topic.replace('/', '_')}")
    client.on_message = lambda _c, _u, msg: received.put(msg.topic)
    client.subscribe(topic, qos=1)
    return client, received


def drain(q: queue.Queue[str], seconds: float = 1.0) -> set[str]:
    seen = set()
    try:
        while True:
            seen.add(q.get(timeout=seconds))
    except queue.Empty:
        return seen


def test_anonymous_clients_are_refused(secured) -> None:
    with pytest.raises(AgentError, match="refused"):
        connect(address(secured, None), "anonymous", timeout=5)


def test_wrong_password_is_refused(secured) -> None:
    bad = replace(address(secured, "kiosk-01"), password="wrong")
    with pytest.raises(AgentError, match="refused"):
        connect(bad, "bad-pass", timeout=5)


def publish_once(addr: BrokerAddress, client_id: str, topic: str) -> None:
    """One QoS 1 publish on a connection of its own: after refusing a publish (PUBACK "not
    authorized") Mosquitto 2.0.11 may close the connection, so none is shared between them."""
    client = connect(addr, client_id)
    client.publish(topic, b"{}", qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_agent_publishes_only_under_its_own_fleet_topics(secured) -> None:
    watcher, seen = subscriber(address(secured, "trainer"), "fleet/#")
    for topic in ("fleet/kiosk-01/status", "fleet/gw-02/status", "fleet/gw-02/events"):
        publish_once(address(secured, "kiosk-01"), "kiosk-01", topic)
    assert drain(seen) == {"fleet/kiosk-01/status"}
    watcher.disconnect()
    watcher.loop_stop()


def test_agent_reads_only_its_own_deploy_topic(secured) -> None:
    own, own_seen = subscriber(address(secured, "kiosk-01"), "fleet/kiosk-01/deploy")
    spy, spy_seen = subscriber(address(secured, "kiosk-01"), "fleet/gw-02/deploy")
    trainer = connect(address(secured, "trainer"), "trainer")
    trainer.publish("fleet/kiosk-01/deploy", b"bundle", qos=1).wait_for_publish(5)
    trainer.publish("fleet/gw-02/deploy", b"bundle", qos=1).wait_for_publish(5)
    assert drain(own_seen) == {"fleet/kiosk-01/deploy"}
    assert drain(spy_seen, 0.5) == set()
    for c in (own, spy, trainer):
        c.disconnect()
        c.loop_stop()


def test_agent_forecasts_reach_analysts_and_feeds_cannot_forge_them(secured) -> None:
    analyst, seen = subscriber(address(secured, "analyst"), "forecast/#")
    agent = connect(address(secured, "kiosk-01"), "kiosk-01-pub")
    feed = connect(address(secured, "feed"), "feed")
    agent.publish("forecast/price/SPX", b"{}", qos=1).wait_for_publish(5)
    feed.publish("forecast/price/FAKE", b"{}", qos=1).wait_for_publish(5)
    assert drain(seen) == {"forecast/price/SPX"}
    for c in (analyst, agent, feed):
        c.disconnect()
        c.loop_stop()


def test_the_web_gateway_account_reads_forecasts_and_cannot_publish(secured) -> None:
    """deploy's `web` account (forecaster-web) gets forecasts, nowcasts and statuses, and the
    broker refuses every publish from it, its own fleet topics included."""
    web, web_seen = subscriber(address(secured, "web"), "#")
    trainer, seen = subscriber(address(secured, "trainer"), "fleet/#")
    analyst, forecasts = subscriber(address(secured, "analyst"), "forecast/#")
    agent = connect(address(secured, "kiosk-01"), "kiosk-01-pub")
    agent.publish("forecast/price/SPX", b"{}", qos=1).wait_for_publish(5)
    agent.publish("fleet/kiosk-01/status", b"{}", qos=1).wait_for_publish(5)
    for i, topic in enumerate(
        ("forecast/price/FAKE", "nowcast/gdp/us", "fleet/web/status", "fleet/gw-02/status",
         "fleet/web/events", "fleet/kiosk-01/deploy")
    ):  # fmt: skip
        publish_once(address(secured, "web"), f"web-pub-{i}", topic)
    assert drain(web_seen) == {"forecast/price/SPX", "fleet/kiosk-01/status"}
    assert drain(seen, 0.5) == {"fleet/kiosk-01/status"}
    assert drain(forecasts, 0.5) == {"forecast/price/SPX"}
    for c in (web, trainer, analyst, agent):
        c.disconnect()
        c.loop_stop()
