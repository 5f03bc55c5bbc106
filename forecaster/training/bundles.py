"""Write signed bundles into the registry; resolve the signing key (the bundle format:
docs/ARCHITECTURE.md, "The contracts")."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.bundle import load_bundle, sha256_hex
from device.keys import generate_keypair, key_id, load_private_key, load_trusted_keys, sign
from device.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    REPORT_FILE,
    SIGNATURE_FILE,
    TEACHER_FILE,
    BundleManifest,
)
from forecaster.errors import ForecasterError

__all__ = ["DEV_KEY_DIR", "new_version", "resolve_signing_key", "trusted_keys_for", "write_bundle"]

logger = logging.getLogger(__name__)

SIGNING_KEY_ENV = "FORECASTER_SIGNING_KEY"
DEV_KEY_DIR = "keys"  # beside the registry: <registry>/../keys/


def new_version(now: datetime | None = None) -> str:
    """Sortable UTC timestamp version, e.g. `20261122T205500Z`."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")


def resolve_signing_key(key: Path | None, registry: Path) -> tuple[Ed25519PrivateKey, str]:
    """`--key`, else $FORECASTER_SIGNING_KEY, else a development key created once beside the
    registry. Returns the key and a sentence saying where it came from."""
    if key is None and os.environ.get(SIGNING_KEY_ENV):
        key = Path(os.environ[SIGNING_KEY_ENV])
    if key is not None:
        if not key.is_file():
            raise ForecasterError(
                f"signing key {key} does not exist; make one with `forecaster keys generate`"
            )
        return load_private_key(key), f"signed with {key}"
    dev_dir = registry.resolve().parent / DEV_KEY_DIR
    existing = sorted(dev_dir.glob("*.key"))
    if existing:
        return load_private_key(existing[0]), f"signed with the development key {existing[0]}"
    priv, _ = generate_keypair(dev_dir)
    return load_private_key(
        priv
    ), f"created a development signing key {priv} (use --key for production)"


def write_bundle(
    registry: Path,
    manifest_fields: dict[str, Any],
    model_onnx: bytes,
    private_key: Ed25519PrivateKey,
    report: dict[str, Any],
    teacher_onnx: bytes | None = None,
) -> Path:
    """Sign and write `<registry>/<task>/<name>/<version>/`, then re-load it as a device would."""
    fields = dict(manifest_fields)
    fields.setdefault("version", new_version())
    fields.setdefault("created_at", datetime.now(UTC))
    fields["model_sha256"] = sha256_hex(model_onnx)
    fields["key_id"] = key_id(private_key.public_key())
    manifest = BundleManifest.model_validate(fields)
    manifest_bytes = manifest.model_dump_json(indent=2).encode()
    path = registry / manifest.task / manifest.name / manifest.version
    path.mkdir(parents=True, exist_ok=False)
    (path / MODEL_FILE).write_bytes(model_onnx)
    (path / MANIFEST_FILE).write_bytes(manifest_bytes)
    (path / SIGNATURE_FILE).write_bytes(sign(manifest_bytes, private_key))
    (path / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))
    if teacher_onnx is not None:
        (path / TEACHER_FILE).write_bytes(teacher_onnx)
    # Prove the bundle loads exactly as a device will load it.
    load_bundle(path, {manifest.key_id: private_key.public_key()})
    logger.info("wrote bundle %s", path)
    return path


def trusted_keys_for(registry: Path, extra: list[Path] | None = None) -> dict:
    """Public keys a cloud-side command trusts: the development keys plus any given."""
    paths = [registry.resolve().parent / DEV_KEY_DIR, *(extra or [])]
    return load_trusted_keys([p for p in paths if p.exists()])
