"""The versions of one model id on disk, `<models>/<task>/<name>/<version>/`, and which one the
agent serves: the `CURRENT` file beside them records it, so a deploy or a rollback survives a
restart."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from device.manifest import MANIFEST_FILE

__all__ = [
    "CURRENT_FILE",
    "created_at",
    "install",
    "installed_versions",
    "preferred_order",
    "prune",
    "read_current",
    "write_current",
]

logger = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"


def created_at(path: Path) -> datetime:
    """Unverified creation time of a version directory, only to order a model id's versions."""
    try:
        return datetime.fromisoformat(json.loads((path / MANIFEST_FILE).read_bytes())["created_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return datetime.max.replace(tzinfo=UTC)  # unreadable: try (and reject) it first


def installed_versions(model_dir: Path) -> list[Path]:
    """Version directories of a model id (those holding a manifest), newest first."""
    if not model_dir.is_dir():
        return []
    found = [p.parent for p in model_dir.glob(f"*/{MANIFEST_FILE}")]
    return sorted(found, key=lambda p: (created_at(p), p.name), reverse=True)


def read_current(model_dir: Path) -> str | None:
    """The version recorded as served, or None when none is recorded (or the file is unreadable)."""
    try:
        version = (model_dir / CURRENT_FILE).read_text().strip()
    except OSError:
        return None
    return version or None


def preferred_order(model_dir: Path, versions: list[Path]) -> list[Path]:
    """The order to try a model id's versions at start: the recorded one, then newest first."""
    current = read_current(model_dir)
    newest = sorted(versions, key=lambda p: (created_at(p), p.name), reverse=True)
    return sorted(newest, key=lambda p: p.name != current)  # stable: keeps the rest newest first


def _sync_dir(path: Path) -> None:
    # A rename is durable only once its directory is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_current(model_dir: Path, version: str) -> None:
    """Record `version` as served, atomically and durably (temp file, fsync, rename)."""
    tmp = model_dir / f".{CURRENT_FILE}.tmp"
    with tmp.open("w") as f:
        f.write(f"{version}\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(model_dir / CURRENT_FILE)
    _sync_dir(model_dir)


def install(staged: Path, dest: Path) -> None:
    """Move a checked version directory into place in one rename (same filesystem), replacing
    whatever is at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    staged.rename(dest)
    _sync_dir(dest.parent)


def prune(model_dir: Path, keep: int, current: str) -> list[str]:
    """Delete all but the `keep` newest versions of a model id, never the served one; returns the
    versions deleted."""
    others = [p for p in installed_versions(model_dir) if p.name != current]
    removed = []
    for path in others[max(0, keep - 1) :]:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)
        removed.append(path.name)
        logger.info("pruned %s", path)
    return removed
