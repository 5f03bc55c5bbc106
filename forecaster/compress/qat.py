"""Quantization-aware training: learned layers see int8-rounded weights and uint8-rounded
inputs while fine-tuning (straight-through gradients), then export directly as a QDQ graph
whose weights `compact_onnx` folds to stored int8."""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from forecaster.compress.context import CompressContext
from forecaster.compress.layers import bias_parameter, replace_linears

__all__ = ["FakeQuantLinear", "qat"]

logger = logging.getLogger(__name__)

_W_MAX = 127  # symmetric int8 weights in [-127, 127]


class FakeQuantLinear(nn.Module):
    """A Linear that trains through int8 rounding. Input ranges follow an exponential moving
    average of each batch's min/max (the learned ranges the exported graph uses)."""

    # buffers, declared so that they type as tensors rather than `Tensor | Module`
    act_range: torch.Tensor
    w_scale: torch.Tensor
    observed: torch.Tensor

    def __init__(self, layer: nn.Linear, per_channel: bool = False, momentum: float = 0.01) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = bias_parameter(layer.bias)
        self.per_channel, self.momentum = per_channel, momentum
        self.register_buffer("act_range", torch.zeros(2))
        # the weight scale as of the last training step: a stored constant in the export
        self.register_buffer("w_scale", self.fresh_scale())
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    def fresh_scale(self) -> torch.Tensor:
        """max |w| / 127, per tensor or per output channel."""
        w = self.weight.detach().abs()
        peak = w.amax(dim=1) if self.per_channel else w.max()
        return (peak / _W_MAX).clamp_min(1e-12)

    def activation_qparams(self) -> tuple[float, int]:
        """uint8 scale and zero point of the input range (widened to include 0)."""
        lo = min(float(self.act_range[0]), 0.0)
        hi = max(float(self.act_range[1]), lo + 1e-6, 0.0)
        scale = (hi - lo) / 255
        return scale, int(min(255, max(0, round(-lo / scale))))

    def _observe(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            batch = torch.stack([x.min(), x.max()])
            if bool(self.observed):
                self.act_range.lerp_(batch, self.momentum)
            else:
                self.act_range.copy_(batch)
                self.observed.fill_(True)

    def quantized_weight(self) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.w_scale.copy_(self.fresh_scale())
        scale = self.w_scale
        if self.per_channel:
            zero = torch.zeros(self.out_features, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(self.weight, scale, zero, 0, -128, 127)
        return torch.fake_quantize_per_tensor_affine(self.weight, float(scale), 0, -128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x)
        scale, zero = self.activation_qparams()
        xq = torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)
        return F.linear(xq, self.quantized_weight(), self.bias)


def qat(
    model: nn.Module,
    ctx: CompressContext,
    *,
    per_channel: bool = False,
    momentum: float = 0.01,
) -> nn.Module:
    """Wrap every learned Linear in `FakeQuantLinear`, calibrate input ranges on train
    windows, fine-tune through the rounding, then snap the weights onto their int8 grid."""
    replace_linears(model, lambda _name, layer: FakeQuantLinear(layer, per_channel, momentum))
    # one pass over calibration windows seeds the ranges before the first gradient step
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(ctx.calibration()))
    ctx.fit(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FakeQuantLinear):
                module.w_scale.copy_(module.fresh_scale())
                module.weight.copy_(module.quantized_weight())
    ctx.note(
        per_channel=per_channel,
        input_ranges={
            name: [round(float(v), 5) for v in m.act_range]
            for name, m in model.named_modules()
            if isinstance(m, FakeQuantLinear)
        },
    )
    return model
