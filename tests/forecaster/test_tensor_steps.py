"""CP and Tucker steps: error against rank, parity of the exported layer, the dense fallback
and the quick S&P 500 bundle that carries both (real closes throughout)."""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from device import load_bundle, load_trusted_keys
from forecaster.compress import (
    CompressContext,
    CPLinear,
    TuckerLinear,
    cp,
    cp_decompose,
    cp_reconstruct,
    tucker,
    tucker_decompose,
    tucker_reconstruct,
)
from forecaster.compress.layers import learned_linears
from forecaster.compress.tucker import choose_tucker_ranks, tucker_size
from forecaster.data import load_close_series, make_price_samples
from forecaster.recipe import DataSection
from forecaster.tasks.price.nets import MLPStudent
from forecaster.training.export import export_window_model, onnx_parameter_count, run_onnx
from forecaster.training.loops import predict_torch
from tests.conftest import TrainedBundle

WINDOW, HORIZONS, LEVELS = 32, [1, 5], [0.1, 0.5, 0.9]
# what the CPU provider runs without custom kernels; no Einsum / ATen fallbacks
STANDARD_OPS = {"MatMul", "Transpose", "Reshape", "Mul", "ReduceSum", "Unsqueeze", "Add"}

_CLOSE = load_close_series(DataSection(source="sp500"))
_RETURNS = np.diff(np.log(_CLOSE.to_numpy(dtype=np.float64)))


def returns_tensor(shape: tuple[int, ...], offset: int) -> np.ndarray:
    """Consecutive real S&P 500 daily log returns laid out as a tensor of `shape`."""
    n = math.prod(shape)
    start = offset % (len(_RETURNS) - n)
    return _RETURNS[start : start + n].reshape(shape) / _RETURNS.std()


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))


shapes = st.lists(st.integers(2, 4), min_size=2, max_size=4).map(tuple)


@settings(max_examples=12, deadline=None)
@given(shapes, st.integers(0, 4000), st.data())
def test_tucker_error_does_not_rise_with_the_ranks(
    shape: tuple[int, ...], offset: int, data: st.DataObject
) -> None:
    tensor = returns_tensor(shape, offset)
    low = [data.draw(st.integers(1, d)) for d in shape]
    high = [data.draw(st.integers(r, d)) for r, d in zip(low, shape, strict=True)]
    errors = [
        relative_error(tucker_reconstruct(*tucker_decompose(tensor, r)), tensor)
        for r in (low, high)
    ]
    assert errors[1] <= errors[0] + 1e-6
    assert relative_error(tucker_reconstruct(*tucker_decompose(tensor, list(shape))), tensor) < 1e-8


@settings(max_examples=8, deadline=None)
@given(shapes, st.integers(0, 4000), st.integers(1, 5), st.integers(1, 4))
def test_cp_error_does_not_rise_with_the_rank(
    shape: tuple[int, ...], offset: int, low: int, extra: int
) -> None:
    tensor = returns_tensor(shape, offset)
    errors = [
        relative_error(cp_reconstruct(cp_decompose(tensor, r)), tensor) for r in (low, low + extra)
    ]
    assert errors[1] <= errors[0] + 1e-6


@settings(max_examples=20, deadline=None)
@given(shapes, st.integers(0, 4000), st.floats(0.05, 0.9))
def test_tucker_budget_ranks_fit_the_budget(
    shape: tuple[int, ...], offset: int, budget: float
) -> None:
    ranks = choose_tucker_ranks(returns_tensor(shape, offset), budget=budget)
    assert all(1 <= r <= d for r, d in zip(ranks, shape, strict=True))
    assert max(ranks) == 1 or tucker_size(shape, ranks) <= budget * math.prod(shape)


@pytest.fixture(scope="module")
def ctx() -> CompressContext:
    """Real 2004-2007 S&P 500 windows; no teacher (these tests never fine-tune)."""
    start = int(_CLOSE.index.searchsorted(np.datetime64("2004-01-01")))
    cut = int(_CLOSE.index.searchsorted(np.datetime64("2007-01-01")))
    end = int(_CLOSE.index.searchsorted(np.datetime64("2007-12-31")))
    h = max(HORIZONS)
    train = make_price_samples(_CLOSE, start, cut - 1 - h, WINDOW, HORIZONS)
    valid = make_price_samples(_CLOSE, cut, end - h, WINDOW, HORIZONS)
    std = train.y.std(axis=0).astype(np.float64)
    return CompressContext(train.x, train.y, valid.x, valid.y, HORIZONS, LEVELS, std, WINDOW)


