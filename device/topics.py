"""MQTT topic names of the contract (docs/ARCHITECTURE.md, "The contracts"), with an optional prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Topics", "forecast_key", "topic_matches"]


@lru_cache(maxsize=256)
def _filter_pattern(topic_filter: str) -> re.Pattern[str]:
    levels = topic_filter.split("/")
    tail = ""
    if levels[-1] == "#":  # the parent level and any number below it
        levels.pop()
        tail = "(?:/.*)?" if levels else ".*"
    body = "/".join("[^/]*" if level == "+" else re.escape(level) for level in levels)
    # Wildcards in the first level never match a `$` topic (MQTT 5.0, section 4.7.2).
    guard = "(?!\\$)" if topic_filter[:1] in ("+", "#") else ""
    return re.compile(guard + body + tail, re.DOTALL)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """paho's `topic_matches_sub`, without building a matcher tree for every message."""
    return _filter_pattern(topic_filter).fullmatch(topic) is not None


def forecast_key(agent: str, symbol: str, seq: int, model: str) -> str:
    """Identity of one forecast, so clients can drop QoS 1 redeliveries."""
    return f"{agent}/{symbol}/{seq}/{model}"


@dataclass(frozen=True)
class Topics:
    """Builds and parses topic names; `prefix` (e.g. "site1/") is prepended to every topic."""

    prefix: str = ""

    def _t(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def bar(self, symbol: str) -> str:
        return self._t(f"market/{symbol}/bar")

    def bar_filter(self) -> str:
        """Subscription filter for every symbol (a pool member filters by partition itself)."""
        return self._t("market/+/bar")

    def symbol_of_bar(self, topic: str) -> str | None:
        """The symbol in a `market/<symbol>/bar` topic, or None when the topic is not a bar topic."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix) :].split("/")
        if len(parts) == 3 and parts[0] == "market" and parts[2] == "bar" and parts[1]:
            return parts[1]
        return None

    def macro(self, series: str) -> str:
        return self._t(f"macro/{series}")

    def macro_filter(self) -> str:
        return self._t("macro/+")

    def price_forecast(self, symbol: str) -> str:
        return self._t(f"forecast/price/{symbol}")

    def trend_forecast(self, symbol: str) -> str:
        return self._t(f"forecast/trend/{symbol}")

    def forecast_filter(self) -> str:
        return self._t("forecast/#")

    def nowcast(self, region: str) -> str:
        return self._t(f"nowcast/gdp/{region}")

    def nowcast_request(self, region: str) -> str:
        return self._t(f"nowcast/gdp/{region}/get")

    def status(self, agent: str) -> str:
        return self._t(f"fleet/{agent}/status")

    def status_filter(self) -> str:
        return self._t("fleet/+/status")

    def deploy(self, agent: str) -> str:
        return self._t(f"fleet/{agent}/deploy")

    def events(self, agent: str) -> str:
        return self._t(f"fleet/{agent}/events")

    def deadletter(self, agent: str) -> str:
        return self._t(f"fleet/{agent}/deadletter")
