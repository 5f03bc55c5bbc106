"""Outbox rows to the connection: two lanes (rows from before this connection, rows since), in
id order each, within the broker's Receive Maximum, the backlog kept to a share of the window.
Network thread only."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from device.outbox import Outbox, StoredMessage

__all__ = ["BACKLOG_SHARE", "Delivery", "Lane"]

logger = logging.getLogger(__name__)

# Share of the in-flight window the backlog may fill, so a forecast made now finds room at once.
BACKLOG_SHARE = 0.75


@dataclass
class Lane:
    """Outbox rows with `cursor` < id <= `through` (None: no upper bound), handed to the
    connection in id order; `waiting` while some may not be handed yet."""

    cursor: int = 0
    through: int | None = None
    waiting: bool = False

    def holds(self, row_id: int) -> bool:
        return self.through is None or row_id <= self.through


class Delivery:
    """Hands outbox rows to the paho client and tracks them until their PUBACK."""

    def __init__(
        self, client: mqtt.Client, outbox: Outbox, window: int, counters: Counter[str]
    ) -> None:
        self._client = client
        self._outbox = outbox
        self._counters = counters
        self.window_size = window
        self.connected = False
        self.inflight: dict[int, int] = {}  # paho mid -> outbox id, handed and awaiting PUBACK
        self.acked: list[int] = []  # acknowledged rows, deleted with the next commit
        # Rows stored before the current connection began, and rows stored since (see `pump`).
        self._backlog = Lane(waiting=outbox.rows > 0)
        self._live = Lane()
        # Topics of retained rows handed on the live lane of this connection (bounded by the
        # topics the agent writes: one per symbol and kind, region, agent).
        self._retained_live: set[str] = set()

    def connected_with(self, window: int) -> None:
        """A connection is up: everything stored so far is the backlog, what comes now is live."""
        self.connected = True
        self.window_size = window
        boundary = self._outbox.last_id
        self._backlog = Lane(through=boundary, waiting=self._outbox.rows > 0)
        self._live = Lane(cursor=boundary)
        self._retained_live = set()

    def take_acked(self) -> list[int]:
        acked, self.acked = self.acked, []
        return acked

    def published(self, mid: int, reason: ReasonCode) -> bool:
        """Record a PUBACK; True when rows wait and the window has half emptied (pump again)."""
        row_id = self.inflight.pop(mid, None)
        if row_id is None:
            return False  # a status heartbeat
        if reason.is_failure:
            # Retrying cannot help (e.g. not authorized); say so and count it.
            logger.warning("broker refused outbox message %d: %s; dropped", row_id, reason)
            self._counters["dropped"] += 1
        self.acked.append(row_id)
        return self.waiting() and len(self.inflight) <= self.window_size // 2

    def pump(self, fresh: list[StoredMessage] | None = None) -> None:
        """Hand outbox rows to the connection, at most `window_size` unacknowledged: rows stored
        on this connection (live) before rows left from earlier (backlog), each in id order, so a
        forecast made now does not wait behind thousands made before a restart. The backlog
        fills at most BACKLOG_SHARE of the window, which keeps room for live rows at hand."""
        if fresh:
            if self.connected and not self._live.waiting:
                self._hand(fresh, self._live)
                self._live.waiting = self._live.cursor < fresh[-1].id
            else:
                self._live.waiting = True
        while self.connected:
            room = self.window_size - len(self.inflight)
            if self._live.waiting:
                lane = self._live
            elif self._backlog.waiting:
                lane = self._backlog
                room = min(room, self._backlog_room())
            else:
                return
            if room <= 0:
                return
            rows = self._outbox.pending(lane.cursor, room, lane.through)
            self._hand(rows, lane)
            if len(rows) < room:
                lane.waiting = False

    def _backlog_room(self) -> int:
        in_flight = sum(1 for row_id in self.inflight.values() if self._backlog.holds(row_id))
        return int(self.window_size * BACKLOG_SHARE) - in_flight

    def _hand(self, rows: list[StoredMessage], lane: Lane) -> None:
        # Rows handed on an earlier connection are still in flight (paho re-sends them itself)
        # or acknowledged and not yet deleted: never publish those twice.
        sent = set(self.inflight.values()).union(self.acked) if lane is self._backlog else ()
        for row in rows:
            if row.id not in sent:
                if len(self.inflight) >= self.window_size:
                    return
                info = self._client.publish(
                    row.topic, row.payload, qos=row.qos, retain=self._retain(row, lane)
                )
                self.inflight[info.mid] = row.id
            lane.cursor = row.id

    def _retain(self, row: StoredMessage, lane: Lane) -> bool:
        """The row's retain flag, except for a backlog row whose topic already got a newer
        retained row on the live lane: the backlog goes out after it, and must not replace the
        broker's retained message with an older one (subscribers still receive it live)."""
        if not row.retain:
            return False
        if lane is self._live:
            self._retained_live.add(row.topic)
            return True
        return row.topic not in self._retained_live

    def waiting(self) -> bool:
        """Whether outbox rows may wait to be handed to the connection."""
        return self._live.waiting or self._backlog.waiting

    def unsent(self) -> bool:
        """Whether anything in the outbox still waits for the broker's acknowledgement."""
        return bool(self.inflight) or self.waiting()