def student(hidden: list[int]) -> MLPStudent:
    torch.manual_seed(0)
    return MLPStudent(WINDOW, HORIZONS, LEVELS, 0.01, hidden=hidden)


@pytest.mark.parametrize(
    ("step", "params", "layer_type"),
    [(cp, {"rank": 3}, CPLinear), (tucker, {"budget": 0.3}, TuckerLinear)],
)
def test_factorized_layer_matches_its_tensor_in_torch_and_onnxruntime(
    ctx: CompressContext, step: Callable[..., nn.Module], params: dict, layer_type: type
) -> None:
    ctx.notes.clear()
    dense = student([16, 16])
    model = step(copy.deepcopy(dense), ctx, finetune=False, **params)
    layers = [m for m in model.modules() if isinstance(m, layer_type)]
    assert len(layers) == 3  # body.0, body.2, head.linear
    for layer in layers:
        parts = layer.decomposition()
        full = cp_reconstruct(parts) if layer_type is CPLinear else tucker_reconstruct(*parts)
        w = torch.tensor(full.reshape(layer.in_features, layer.out_features), dtype=torch.float32)
        h = torch.tensor(ctx.x_valid[:9, : layer.in_features] / 1000.0)
        torch.testing.assert_close(layer(h), h @ w + layer.bias, atol=1e-5, rtol=1e-4)
    graph = export_window_model(model, WINDOW)
    learned_ops = {n.op_type for n in onnx.load_from_string(graph).graph.node}
    reference_ops = {
        n.op_type for n in onnx.load_from_string(export_window_model(dense, WINDOW)).graph.node
    }
    assert learned_ops - reference_ops <= STANDARD_OPS
    np.testing.assert_allclose(
        run_onnx(graph, ctx.x_valid), predict_torch(model, ctx.x_valid), atol=1e-5
    )
    assert onnx_parameter_count(graph) < onnx_parameter_count(export_window_model(dense, WINDOW))


@pytest.mark.parametrize(("step", "params"), [(cp, {"rank": 1000}), (tucker, {"rank": 1000})])
def test_layers_stay_dense_where_the_factors_would_not_be_smaller(
    ctx: CompressContext, step: Callable[..., nn.Module], params: dict
) -> None:
    ctx.notes.clear()
    dense = student([8])
    model = step(copy.deepcopy(dense), ctx, finetune=False, **params)
    assert all(isinstance(layer, nn.Linear) for _, layer in learned_linears(model))
    assert ctx.notes["kept_dense"] == ["body.0", "head.linear"]
    np.testing.assert_array_equal(
        predict_torch(model, ctx.x_valid), predict_torch(dense, ctx.x_valid)
    )


def test_a_small_enough_rank_factorizes_only_the_layers_it_shrinks(ctx: CompressContext) -> None:
    """Rank 5 stores 5 x (4+4+2 + 2+2+2) = 80 < 256 values for body.0 (32 x 8: modes 4x4x2 by
    2x2x2), but 5 x (2+2+2 + 3+2) = 55 >= 48 for head.linear (8 x 6: 2x2x2 by 3x2)."""
    model = cp(student([8]), ctx, rank=5, finetune=False)
    assert isinstance(model.body[0], CPLinear)
    assert isinstance(model.head.linear, nn.Linear)
    assert ctx.notes["kept_dense"] == ["head.linear"]


def test_quick_recipe_ships_cp_and_tucker_candidates(quick_price_bundle: TrainedBundle) -> None:
    load_bundle(quick_price_bundle.path, load_trusted_keys([quick_price_bundle.keys_dir]))
    report = json.loads((quick_price_bundle.path / "report.json").read_text())
    rows = {row["chain"]: row for row in report["compression"]["rows"]}
    for chain, technique, details in (
        ("distill+cp", "cp", "cp_layers"),
        ("distill+tucker_quarter", "tucker", "tucker_layers"),
        ("distill+tucker_quarter+quantize_static", "quantize_static", None),
    ):
        row = rows[chain]
        assert row["technique"] == technique
        assert math.isfinite(row["validation_score"])
        assert row["test"] is not None and math.isfinite(row["test"]["pinball"]["overall"])
        if details:
            assert row["details"][details]  # the step factorized something and said what
            assert row["training"] is not None  # and fine-tuned it
            assert row["parameters"] < rows["distill"]["parameters"]
            assert row["torch_vs_onnx_max_abs"] < 1e-4
    for a, b in itertools.pairwise(
        ["distill", "distill+tucker_quarter", "distill+tucker_quarter+quantize_static"]
    ):
        assert rows[b]["parent"] == a
