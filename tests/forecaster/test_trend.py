"""The trend task on real SP500 closes: the regime teacher, the distilled student, the bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

from device import OnnxModel, load_bundle, load_trusted_keys
from forecaster.errors import RecipeError, TrainError
from forecaster.recipe import load_recipe
from forecaster.tasks.trend import TrendData, load_trend_data, trend_section
from forecaster.tasks.trend.metrics import brier_score, classification_metrics, log_loss
from forecaster.tasks.trend.nets import MLPClassifier
from forecaster.tasks.trend.regimes import MarkovRegimeTeacher, RegimeFilter, percent_returns
from forecaster.training.export import export_window_model, parity_max_abs, run_onnx

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "models" / "trend" / "spx.toml"
FORECASTER = [sys.executable, "-m", "forecaster.cli"]
MODELS = ("teacher", "teacher_window", "student_float", "student_int8", "majority", "persistence")


@pytest.fixture(scope="module")
def data() -> TrendData:
    recipe = load_recipe(RECIPE)
    return load_trend_data(recipe, trend_section(recipe, quick=True))


@pytest.fixture(scope="module")
def teacher(data: TrendData) -> MarkovRegimeTeacher:
    """Quick settings: one persistent start on the last 1,500 train returns (about a second)."""
    train = data.period_returns(data.split.train_end)[-1500:]
    return MarkovRegimeTeacher(3, starts=1, em_iter=5, maxiter=100).fit(train)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped recipe through the real command line, once for the module."""
    registry = tmp_path_factory.mktemp("trend") / "registry"
    result = subprocess.run(
        [*FORECASTER, "train", str(RECIPE), "--quick", "--registry", str(registry)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == registry / "trend" / "spx"
    return path


@pytest.fixture(scope="module")
def report(bundle: Path) -> dict:
    return json.loads((bundle / "report.json").read_text())


def test_filtered_probabilities_do_not_look_ahead(
    data: TrendData, teacher: MarkovRegimeTeacher
) -> None:
    returns = data.returns[-1200:]
    t = 700
    changed = returns.copy()
    changed[t + 1 :] = -3.0 * changed[t + 1 :][::-1]  # a different future, crash-like
    before, after = teacher.filtered(returns), teacher.filtered(changed)
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert np.abs(before[t + 1 :] - after[t + 1 :]).max() > 0.5
    # the ex-post labels do use the future: this is what the test above would catch
    assert np.abs(teacher.smoothed(returns)[t] - teacher.smoothed(changed)[t]).max() > 1e-3


def test_classes_are_ordered_by_regime_mean(data: TrendData, teacher: MarkovRegimeTeacher) -> None:
    p = teacher.params
    assert np.all(np.diff(p.means) > 0)
    # columns follow the same order as the statsmodels regimes they came from
    model = MarkovRegression(data.returns[:500], k_regimes=3, trend="c", switching_variance=True)
    raw = model.filter(teacher.sm_params_).filtered_marginal_probabilities
    named = dict(zip(model.param_names, teacher.sm_params_, strict=True))
    raw_means = np.array([named[f"const[{i}]"] for i in range(3)])
    order = np.argsort(raw_means)
    np.testing.assert_allclose(teacher.filtered(data.returns[:500]), raw[:, order])
    np.testing.assert_allclose(p.transition.sum(axis=1), 1.0)
    # on real S&P 500 returns the lowest-mean (bear) regime is also the most volatile
    assert p.variances.argmax() == 0


def test_ordering_by_sharpe_ranks_mean_over_volatility(data: TrendData) -> None:
    train = data.period_returns(data.split.train_end)[-800:]
    fitted = MarkovRegimeTeacher(3, order_by="sharpe", starts=1, em_iter=5, maxiter=100).fit(train)
    p = fitted.params
    assert np.all(np.diff(p.means / np.sqrt(p.variances)) > 0)


def test_persistence_is_the_smoother_truncated_at_today(
    data: TrendData, teacher: MarkovRegimeTeacher
) -> None:
    returns, lag = data.returns[-800:], 5
    fixed = teacher.fixed_lag(returns, lag)
    assert np.isnan(fixed[:lag]).all()
    for t in (lag, 300, 799):
        np.testing.assert_allclose(fixed[t], teacher.smoothed(returns[: t + 1])[t - lag], atol=1e-9)


def test_window_filter_is_the_teacher_on_the_window(
    data: TrendData, teacher: MarkovRegimeTeacher
) -> None:
    x = data.test.x[::50]
    with torch.no_grad():
        window = RegimeFilter(teacher.params, x.shape[1])(torch.from_numpy(x)).numpy()
    for row, close in zip(window, x, strict=True):
        alone = teacher.filtered(percent_returns(close))[-1]
        np.testing.assert_allclose(row, alone, atol=1e-4)
    # 63 returns are enough for the filter to forget where it started: same as full history
    history = teacher.filtered(data.returns)[data.rows(data.test)[::50]]
    np.testing.assert_allclose(window, history, atol=1e-3)


def test_torch_onnx_parity_on_real_test_windows(
    data: TrendData, teacher: MarkovRegimeTeacher
) -> None:
    torch.manual_seed(0)
    student = MLPClassifier(data.test.x.shape[1], 3, data.train_vol, hidden=[16])
    window = RegimeFilter(teacher.params, data.test.x.shape[1])
    for model in (student, window):
        graph = export_window_model(model, data.test.x.shape[1], "close", "proba")
        assert parity_max_abs(model, graph, data.test.x) < 1e-4


_windows = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.just(63)),
    elements=st.floats(-0.25, 0.25),
)


