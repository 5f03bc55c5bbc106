"""The trend teacher: a Markov-switching model of daily returns (statsmodels) fitted on the train
period, its real-time (filtered) and ex-post (smoothed) regime probabilities under the fixed
fitted parameters, and the same filter as a torch module over one window of raw closes."""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
import torch
from statsmodels.tools.sm_exceptions import ConvergenceWarning, EstimationWarning
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression
from torch import nn
from torch.nn import functional as F

from forecaster.errors import TrainError

__all__ = [
    "MarkovRegimeTeacher",
    "RegimeFilter",
    "RegimeParams",
    "fixed_lag_probabilities",
    "percent_returns",
]

logger = logging.getLogger(__name__)

OrderBy = Literal["mean", "sharpe"]


def percent_returns(close: np.ndarray) -> np.ndarray:
    """Daily log returns in percent, `r_t = 100 log(c_t / c_{t-1})`, the scale the regime model
    is fitted on (the optimizer is far better conditioned than on raw log returns)."""
    return 100.0 * np.diff(np.log(np.asarray(close, dtype=np.float64)), axis=-1)


@dataclass(frozen=True)
class RegimeParams:
    """Fitted parameters in class order (class 0 = lowest regime mean, or mean/volatility):
    mean and variance of the percent return in each regime, `transition[from, to]`."""

    means: np.ndarray
    variances: np.ndarray
    transition: np.ndarray

    @property
    def k(self) -> int:
        return len(self.means)

    def ergodic(self) -> np.ndarray:
        """Long-run share of time in each regime: the left eigenvector of the transition."""
        a = np.vstack([self.transition.T - np.eye(self.k), np.ones(self.k)])
        b = np.r_[np.zeros(self.k), 1.0]
        pi = np.linalg.lstsq(a, b, rcond=None)[0]
        return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()

    def describe(self, classes: list[str]) -> dict[str, dict[str, float]]:
        """Per class: daily mean and volatility (percent), expected duration in days, long-run share."""
        stay, shares = np.diag(self.transition), self.ergodic()
        return {
            name: {
                "mean_pct": float(self.means[i]),
                "vol_pct": float(math.sqrt(self.variances[i])),
                "annualized_mean_pct": float(252 * self.means[i]),
                "annualized_vol_pct": float(math.sqrt(252 * self.variances[i])),
                "stay_probability": float(stay[i]),
                "expected_duration_days": float(1.0 / max(1.0 - stay[i], 1e-12)),
                "ergodic_share": float(shares[i]),
            }
            for i, name in enumerate(classes)
        }


@dataclass(frozen=True)
class _Attempt:
    start: str
    llf: float
    converged: bool
    seconds: float
    params: np.ndarray = field(repr=False)


def fixed_lag_probabilities(
    filtered: np.ndarray, predicted: np.ndarray, transition: np.ndarray, lag: int
) -> np.ndarray:
    """`Pr(s_{t-lag} | r_1..r_t)` for every t: the regime of `lag` days ago as known today
    (Kim's backward recursion run `lag` steps from each t). Rows t < lag are NaN.

    `filtered[t] = Pr(s_t | r_<=t)`, `predicted[t] = Pr(s_t | r_<t)`, `transition[from, to]`."""
    n = len(filtered)
    out = np.full_like(filtered, np.nan)
    if lag == 0:
        return filtered.copy()
    if lag >= n:
        return out
    t = np.arange(lag, n)
    vec = filtered[t]
    for step in range(1, lag + 1):
        s = t - step
        ratio = vec / np.clip(predicted[s + 1], 1e-300, None)
        vec = filtered[s] * (ratio @ transition.T)
        vec /= vec.sum(axis=1, keepdims=True)
    out[lag:] = vec
    return out


