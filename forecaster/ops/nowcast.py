"""`forecaster nowcast`: pull the GDP nowcast from the agents with an MQTT v5 request (response
topic + correlation data), falling back to the retained `nowcast/gdp/<region>`; with `history`,
the track of the current and the previous quarter, as a table or a CSV policy teams can paste."""

from __future__ import annotations

import csv
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError
from rich.panel import Panel
from rich.table import Table

from device.mqtt import BrokerAddress
from device.schemas import Nowcast, NowcastFailure, NowcastHistory, ReleaseImpact
from device.topics import Topics
from forecaster.errors import ForecasterError
from forecaster.ops.mqtt import tool_client

__all__ = [
    "TRACK_COLUMNS",
    "NowcastAnswer",
    "history_table",
    "nowcast_panel",
    "request_nowcast",
    "track_rows",
    "write_track_csv",
]

# One row per release: the nowcast after its release time, its band, the release and its impact
TRACK_COLUMNS = (
    "quarter",
    "time",
    "nowcast",
    "band_lo",
    "band_hi",
    "series",
    "period",
    "value",
    "impact_pp",
    "revision",
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NowcastAnswer:
    """A nowcast and where it came from: an agent's reply or the broker's retained copy."""

    nowcast: Nowcast
    source: Literal["reply", "retained"]
    note: str = ""
    history: NowcastHistory | None = None  # the agent's track, when asked for and answered


def request_nowcast(
    address: BrokerAddress,
    region: str = "us",
    topics: Topics | None = None,
    timeout: float = 5.0,
    history: bool = False,
) -> NowcastAnswer:
    """Ask `nowcast/gdp/<region>/get` and wait up to `timeout` seconds for the first reply with
    our correlation data; without one, the retained nowcast (never for `history`: only an
    agent keeps the track); else ForecasterError."""
    topics = topics or Topics()
    token = uuid.uuid4().hex
    # The deploy ACL lets an account read only reply/<its user name>/#.
    response = f"{topics.prefix}reply/{address.username or 'analyst'}/{token}"
    correlation = token.encode()
    retained: Nowcast | None = None
    refusal: NowcastFailure | None = None
    with tool_client(address, f"nowcast-{token[:12]}", inbox_size=1000) as tool:
        tool.subscribe([response, topics.nowcast(region)], timeout=timeout)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response
        props.CorrelationData = correlation
        props.ContentType = "application/json"
        body = json.dumps({"history": history}).encode()
        tool.publish(topics.nowcast_request(region), body, properties=props, timeout=timeout)
        for msg in tool.messages(timeout):
            if msg.topic != response:
                retained = _retained(msg) or retained
                continue
            if getattr(msg.properties, "CorrelationData", None) != correlation:
                continue  # not an answer to this request
            answer = _reply(msg)
            if isinstance(answer, NowcastHistory):
                return NowcastAnswer(answer.nowcast, "reply", history=answer)
            if isinstance(answer, Nowcast):
                return NowcastAnswer(answer, "reply")
            if answer is not None:
                refusal = answer
                break
    why = (
        f"agent {refusal.agent}: {refusal.error}"
        if refusal
        else f"no agent answered within {timeout:g} s"
    )
    if retained is not None and not history:
        return NowcastAnswer(retained, "retained", why)
    if history:
        raise ForecasterError(f"no track of the GDP nowcast for region {region!r}: {why}")
    raise ForecasterError(f"no GDP nowcast for region {region!r}: {why}, and none is retained")


def _retained(msg: mqtt.MQTTMessage) -> Nowcast | None:
    """The retained nowcast in `msg`, or None for a cleared or malformed one."""
    if not msg.payload:
        return None
    try:
        return Nowcast.model_validate_json(msg.payload)
    except ValidationError:
        logger.warning("ignoring a malformed retained nowcast on %s", msg.topic)
        return None


def _reply(msg: mqtt.MQTTMessage) -> Nowcast | NowcastHistory | NowcastFailure | None:
    """An agent's answer: a nowcast, its track, its refusal, or None for a malformed reply."""
    kinds: tuple[type[Nowcast | NowcastHistory | NowcastFailure], ...] = (
        Nowcast,
        NowcastHistory,
        NowcastFailure,
    )
    for kind in kinds:
        try:
            return kind.model_validate_json(msg.payload)
        except ValidationError:
            continue
    logger.warning("ignoring a malformed reply on %s", msg.topic)
    return None


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def nowcast_panel(answer: NowcastAnswer) -> Panel:
    """The nowcast as a small panel: quarter, value, band, as-of time, model, inputs, source."""
    n = answer.nowcast
    info = n.information
    lo, hi = n.band.levels
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("nowcast", f"[bold]{_signed(n.nowcast)}[/] {n.units}")
    grid.add_row(
        "band", f"{_signed(n.band.lo)} .. {_signed(n.band.hi)} ({lo:.0%} to {hi:.0%} quantiles)"
    )
    grid.add_row("as of", f"{n.as_of:%Y-%m-%d %H:%M} UTC (latest release seen)")
    grid.add_row("model", f"{n.model.name} {n.model.version} (sha256 {n.model.sha256[:12]})")
    grid.add_row(
        "inputs",
        f"{info.cells - info.missing} of {info.cells} released; months "
        f"{info.months[0]}..{info.months[1]}, GDP {info.gdp_quarters[0]}..{info.gdp_quarters[1]}",
    )
    grid.add_row(
        "agent",
        f"{n.agent}, produced {n.produced_at:%Y-%m-%d %H:%M:%S} UTC in {n.latency_ms:.3f} ms",
    )
    source = "reply" if answer.source == "reply" else f"retained message ({answer.note})"
    grid.add_row("source", source)
    if n.previous is not None:
        grid.add_row(
            "revised",
            f"{_signed(n.revision)} pp from {_signed(n.previous)} ({n.attribution} attribution)",
        )
        grid.add_row("news", _impacts_table(n.impacts))
    return Panel(grid, title=f"{n.region.upper()} GDP nowcast {n.quarter}", expand=False)


def _released(i: ReleaseImpact) -> str:
    return f"{i.value:g}" if i.previous is None else f"{i.previous:g} -> {i.value:g} (revised)"


def _impacts_table(impacts: list[ReleaseImpact]) -> Table:
    """Each release of the latest release time, largest impact first."""
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0))
    for name in ("series", "period", "released", "impact pp"):
        table.add_column(name, justify="right" if name == "impact pp" else "left")
    for i in sorted(impacts, key=lambda i: -abs(i.impact_pp)):
        table.add_row(i.series, i.period, _released(i), f"{i.impact_pp:+.3f}")
    return table


