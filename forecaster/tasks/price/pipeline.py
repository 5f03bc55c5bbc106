"""The price task end to end: real closes -> LSTM teacher -> compression search over the
recipe's chains (distillation, pruning, factorization, sharing, quantization) -> metrics
against honest baselines -> signed bundle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from device.manifest import TensorSpec
from forecaster.compress import (
    Candidate,
    CompressContext,
    FineTune,
    SearchResult,
    StepSpec,
    average_graphs,
    chain_key,
    compact_onnx,
    measure_graph,
    plan_chains,
    run_search,
)
from forecaster.data import (
    PriceSamples,
    load_close_series,
    period_samples,
    pool_samples,
    split_index,
)
from forecaster.errors import DataError, TrainError
from forecaster.recipe import Recipe, SeriesSection, SplitSection
from forecaster.tasks.price import baselines, metrics
from forecaster.tasks.price.nets import LSTMTeacher, MLPStudent
from forecaster.training.bundles import resolve_signing_key, write_bundle
from forecaster.training.export import export_window_model, run_onnx
from forecaster.training.loops import FitResult, LoopSettings, fit_quantile_model, predict_torch
from forecaster.training.nets import count_parameters
from forecaster.training.reports import (
    environment,
    report_head,
    sample_counts,
    sample_periods,
    series_source,
)

__all__ = [
    "Compression",
    "PriceData",
    "PriceEvaluation",
    "SeriesData",
    "TeacherFit",
    "build_manifest",
    "build_report",
    "compress_student",
    "compression_context",
    "evaluate_choice",
    "evaluate_quantiles",
    "fit_teacher",
    "load_price_data",
    "search_students",
    "train_price",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesData:
    """One close series of the recipe, split into its train / validation / test samples."""

    spec: SeriesSection
    close: pd.Series
    train: PriceSamples
    valid: PriceSamples
    test: PriceSamples
    train_end: int

    @property
    def symbol(self) -> str:
        return str(self.close.name)


@dataclass(frozen=True)
class PriceData:
    """Every series of the recipe and their pooled samples (what teacher and students train
    and early-stop on), with train-only scales fitted on the pooled train period."""

    series: tuple[SeriesData, ...]
    train: PriceSamples
    valid: PriceSamples
    test: PriceSamples
    train_vol: float
    horizon_std: np.ndarray

    @property
    def close(self) -> pd.Series:
        """The first series' closes (the only one for a one-series recipe)."""
        return self.series[0].close

    @property
    def train_end(self) -> int:
        return self.series[0].train_end


def _load_series(recipe: Recipe, spec: SeriesSection, split: SplitSection) -> SeriesData:
    assert recipe.price is not None
    p = recipe.price
    close = load_close_series(spec, recipe.csv_path(spec) if spec.source == "csv" else None)
    max_h = max(p.horizons)
    if len(close) < p.window + max_h + 3:
        raise TrainError(
            f"{close.name}: the series has {len(close)} rows; window {p.window} plus horizon "
            f"{max_h} needs more; use a longer series or a smaller window"
        )
    try:
        idx = split_index(pd.DatetimeIndex(close.index), split, p.window, max_h)
    except DataError as exc:
        raise DataError(f"{close.name}: {exc}") from exc
    train, valid, test = period_samples(close, idx, p.window, p.horizons)
    return SeriesData(spec, close, train, valid, test, idx.train_end)


def load_price_data(recipe: Recipe) -> PriceData:
    """Load and split every series; pool their samples. The volatility scale is the std of
    all series' pooled train returns; horizon stds are those of the pooled train targets."""
    series = tuple(_load_series(recipe, spec, split) for spec, split in recipe.series_splits())
    returns = [
        np.diff(np.log(s.close.to_numpy(dtype=np.float64)[: s.train_end + 1])) for s in series
    ]
    train = pool_samples([s.train for s in series])
    return PriceData(
        series=series,
        train=train,
        valid=pool_samples([s.valid for s in series]),
        test=pool_samples([s.test for s in series]),
        train_vol=float(np.concatenate(returns).std()),
        horizon_std=train.y.std(axis=0).astype(np.float64),
    )