class MarkovRegimeTeacher:
    """`MarkovRegression` with a switching mean (and variance) on percent log returns.

    `fit` tries several starting points and keeps the converged one with the highest
    likelihood: the 3-regime likelihood has poor local optima (fast-switching solutions) that
    a single start often lands in. Afterwards every probability is computed with these fixed
    parameters, columns in class order."""

    def __init__(
        self,
        k_regimes: int = 3,
        *,
        switching_variance: bool = True,
        order_by: OrderBy = "mean",
        starts: int = 3,
        em_iter: int = 20,
        maxiter: int = 500,
        seed: int = 0,
    ) -> None:
        self.k_regimes = k_regimes
        self.switching_variance = switching_variance
        self.order_by = order_by
        self.starts = starts
        self.em_iter = em_iter
        self.maxiter = maxiter
        self.seed = seed
        self.attempts: list[_Attempt] = []

    def _model(self, returns: np.ndarray) -> MarkovRegression:
        return MarkovRegression(
            np.asarray(returns, dtype=np.float64),
            k_regimes=self.k_regimes,
            trend="c",
            switching_variance=self.switching_variance,
        )

    def _start_points(
        self, model: MarkovRegression, returns: np.ndarray
    ) -> list[tuple[str, np.ndarray | None]]:
        """Persistent regimes spread over volatility first (where daily equity regimes live),
        then statsmodels' own default, then random persistent starts."""
        k, var = self.k_regimes, float(returns.var())
        rng = np.random.default_rng(self.seed)

        def build(stay: np.ndarray, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
            values: dict[str, float] = {}
            for i in range(k):
                for j in range(k):
                    values[f"p[{i}->{j}]"] = stay[i] if i == j else (1 - stay[i]) / (k - 1)
            for i in range(k):
                values[f"const[{i}]"] = means[i]
                values[f"sigma2[{i}]"] = var * scales[i]
            values["sigma2"] = var
            return np.array([values[name] for name in model.param_names])

        scales = np.exp(np.linspace(math.log(0.25), math.log(4.0), k))
        means = np.linspace(0.05, -0.1, k) * math.sqrt(var)
        points: list[tuple[str, np.ndarray | None]] = [
            ("persistent", build(np.full(k, 0.98), means, scales)),
            ("statsmodels-default", None),
        ]
        for i in range(max(0, self.starts - 2)):
            points.append(
                (
                    f"random-{i + 1}",
                    build(
                        rng.uniform(0.9, 0.995, k),
                        np.sort(rng.normal(0.0, 0.1, k))[::-1] * math.sqrt(var),
                        np.sort(np.exp(rng.uniform(math.log(0.1), math.log(10.0), k))),
                    ),
                )
            )
        return points[: self.starts]

    def fit(self, returns: np.ndarray) -> Self:
        """Maximum likelihood on train-period percent returns; raises TrainError if no start
        converges to a valid solution."""
        returns = np.asarray(returns, dtype=np.float64)
        if len(returns) < 20 * self.k_regimes:
            raise TrainError(
                f"{len(returns)} train returns are too few for {self.k_regimes} regimes"
            )
        model = self._model(returns)
        self.attempts = []
        for label, start in self._start_points(model, returns):
            begin = time.perf_counter()
            with warnings.catch_warnings():
                # Non-convergence is checked below from mle_retvals, per attempt.
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", EstimationWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    res = model.fit(
                        start_params=start, em_iter=self.em_iter, maxiter=self.maxiter, disp=False
                    )
                except (ValueError, np.linalg.LinAlgError) as exc:
                    logger.info("regime fit from %s start failed: %s", label, exc)
                    continue
            params = np.asarray(res.params, dtype=np.float64)
            valid = bool(np.isfinite(params).all() and np.isfinite(res.llf))
            attempt = _Attempt(
                start=label,
                llf=float(res.llf),
                converged=bool(res.mle_retvals.get("converged", False)) and valid,
                seconds=time.perf_counter() - begin,
                params=params,
            )
            logger.info(
                "regime fit from %s start: llf %.2f converged %s",
                label,
                attempt.llf,
                attempt.converged,
            )
            self.attempts.append(attempt)
        good = [a for a in self.attempts if a.converged]
        if not good:
            raise TrainError(
                f"the {self.k_regimes}-regime Markov-switching fit did not converge from "
                f"{len(self.attempts)} starts; raise [trend.teacher] maxiter / em_iter or starts"
            )
        best = max(good, key=lambda a: a.llf)
        self.sm_params_ = best.params
        self.llf_ = best.llf
        self.nobs_ = len(returns)
        self.order_ = self._class_order(model, best.params)
        self.params_ = self._ordered_params(model, best.params)
        return self

    def _raw_moments(
        self, model: MarkovRegression, params: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        named = dict(zip(model.param_names, params, strict=True))
        k = self.k_regimes
        means = np.array([named[f"const[{i}]"] for i in range(k)])
        if self.switching_variance:
            variances = np.array([named[f"sigma2[{i}]"] for i in range(k)])
        else:
            variances = np.full(k, named["sigma2"])
        return means, variances

    def _class_order(self, model: MarkovRegression, params: np.ndarray) -> np.ndarray:
        means, variances = self._raw_moments(model, params)
        key = means if self.order_by == "mean" else means / np.sqrt(variances)
        return np.argsort(key, kind="stable")

    def _ordered_params(self, model: MarkovRegression, params: np.ndarray) -> RegimeParams:
        means, variances = self._raw_moments(model, params)
        to_from = model.regime_transition_matrix(params)[:, :, 0]
        o = self.order_
        return RegimeParams(
            means=means[o], variances=variances[o], transition=to_from.T[np.ix_(o, o)]
        )

    @property
    def params(self) -> RegimeParams:
        return self.params_

    def _filter(self, returns: np.ndarray) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._model(returns).filter(self.sm_params_)

    def filtered(self, returns: np.ndarray) -> np.ndarray:
        """Real-time probabilities `Pr(s_t | r_1..r_t)` `[T, k]`: row t uses no later return."""
        return self._filter(returns).filtered_marginal_probabilities[:, self.order_]

    def smoothed(self, returns: np.ndarray) -> np.ndarray:
        """Ex-post probabilities `Pr(s_t | r_1..r_T)` `[T, k]` (Kim smoother): hindsight labels."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = self._model(returns).smooth(self.sm_params_)
        return res.smoothed_marginal_probabilities[:, self.order_]

    def fixed_lag(self, returns: np.ndarray, lag: int) -> np.ndarray:
        """`Pr(s_{t-lag} | r_1..r_t)` `[T, k]`: the regime of `lag` days ago as known at t."""
        res = self._filter(returns)
        o = self.order_
        return fixed_lag_probabilities(
            res.filtered_marginal_probabilities[:, o],
            res.predicted_marginal_probabilities[:, o],
            self.params_.transition,
            lag,
        )

    def summary(self, classes: list[str]) -> dict[str, Any]:
        """What the report records about the fit: likelihood, every start, regimes by class."""
        return {
            "model": "statsmodels MarkovRegression",
            "k_regimes": self.k_regimes,
            "switching_variance": self.switching_variance,
            "order_by": self.order_by,
            "nobs": self.nobs_,
            "llf": self.llf_,
            "attempts": [
                {"start": a.start, "llf": a.llf, "converged": a.converged, "seconds": a.seconds}
                for a in self.attempts
            ],
            "regimes": self.params_.describe(classes),
            "transition": self.params_.transition.tolist(),
        }


class RegimeFilter(nn.Module):
    """The teacher's Hamilton filter over one window of raw closes `[B, W]` -> class
    probabilities `[B, k]` at the last close, started from the long-run regime shares: the
    Markov-switching teacher restricted to exactly what the device sees, exportable to ONNX."""

    means: torch.Tensor
    variances: torch.Tensor
    transition: torch.Tensor
    ergodic: torch.Tensor

    def __init__(self, params: RegimeParams, window: int) -> None:
        super().__init__()
        self.window = window
        self.register_buffer("means", torch.tensor(params.means, dtype=torch.float32))
        self.register_buffer("variances", torch.tensor(params.variances, dtype=torch.float32))
        self.register_buffer("transition", torch.tensor(params.transition, dtype=torch.float32))
        self.register_buffer("ergodic", torch.tensor(params.ergodic(), dtype=torch.float32))

    def forward(self, close: torch.Tensor) -> torch.Tensor:
        log_close = torch.log(close)
        returns = 100.0 * (log_close[:, 1:] - log_close[:, :-1])
        diff = returns.unsqueeze(-1) - self.means
        loglik = -0.5 * (torch.log(2 * math.pi * self.variances) + diff * diff / self.variances)
        proba = self.ergodic.expand(close.shape[0], -1)
        for t in range(self.window - 1):
            # log space: a crash day has likelihood ~exp(-500) under the calm regime
            predicted = torch.log(torch.clamp(proba @ self.transition, min=1e-30))
            proba = F.softmax(predicted + loglik[:, t], dim=-1)
        return proba
