"""Tensor-train (TT-matrix) factorization of dense layers: W (in x out) viewed as a 2d-way
tensor and stored as d small cores; the forward pass is Reshape/Transpose/MatMul only, so it
exports with standard ONNX ops."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import bias_parameter, float_parameter, replace_linears

__all__ = ["TTLinear", "factorize", "tt", "tt_reconstruct", "tt_svd"]

logger = logging.getLogger(__name__)


def factorize(n: int, d: int) -> list[int]:
    """`n` as `d` integer factors, as balanced as its prime factors allow (1s pad primes)."""
    primes, rest, p = [], n, 2
    while p * p <= rest:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    if rest > 1:
        primes.append(rest)
    bins = [1] * d
    for prime in sorted(primes, reverse=True):
        bins[int(np.argmin(bins))] *= prime
    return sorted(bins, reverse=True)


def tt_svd(
    matrix: np.ndarray, in_factors: list[int], out_factors: list[int], max_rank: int
) -> list[np.ndarray]:
    """TT-SVD of `matrix` (in x out): cores `[r_{k-1}, m_k, n_k, r_k]` with every rank at most
    `max_rank` (sequential truncated SVDs, Oseledets 2011)."""
    d = len(in_factors)
    tensor = matrix.reshape(*in_factors, *out_factors)
    tensor = tensor.transpose([i for k in range(d) for i in (k, d + k)])
    cores, r_prev = [], 1
    rest: np.ndarray = tensor.reshape(-1)
    for k in range(d - 1):
        block = in_factors[k] * out_factors[k]
        rest = rest.reshape(r_prev * block, -1)
        u, s, vh = np.linalg.svd(rest, full_matrices=False)
        r = min(max_rank, len(s))
        cores.append(u[:, :r].reshape(r_prev, in_factors[k], out_factors[k], r))
        rest = s[:r, None] * vh[:r]
        r_prev = r
    cores.append(rest.reshape(r_prev, in_factors[-1], out_factors[-1], 1))
    return cores


def tt_reconstruct(cores: list[np.ndarray]) -> np.ndarray:
    """The dense (in x out) matrix a list of TT cores stands for."""
    d = len(cores)
    full = cores[0]
    for core in cores[1:]:
        full = np.tensordot(full, core, axes=([-1], [0]))
    full = full.reshape([dim for core in cores for dim in core.shape[1:3]])
    full = full.transpose([2 * k for k in range(d)] + [2 * k + 1 for k in range(d)])
    n_in = math.prod(core.shape[1] for core in cores)
    return full.reshape(n_in, -1)


class TTLinear(nn.Module):
    """y = x W + b with W held as TT cores. Each core is stored as the matrix
    `[m_k * r_{k-1}, n_k * r_k]` that its contraction step multiplies by."""

    def __init__(self, cores: list[np.ndarray], bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_factors = [int(c.shape[1]) for c in cores]
        self.out_factors = [int(c.shape[2]) for c in cores]
        self.ranks = [int(c.shape[0]) for c in cores] + [1]
        self.in_features = math.prod(self.in_factors)
        self.out_features = math.prod(self.out_factors)
        self.cores = nn.ParameterList(
            float_parameter(c.transpose(1, 0, 2, 3).reshape(c.shape[1] * c.shape[0], -1))
            for c in cores
        )
        self.bias = bias_parameter(bias)

    def _dims(self, k: int) -> tuple[int, int, int, int]:
        """Core `k`'s (m_k, n_k, r_{k-1}, r_k)."""
        return self.in_factors[k], self.out_factors[k], self.ranks[k], self.ranks[k + 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rest, done = self.in_features, 1
        t = x.reshape(-1, rest, 1, 1)
        for k, core in enumerate(self.cores):
            m, n, r_prev, r = self._dims(k)
            rest //= m
            # bring (m_k, r_{k-1}) last, contract them with the core, keep the rest in order
            t = t.reshape(-1, m, rest, done, r_prev).permute(0, 2, 3, 1, 4)
            t = (t.reshape(-1, m * r_prev) @ core).reshape(-1, rest, done * n, r)
            done *= n
        y = t.reshape(-1, self.out_features)
        return y + self.bias if self.bias is not None else y

    def cores_tensor(self) -> list[np.ndarray]:
        """The cores in the standard `[r_{k-1}, m_k, n_k, r_k]` layout."""
        out = []
        for k, core in enumerate(self.cores):
            m, n, r_prev, r = self._dims(k)
            c = core.detach().numpy().reshape(m, r_prev, n, r)
            out.append(c.transpose(1, 0, 2, 3))
        return out


def tt(
    model: nn.Module,
    ctx: CompressContext,
    *,
    rank: int = 4,
    cores: int = 3,
    finetune: bool = True,
) -> nn.Module:
    """Replace every learned layer by a TT-matrix layer of `cores` cores and TT-rank at most
    `rank` (initialised by TT-SVD of the trained weights) where that stores fewer weights;
    then fine-tune the cores."""
    shapes: dict[str, dict[str, list[int]]] = {}

    def build(name: str, layer: nn.Linear) -> nn.Module | None:
        in_f, out_f = factorize(layer.in_features, cores), factorize(layer.out_features, cores)
        tt_cores = tt_svd(layer.weight.detach().double().numpy().T, in_f, out_f, rank)
        stored = sum(c.size for c in tt_cores)
        if stored >= layer.weight.numel():
            return None
        shapes[name] = {"in": in_f, "out": out_f, "ranks": [c.shape[0] for c in tt_cores][1:]}
        return TTLinear(tt_cores, layer.bias)

    replaced = replace_linears(model, build)
    ctx.note(tt_layers=shapes)
    if finetune and replaced:
        ctx.fit(model)
    return model