def track_rows(history: NowcastHistory) -> list[dict[str, str]]:
    """The track as `TRACK_COLUMNS` rows, one per release, oldest first (numbers to 4 decimals,
    times in ISO 8601 UTC)."""
    rows = []
    for e in history.track:
        for i in e.impacts:
            rows.append(
                {
                    "quarter": e.quarter,
                    "time": e.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "nowcast": f"{e.nowcast:.4f}",
                    "band_lo": f"{e.band.lo:.4f}",
                    "band_hi": f"{e.band.hi:.4f}",
                    "series": i.series,
                    "period": i.period,
                    "value": f"{i.value:.6g}",
                    "impact_pp": f"{i.impact_pp:.4f}",
                    "revision": f"{e.revision:.4f}",
                }
            )
    return rows


def write_track_csv(history: NowcastHistory, path: Path) -> int:
    """Write the track to `path` as CSV with a header; returns the number of rows."""
    rows = track_rows(history)
    try:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=TRACK_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise ForecasterError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return len(rows)


def history_table(history: NowcastHistory) -> Table:
    """The track on screen: one line per release, the nowcast shown where its time begins."""
    n = history.nowcast
    table = Table(title=f"{n.region.upper()} GDP nowcast track ({n.units}), agent {n.agent}")
    for name in TRACK_COLUMNS:
        table.add_column(name, justify="left" if name in ("quarter", "time", "series") else "right")
    shown = None
    for row in track_rows(history):
        key = (row["quarter"], row["time"])
        cells = [row[c] for c in TRACK_COLUMNS]
        if key == shown:  # the same release time: the nowcast once
            cells = ["", "", "", "", "", *cells[5:9], ""]
        shown = key
        table.add_row(*cells)
    return table