def evaluate_quantiles(
    y: np.ndarray, q: np.ndarray, horizons: list[int], levels: list[float]
) -> dict[str, Any]:
    return metrics.price_metrics(y, q, horizons, levels)


def _baseline_forecasts(
    series: SeriesData, samples: PriceSamples, horizons: list[int], levels: list[float]
) -> dict[str, np.ndarray]:
    """Each baseline fitted on this series' own train period, forecasting at `samples`."""
    log_close = np.log(series.close.to_numpy(dtype=np.float64))
    return baselines.baseline_forecasts(
        log_close, samples.origins, horizons, levels, series.train_end
    )


def compression_context(
    data: PriceData, teacher: torch.nn.Module, recipe: Recipe
) -> CompressContext:
    """The compression steps' view of the data: the train and validation periods only."""
    assert recipe.price is not None
    s, f = recipe.student, recipe.compress.finetune
    return CompressContext(
        x_train=data.train.x,
        y_train=data.train.y,
        x_valid=data.valid.x,
        y_valid=data.valid.y,
        horizons=recipe.price.horizons,
        levels=recipe.price.quantiles,
        horizon_std=data.horizon_std,
        window=recipe.price.window,
        teacher=teacher,
        seed=recipe.seed,
        train=FineTune(s.epochs, s.patience, s.lr, s.batch_size),
        finetune=FineTune(f.epochs, f.patience, f.lr, f.batch_size),
        distill_weight=s.distill_weight,
        augment_copies=s.augment_copies,
        augment_noise=s.augment_noise,
        calibration_windows=recipe.compress.calibration_windows,
    )


