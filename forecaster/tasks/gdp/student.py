"""The GDP student: a small network that reads the ragged indicator window with NaNs (an MLP,
or a linear path with weights set by the missing pattern, as the Kalman filter's), distilled
from the DFM teacher's nowcasts over many simulated information sets, exported to ONNX with
the NaN handling and scaling inside the graph."""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

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
    "MONTHS",
    "OUTPUT_BAND",
    "OUTPUT_NOWCAST",
    "NowcastStudent",
    "SimulationPolicy",
    "StudentArch",
    "StudentFit",
    "StudentKind",
    "StudentLoop",
    "StudentTargets",
    "band_quantiles",
    "export_student",
    "fit_linear_path",
    "fit_student",
    "information_month",
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
MONTHS = (1, 2, 3)  # information months of a quarter: the band has one row of offsets each
OPSET = 17
# Standardized inputs are clipped here: a crisis month many train-period standard deviations
# out would otherwise push the ReLU network far outside anything it was trained on.
Z_CLIP = 10.0
# The linear path's guard only against absurd inputs (a release in the wrong units): within it
# the student extrapolates linearly, as the Kalman filter does.
LINEAR_CLIP = 50.0


def stack_inputs(infos: Sequence[InfoSet]) -> tuple[np.ndarray, np.ndarray]:
    """Information sets as the graph's float32 inputs `[B, W, N]` and `[B, L]` (NaN = unknown)."""
    monthly = np.stack([i.monthly for i in infos]).astype(np.float32)
    gdp = np.stack([i.gdp for i in infos]).astype(np.float32)
    return monthly, gdp


StudentKind = Literal["mlp", "skip", "gated"]


