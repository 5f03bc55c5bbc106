"""Torch forecasters with their preprocessing inside: raw closes in, return quantiles out."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

__all__ = ["LSTMTeacher", "MLPStudent", "QuantileHead", "ReturnFeatures", "count_parameters"]

# Volatility floor as a share of the train-period daily volatility: keeps flat windows finite.
_VOL_FLOOR = 0.05
_Z_CLIP = 8.0


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class ReturnFeatures(nn.Module):
    """Raw closes `[B, W]` -> EWMA-volatility-normalised log returns `[B, W-1]`, the log of
    the window's volatility relative to the train period `[B, 1]`, and that volatility `[B, 1]`.

    Scaling by the window's own volatility makes the network's job regime-free; the constants
    (EWMA weights, train volatility) are buffers fitted on the train period only."""

    def __init__(self, window: int, train_vol: float, ewma_lambda: float = 0.94) -> None:
        super().__init__()
        weights = ewma_lambda ** np.arange(window - 2, -1, -1, dtype=np.float64)
        self.register_buffer(
            "ewma_weights", torch.tensor(weights / weights.sum(), dtype=torch.float32)
        )
        self.register_buffer("train_vol", torch.tensor(float(train_vol), dtype=torch.float32))

    def forward(self, close: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_close = torch.log(close)
        returns = log_close[:, 1:] - log_close[:, :-1]
        variance = (returns * returns) @ self.ewma_weights
        floor = (_VOL_FLOOR * self.train_vol) ** 2
        vol = torch.sqrt(variance + floor).unsqueeze(1)
        z = torch.clamp(returns / vol, -_Z_CLIP, _Z_CLIP)
        return z, torch.log(vol / self.train_vol), vol


class QuantileHead(nn.Module):
    """Features -> quantiles `[B, H, Q]` that cannot cross: a lowest quantile plus cumulative
    softplus gaps, scaled by the window's volatility and sqrt(horizon)."""

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
    ) -> None:
        super().__init__()
        self.features = ReturnFeatures(window, train_vol)
        self.lstm = nn.LSTM(
            2, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.head = QuantileHead(hidden + 1, horizons, quantiles)

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        z, level, vol = self.features(close)
        sequence = torch.stack([z, level.expand_as(z)], dim=-1)
        out, _ = self.lstm(sequence)
        return self.head(torch.cat([out[:, -1], level], dim=1), vol)


class MLPStudent(nn.Module):
    """The student: a small MLP (quantizable, unlike recurrent layers). `body` and
    `head.linear` are what the compression steps rewrite."""

    def __init__(
        self,
        window: int,
        horizons: list[int],
        quantiles: list[float],
        train_vol: float,
        hidden: list[int] | tuple[int, ...] = (32, 32),
    ) -> None:
        super().__init__()
        self.features = ReturnFeatures(window, train_vol)
        layers: list[nn.Module] = []
        width = window  # W-1 returns and the volatility level
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = QuantileHead(width, horizons, quantiles)

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        z, level, vol = self.features(close)
        return self.head(self.body(torch.cat([z, level], dim=1)), vol)
