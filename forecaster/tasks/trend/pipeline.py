"""The trend task end to end: real closes -> Markov-switching regime teacher (train period only)
-> distilled MLP classifier -> ONNX (float and int8) -> metrics against the teacher and honest
baselines on ex-post regime labels -> signed bundle with report and charts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from device.manifest import TensorSpec
from forecaster.compress.distill import ClassifierDistillation, distill_classifier
from forecaster.compress.quantize import quantize_dynamic
from forecaster.compress.search import RULE, choose
from forecaster.data import (
    PriceSamples,
    SplitIndex,
    load_close_series,
    make_price_samples,
    split_index,
)
from forecaster.recipe import Recipe
from forecaster.tasks.trend.metrics import classification_metrics
from forecaster.tasks.trend.nets import MLPClassifier
from forecaster.tasks.trend.regimes import MarkovRegimeTeacher, RegimeFilter, percent_returns
from forecaster.tasks.trend.settings import (
    TrendSection,
    trend_section,
)
from forecaster.training.bundles import resolve_signing_key, write_bundle
from forecaster.training.export import (
    export_window_model,
    graph_footprint,
    parity_max_abs,
    run_onnx,
)
from forecaster.training.loops import FitResult, LoopSettings
from forecaster.training.nets import count_parameters
from forecaster.training.reports import (
    environment,
    report_head,
    sample_counts,
    sample_periods,
    series_source,
)

__all__ = [
    "TrendData",
    "TrendEvaluation",
    "TrendGraphs",
    "TrendLabels",
    "TrendStudent",
    "TrendTeacher",
    "build_manifest",
    "build_report",
    "distil_student",
    "evaluate_and_choose",
    "export_graphs",
    "fit_regime_teacher",
    "label_periods",
    "load_trend_data",
    "train_trend",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrendData:
    """Windows of raw closes per period and the percent returns the regime model sees.

    `returns[i]` is the return into close position `split.start + i + 1`."""

    close: pd.Series
    split: SplitIndex
    train: PriceSamples
    valid: PriceSamples
    test: PriceSamples
    returns: np.ndarray
    train_vol: float

    def rows(self, samples: PriceSamples) -> np.ndarray:
        """Positions in `returns` (and in every per-return probability array) of the samples."""
        return samples.origins - self.split.start - 1

    def period_returns(self, period_end: int) -> np.ndarray:
        """Returns from the start up to and including close position `period_end`."""
        return self.returns[: period_end - self.split.start]


def load_trend_data(recipe: Recipe, section: TrendSection) -> TrendData:
    csv = recipe.csv_path() if recipe.data.source == "csv" else None
    close = load_close_series(recipe.data, csv)
    w = section.window
    idx = split_index(pd.DatetimeIndex(close.index), recipe.split, w, 0)
    # horizons [0]: trend samples carry no future target, only the window ending at each origin
    train = make_price_samples(close, idx.start + w - 1, idx.train_end, w, [0])
    valid = make_price_samples(close, idx.train_end + 1, idx.valid_end, w, [0])
    test = make_price_samples(close, idx.valid_end + 1, idx.end, w, [0])
    returns = percent_returns(close.to_numpy(dtype=np.float64)[idx.start : idx.end + 1])
    train_returns = returns[: idx.train_end - idx.start]
    return TrendData(
        close=close,
        split=idx,
        train=train,
        valid=valid,
        test=test,
        returns=returns,
        train_vol=float(train_returns.std() / 100.0),
    )


@dataclass(frozen=True)
class TrendLabels:
    """Per period: real-time teacher probabilities, ex-post probabilities and labels, and the
    persistence baseline, all at the period's sample origins."""

    teacher: dict[str, np.ndarray]
    expost: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    persistence: dict[str, np.ndarray]


