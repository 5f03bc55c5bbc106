"""Training loops: pinball loss with early stopping, and distillation from a teacher."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "FitResult",
    "augment_windows",
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


def fit_quantile_model(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    levels: list[float],
    horizon_std: np.ndarray,
    *,
    epochs: int,
    patience: int,
    lr: float,
    batch_size: int,
    seed: int,
    teacher_train: np.ndarray | None = None,
    x_extra: np.ndarray | None = None,
    teacher_extra: np.ndarray | None = None,
    distill_weight: float = 0.0,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Minimise pinball loss (per-horizon, divided by the train std of that horizon's target),
    optionally blended with an L1 distance to teacher quantiles; keeps the weights of the
    epoch with the lowest validation pinball loss (early stopping)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lv = torch.tensor(levels, dtype=torch.float32)
    inv_std = torch.tensor(1.0 / horizon_std, dtype=torch.float32)
    distill = teacher_train is not None and distill_weight > 0
    x_all, y_all, t_all, has_y = x_train, y_train, teacher_train, np.ones(len(x_train), bool)
    if distill and x_extra is not None and teacher_extra is not None and len(x_extra):
        x_all = np.concatenate([x_train, x_extra])
        y_all = np.concatenate([y_train, np.zeros((len(x_extra), y_train.shape[1]), np.float32)])
        t_all = np.concatenate([teacher_train, teacher_extra])
        has_y = np.concatenate([has_y, np.zeros(len(x_extra), bool)])
    xt, yt, mt = torch.from_numpy(x_all), torch.from_numpy(y_all), torch.from_numpy(has_y)
    tt = torch.from_numpy(t_all) if distill else None
    xv, yv = torch.from_numpy(x_valid), torch.from_numpy(y_valid)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    best, best_state, best_epoch, since = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xt)))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            q = model(xt[idx])
            loss = torch.zeros(())
            mask = mt[idx]
            if mask.any():
                loss = (
                    loss
                    + (1 - (distill_weight if distill else 0.0))
                    * (pinball_torch(yt[idx][mask], q[mask], lv) * inv_std).mean()
                )
            if tt is not None:
                gap = (q - tt[idx]).abs().mean(dim=(0, 2)) * inv_std
                loss = loss + distill_weight * gap.mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            valid = float((pinball_torch(yv, model(xv), lv) * inv_std).mean())
        if progress:
            progress(epoch, valid)
        if valid < best - 1e-6:
            best, best_state, best_epoch, since = valid, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    logger.info("trained %d epochs, best %d (valid %.5f)", epoch, best_epoch, best)
    return FitResult(epochs=epoch, best_epoch=best_epoch, best_valid=best)
