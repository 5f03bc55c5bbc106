"""What the cloud's torch nets share: the return features their graphs start with, and the
MLP trunk the price and trend students put their heads on."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = ["ReturnFeatures", "ReturnsTrunk", "VolLevel", "count_parameters"]

# Volatility floor as a share of the train-period daily volatility: keeps flat windows finite.
_VOL_FLOOR = 0.05
_Z_CLIP = 8.0


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


VolLevel = Literal["train", "window", "both"]


class ReturnFeatures(nn.Module):
    """Raw closes `[B, W]` -> EWMA-volatility-normalised log returns `[B, W-1]`, a volatility
    level `[B, 1]` and the EWMA volatility `[B, 1]`. The level is log(EWMA vol / train-period
    vol) for `level="train"`, or log(EWMA vol / the window's equal-weight vol) for
    `level="window"`: a short- over long-horizon ratio that needs no asset's scale; `"both"`
    gives both, `[B, 2]`.

    Scaling by the window's own volatility makes the network's job regime-free; the constants
    (EWMA weights, train volatility) are buffers fitted on the train period only."""

    ewma_weights: torch.Tensor
    train_vol: torch.Tensor

    def __init__(
        self, window: int, train_vol: float, ewma_lambda: float = 0.94, level: VolLevel = "train"
    ) -> None:
        super().__init__()
        self.level = level
        self.n_level = 2 if level == "both" else 1
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
        to_train = torch.log(vol / self.train_vol)
        if self.level == "train":
            return z, to_train, vol
        long_vol = torch.sqrt((returns * returns).mean(dim=1, keepdim=True) + floor)
        to_window = torch.log(vol / long_vol)
        if self.level == "window":
            return z, to_window, vol
        return z, torch.cat([to_train, to_window], dim=1), vol


class ReturnsTrunk(nn.Module):
    """Raw closes -> `ReturnFeatures` -> a ReLU MLP (`body`, which the compression steps
    rewrite); subclasses add a `head` on `self.width` features."""

    def __init__(
        self,
        window: int,
        train_vol: float,
        hidden: list[int] | tuple[int, ...],
        level: VolLevel = "train",
    ) -> None:
        super().__init__()
        self.features = ReturnFeatures(window, train_vol, level=level)
        layers: list[nn.Module] = []
        width = window - 1 + self.features.n_level  # normalised returns and the level(s)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.width = width

    def encode(self, close: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk's output `[B, width]` and the window's volatility `[B, 1]`."""
        z, level, vol = self.features(close)
        return self.body(torch.cat([z, level], dim=1)), vol
