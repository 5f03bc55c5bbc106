"""Operator side of the fleet: read agents' retained statuses, ship bundles, roll back."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError
from rich.table import Table

from device.bundle import load_bundle, pack_bundle
from device.keys import TrustedKeys
from device.mqtt import BrokerAddress
from device.schemas import (
    BUNDLE_CONTENT_TYPE,
    COMMAND_CONTENT_TYPE,
    AgentStatus,
    DeployCommand,
    FleetEvent,
)
from device.topics import Topics
from forecaster.errors import FeedError, ForecasterError
from forecaster.ops.mqtt import tool_client

__all__ = [
    "accuracy_table",
    "collect_statuses",
    "fleet_table",
    "publish_bundle",
    "send_rollback",
]

logger = logging.getLogger(__name__)

# Retained statuses arrive right after SUBACK; this much silence means we have them all.
_QUIET_S = 0.5


def collect_statuses(
    address: BrokerAddress, topics: Topics | None = None, timeout: float = 5.0
) -> dict[str, AgentStatus]:
    """Every agent's retained status, keyed by agent id (malformed statuses are skipped)."""
    topics = topics or Topics()
    statuses: dict[str, AgentStatus] = {}
    with tool_client(address, f"fleet-status-{time.time_ns()}", inbox_size=100_000) as tool:
        tool.subscribe([topics.status_filter()])
        for msg in tool.messages(timeout, quiet=_QUIET_S):
            if not msg.payload:
                continue  # a cleared retained status
            try:
                status = AgentStatus.model_validate_json(msg.payload)
            except ValidationError:
                logger.warning("skipping malformed status on %s", msg.topic)
                continue
            statuses[status.agent] = status
    return statuses


def _age(ts: datetime) -> str:
    seconds = (datetime.now(UTC) - ts).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


_LEFT = ("agent", "state", "partition", "symbols", "models")
_SHOWN_SYMBOLS = 8


def _symbols(symbols: list[str]) -> str:
    """The served symbols, the first few by name when there are many."""
    if len(symbols) <= _SHOWN_SYMBOLS:
        return ", ".join(symbols) or "-"
    return f"{', '.join(symbols[:_SHOWN_SYMBOLS])} +{len(symbols) - _SHOWN_SYMBOLS}"


def _partition(status: AgentStatus) -> str:
    p = status.partition
    return f"{p['index']}/{p['count']}" if {"index", "count"} <= p.keys() else "-"


def fleet_table(statuses: dict[str, AgentStatus]) -> Table:
    table = Table(title=f"{len(statuses)} agent(s)", header_style="bold")
    for col in (
        "agent",
        "state",
        "partition",
        "symbols",
        "models",
        "last heartbeat",
        "uptime",
        "received",
        "forecasts",
        "not owned",
        "seq gaps",
        "dead letters",
        "spooled",
        "dropped",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(col, justify="left" if col in _LEFT else "right")
    for agent in sorted(statuses):
        s = statuses[agent]
        models = ", ".join(
            f"{m.get('task', '?')}/{m.get('name', '?')}@{m.get('version', '?')}" for m in s.models
        )
        c = s.counters
        table.add_row(
            agent,
            "[green]online[/]" if s.online else "[red]offline[/]",
            _partition(s),
            _symbols(s.symbols),
            models or "-",
            _age(s.ts),
            f"{s.uptime_s:.0f}s",
            *(
                str(c.get(k, 0))
                for k in (
                    "received",
                    "forecasts",
                    "not_owned",
                    "seq_gaps",
                    "dead_letters",
                    "spooled",
                    "dropped",
                )
            ),
            f"{s.latency_ms.get('p50', float('nan')):.3f}",
            f"{s.latency_ms.get('p99', float('nan')):.3f}",
        )
    return table


def _coverage(share: float | None, nominal: int) -> str:
    """A band's realized share, yellow when more than 5 points off its nominal level."""
    if share is None:
        return "-"
    text = f"{share:.0%}"
    return f"[yellow]{text}[/]" if abs(share * 100 - nominal) > 5 else text


def accuracy_table(statuses: dict[str, AgentStatus]) -> Table | None:
    """Live accuracy per agent, price model and symbol: the agent's own published forecasts
    scored on the closes that followed (None when no agent has scored any yet)."""
    rows = [(agent, a) for agent in sorted(statuses) for a in statuses[agent].accuracy]
    if not rows:
        return None
    table = Table(title="live accuracy (last scored forecasts)", header_style="bold")
    for col in ("agent", "model", "symbol", "scored", "pinball", "80% band", "90% band"):
        table.add_column(col, justify="left" if col in ("agent", "model", "symbol") else "right")
    for agent, a in rows:
        table.add_row(
            agent,
            a.model,
            a.symbol,
            str(a.scored),
            f"{a.pinball:.6f}",
            _coverage(a.coverage.get("80"), 80),
            _coverage(a.coverage.get("90"), 90),
        )
    return table


def _send_and_wait(
    address: BrokerAddress,
    agents: list[str],
    payload: bytes,
    content_type: str,
    topics: Topics,
    wait_s: float,
) -> dict[str, FleetEvent | None]:
    """Publish `payload` to each agent's deploy topic and wait for each agent's next event."""
    results: dict[str, FleetEvent | None] = dict.fromkeys(agents)
    with tool_client(address, f"fleet-publish-{time.time_ns()}") as tool:
        tool.subscribe([topics.events(agent) for agent in agents])
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        for agent in agents:
            try:
                tool.publish(topics.deploy(agent), payload, properties=props, timeout=30)
            except FeedError as exc:
                raise ForecasterError(
                    f"the broker did not acknowledge the deploy to {agent}"
                ) from exc
        for msg in tool.messages(wait_s):
            try:
                event = FleetEvent.model_validate_json(msg.payload)
            except ValidationError:
                continue
            if event.agent in results and event.kind in ("deploy", "rollback"):
                results[event.agent] = event
            if all(v is not None for v in results.values()):
                break
    return results


def publish_bundle(
    address: BrokerAddress,
    bundle_dir: Path,
    agents: list[str],
    trusted: TrustedKeys,
    topics: Topics | None = None,
    wait_s: float = 30.0,
) -> dict[str, FleetEvent | None]:
    """Verify the bundle here first (never ship what a device would refuse), then send it."""
    if not agents:
        raise ForecasterError("no agents to publish to; name one with --agent or use --fleet")
    load_bundle(bundle_dir, trusted)
    return _send_and_wait(
        address, agents, pack_bundle(bundle_dir), BUNDLE_CONTENT_TYPE, topics or Topics(), wait_s
    )


def send_rollback(
    address: BrokerAddress,
    agent: str,
    model: str,
    version: str | None = None,
    topics: Topics | None = None,
    wait_s: float = 15.0,
) -> FleetEvent | None:
    try:
        command = DeployCommand(action="rollback", model=model, version=version)
    except ValidationError as exc:
        raise ForecasterError(f"model must look like price/spx, not {model!r}") from exc
    payload = command.model_dump_json().encode()
    return _send_and_wait(
        address, [agent], payload, COMMAND_CONTENT_TYPE, topics or Topics(), wait_s
    )[agent]
