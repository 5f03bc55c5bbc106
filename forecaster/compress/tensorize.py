"""What the CP and Tucker steps share: each learned layer's weight W (in x out) reshaped to the
tensor `[m_1, .., m_d, n_1, .., n_e]`, swapped for a factorized layer where that is smaller,
then the fine-tuning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import replace_linears
from forecaster.compress.tt import factorize

__all__ = ["Factorizer", "tensor_modes", "tensorize"]

# (the weight tensor, how many of its modes are input modes, the dense layer) ->
# (the factorized layer, or None where it would not be smaller; what was chosen, for the report)
Factorizer = Callable[[np.ndarray, int, nn.Linear], tuple[nn.Module | None, dict[str, Any]]]


def tensor_modes(n: int, d: int) -> list[int]:
    """`factorize(n, d)` without its padding 1s: the mode sizes a dimension of `n` is reshaped
    into, where a mode of size 1 would only add a factor to store."""
    return [f for f in factorize(n, d) if f > 1] or [1]


def tensorize(
    model: nn.Module, ctx: CompressContext, modes: int, build: Factorizer, note: str, finetune: bool
) -> nn.Module:
    """Swap every learned layer for `build`'s factorized layer where it returns one, note the
    choices under `note` (and the layers kept dense), then fine-tune."""
    chosen: dict[str, dict[str, Any]] = {}

    def replace(name: str, layer: nn.Linear) -> nn.Module | None:
        in_m = tensor_modes(layer.in_features, modes)
        out_m = tensor_modes(layer.out_features, modes)
        tensor = layer.weight.detach().double().numpy().T.reshape(*in_m, *out_m)
        new, details = build(tensor, len(in_m), layer)
        chosen[name] = {"in": in_m, "out": out_m, **details}
        return new

    replaced = replace_linears(model, replace)
    ctx.note(
        **{note: {name: chosen[name] for name in replaced}},
        kept_dense=sorted(set(chosen) - set(replaced)),
    )
    if finetune and replaced:
        ctx.fit(model)
    return model
