"""The compression toolkit: composable steps (distillation, pruning, low-rank, tensor-train, CP
and Tucker factorization, weight sharing, quantization) and the accuracy-budget search over
chains."""

from __future__ import annotations

from forecaster.compress.context import CompressContext, FineTune
from forecaster.compress.cp import CPLinear, cp, cp_decompose, cp_reconstruct
from forecaster.compress.distill import ClassifierDistillation, distill, distill_classifier, train
from forecaster.compress.ensemble import average_graphs
from forecaster.compress.graph import compact_onnx, distinct_weight_values
from forecaster.compress.lowrank import factorize_linear, svd
from forecaster.compress.prune import prune_magnitude, prune_structured
from forecaster.compress.qat import FakeQuantLinear, qat
from forecaster.compress.quantize import quantize_dynamic, quantize_static
from forecaster.compress.search import Candidate, SearchResult, choose, measure_graph, run_search
from forecaster.compress.share import cluster, kmeans_codebook
from forecaster.compress.steps import STEPS, Step, StepSpec, chain_key, plan_chains
from forecaster.compress.tt import TTLinear, tt, tt_reconstruct, tt_svd
from forecaster.compress.tucker import TuckerLinear, tucker, tucker_decompose, tucker_reconstruct

__all__ = [
    "STEPS",
    "CPLinear",
    "Candidate",
    "ClassifierDistillation",
    "CompressContext",
    "FakeQuantLinear",
    "FineTune",
    "SearchResult",
    "Step",
    "StepSpec",
    "TTLinear",
    "TuckerLinear",
    "average_graphs",
    "chain_key",
    "choose",
    "cluster",
    "compact_onnx",
    "cp",
    "cp_decompose",
    "cp_reconstruct",
    "distill",
    "distill_classifier",
    "distinct_weight_values",
    "factorize_linear",
    "kmeans_codebook",
    "measure_graph",
    "plan_chains",
    "prune_magnitude",
    "prune_structured",
    "qat",
    "quantize_dynamic",
    "quantize_static",
    "run_search",
    "svd",
    "train",
    "tt",
    "tt_reconstruct",
    "tt_svd",
    "tucker",
    "tucker_decompose",
    "tucker_reconstruct",
]
