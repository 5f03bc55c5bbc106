"""Gateway settings: a TOML file overridden by `FORECASTER_WEB_*` variables; unknown keys are errors.

`deploy/web.example.toml` documents every key."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from device.configio import ConfigFileError, FileSettings, load_file_settings, resolve_path
from device.errors import ConfigError
from device.settings import BrokerAccess

__all__ = [
    "ENV_PREFIX",
    "AuthSettings",
    "HistorySettings",
    "HttpSettings",
    "StreamSettings",
    "WebBrokerSettings",
    "WebSettings",
    "load_web_settings",
    "loopback_config",
]

ENV_PREFIX = "FORECASTER_WEB_"
_HASH = r"^(scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{32}\$[0-9a-f]{64}|sha256\$[0-9a-f]{64})$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebBrokerSettings(BrokerAccess):
    """The broker and the gateway's own read-only account (the `web` account of deploy/)."""

    client_id: str = Field(default="forecaster-web", min_length=1, max_length=128)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=5.0, gt=0, le=3600)


class HttpSettings(_Section):
    """Where the page and API listen; TLS when both certificate files are given."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # Origins allowed to call the API from other pages; empty (the default) keeps CORS closed.
    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_tls(self) -> HttpSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        if "*" in self.cors_origins:
            raise ValueError("cors_origins must name origins, not '*'")
        return self

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class AuthSettings(_Section):
    """Who may read: HTTP basic users (scrypt hashes) and bearer tokens (SHA-256 of a random
    token); `forecaster-web hash` makes both. With neither, the gateway serves only loopback."""

    users: dict[str, str] = Field(default_factory=dict)
    tokens: list[str] = Field(default_factory=list)
    realm: str = Field(default="forecaster", pattern=r'^[^"\\]{1,64}$')

    @model_validator(mode="after")
    def _check_hashes(self) -> AuthSettings:
        import re

        bad = [n for n, h in self.users.items() if not re.match(_HASH, h) or h.startswith("sha")]
        if bad:
            raise ValueError(
                f"users {bad}: the value must be a scrypt$... hash (forecaster-web hash)"
            )
        if any(not re.match(_HASH, t) or not t.startswith("sha256$") for t in self.tokens):
            raise ValueError("tokens must be sha256$<hex> hashes (forecaster-web hash --token)")
        if any(":" in n or not n for n in self.users):
            raise ValueError("user names must not be empty or contain ':'")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.tokens)


class HistorySettings(_Section):
    """What the gateway keeps in memory (see docs/WEB.md, "Memory"): per symbol at most
    `points` forecasts and closes of each kind and at most `bytes_per_symbol` of their JSON."""

    points: int = Field(default=240, ge=1, le=100_000)
    bytes_per_symbol: int = Field(default=512 * 1024, ge=4096, le=64 * 1024 * 1024)
    max_symbols: int = Field(default=500, ge=1, le=100_000)
    max_agents: int = Field(default=1000, ge=1, le=100_000)
    max_regions: int = Field(default=64, ge=1, le=10_000)


class StreamSettings(_Section):
    """The live stream: a change is sent at once, then changes arriving within `interval_ms` are
    batched into the next event (the latest per symbol); a client whose queue of `queue_batches`
    batches is full is disconnected."""

    interval_ms: int = Field(default=100, ge=10, le=10_000)
    queue_batches: int = Field(default=64, ge=1, le=10_000)
    max_clients: int = Field(default=2000, ge=1, le=100_000)
    ping_s: float = Field(default=5.0, gt=0, le=300)
    # A forecast older than this is shown as stale on the page.
    stale_after_s: float = Field(default=120.0, gt=0, le=7 * 24 * 3600)


class WebSettings(FileSettings):
    """Everything `forecaster-web` reads."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    topic_prefix: str = Field(default="", pattern=r"^$|^[^#+$][^#+]*/$")
    broker: WebBrokerSettings = Field(default_factory=WebBrokerSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> WebSettings:
        if not self.auth.enabled and not self.http.loopback:
            raise ValueError(
                f"http.host {self.http.host!r} is not loopback: configure [auth] users or tokens"
            )
        return self


def load_web_settings(config: Path | None) -> WebSettings:
    """Settings from `config` and the environment (an unknown `FORECASTER_WEB_*` variable is an
    error, as for the agent), relative paths taken from the config file's folder; raises
    ConfigError with one line."""
    try:
        settings = load_file_settings(WebSettings, config)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc
    base = config.resolve().parent if config is not None else Path.cwd()
    http = settings.http
    names = ("ssl_certfile", "ssl_keyfile")
    tls = {n: resolve_path(getattr(http, n), base) for n in names if getattr(http, n)}
    return settings.model_copy(
        update={
            "http": http.model_copy(update=tls),
            "broker": settings.broker.resolved(base),
        }
    )


def loopback_config(broker_url: str, port: int, topic_prefix: str = "") -> str:
    """web.toml for a gateway on one machine (the demo, tests): open on 127.0.0.1:`port`, quick
    broker reconnects."""
    return (
        f"topic_prefix = {json.dumps(topic_prefix)}\n"
        f"[broker]\nurl = {json.dumps(broker_url)}\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
    )
