"""What a deployed bundle must pass before the swap, and how a slot's versions are kept on disk."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.bundle import load_bundle
from device.errors import BundleError, ModelError
from device.keys import load_private_key, load_trusted_keys
from device.manifest import MANIFEST_FILE, MODEL_FILE, TensorSpec
from device.modelset import LoadedModel, ModelSet, load_model, load_model_set
from device.plugins.deploy import check_fits, check_latency, served_model, with_model
from device.slots import (
    CURRENT_FILE,
    installed_versions,
    preferred_order,
    prune,
    read_current,
    write_current,
)
from forecaster.training.bundles import write_bundle

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def served(quick_price_bundle) -> LoadedModel:
    trusted = load_trusted_keys([quick_price_bundle.keys_dir])
    return load_model(load_bundle(quick_price_bundle.path, trusted))


def make_versions(slot: Path, n: int) -> list[str]:
    """`n` version directories holding just a manifest with increasing created_at."""
    names = []
    for i in range(n):
        name = f"v{i:03d}"
        (slot / name).mkdir(parents=True)
        created = (T0 + timedelta(hours=i)).isoformat()
        (slot / name / MANIFEST_FILE).write_text(json.dumps({"created_at": created}))
        names.append(name)
    return names


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), keep=st.integers(2, 5), data=st.data())
def test_prune_keeps_the_served_version_and_the_newest_others(
    n: int, keep: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        slot = Path(tmp) / "price" / "spx"
        names = make_versions(slot, n)
        current = data.draw(st.sampled_from(names))
        write_current(slot, current)
        removed = prune(slot, keep, current)
        left = [p.name for p in installed_versions(slot)]
        assert current in left
        assert len(left) == min(n, keep)
        others = [v for v in reversed(names) if v != current]
        assert set(left) == {current, *others[: keep - 1]}
        assert sorted(removed + left) == names
        assert read_current(slot) == current


def test_the_recorded_version_is_tried_first_then_newest_first(tmp_path: Path) -> None:
    slot = tmp_path / "price" / "spx"
    names = make_versions(slot, 4)
    paths = [slot / v for v in names]
    assert [p.name for p in preferred_order(slot, paths)] == ["v003", "v002", "v001", "v000"]
    write_current(slot, "v001")
    assert (slot / CURRENT_FILE).read_text() == "v001\n"
    assert [p.name for p in preferred_order(slot, paths)] == ["v001", "v003", "v002", "v000"]
    write_current(slot, "gone")  # a recorded version that is not there: newest first
    assert [p.name for p in preferred_order(slot, paths)] == ["v003", "v002", "v001", "v000"]


def test_a_restart_serves_the_recorded_version_unless_it_fails(
    tmp_path: Path, quick_price_bundle
) -> None:
    trusted = load_trusted_keys([quick_price_bundle.keys_dir])
    registry = tmp_path / "registry"
    original = quick_price_bundle.path
    slot = registry / original.relative_to(quick_price_bundle.registry).parent
    shutil.copytree(original, slot / original.name)
    fields = json.loads((original / MANIFEST_FILE).read_text())
    del fields["model_sha256"], fields["key_id"]
    fields["version"] = "v-newer"
    fields["created_at"] = datetime.fromisoformat(fields["created_at"]) + timedelta(days=1)
    key = load_private_key(next(quick_price_bundle.keys_dir.glob("*.key")))
    write_bundle(registry, fields, (original / MODEL_FILE).read_bytes(), key, {})

    def served() -> list[str]:
        return [m.ref.version for m in load_model_set(registry, trusted).models]

    assert served() == ["v-newer"]
    write_current(slot, original.name)  # e.g. after a rollback
    assert served() == [original.name]
    # The recorded version no longer verifies: the agent falls back to the newest and says why.
    (slot / original.name / MODEL_FILE).write_bytes(b"tampered")
    models = load_model_set(registry, trusted)
    assert [m.ref.version for m in models.models] == ["v-newer"]
    assert models.rejected[0].path == str(slot / original.name)
    assert "SHA-256" in models.rejected[0].reason


def test_a_bundle_fits_its_own_slot_only_with_the_same_inputs(served: LoadedModel) -> None:
    models = ModelSet(models=(served,))
    m = served.manifest
    tasks = ("price", "trend")
    check_fits(m.model_copy(update={"version": "next"}), models, tasks)
    with pytest.raises(BundleError, match="this agent serves price, trend models"):
        check_fits(m.model_copy(update={"task": "gdp", "series": ["x"]}), models, tasks)
    shorter = m.model_copy(
        update={"window": 32, "inputs": [TensorSpec(name="close", shape=["batch", 32])]}
    )
    with pytest.raises(BundleError, match="differ from the served version"):
        check_fits(shorter, models, tasks)
    # A new slot may have its own window, as long as the agent can feed it closes.
    check_fits(shorter.model_copy(update={"name": "spx32"}), models, tasks)
    two_inputs = m.model_copy(
        update={"name": "other", "inputs": [*m.inputs, TensorSpec(name="volume", shape=["b", 64])]}
    )
    with pytest.raises(BundleError, match="the agent feeds one float32"):
        check_fits(two_inputs, models, tasks)
    renamed = m.model_copy(
        update={"name": "other", "inputs": [TensorSpec(name="x", shape=["batch", m.window])]}
    )
    check_fits(renamed, ModelSet(), tasks)  # nothing served to compare with
    with pytest.raises(BundleError, match="differ from those of the served price models"):
        check_fits(renamed, models, tasks)


def test_the_smoke_check_runs_on_live_windows_within_the_latency_budget(
    served: LoadedModel,
) -> None:
    w = served.manifest.window
    closes = np.linspace(1000.0, 1100.0, w + 10)
    summary = check_latency(served, {"SPX": closes, "NEW": closes[:3]}, budget_ms=1000.0)
    assert summary.startswith("smoke-tested on 1 live window(s)")  # NEW is still warming up
    with pytest.raises(ModelError, match="over the budget of 1e-06 ms"):
        check_latency(served, {"SPX": closes}, budget_ms=1e-6)
    with pytest.raises(ModelError, match="non-finite output on the live window of BAD"):
        check_latency(served, {"BAD": np.full(w, np.nan)}, budget_ms=1000.0)


def test_with_model_replaces_the_slot_and_keeps_the_rest(served: LoadedModel) -> None:
    other = LoadedModel(model=served.model, ref=served.ref.model_copy(update={"version": "2"}))
    models = ModelSet(models=(served,))
    swapped = with_model(models, other)
    assert swapped.models == (other,)
    assert served_model(swapped, served.model_id) is other
    assert served_model(swapped, "trend/none") is None
    assert models.models == (served,)  # sets are never edited
