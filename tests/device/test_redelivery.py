"""Recognising the broker's redeliveries by packet id and digest (device/redelivery.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st

from device.outbox import Outbox
from device.redelivery import CommittedInputs, input_digest


def message(mid: int, topic: str, payload: bytes, dup: bool) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    msg.payload = payload
    msg.dup = dup
    return msg


def commit(outbox: Outbox, committed: CommittedInputs, *msgs: mqtt.MQTTMessage) -> None:
    outbox.commit([], writes=[committed.write([(m.mid, input_digest(m)) for m in msgs])])


def test_only_a_dup_of_the_input_committed_under_its_packet_id_is_a_redelivery(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, 1 << 20)
    committed = CommittedInputs(path)
    first = message(7, "market/SPX/bar", b'{"seq": 1}', dup=False)
    commit(outbox, committed, first)

    again = message(7, "market/SPX/bar", b'{"seq": 1}', dup=True)
    assert committed.redelivered(again, input_digest(again))
    # Not re-sent by the broker: a feed that published the same bytes twice.
    fresh = message(7, "market/SPX/bar", b'{"seq": 1}', dup=False)
    assert not committed.redelivered(fresh, input_digest(fresh))
    # The broker reused id 7 for another input, never committed, and re-sent that one.
    other = message(7, "market/SPX/bar", b'{"seq": 2}', dup=True)
    assert not committed.redelivered(other, input_digest(other))
    elsewhere = message(7, "market/NDX/bar", b'{"seq": 1}', dup=True)
    assert not committed.redelivered(elsewhere, input_digest(elsewhere))
    outbox.close()

    # What was committed survives a restart (the table lives in the outbox database).
    reopened = CommittedInputs(path)
    assert reopened.redelivered(again, input_digest(again))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.binary(max_size=30)), min_size=1, max_size=40))
def test_the_table_keeps_the_last_input_per_packet_id(
    tmp_path_factory, inputs: list[tuple[int, bytes]]
) -> None:
    path = tmp_path_factory.mktemp("redelivery") / "outbox.sqlite"
    outbox = Outbox(path, 1 << 20, background_checkpoints=False)
    committed = CommittedInputs(path)
    last: dict[int, bytes] = {}
    for mid, payload in inputs:
        commit(outbox, committed, message(mid, "t", payload, dup=False))
        last[mid] = payload
    outbox.close()
    reopened = CommittedInputs(path)
    for mid, payload in last.items():
        resent = message(mid, "t", payload, dup=True)
        assert reopened.redelivered(resent, input_digest(resent))


def test_lookups_on_the_network_thread_and_close_on_the_stopping_thread(tmp_path: Path) -> None:
    """The agent looks redeliveries up on its network thread and closes from the thread that
    stopped it; the reader stays open between lookups and sees commits made after it opened."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, 1 << 20)
    committed = CommittedInputs(path)
    first, second = (message(m, "market/SPX/bar", b"%d" % m, dup=True) for m in (1, 2))
    commit(outbox, committed, first)
    seen: list[bool] = []

    def network() -> None:
        seen.append(committed.redelivered(first, input_digest(first)))
        commit(outbox, committed, second)
        seen.append(committed.redelivered(second, input_digest(second)))

    thread = threading.Thread(target=network)
    thread.start()
    thread.join(10)
    assert seen == [True, True]
    committed.close()
    outbox.close()
