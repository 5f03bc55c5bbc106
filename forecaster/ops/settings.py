"""Settings of `forecaster schedule`: one TOML file, unknown keys are errors, one-line messages.
`deploy/trainer.example.toml` documents every key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device.configio import ConfigFileError, describe_validation, read_toml, resolve_path
from device.settings import BrokerAccess
from forecaster.errors import RecipeError, ScheduleError
from forecaster.recipe import Recipe, load_recipe
from forecaster.training.bundles import SIGNING_KEY_ENV

__all__ = [
    "RecipeEntry",
    "TrainerBroker",
    "TrainerSettings",
    "load_trainer_settings",
]

_NAME = r"^[A-Za-z0-9_.-]+$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainerBroker(BrokerAccess):
    """The broker the fleet listens on; the same keys and meaning as the agent's `[broker]`."""


class RecipeEntry(_Section):
    """One recipe to retrain: on its cron schedule, and (`watch`) when its CSV data file changes."""

    path: Path
    cron: str
    watch: bool = False
    quick: bool = False

    @model_validator(mode="after")
    def _crontab(self) -> RecipeEntry:
        try:
            CronTrigger.from_crontab(self.cron, timezone="UTC")
        except ValueError as exc:
            raise ValueError(
                f"cron {self.cron!r} is not a crontab expression "
                f"('minute hour day month day_of_week'): {exc}"
            ) from exc
        return self

    def recipe(self) -> Recipe:
        return load_recipe(self.path)


class TrainerSettings(_Section):
    """Everything the scheduler reads: registry, signing key, broker, targets and recipes."""

    registry: Path = Path("models/registry")
    signing_key: Path | None = None
    topic_prefix: str = Field(default="", pattern=r"^$|^[^#+$][^#+]*/$")
    fleet: bool = False
    agents: list[str] = Field(default_factory=list)
    deploy_wait_s: float = Field(default=60.0, gt=0, le=3600)
    train_timeout_s: float = Field(default=4 * 3600.0, gt=0)
    watch_interval_s: float = Field(default=60.0, ge=0.1, le=86400)
    timezone: str = "UTC"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    broker: TrainerBroker = Field(default_factory=TrainerBroker)
    recipes: list[RecipeEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> TrainerSettings:
        if self.fleet == bool(self.agents):
            raise ValueError("set either `fleet = true` or `agents = [...]`, not both or neither")
        bad = [a for a in self.agents if not a or any(c in a for c in "/#+")]
        if bad or len(set(self.agents)) != len(self.agents):
            raise ValueError(f"agents must be distinct ids without '/', '#' or '+': {self.agents}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone") from exc
        return self


def _resolved(settings: TrainerSettings, base: Path) -> TrainerSettings:
    """Relative paths are taken from the config file's directory, as in the agent's settings."""
    broker = settings.broker
    key = settings.signing_key
    if key is None and os.environ.get(SIGNING_KEY_ENV):
        key = resolve_path(Path(os.environ[SIGNING_KEY_ENV]), Path.cwd())
    return settings.model_copy(
        update={
            "registry": resolve_path(settings.registry, base),
            "signing_key": resolve_path(key, base) if key is not None else None,
            "broker": broker.model_copy(
                update={
                    name: resolve_path(getattr(broker, name), base)
                    for name in ("ca_file", "cert_file", "key_file")
                    if getattr(broker, name) is not None
                }
            ),
            "recipes": [
                r.model_copy(update={"path": resolve_path(r.path, base)}) for r in settings.recipes
            ],
        }
    )


def _check_recipes(settings: TrainerSettings, config: Path) -> None:
    """Every recipe loads, trains its own model id, and a watched one reads a CSV file."""
    seen: dict[str, int] = {}
    for i, entry in enumerate(settings.recipes):
        where = f"{config}: recipes.{i}"
        try:
            recipe = entry.recipe()
        except RecipeError as exc:
            raise ScheduleError(f"{where}: {exc}") from exc
        model_id = f"{recipe.model.task}/{recipe.model.name}"
        if model_id in seen:
            raise ScheduleError(
                f"{where}: {entry.path} trains {model_id}, as recipes.{seen[model_id]} does; "
                "one recipe per model id"
            )
        seen[model_id] = i
        if entry.watch and recipe.data.source != "csv":
            raise ScheduleError(
                f"{where}: watch = true needs a CSV data file, but {entry.path} reads the "
                f"built-in dataset {recipe.data.source!r}"
            )


def load_trainer_settings(config: Path) -> TrainerSettings:
    """Parse, validate and resolve `config`; raises ScheduleError with a one-line message."""
    try:
        settings = TrainerSettings.model_validate(read_toml(config, "config file"))
    except ConfigFileError as exc:
        raise ScheduleError(str(exc)) from exc
    except ValidationError as exc:
        raise ScheduleError(f"{config}: {describe_validation(exc)}") from exc
    settings = _resolved(settings, config.resolve().parent)
    if settings.signing_key is None:
        raise ScheduleError(
            f"{config}: no signing key: set `signing_key` or ${SIGNING_KEY_ENV} "
            "(make one with `forecaster keys generate`)"
        )
    if not settings.signing_key.is_file():
        raise ScheduleError(f"{config}: signing key {settings.signing_key} does not exist")
    _check_recipes(settings, config)
    return settings
