"""Delivery's retain flags: forecasts stay retained, but an old backlog row handed after a newer
live row of the same topic must not become the broker's retained message."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from device.agent.delivery import Delivery
from device.outbox import Outbox, OutMessage


@dataclass
class _Info:
    mid: int


@dataclass
class RecordingClient:
    """Stands in for paho's client: records (topic, payload, qos, retain) per publish."""

    sent: list[tuple[str, bytes, int, bool]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> _Info:
        self.sent.append((topic, payload, qos, retain))
        return _Info(len(self.sent))


def test_backlog_never_replaces_a_newer_retained_forecast(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", 1 << 20, background_checkpoints=False)
    # Left from before a restart: an old SPX forecast, an NDX forecast and a dead letter.
    outbox.commit(
        [
            OutMessage("forecast/price/SPX", b"seq 1", retain=True),
            OutMessage("forecast/price/NDX", b"seq 1", retain=True),
            OutMessage("fleet/a1/deadletter", b"bad bar"),
        ]
    )
    client = RecordingClient()
    delivery = Delivery(client, outbox, window=16, counters=Counter())  # type: ignore[arg-type]
    delivery.connected_with(16)
    fresh = outbox.commit([OutMessage("forecast/price/SPX", b"seq 2", retain=True)]).rows
    delivery.pump(fresh)
    assert client.sent == [
        ("forecast/price/SPX", b"seq 2", 1, True),  # live first, retained
        ("forecast/price/SPX", b"seq 1", 1, False),  # delivered, but not the retained one
        ("forecast/price/NDX", b"seq 1", 1, True),  # nothing newer: stays retained
        ("fleet/a1/deadletter", b"bad bar", 1, False),
    ]
    outbox.close()
