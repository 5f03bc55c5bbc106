"""The edge agent and its plugin seam.

- `core`: `Agent`: lifecycle, the network thread, routing, group commit, paho callbacks, status.
- `host`: the types handlers share and the `Host`/`Plugin` protocols plugins are written against.
- `delivery`: outbox rows to the connection (the backlog and live lanes).
- `bar_handler`: `market/<symbol>/bar` in, price and trend forecasts out.
"""

from __future__ import annotations

from device.agent.core import Agent
from device.agent.host import Handler, Host, Outcome, Plugin, PluginFactory, Route, Ticket

__all__ = ["Agent", "Handler", "Host", "Outcome", "Plugin", "PluginFactory", "Route", "Ticket"]
