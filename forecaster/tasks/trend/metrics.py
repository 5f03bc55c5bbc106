"""Probabilistic classification metrics for the trend task: accuracy against labels, Brier score,
log loss, agreement with a teacher, calibration. Plain functions on numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "agreement",
    "balanced_accuracy",
    "brier_score",
    "classification_metrics",
    "expected_calibration_error",
    "kl_divergence",
    "log_loss",
    "reliability",
]

# Probabilities are clipped here before taking logs: a confident miss costs log(1e7) ~ 16 nats
# instead of infinity, so one day cannot dominate a period's mean.
EPS = 1e-7


def _check(proba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if proba.ndim != 2 or labels.shape != (len(proba),):
        raise ValueError(f"need proba [N, K] and labels [N], got {proba.shape} and {labels.shape}")
    return proba, labels


def accuracy(proba: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose most probable class is the label."""
    proba, labels = _check(proba, labels)
    return float((proba.argmax(axis=1) == labels).mean())


def balanced_accuracy(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes that occur: a rare class counts as much as a common one."""
    proba, labels = _check(proba, labels)
    hit = proba.argmax(axis=1) == labels
    return float(np.mean([hit[labels == c].mean() for c in np.unique(labels)]))


def brier_score(proba: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot label
    (0 is perfect, 2 is the worst possible)."""
    proba, labels = _check(proba, labels)
    onehot = np.eye(proba.shape[1])[labels]
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def log_loss(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the label, in nats."""
    proba, labels = _check(proba, labels)
    picked = proba[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, EPS, 1.0)).mean())


def agreement(proba: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows where both give the same most probable class."""
    return float((np.argmax(proba, axis=1) == np.argmax(reference, axis=1)).mean())


def kl_divergence(reference: np.ndarray, proba: np.ndarray) -> float:
    """Mean KL(reference || proba) in nats: how much of the reference's belief is lost."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), EPS, 1.0)
    p = np.clip(np.asarray(proba, dtype=np.float64), EPS, 1.0)
    # clipping leaves rows a hair off a distribution; KL is never negative
    return max(0.0, float((ref * (np.log(ref) - np.log(p))).sum(axis=1).mean()))


def reliability(proba: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """One-vs-rest reliability curve pooled over classes: per probability bin the mean
    forecast, the observed frequency and the count (empty bins dropped)."""
    proba, labels = _check(proba, labels)
    forecast = proba.ravel()
    observed = (np.eye(proba.shape[1])[labels]).ravel()
    which = np.minimum((forecast * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    keep = counts > 0
    mean_forecast = np.bincount(which, forecast, bins)[keep] / counts[keep]
    frequency = np.bincount(which, observed, bins)[keep] / counts[keep]
    return {
        "forecast": mean_forecast.tolist(),
        "observed": frequency.tolist(),
        "count": counts[keep].astype(int).tolist(),
    }


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean gap between forecast and observed frequency over the pooled bins."""
    curve = reliability(proba, labels, bins)
    counts = np.asarray(curve["count"], dtype=np.float64)
    gaps = np.abs(np.asarray(curve["forecast"]) - np.asarray(curve["observed"]))
    return float((gaps * counts).sum() / counts.sum())


def classification_metrics(
    proba: np.ndarray, labels: np.ndarray, teacher: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Every trend metric of one model on one period: against the ex-post `labels`
    (accuracy, Brier, log loss, calibration) and against the `teacher`'s probabilities."""
    proba, labels = _check(proba, labels)
    predicted = proba.argmax(axis=1)
    per_class = {}
    for c, name in enumerate(classes):
        actual = labels == c
        per_class[name] = {
            "true_share": float(actual.mean()),
            "predicted_share": float((predicted == c).mean()),
            "mean_proba": float(proba[:, c].mean()),
            "recall": float((predicted[actual] == c).mean()) if actual.any() else None,
        }
    return {
        "n": len(labels),
        "accuracy": accuracy(proba, labels),
        "balanced_accuracy": balanced_accuracy(proba, labels),
        "brier": brier_score(proba, labels),
        "log_loss": log_loss(proba, labels),
        "ece": expected_calibration_error(proba, labels),
        "agreement": agreement(proba, teacher),
        "kl_from_teacher": kl_divergence(teacher, proba),
        "per_class": per_class,
        "reliability": reliability(proba, labels),
    }
