"""The plugin seam: what handlers share (`Outcome`, `Ticket`, `Route`, `Handler`), what a plugin
may call on the agent (`Host`) and what the agent asks of a plugin (`Plugin`, `PluginFactory`).

A plugin is built by its factory with the host, installs its routes and jobs in `install`, and
says which bundle tasks it serves in `tasks`, so the deployer accepts bundles of those tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from device.health import LatencyWindow
from device.modelset import LoadedModel, ModelSet
from device.outbox import OutMessage, StateWrite, WindowState
from device.settings import AgentSettings
from device.topics import Topics

__all__ = ["Handler", "Host", "Outcome", "Plugin", "PluginFactory", "Route", "Ticket"]


@dataclass
class Outcome:
    """What handling one input message produced: outputs and the state they follow from (the
    handler's `writes`), committed in one outbox transaction before the input is acknowledged.
    (The bar handler's windows join the same transaction through `BarHandler.window_states`.)"""

    messages: list[OutMessage] = field(default_factory=list)
    writes: list[StateWrite] = field(default_factory=list)


@dataclass(frozen=True)
class Ticket:
    """An input a handler finishes off the network thread (`Host.defer`, then `Host.finish`)."""

    mid: int
    qos: int
    connection: int  # which connection it came on: an ack is only valid on that one


# A handler gets the message and returns its Outcome, or None when there is nothing to commit (a
# redelivery), or a Ticket from `Host.defer` when it finishes later. It raises PayloadError to
# dead-letter the message.
Handler = Callable[[mqtt.MQTTMessage], Outcome | Ticket | None]


@dataclass(frozen=True)
class Route:
    """Messages whose topic matches `match` go to `handler`; `subscriptions` are the filters the
    agent subscribes to for it (e.g. a `$share/<group>/` form, or one per configured symbol)."""

    match: str
    subscriptions: tuple[str, ...]
    handler: Handler


class Host(Protocol):
    """What the agent offers its plugins. Methods marked "network thread" must run there: in a
    handler, or in a function given to `call_soon`."""

    agent_id: str
    settings: AgentSettings
    topics: Topics
    counters: Counter[str]  # reported in the status heartbeat
    inference_ms: LatencyWindow  # every model run's latency, for the heartbeat's percentiles
    scheduler: Any  # apscheduler's BackgroundScheduler (untyped): add cron/interval jobs

    @property
    def state_path(self) -> Path:
        """The agent's state database (the outbox), for plugins that keep durable state."""
        ...

    @property
    def models(self) -> ModelSet:
        """The model set served now (one consistent snapshot per read)."""
        ...

    def route(self, match: str, handler: Handler, subscriptions: tuple[str, ...] = ()) -> None:
        """Send messages whose topic matches `match` to `handler`. Call from `install`."""
        ...

    def served_tasks(self) -> tuple[str, ...]:
        """Bundle tasks with a handler: the bar handler's and every installed plugin's."""
        ...

    def update_models(self, change: Callable[[ModelSet], ModelSet]) -> ModelSet:
        """Replace the model set atomically."""
        ...

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the network thread; any thread may call it."""
        ...

    def emit(self, outcome: Outcome) -> None:
        """Commit and publish an outcome no input produced. Network thread."""
        ...

    def defer(self, msg: mqtt.MQTTMessage) -> Ticket:
        """Acknowledge `msg` only once `finish` commits its outcome. Network thread."""
        ...

    def finish(self, ticket: Ticket, outcome: Outcome) -> None:
        """Commit a deferred input's outcome, then acknowledge it. Network thread."""
        ...

    def window_states(self) -> list[WindowState]:
        """A copy of every symbol's window. Network thread."""
        ...

    def dead_letter(self, msg: mqtt.MQTTMessage, reason: str) -> OutMessage:
        """The dead letter for a refused input (counted)."""
        ...

    def event(self, kind: str, detail: str, model: LoadedModel | None = None) -> OutMessage:
        """A failed FleetEvent on the agent's events topic (e.g. "inference_error")."""
        ...

    def publish_now(self, topic: str, payload: bytes, properties: Properties | None = None) -> bool:
        """Publish at QoS 0 outside the outbox (replies). Network thread."""
        ...

    def publish_status(self) -> None:
        """Publish the retained heartbeat now. Network thread."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested, at most `timeout`; True if it was."""
        ...


class Plugin(Protocol):
    """A handler set the agent runs beside its bar handler (deploy, nowcast, ...)."""

    @property
    def tasks(self) -> tuple[str, ...]:
        """Bundle tasks this plugin serves (empty: it serves no model task)."""
        ...

    def install(self) -> None:
        """Add routes and jobs to the host; called once, before the agent starts."""
        ...


# Builds a plugin for a host, or None when it has nothing to serve (e.g. no gdp model loaded).
PluginFactory = Callable[[Host], Plugin | None]
