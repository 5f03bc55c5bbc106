"""The compression toolkit: each technique's own invariant, on real S&P 500 windows."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, numpy_helper
from torch import nn

from forecaster.compress import (
    ClassifierDistillation,
    CompressContext,
    FineTune,
    TTLinear,
    choose,
    cluster,
    compact_onnx,
    distill,
    distill_classifier,
    factorize_linear,
    kmeans_codebook,
    plan_chains,
    prune_magnitude,
    prune_structured,
    qat,
    quantize_dynamic,
    quantize_static,
    svd,
    train,
    tt,
    tt_reconstruct,
    tt_svd,
)
from forecaster.compress.layers import learned_linears, sparsity
from forecaster.compress.lowrank import choose_rank
from forecaster.compress.tt import factorize
from forecaster.data import load_close_series, make_price_samples
from forecaster.errors import RecipeError
from forecaster.recipe import CompressSection, DataSection, load_recipe
from forecaster.tasks.price.nets import MLPStudent, ReturnFeatures
from forecaster.tasks.price.pipeline import compress_student, evaluate_quantiles, load_price_data
from forecaster.tasks.price.report import compression_table, pareto_chart
from forecaster.training.export import export_window_model, onnx_parameter_count, run_onnx
from forecaster.training.loops import LoopSettings, fit_quantile_model, predict_torch

ROOT = Path(__file__).resolve().parents[2]
WINDOW, HORIZONS, LEVELS = 32, [1, 5], [0.1, 0.5, 0.9]
FAST = FineTune(epochs=4, patience=2, lr=1e-3, batch_size=128)


@pytest.fixture(scope="module")
def spx_samples() -> dict[str, np.ndarray]:
    """2004-2007 S&P 500 windows for training, early 2008 for validation (no overlap of
    targets), 2008 H2 as a held-out set."""
    close = load_close_series(DataSection(source="sp500"))
    start = int(close.index.searchsorted(np.datetime64("2004-01-01")))
    cut = int(close.index.searchsorted(np.datetime64("2008-01-01")))
    cut2 = int(close.index.searchsorted(np.datetime64("2008-07-01")))
    end = int(close.index.searchsorted(np.datetime64("2008-12-31")))
    h = max(HORIZONS)
    train_s = make_price_samples(close, start, cut - 1 - h, WINDOW, HORIZONS)
    valid_s = make_price_samples(close, cut, cut2 - 1 - h, WINDOW, HORIZONS)
    test_s = make_price_samples(close, cut2, end - h, WINDOW, HORIZONS)
    log_close = np.log(close.to_numpy())
    return {
        "x_train": train_s.x,
        "y_train": train_s.y,
        "x_valid": valid_s.x,
        "y_valid": valid_s.y,
        "x_test": test_s.x,
        "y_test": test_s.y,
        "train_vol": float(np.diff(log_close[start:cut]).std()),
    }


def student(samples: dict[str, np.ndarray], hidden: list[int]) -> MLPStudent:
    torch.manual_seed(0)
    return MLPStudent(WINDOW, HORIZONS, LEVELS, samples["train_vol"], hidden=hidden)


@pytest.fixture(scope="module")
def ctx(spx_samples: dict[str, np.ndarray]) -> CompressContext:
    s = spx_samples
    teacher = student(s, [64, 64])
    horizon_std = s["y_train"].std(axis=0).astype(np.float64)
    fit_quantile_model(
        teacher, (s["x_train"], s["y_train"]), (s["x_valid"], s["y_valid"]), LEVELS, horizon_std,
        LoopSettings(epochs=20, patience=5, lr=3e-3, batch_size=128, seed=0),
    )  # fmt: skip
    return CompressContext(
        s["x_train"], s["y_train"], s["x_valid"], s["y_valid"], HORIZONS, LEVELS, horizon_std,
        WINDOW, teacher=teacher, train=FineTune(30, 5, 3e-3, 128), finetune=FAST,
        augment_copies=1, calibration_windows=256,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(ctx: CompressContext, spx_samples: dict[str, np.ndarray]) -> MLPStudent:
    return distill(student(spx_samples, [16, 16]), ctx)


def fresh(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def pinball(y: np.ndarray, q: np.ndarray) -> float:
    lv = np.asarray(LEVELS)
    d = y[..., None] - q
    return float(np.maximum(lv * d, (lv - 1) * d).mean())


# --- distillation -------------------------------------------------------------------------


def test_distillation_pulls_the_student_towards_the_teacher(
    ctx: CompressContext, spx_samples: dict[str, np.ndarray]
) -> None:
    x = ctx.x_valid
    teacher_q = ctx.teacher_on(x)
    alone = train(student(spx_samples, [16, 16]), ctx)
    taught = distill(student(spx_samples, [16, 16]), ctx, weight=1.0)
    gap_alone = np.abs(predict_torch(alone, x) - teacher_q).mean()
    gap_taught = np.abs(predict_torch(taught, x) - teacher_q).mean()
    assert gap_taught < gap_alone


class _Classifier(nn.Module):
    def __init__(self, train_vol: float, hidden: int) -> None:
        super().__init__()
        self.features = ReturnFeatures(WINDOW, train_vol)
        self.net = nn.Sequential(nn.Linear(WINDOW, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        z, level, _ = self.features(close)
        return self.net(torch.cat([z, level], dim=1))


def test_classifier_distillation_with_temperature(spx_samples: dict[str, np.ndarray]) -> None:
    """Down / flat / up over the next 5 days (train terciles): the soft targets at T=2 bring
    the student's class probabilities closer to the teacher's than the labels alone."""
    s = spx_samples
    edges = np.quantile(s["y_train"][:, 1], [1 / 3, 2 / 3])
    y_train = np.searchsorted(edges, s["y_train"][:, 1])
    y_valid = np.searchsorted(edges, s["y_valid"][:, 1])
    torch.manual_seed(0)
    teacher = _Classifier(s["train_vol"], 64)
    args = (s["x_train"], y_train, s["x_valid"], y_valid)
    loop = LoopSettings(epochs=15, patience=15, lr=3e-3, batch_size=256, seed=0)
    labels_only = ClassifierDistillation(weight=0.0)
    distill_classifier(teacher, teacher, *args, labels_only, loop)
    torch.manual_seed(1)
    alone, taught = _Classifier(s["train_vol"], 4), _Classifier(s["train_vol"], 4)
    taught.load_state_dict(alone.state_dict())
    distill_classifier(alone, teacher, *args, labels_only, loop)
    soft = ClassifierDistillation(weight=1.0, temperature=2.0)
    result = distill_classifier(taught, teacher, *args, soft, loop)
    assert result.epochs >= 1
    x = torch.from_numpy(s["x_valid"])
    with torch.no_grad():
        p_teacher = torch.softmax(teacher(x), -1)

        def kl(model: nn.Module) -> float:
            log_p = torch.log_softmax(model(x), -1)
            return float((p_teacher * (p_teacher.log() - log_p)).sum(-1).mean())

        assert kl(taught) < kl(alone)
    with pytest.raises(ValueError, match="temperature"):
        distill_classifier(taught, teacher, *args, ClassifierDistillation(temperature=0.0))


# --- pruning ------------------------------------------------------------------------------


def test_magnitude_pruning_reaches_its_sparsity(ctx: CompressContext, trained: MLPStudent) -> None:
    pruned = prune_magnitude(fresh(trained), ctx, sparsity=0.6)
    for _, layer in learned_linears(pruned):
        assert float((layer.weight == 0).float().mean()) >= 0.6 - 1e-3
    assert sparsity(pruned) == pytest.approx(ctx.notes["sparsity"], abs=1e-4)
    # still a working model, exported without pruning hooks
    assert not any("weight_orig" in k for k in pruned.state_dict())
    assert np.isfinite(run_onnx(export_window_model(pruned, WINDOW), ctx.x_valid)).all()


def test_structured_pruning_shrinks_the_exported_graph(
    ctx: CompressContext, trained: MLPStudent
) -> None:
    before = export_window_model(trained, WINDOW)
    pruned = prune_structured(fresh(trained), ctx, keep=0.5)
    widths = [layer.out_features for layer in pruned.body if isinstance(layer, nn.Linear)]
    assert widths == [8, 8]
    assert pruned.head.linear.in_features == 8
    after = export_window_model(pruned, WINDOW)
    assert onnx_parameter_count(after) < onnx_parameter_count(before) - 200
    assert len(compact_onnx(after)) < len(compact_onnx(before))


def test_removing_units_that_never_fire_changes_nothing(
    ctx: CompressContext, trained: MLPStudent
) -> None:
    model = fresh(trained)
    with torch.no_grad():  # silence 5 units of the first layer on every input
        model.body[0].weight[:5] = 0
        model.body[0].bias[:5] = -1.0
    pruned = prune_structured(fresh(model), ctx, hidden=[11, 16], finetune=False)
    np.testing.assert_allclose(
        predict_torch(pruned, ctx.x_valid), predict_torch(model, ctx.x_valid), atol=1e-6
    )


# --- low rank -----------------------------------------------------------------------------


def test_svd_at_full_rank_reproduces_the_layer(trained: MLPStudent, ctx: CompressContext) -> None:
    layer = trained.body[0]
    h = torch.randn(64, layer.in_features)
    full = factorize_linear(layer, min(layer.in_features, layer.out_features))
    torch.testing.assert_close(full(h), layer(h), atol=1e-5, rtol=1e-4)
    svd(fresh(trained), ctx, rank=16, finetune=False)
    assert ctx.notes["kept_dense"]  # full rank does not save anything: layers stay dense


def test_svd_rank_by_energy_and_by_budget(trained: MLPStudent, ctx: CompressContext) -> None:
    model = svd(fresh(trained), ctx, energy=0.8, finetune=False)
    ranks = ctx.notes["ranks"]
    assert ranks and all(r < full for r, full in ranks.values())
    assert isinstance(model.body[0], nn.Sequential)
    assert onnx_parameter_count(export_window_model(model, WINDOW)) < onnx_parameter_count(
        export_window_model(trained, WINDOW)
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.01, 100), min_size=2, max_size=40),
    st.floats(0.05, 1.0),
    st.floats(0.05, 1.0),
)
def test_rank_choice_invariants(values: list[float], e1: float, budget: float) -> None:
    s = np.sort(np.asarray(values))[::-1]
    n_in, n_out = len(s) + 3, len(s)
    lo, hi = sorted([e1, min(1.0, e1 + 0.2)])
    r_lo, r_hi = choose_rank(s, n_in, n_out, energy=lo), choose_rank(s, n_in, n_out, energy=hi)
    assert 1 <= r_lo <= r_hi <= len(s)
    assert np.sum(s[:r_lo] ** 2) >= lo * np.sum(s**2) - 1e-9
    r = choose_rank(s, n_in, n_out, budget=budget)
    assert r == 1 or r * (n_in + n_out) <= budget * n_in * n_out


# --- tensor train -------------------------------------------------------------------------


def test_tt_reconstruction_error_falls_as_rank_grows(trained: MLPStudent) -> None:
    w = trained.body[0].weight.detach().double().numpy().T  # (in x out) = (32 x 16)
    in_f, out_f = factorize(w.shape[0], 3), factorize(w.shape[1], 3)
    errors = [
        np.linalg.norm(tt_reconstruct(tt_svd(w, in_f, out_f, r)) - w) / np.linalg.norm(w)
        for r in (1, 2, 4, 8, 64)
    ]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(errors))
    assert errors[0] > 0.1
    assert errors[-1] < 1e-10


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 300), st.integers(1, 4))
def test_factorize_multiplies_back(n: int, d: int) -> None:
    factors = factorize(n, d)
    assert len(factors) == d
    assert int(np.prod(factors)) == n


def test_tt_layer_matches_its_dense_matrix_and_exports_standard_ops(
    trained: MLPStudent, ctx: CompressContext
) -> None:
    model = tt(fresh(trained), ctx, rank=3, finetune=False)
    assert isinstance(model.body[0], TTLinear)
    layer = model.body[0]
    h = torch.randn(7, layer.in_features)
    dense = torch.tensor(tt_reconstruct(layer.cores_tensor()), dtype=torch.float32)
    torch.testing.assert_close(layer(h), h @ dense + layer.bias, atol=1e-5, rtol=1e-4)
    graph = export_window_model(model, WINDOW)
    ops = {node.op_type for node in onnx.load_from_string(graph).graph.node}
    assert "MatMul" in ops
    assert not ops & {"Einsum", "ATen"}
    np.testing.assert_allclose(
        run_onnx(graph, ctx.x_valid), predict_torch(model, ctx.x_valid), atol=1e-5
    )
    assert onnx_parameter_count(graph) < onnx_parameter_count(export_window_model(trained, WINDOW))


# --- parameter sharing --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=300), st.integers(2, 32))
def test_kmeans_codebook_has_at_most_k_values(values: list[float], k: int) -> None:
    v = np.asarray(values)
    codebook, labels = kmeans_codebook(v, k)
    assert len(codebook) <= k
    assert labels.shape == v.shape
    assert np.all(np.diff(codebook) > 0)
    if len(np.unique(v)) <= k:
        np.testing.assert_array_equal(codebook[labels], v)


def test_clustering_leaves_at_most_k_values_and_shrinks_the_file(
    trained: MLPStudent, ctx: CompressContext
) -> None:
    k = 8
    model = cluster(fresh(trained), ctx, k=k)
    for _, layer in learned_linears(model):
        assert torch.unique(layer.weight).numel() <= k
    exported = export_window_model(model, WINDOW)
    packed = compact_onnx(exported)
    graph = onnx.load_from_string(packed).graph
    codes = [i for i in graph.initializer if i.data_type == TensorProto.UINT8]
    assert len(codes) == len(list(learned_linears(model)))
    assert len(packed) < len(compact_onnx(export_window_model(trained, WINDOW))) * 0.6
    np.testing.assert_allclose(
        run_onnx(packed, ctx.x_valid), predict_torch(model, ctx.x_valid), atol=1e-5
    )


# --- quantization -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quantize", "params"),
    [
        ("dynamic", quantize_dynamic, {}),
        ("static per tensor", quantize_static, {}),
        ("static per channel", quantize_static, {"per_channel": True}),
    ],
)
def test_quantized_outputs_stay_close_to_float(
    trained: MLPStudent, ctx: CompressContext, spx_samples: dict, name: str, quantize, params
) -> None:
    """On real held-out windows (2008 H2, far more volatile than the 2004-2007 calibration
    windows), int8 quantiles stay within 2% of the float quantiles' mean magnitude on average,
    no quantile moves by more than a tenth of its own window's 10%-90% band, and the pinball loss
    stays within 1%. The worst case is bounded per window because the error scales with the
    window's volatility, which a bound on the whole set's mean magnitude would ignore."""
    float_graph = export_window_model(trained, WINDOW)
    int8 = quantize(float_graph, ctx, **params)
    x, y = spx_samples["x_test"], spx_samples["y_test"]
    qf, qi = run_onnx(float_graph, x), run_onnx(int8, x)
    scale = np.abs(qf).mean()
    assert np.abs(qi - qf).mean() <= 0.02 * scale, name
    band = qf[..., -1:] - qf[..., :1]
    assert (np.abs(qi - qf) <= 0.10 * band).all(), name
    assert pinball(y, qi) <= 1.01 * pinball(y, qf)
    assert (np.diff(qi, axis=-1) >= 0).all()  # the head still cannot cross
    assert len(compact_onnx(int8)) < 0.8 * len(compact_onnx(float_graph))


def test_quantization_leaves_the_preprocessing_in_float(
    trained: MLPStudent, ctx: CompressContext
) -> None:
    graph = onnx.load_from_string(quantize_static(export_window_model(trained, WINDOW), ctx))
    inits = graph.graph.initializer
    int8 = [i.name for i in inits if i.data_type == TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8) == 3  # the three learned layers' weights
    ewma = [i for i in inits if "ewma" in i.name]
    assert ewma and ewma[0].data_type == TensorProto.FLOAT


def test_qat_exports_int8_weights_that_match_torch(
    trained: MLPStudent, ctx: CompressContext, spx_samples: dict
) -> None:
    model = qat(fresh(trained), ctx)
    graph = compact_onnx(export_window_model(model, WINDOW))
    inits = onnx.load_from_string(graph).graph.initializer
    assert sum(i.data_type == TensorProto.INT8 and len(i.dims) == 2 for i in inits) == 3
    assert not any(
        i.data_type == TensorProto.FLOAT and len(i.dims) == 2 and i.dims[0] > 5 for i in inits
    )
    x = spx_samples["x_test"]
    np.testing.assert_allclose(run_onnx(graph, x), predict_torch(model, x), atol=1e-3)
    # the stored weights are exactly the torch model's int8 grid
    for _, layer in ((n, m) for n, m in model.named_modules() if hasattr(m, "w_scale")):
        grid = layer.weight.detach() / layer.w_scale.reshape(-1, *[1] * (layer.per_channel))
        assert torch.allclose(grid, grid.round(), atol=1e-3)


# --- graph compaction ---------------------------------------------------------------------


def test_compaction_keeps_the_computation(trained: MLPStudent, ctx: CompressContext) -> None:
    graph = export_window_model(trained, WINDOW)
    small = compact_onnx(graph)
    assert len(small) < len(graph)
    np.testing.assert_array_equal(run_onnx(small, ctx.x_valid), run_onnx(graph, ctx.x_valid))
    model = onnx.load_from_string(small)
    assert [i.name for i in model.graph.input] == ["close"]
    assert [o.name for o in model.graph.output] == ["quantiles"]
    assert not any(n.op_type == "Constant" for n in model.graph.node)
    folded = [numpy_helper.to_array(i) for i in model.graph.initializer]
    assert len(folded) == len({(a.dtype.str, a.shape, a.tobytes()) for a in folded})


# --- chains and the search ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("chains", "tables", "message"),
    [
        ([["svd"]], {}, "must start with"),
        ([["distill", "nope"]], {}, "unknown step 'nope'"),
        ([["distill", "svd", "prune_structured"]], {}, "cannot follow"),
        ([["distill", "quantize_dynamic", "svd"]], {}, "before the onnx steps"),
        ([["distill", "qat", "quantize_static"]], {}, "quantize at most once"),
        ([["distill", "svd"]], {"svd": {"enrgy": 0.9}}, "compress.steps.svd"),
        ([["distill", "pc"]], {"pc": {"step": "quantize_sttic"}}, "unknown step"),
    ],
)
def test_bad_chains_fail_before_training(chains: list, tables: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        plan_chains(chains, tables)


def test_step_aliases_carry_their_parameters() -> None:
    plan = plan_chains(
        [["distill", "prune_structured", "q8pc"]],
        {
            "q8pc": {"step": "quantize_static", "per_channel": True},
            "prune_structured": {"keep": 0.25},
        },
    )
    labels = [(s.label, s.step.name, dict(s.params)) for s in plan[0]]
    assert labels == [
        ("distill", "distill", {}),
        ("prune_structured", "prune_structured", {"keep": 0.25}),
        ("q8pc", "quantize_static", {"per_channel": True}),
    ]


rows = st.lists(
    st.tuples(st.floats(0.5, 2.0), st.integers(1_000, 100_000), st.floats(1.0, 500.0)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(rows)
def test_choice_is_within_budget_and_smallest_fastest(candidates: list[tuple]) -> None:
    table = [
        {"chain": f"c{i}", "validation_score": s, "bytes": b, "latency_us_median": lat}
        for i, (s, b, lat) in enumerate(candidates)
    ]
    chosen, within = choose(table, limit=1.0)
    row = next(r for r in table if r["chain"] == chosen)
    eligible = [r for r in table if r["validation_score"] <= 1.0]
    assert within == bool(eligible)
    if eligible:
        assert row["validation_score"] <= 1.0
        cost = row["bytes"] * row["latency_us_median"]
        assert all(cost <= r["bytes"] * r["latency_us_median"] * (1 + 1e-9) for r in eligible)
    else:
        assert row["validation_score"] == min(r["validation_score"] for r in table)


# --- the search inside the price pipeline -------------------------------------------------


@pytest.fixture(scope="module")
def spx_search() -> dict:
    """The price pipeline's search on real S&P 500 windows, run twice: once as is and once
    with the test period poisoned (NaN closes and targets) before the search starts."""
    recipe = load_recipe(ROOT / "models" / "price" / "spx.toml").quickened()
    recipe = recipe.model_copy(
        update={
            "student": recipe.student.model_copy(update={"epochs": 15, "patience": 4}),
            "compress": CompressSection(
                chains=[["distill"], ["distill", "prune_structured", "quantize_dynamic"]],
                steps={"prune_structured": {"keep": 0.25}},
                finetune={"epochs": 4, "patience": 2},
                benchmark_runs=100,
                calibration_windows=256,
            ),
        }
    )
    data = load_price_data(recipe)
    torch.manual_seed(0)
    teacher = MLPStudent(64, [1, 5, 20], recipe.price.quantiles, data.train_vol, hidden=[64, 64])
    fit_quantile_model(
        teacher, (data.train.x, data.train.y), (data.valid.x, data.valid.y),
        recipe.price.quantiles, data.horizon_std,
        LoopSettings(epochs=6, patience=3, lr=3e-3, batch_size=256, seed=0),
    )  # fmt: skip
    graph = compact_onnx(export_window_model(teacher, 64))
    plan = plan_chains(recipe.compress.chains, recipe.compress.steps)
    clean, teacher_row = compress_student(data, teacher, graph, recipe, plan)
    nan = np.full_like(data.test.y, np.nan)
    poisoned_test = dataclasses.replace(data.test, x=np.full_like(data.test.x, np.nan), y=nan)
    poisoned, _ = compress_student(
        dataclasses.replace(data, test=poisoned_test), teacher, graph, recipe, plan
    )
    return {
        "clean": clean,
        "poisoned": poisoned,
        "teacher": teacher_row,
        "teacher_graph": graph,
        "data": data,
    }


def test_search_decides_on_validation_only(spx_search: dict) -> None:
    clean, poisoned = spx_search["clean"], spx_search["poisoned"]
    # Each run times its candidates afresh, and on a busy machine two near-equal costs may swap;
    # given the same timings, the poisoned run's rows must lead to the same choice.
    timed = [
        {**c.row, "latency_us_median": clean.candidates[key].row["latency_us_median"]}
        for key, c in poisoned.candidates.items()
    ]
    assert choose(timed, poisoned.limit)[0] == clean.chosen
    assert (
        list(poisoned.candidates)
        == list(clean.candidates)
        == [
            "distill",
            "distill+prune_structured",
            "distill+prune_structured+quantize_dynamic",
        ]
    )
    for key, candidate in clean.candidates.items():
        row = candidate.row
        assert "test" not in row  # nothing about the test period is known to the search
        assert row["validation_score"] == pytest.approx(
            poisoned.candidates[key].row["validation_score"], rel=1e-6
        )
    chosen = clean.candidates[clean.chosen].row
    if clean.within_budget:
        assert chosen["validation_score"] <= clean.budget * clean.reference
        eligible = [c.row for c in clean.candidates.values() if c.row["within_budget"]]
        cost = chosen["bytes"] * chosen["latency_us_median"]
        assert all(cost <= r["bytes"] * r["latency_us_median"] for r in eligible)
    else:
        best = min(c.row["validation_score"] for c in clean.candidates.values())
        assert chosen["validation_score"] == best


def test_search_rows_measure_every_step(spx_search: dict) -> None:
    clean = spx_search["clean"]
    rows = {key: c.row for key, c in clean.candidates.items()}
    pruned = rows["distill+prune_structured"]
    assert pruned["parent"] == "distill"
    assert pruned["details"]["hidden_after"] == [8, 8]
    assert pruned["parameters"] < rows["distill"]["parameters"] / 3
    assert pruned["effect_vs_parent"]["bytes"] < 0.5
    int8 = rows["distill+prune_structured+quantize_dynamic"]
    assert int8["bytes"] < pruned["bytes"]
    assert int8["parameters"] == pruned["parameters"]
    for row in rows.values():
        assert row["latency_us_p99"] >= row["latency_us_median"] > 0
        assert row["batch_rows_per_s"] > 0
        assert row["validation_ratio_vs_teacher"] == pytest.approx(
            row["validation_score"] / spx_search["teacher"]["validation_score"]
        )


def test_report_renders_the_search(spx_search: dict, tmp_path: Path) -> None:
    clean, data = spx_search["clean"], spx_search["data"]
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]

    def test_metrics(graph: bytes) -> dict:
        return evaluate_quantiles(data.test.y, run_onnx(graph, data.test.x), [1, 5, 20], levels)

    rows = [{**c.row, "test": test_metrics(c.graph)} for c in clean.candidates.values()]
    teacher = {**spx_search["teacher"], "test": test_metrics(spx_search["teacher_graph"])}
    report = {"name": "spx", "compression": {**clean.summary(), "rows": rows, "teacher": teacher}}
    table = compression_table(report["compression"])
    assert table.row_count == 1 + len(rows)
    for name, x_key in (("pareto_bytes.png", "bytes"), ("pareto_latency.png", "latency_us_median")):
        path = pareto_chart(report, tmp_path / name, x_key, x_key)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
