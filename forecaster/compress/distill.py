"""Knowledge distillation: the first step of a chain trains the student, with or without the
teacher's soft targets; the classifier variant uses temperature-softened probabilities."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from forecaster.compress.context import CompressContext
from forecaster.training.loops import FitResult, LoopSettings, augment_windows, fit_early_stopping

__all__ = ["ClassifierDistillation", "distill", "distill_classifier", "train"]

logger = logging.getLogger(__name__)

Outputs = Literal["logits", "proba"]


def train(model: nn.Module, ctx: CompressContext) -> nn.Module:
    """Fit on the true targets only: the reference that shows what distillation adds."""
    ctx.fit(model, ctx.train, distill_weight=0.0)
    return model


def distill(
    model: nn.Module,
    ctx: CompressContext,
    *,
    weight: float | None = None,
    augment_copies: int | None = None,
    augment_noise: float | None = None,
) -> nn.Module:
    """Fit on (1 - weight) x pinball(true targets) + weight x L1(teacher quantiles), with
    `augment_copies` jittered copies of each train window labelled by the teacher alone
    (unset options come from the recipe's student section, via the context)."""
    weight = ctx.distill_weight if weight is None else weight
    if ctx.teacher is None:
        raise ValueError("distill needs a teacher")
    if not 0 < weight <= 1:
        raise ValueError(f"distill weight must lie in (0, 1], got {weight}")
    copies = ctx.augment_copies if augment_copies is None else augment_copies
    noise = ctx.augment_noise if augment_noise is None else augment_noise
    ctx.note(
        teacher=type(ctx.teacher).__name__,
        weight=weight,
        augment_copies=copies,
        augment_noise=noise,
    )
    ctx.fit(model, ctx.train, distill_weight=weight, augment_copies=copies, augment_noise=noise)
    return model


def _logits(out: torch.Tensor, outputs: Outputs) -> torch.Tensor:
    # log-probabilities are logits up to a per-row constant, which softmax ignores
    return out if outputs == "logits" else torch.log(out.clamp_min(1e-8))


@dataclass(frozen=True)
class ClassifierDistillation:
    """How a classifier learns from its teacher: the KL term's `weight` against the labels'
    cross-entropy, the softmax `temperature`, what the nets output, and jittered copies."""

    weight: float = 0.7
    temperature: float = 2.0
    outputs: Outputs = "logits"
    augment_copies: int = 0
    augment_noise: float = 0.1


_DEFAULT_LOOP = LoopSettings(epochs=100, patience=10, lr=3e-3, batch_size=256, seed=0)


def distill_classifier(
    student: nn.Module,
    teacher: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    how: ClassifierDistillation | None = None,
    loop: LoopSettings = _DEFAULT_LOOP,
) -> FitResult:
    """Hinton distillation: (1 - weight) x cross-entropy(labels) + weight x T^2 x
    KL(teacher_T || student_T), softmax at temperature T; jittered windows carry the KL term
    only. Keeps the epoch with the lowest validation cross-entropy."""
    how = how or ClassifierDistillation()
    weight, temperature, outputs = how.weight, how.temperature, how.outputs
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    torch.manual_seed(loop.seed)
    rng = np.random.default_rng(loop.seed)
    extra = augment_windows(x_train, how.augment_copies, how.augment_noise, rng)
    x_all = np.concatenate([x_train, extra]) if len(extra) else x_train
    labelled = torch.from_numpy(np.arange(len(x_all)) < len(x_train))
    xt = torch.from_numpy(x_all)
    yt = torch.from_numpy(np.concatenate([y_train, np.zeros(len(extra), y_train.dtype)]))
    yt = yt.long()
    teacher.eval()
    with torch.no_grad():
        soft = F.softmax(_logits(teacher(xt), outputs) / temperature, dim=-1)
    xv, yv = torch.from_numpy(x_valid), torch.from_numpy(y_valid).long()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        logits = _logits(student(xt[idx]), outputs)
        kl = F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft[idx], reduction="batchmean")
        loss = weight * temperature**2 * kl
        mask = labelled[idx]
        if mask.any():
            loss = loss + (1 - weight) * F.cross_entropy(logits[mask], yt[idx][mask])
        return loss

    def validate() -> float:
        return float(F.cross_entropy(_logits(student(xv), outputs), yv))

    optimizer = torch.optim.AdamW(student.parameters(), lr=loop.lr, weight_decay=1e-4)
    result = fit_early_stopping(student, optimizer, len(xt), batch_loss, validate, loop, rng)
    logger.info(
        "distilled classifier: %d epochs, best %d (valid CE %.4f)",
        result.epochs,
        result.best_epoch,
        result.best_valid,
    )
    return result
