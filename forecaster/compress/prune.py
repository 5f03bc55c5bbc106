"""Pruning: magnitude (unstructured zeros, reported as sparsity) and structured (whole hidden
units removed, so every later layer and the exported graph physically shrink)."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import learned_linears, set_module
from forecaster.compress.layers import sparsity as zero_share

__all__ = ["chained_linears", "prune_magnitude", "prune_structured", "unit_importance"]

logger = logging.getLogger(__name__)


def prune_magnitude(
    model: nn.Module,
    ctx: CompressContext,
    *,
    sparsity: float = 0.5,
    scope: Literal["layer", "global"] = "layer",
    finetune: bool = True,
) -> nn.Module:
    """Zero the smallest-magnitude weights (per layer or over all layers), fine-tune with the
    mask held, then make the zeros permanent. Dense graphs keep their size: the effect is the
    sparsity a sparse kernel or a compressor could exploit."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    layers = [layer for _, layer in learned_linears(model)]
    if scope == "global":
        prune.global_unstructured(
            [(layer, "weight") for layer in layers],
            pruning_method=prune.L1Unstructured,
            amount=sparsity,
        )
    else:
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=sparsity)
    if finetune:
        ctx.fit(model)
    for layer in layers:
        prune.remove(layer, "weight")
    ctx.note(sparsity=round(zero_share(model), 4))
    return model


def _head(model: nn.Module) -> tuple[str, nn.Linear]:
    """Where the output layer lives, and the layer: `head` itself (classifiers) or
    `head.linear` (quantiles)."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return "head", head
    inner = getattr(head, "linear", None)
    if isinstance(inner, nn.Linear):
        return "head.linear", inner
    raise ValueError("structured pruning needs a Linear `head` or `head.linear`")


def _body(model: nn.Module) -> nn.Sequential:
    """The student's `body` of plain Linear / ReLU layers: what structured pruning can shrink."""
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Sequential):
        raise ValueError("structured pruning needs a `body` Sequential")
    for module in body:
        if not isinstance(module, (nn.Linear, nn.ReLU)):
            raise ValueError(
                f"structured pruning needs plain Linear/ReLU layers, found "
                f"{type(module).__name__}; put prune_structured before svd/tt/cluster/qat"
            )
    return body


def chained_linears(model: nn.Module) -> list[nn.Linear]:
    """The body's Linear layers then the output layer, if the body is plain Linear /
    activation pairs: the structure structured pruning can shrink consistently."""
    _, head = _head(model)
    return [m for m in _body(model) if isinstance(m, nn.Linear)] + [head]


@torch.no_grad()
def unit_importance(model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """Per hidden unit of each body layer: mean |activation| on real windows times the norm of
    its outgoing weights -- how much signal the unit passes on (dead units score 0)."""
    linears = chained_linears(model)
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise ValueError("structured pruning needs the student's `features` preprocessing")
    model.eval()
    z, level, _ = features(torch.from_numpy(x))
    h = torch.cat([z, level], dim=1)
    scores, position = [], 0
    for module in _body(model):
        h = module(h)
        if isinstance(module, nn.ReLU):
            outgoing = linears[position + 1].weight.norm(dim=0)
            scores.append((h.abs().mean(dim=0) * outgoing).numpy())
            position += 1
    return scores


def _shrink(layer: nn.Linear, rows: np.ndarray | None, cols: np.ndarray | None) -> nn.Linear:
    weight, bias = layer.weight.detach(), layer.bias
    if rows is not None:
        weight = weight[torch.from_numpy(rows)]
    if cols is not None:
        weight = weight[:, torch.from_numpy(cols)]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.detach()[torch.from_numpy(rows)] if rows is not None else bias)
    return new


def prune_structured(
    model: nn.Module,
    ctx: CompressContext,
    *,
    keep: float = 0.5,
    hidden: list[int] | None = None,
    finetune: bool = True,
) -> nn.Module:
    """Remove the least important hidden units of every body layer (keep a share, or exactly
    `hidden` units per layer), slicing the next layer's inputs to match; then fine-tune."""
    linears = chained_linears(model)
    widths = [layer.out_features for layer in linears[:-1]]
    if hidden is None:
        if not 0 < keep <= 1:
            raise ValueError(f"keep must lie in (0, 1], got {keep}")
        hidden = [max(1, round(keep * w)) for w in widths]
    if len(hidden) != len(widths) or any(
        not 0 < k <= w for k, w in zip(hidden, widths, strict=True)
    ):
        raise ValueError(f"hidden {hidden} does not fit the body's widths {widths}")
    scores = unit_importance(model, ctx.calibration())
    kept = [np.sort(np.argsort(-s, kind="stable")[:k]) for s, k in zip(scores, hidden, strict=True)]
    new_layers = []
    for i, layer in enumerate(linears):
        rows = kept[i] if i < len(kept) else None
        cols = kept[i - 1] if i > 0 else None
        new_layers.append(_shrink(layer, rows, cols))
    body = _body(model)
    body_positions = [i for i, m in enumerate(body) if isinstance(m, nn.Linear)]
    for position, layer in zip(body_positions, new_layers[:-1], strict=True):
        body[position] = layer
    set_module(model, _head(model)[0], new_layers[-1])
    ctx.note(hidden_before=widths, hidden_after=list(hidden))
    if finetune:
        ctx.fit(model)
    return model