def label_periods(data: TrendData, teacher: MarkovRegimeTeacher, lag: int) -> TrendLabels:
    """Real-time probabilities filter the whole series with the fixed train parameters (row t
    uses returns up to t only). Ex-post labels smooth each period with data up to that
    period's own end, so train labels never see validation or test returns."""
    filtered = teacher.filtered(data.returns)
    persistence = teacher.fixed_lag(data.returns, lag)
    periods = {
        "train": (data.train, data.split.train_end),
        "validation": (data.valid, data.split.valid_end),
        "test": (data.test, data.split.end),
    }
    out: dict[str, dict[str, np.ndarray]] = {"teacher": {}, "expost": {}, "persistence": {}}
    labels: dict[str, np.ndarray] = {}
    for name, (samples, end) in periods.items():
        rows = data.rows(samples)
        smoothed = teacher.smoothed(data.period_returns(end))[rows]
        out["teacher"][name] = filtered[rows].astype(np.float32)
        out["expost"][name] = smoothed.astype(np.float32)
        out["persistence"][name] = persistence[rows].astype(np.float32)
        labels[name] = smoothed.argmax(axis=1)
    return TrendLabels(labels=labels, **out)


def _graph_row(
    kind: str, params: int, onnx_model: bytes, bench_x: np.ndarray, runs: int
) -> dict[str, Any]:
    return {"kind": kind, "parameters": params, **graph_footprint(onnx_model, bench_x, runs)}


def _choose_student(models: dict[str, dict[str, Any]], budget: float) -> tuple[str, bool]:
    """The compression search's rule (`compress.search.RULE`) on validation log loss against
    the ex-post labels, the teacher's as reference; the test period plays no part."""
    rows = [
        {
            "chain": name,
            "validation_score": models[name]["validation"]["log_loss"],
            "bytes": models[name]["bytes"],
            "latency_us_median": models[name]["latency_us_median"],
        }
        for name in ("student_float", "student_int8")
    ]
    return choose(rows, budget * models["teacher"]["validation"]["log_loss"])


DEFINITIONS = {
    "labels": (
        "ex-post regime labels: argmax of the Kim-smoothed probabilities of the teacher with "
        "its fixed train-period parameters, each period smoothed with data up to that period's "
        "end; they use returns after each day, so no real-time model can reproduce them exactly"
    ),
    "teacher": (
        "real-time teacher: Hamilton-filtered probabilities Pr(regime_t | returns up to t) over "
        "the whole history with the fixed train-period parameters"
    ),
    "teacher_window": (
        "the same filter run on the model's input window alone, started from the long-run "
        "regime shares (teacher.onnx): the teacher restricted to what a device sees"
    ),
    "majority": "train-period ex-post label frequencies as constant probabilities",
    "persistence": (
        "Pr(regime_(t-{lag}) | returns up to t): the regime of {lag} days ago as known today "
        "(fixed-lag smoother, real-time), carried forward to today"
    ),
}


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Tiny models train fastest on one thread; on a shared machine, several spinning
    intra-op threads made one distillation run twenty times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TrendTeacher:
    """The fitted regime model, the train returns it saw, its regimes described, and the same
    filter restricted to one input window (what teacher.onnx computes)."""

    model: MarkovRegimeTeacher
    fit_returns: np.ndarray
    regimes: dict[str, Any]
    window: RegimeFilter


@dataclass(frozen=True)
class TrendStudent:
    model: MLPClassifier
    fit: FitResult


@dataclass(frozen=True)
class TrendGraphs:
    """The exported graphs by model name (teacher window, float and int8 student), and the
    torch/ONNX parity of each."""

    graphs: dict[str, bytes]
    parity: dict[str, float]


@dataclass(frozen=True)
class TrendEvaluation:
    """Every model's metrics per period, the probabilities behind them, the majority
    baseline's shares, and the choice (made on validation) with its headline."""

    models: dict[str, dict[str, Any]]
    predictions: dict[str, dict[str, np.ndarray]]
    train_share: np.ndarray
    chosen: str
    headline: dict[str, Any]


