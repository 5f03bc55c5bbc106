"""`forecaster fleet status` shows each pool member's partition and the symbols it serves."""

from __future__ import annotations

from rich.console import Console

from device.schemas import AgentStatus
from forecaster.ops.fleet import fleet_table


def test_the_table_shows_partition_symbols_and_pool_counters() -> None:
    statuses = {
        "gw-0": AgentStatus(
            agent="gw-0",
            online=True,
            partition={"index": 0, "count": 2},
            symbols=["SMI", "SPX"],
            counters={"not_owned": 7, "seq_gaps": 3},
        ),
        "gw-1": AgentStatus(agent="gw-1", online=True, symbols=[f"S{i:02d}" for i in range(12)]),
    }
    console = Console(width=250, record=True)
    console.print(fleet_table(statuses))
    text = console.export_text()
    row0 = next(line for line in text.splitlines() if "gw-0" in line)
    assert "0/2" in row0 and "SMI, SPX" in row0 and " 7 " in row0 and " 3 " in row0
    assert "S07 +4" in text  # many symbols: the first eight, then how many more
