"""`forecaster nowcast`: pull the GDP nowcast from the agents with an MQTT v5 request (response
topic + correlation data), falling back to the retained `nowcast/gdp/<region>`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError
from rich.panel import Panel
from rich.table import Table

from device.mqtt import BrokerAddress
from device.schemas import Nowcast, NowcastFailure
from device.topics import Topics
from forecaster.errors import ForecasterError
from forecaster.ops.mqtt import tool_client

__all__ = ["NowcastAnswer", "nowcast_panel", "request_nowcast"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NowcastAnswer:
    """A nowcast and where it came from: an agent's reply or the broker's retained copy."""

    nowcast: Nowcast
    source: Literal["reply", "retained"]
    note: str = ""


def request_nowcast(
    address: BrokerAddress,
    region: str = "us",
    topics: Topics | None = None,
    timeout: float = 5.0,
) -> NowcastAnswer:
    """Ask `nowcast/gdp/<region>/get` and wait up to `timeout` seconds for the first reply with
    our correlation data; without one, the retained nowcast; else ForecasterError."""
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
        tool.publish(topics.nowcast_request(region), b"{}", properties=props, timeout=timeout)
        for msg in tool.messages(timeout):
            if msg.topic != response:
                retained = _retained(msg) or retained
                continue
            if getattr(msg.properties, "CorrelationData", None) != correlation:
                continue  # not an answer to this request
            answer = _reply(msg)
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
    if retained is not None:
        return NowcastAnswer(retained, "retained", why)
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


def _reply(msg: mqtt.MQTTMessage) -> Nowcast | NowcastFailure | None:
    """An agent's answer: a nowcast, its refusal, or None for a malformed reply."""
    try:
        return Nowcast.model_validate_json(msg.payload)
    except ValidationError:
        pass
    try:
        return NowcastFailure.model_validate_json(msg.payload)
    except ValidationError:
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
    return Panel(grid, title=f"{n.region.upper()} GDP nowcast {n.quarter}", expand=False)