def _mlp(width: int, hidden: Sequence[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class StudentArch:
    """What kind of student (see `NowcastStudent`) and where its MLP's inputs are clipped."""

    kind: StudentKind = "mlp"
    clip: float = Z_CLIP


class NowcastStudent(nn.Module):
    """Raw indicator window `[B, W, N]` and GDP lags `[B, L]`, NaN for missing -> nowcast `[B]`
    (annualized %) and a band `[B, 2]` (10% / 90% quantiles of GDP growth) around it.

    Inside: mask = isnan(x); x standardized with train-period statistics, NaN -> 0; the masks
    are concatenated so the network knows a 0 from a missing value. `kind`:
    * `mlp`: an MLP over the values (clipped to +-`clip`) and masks;
    * `skip`: a linear path over values (clipped only at +-`LINEAR_CLIP`) and masks, fitted
      first by least squares on the teacher's nowcasts (`fit_linear_path`), plus the MLP on
      the residual: out of the train range the nowcast moves linearly, as the Kalman filter's;
    * `gated`: the linear path plus value weights and an intercept that depend on the missing
      pattern (an MLP over the masks): the DFM's nowcast for a fixed pattern is affine in the
      values, with weights set by the pattern.
    The band adds offsets calibrated on held-out errors (`calibrate_band`), optionally one
    pair per information month (read from the masks, `information_month`) and scaled up as
    the nowcast leaves the train period's mean growth."""

    monthly_mean: torch.Tensor
    monthly_std: torch.Tensor
    gdp_mean: torch.Tensor
    gdp_std: torch.Tensor
    band_offsets: torch.Tensor
    band_scale: torch.Tensor

    def __init__(
        self,
        window: int,
        gdp_lags: int,
        monthly_mean: np.ndarray,
        monthly_std: np.ndarray,
        gdp_mean: float,
        gdp_std: float,
        hidden: Sequence[int],
        arch: StudentArch | None = None,
    ) -> None:
        super().__init__()
        n_series = len(monthly_mean)
        self.window, self.n_series, self.gdp_lags = window, n_series, gdp_lags
        arch = arch or StudentArch()
        kind = self.kind = arch.kind
        self.clip = arch.clip
        self.register_buffer("monthly_mean", torch.tensor(monthly_mean, dtype=torch.float32))
        self.register_buffer("monthly_std", torch.tensor(monthly_std, dtype=torch.float32))
        self.register_buffer("gdp_mean", torch.tensor(float(gdp_mean), dtype=torch.float32))
        self.register_buffer("gdp_std", torch.tensor(float(gdp_std), dtype=torch.float32))
        self.register_buffer("band_offsets", torch.zeros(len(MONTHS), len(BAND_LEVELS)))
        self.register_buffer("band_scale", torch.zeros(()))
        cells = window * n_series + gdp_lags
        self.linear = nn.Linear(2 * cells, 1) if kind != "mlp" else None
        if kind == "gated":
            self.net = _mlp(cells, hidden, cells + 1)
            # starts as the linear path: the pattern's corrections are learned from zero
            last = self.net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        else:
            self.net = _mlp(2 * cells, hidden, 1)

    def _standardized(self, monthly: torch.Tensor, gdp: torch.Tensor) -> torch.Tensor:
        """Standardized values `[B, cells]`, NaN -> 0, not yet clipped."""
        z = torch.where(
            torch.isnan(monthly), torch.zeros_like(monthly), monthly - self.monthly_mean
        )
        zg = torch.where(torch.isnan(gdp), torch.zeros_like(gdp), gdp - self.gdp_mean)
        return torch.cat([(z / self.monthly_std).flatten(1), zg / self.gdp_std], dim=1)

    def _masks(self, monthly: torch.Tensor, gdp: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.isnan(monthly).flatten(1), torch.isnan(gdp)], dim=1).float()

    def linear_features(self, monthly: torch.Tensor, gdp: torch.Tensor) -> torch.Tensor:
        """What the linear path reads: values clipped at +-`LINEAR_CLIP`, then the masks."""
        z = self._standardized(monthly, gdp).clamp(-LINEAR_CLIP, LINEAR_CLIP)
        return torch.cat([z, self._masks(monthly, gdp)], dim=1)

    def centre(self, monthly: torch.Tensor, gdp: torch.Tensor) -> torch.Tensor:
        """The nowcast `[B]` in annualized %."""
        z, masks = self._standardized(monthly, gdp), self._masks(monthly, gdp)
        if self.kind == "gated":
            zl = z.clamp(-LINEAR_CLIP, LINEAR_CLIP)
            gate = self.net(masks)
            # a batched dot product (MatMul per row): onnxruntime then gives every row the same
            # bits whatever the batch, which the device's exact news relies on (a ReduceSum
            # over the row does not)
            out = torch.bmm(gate[:, None, :-1], zl[:, :, None])[:, 0, 0] + gate[:, -1]
        else:
            out = self.net(torch.cat([z.clamp(-self.clip, self.clip), masks], dim=1))[:, 0]
        if self.linear is not None:
            out = out + self.linear(self.linear_features(monthly, gdp))[:, 0]
        return self.gdp_mean + self.gdp_std * out

    def forward(self, monthly: torch.Tensor, gdp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        centre = self.centre(monthly, gdp)
        offsets = self.band_offsets[information_month(monthly) - 1]
        return centre, centre[:, None] + offsets * self._band_width(centre)[:, None]

    def _band_width(self, centre: torch.Tensor) -> torch.Tensor:
        """1 + scale * |nowcast - mean| / std: the band widens as the nowcast leaves normal
        growth (errors are larger in recessions and booms)."""
        return 1 + self.band_scale * torch.abs(centre - self.gdp_mean) / self.gdp_std

    def calibrate_band(
        self,
        errors: np.ndarray,
        nowcasts: np.ndarray,
        months: np.ndarray | None = None,
        scale: float = 0.0,
    ) -> np.ndarray:
        """Split-conformal band: the `BAND_LEVELS` quantiles of held-out errors (actual minus
        nowcast) divided by the band's width factor at their nowcasts (`scale` = 0: constant
        offsets), per information month when `months` (1-3) is given, else pooled. Returns the
        offsets `[3, 2]`."""
        self.band_scale.fill_(scale)
        width = self._band_width(torch.from_numpy(np.asarray(nowcasts, dtype=np.float32)))
        offsets = band_quantiles(np.asarray(errors) / width.double().numpy(), months)
        self.band_offsets.copy_(torch.tensor(offsets, dtype=torch.float32))
        return offsets


def information_month(monthly: torch.Tensor) -> torch.Tensor:
    """The information month `[B]` (1-3) an input stands for: how many of the target quarter's
    months have any value released (the month-end market data open each), at least 1."""
    released = (~torch.isnan(monthly[:, -len(MONTHS) :, :])).float().sum(dim=2) > 0
    return released.long().sum(dim=1).clamp(1, len(MONTHS))


def band_quantiles(errors: np.ndarray, months: np.ndarray | None = None) -> np.ndarray:
    """`[3, 2]` offsets: the `BAND_LEVELS` quantiles of `errors`, per information month (rows
    1-3) when `months` is given, else the pooled quantiles on every row."""
    errors = np.asarray(errors, dtype=np.float64)
    if months is None:
        return np.tile(np.quantile(errors, BAND_LEVELS), (len(MONTHS), 1))
    return np.stack([np.quantile(errors[np.asarray(months) == k], BAND_LEVELS) for k in MONTHS])


@torch.no_grad()
def fit_linear_path(
    model: NowcastStudent, inputs: tuple[np.ndarray, np.ndarray], labels: np.ndarray, ridge: float
) -> float:
    """Least squares (ridge `ridge` per row, for the masks' collinearity) of the teacher's
    standardized nowcasts on the linear path's features; sets and freezes the path. Returns
    the fit's RMSE in pp."""
    assert model.linear is not None
    x = model.linear_features(torch.from_numpy(inputs[0]), torch.from_numpy(inputs[1]))
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    y = (torch.from_numpy(labels).double() - model.gdp_mean.double()) / model.gdp_std.double()
    gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=torch.float64)
    beta = torch.linalg.solve(gram, x.T @ y)
    model.linear.weight.copy_(beta[:-1][None].float())
    model.linear.bias.copy_(beta[-1:].float())
    model.linear.requires_grad_(False)
    return float(torch.sqrt(((x @ beta - y) ** 2).mean()) * model.gdp_std.double())


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
    """The training loop's settings plus the student's own: weight decay, the share of the
    loss that follows the teacher and the linear path's ridge penalty."""

    loop: LoopSettings
    weight_decay: float
    distill_weight: float
    ridge: float = 1e-4


@dataclass
class StudentFit:
    epochs: int
    best_epoch: int
    best_valid_rmse_vs_teacher: float
    train_sets: int
    seconds: float
    linear_path_train_rmse_vs_teacher: float | None = None


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
    teacher on `valid` (early stopping). A student with a linear path gets it by least
    squares on the teacher's nowcasts first; the network then learns what it leaves."""
    started = time.perf_counter()
    linear_rmse = None
    if model.linear is not None:
        linear_rmse = fit_linear_path(model, train, targets.teacher_train, settings.ridge)
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
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.loop.lr,
        weight_decay=settings.weight_decay,
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
        linear_path_train_rmse_vs_teacher=linear_rmse,
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
