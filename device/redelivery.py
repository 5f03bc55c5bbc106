"""Which inputs the agent has committed, so it tells the broker's redeliveries from new input.

After a reconnect the broker re-sends every QoS 1 PUBLISH it holds no PUBACK for, with the DUP flag
and the original packet id (MQTT 5.0, section 4.4). The agent commits an input's outputs before it
acknowledges the input, so a re-sent input was already handled exactly when it was committed. This
table keeps, per packet id, a digest of the last input committed under that id, written in the
same transaction as the outputs. A DUP delivery whose digest matches is acknowledged and skipped;
anything else is handled as new. The bar's seq cannot tell the two apart: a deliberate duplicate
bar still in flight at a crash would be taken for a redelivery and never dead-lettered, and a bad
payload committed just before a crash would be dead-lettered twice.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt

from device.errors import ConfigError
from device.outbox import StateWrite

__all__ = ["CommittedInputs", "input_digest"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS committed_inputs (
    mid INTEGER PRIMARY KEY,  -- MQTT packet id (1..65535): at most one row each
    digest BLOB NOT NULL      -- of the topic and payload last committed under it
)
"""


def input_digest(msg: mqtt.MQTTMessage) -> bytes:
    """16 bytes naming an input by its topic and payload."""
    return hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload, digest_size=16).digest()


class CommittedInputs:
    """Per packet id, the digest of the input last committed under it (at most 65,535 rows).
    Only DUP deliveries are looked up, and they come only after a reconnect, so nothing is kept
    in memory; the reading connection opens at the first lookup and stays open, because after a
    restart in a backlog the broker re-sends inputs by the thousand, right before new ones."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._reader: sqlite3.Connection | None = None
        try:
            with closing(sqlite3.connect(db_path, timeout=10.0)) as db:
                db.execute(_SCHEMA)
                db.commit()
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot create the committed-inputs table in {db_path}: {exc}"
            ) from exc

    def redelivered(self, msg: mqtt.MQTTMessage, digest: bytes) -> bool:
        """True when `msg` is the broker re-sending an input this agent already committed.
        Network thread only."""
        if not msg.dup:
            return False
        try:
            if self._reader is None:
                # The network thread reads; `close` runs on the thread that stopped the agent.
                self._reader = sqlite3.connect(
                    self.db_path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
            row = self._reader.execute(
                "SELECT digest FROM committed_inputs WHERE mid = ?", (msg.mid,)
            ).fetchone()
        except sqlite3.Error as exc:
            # Handling it again risks a second dead letter; skipping it risks losing it.
            logger.warning("cannot look up packet %d in %s: %s", msg.mid, self.db_path, exc)
            return False
        return row is not None and bytes(row[0]) == digest

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def write(self, inputs: Sequence[tuple[int, bytes]]) -> StateWrite:
        """Record `inputs` ((packet id, digest)) in the transaction that commits their outputs."""
        rows = list(inputs)

        def write(cur: sqlite3.Cursor) -> None:
            cur.executemany("INSERT OR REPLACE INTO committed_inputs VALUES (?, ?)", rows)

        return write
