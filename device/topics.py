"""MQTT topic names of the contract (docs/ARCHITECTURE.md, "The contracts"), with an optional prefix."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Topics", "forecast_key"]


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
