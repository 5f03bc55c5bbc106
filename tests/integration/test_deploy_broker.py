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


def test_agent_publishes_only_under_its_own_fleet_topics(secured) -> None:
    watcher, seen = subscriber(address(secured, "trainer"), "fleet/#")
    agent = connect(address(secured, "kiosk-01"), "kiosk-01")
    agent.publish("fleet/kiosk-01/status", b"{}", qos=1).wait_for_publish(5)
    agent.publish("fleet/gw-02/status", b"{}", qos=1).wait_for_publish(5)
    agent.publish("fleet/gw-02/events", b"{}", qos=1).wait_for_publish(5)
    assert drain(seen) == {"fleet/kiosk-01/status"}
    for c in (watcher, agent):
        c.disconnect()
        c.loop_stop()


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
