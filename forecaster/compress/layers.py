"""Walking and rewriting the learned layers of a student (`body` and `head`), which is all
the compression steps touch: the preprocessing inside `features` has no weights to compress."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

__all__ = [
    "bias_parameter",
    "float_parameter",
    "learned_linears",
    "replace_linears",
    "set_module",
    "sparsity",
    "weight_count",
]

_LEARNED = ("body", "head")


def learned_linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """`(qualified name, layer)` of every nn.Linear in the student's body and head, in order."""
    for root in _LEARNED:
        part = getattr(model, root, None)
        if part is None:
            continue
        for name, module in part.named_modules():
            if isinstance(module, nn.Linear):
                yield (f"{root}.{name}" if name else root), module


def replace_linears(
    model: nn.Module, build: Callable[[str, nn.Linear], nn.Module | None]
) -> list[str]:
    """Swap each learned nn.Linear for `build(name, layer)` where that returns a module;
    returns the names replaced."""
    replaced = []
    for name, layer in list(learned_linears(model)):
        new = build(name, layer)
        if new is None:
            continue
        set_module(model, name, new)
        replaced.append(name)
    return replaced


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted path `name` (a Sequential index or an attribute)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)  # "" is the model itself
    if isinstance(parent, nn.Sequential):
        parent[int(attr)] = module
    else:
        setattr(parent, attr, module)


def float_parameter(values: np.ndarray) -> nn.Parameter:
    """A trainable float32 copy of `values` (a factor, a core, a codebook)."""
    return nn.Parameter(torch.tensor(np.ascontiguousarray(values), dtype=torch.float32))


def bias_parameter(bias: torch.Tensor | None) -> nn.Parameter | None:
    """A trainable copy of the bias of the layer being replaced (None where it had none)."""
    return nn.Parameter(bias.detach().clone()) if bias is not None else None


def weight_count(model: nn.Module) -> int:
    """Values in the learned layers' weight matrices (biases excluded)."""
    return sum(layer.weight.numel() for _, layer in learned_linears(model))


@torch.no_grad()
def sparsity(model: nn.Module) -> float:
    """Share of exactly-zero values in the learned layers' weight matrices."""
    total = weight_count(model)
    zeros = sum(int((layer.weight == 0).sum()) for _, layer in learned_linears(model))
    return zeros / total if total else 0.0