def fit_regime_teacher(
    recipe: Recipe, section: TrendSection, data: TrendData, console: Console
) -> TrendTeacher:
    """Maximum likelihood on the train period's returns (the last `fit_last` in quick runs)."""
    t, classes = section.teacher, section.classes
    train_returns = data.period_returns(data.split.train_end)
    fit_returns = train_returns[-t.fit_last :] if t.fit_last else train_returns
    console.print(
        f"teacher: {section.k_regimes}-regime Markov switching on {len(fit_returns)} train "
        f"returns, {t.starts} start(s) ..."
    )
    teacher = MarkovRegimeTeacher(
        section.k_regimes,
        switching_variance=t.switching_variance,
        order_by=section.order_by,
        starts=t.starts,
        em_iter=t.em_iter,
        maxiter=t.maxiter,
        seed=recipe.seed,
    ).fit(fit_returns)
    regimes = teacher.params.describe(classes)
    console.print(
        f"  log-likelihood {teacher.llf_:.1f}; "
        + ", ".join(
            f"{c}: {r['annualized_mean_pct']:+.0f}%/yr, vol {r['annualized_vol_pct']:.0f}%"
            for c, r in regimes.items()
        )
    )
    return TrendTeacher(teacher, fit_returns, regimes, RegimeFilter(teacher.params, section.window))


def distil_student(
    recipe: Recipe,
    section: TrendSection,
    data: TrendData,
    teacher: TrendTeacher,
    labels: TrendLabels,
    console: Console,
) -> TrendStudent:
    """Hinton distillation of the window filter into the MLP classifier, early stopping on
    validation cross-entropy against the ex-post labels."""
    s = section.student
    student = MLPClassifier(section.window, len(section.classes), data.train_vol, hidden=s.hidden)
    console.print(
        f"student: MLP {s.hidden} ({count_parameters(student):,} params), distilled at "
        f"T={s.temperature:g}, weight {s.distill_weight:g} ..."
    )
    fit = distill_classifier(
        student,
        teacher.window,
        data.train.x,
        labels.labels["train"],
        data.valid.x,
        labels.labels["validation"],
        ClassifierDistillation(
            s.distill_weight, s.temperature, "proba", s.augment_copies, s.augment_noise
        ),
        LoopSettings(s.epochs, s.patience, s.lr, s.batch_size, recipe.seed),
    )
    console.print(
        f"  {fit.epochs} epochs, best {fit.best_epoch} "
        f"(validation cross-entropy {fit.best_valid:.4f})"
    )
    return TrendStudent(student, fit)


def export_graphs(
    section: TrendSection, data: TrendData, teacher: TrendTeacher, student: TrendStudent
) -> TrendGraphs:
    """ONNX of the window filter and the student, the student also int8-quantized."""
    teacher_onnx = export_window_model(teacher.window, section.window, "close", "proba")
    student_onnx = export_window_model(student.model, section.window, "close", "proba")
    student_int8 = quantize_dynamic(student_onnx)
    x = data.test.x
    parity = {
        "teacher_window_max_abs": parity_max_abs(teacher.window, teacher_onnx, x),
        "student_max_abs": parity_max_abs(student.model, student_onnx, x),
        "student_int8_vs_float_max_abs": float(
            np.abs(run_onnx(student_int8, x) - run_onnx(student_onnx, x)).max()
        ),
    }
    graphs = {
        "teacher_window": teacher_onnx,
        "student_float": student_onnx,
        "student_int8": student_int8,
    }
    return TrendGraphs(graphs, parity)


def _model_rows(
    teacher: TrendTeacher, student: TrendStudent, graphs: TrendGraphs, x: np.ndarray, runs: int
) -> dict[str, dict[str, Any]]:
    """Each model's kind, size and speed (benchmarked on the test windows)."""
    n_teacher, n_student = len(teacher.model.sm_params_), count_parameters(student.model)
    g = graphs.graphs
    return {
        "teacher": {"kind": "markov-switching filter, full history", "parameters": n_teacher},
        "teacher_window": _graph_row(
            "markov-switching filter, window", n_teacher, g["teacher_window"], x, runs
        ),
        "student_float": _graph_row("mlp", n_student, g["student_float"], x, runs),
        "student_int8": _graph_row("mlp+int8-dynamic", n_student, g["student_int8"], x, runs),
        "majority": {"kind": "baseline"},
        "persistence": {"kind": "baseline"},
    }


