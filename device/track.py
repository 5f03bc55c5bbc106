"""The nowcast's memory beyond the panel: the releases of the latest release time (the group
whose news the current nowcast reports, with the values they replaced) and the track, the
nowcast after each release time of the current and the previous quarter. Both live in the
agent's state database and are written in the outbox transaction of the nowcast they describe.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from device.errors import ConfigError
from device.outbox import StateWrite
from device.panel import Released, quarter_index
from device.schemas import MacroRelease, TrackEntry

__all__ = [
    "GroupMember",
    "ReleaseGroup",
    "Track",
    "group_write",
    "load_group",
    "load_tracks",
    "track_write",
]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nowcast_group (
    grp INTEGER NOT NULL,
    series TEXT NOT NULL,
    period TEXT NOT NULL,
    value REAL NOT NULL,
    released_at TEXT NOT NULL,
    prev_value REAL,            -- the value this release replaced; NULL for a first release
    prev_released_at TEXT,
    PRIMARY KEY (series, period)
);
CREATE TABLE IF NOT EXISTS nowcast_track (
    region TEXT NOT NULL,
    grp INTEGER NOT NULL,       -- the release group: entries in this order
    quarter INTEGER NOT NULL,   -- quarters since year 0, for pruning
    entry TEXT NOT NULL,        -- TrackEntry JSON
    PRIMARY KEY (region, grp)
);
"""


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A release of the group and what the panel held for its (series, period) before it."""

    release: MacroRelease
    previous: Released | None


@dataclass(frozen=True)
class ReleaseGroup:
    """The releases sharing the latest release time handled, in arrival order; `id` grows with
    every new group and orders the track."""

    id: int = 0
    members: tuple[GroupMember, ...] = ()

    @property
    def released_at(self) -> datetime | None:
        return self.members[0].release.released_at if self.members else None

    def add(self, release: MacroRelease, previous: Released | None) -> ReleaseGroup:
        """This group with `release` when it has the group's release time, else a new group."""
        member = GroupMember(release, previous)
        if self.members and release.released_at == self.released_at:
            return ReleaseGroup(self.id, (*self.members, member))
        return ReleaseGroup(self.id + 1, (member,))


@dataclass
class Track:
    """One region's track: entries by group id, oldest first."""

    entries: dict[int, TrackEntry] = field(default_factory=dict)

    def put(self, group: int, entry: TrackEntry) -> int:
        """Add or replace the entry of `group`; drop quarters before the entry's previous one.
        Returns the first quarter (index) kept."""
        self.entries[group] = entry
        keep = quarter_index(entry.quarter) - 1
        for g in [g for g, e in self.entries.items() if quarter_index(e.quarter) < keep]:
            del self.entries[g]
        return keep

    def around(self, quarter: str) -> list[TrackEntry]:
        """The entries of `quarter` and the quarter before it."""
        keep = quarter_index(quarter) - 1
        return [e for e in self.entries.values() if quarter_index(e.quarter) >= keep]


def _connect_rows(db_path: Path, query: str) -> list[tuple[Any, ...]]:
    try:
        with closing(sqlite3.connect(db_path, timeout=10.0)) as db:
            db.executescript(_SCHEMA)
            db.commit()
            return list(db.execute(query).fetchall())
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the nowcast state in {db_path}: {exc}") from exc


def load_group(db_path: Path) -> ReleaseGroup:
    """The latest release group stored (creating the tables on first use)."""
    rows = _connect_rows(
        db_path,
        "SELECT grp, series, period, value, released_at, prev_value, prev_released_at "
        "FROM nowcast_group ORDER BY rowid",
    )
    if not rows:
        return ReleaseGroup()
    members = []
    for _, series, period, value, released_at, prev_value, prev_at in rows:
        release = MacroRelease(
            series=str(series), period=str(period), value=float(value), released_at=released_at
        )
        previous = (
            None
            if prev_value is None
            else Released(float(prev_value), datetime.fromisoformat(str(prev_at)))
        )
        members.append(GroupMember(release, previous))
    return ReleaseGroup(int(rows[0][0]), tuple(members))


def load_tracks(db_path: Path) -> dict[str, Track]:
    """Every region's stored track; an unreadable entry is skipped with a warning."""
    tracks: dict[str, Track] = {}
    for region, grp, entry in _connect_rows(
        db_path, "SELECT region, grp, entry FROM nowcast_track ORDER BY region, grp"
    ):
        try:
            parsed = TrackEntry.model_validate_json(str(entry))
        except ValidationError:
            logger.warning("skipping an unreadable track entry of %s (group %s)", region, grp)
            continue
        tracks.setdefault(str(region), Track()).entries[int(grp)] = parsed
    return tracks


def group_write(group: ReleaseGroup) -> StateWrite:
    """Replace the stored group with `group`."""
    rows: Iterable[tuple[object, ...]] = [
        (
            group.id,
            m.release.series,
            m.release.period,
            float(m.release.value),
            m.release.released_at.isoformat(),
            None if m.previous is None else m.previous.value,
            None if m.previous is None else m.previous.released_at.isoformat(),
        )
        for m in group.members
    ]

    def write(cur: sqlite3.Cursor) -> None:
        cur.execute("DELETE FROM nowcast_group")
        cur.executemany("INSERT INTO nowcast_group VALUES (?,?,?,?,?,?,?)", rows)

    return write


def track_write(region: str, group: int, entry: TrackEntry, keep_from: int) -> StateWrite:
    """Store `entry` as group `group` of `region`'s track and drop quarters before `keep_from`."""
    row = (region, group, quarter_index(entry.quarter), entry.model_dump_json())

    def write(cur: sqlite3.Cursor) -> None:
        cur.execute("INSERT OR REPLACE INTO nowcast_track VALUES (?,?,?,?)", row)
        cur.execute(
            "DELETE FROM nowcast_track WHERE region = ? AND quarter < ?", (region, keep_from)
        )

    return write
