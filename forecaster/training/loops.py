"""Training loops: one early-stopping loop, and pinball loss (optionally distilled from a
teacher) on top of it."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "DistillTargets",
    "EarlyStopping",
    "FitResult",
    "LoopSettings",
    "augment_windows",
    "fit_early_stopping",
    "fit_quantile_model",
    "pinball_torch",
    "predict_torch",
]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, float], None]


def pinball_torch(y: torch.Tensor, q: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss per horizon `[H]` for y `[N, H]`, q `[N, H, Q]`."""
    diff = y.unsqueeze(-1) - q
    return torch.maximum(levels * diff, (levels - 1) * diff).mean(dim=(0, 2))


@torch.no_grad()
def predict_torch(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    out = [
        model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out)


def augment_windows(
    x: np.ndarray, copies: int, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Jittered copies of close windows: each log return perturbed by `noise` times the
    window's own return std, the path rebuilt from the first close. Teacher-labelled only."""
    if copies == 0 or len(x) == 0:
        return x[:0]
    log_x = np.log(x.astype(np.float64))
    returns = np.diff(log_x, axis=1)
    scale = returns.std(axis=1, keepdims=True)
    out = []
    for _ in range(copies):
        jittered = returns + noise * scale * rng.standard_normal(returns.shape)
        path = np.concatenate([log_x[:, :1], log_x[:, :1] + np.cumsum(jittered, axis=1)], axis=1)
        out.append(np.exp(path))
    return np.concatenate(out).astype(np.float32)


@dataclass
class FitResult:
    epochs: int
    best_epoch: int
    best_valid: float


@dataclass(frozen=True)
class LoopSettings:
    """How long and how fast one training run goes; `patience` epochs without a better
    validation score stop it."""

    epochs: int
    patience: int
    lr: float
    batch_size: int
    seed: int


BatchLoss = Callable[[torch.Tensor], torch.Tensor]


class EarlyStopping:
    """Remembers the weights of the epoch with the lowest validation score and says when
    `patience` epochs in a row did not improve on it by more than `min_delta`."""

    def __init__(self, model: nn.Module, patience: int, min_delta: float = 1e-6) -> None:
        self.model, self.patience, self.min_delta = model, patience, min_delta
        self.best, self.best_epoch, self._since = float("inf"), 0, 0
        self._state = copy.deepcopy(model.state_dict())

    def update(self, epoch: int, valid: float) -> bool:
        """Record one epoch's validation score; True when training should stop."""
        if valid < self.best - self.min_delta:
            self.best, self.best_epoch, self._since = valid, epoch, 0
            self._state = copy.deepcopy(self.model.state_dict())
            return False
        self._since += 1
        return self._since >= self.patience

    def restore(self) -> None:
        """Load the best epoch's weights back into the model."""
        self.model.load_state_dict(self._state)


def fit_early_stopping(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    n_train: int,
    batch_loss: BatchLoss,
    validate: Callable[[], float],
    settings: LoopSettings,
    rng: np.random.Generator,
    progress: ProgressFn | None = None,
) -> FitResult:
    """The one training loop: shuffled minibatches of `n_train` rows (`batch_loss` gets the
    batch's row indices), gradients clipped to norm 1, `validate` after each epoch (no grad,
    eval mode); stops after `patience` epochs without improvement and keeps the best epoch."""
    stopper = EarlyStopping(model, settings.patience)
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(n_train))
        for start in range(0, len(order), settings.batch_size):
            loss = batch_loss(order[start : start + settings.batch_size])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            valid = validate()
        if progress:
            progress(epoch, valid)
        if stopper.update(epoch, valid):
            break
    stopper.restore()
    model.eval()
    return FitResult(epochs=epoch, best_epoch=stopper.best_epoch, best_valid=stopper.best)


@dataclass(frozen=True)
class DistillTargets:
    """The teacher's quantiles on the train windows, and on extra (jittered, unlabelled)
    windows, blended into the loss with `weight`."""

    teacher_train: np.ndarray
    weight: float
    x_extra: np.ndarray | None = None
    teacher_extra: np.ndarray | None = None


def fit_quantile_model(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    levels: list[float],
    horizon_std: np.ndarray,
    settings: LoopSettings,
    distill: DistillTargets | None = None,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Minimise pinball loss (per-horizon, divided by the train std of that horizon's target),
    optionally blended with an L1 distance to teacher quantiles; keeps the weights of the
    epoch with the lowest validation pinball loss (early stopping)."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    lv = torch.tensor(levels, dtype=torch.float32)
    inv_std = torch.tensor(1.0 / horizon_std, dtype=torch.float32)
    x_train, y_train = train
    if distill is not None and distill.weight <= 0:
        distill = None
    x_all, y_all, has_y = x_train, y_train, np.ones(len(x_train), bool)
    t_all = distill.teacher_train if distill else None
    extra = distill.x_extra if distill else None
    if distill and extra is not None and distill.teacher_extra is not None and len(extra):
        x_all = np.concatenate([x_train, extra])
        y_all = np.concatenate([y_train, np.zeros((len(extra), y_train.shape[1]), np.float32)])
        t_all = np.concatenate([distill.teacher_train, distill.teacher_extra])
        has_y = np.concatenate([has_y, np.zeros(len(extra), bool)])
    xt, yt, mt = torch.from_numpy(x_all), torch.from_numpy(y_all), torch.from_numpy(has_y)
    tt = torch.from_numpy(t_all) if t_all is not None else None
    weight = distill.weight if distill else 0.0
    xv, yv = torch.from_numpy(valid[0]), torch.from_numpy(valid[1])

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        q = model(xt[idx])
        loss = torch.zeros(())
        mask = mt[idx]
        if mask.any():
            loss = (
                loss + (1 - weight) * (pinball_torch(yt[idx][mask], q[mask], lv) * inv_std).mean()
            )
        if tt is not None:
            loss = loss + weight * ((q - tt[idx]).abs().mean(dim=(0, 2)) * inv_std).mean()
        return loss

    def validate() -> float:
        return float((pinball_torch(yv, model(xv), lv) * inv_std).mean())

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    result = fit_early_stopping(
        model, optimizer, len(xt), batch_loss, validate, settings, rng, progress
    )
    logger.info(
        "trained %d epochs, best %d (valid %.5f)",
        result.epochs,
        result.best_epoch,
        result.best_valid,
    )
    return result
