"""Signed bundles: a device loads only what a trusted key signed, byte for byte."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from device import BundleError, OnnxModel, SignatureError, load_bundle, pack_bundle, unpack_bundle
from device.keys import generate_keypair, load_trusted_keys
from device.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE


@pytest.fixture
def bundle_copy(quick_price_bundle, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(quick_price_bundle.path, dest)
    return dest


@pytest.fixture
def trusted(quick_price_bundle) -> dict:
    return load_trusted_keys([quick_price_bundle.keys_dir])


def test_trained_bundle_verifies_and_runs(quick_price_bundle, trusted: dict) -> None:
    bundle = load_bundle(quick_price_bundle.path, trusted)
    m = bundle.manifest
    assert m.task == "price"
    assert (m.horizons, m.window) == ([1, 5, 20], 64)
    assert {p.name for p in quick_price_bundle.path.iterdir()} >= {
        "model.onnx",
        "manifest.json",
        "manifest.sig",
        "report.json",
        "teacher.onnx",
    }
    model = OnnxModel(bundle)
    closes = np.linspace(100, 110, 64, dtype=np.float32)[None, :]
    q, latency = model.run_window(closes)
    assert q.shape == (1, 3, 5)
    assert latency > 0
    assert (np.diff(q, axis=-1) >= 0).all()


def test_tampered_model_is_refused(bundle_copy: Path, trusted: dict) -> None:
    data = bytearray((bundle_copy / MODEL_FILE).read_bytes())
    data[-10] ^= 0xFF
    (bundle_copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="does not match the signed SHA-256"):
        load_bundle(bundle_copy, trusted)


def test_tampered_manifest_is_refused(bundle_copy: Path, trusted: dict) -> None:
    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    manifest["window"] = 32
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="does not verify"):
        load_bundle(bundle_copy, trusted)


def test_unsigned_bundle_is_refused(bundle_copy: Path, trusted: dict) -> None:
    (bundle_copy / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureError, match="unsigned"):
        load_bundle(bundle_copy, trusted)


def test_untrusted_key_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        load_bundle(bundle_copy, load_trusted_keys([tmp_path / "other"]))


def test_pack_unpack_round_trip(quick_price_bundle, trusted: dict, tmp_path: Path) -> None:
    archive = pack_bundle(quick_price_bundle.path)
    installed = unpack_bundle(archive, trusted, tmp_path / "registry")
    original = load_bundle(quick_price_bundle.path, trusted)
    assert installed.sha256 == original.sha256
    assert installed.path.relative_to(tmp_path / "registry").parts[:2] == ("price", "spx")
    assert not (installed.path / "teacher.onnx").exists()  # cloud-only files do not travel


def test_archive_with_extra_member_is_refused(
    quick_price_bundle, trusted: dict, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE):
            tar.add(quick_price_bundle.path / name, arcname=name)
        evil = tarfile.TarInfo("../../escape.txt")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="exactly"):
        unpack_bundle(buf.getvalue(), trusted, tmp_path / "registry")
    with pytest.raises(BundleError, match="not a readable archive"):
        unpack_bundle(b"garbage", trusted, tmp_path / "registry")
