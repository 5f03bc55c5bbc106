"""The trend student: a small MLP classifier with its preprocessing and softmax inside the graph,
raw closes in, class probabilities out."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from forecaster.training.nets import ReturnsTrunk

__all__ = ["MLPClassifier"]


class MLPClassifier(ReturnsTrunk):
    """Raw closes `[B, W]` -> probabilities `[B, n_classes]`: volatility-normalised returns and
    the window's volatility level (regimes differ mostly in volatility) through a ReLU MLP."""

    def __init__(
        self,
        window: int,
        n_classes: int,
        train_vol: float,
        hidden: list[int] | tuple[int, ...] = (32, 32),
    ) -> None:
        super().__init__(window, train_vol, hidden)
        self.head = nn.Linear(self.width, n_classes)

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        features, _ = self.encode(close)
        return F.softmax(self.head(features), dim=-1)
