"""The step registry and chain planning: recipe labels -> validated, parameterised steps."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from forecaster.compress.cp import cp
from forecaster.compress.distill import distill, train
from forecaster.compress.lowrank import svd
from forecaster.compress.prune import prune_magnitude, prune_structured
from forecaster.compress.qat import qat
from forecaster.compress.quantize import quantize_dynamic, quantize_static
from forecaster.compress.share import cluster
from forecaster.compress.tt import tt
from forecaster.compress.tucker import tucker
from forecaster.errors import RecipeError

__all__ = ["STEPS", "Step", "StepSpec", "chain_key", "plan_chains"]

Kind = Literal["train", "torch", "onnx"]


@dataclass(frozen=True)
class Step:
    """A technique: `train` steps start a chain from an untrained student, `torch` steps map
    a student to a student, `onnx` steps map an exported graph to a graph."""

    name: str
    kind: Kind
    fn: Callable[..., Any]
    # chain order: a step may not follow one of a higher stage (pruning needs plain layers,
    # factorizing a clustered layer would undo the sharing, nothing follows quantization)
    stage: int
    quantizes: bool = False


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("train", "train", train, 0),
        Step("distill", "train", distill, 0),
        Step("prune_magnitude", "torch", prune_magnitude, 1),
        Step("prune_structured", "torch", prune_structured, 1),
        Step("svd", "torch", svd, 2),
        Step("tt", "torch", tt, 2),
        Step("cp", "torch", cp, 2),
        Step("tucker", "torch", tucker, 2),
        Step("cluster", "torch", cluster, 3),
        Step("qat", "torch", qat, 4, quantizes=True),
        Step("quantize_dynamic", "onnx", quantize_dynamic, 4, quantizes=True),
        Step("quantize_static", "onnx", quantize_static, 4, quantizes=True),
    )
}


@dataclass(frozen=True)
class StepSpec:
    """One entry of a chain: its recipe label, the technique and the parameters."""

    label: str
    step: Step
    params: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, subject: Any, ctx: Any) -> Any:
        return self.step.fn(subject, ctx, **self.params)


def chain_key(labels: list[str] | tuple[str, ...]) -> str:
    return "+".join(labels)


def _spec(label: str, tables: Mapping[str, Mapping[str, Any]]) -> StepSpec:
    params = dict(tables.get(label, {}))
    name = params.pop("step", label)
    if name not in STEPS:
        known = ", ".join(STEPS)
        raise RecipeError(
            f"compress: unknown step {label!r}; use one of {known}, or define "
            f'[compress.steps.{label}] with step = "<one of those>"'
        )
    step = STEPS[name]
    try:
        inspect.signature(step.fn).bind(None, None, **params)
    except TypeError as exc:
        raise RecipeError(f"compress.steps.{label}: {exc}") from exc
    return StepSpec(label=label, step=step, params=params)


def _check_order(chain: list[StepSpec]) -> None:
    where = f"compress chain {chain_key([s.label for s in chain])!r}"
    if not chain or chain[0].step.kind != "train":
        raise RecipeError(f"{where}: must start with `train` or `distill`")
    seen_onnx, stage, quantized = False, 0, False
    for spec in chain[1:]:
        s = spec.step
        if s.kind == "train":
            raise RecipeError(f"{where}: {spec.label} can only be the first step")
        if s.kind == "torch" and seen_onnx:
            raise RecipeError(
                f"{where}: {spec.label} works on the torch model; put it before the onnx steps"
            )
        if s.stage < stage:
            raise RecipeError(
                f"{where}: {spec.label} cannot follow a later-stage step (order: prune, svd/tt/cp/tucker, cluster, quantize)"
            )
        if s.quantizes and quantized:
            raise RecipeError(f"{where}: quantize at most once per chain")
        seen_onnx |= s.kind == "onnx"
        quantized |= s.quantizes
        stage = s.stage


def plan_chains(
    chains: list[list[str]], tables: Mapping[str, Mapping[str, Any]] | None = None
) -> list[list[StepSpec]]:
    """Resolve and validate the recipe's chains before anything trains, so a typo fails fast
    with the recipe key in the message."""
    if not chains:
        raise RecipeError("compress: list at least one chain")
    tables = tables or {}
    plan = []
    for chain in chains:
        specs = [_spec(label, tables) for label in chain]
        _check_order(specs)
        plan.append(specs)
    return plan
