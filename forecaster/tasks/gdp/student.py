"""The GDP student: a small MLP that reads the ragged indicator window with NaNs, distilled
from the DFM teacher's nowcasts over many simulated information sets, exported to ONNX with
the NaN handling and scaling inside the graph."""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from device.runtime import make_session
from forecaster.data.macro import InfoSet, MacroPanel
from forecaster.training.loops import LoopSettings, fit_early_stopping

__all__ = [
    "BAND_LEVELS",
    "INPUT_GDP",
    "INPUT_MONTHLY",
    "OUTPUT_BAND",
    "OUTPUT_NOWCAST",
    "NowcastStudent",
    "SimulationPolicy",
    "StudentFit",
    "StudentLoop",
    "StudentTargets",
    "export_student",
    "fit_student",
    "latency_us",
    "predict_student",
    "run_student_onnx",
    "simulate_info_sets",
    "stack_inputs",
]

logger = logging.getLogger(__name__)

INPUT_MONTHLY, INPUT_GDP = "monthly", "gdp"
OUTPUT_NOWCAST, OUTPUT_BAND = "nowcast", "band"
BAND_LEVELS = (0.1, 0.9)
OPSET = 17
# Standardized inputs are clipped here: a crisis month many train-period standard deviations
# out would otherwise push the ReLU network far outside anything it was trained on.
Z_CLIP = 10.0


def stack_inputs(infos: Sequence[InfoSet]) -> tuple[np.ndarray, np.ndarray]:
    """Information sets as the graph's float32 inputs `[B, W, N]` and `[B, L]` (NaN = unknown)."""
    monthly = np.stack([i.monthly for i in infos]).astype(np.float32)
    gdp = np.stack([i.gdp for i in infos]).astype(np.float32)
    return monthly, gdp


