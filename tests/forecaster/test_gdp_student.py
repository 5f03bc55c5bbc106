"""The GDP student's kinds and band: the linear path reproduces a linear teacher in and out of
the train range, every kind exports to an ONNX graph equal to torch with any missing pattern,
and the band's offsets follow the information month read from the masks."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecaster.data.macro import InfoSet, MacroPanel, load_macro_panel
from forecaster.tasks.gdp.student import (
    BAND_LEVELS,
    NowcastStudent,
    SimulationPolicy,
    StudentArch,
    StudentKind,
    band_quantiles,
    export_student,
    fit_linear_path,
    information_month,
    predict_student,
    run_student_onnx,
    simulate_info_sets,
    stack_inputs,
)
from tests.support.gdp import CELLS, WQ, masked_inputs


@pytest.fixture(scope="module")
def panel() -> MacroPanel:
    return load_macro_panel(date(1985, 1, 1))


def _student(panel: MacroPanel, kind: StudentKind, hidden: list[int]) -> NowcastStudent:
    monthly = panel.monthly.loc[:"2000-12"]
    return NowcastStudent(
        3 * WQ,
        WQ - 1,
        monthly.mean().fillna(0).to_numpy(),
        monthly.std().fillna(1).to_numpy(),
        float(panel.gdp.mean()),
        float(panel.gdp.std()),
        hidden,
        StudentArch(kind),
    )


def _calendar(panel: MacroPanel, first: str, last: str) -> list[InfoSet]:
    quarters = pd.period_range(first, last, freq="Q")
    return panel.calendar_info_sets(quarters, WQ)


def _train_sets(panel: MacroPanel) -> tuple[np.ndarray, np.ndarray]:
    """The 1985-2000 calendar sets plus simulated ragged edges: more sets than the linear
    path has weights, so least squares identifies them."""
    quarters = pd.period_range("1985Q3", "2000Q4", freq="Q")
    rng = np.random.default_rng(0)
    sims = simulate_info_sets(panel, quarters, 6, WQ, SimulationPolicy(), rng)
    return stack_inputs(panel.calendar_info_sets(quarters, WQ) + sims)


def _linear_teacher(inputs: tuple[np.ndarray, np.ndarray], seed: int) -> np.ndarray:
    """A linear 'Kalman-like' teacher in the raw values: a weight per cell for a released
    value, a constant per cell for a missing one, and an intercept."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([inputs[0].reshape(len(inputs[0]), -1), inputs[1]], axis=1)
    x = x.astype(np.float64)
    weights, missing = rng.normal(0, 0.05, x.shape[1]), rng.normal(0, 0.5, x.shape[1])
    return 2.0 + np.where(np.isnan(x), missing, x * weights).sum(axis=1)


def _stretched(infos: list[InfoSet], panel: MacroPanel, factor: float) -> list[InfoSet]:
    """Every indicator's deviation from its 1985-2000 mean scaled by `factor`."""
    mean = panel.monthly.loc[:"2000-12"].mean().to_numpy()
    return [
        InfoSet(i.quarter, i.cut, mean + (i.monthly - mean) * factor, i.gdp, i.month) for i in infos
    ]


@pytest.mark.parametrize("kind", ["skip", "gated"])
def test_linear_path_reproduces_a_linear_teacher_out_of_range(
    panel: MacroPanel, kind: StudentKind
) -> None:
    torch.manual_seed(0)
    student = _student(panel, kind, [8])
    train = _train_sets(panel)
    rmse = fit_linear_path(student, train, _linear_teacher(train, 3), ridge=1e-12)
    assert rmse < 1e-4
    assert not any(p.requires_grad for p in student.linear.parameters())  # type: ignore[union-attr]
    # windows of the train period's missing patterns stretched 5x beyond its range: still the
    # teacher, exactly (a pattern never seen in train, e.g. no industrial production, leaves
    # its masks' constants unidentified; the recipe's simulated gaps cover those)
    far = stack_inputs(_stretched(_calendar(panel, "1999Q1", "2000Q4"), panel, 5.0))
    assert (np.nan_to_num(np.abs(far[0])) > np.nanmax(np.abs(train[0]), axis=0)).any()
    with torch.no_grad():
        features = student.linear_features(torch.from_numpy(far[0]), torch.from_numpy(far[1]))
        path = student.gdp_mean + student.gdp_std * student.linear(features)[:, 0]  # type: ignore[misc]
    np.testing.assert_allclose(path.numpy(), _linear_teacher(far, 3), atol=2e-3)
    if kind == "gated":  # the pattern's corrections start at zero: the student is the path
        np.testing.assert_allclose(predict_student(student, far)[:, 0], path.numpy(), atol=1e-5)


