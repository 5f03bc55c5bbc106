"""The agent's own messages about its input and models: dead letters and failed fleet events."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from device.modelset import LoadedModel
from device.outbox import OutMessage
from device.schemas import DeadLetter, FleetEvent
from device.topics import Topics

__all__ = ["DEADLETTER_PAYLOAD_BYTES", "dead_letter", "failure_event"]

DEADLETTER_PAYLOAD_BYTES = 1024


def dead_letter(agent_id: str, topics: Topics, msg: mqtt.MQTTMessage, reason: str) -> OutMessage:
    """The refused input's topic, the reason and the start of its payload."""
    letter = DeadLetter(
        agent=agent_id,
        topic=msg.topic,
        reason=reason,
        payload=msg.payload[:DEADLETTER_PAYLOAD_BYTES].decode("utf-8", errors="replace"),
    )
    return OutMessage(topics.deadletter(agent_id), letter.model_dump_json().encode())


def failure_event(
    agent_id: str, topics: Topics, kind: str, detail: str, model: LoadedModel | None = None
) -> OutMessage:
    """A failed FleetEvent (e.g. an inference error) on the agent's events topic."""
    event = FleetEvent(
        agent=agent_id, kind=kind, ok=False, detail=detail, model=model.ref if model else None
    )
    return OutMessage(topics.events(agent_id), event.model_dump_json().encode())