class NowcastStudent(nn.Module):
    """Raw indicator window `[B, W, N]` and GDP lags `[B, L]`, NaN for missing -> nowcast `[B]`
    (annualized %) and a band `[B, 2]` (10% / 90% quantiles of GDP growth) around it.

    Inside: mask = isnan(x); x standardized with train-period statistics, NaN -> 0; the masks
    are concatenated so the network knows a 0 from a missing value. The band adds fixed
    offsets calibrated on held-out errors (`calibrate_band`)."""

    monthly_mean: torch.Tensor
    monthly_std: torch.Tensor
    gdp_mean: torch.Tensor
    gdp_std: torch.Tensor
    band_offsets: torch.Tensor

    def __init__(
        self,
        window: int,
        gdp_lags: int,
        monthly_mean: np.ndarray,
        monthly_std: np.ndarray,
        gdp_mean: float,
        gdp_std: float,
        hidden: Sequence[int],
    ) -> None:
        super().__init__()
        n_series = len(monthly_mean)
        self.window, self.n_series, self.gdp_lags = window, n_series, gdp_lags
        self.register_buffer("monthly_mean", torch.tensor(monthly_mean, dtype=torch.float32))
        self.register_buffer("monthly_std", torch.tensor(monthly_std, dtype=torch.float32))
        self.register_buffer("gdp_mean", torch.tensor(float(gdp_mean), dtype=torch.float32))
        self.register_buffer("gdp_std", torch.tensor(float(gdp_std), dtype=torch.float32))
        self.register_buffer("band_offsets", torch.zeros(len(BAND_LEVELS)))
        layers: list[nn.Module] = []
        width = 2 * (window * n_series + gdp_lags)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def centre(self, monthly: torch.Tensor, gdp: torch.Tensor) -> torch.Tensor:
        """The nowcast `[B]` in annualized %."""
        m_missing = torch.isnan(monthly)
        z = (monthly - self.monthly_mean) / self.monthly_std
        z = torch.where(m_missing, torch.zeros_like(z), z).clamp(-Z_CLIP, Z_CLIP)
        g_missing = torch.isnan(gdp)
        zg = (gdp - self.gdp_mean) / self.gdp_std
        zg = torch.where(g_missing, torch.zeros_like(zg), zg).clamp(-Z_CLIP, Z_CLIP)
        features = torch.cat(
            [z.flatten(1), m_missing.float().flatten(1), zg, g_missing.float()], dim=1
        )
        return self.gdp_mean + self.gdp_std * self.net(features)[:, 0]

    def forward(self, monthly: torch.Tensor, gdp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        centre = self.centre(monthly, gdp)
        return centre, centre[:, None] + self.band_offsets

    def calibrate_band(self, errors: np.ndarray) -> np.ndarray:
        """Split-conformal band: the `BAND_LEVELS` quantiles of held-out errors (actual minus
        nowcast), added to every nowcast. Returns the offsets."""
        offsets = np.quantile(np.asarray(errors, dtype=np.float64), BAND_LEVELS)
        self.band_offsets.copy_(torch.tensor(offsets, dtype=torch.float32))
        return offsets


@dataclass(frozen=True)
class SimulationPolicy:
    """How simulated information sets differ from the calendar's. Hiding: a series' latest
    one or two releases late (`delay_prob`), a series absent from the whole window
    (`absent_prob`), isolated gaps (`hole_prob`). Amplifying (`amplify_prob`, when train means
    are given): each indicator's deviations from its train mean scaled by one factor drawn
    log-uniformly in [1/amplify_max, amplify_max], so the student also learns the teacher's
    response to swings larger than the train period's (crises). Ending: the columns `ended`
    (series whose source stops before the test period) hidden with `ended_prob`."""

    delay_prob: float = 0.2
    absent_prob: float = 0.05
    hole_prob: float = 0.03
    amplify_prob: float = 0.0
    amplify_max: float = 3.0
    ended_prob: float = 0.0
    ended: tuple[int, ...] = ()


def simulate_info_sets(
    panel: MacroPanel,
    quarters: pd.PeriodIndex,
    per_quarter: int,
    window_quarters: int,
    policy: SimulationPolicy,
    rng: np.random.Generator,
    train_mean: np.ndarray | None = None,
) -> list[InfoSet]:
    """For each quarter, `per_quarter` information sets at random moments within it (every
    ragged edge the release calendar produces), each changed by `policy`."""
    out: list[InfoSet] = []
    for quarter in quarters:
        start, end = quarter.start_time.value, quarter.end_time.value
        for cut_ns in rng.integers(start, end, size=per_quarter, endpoint=True):
            info = panel.info_set(quarter, pd.Timestamp(cut_ns), window_quarters)
            info = info.masked(*_extra_hidden(info, policy, rng))
            if train_mean is not None and rng.random() < policy.amplify_prob:
                span = np.log(policy.amplify_max)
                factor = np.exp(rng.uniform(-span, span, size=len(train_mean)))
                monthly = train_mean + (info.monthly - train_mean) * factor
                info = replace(info, monthly=monthly, amplified=True)
            out.append(info)
    return out


def _extra_hidden(
    info: InfoSet, policy: SimulationPolicy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    known = np.isfinite(info.monthly)
    hidden = rng.random(known.shape) < policy.hole_prob
    for j in range(known.shape[1]):
        rows = np.flatnonzero(known[:, j])
        if rows.size and rng.random() < policy.delay_prob:
            hidden[rows[-rng.integers(1, 3) :], j] = True
        if rng.random() < policy.absent_prob:
            hidden[:, j] = True
    if policy.ended and rng.random() < policy.ended_prob:
        hidden[:, list(policy.ended)] = True
    gdp_hidden = rng.random(info.gdp.shape) < policy.hole_prob
    gdp_rows = np.flatnonzero(np.isfinite(info.gdp))
    if gdp_rows.size and rng.random() < policy.delay_prob:
        gdp_hidden[gdp_rows[-1]] = True
    return hidden, gdp_hidden


@dataclass(frozen=True)
class StudentTargets:
    """What the student learns from: the teacher's nowcasts on the train and validation
    information sets, and actual GDP on the train sets (NaN where not yet known)."""

    teacher_train: np.ndarray
    actual_train: np.ndarray
    teacher_valid: np.ndarray


@dataclass(frozen=True)
class StudentLoop:
    """The training loop's settings plus the student's own: weight decay and the share of the
    loss that follows the teacher."""

    loop: LoopSettings
    weight_decay: float
    distill_weight: float


@dataclass
class StudentFit:
    epochs: int
    best_epoch: int
    best_valid_rmse_vs_teacher: float
    train_sets: int
    seconds: float


def fit_student(
    model: NowcastStudent,
    train: tuple[np.ndarray, np.ndarray],
    targets: StudentTargets,
    valid: tuple[np.ndarray, np.ndarray],
    settings: StudentLoop,
    progress: Callable[[int, float], None] | None = None,
) -> StudentFit:
    """Minimise w * MSE to the teacher's nowcasts + (1 - w) * MSE to actual GDP (where
    `targets.actual_train` is not NaN); keep the epoch with the lowest RMSE against the
    teacher on `valid` (early stopping)."""
    started = time.perf_counter()
    torch.manual_seed(settings.loop.seed)
    rng = np.random.default_rng(settings.loop.seed)
    xm, xg = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    yt = torch.from_numpy(targets.teacher_train.astype(np.float32))
    ya = torch.from_numpy(targets.actual_train.astype(np.float32))
    vm, vg = torch.from_numpy(valid[0]), torch.from_numpy(valid[1])
    vt = torch.from_numpy(targets.teacher_valid.astype(np.float32))
    scale = float(model.gdp_std) ** 2
    w = settings.distill_weight

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        centre = model.centre(xm[idx], xg[idx])
        loss = w * F.mse_loss(centre, yt[idx])
        known = ~torch.isnan(ya[idx])
        if w < 1 and known.any():
            loss = loss + (1 - w) * F.mse_loss(centre[known], ya[idx][known])
        return loss / scale

    def validate() -> float:
        return float(torch.sqrt(F.mse_loss(model.centre(vm, vg), vt)))

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.loop.lr, weight_decay=settings.weight_decay
    )
    fit = fit_early_stopping(
        model, optimizer, len(yt), batch_loss, validate, settings.loop, rng, progress
    )
    return StudentFit(
        epochs=fit.epochs,
        best_epoch=fit.best_epoch,
        best_valid_rmse_vs_teacher=fit.best_valid,
        train_sets=len(yt),
        seconds=round(time.perf_counter() - started, 2),
    )


@torch.no_grad()
def predict_student(model: NowcastStudent, inputs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Torch outputs `[B, 3]`: nowcast, band low, band high."""
    model.eval()
    centre, band = model(torch.from_numpy(inputs[0]), torch.from_numpy(inputs[1]))
    return torch.cat([centre[:, None], band], dim=1).numpy()


def export_student(model: NowcastStudent) -> bytes:
    """ONNX (opset 17) with a dynamic batch axis; inputs `monthly`, `gdp`; outputs `nowcast`,
    `band`."""
    model.eval()
    example = (
        torch.full((2, model.window, model.n_series), float("nan")),
        torch.full((2, model.gdp_lags), float("nan")),
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but exports this graph in milliseconds.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            buffer,  # type: ignore[arg-type]  # the stub omits file objects; the exporter takes them
            input_names=[INPUT_MONTHLY, INPUT_GDP],
            output_names=[OUTPUT_NOWCAST, OUTPUT_BAND],
            dynamic_axes={
                INPUT_MONTHLY: {0: "batch"},
                INPUT_GDP: {0: "batch"},
                OUTPUT_NOWCAST: {0: "batch"},
                OUTPUT_BAND: {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def run_student_onnx(model: bytes, inputs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """onnxruntime outputs `[B, 3]`: nowcast, band low, band high."""
    session = make_session(model)
    nowcast, band = session.run(
        [OUTPUT_NOWCAST, OUTPUT_BAND], {INPUT_MONTHLY: inputs[0], INPUT_GDP: inputs[1]}
    )
    return np.concatenate([nowcast[:, None], band], axis=1)


def latency_us(model: bytes, inputs: tuple[np.ndarray, np.ndarray], runs: int) -> dict[str, float]:
    """Single-thread batch-1 onnxruntime latency over real information sets (microseconds)."""
    session = make_session(model, intra_op_threads=1)
    n = len(inputs[0])
    feeds = [
        {INPUT_MONTHLY: inputs[0][i % n : i % n + 1], INPUT_GDP: inputs[1][i % n : i % n + 1]}
        for i in range(runs)
    ]
    for feed in feeds[: min(50, runs)]:
        session.run(None, feed)
    times = np.empty(runs)
    for i, feed in enumerate(feeds):
        begin = time.perf_counter_ns()
        session.run(None, feed)
        times[i] = time.perf_counter_ns() - begin
    return {
        "latency_us_median": float(np.median(times) / 1000),
        "latency_us_p99": float(np.percentile(times, 99) / 1000),
    }
