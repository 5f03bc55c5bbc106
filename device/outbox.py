"""The agent's sqlite outbox and window state: what to publish, and where each symbol stands.

Every output is written here, in the same transaction as the window state it follows from, before
the input bar is acknowledged; rows leave only when the broker acknowledges them (PUBACK). So a
crash, a SIGKILL or a broker outage loses nothing: the backlog is published in id order on the next
connection, beside what is stored from then on (the agent's two lanes, docs/ARCHITECTURE.md). The
store is bounded in bytes; when full, the oldest rows not yet handed to the connection are deleted
and counted (policy in docs/ARCHITECTURE.md, "Outbox").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.errors import ConfigError

__all__ = ["CommitResult", "OutMessage", "Outbox", "StateWrite", "StoredMessage", "WindowState"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Checkpoints (copying the WAL into the database file) need an fsync, which can stall writes to
# the same disk for tens of milliseconds. They run on a background connection, preferably once
# writes pause; under sustained load, after CHECKPOINT_COMMITS commits anyway. Past WAL_LIMIT_BYTES
# a RESTART checkpoint (holding writers for a moment) makes sqlite reuse the WAL from its start.
CHECKPOINT_POLL_S = 0.25
CHECKPOINT_IDLE_S = 1.0
CHECKPOINT_COMMITS = 5000
WAL_LIMIT_BYTES = 64 * 1024 * 1024
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,  -- assigned by Outbox, increasing: the delivery order
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    symbol TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_ts TEXT NOT NULL,
    count INTEGER NOT NULL,
    closes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to publish through the outbox."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """An outbox row: `id` orders delivery."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class WindowState:
    """Where one symbol stands: the last accepted seq and ts, bars seen, and the latest closes."""

    symbol: str
    last_seq: int
    last_ts: str
    count: int
    closes: np.ndarray  # float64, oldest first, at most the longest model window


@dataclass(frozen=True, slots=True)
class CommitResult:
    rows: list[StoredMessage]
    dropped: int


# Handler state stored in the same transaction as the outputs it led to: a function given the
# transaction's cursor (tables it writes are created by their owner, e.g. device/panel.py).
StateWrite = Callable[[sqlite3.Cursor], None]