def _headline(
    models: dict[str, dict[str, Any]], chosen: str, within_budget: bool, budget: float
) -> dict[str, Any]:
    chosen_row, window_row = models[chosen], models["teacher_window"]
    test = {name: row["test"] for name, row in models.items()}
    return {
        "chosen": chosen,
        "within_budget": within_budget,
        "budget": budget,
        "rule": RULE,
        "size_ratio": window_row["bytes"] / chosen_row["bytes"],
        "speed_ratio": window_row["latency_us_median"] / chosen_row["latency_us_median"],
        "test_agreement": test[chosen]["agreement"],
        "test_accuracy": test[chosen]["accuracy"],
        "teacher_test_accuracy": test["teacher"]["accuracy"],
        "persistence_test_accuracy": test["persistence"]["accuracy"],
        "majority_test_accuracy": test["majority"]["accuracy"],
        "test_log_loss_ratio_vs_teacher": test[chosen]["log_loss"] / test["teacher"]["log_loss"],
    }


def evaluate_and_choose(
    recipe: Recipe,
    section: TrendSection,
    data: TrendData,
    stages: tuple[TrendTeacher, TrendStudent, TrendGraphs],
    labels: TrendLabels,
) -> TrendEvaluation:
    """Metrics of every model and baseline on validation and test; the student is chosen on
    validation (`_choose_student`), the test scores only report."""
    teacher, student, graphs = stages
    classes = section.classes
    models = _model_rows(teacher, student, graphs, data.test.x, recipe.compress.benchmark_runs)
    train_labels = labels.labels["train"]
    train_share = np.bincount(train_labels, minlength=len(classes)) / len(train_labels)
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for period, samples in (("validation", data.valid), ("test", data.test)):
        predictions[period] = {
            "teacher": labels.teacher[period],
            **{name: run_onnx(graph, samples.x) for name, graph in graphs.graphs.items()},
            "majority": np.tile(train_share, (len(samples), 1)),
            "persistence": labels.persistence[period],
        }
        for name, proba in predictions[period].items():
            models[name][period] = classification_metrics(
                proba, labels.labels[period], labels.teacher[period], classes
            )
    budget = recipe.compress.budget
    chosen, within_budget = _choose_student(models, budget)
    headline = _headline(models, chosen, within_budget, budget)
    return TrendEvaluation(models, predictions, train_share, chosen, headline)


def build_report(
    recipe: Recipe,
    quick: bool,
    section: TrendSection,
    data: TrendData,
    stages: tuple[TrendTeacher, TrendStudent, TrendGraphs],
    labels: TrendLabels,
    evaluation: TrendEvaluation,
) -> dict[str, Any]:
    """report.json: recipe, definitions, teacher, baselines, training, parity, metrics,
    headline and the test period's probabilities."""
    teacher, student, graphs = stages
    classes, idx, ev = section.classes, data.close.index, evaluation
    return {
        **report_head("trend", recipe, quick),
        "classes": classes,
        "recipe": recipe.model_dump(mode="json", exclude={"source_path"}),
        "trend": section.model_dump(mode="json"),
        "environment": environment(),
        "samples": sample_counts(data.train, data.valid, data.test),
        "definitions": {
            **DEFINITIONS,
            "persistence": DEFINITIONS["persistence"].format(lag=section.persistence_lag),
        },
        "teacher": {
            **teacher.model.summary(classes),
            "fit_period": [
                idx[data.split.train_end - len(teacher.fit_returns)].date().isoformat(),
                idx[data.split.train_end].date().isoformat(),
            ],
        },
        "baselines": {
            "majority": dict(zip(classes, ev.train_share.tolist(), strict=True)),
            "persistence_lag": section.persistence_lag,
        },
        "training": {"student": student.fit.__dict__},
        "parity": graphs.parity,
        "models": ev.models,
        "headline": ev.headline,
        "test_forecasts": {
            "dates": [d.date().isoformat() for d in data.test.dates],
            "close": data.close.iloc[data.test.origins].round(4).tolist(),
            "proba": np.round(ev.predictions["test"][ev.chosen], 6).tolist(),
            "teacher": np.round(labels.teacher["test"], 6).tolist(),
            "expost": np.round(labels.expost["test"], 6).tolist(),
        },
    }


