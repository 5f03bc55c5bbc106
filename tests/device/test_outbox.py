"""The sqlite outbox: order, acknowledgement, persistence, and the byte bound's drop policy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from device.outbox import Outbox, OutMessage, WindowState
from tests.support.waits import wait_until


def msg(i: int, size: int = 10) -> OutMessage:
    return OutMessage(topic=f"t/{i}", payload=b"x" * size)


def test_rows_come_back_in_order_and_leave_when_acknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20)
    first = box.commit([msg(0), msg(1)]).rows
    second = box.commit([msg(2)], acked=[first[0].id]).rows
    assert [r.topic for r in box.pending(0, 10)] == ["t/1", "t/2"]
    assert [r.topic for r in box.pending(first[1].id, 10)] == ["t/2"]
    assert [r.topic for r in box.pending(0, 10, through=first[1].id)] == ["t/1"]  # a lane's end
    assert box.last_id == second[0].id
    box.delete([first[1].id, second[0].id])
    assert box.pending(0, 10) == []
    assert (box.rows, box.bytes) == (0, 0)
    # Ids keep increasing even once the table is empty: the agent's cursor relies on it.
    assert box.commit([msg(3)]).rows[0].id > second[0].id


def test_messages_and_windows_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_bytes=1 << 20)
    closes = np.array([1.5, 2.5, 3.5])
    box.commit([msg(0, 5)], [WindowState("SPX", 41, "2020-01-02T00:00:00+00:00", 42, closes)])
    box.set_meta("k", "v")
    box.close()
    again = Outbox(path, max_bytes=1 << 20)
    assert [(r.topic, r.payload, r.qos, r.retain) for r in again.pending(0, 5)] == [
        ("t/0", b"xxxxx", 1, False)
    ]
    assert (again.rows, again.bytes) == (1, len("t/0") + 5)
    [state] = again.windows()
    assert (state.symbol, state.last_seq, state.count) == ("SPX", 41, 42)
    np.testing.assert_array_equal(state.closes, closes)
    assert again.get_meta("k") == "v"
    assert again.get_meta("other") is None


def test_wal_is_checkpointed_in_the_background_and_folded_in_on_close(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    wal = tmp_path / "o.sqlite-wal"
    box = Outbox(path, max_bytes=1 << 24)
    for i in range(200):
        box.commit([msg(i, 500)])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # once writes pause, committed pages are copied into the database file
    wait_until(lambda: path.stat().st_size >= 200 * 500, 5, "the background checkpoint")
    box.close()
    assert not wal.exists() or wal.stat().st_size == 0
    assert Outbox(path, max_bytes=1 << 24).rows == 200


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.lists(st.integers(1, 400), min_size=1, max_size=4),
            st.integers(0, 3),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    limit=st.integers(1000, 4000),
)
def test_when_full_the_oldest_unsent_rows_are_dropped(
    batches: list[tuple[list[int], int, bool]], limit: int
) -> None:
    # Same SQL without the disk, so many examples run quickly.
    box = Outbox(Path(":memory:"), max_bytes=limit, background_checkpoints=False)
    box.max_bytes = limit  # below the settings' minimum, to exercise the policy quickly
    committed: list[int] = []
    handed: set[int] = set()  # rows with the connection (any ids: live rows go first), protected
    dropped = 0
    for sizes, hand, newest_first in batches:
        result = box.commit(
            [msg(len(committed) + i, s) for i, s in enumerate(sizes)], handed=handed
        )
        new = [r.id for r in result.rows]
        committed += new
        dropped += result.dropped
        stored = [r.id for r in box.pending(0, 10_000)]
        assert box.rows == len(stored)
        assert box.bytes == sum(len(r.topic) + len(r.payload) for r in box.pending(0, 10_000))
        assert dropped == len(committed) - len(stored)
        assert set(new) <= set(stored)  # the newest forecasts are never the ones dropped
        assert handed <= set(stored)  # nor rows being sent
        gone = set(committed) - set(stored)
        waiting = [i for i in stored if i not in handed]
        if gone and waiting:
            assert max(gone) < min(waiting)  # dropped: the oldest that were still waiting
        older = [i for i in waiting if i not in new]
        if box.bytes > limit:
            assert not older  # over the bound only when nothing droppable is left
        # The agent hands up to `hand` more rows to the connection, newest or oldest first.
        handed |= set((waiting[::-1] if newest_first else waiting)[:hand])
