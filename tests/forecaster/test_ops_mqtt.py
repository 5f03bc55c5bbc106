"""The operator tools' inbox: bounded, drops the oldest message when full and counts it."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from hypothesis import given
from hypothesis import strategies as st

from forecaster.ops.mqtt import Inbox


def message(i: int) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=b"t")
    msg.payload = str(i).encode()
    return msg


@given(size=st.integers(1, 20), count=st.integers(0, 60))
def test_a_full_inbox_keeps_the_newest_messages_in_order(size: int, count: int) -> None:
    inbox = Inbox(size)
    for i in range(count):
        inbox.put(message(i))
    got = []
    while (msg := inbox.get(0)) is not None:
        got.append(int(msg.payload))
    assert got == list(range(max(0, count - size), count))
    assert inbox.dropped == max(0, count - size)


def test_get_waits_for_a_message_and_gives_up_at_its_timeout() -> None:
    inbox = Inbox(10)
    started = time.monotonic()
    assert inbox.get(0.05) is None
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, inbox.put, args=[message(7)]).start()
    msg = inbox.get(5.0)
    assert msg is not None and msg.payload == b"7"
