"""Averaged students (`[student] members`): the merged graph computes the mean of its
members, stays non-crossing, and a quick bundle of two members ships that mean."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from device import OnnxModel, load_bundle, load_trusted_keys
from forecaster.compress import average_graphs, compact_onnx
from forecaster.recipe import load_recipe
from forecaster.tasks import load_task
from forecaster.tasks.price.nets import MLPStudent
from forecaster.training.export import export_window_model, run_onnx

ROOT = Path(__file__).resolve().parents[2]
HORIZONS, LEVELS = [1, 5, 20], [0.05, 0.1, 0.5, 0.9, 0.95]


def _student_graph(seed: int) -> bytes:
    torch.manual_seed(seed)
    student = MLPStudent(64, HORIZONS, LEVELS, 0.01, hidden=[8, 8], level="window")
    return compact_onnx(export_window_model(student, 64))


GRAPHS = [_student_graph(seed) for seed in range(3)]


@settings(max_examples=25, deadline=None)
@given(
    members=st.integers(2, 3),
    vol=st.floats(1e-3, 0.05),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_average_is_the_members_mean_and_never_crosses(
    members: int, vol: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = (100 * np.exp(np.cumsum(rng.normal(0, vol, (16, 64)), axis=1))).astype(np.float32)
    each = np.stack([run_onnx(g, x) for g in GRAPHS[:members]])
    mean = run_onnx(average_graphs(GRAPHS[:members]), x)
    np.testing.assert_allclose(mean, each.mean(axis=0), rtol=1e-5, atol=1e-7)
    assert (np.diff(mean, axis=-1) >= 0).all()


def test_one_member_is_that_graph_and_mismatched_members_are_refused() -> None:
    assert average_graphs(GRAPHS[:1]) == GRAPHS[0]
    other = onnx.load_from_string(GRAPHS[1])
    other.graph.output[0].name = "other"
    with pytest.raises(ValueError, match="must map 'close' to 'quantiles'"):
        average_graphs([GRAPHS[0], other.SerializeToString()])
    with pytest.raises(ValueError, match="at least one"):
        average_graphs([])


@pytest.fixture(scope="module")
def two_member_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The SPX recipe, quick, with two members over a chain that ends in an onnx step:
    (bundle, keys dir)."""
    recipe = load_recipe(ROOT / "models" / "price" / "spx.toml").quickened()
    recipe = recipe.model_copy(
        update={
            "student": recipe.student.model_copy(update={"members": 2}),
            "compress": recipe.compress.model_copy(
                update={"chains": [["distill", "quantize_dynamic"]]}
            ),
        }
    )
    root = tmp_path_factory.mktemp("members")
    (root / "registry").mkdir()
    return load_task("price").train(recipe, root / "registry", None, True, None), root / "keys"


def test_a_two_member_bundle_ships_the_mean(two_member_bundle: tuple[Path, Path]) -> None:
    path, keys = two_member_bundle
    bundle = load_bundle(path, load_trusted_keys([keys]))
    manifest = json.loads((path / "manifest.json").read_text())
    report = json.loads((path / "report.json").read_text())
    steps = [s["name"] for s in manifest["compression"]]
    assert steps == ["distill", "quantize_dynamic", "compact", "average"]
    assert manifest["compression"][-1]["params"]["members"] == 2
    student = report["models"][report["headline"]["chosen"]]
    assert student["members"] == 2
    assert "mean of 2" in student["kind"]
    # what the report measured is the shipped file, not the first member
    shipped = (path / "model.onnx").read_bytes()
    assert student["bytes"] == len(shipped) == manifest["metrics"]["bytes"]
    first = next(r for r in report["compression"]["rows"] if r["chosen"])
    assert 1.5 * first["bytes"] < len(shipped) < 2.2 * first["bytes"]
    assert report["parity"]["shipped_vs_chosen_max_abs"] > 0
    # the device runs it like any bundle, and it forecast the report's test quantiles
    close = np.asarray(report["test_forecasts"]["close"][:64], dtype=np.float32)[None, :]
    q, _ = OnnxModel(bundle).run_window(close)
    assert (np.diff(q, axis=-1) >= 0).all()
    assert np.asarray(report["test_forecasts"]["quantiles"]).shape[1:] == q.shape[1:]
