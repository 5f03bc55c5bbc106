"""Reading configuration files, shared by the agent, the web gateway, the trainer and recipes: one
TOML reader, one way to resolve relative paths, one way to say in a line what pydantic rejected,
and one loader for settings that come from a TOML file overridden by environment variables."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

__all__ = [
    "ConfigFileError",
    "FileSettings",
    "describe_validation",
    "load_file_settings",
    "read_toml",
    "resolve_path",
    "unknown_env_keys",
]

S = TypeVar("S", bound="FileSettings")

# The TOML file of the settings being loaded; a context variable because pydantic-settings builds
# its sources inside the constructor, where no argument can reach them.
_settings_file: ContextVar[Path | None] = ContextVar("forecaster_settings_file", default=None)


class ConfigFileError(ValueError):
    """A configuration file is missing, unreadable or not TOML; the message is one line.

    Callers translate it into their own package's error (`ConfigError`, `RecipeError`, ...)."""


def describe_validation(
    exc: ValidationError, root: Sequence[str | int] = (), *, first_only: bool = False
) -> str:
    """One line naming each invalid field, e.g. `broker.port: Input should be ...`.

    `root` prefixes every location (a section's name); `first_only` keeps only the first error,
    for messages that name one bad key."""
    errors = exc.errors()[:1] if first_only else exc.errors()
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in (*root, *err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML file at `path`; `what` names it in errors ("recipe", "config file")."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigFileError(f"{what} {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"cannot read {what} {path}: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{what} {path} is not valid TOML: {exc}") from exc


def resolve_path(path: Path, base: Path) -> Path:
    """`path` with `~` expanded; a relative one is taken from `base` (a config file's folder)."""
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


class FileSettings(BaseSettings):
    """Settings from constructor arguments, then `<env_prefix><KEY>` variables (sections nested
    with `env_nested_delimiter`), then the TOML file `load_file_settings` was given."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _settings_file.get()
        if path is None:
            return (init_settings, env_settings)
        file = InitSettingsSource(settings_cls, init_kwargs=read_toml(path, "config file"))
        return (init_settings, env_settings, file)


def _names_setting(cls: type[BaseModel], parts: list[str]) -> bool:
    """Whether `parts` (a variable's name split at the delimiter) is a field or a section's key."""
    field = cls.model_fields.get(parts[0])
    if field is None or len(parts) == 1:
        return field is not None
    section = field.annotation
    return (
        isinstance(section, type)
        and issubclass(section, BaseModel)
        and len(parts) == 2
        and parts[1] in section.model_fields
    )


def unknown_env_keys(cls: type[BaseSettings]) -> list[str]:
    """Variables with `cls`'s prefix that name no setting (pydantic-settings would ignore them,
    so a typo would silently change nothing)."""
    prefix = str(cls.model_config.get("env_prefix") or "").upper()
    delimiter = cls.model_config.get("env_nested_delimiter") or "__"
    return sorted(
        name
        for name in os.environ
        if prefix
        and name.upper().startswith(prefix)
        and not _names_setting(cls, name[len(prefix) :].lower().split(delimiter))
    )


def load_file_settings(cls: type[S], config: Path | None) -> S:
    """`cls` from the TOML file `config` (None: the environment alone) and the environment;
    raises ConfigFileError with one line (missing file, bad TOML, unknown variable or key)."""
    if config is not None and not config.is_file():
        raise ConfigFileError(f"config file {config} does not exist")
    unknown = unknown_env_keys(cls)
    if unknown:
        raise ConfigFileError(f"unknown environment variables: {', '.join(unknown)}")
    token = _settings_file.set(config)
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigFileError(f"{config or 'environment'}: {describe_validation(exc)}") from exc
    finally:
        _settings_file.reset(token)
