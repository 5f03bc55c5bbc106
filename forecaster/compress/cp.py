"""CP (canonical polyadic) factorization of dense layers: W (in x out) reshaped to the tensor
`[m_1, .., m_d, n_1, .., n_e]` (the same split as Tucker's, `tensor_modes`: 64 -> 4 x 4 x 4,
32 -> 4 x 4 x 2, 15 -> 5 x 3) and stored as a sum of R rank-one tensors, one `dim x R` factor
per mode (ALS, tensorly). The forward pass is Reshape/Transpose/MatMul/Mul/ReduceSum only."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorly
import torch
from tensorly.cp_tensor import CPTensor
from tensorly.decomposition import parafac
from torch import nn

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import bias_parameter, float_parameter
from forecaster.compress.tensorize import tensorize

__all__ = ["CPLinear", "cp", "cp_decompose", "cp_path", "cp_reconstruct"]

logger = logging.getLogger(__name__)

_ALS_ITERATIONS = 100
# a ridge far below any weight's scale: it keeps ALS's normal equations solvable where a rank
# exceeds what a mode can support or a residual is already zero
_RIDGE = 1e-9


def _als(tensor: np.ndarray, rank: int, init: str | CPTensor) -> CPTensor:
    return parafac(
        tensor, rank, init=init, n_iter_max=_ALS_ITERATIONS, tol=1e-9, l2_reg=_RIDGE, random_state=0
    )


def cp_path(tensor: np.ndarray, max_rank: int) -> Iterator[CPTensor]:
    """CP decompositions of ranks 1, 2, .., `max_rank`, each warm-started from the previous
    one plus the best rank-one fit of its residual. ALS never increases the error from its
    starting point, so the error never rises along the path (independent runs per rank give
    no such guarantee), and the deterministic start makes every rank reproducible."""
    current = _als(tensor, 1, "svd")
    yield current
    for rank in range(2, max_rank + 1):
        extra = _als(tensor - tensorly.cp_to_tensor(current), 1, "svd")
        start = CPTensor(
            (
                np.concatenate([current.weights, extra.weights]),
                [np.hstack([a, b]) for a, b in zip(current.factors, extra.factors, strict=True)],
            )
        )
        current = _als(tensor, rank, start)
        yield current


def cp_decompose(tensor: np.ndarray, rank: int) -> CPTensor:
    """The rank-`rank` decomposition of `cp_path`."""
    last: deque[CPTensor] = deque(cp_path(tensor, rank), maxlen=1)
    return last[0]


def cp_reconstruct(decomposition: CPTensor) -> np.ndarray:
    """The full tensor a CP decomposition stands for."""
    return np.asarray(tensorly.cp_to_tensor(decomposition))


def _choose(
    tensor: np.ndarray, limit: int, energy: float | None, budget: float | None, rank: int | None
) -> tuple[int, CPTensor | None]:
    """The rank (fixed, by `budget` x the dense weights, or the smallest keeping `energy`: a
    relative squared error <= 1 - energy) and its decomposition; None where that rank would
    store at least `limit` values (the layer stays dense)."""
    per_rank = sum(tensor.shape)
    largest = (limit - 1) // per_rank
    if rank is None and budget is not None:
        rank = max(1, int(budget * limit) // per_rank)
    if rank is not None:
        return rank, cp_decompose(tensor, rank) if rank <= largest else None
    target = (1 - (0.9 if energy is None else energy)) * float(np.sum(tensor**2))
    r = 0
    for r, current in enumerate(cp_path(tensor, largest), start=1):
        if float(np.sum((tensor - cp_reconstruct(current)) ** 2)) <= target:
            return r, current
    return r + 1, None


class CPLinear(nn.Module):
    """y = x W + b with W a sum of R rank-one tensors: the input is contracted with the input
    factors into R coefficients, which the output factors expand back (the CP weights are
    folded into the first output factor)."""

    def __init__(self, decomposition: CPTensor, n_in_modes: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        weights, factors = decomposition
        factors = [np.asarray(f) for f in factors]
        factors[n_in_modes] = factors[n_in_modes] * np.asarray(weights)[None, :]
        self.in_modes = [int(f.shape[0]) for f in factors[:n_in_modes]]
        self.out_modes = [int(f.shape[0]) for f in factors[n_in_modes:]]
        self.in_features, self.out_features = math.prod(self.in_modes), math.prod(self.out_modes)
        self.rank = int(factors[0].shape[1])
        self.in_factors = nn.ParameterList(float_parameter(f) for f in factors[:n_in_modes])
        self.out_factors = nn.ParameterList(float_parameter(f) for f in factors[n_in_modes:])
        self.bias = bias_parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, *ins = list(self.in_factors)
        rest = self.in_features // self.in_modes[0]
        # the first input mode by a MatMul -> [B, rest, R]; the others share the R axis
        t = x.reshape(-1, self.in_modes[0], rest).transpose(1, 2) @ first
        for m, f in zip(self.in_modes[1:], ins, strict=True):
            rest //= m
            t = (t.reshape(-1, m, rest, self.rank) * f[:, None, :]).sum(1)
        z, done = t.reshape(-1, 1, self.rank), 1  # [B, 1, R]
        *outs, last = list(self.out_factors)
        for n, f in zip(self.out_modes, outs, strict=False):  # each output mode but the last
            done *= n
            z = (z[:, :, None, :] * f[None, None]).reshape(-1, done, self.rank)
        y = (z @ last.T).reshape(-1, self.out_features)
        return y + self.bias if self.bias is not None else y

    def decomposition(self) -> CPTensor:
        """The factors as tensorly's CP tensor (unit weights)."""
        factors = [f.detach().numpy() for f in (*self.in_factors, *self.out_factors)]
        return CPTensor((np.ones(self.rank), factors))


def cp(
    model: nn.Module,
    ctx: CompressContext,
    *,
    energy: float | None = 0.9,
    budget: float | None = None,
    rank: int | None = None,
    modes: int = 3,
    finetune: bool = True,
) -> nn.Module:
    """Replace every learned layer by a CP layer (its in and out dimensions each split into at
    most `modes` modes; one rank by kept energy, by a size budget, or fixed) where that stores
    fewer weights than the dense layer; then fine-tune the factors."""

    def build(
        tensor: np.ndarray, n_in_modes: int, layer: nn.Linear
    ) -> tuple[nn.Module | None, dict[str, Any]]:
        r, decomposition = _choose(tensor, layer.weight.numel(), energy, budget, rank)
        if decomposition is None:
            return None, {"rank": r}  # the factors would not be smaller than the dense layer
        return CPLinear(decomposition, n_in_modes, layer.bias), {"rank": r}

    return tensorize(model, ctx, modes, build, "cp_layers", finetune)
