"""Parameter sharing by weight clustering: each layer's weights take at most k values (a
k-means codebook), fine-tuned with the weights tied to their centroid. The saving on disk is
made by `compact_onnx`, which stores such a layer as uint8 indices plus the codebook."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import bias_parameter, learned_linears, replace_linears, set_module

__all__ = ["ClusteredLinear", "cluster", "kmeans_codebook"]

logger = logging.getLogger(__name__)

MAX_CLUSTERS = 256  # indices are stored as uint8


def kmeans_codebook(
    values: np.ndarray, k: int, iterations: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """1-d k-means (Lloyd) of `values`: (sorted codebook of at most k values, index of each
    value). Centroids start evenly spaced over the range, which keeps the rare large weights
    (Han et al. 2016); in 1-d the nearest centroid is found from the midpoints."""
    flat = values.reshape(-1).astype(np.float64)
    distinct = np.unique(flat)
    if len(distinct) <= k:
        return distinct, np.searchsorted(distinct, flat)
    centroids = np.linspace(flat.min(), flat.max(), k)
    for _ in range(iterations):
        labels = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
        sums = np.bincount(labels, weights=flat, minlength=k)
        counts = np.bincount(labels, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = np.sort(updated)
    labels = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
    used = np.unique(labels)  # drop centroids that lost every member
    return centroids[used], np.searchsorted(used, labels)


class ClusteredLinear(nn.Module):
    """A Linear whose weight is `codebook[indices]`: gradients of tied weights add up on
    their shared centroid during fine-tuning."""

    indices: torch.Tensor  # a buffer: which codebook entry each weight takes

    def __init__(self, layer: nn.Linear, k: int) -> None:
        super().__init__()
        weight = layer.weight.detach().numpy()
        codebook, labels = kmeans_codebook(weight, k)
        self.codebook = nn.Parameter(torch.tensor(codebook, dtype=torch.float32))
        self.register_buffer(
            "indices", torch.tensor(labels.reshape(weight.shape), dtype=torch.long)
        )
        self.bias = bias_parameter(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.codebook[self.indices], self.bias)

    def to_linear(self) -> nn.Linear:
        """A plain Linear holding the shared values, for export and later steps."""
        out_f, in_f = self.indices.shape
        layer = nn.Linear(in_f, out_f, bias=self.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.codebook[self.indices])
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer


def cluster(
    model: nn.Module, ctx: CompressContext, *, k: int = 16, finetune: bool = True
) -> nn.Module:
    """Cluster every learned layer's weights into at most `k` shared values, fine-tune the
    codebooks (assignments fixed), and return plain Linear layers holding the shared values."""
    if not 2 <= k <= MAX_CLUSTERS:
        raise ValueError(f"k must lie in [2, {MAX_CLUSTERS}], got {k}")
    replace_linears(model, lambda _name, layer: ClusteredLinear(layer, k))
    if finetune:
        ctx.fit(model)
    clustered = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, ClusteredLinear)
    ]
    for name, module in clustered:
        set_module(model, name, module.to_linear())
    ctx.note(
        k=k,
        distinct={
            name: int(torch.unique(layer.weight).numel()) for name, layer in learned_linears(model)
        },
    )
    return model