def test_a_skip_student_follows_a_linear_teacher_where_a_plain_mlp_does_not(
    panel: MacroPanel,
) -> None:
    """Distilled on calm windows only, the skip student's error out of range stays at the
    MLP residual's size; the plain MLP's grows with the stretch."""
    from forecaster.tasks.gdp.student import StudentLoop, StudentTargets, fit_student
    from forecaster.training.loops import LoopSettings

    train = _train_sets(panel)
    labels = _linear_teacher(train, 5)
    far = stack_inputs(_stretched(_calendar(panel, "1999Q1", "2000Q4"), panel, 4.0))
    gaps = {}
    for kind in ("mlp", "skip"):
        torch.manual_seed(0)
        student = _student(panel, kind, [16])
        loop = StudentLoop(LoopSettings(60, 60, 3e-3, 64, 0), 0.0, 1.0, ridge=1e-12)
        targets = StudentTargets(labels, np.full(len(labels), np.nan), labels)
        fit_student(student, train, targets, train, loop)
        gaps[kind] = float(
            np.abs(predict_student(student, far)[:, 0] - _linear_teacher(far, 5)).max()
        )
    assert gaps["skip"] < 0.1 * gaps["mlp"]


@pytest.fixture(scope="module", params=["mlp", "skip", "gated"])
def graph(panel: MacroPanel, request: pytest.FixtureRequest) -> tuple[NowcastStudent, bytes]:
    torch.manual_seed(0)
    student = _student(panel, request.param, [16, 8])
    if student.linear is not None:
        train = stack_inputs(_calendar(panel, "1995Q1", "2000Q4"))
        fit_linear_path(student, train, _linear_teacher(train, 1), ridge=1e-4)
    if request.param == "gated":  # non-zero pattern corrections, so the graph is exercised
        torch.nn.init.normal_(student.net[-1].weight, std=0.05)  # type: ignore[arg-type]
    errors = np.tile(np.linspace(-3, 3, 10), 3) * np.repeat([3.0, 2.0, 1.0], 10)
    student.calibrate_band(errors, np.linspace(-5, 8, 30), np.repeat([1, 2, 3], 10), scale=0.5)
    return student, export_student(student)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    quarter_offset=st.integers(min_value=56, max_value=98),
    month=st.sampled_from([1, 2, 3]),
    hide=st.lists(st.booleans(), min_size=CELLS, max_size=CELLS),
)
def test_every_kind_exports_a_graph_equal_to_torch(
    panel: MacroPanel,
    graph: tuple[NowcastStudent, bytes],
    quarter_offset: int,
    month: int,
    hide: list[bool],
) -> None:
    student, onnx = graph
    inputs = masked_inputs(panel, quarter_offset, month, hide)
    onnx_out = run_student_onnx(onnx, inputs)
    np.testing.assert_allclose(onnx_out, predict_student(student, inputs), atol=1e-4, rtol=1e-5)
    # the band's offsets are the row of the information month the masks show, widened by
    # 1 + 0.5 |nowcast - mean| / std
    k = int(information_month(torch.from_numpy(inputs[0]))[0])
    width = 1 + 0.5 * abs(onnx_out[0, 0] - float(student.gdp_mean)) / float(student.gdp_std)
    offsets = student.band_offsets.numpy()[k - 1] * width
    np.testing.assert_allclose(onnx_out[0, 1:] - onnx_out[0, 0], offsets, atol=1e-4)
    assert onnx_out[0, 1] < onnx_out[0, 0] < onnx_out[0, 2]