def compress_student(
    data: PriceData,
    teacher: torch.nn.Module,
    teacher_graph: bytes,
    recipe: Recipe,
    plan: list[list[StepSpec]],
    on_candidate: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[SearchResult, dict[str, Any]]:
    """Measure the teacher, then run the compression search from an untrained student of the
    recipe's architecture. Every decision uses the train and validation periods only: the
    test period is not read here. Returns the search and the teacher's measurements."""
    runs = recipe.compress.benchmark_runs
    ctx = compression_context(data, teacher, recipe)
    teacher_row = measure_graph(teacher_graph, ctx, runs)
    search = run_search(
        _untrained_student(recipe, data),
        ctx,
        plan,
        recipe.compress.budget,
        teacher_row["validation_score"],
        runs,
        on_candidate,
    )
    return search, teacher_row


def _untrained_student(recipe: Recipe, data: PriceData) -> MLPStudent:
    """The recipe's student architecture, initialised from the recipe's seed."""
    assert recipe.price is not None
    p = recipe.price
    torch.manual_seed(recipe.seed)
    return MLPStudent(
        p.window,
        p.horizons,
        p.quantiles,
        data.train_vol,
        hidden=recipe.student.hidden,
        level=p.vol_level,
    )


def train_members(
    recipe: Recipe,
    data: PriceData,
    teacher: torch.nn.Module,
    plan: list[list[StepSpec]],
    search: SearchResult,
) -> list[bytes]:
    """The chosen chain run again from seeds recipe.seed + 1, ... (`[student] members` - 1
    more students, distilled from the same teacher), each member's finished graph."""
    (chain,) = [c for c in plan if chain_key([s.label for s in c]) == search.chosen]
    graphs = []
    for k in range(1, recipe.student.members):
        member = recipe.model_copy(update={"seed": recipe.seed + k})
        ctx = compression_context(data, teacher, member)
        again = run_search(
            _untrained_student(member, data),
            ctx,
            [chain],
            search.budget,
            search.reference,
            recipe.compress.benchmark_runs,
        )
        # the whole chain, even where this member's own search would stop at a shorter prefix
        graphs.append(again.candidates[search.chosen].graph)
    return graphs


def _print_candidate(console: Console, row: dict[str, Any]) -> None:
    over = "" if row["within_budget"] else " [red](over budget)[/]"
    console.print(
        f"  {row['chain']}: {row['bytes']:,} B, {row['latency_us_median']:.1f} µs, "
        f"validation {row['validation_ratio_vs_teacher']:.4f}x teacher{over}",
        highlight=False,
    )


_SIZE_SPEED = (
    "parameters",
    "onnx_weights",
    "bytes",
    "latency_us_median",
    "latency_us_p99",
    "batch_rows_per_s",
)


def _torch_ancestor(search: SearchResult) -> Candidate:
    """The chosen chain's last torch state: what its onnx steps (quantization) started from."""
    candidate = search.candidates[search.chosen]
    while candidate.model is None:
        candidate = search.candidates[candidate.row["parent"]]
    return candidate


def _manifest_steps(compression: Compression) -> list[dict[str, Any]]:
    """The chosen chain's steps in order, with their parameters and what each decided, and the
    averaging of the members where there are several."""
    search = compression.search
    labels = search.chosen.split("+")
    steps = []
    for i in range(len(labels)):
        c = search.candidates["+".join(labels[: i + 1])]
        params: dict[str, Any] = {**c.row["params"], **c.row["details"]}
        if c.spec.label != c.spec.step.name:
            params["label"] = c.spec.label
        if c.row["training"]:
            params["best_epoch"] = c.row["training"]["best_epoch"]
        steps.append({"name": c.spec.step.name, "params": params})
    row = search.candidates[search.chosen].row
    steps.append(
        {
            "name": "compact",
            "params": {"bytes_exported": row["bytes_exported"], "bytes": row["bytes"]},
        }
    )
    if compression.members > 1:
        steps.append(
            {
                "name": "average",
                "params": {"members": compression.members, "bytes": compression.measured["bytes"]},
            }
        )
    return steps


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


@dataclass(frozen=True)
class TeacherFit:
    """The trained LSTM teacher, its fit, its raw export and its compacted (shipped) graph."""

    model: LSTMTeacher
    fit: FitResult
    raw_graph: bytes
    graph: bytes


@dataclass(frozen=True)
class Compression:
    """The compression search (chosen chain included), the teacher's own measurements and the
    shipped graph: the chosen student, or the mean of it and the other members."""

    search: SearchResult
    teacher_measured: dict[str, Any]
    graph: bytes
    # the shipped graph's size, speed and validation metrics (the chosen row's for one member)
    measured: dict[str, Any]
    members: int = 1

    @property
    def chosen(self) -> Candidate:
        return self.search.candidates[self.search.chosen]

    @property
    def chosen_name(self) -> str:
        return f"student_{self.search.chosen}"


@dataclass(frozen=True)
class PriceEvaluation:
    """Test-period scores (computed once, after the choice) for the teacher, the shipped
    student and the baselines, on the pool and on every series; torch/ONNX parity, and the
    headline ratios (on the pool)."""

    models: dict[str, dict[str, Any]]
    parity: dict[str, float]
    headline: dict[str, Any]
    # series symbol -> model -> {"validation": metrics, "test": metrics}; `models` is the pool
    per_series: dict[str, dict[str, dict[str, Any]]]

    @property
    def student_row(self) -> dict[str, Any]:
        return self.models[self.headline["chosen"]]


def _progress_columns() -> tuple[Any, ...]:
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("valid {task.fields[valid]}"),
        TimeElapsedColumn(),
    )


def fit_teacher(recipe: Recipe, data: PriceData, console: Console) -> TeacherFit:
    """Train the LSTM teacher on the train period (early stopping on validation), export it
    and give it the same finishing pass as every student, so that ratios compare like with
    like."""
    assert recipe.price is not None
    p, t = recipe.price, recipe.teacher
    teacher = LSTMTeacher(
        p.window,
        p.horizons,
        p.quantiles,
        data.train_vol,
        hidden=t.hidden,
        layers=t.layers,
        dropout=t.dropout,
        level=p.vol_level,
    )
    with Progress(*_progress_columns(), console=console, transient=False) as progress:
        task = progress.add_task(
            f"teacher LSTM ({count_parameters(teacher):,} params)", total=t.epochs, valid="-"
        )
        fit = fit_quantile_model(
            teacher,
            (data.train.x, data.train.y),
            (data.valid.x, data.valid.y),
            p.quantiles,
            data.horizon_std,
            LoopSettings(t.epochs, t.patience, t.lr, t.batch_size, recipe.seed),
            progress=lambda e, v: progress.update(task, completed=e, valid=f"{v:.4f}"),
        )
        progress.update(task, total=fit.epochs)
    raw = export_window_model(teacher, p.window)
    return TeacherFit(teacher, fit, raw, compact_onnx(raw))


