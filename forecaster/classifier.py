"""The trend student: a small MLP classifier with its preprocessing and softmax inside the graph,
raw closes in, class probabilities out."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from forecaster.models import ReturnFeatures

__all__ = ["MLPClassifier"]


class MLPClassifier(nn.Module):
    """Raw closes `[B, W]` -> probabilities `[B, n_classes]`: volatility-normalised returns and
    the window's volatility level (regimes differ mostly in volatility) through a ReLU MLP."""

    def __init__(
        self,
        window: int,
        n_classes: int,
        train_vol: float,
        hidden: list[int] | tuple[int, ...] = (32, 32),
    ) -> None:
        super().__init__()
        self.features = ReturnFeatures(window, train_vol)
        layers: list[nn.Module] = []
        width = window  # W-1 normalised returns and the volatility level
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        z, level, _ = self.features(close)
        return F.softmax(self.head(self.body(torch.cat([z, level], dim=1))), dim=-1)
