"""Tucker factorization of dense layers: W (in x out) reshaped to the tensor
`[m_1, .., m_d, n_1, .., n_e]` (in = m_1 ... m_d and out = n_1 ... n_e, each split by
`tensor_modes` as balanced as its prime factors allow, e.g. 64 -> 4 x 4 x 4, 32 -> 4 x 4 x 2,
15 -> 5 x 3) and stored as one factor matrix per mode plus a small core (HOOI, tensorly).
The forward pass is Reshape/Transpose/MatMul only, so it exports with standard ONNX ops."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorly
import torch
from tensorly.decomposition import tucker as hooi
from torch import nn

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import bias_parameter, float_parameter
from forecaster.compress.lowrank import choose_rank
from forecaster.compress.tensorize import tensorize

__all__ = [
    "TuckerLinear",
    "choose_tucker_ranks",
    "feasible_ranks",
    "tucker",
    "tucker_decompose",
    "tucker_reconstruct",
    "tucker_size",
]

logger = logging.getLogger(__name__)


def tucker_size(dims: Sequence[int], ranks: Sequence[int]) -> int:
    """Values stored by a Tucker layer: the core plus one `dim x rank` factor per mode."""
    return math.prod(ranks) + sum(d * r for d, r in zip(dims, ranks, strict=True))


def feasible_ranks(ranks: Sequence[int]) -> list[int]:
    """`ranks` with each capped by the product of the others: a larger one cannot be filled
    (its unfolding of the core has fewer columns) and would only store zeros."""
    out = list(ranks)
    changed = True
    while changed:
        capped = [min(r, math.prod(out[:k] + out[k + 1 :])) for k, r in enumerate(out)]
        changed, out = capped != out, capped
    return out


def _mode_spectra(tensor: np.ndarray) -> list[np.ndarray]:
    """Singular values of every mode's unfolding (the truncated HOSVD's spectra)."""
    return [np.linalg.svd(tensorly.unfold(tensor, k), compute_uv=False) for k in range(tensor.ndim)]


def choose_tucker_ranks(
    tensor: np.ndarray,
    energy: float | None = None,
    budget: float | None = None,
    rank: int | None = None,
) -> list[int]:
    """Per-mode ranks: fixed (`rank` capped by each mode's size), per mode the smallest keeping
    `energy` of its unfolding's squared singular values (as `svd` does per layer), or by
    `budget` (x the dense weights): from full ranks, drop the rank whose singular value is the
    smallest until the layer fits."""
    dims = list(tensor.shape)
    if rank is not None:
        return feasible_ranks([min(max(rank, 1), d) for d in dims])
    spectra = _mode_spectra(tensor)
    if budget is None:
        return feasible_ranks([choose_rank(s, 1, 1, energy=energy) for s in spectra])
    ranks = [len(s) for s in spectra]
    limit = budget * math.prod(dims)
    while tucker_size(dims, ranks) > limit and max(ranks) > 1:
        shrinkable = [k for k in range(len(ranks)) if ranks[k] > 1]
        ranks[min(shrinkable, key=lambda k: spectra[k][ranks[k] - 1])] -= 1
    return feasible_ranks(ranks)


def tucker_decompose(
    tensor: np.ndarray, ranks: Sequence[int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Core and factor matrices (`dim x rank`, orthonormal columns) by HOOI from the HOSVD;
    ranks beyond `feasible_ranks` are lowered to it."""
    core, factors = hooi(tensor, rank=feasible_ranks(ranks), init="svd", n_iter_max=100, tol=1e-8)
    return np.asarray(core), [np.asarray(f) for f in factors]


def tucker_reconstruct(core: np.ndarray, factors: Sequence[np.ndarray]) -> np.ndarray:
    """The full tensor a core and its factors stand for."""
    return np.asarray(tensorly.tucker_to_tensor((core, list(factors))))


def _mode_products(
    t: torch.Tensor, dims: Sequence[int], mats: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Multiply each leading mode of `t` (`[B, dims...]` flattened) by its `dim x rank` matrix in
    turn: the mode is moved last and multiplied, so after all of them the new modes are back in
    order. Shapes are Python ints, so the exported graph has no shape arithmetic."""
    rest = math.prod(dims)
    for dim, mat in zip(dims, mats, strict=True):
        rest //= dim
        t = (t.reshape(-1, dim, rest).transpose(1, 2) @ mat).reshape(-1, rest * mat.shape[1])
        rest *= mat.shape[1]
    return t


class TuckerLinear(nn.Module):
    """y = x W + b with W held as a Tucker tensor: input modes are projected onto their factors,
    the core maps the small input tensor to the small output tensor, the output factors expand
    it back. The core is stored as the `prod(input ranks) x prod(output ranks)` matrix."""

    def __init__(
        self,
        core: np.ndarray,
        factors: Sequence[np.ndarray],
        n_in_modes: int,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.in_modes = [int(f.shape[0]) for f in factors[:n_in_modes]]
        self.out_modes = [int(f.shape[0]) for f in factors[n_in_modes:]]
        self.out_ranks = [int(f.shape[1]) for f in factors[n_in_modes:]]
        self.in_features, self.out_features = math.prod(self.in_modes), math.prod(self.out_modes)
        self.in_factors = nn.ParameterList(float_parameter(f) for f in factors[:n_in_modes])
        self.core = float_parameter(core.reshape(math.prod(core.shape[:n_in_modes]), -1))
        # stored `rank x dim`: the matrix the expanding step multiplies by
        self.out_factors = nn.ParameterList(float_parameter(f.T) for f in factors[n_in_modes:])
        self.bias = bias_parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = _mode_products(x, self.in_modes, list(self.in_factors)) @ self.core
        y = _mode_products(t, self.out_ranks, list(self.out_factors))
        return y + self.bias if self.bias is not None else y

    def decomposition(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The core tensor and the `dim x rank` factors, in tensorly's layout."""
        ins = [f.detach().numpy() for f in self.in_factors]
        outs = [f.detach().numpy().T for f in self.out_factors]
        shape = [f.shape[1] for f in ins] + [f.shape[1] for f in outs]
        return self.core.detach().numpy().reshape(shape), ins + outs


def tucker(
    model: nn.Module,
    ctx: CompressContext,
    *,
    energy: float | None = 0.9,
    budget: float | None = None,
    rank: int | None = None,
    modes: int = 3,
    finetune: bool = True,
) -> nn.Module:
    """Replace every learned layer by a Tucker layer (its in and out dimensions each split into
    at most `modes` modes; per-mode ranks by kept energy, by a size budget, or fixed) where that
    stores fewer weights than the dense layer; then fine-tune core and factors."""

    def build(
        tensor: np.ndarray, n_in_modes: int, layer: nn.Linear
    ) -> tuple[nn.Module | None, dict[str, Any]]:
        ranks = choose_tucker_ranks(tensor, energy, budget, rank)
        if tucker_size(tensor.shape, ranks) >= layer.weight.numel():
            return None, {"ranks": ranks}  # the factors would not be smaller than the layer
        core, factors = tucker_decompose(tensor, ranks)
        return TuckerLinear(core, factors, n_in_modes, layer.bias), {"ranks": ranks}

    return tensorize(model, ctx, modes, build, "tucker_layers", finetune)
