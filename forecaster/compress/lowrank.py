"""Low-rank factorization: each dense layer W (out x in) becomes two thinner layers
(in -> r -> out) from its truncated SVD, when that stores fewer weights."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import replace_linears

__all__ = ["choose_rank", "factorize_linear", "svd"]

logger = logging.getLogger(__name__)


def choose_rank(
    singular: np.ndarray,
    n_in: int,
    n_out: int,
    energy: float | None = None,
    budget: float | None = None,
    rank: int | None = None,
) -> int:
    """The rank to keep: fixed, the smallest keeping `energy` of the squared singular values,
    or the largest whose two factors store at most `budget` x the dense layer's weights."""
    full = len(singular)
    if rank is not None:
        return int(min(max(rank, 1), full))
    if budget is not None:
        return int(min(full, max(1, int(budget * n_in * n_out // (n_in + n_out)))))
    share = np.cumsum(singular**2) / max(float(np.sum(singular**2)), 1e-30)
    target = 0.9 if energy is None else energy
    return min(full, int(np.searchsorted(share, target - 1e-12)) + 1)


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """`Linear(in, out)` -> `Linear(in, rank, bias=False)`, `Linear(rank, out)`, splitting the
    singular values evenly (sqrt) between the factors so both train at similar scales."""
    u, s, vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_((root[:, None] * vh[:rank]).float())
        second.weight.copy_((u[:, :rank] * root[None, :]).float())
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def svd(
    model: nn.Module,
    ctx: CompressContext,
    *,
    energy: float | None = 0.9,
    budget: float | None = None,
    rank: int | None = None,
    finetune: bool = True,
) -> nn.Module:
    """Factorize every learned layer whose chosen rank stores fewer weights than the dense
    layer (rank by kept energy, by a size budget, or fixed); then fine-tune."""
    ranks: dict[str, list[int]] = {}

    def build(name: str, layer: nn.Linear) -> nn.Module | None:
        s = torch.linalg.svdvals(layer.weight.detach().double()).numpy()
        r = choose_rank(s, layer.in_features, layer.out_features, energy, budget, rank)
        ranks[name] = [r, len(s)]
        if r * (layer.in_features + layer.out_features) >= layer.in_features * layer.out_features:
            return None  # factors would not be smaller than the dense layer
        return factorize_linear(layer, r)

    replaced = replace_linears(model, build)
    ctx.note(
        ranks={name: ranks[name] for name in replaced},
        kept_dense=sorted(set(ranks) - set(replaced)),
    )
    if finetune and replaced:
        ctx.fit(model)
    return model