@pytest.fixture(scope="module")
def shipped(bundle: Path) -> OnnxModel:
    return OnnxModel(load_bundle(bundle, load_trusted_keys([bundle.parents[3] / "keys"])))


@settings(max_examples=40, deadline=None)
@given(start=st.floats(0.5, 1e5), returns=_windows)
def test_probabilities_sum_to_one_on_any_window(
    shipped: OnnxModel, bundle: Path, start: float, returns: np.ndarray
) -> None:
    """Flat windows, crashes, tiny and huge prices: the student, its torch twin and the
    teacher's window filter all answer with a probability distribution."""
    closes = start * np.exp(np.concatenate([np.zeros((len(returns), 1)), returns], 1).cumsum(1))
    closes = closes.astype(np.float32)
    proba, _ = shipped.run_window(closes)
    assert proba.shape == (len(closes), 3)
    teacher = run_onnx((bundle / "teacher.onnx").read_bytes(), closes)
    with torch.no_grad():
        untrained = MLPClassifier(64, 3, 0.012)(torch.from_numpy(closes)).numpy()
    for p in (proba, teacher, untrained):
        assert np.isfinite(p).all()
        assert (p >= 0).all() and (p <= 1).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_bundle_verifies_and_describes_its_classes(bundle: Path) -> None:
    loaded = load_bundle(bundle, load_trusted_keys([bundle.parents[3] / "keys"]))
    m = loaded.manifest
    assert m.task == "trend" and m.model_id == "trend/spx"
    assert m.classes == ["bear", "sideways", "bull"]
    assert m.window == 64
    assert [(t.name, t.shape) for t in m.inputs] == [("close", ["batch", 64])]
    assert [(t.name, t.shape) for t in m.outputs] == [("proba", ["batch", 3])]
    assert str(m.periods.test[0]) > "2015-12-31"
    assert m.compression[0].name == "distill"
    for png in ("regimes.png", "calibration.png"):
        data = (bundle / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_scores_every_model_and_the_device_reproduces_it(
    shipped: OnnxModel, report: dict, data: TrendData
) -> None:
    assert set(report["models"]) == set(MODELS)
    for row in report["models"].values():
        for split in ("validation", "test"):
            m = row[split]
            assert 0 <= m["accuracy"] <= 1 and 0 <= m["brier"] <= 2 and m["log_loss"] > 0
    assert report["models"]["teacher"]["test"]["agreement"] == 1.0
    assert report["parity"]["teacher_window_max_abs"] < 1e-4
    assert report["parity"]["student_max_abs"] < 1e-4
    proba, _ = shipped.run_window(data.test.x)
    np.testing.assert_allclose(proba, np.asarray(report["test_forecasts"]["proba"]), atol=1e-5)
    # the quick student already learns the regimes: well above the majority class
    test = report["models"][report["headline"]["chosen"]]["test"]
    assert test["accuracy"] > report["models"]["majority"]["test"]["accuracy"]


def test_report_command_prints_the_trend_table(bundle: Path) -> None:
    result = subprocess.run(
        [*FORECASTER, "report", str(bundle)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    for name in MODELS:
        assert name in result.stdout
    assert "Brier" in result.stdout and "agree teacher" in result.stdout


def test_bad_trend_section_is_a_recipe_error(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        RECIPE.read_text().replace('classes = ["bear", "sideways", "bull"]', 'classes = ["a", "b"]')
    )
    with pytest.raises(RecipeError, match="k_regimes = 3"):
        trend_section(load_recipe(recipe))


def test_metrics_on_known_values() -> None:
    labels = np.array([0, 1, 2, 2])
    perfect = np.eye(3)[labels]
    uniform = np.full((4, 3), 1 / 3)
    assert brier_score(perfect, labels) == 0.0
    assert brier_score(uniform, labels) == pytest.approx(2 / 3)
    assert log_loss(uniform, labels) == pytest.approx(np.log(3))
    m = classification_metrics(uniform, labels, perfect, ["a", "b", "c"])
    assert m["per_class"]["c"]["true_share"] == 0.5
    assert m["kl_from_teacher"] > 1.0


def test_a_fit_that_does_not_converge_is_refused(data: TrendData) -> None:
    teacher = MarkovRegimeTeacher(3, starts=1, em_iter=0, maxiter=1)
    with pytest.raises(TrainError, match="did not converge"):
        teacher.fit(data.returns[:400])