def test_information_month_is_the_calendar_month(panel: MacroPanel) -> None:
    infos = _calendar(panel, "1986Q1", "2009Q3")
    months = information_month(torch.from_numpy(stack_inputs(infos)[0])).numpy()
    assert months.tolist() == [i.month for i in infos]
    # before the quarter's first month-end nothing of it is out: the month-1 band applies
    quarter = pd.Period("2008Q4", "Q")
    early = panel.info_set(quarter, pd.Timestamp("2008-10-20"), WQ)
    assert int(information_month(torch.from_numpy(stack_inputs([early])[0]))[0]) == 1


@settings(max_examples=50, deadline=None)
@given(
    errors=st.lists(st.floats(-20, 20, allow_nan=False), min_size=30, max_size=200),
    seed=st.integers(0, 1000),
)
def test_band_quantiles_cover_their_calibration_sample(errors: list[float], seed: int) -> None:
    """Split conformal by construction: on its own sample, each month's band holds the
    nominal share of errors up to one sample's granularity; pooled rows are all equal."""
    e = np.array(errors)
    months = np.random.default_rng(seed).integers(1, 4, len(e))
    months[:3] = [1, 2, 3]
    by_month = band_quantiles(e, months)
    nominal = BAND_LEVELS[1] - BAND_LEVELS[0]
    for k in (1, 2, 3):
        inside = (e[months == k] >= by_month[k - 1, 0]) & (e[months == k] <= by_month[k - 1, 1])
        n = int((months == k).sum())
        assert inside.mean() >= nominal - 2 / n - 1e-9
        assert by_month[k - 1, 0] <= by_month[k - 1, 1]
    pooled = band_quantiles(e)
    assert (pooled == pooled[0]).all()
    np.testing.assert_allclose(pooled[0], np.quantile(e, BAND_LEVELS))


@settings(max_examples=50, deadline=None)
@given(
    errors=st.lists(st.floats(-20, 20, allow_nan=False), min_size=30, max_size=200),
    scale=st.sampled_from([0.0, 0.5, 2.0]),
    seed=st.integers(0, 1000),
)
def test_a_scaled_band_covers_its_calibration_sample(
    errors: list[float], scale: float, seed: int
) -> None:
    """The graph's band, calibrated on errors at their nowcasts, holds the nominal share of
    those errors (one sample's granularity), however far the nowcasts are from the mean."""
    rng = np.random.default_rng(seed)
    student = NowcastStudent(3, 1, np.zeros(1), np.ones(1), 2.0, 3.0, [4])
    nowcasts = rng.normal(2.0, 6.0, len(errors))
    e = np.array(errors) * (1 + scale * np.abs(nowcasts - 2.0) / 3.0)
    student.calibrate_band(e, nowcasts, scale=scale)
    width = student._band_width(torch.from_numpy(nowcasts.astype(np.float32))).numpy()
    lo, hi = student.band_offsets.numpy()[0]
    inside = (e >= lo * width - 1e-4) & (e <= hi * width + 1e-4)
    assert inside.mean() >= BAND_LEVELS[1] - BAND_LEVELS[0] - 2 / len(e) - 1e-9


def test_every_kind_gives_each_row_the_same_bits_in_any_batch(
    panel: MacroPanel, graph: tuple[NowcastStudent, bytes]
) -> None:
    """The device's news takes float64 differences of rows of one batch and publishes the
    last row as the nowcast: a row must not depend on the batch it is run in."""
    x = stack_inputs(_calendar(panel, "2005Q1", "2009Q3"))
    alone = np.concatenate(
        [run_student_onnx(graph[1], (m[None], g[None])) for m, g in zip(*x, strict=True)]
    )
    many = run_student_onnx(graph[1], (np.concatenate([x[0]] * 5), np.concatenate([x[1]] * 5)))
    assert (many[: len(alone)] == alone).all() and (many[-len(alone) :] == alone).all()