def build_manifest(
    recipe: Recipe,
    section: TrendSection,
    data: TrendData,
    stages: tuple[TrendTeacher, TrendStudent, TrendGraphs],
    evaluation: TrendEvaluation,
) -> dict[str, Any]:
    """manifest.json: the graph's interface, data, periods, compression steps, key metrics."""
    teacher, student, _ = stages
    chosen = evaluation.chosen
    test = {name: row["test"] for name, row in evaluation.models.items()}
    steps = _compression_steps(chosen, section, student.fit.best_epoch, teacher.regimes)
    return {
        "task": "trend",
        "name": recipe.model.name,
        "inputs": [TensorSpec(name="close", shape=["batch", section.window])],
        "outputs": [TensorSpec(name="proba", shape=["batch", len(section.classes)])],
        "window": section.window,
        "classes": section.classes,
        "data": series_source(recipe, data.close),
        "periods": sample_periods(data.train, data.valid, data.test),
        "compression": steps,
        "metrics": {
            "test_accuracy": test[chosen]["accuracy"],
            "test_brier": test[chosen]["brier"],
            "test_log_loss": test[chosen]["log_loss"],
            "test_agreement": test[chosen]["agreement"],
            "teacher_test_accuracy": test["teacher"]["accuracy"],
            "bytes": evaluation.models[chosen]["bytes"],
            "latency_us_median": evaluation.models[chosen]["latency_us_median"],
        },
        "created_at": datetime.now(UTC),
    }


def train_trend(
    recipe: Recipe, registry: Path, key: Path | None, quick: bool, console: Console | None = None
) -> Path:
    """Fit the regime teacher, distil, export, evaluate, sign and write one trend bundle."""
    with _torch_threads(1):
        return _train_trend(recipe, registry, key, quick, console or Console(stderr=True))


def _train_trend(
    recipe: Recipe, registry: Path, key: Path | None, quick: bool, console: Console
) -> Path:
    section = trend_section(recipe, quick)
    torch.manual_seed(recipe.seed)
    private_key, key_note = resolve_signing_key(key, registry)
    data = load_trend_data(recipe, section)
    console.print(
        f"[bold]{recipe.model.name}[/]: {len(data.close)} closes of {data.close.name}; "
        f"samples train {len(data.train)}, validation {len(data.valid)}, test {len(data.test)}"
    )
    teacher = fit_regime_teacher(recipe, section, data, console)
    labels = label_periods(data, teacher.model, section.persistence_lag)
    student = distil_student(recipe, section, data, teacher, labels, console)
    console.print("exporting to ONNX, quantizing, evaluating and benchmarking ...")
    graphs = export_graphs(section, data, teacher, student)
    stages = (teacher, student, graphs)
    evaluation = evaluate_and_choose(recipe, section, data, stages, labels)
    report = build_report(recipe, quick, section, data, stages, labels, evaluation)
    manifest = build_manifest(recipe, section, data, stages, evaluation)
    shipped, teacher_graph = graphs.graphs[evaluation.chosen], graphs.graphs["teacher_window"]
    path = write_bundle(registry, manifest, shipped, private_key, report, teacher_graph)
    from forecaster.tasks.trend.report import write_trend_plots

    for png in write_trend_plots(path, report):
        logger.info("wrote %s", png)
    console.print(key_note)
    return path


def _compression_steps(
    chosen: str, section: TrendSection, best_epoch: int, regimes: dict[str, Any]
) -> list[dict[str, Any]]:
    s = section.student
    steps: list[dict[str, Any]] = [
        {
            "name": "distill",
            "params": {
                "teacher": f"markov_regression(k={section.k_regimes}, "
                f"switching_variance={section.teacher.switching_variance})",
                "regimes": {
                    c: {"mean_pct": round(r["mean_pct"], 4), "vol_pct": round(r["vol_pct"], 4)}
                    for c, r in regimes.items()
                },
                "weight": s.distill_weight,
                "temperature": s.temperature,
                "augment_copies": s.augment_copies,
                "best_epoch": best_epoch,
            },
        },
    ]
    if chosen == "student_int8":
        steps.append(
            {"name": "quantize_dynamic", "params": {"weights": "int8", "runtime": "onnxruntime"}}
        )
    return steps
