"""Which bundles an agent serves: newest verified version per model id; the rest reported, not run."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from device.bundle import load_bundle
from device.errors import ModelError
from device.forecasts import Levels, price_forecast, price_levels
from device.keys import generate_keypair, load_private_key, load_trusted_keys
from device.manifest import MANIFEST_FILE, MODEL_FILE
from device.modelset import ModelSet, load_model, load_model_set
from forecaster.training.bundles import write_bundle


@pytest.fixture
def registry(tmp_path: Path, quick_price_bundle) -> Path:
    """A registry holding just the quick-trained price bundle."""
    m = load_bundle(
        quick_price_bundle.path, load_trusted_keys([quick_price_bundle.keys_dir])
    ).manifest
    dest = tmp_path / "registry" / m.task / m.name / m.version
    shutil.copytree(quick_price_bundle.path, dest)
    return tmp_path / "registry"


@pytest.fixture
def trusted(quick_price_bundle):
    return load_trusted_keys([quick_price_bundle.keys_dir])


def newer_fields(path: Path, **changes: object) -> dict:
    fields = json.loads((path / MANIFEST_FILE).read_text())
    for name in ("model_sha256", "key_id"):
        fields.pop(name)
    fields["version"] = "v-newer"
    fields["created_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return {**fields, **changes}


def test_the_newest_verified_version_is_served(registry: Path, trusted, quick_price_bundle) -> None:
    models = load_model_set(registry, trusted)
    [loaded] = models.models
    assert loaded.model_id == f"price/{quick_price_bundle.path.parent.name}"
    assert models.rejected == ()
    assert models.window == loaded.manifest.window
    assert models.by_task("price") == models.window_models == (loaded,)
    assert loaded.describe()["sha256"] == loaded.ref.sha256 == loaded.manifest.model_sha256


def test_a_newer_tampered_version_is_rejected_and_the_older_one_served(
    registry: Path, trusted, quick_price_bundle
) -> None:
    original = next(registry.glob("*/*/*"))
    tampered = original.parent / "v-newer"
    shutil.copytree(original, tampered)
    manifest = json.loads((tampered / MANIFEST_FILE).read_text())
    manifest["created_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    (tampered / MANIFEST_FILE).write_text(json.dumps(manifest))
    models = load_model_set(registry, trusted)
    assert [m.ref.version for m in models.models] == [original.name]
    [rejected] = models.rejected
    assert rejected.path == str(tampered)
    assert "signature" in rejected.reason


def test_a_bundle_by_an_untrusted_key_is_rejected(registry: Path, tmp_path: Path) -> None:
    stranger = load_trusted_keys([generate_keypair(tmp_path / "other")[1]])
    models = load_model_set(registry, stranger)
    assert models.models == ()
    assert "not among the trusted keys" in models.rejected[0].reason


def test_a_signed_bundle_that_fails_its_smoke_test_is_rejected(
    registry: Path, tmp_path: Path, quick_price_bundle
) -> None:
    original = next(registry.glob("*/*/*"))
    key_path = next(quick_price_bundle.keys_dir.glob("*.key"))
    # Signed by a trusted key, but the manifest promises one horizon fewer than the graph gives.
    fields = newer_fields(original)
    fields["horizons"] = fields["horizons"][:-1]
    write_bundle(
        registry, fields, (original / MODEL_FILE).read_bytes(), load_private_key(key_path), {}
    )
    models = load_model_set(registry, load_trusted_keys([quick_price_bundle.keys_dir]))
    assert [m.ref.version for m in models.models] == [original.name]
    assert "output shape" in models.rejected[0].reason


def test_price_forecast_levels_and_non_finite_output(registry: Path, trusted) -> None:
    bundle = load_bundle(next(registry.glob("*/*/*")), trusted)
    model = load_model(bundle)
    w = model.manifest.window
    closes = np.linspace(100.0, 110.0, w, dtype=np.float32)[None, :]
    out, latency = model.model.run_window(closes)
    ts = datetime(2020, 1, 2, tzinfo=UTC)
    [levels] = price_levels(model, [110.0], [out[0]])
    assert isinstance(levels, Levels) and levels.calibrated is None
    f = price_forecast("a", "SPX", 9, ts, 110.0, model, levels, latency)
    assert f.key == f"a/SPX/9/{model.model_id}"
    np.testing.assert_allclose(f.prices, 110.0 * np.exp(np.array(f.returns)))
    assert f.returns == out[0].tolist() and f.raw is None  # the model's output as it is
    assert all(row == sorted(row) for row in f.returns)  # non-decreasing quantiles
    # One call for several forecasts: each row its own levels, a non-finite one an error
    # (NaN in the output, or a price that overflows), never a forecast.
    overflow = np.full_like(out[0], 1000.0)
    ok, nan, inf = price_levels(model, [100.0, 100.0, 100.0], [out[0], out[0] * np.nan, overflow])
    assert isinstance(ok, Levels)
    np.testing.assert_allclose(ok.prices, 100.0 * np.exp(out[0].astype(np.float64)))
    for failed in (nan, inf):
        assert isinstance(failed, ModelError) and "non-finite" in str(failed)
    assert ModelSet().window == 0
