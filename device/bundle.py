"""Read, verify, pack and find signed model bundles (docs/ARCHITECTURE.md, "The contracts")."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from device.configio import describe_validation
from device.errors import BundleError, SignatureError
from device.keys import TrustedKeys, verify
from device.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE, BundleManifest

__all__ = [
    "MAX_PACKED_BYTES",
    "Bundle",
    "find_bundles",
    "load_bundle",
    "pack_bundle",
    "sha256_hex",
    "unpack_bundle",
]

logger = logging.getLogger(__name__)

# What travels to a device; report.json and teacher.onnx stay in the cloud.
SHIPPED_FILES = (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE)
MAX_PACKED_BYTES = 64 * 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest and the exact model bytes whose hash was checked."""

    path: Path
    manifest: BundleManifest
    model_bytes: bytes

    @property
    def sha256(self) -> str:
        return self.manifest.model_sha256


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"{path.parent}: missing {path.name}") from exc
    except OSError as exc:
        raise BundleError(f"{path}: {exc.strerror}") from exc


def load_bundle(path: Path, trusted: TrustedKeys) -> Bundle:
    """Load a bundle directory, refusing it unless signature and model hash both check out."""
    if not path.is_dir():
        raise BundleError(f"{path} is not a bundle directory")
    manifest_bytes = _read(path / MANIFEST_FILE)
    if not (path / SIGNATURE_FILE).exists():
        raise SignatureError(f"{path}: unsigned bundle (no {SIGNATURE_FILE})")
    signature = _read(path / SIGNATURE_FILE)
    try:
        kid = json.loads(manifest_bytes)["key_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: {MANIFEST_FILE} has no readable key_id") from exc
    verify(manifest_bytes, signature, str(kid), trusted)
    try:
        manifest = BundleManifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        reason = describe_validation(exc, first_only=True)
        raise BundleError(f"{path}: invalid manifest: {reason}") from exc
    model_bytes = _read(path / manifest.model_file)
    if sha256_hex(model_bytes) != manifest.model_sha256:
        raise SignatureError(f"{path}: {manifest.model_file} does not match the signed SHA-256")
    return Bundle(path=path, manifest=manifest, model_bytes=model_bytes)


def pack_bundle(path: Path) -> bytes:
    """The shipped files of a bundle as one gzip tar archive, for `fleet/<agent>/deploy`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in SHIPPED_FILES:
            data = _read(path / name)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack_bundle(archive: bytes, trusted: TrustedKeys, registry: Path) -> Bundle:
    """Verify a packed bundle and install it at `<registry>/<task>/<name>/<version>/`."""
    if len(archive) > MAX_PACKED_BYTES:
        raise BundleError(f"packed bundle is {len(archive)} bytes; the limit is {MAX_PACKED_BYTES}")
    with tempfile.TemporaryDirectory(dir=registry if registry.exists() else None) as tmp:
        staging = Path(tmp)
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
                members = tar.getmembers()
                names = sorted(m.name for m in members)
                if SIGNATURE_FILE not in names:
                    raise SignatureError(f"unsigned bundle (no {SIGNATURE_FILE} in the archive)")
                if names != sorted(SHIPPED_FILES) or not all(m.isfile() for m in members):
                    raise BundleError(
                        f"packed bundle must hold exactly {SHIPPED_FILES}, not {names}"
                    )
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleError(f"packed bundle is not a readable archive: {exc}") from exc
        staged = load_bundle(staging, trusted)
        m = staged.manifest
        dest = registry / m.task / m.name / m.version
        if dest.exists():
            existing = load_bundle(dest, trusted)
            if existing.sha256 != staged.sha256:
                raise BundleError(f"version {m.version} of {m.model_id} exists with another model")
            return existing
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, dest)
    return load_bundle(dest, trusted)


def find_bundles(registry: Path) -> list[Path]:
    """Every `<task>/<name>/<version>/` directory under `registry` holding a manifest, sorted."""
    if not registry.is_dir():
        return []
    return sorted(p.parent for p in registry.glob(f"*/*/*/{MANIFEST_FILE}"))
