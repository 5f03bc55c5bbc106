"""Torch forecasters with their preprocessing inside: raw closes in, return quantiles out."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from forecaster.training.nets import ReturnFeatures, ReturnsTrunk, VolLevel, count_parameters

__all__ = ["LSTMTeacher", "MLPStudent", "QuantileHead", "ReturnFeatures", "count_parameters"]


class QuantileHead(nn.Module):
    """Features -> quantiles `[B, H, Q]` that cannot cross: a lowest quantile plus cumulative
    softplus gaps, scaled by the window's volatility and sqrt(horizon)."""

    horizon_scale: torch.Tensor
    cumulative: torch.Tensor

    def __init__(self, in_features: int, horizons: list[int], quantiles: list[float]) -> None:
        super().__init__()
        self.n_horizons, self.n_quantiles = len(horizons), len(quantiles)
        self.linear = nn.Linear(in_features, self.n_horizons * self.n_quantiles)
        scale = torch.tensor([math.sqrt(h) for h in horizons], dtype=torch.float32)
        self.register_buffer("horizon_scale", scale.view(1, -1, 1))
        # Upper-triangular ones: a matmul computes the cumulative sum with a quantizable op.
        self.register_buffer(
            "cumulative", torch.triu(torch.ones(self.n_quantiles, self.n_quantiles))
        )
        z = norm.ppf(np.asarray(quantiles))
        gaps = np.maximum(np.diff(z), 1e-3)
        # Start from Gaussian quantiles, so early training only refines a sane band.
        bias = np.concatenate([[z[0]], np.log(np.expm1(gaps))])
        with torch.no_grad():
            self.linear.weight.mul_(0.1)
            self.linear.bias.copy_(
                torch.tensor(np.tile(bias, self.n_horizons), dtype=torch.float32)
            )

    def forward(self, features: torch.Tensor, vol: torch.Tensor) -> torch.Tensor:
        raw = self.linear(features).view(-1, self.n_horizons, self.n_quantiles)
        steps = torch.cat([raw[..., :1], nn.functional.softplus(raw[..., 1:])], dim=-1)
        standard = steps @ self.cumulative
        return standard * vol.unsqueeze(-1) * self.horizon_scale


class LSTMTeacher(nn.Module):
    """The deep teacher: a stacked LSTM over normalised returns."""

    def __init__(
        self,
        window: int,
        horizons: list[int],
        quantiles: list[float],
        train_vol: float,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.1,
        level: VolLevel = "train",
    ) -> None:
        super().__init__()
        self.features = ReturnFeatures(window, train_vol, level=level)
        n_level = self.features.n_level
        self.lstm = nn.LSTM(
            1 + n_level, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.head = QuantileHead(hidden + n_level, horizons, quantiles)

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        z, level, vol = self.features(close)
        steps = level.unsqueeze(1).expand(-1, z.shape[1], -1)
        sequence = torch.cat([z.unsqueeze(-1), steps], dim=-1)
        out, _ = self.lstm(sequence)
        return self.head(torch.cat([out[:, -1], level], dim=1), vol)


class MLPStudent(ReturnsTrunk):
    """The student: a small MLP (quantizable, unlike recurrent layers). `body` and
    `head.linear` are what the compression steps rewrite."""

    def __init__(
        self,
        window: int,
        horizons: list[int],
        quantiles: list[float],
        train_vol: float,
        hidden: list[int] | tuple[int, ...] = (32, 32),
        level: VolLevel = "train",
    ) -> None:
        super().__init__(window, train_vol, hidden, level)
        self.head = QuantileHead(self.width, horizons, quantiles)

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        features, vol = self.encode(close)
        return self.head(features, vol)