def search_students(
    recipe: Recipe,
    data: PriceData,
    teacher: TeacherFit,
    plan: list[list[StepSpec]],
    console: Console,
) -> Compression:
    """Run the compression search and choose on validation (train and validation only)."""
    console.print(
        f"compression search over {len(plan)} chains; budget: validation pinball loss <= "
        f"{recipe.compress.budget:g}x the teacher's"
    )
    search, measured = compress_student(
        data, teacher.model, teacher.graph, recipe, plan, lambda row: _print_candidate(console, row)
    )
    if not search.within_budget:
        console.print(
            f"[yellow]no chain stayed within {recipe.compress.budget:g}x the teacher's "
            f"validation loss; shipping the best on validation[/]"
        )
    chosen = search.candidates[search.chosen]
    console.print(f"chosen: [bold]{search.chosen}[/] ({chosen.row['bytes']:,} B)")
    members = recipe.student.members
    if members == 1:
        return Compression(search, measured, chosen.graph, chosen.row)
    console.print(f"training {members - 1} more students with {search.chosen} to average")
    others = train_members(recipe, data, teacher.model, plan, search)
    graph = average_graphs([chosen.graph, *others])
    ctx = compression_context(data, teacher.model, recipe)
    row = measure_graph(graph, ctx, recipe.compress.benchmark_runs)
    row["parameters"] = members * chosen.row["parameters"]
    console.print(
        f"mean of {members}: {row['bytes']:,} B, {row['latency_us_median']:.1f} µs, validation "
        f"{row['validation_score'] / search.reference:.4f}x teacher",
        highlight=False,
    )
    return Compression(search, measured, graph, row, members)


def _parity(data: PriceData, teacher: TeacherFit, compression: Compression) -> dict[str, float]:
    search, x_test = compression.search, data.test.x
    first = search.candidates[search.chosen.split("+")[0]]
    ancestor = _torch_ancestor(search)
    assert first.model is not None and ancestor.model is not None
    return {
        "teacher_max_abs": _max_abs(
            predict_torch(teacher.model, x_test), run_onnx(teacher.graph, x_test)
        ),
        "student_max_abs": _max_abs(
            predict_torch(first.model, x_test), run_onnx(first.graph, x_test)
        ),
        # quantization error of the shipped graph against the torch model it came from
        "chosen_vs_torch_max_abs": _max_abs(
            predict_torch(ancestor.model, x_test), run_onnx(compression.chosen.graph, x_test)
        ),
        # the shipped graph against the first member's (0 for one member): what averaging moved
        "shipped_vs_chosen_max_abs": _max_abs(
            run_onnx(compression.chosen.graph, x_test), run_onnx(compression.graph, x_test)
        ),
    }


def evaluate_choice(
    recipe: Recipe, data: PriceData, teacher: TeacherFit, compression: Compression
) -> PriceEvaluation:
    """The choice is made. Now, and only now, the test period is scored, for the report."""
    assert recipe.price is not None
    horizons, levels = recipe.price.horizons, recipe.price.quantiles

    def evaluate(y: np.ndarray, q: np.ndarray) -> dict[str, Any]:
        return evaluate_quantiles(y, q, horizons, levels)

    search, measured = compression.search, compression.teacher_measured
    search.score_split("test", data.test.x, data.test.y, evaluate)
    shipped = compression.measured
    teacher_row = {
        "kind": "lstm",
        "parameters": count_parameters(teacher.model),
        "bytes_exported": len(teacher.raw_graph),
        **{k: measured[k] for k in _SIZE_SPEED if k in measured},
        "validation": measured["validation"],
        "test": evaluate(data.test.y, run_onnx(teacher.graph, data.test.x)),
    }
    mean_of = f", mean of {compression.members}" if compression.members > 1 else ""
    student_row = {
        "kind": f"mlp ({search.chosen}{mean_of})",
        "members": compression.members,
        **{k: shipped[k] for k in _SIZE_SPEED},
        "validation": shipped["validation"],
        "test": evaluate(data.test.y, run_onnx(compression.graph, data.test.x)),
    }
    models: dict[str, dict[str, Any]] = {
        "teacher": teacher_row,
        compression.chosen_name: student_row,
    }
    graphs = {"teacher": teacher.graph, compression.chosen_name: compression.graph}
    pooled_baselines, per_series = _score_series(data, graphs, evaluate, horizons, levels)
    models |= pooled_baselines
    student_test = student_row["test"]["pinball"]["overall"]
    headline = {
        "chosen": compression.chosen_name,
        "chain": search.chosen,
        "within_budget": search.within_budget,
        "size_ratio": teacher_row["bytes"] / student_row["bytes"],
        "speed_ratio": teacher_row["latency_us_median"] / student_row["latency_us_median"],
        "test_pinball_ratio_vs_teacher": student_test / teacher_row["test"]["pinball"]["overall"],
        "test_pinball_ratio_vs_historical": student_test
        / models["historical_quantiles"]["test"]["pinball"]["overall"],
    }
    return PriceEvaluation(models, _parity(data, teacher, compression), headline, per_series)


