"""The accuracy-budget search: run every chain (shared prefixes once), measure after every
step what the device would run, and keep the smallest, fastest student within budget. It
decides on validation data only; test scores are added afterwards, for the report."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from forecaster.compress.context import CompressContext
from forecaster.compress.graph import compact_onnx
from forecaster.compress.layers import sparsity
from forecaster.compress.steps import StepSpec, chain_key
from forecaster.errors import TrainError
from forecaster.training.export import (
    export_window_model,
    graph_footprint,
    run_onnx,
)
from forecaster.training.loops import predict_torch
from forecaster.training.nets import count_parameters

__all__ = ["Candidate", "SearchResult", "choose", "measure_graph", "run_search"]

logger = logging.getLogger(__name__)

RULE = (
    "among candidates whose validation metric <= budget x the teacher's, the one with the "
    "smallest bytes x median latency (halving either counts the same); none within budget: "
    "the best on validation"
)


@dataclass
class Candidate:
    """The state after a chain prefix: the torch model (until an onnx step), the graph as
    exported (onnx steps need its node names) and the finished graph the device runs."""

    key: str
    spec: StepSpec
    model: nn.Module | None
    raw: bytes
    graph: bytes
    row: dict[str, Any]


@dataclass
class SearchResult:
    candidates: dict[str, Candidate]
    chosen: str
    reference: float
    budget: float
    within_budget: bool

    @property
    def limit(self) -> float:
        return self.budget * self.reference

    def score_split(
        self,
        split: str,
        x: np.ndarray,
        y: np.ndarray,
        evaluate: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
    ) -> None:
        """Add every candidate's metrics on another split (the test period, once the choice
        is made) to its row."""
        for candidate in self.candidates.values():
            q = run_onnx(candidate.graph, x)
            candidate.row[split] = evaluate(y, q) if np.isfinite(q).all() else None

    def summary(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "reference_validation": self.reference,
            "limit": self.limit,
            "rule": RULE,
            "chosen": self.chosen,
            "within_budget": self.within_budget,
            "rows": [c.row for c in self.candidates.values()],
        }


def measure_graph(graph: bytes, ctx: CompressContext, bench_runs: int) -> dict[str, Any]:
    """Size, single-thread onnxruntime speed and validation metrics of a finished graph."""
    metrics = _evaluate(ctx, ctx.y_valid, run_onnx(graph, ctx.x_valid))
    return {
        **graph_footprint(graph, ctx.x_valid, bench_runs),
        "validation": metrics,
        "validation_score": ctx.score(metrics) if metrics else math.inf,
    }


def _evaluate(ctx: CompressContext, y: np.ndarray, q: np.ndarray) -> dict[str, Any] | None:
    """Metrics of forecasts `q`; None when a candidate produced non-finite outputs (it is
    reported, and never chosen)."""
    assert ctx.evaluate is not None
    return ctx.evaluate(y, q) if np.isfinite(q).all() else None


def _apply(
    spec: StepSpec, parent: Candidate | None, base: nn.Module, ctx: CompressContext
) -> tuple[nn.Module | None, bytes]:
    try:
        if spec.step.kind == "onnx":
            assert parent is not None
            return None, spec.apply(parent.raw, ctx)
        source = base if parent is None else parent.model
        model = spec.apply(copy.deepcopy(source), ctx)
        return model, export_window_model(model, ctx.window)
    except ValueError as exc:
        raise TrainError(f"compress step {spec.label}: {exc}") from exc


def _measure(
    key: str,
    spec: StepSpec,
    parent: Candidate | None,
    model: nn.Module | None,
    raw: bytes,
    graph: bytes,
    ctx: CompressContext,
    bench_runs: int,
) -> dict[str, Any]:
    """The report row of one candidate: what the step decided and what it now costs."""
    notes = dict(ctx.notes)
    if model is not None:
        counts = {"parameters": count_parameters(model), "sparsity": round(sparsity(model), 4)}
    else:  # an onnx step changes storage and kernels, not the torch-level counts
        assert parent is not None  # plan_chains puts a torch step before every onnx step
        counts = {k: parent.row[k] for k in ("parameters", "sparsity")}
    row: dict[str, Any] = {
        "chain": key,
        "step": spec.label,
        "technique": spec.step.name,
        "parent": parent.key if parent else None,
        "params": dict(spec.params),
        "details": {k: v for k, v in notes.items() if k != "fit"},
        "training": notes.get("fit"),
        **counts,
        "bytes_exported": len(raw),
        **measure_graph(graph, ctx, bench_runs),
    }
    if model is not None:
        # what the device runs must compute what torch computes
        row["torch_vs_onnx_max_abs"] = float(
            np.abs(predict_torch(model, ctx.x_valid) - run_onnx(graph, ctx.x_valid)).max()
        )
    if parent is not None:
        p = parent.row
        row["effect_vs_parent"] = {
            "bytes": row["bytes"] / p["bytes"],
            "latency": row["latency_us_median"] / p["latency_us_median"],
            "validation": row["validation_score"] / p["validation_score"],
        }
    return row


def run_search(
    base: nn.Module,
    ctx: CompressContext,
    plan: list[list[StepSpec]],
    budget: float,
    reference: float,
    bench_runs: int = 2000,
    on_candidate: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run the planned chains from the untrained student `base`; `reference` is the teacher's
    validation metric (lower is better) that the budget multiplies."""
    candidates: dict[str, Candidate] = {}
    for chain in plan:
        for i, spec in enumerate(chain):
            labels = [s.label for s in chain[: i + 1]]
            key = chain_key(labels)
            if key in candidates:
                continue  # a shared prefix: trained and measured once
            parent = candidates[chain_key(labels[:-1])] if i else None
            ctx.notes.clear()
            start = time.perf_counter()
            model, raw = _apply(spec, parent, base, ctx)
            graph = compact_onnx(raw)
            seconds = time.perf_counter() - start
            row = _measure(key, spec, parent, model, raw, graph, ctx, bench_runs)
            row["seconds"] = round(seconds, 2)
            row["validation_ratio_vs_teacher"] = row["validation_score"] / reference
            row["within_budget"] = row["validation_score"] <= budget * reference
            candidates[key] = Candidate(key, spec, model, raw, graph, row)
            logger.info("%s: %s B, %.1f us", key, row["bytes"], row["latency_us_median"])
            if on_candidate:
                on_candidate(row)
    chosen, within = choose([c.row for c in candidates.values()], budget * reference)
    for key, candidate in candidates.items():
        candidate.row["chosen"] = key == chosen
    return SearchResult(candidates, chosen, reference, budget, within)


def choose(rows: list[dict[str, Any]], limit: float) -> tuple[str, bool]:
    """See RULE. Returns the chosen chain and whether it is within budget."""
    scored = [r for r in rows if math.isfinite(r["validation_score"])]
    if not scored:
        raise TrainError("no compressed candidate produced finite validation metrics")
    within = [r for r in scored if r["validation_score"] <= limit]
    if within:
        best = min(
            within,
            key=lambda r: (
                math.log(r["bytes"]) + math.log(r["latency_us_median"]),
                r["validation_score"],
            ),
        )
        return best["chain"], True
    return min(scored, key=lambda r: r["validation_score"])["chain"], False
