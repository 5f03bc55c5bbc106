"""Agent settings: a TOML file overridden by `FORECASTER_AGENT_*` variables; unknown keys are errors."""

from __future__ import annotations

import socket
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from device.configio import ConfigFileError, FileSettings, load_file_settings, resolve_path
from device.errors import ConfigError
from device.mqtt import BrokerAddress, parse_broker_url
from device.partition import Partition

__all__ = [
    "ENV_PREFIX",
    "AgentSettings",
    "BrokerAccess",
    "BrokerSettings",
    "CalibrationSection",
    "ModelsSettings",
    "NowcastSettings",
    "OutboxSettings",
    "PartitionSettings",
    "StatusSettings",
    "load_settings",
]

ENV_PREFIX = "FORECASTER_AGENT_"
NESTED_DELIMITER = "__"
_NAME = r"^[A-Za-z0-9_.-]+$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerAccess(_Section):
    """Where the broker is and how to authenticate: the agent's `[broker]` keys that every client
    of the fleet's broker (the trainer's scheduler too) shares."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _check_access(self) -> BrokerAccess:
        try:
            parse_broker_url(self.url)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (TLS client certificate)")
        return self

    def address(self) -> BrokerAddress:
        """The URL plus the explicit credentials and TLS files (explicit values win)."""
        base = parse_broker_url(self.url)
        return replace(
            base,
            tls=base.tls or self.ca_file is not None,
            username=self.username or base.username,
            password=self.password.get_secret_value() if self.password else base.password,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
        )

    def resolved(self, base: Path) -> Self:
        """A copy with relative TLS file paths taken from `base` (the config file's folder)."""
        names = ("ca_file", "cert_file", "key_file")
        return self.model_copy(
            update={n: resolve_path(getattr(self, n), base) for n in names if getattr(self, n)}
        )


class BrokerSettings(BrokerAccess):
    """How to reach and authenticate with the MQTT broker, and how to keep the session."""

    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, le=0xFFFFFFFF)
    # At least two passes of the network loop (core.MAX_BATCH): the broker keeps sending while
    # the agent commits a pass, whose bars it acknowledges only once committed.
    receive_maximum: int = Field(default=256, ge=1, le=65535)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=5.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check_backoff(self) -> BrokerSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


class ModelsSettings(_Section):
    """Where verified bundles live, how onnxruntime runs them, and what a deploy must pass."""

    dir: Path = Path("models")
    trusted_keys: list[Path] = Field(default_factory=lambda: [Path("keys")])
    intra_op_threads: int = Field(default=1, ge=1, le=64)
    # Versions kept on disk per model slot, the served one included (2+: a rollback needs one).
    keep_versions: int = Field(default=3, ge=2, le=100)
    # A deployed model's median batch-1 latency on the smoke test must stay under this.
    latency_budget_ms: float = Field(default=25.0, gt=0, le=60_000)


class OutboxSettings(_Section):
    """The sqlite outbox every output passes through (see docs/ARCHITECTURE.md, "Outbox")."""

    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    max_inflight: int = Field(default=256, ge=1, le=65535)
    flush_timeout_s: float = Field(default=5.0, ge=0, le=300)


class StatusSettings(_Section):
    interval_s: float = Field(default=10.0, ge=0.5, le=3600)


class CalibrationSection(_Section):
    """On-line calibration of price forecasts (device/calibration.py, docs/CALIBRATION.md)."""

    enabled: bool = True
    # Scored forecasts per horizon behind the live accuracy in the status.
    window: int = Field(default=250, ge=1, le=10_000)


class NowcastSettings(_Section):
    """The GDP nowcast, served when a gdp bundle is loaded (see docs/NOWCAST.md)."""

    # Five-field crontab, UTC, of the scheduled recompute and republish; "" turns it off.
    cron: str = "0 6 * * *"

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str) -> str:
        if value.strip():
            # Imported here: the web gateway shares these settings' module but runs no scheduler.
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone=UTC)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a crontab expression: {exc}") from exc
        return value.strip()


class PartitionSettings(_Section):
    """This agent's place in a pool that splits one feed by symbol (device/partition.py)."""

    index: int = Field(default=0, ge=0)
    count: int = Field(default=1, ge=1, le=4096)
    # `$share/<group>/` for stateless requests (nowcast/gdp/<region>/get), never for bars.
    request_group: str | None = Field(default=None, pattern=_NAME)

    @model_validator(mode="after")
    def _check_index(self) -> PartitionSettings:
        if self.index >= self.count:
            raise ValueError(f"index {self.index} must be below count {self.count}")
        return self

    def partition(self) -> Partition:
        return Partition(self.index, self.count)


class AgentSettings(FileSettings):
    """Everything `forecaster-agent` reads; `deploy/agent.example.toml` documents every key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    agent_id: str = Field(default_factory=lambda: socket.gethostname().split(".")[0], pattern=_NAME)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    state_dir: Path = Path("state")
    topic_prefix: str = Field(default="", pattern=r"^$|^[^#+$][^#+]*/$")
    symbols: list[str] = Field(default_factory=list)
    max_symbols: int = Field(default=1000, ge=1)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    partition: PartitionSettings = Field(default_factory=PartitionSettings)
    nowcast: NowcastSettings = Field(default_factory=NowcastSettings)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "share_group" in data:
            # $share hands a symbol's bars to the group's members in turn (wrong windows).
            raise ValueError(
                "share_group was removed: split a feed with [partition] index/count, and "
                "share nowcast requests with [partition] request_group"
            )
        return data

    @model_validator(mode="after")
    def _check_symbols(self) -> AgentSettings:
        bad = [s for s in self.symbols if not s or any(c in s for c in "/#+")]
        if bad:
            raise ValueError(f"symbols must not be empty or contain '/', '#' or '+': {bad}")
        return self

    @property
    def client_id(self) -> str:
        return self.broker.client_id or self.agent_id

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.sqlite"


def load_settings(config: Path | None) -> AgentSettings:
    """Settings from `config` (TOML) and the environment; relative paths are taken relative to
    the config file's directory (or the working directory without one). Raises ConfigError."""
    try:
        settings = load_file_settings(AgentSettings, config)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc
    base = config.resolve().parent if config is not None else Path.cwd()
    return settings.model_copy(
        update={
            "state_dir": resolve_path(settings.state_dir, base),
            "models": settings.models.model_copy(
                update={
                    "dir": resolve_path(settings.models.dir, base),
                    "trusted_keys": [resolve_path(p, base) for p in settings.models.trusted_keys],
                }
            ),
            "broker": settings.broker.resolved(base),
        }
    )