def _score_series(
    data: PriceData,
    graphs: dict[str, bytes],
    evaluate: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
    horizons: list[int],
    levels: list[float],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
    """Every graph and baseline on every series' validation and test samples, and the
    baselines on the pool (each series' forecasts stacked, as the pooled samples are)."""
    pooled: dict[str, dict[str, Any]] = {}
    per_series: dict[str, dict[str, dict[str, Any]]] = {s.symbol: {} for s in data.series}
    for split_name, pool in (("validation", data.valid), ("test", data.test)):
        forecasts = [
            _series_forecasts(s, split_name, graphs, horizons, levels) for s in data.series
        ]
        for name in forecasts[0]:
            if name not in graphs:  # the graphs' pooled scores come from the search
                q = np.concatenate([f[name] for f in forecasts])
                pooled.setdefault(name, {"kind": "baseline"})[split_name] = evaluate(pool.y, q)
        for s, series_forecasts in zip(data.series, forecasts, strict=True):
            samples = s.valid if split_name == "validation" else s.test
            for name, q in series_forecasts.items():
                per_series[s.symbol].setdefault(name, {})[split_name] = evaluate(samples.y, q)
    return pooled, per_series


def _series_forecasts(
    series: SeriesData,
    split_name: str,
    graphs: dict[str, bytes],
    horizons: list[int],
    levels: list[float],
) -> dict[str, np.ndarray]:
    """The graphs' and the baselines' quantiles on one series' validation or test samples."""
    samples = series.valid if split_name == "validation" else series.test
    forecasts = {name: run_onnx(graph, samples.x) for name, graph in graphs.items()}
    return forecasts | _baseline_forecasts(series, samples, horizons, levels)


def _test_forecasts(data: PriceData, horizons: list[int], graph: bytes) -> dict[str, Any]:
    """The first series' test closes, future closes and the shipped graph's quantiles, for
    the fan chart."""
    first = data.series[0]
    origins, close = first.test.origins, first.close
    return {
        "symbol": first.symbol,
        "dates": [d.date().isoformat() for d in first.test.dates],
        "close": close.iloc[origins].round(4).tolist(),
        "future_close": {str(h): close.iloc[origins + h].round(4).tolist() for h in horizons},
        "future_dates": {
            str(h): [d.date().isoformat() for d in close.index[origins + h]] for h in horizons
        },
        "quantiles": np.round(run_onnx(graph, first.test.x), 6).tolist(),
    }


def build_report(
    recipe: Recipe,
    quick: bool,
    data: PriceData,
    teacher: TeacherFit,
    compression: Compression,
    evaluation: PriceEvaluation,
) -> dict[str, Any]:
    """report.json: recipe, environment, training, parity, every model's metrics, headline,
    the compression search and the test forecasts."""
    assert recipe.price is not None
    search = compression.search
    first = search.candidates[search.chosen.split("+")[0]]
    return {
        **report_head("price", recipe, quick),
        "recipe": recipe.model_dump(mode="json", exclude={"source_path"}),
        "environment": environment(),
        "samples": sample_counts(data.train, data.valid, data.test),
        "training": {"teacher": teacher.fit.__dict__, "student": first.row["training"] or {}},
        "parity": evaluation.parity,
        "models": evaluation.models,
        "headline": evaluation.headline,
        "compression": {**search.summary(), "teacher": evaluation.models["teacher"]},
        "series": _series_report(data, evaluation),
        "test_forecasts": _test_forecasts(data, recipe.price.horizons, compression.graph),
    }


def _series_source(series: SeriesData) -> dict[str, str | None]:
    spec = series.spec
    return {
        "source": spec.source,
        "symbol": series.symbol,
        "path": str(spec.path) if spec.path else None,
    }


def _series_report(data: PriceData, evaluation: PriceEvaluation) -> dict[str, Any]:
    """report.json's `series`: each series' source, periods, sample counts and every model's
    metrics on it (the baselines fitted on that series' own train period). The pooled scores
    are `models`: every window weighs the same, so a longer series counts for more."""
    return {
        s.symbol: {
            **_series_source(s),
            "periods": sample_periods(s.train, s.valid, s.test),
            "samples": sample_counts(s.train, s.valid, s.test),
            "models": evaluation.per_series[s.symbol],
        }
        for s in data.series
    }


def _manifest_data(recipe: Recipe, data: PriceData) -> dict[str, Any]:
    """The manifest's `data`: one series as always; several as `series` (each with its source
    and periods) beside a `source = "panel"` summary."""
    if len(data.series) == 1:
        return series_source(recipe, data.close)
    return {
        "source": "panel",
        "symbol": "+".join(s.symbol for s in data.series),
        "path": None,
        "series": [
            {**_series_source(s), "periods": sample_periods(s.train, s.valid, s.test)}
            for s in data.series
        ],
    }


def build_manifest(
    recipe: Recipe, data: PriceData, compression: Compression, evaluation: PriceEvaluation
) -> dict[str, Any]:
    """manifest.json: the graph's interface, data, periods, compression steps, key metrics."""
    assert recipe.price is not None
    p = recipe.price
    student = evaluation.student_row
    return {
        "task": "price",
        "name": recipe.model.name,
        "inputs": [TensorSpec(name="close", shape=["batch", p.window])],
        "outputs": [
            TensorSpec(name="quantiles", shape=["batch", len(p.horizons), len(p.quantiles)])
        ],
        "window": p.window,
        "horizons": p.horizons,
        "quantiles": p.quantiles,
        "data": _manifest_data(recipe, data),
        "periods": sample_periods(data.train, data.valid, data.test),
        "compression": _manifest_steps(compression),
        "metrics": {
            "test_pinball": student["test"]["pinball"]["overall"],
            "teacher_test_pinball": evaluation.models["teacher"]["test"]["pinball"]["overall"],
            "test_coverage": student["test"]["coverage"],
            "bytes": student["bytes"],
            "latency_us_median": student["latency_us_median"],
        },
        "created_at": datetime.now(UTC),
    }


def train_price(
    recipe: Recipe, registry: Path, key: Path | None, quick: bool, console: Console | None = None
) -> Path:
    """Train, compress, evaluate, sign and write one price bundle; returns its directory."""
    console = console or Console(stderr=True)
    # a typo in a chain fails here, before minutes of training
    plan = plan_chains(recipe.compress.chains, recipe.compress.steps)
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    private_key, key_note = resolve_signing_key(key, registry)
    data = load_price_data(recipe)
    for s in data.series:
        console.print(
            f"[bold]{recipe.model.name}[/]: {len(s.close)} closes of {s.symbol}; samples "
            f"train {len(s.train)}, validation {len(s.valid)}, test {len(s.test)}"
        )
    teacher = fit_teacher(recipe, data, console)
    compression = search_students(recipe, data, teacher, plan, console)
    evaluation = evaluate_choice(recipe, data, teacher, compression)
    report = build_report(recipe, quick, data, teacher, compression, evaluation)
    manifest = build_manifest(recipe, data, compression, evaluation)
    graph = compression.graph
    path = write_bundle(registry, manifest, graph, private_key, report, teacher.graph)
    console.print(key_note)
    return path
