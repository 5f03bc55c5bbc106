"""Reading configuration files, shared by the agent, the trainer and recipes: one TOML reader,
one way to resolve relative paths, one way to say in a line what pydantic rejected."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

__all__ = ["ConfigFileError", "describe_validation", "read_toml", "resolve_path"]


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