class Outbox:
    """sqlite in WAL mode with synchronous=NORMAL: a commit survives a process kill; a power cut
    may lose the last commits, which the broker then redelivers because they were never acked.

    `background_checkpoints=False` leaves checkpoints to sqlite, in the writing thread."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        background_checkpoints: bool = True,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if background_checkpoints:
                self._db.execute("PRAGMA wal_autocheckpoint=0")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(f"{path}: outbox schema {version} is newer than this agent's")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            rows, size, last = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM outbox"
            ).fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the outbox {path}: {exc}") from exc
        self.rows: int = rows
        self.bytes: int = size
        self._last_id: int = last
        # One connection shared by the network thread and shutdown; sqlite serializes writes but
        # a Python connection must not run two statements at once.
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._commits = 0
        self._last_write = time.monotonic()
        self._checkpointer: threading.Thread | None = None
        if background_checkpoints:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop,
                name="outbox-checkpoint",
                daemon=True,
            )
            self._checkpointer.start()

    def commit(
        self,
        messages: Sequence[OutMessage],
        windows: Iterable[WindowState] = (),
        acked: Sequence[int] = (),
        handed: Collection[int] = (),
        writes: Sequence[StateWrite] = (),
    ) -> CommitResult:
        """One transaction: delete acknowledged rows, store `messages` (making room by dropping
        the oldest rows not `handed` to the connection), the symbols' window states and any other
        handler state (`writes`, e.g. the GDP nowcast's released indicators)."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            last_id = self._last_id
            try:
                self._delete(cur, acked)
                incoming = sum(len(m.topic) + len(m.payload) for m in messages)
                dropped = self._make_room(cur, incoming, handed)
                rows = [
                    StoredMessage(last_id + i, m.topic, m.payload, m.qos, m.retain)
                    for i, m in enumerate(messages, start=1)
                ]
                last_id += len(rows)
                cur.executemany(
                    "INSERT INTO outbox VALUES (?,?,?,?,?,?)",
                    [
                        (
                            r.id,
                            r.topic,
                            r.payload,
                            r.qos,
                            int(r.retain),
                            len(r.topic) + len(r.payload),
                        )
                        for r in rows
                    ],
                )
                cur.executemany(
                    "INSERT OR REPLACE INTO windows VALUES (?,?,?,?,?)",
                    [
                        (
                            w.symbol,
                            w.last_seq,
                            w.last_ts,
                            w.count,
                            np.ascontiguousarray(w.closes, dtype=np.float64).tobytes(),
                        )
                        for w in windows
                    ],
                )
                for write in writes:
                    write(cur)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                self._recount()
                raise
        self._last_id = last_id
        self._commits += 1
        self._last_write = time.monotonic()
        self.rows += len(rows)
        self.bytes += incoming
        return CommitResult(rows=rows, dropped=dropped)

    def delete(self, ids: Sequence[int]) -> None:
        """Forget rows the broker acknowledged."""
        if not ids:
            return
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                self._delete(cur, ids)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                self._recount()
                raise
        self._commits += 1
        self._last_write = time.monotonic()

    @property
    def last_id(self) -> int:
        """The id of the newest row ever stored: rows stored later get higher ids."""
        return self._last_id

    def pending(self, after: int, limit: int, through: int | None = None) -> list[StoredMessage]:
        """Up to `limit` rows with `after` < id <= `through` (no upper bound: None), in id order."""
        with self._lock:
            found = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? AND id <= ?"
                " ORDER BY id LIMIT ?",
                (after, self._last_id if through is None else through, limit),
            ).fetchall()
        return [StoredMessage(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in found]

    def windows(self) -> list[WindowState]:
        with self._lock:
            found = self._db.execute(
                "SELECT symbol, last_seq, last_ts, count, closes FROM windows ORDER BY symbol"
            ).fetchall()
        return [
            WindowState(s, q, ts, n, np.frombuffer(c, dtype=np.float64).copy())
            for s, q, ts, n, c in found
        ]

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        """Stop checkpointing, fold the WAL into the database file and close."""
        self._closed.set()
        if self._checkpointer is not None:
            self._checkpointer.join(30.0)
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                logger.warning("final checkpoint of %s failed: %s", self.path, exc)
            self._db.close()

    def _checkpoint_loop(self) -> None:
        """Checkpoint what was committed once writes pause (or after many commits), never in the
        writer's way except for the brief RESTART that bounds the WAL file."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            logger.error("cannot open %s for checkpoints: %s", self.path, exc)
            return
        wal = Path(f"{self.path}-wal")
        done = 0
        with closing(db):
            while not self._closed.wait(CHECKPOINT_POLL_S):
                pending = self._commits - done
                idle = time.monotonic() - self._last_write >= CHECKPOINT_IDLE_S
                if not pending or (not idle and pending < CHECKPOINT_COMMITS):
                    continue
                done += pending
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    if wal.exists() and wal.stat().st_size > WAL_LIMIT_BYTES:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except (sqlite3.Error, OSError) as exc:
                    logger.warning("checkpoint of %s failed: %s", self.path, exc)

    def _delete(self, cur: sqlite3.Cursor, ids: Sequence[int]) -> None:
        # One statement per chunk, not per row: acknowledgements arrive by the hundred.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sizes = cur.execute(
                f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING size", chunk
            ).fetchall()
            self.rows -= len(sizes)
            self.bytes -= sum(size for (size,) in sizes)

    def _make_room(self, cur: sqlite3.Cursor, incoming: int, handed: Collection[int]) -> int:
        """Drop the oldest rows not `handed` to the connection until `incoming` bytes fit;
        returns how many."""
        dropped = 0
        after = 0
        if self.bytes + incoming > self.max_bytes:
            handed = set(handed)  # only now: most commits never need it
        while self.bytes + incoming > self.max_bytes:
            victims = cur.execute(
                "SELECT id, size FROM outbox WHERE id > ? ORDER BY id LIMIT 64", (after,)
            ).fetchall()
            if not victims:
                # Everything left is already with the connection and leaves on PUBACK.
                break
            for row_id, size in victims:
                after = row_id
                if row_id in handed:
                    continue
                if self.bytes + incoming <= self.max_bytes:
                    break
                cur.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                self.rows -= 1
                self.bytes -= size
                dropped += 1
        return dropped

    def _recount(self) -> None:
        self.rows, self.bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
        ).fetchone()
