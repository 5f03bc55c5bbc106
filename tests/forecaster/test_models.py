"""Quantile models: never crossing, preprocessing inside the graph, torch == onnxruntime."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forecaster.tasks.price.nets import LSTMTeacher, MLPStudent, count_parameters
from forecaster.training.export import export_window_model, run_onnx
from forecaster.training.loops import predict_torch

WINDOW, HORIZONS, LEVELS = 16, [1, 5], [0.05, 0.25, 0.5, 0.75, 0.95]

torch.manual_seed(0)
STUDENT = MLPStudent(WINDOW, HORIZONS, LEVELS, train_vol=0.01, hidden=[8])
# Random weights with a large scale stress the non-crossing construction.
with torch.no_grad():
    for p in STUDENT.parameters():
        p.normal_(0, 3)
STUDENT_ONNX = export_window_model(STUDENT, WINDOW)

closes = arrays(
    np.float32,
    st.tuples(st.integers(1, 8), st.just(WINDOW)),
    elements=st.floats(1.0, 1e5, width=32),
)


@settings(max_examples=60, deadline=None)
@given(closes)
def test_quantiles_never_cross(x: np.ndarray) -> None:
    q = predict_torch(STUDENT, x)
    assert q.shape == (len(x), len(HORIZONS), len(LEVELS))
    assert np.isfinite(q).all()
    assert (np.diff(q, axis=-1) >= 0).all()


@settings(max_examples=60, deadline=None)
@given(closes)
def test_onnx_matches_torch_and_keeps_order(x: np.ndarray) -> None:
    torch_q = predict_torch(STUDENT, x)
    onnx_q = run_onnx(STUDENT_ONNX, x)
    np.testing.assert_allclose(onnx_q, torch_q, atol=1e-4 * max(1.0, float(np.abs(torch_q).max())))
    assert (np.diff(onnx_q, axis=-1) >= 0).all()


def test_outputs_are_scale_free_in_price_level() -> None:
    """Preprocessing inside the graph: the same path at 10x the price gives the same returns."""
    x = np.cumprod(np.full((1, WINDOW), 1.01, np.float32), axis=1) * 100
    np.testing.assert_allclose(run_onnx(STUDENT_ONNX, x), run_onnx(STUDENT_ONNX, x * 10), atol=1e-5)


def test_teacher_is_deep_and_student_small() -> None:
    teacher = LSTMTeacher(64, [1, 5, 20], LEVELS, 0.01, hidden=128, layers=2)
    student = MLPStudent(64, [1, 5, 20], LEVELS, 0.01, hidden=[32, 32])
    assert count_parameters(teacher) >= 100_000
    assert count_parameters(student) * 20 < count_parameters(teacher)
