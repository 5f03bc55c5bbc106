"""A `device.agent.host.Host` without a broker or a network thread, for plugin unit tests: work
given to `call_soon` runs at once (under a lock, as if on one thread), and everything a plugin
commits or publishes is recorded."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from apscheduler.schedulers.background import BackgroundScheduler
from paho.mqtt.properties import Properties

from device.agent.host import Handler, Outcome, Route, Ticket
from device.agent.messages import dead_letter, failure_event
from device.health import COUNTERS, LatencyWindow
from device.modelset import WINDOW_TASKS, LoadedModel, ModelSet
from device.mqtt import new_properties
from device.outbox import OutMessage, WindowState
from device.settings import AgentSettings
from device.topics import Topics


@dataclass
class Published:
    topic: str
    payload: bytes
    properties: Properties | None


@dataclass
class FakeHost:
    settings: AgentSettings
    models_now: ModelSet
    tasks: tuple[str, ...] = WINDOW_TASKS
    windows: list[WindowState] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    emitted: list[Outcome] = field(default_factory=list)
    finished: list[tuple[Ticket, Outcome]] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)
    statuses: int = 0

    def __post_init__(self) -> None:
        self.agent_id = self.settings.agent_id
        self.topics = Topics(self.settings.topic_prefix)
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.inference_ms = LatencyWindow()
        self.scheduler: Any = BackgroundScheduler()
        self.stopped = threading.Event()
        self.finished_one = threading.Condition()
        self._thread = threading.Lock()

    @property
    def state_path(self) -> Path:
        return self.settings.outbox_path

    @property
    def models(self) -> ModelSet:
        return self.models_now

    def route(self, match: str, handler: Handler, subscriptions: tuple[str, ...] = ()) -> None:
        self.routes.append(Route(match, subscriptions or (match,), handler))

    def handler(self, topic: str) -> Handler:
        return next(r.handler for r in self.routes if mqtt.topic_matches_sub(r.match, topic))

    def served_tasks(self) -> tuple[str, ...]:
        return self.tasks

    def update_models(self, change: Callable[[ModelSet], ModelSet]) -> ModelSet:
        self.models_now = change(self.models_now)
        return self.models_now

    def call_soon(self, fn: Callable[[], None]) -> None:
        with self._thread:
            fn()

    def emit(self, outcome: Outcome) -> None:
        self.emitted.append(outcome)

    def defer(self, msg: mqtt.MQTTMessage) -> Ticket:
        return Ticket(msg.mid, msg.qos, 0)

    def finish(self, ticket: Ticket, outcome: Outcome) -> None:
        with self.finished_one:
            self.finished.append((ticket, outcome))
            self.finished_one.notify_all()

    def wait_finished(self, count: int, timeout: float = 30.0) -> list[tuple[Ticket, Outcome]]:
        """Block until `count` deferred inputs are finished (the deployer's worker)."""
        with self.finished_one:
            assert self.finished_one.wait_for(lambda: len(self.finished) >= count, timeout)
            return list(self.finished)

    def window_states(self) -> list[WindowState]:
        return list(self.windows)

    def dead_letter(self, msg: mqtt.MQTTMessage, reason: str) -> OutMessage:
        self.counters["dead_letters"] += 1
        return dead_letter(self.agent_id, self.topics, msg, reason)

    def event(self, kind: str, detail: str, model: LoadedModel | None = None) -> OutMessage:
        return failure_event(self.agent_id, self.topics, kind, detail, model)

    def publish_now(self, topic: str, payload: bytes, properties: Properties | None = None) -> bool:
        self.published.append(Published(topic, payload, properties))
        return True

    def publish_status(self) -> None:
        self.statuses += 1

    def wait(self, timeout: float | None = None) -> bool:
        return self.stopped.wait(timeout)


def message(topic: str, payload: bytes, mid: int = 1, **properties: object) -> mqtt.MQTTMessage:
    """An incoming QoS 1 message as paho hands it to a handler, with MQTT v5 properties."""
    msg = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    msg.payload = payload
    msg.qos = 1
    props = new_properties(3)  # PUBLISH
    for name, value in properties.items():
        setattr(props, name, value)
    msg.properties = props
    return msg
