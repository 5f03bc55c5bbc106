"""What moved the nowcast: the student's per-release attribution (the device's scheme, run here
on the exported ONNX graph with onnxruntime), the teacher's `DynamicFactorMQResults.news` on the
same releases, and the track of both nowcasts over a quarter, one point per release time.

The attribution: between two information sets of one quarter, the new values are grouped by
release time and added group by group in release order (sequential: impact = change of the
nowcast); within a group of simultaneous releases each value gets its Shapley value (all orders
averaged), so the impacts are order-free and sum to the revision.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from device.runtime import make_session
from forecaster.data.macro import GDP, InfoSet, MacroPanel
from forecaster.tasks.gdp.student import INPUT_GDP, INPUT_MONTHLY, OUTPUT_NOWCAST, stack_inputs
from forecaster.tasks.gdp.teacher import DfmTeacher

__all__ = [
    "NewValue",
    "StudentNews",
    "compare_news",
    "new_values",
    "release_times",
    "track",
    "with_values",
]


@dataclass(frozen=True)
class NewValue:
    """One value known in `after` but not in `before`: where it sits in the inputs (`row`,
    `col` of the monthly window; `row = None` and `col` = lag for GDP) and when it came out."""

    series: str
    period: str
    released_at: pd.Timestamp
    row: int | None
    col: int


def new_values(panel: MacroPanel, before: InfoSet, after: InfoSet) -> list[NewValue]:
    """The values `after` adds to `before`, in release order (ties: panel order, GDP last)."""
    rows = panel.monthly.index.get_indexer(after.months)
    fresh = np.isfinite(after.monthly) & ~np.isfinite(before.monthly)
    out = []
    for r, c in zip(*np.nonzero(fresh), strict=True):
        released = pd.Timestamp(panel.monthly_released[rows[r], c])
        out.append(NewValue(panel.series[c], str(after.months[r]), released, int(r), int(c)))
    for lag in np.flatnonzero(np.isfinite(after.gdp) & ~np.isfinite(before.gdp)):
        quarter = after.gdp_quarters[lag]
        released = panel.gdp_released[panel.gdp.index.get_loc(quarter)]
        out.append(NewValue(GDP, str(quarter), pd.Timestamp(released), None, int(lag)))
    order = {name: j for j, name in enumerate([*panel.series, GDP])}
    return sorted(out, key=lambda v: (v.released_at, order[v.series], v.period))


def with_values(info: InfoSet, after: InfoSet, values: Sequence[NewValue]) -> InfoSet:
    """`info` plus the `values` as `after` has them (the cut becomes `after`'s)."""
    monthly, gdp = info.monthly.copy(), info.gdp.copy()
    for v in values:
        if v.row is None:
            gdp[v.col] = after.gdp[v.col]
        else:
            monthly[v.row, v.col] = after.monthly[v.row, v.col]
    return InfoSet(info.quarter, after.cut, monthly, gdp)


def _shapley(values: np.ndarray, players: int) -> np.ndarray:
    """Shapley values from `values[mask]` (the nowcast with the subset `mask` of players)."""
    out = np.zeros(players)
    for mask in range(1 << players):
        size = bin(mask).count("1")
        for i in range(players):
            if not mask >> i & 1:
                weight = math.factorial(size) * math.factorial(players - size - 1)
                out[i] += weight / math.factorial(players) * (values[mask | 1 << i] - values[mask])
    return out


@dataclass
class StudentNews:
    """The exported student and the attribution of its revisions to releases."""

    session: ort.InferenceSession

    @classmethod
    def of(cls, graph: bytes) -> StudentNews:
        return cls(make_session(graph))

    def nowcasts(self, infos: Sequence[InfoSet]) -> np.ndarray:
        monthly, gdp = stack_inputs(infos)
        (out,) = self.session.run([OUTPUT_NOWCAST], {INPUT_MONTHLY: monthly, INPUT_GDP: gdp})
        return np.asarray(out, dtype=np.float64)

    def impacts(
        self, panel: MacroPanel, before: InfoSet, after: InfoSet
    ) -> tuple[list[dict[str, Any]], float, float]:
        """Each new value's impact (pp), the nowcast before and after; the impacts sum to the
        revision (float64 differences of the graph's float32 outputs)."""
        values = new_values(panel, before, after)
        base, rows = before, []
        previous = float(self.nowcasts([before])[0])
        start = previous
        for _, group_iter in itertools.groupby(values, key=lambda v: v.released_at):
            group = list(group_iter)
            subsets = [
                with_values(base, after, [v for i, v in enumerate(group) if mask >> i & 1])
                for mask in range(1 << len(group))
            ]
            outputs = self.nowcasts(subsets)
            shares = _shapley(outputs, len(group))
            rows += [
                {
                    "series": v.series,
                    "period": v.period,
                    "released_at": v.released_at.isoformat(),
                    "impact_pp": float(share),
                }
                for v, share in zip(group, shares, strict=True)
            ]
            base, previous = subsets[-1], float(outputs[-1])
        return rows, start, previous


def release_times(
    panel: MacroPanel, quarter: pd.Period, window_quarters: int
) -> list[pd.Timestamp]:
    """Every distinct release time inside `quarter` of a value in its window (values that do
    not exist are never released): the moments the device's nowcast of `quarter` changes."""
    months = pd.period_range(end=quarter.asfreq("M", "end"), periods=3 * window_quarters, freq="M")
    rows = panel.monthly.index.get_indexer(months)
    exists = np.isfinite(panel.monthly.to_numpy()[rows])
    stamps = pd.DatetimeIndex(panel.monthly_released[rows][exists]).append(
        pd.DatetimeIndex(panel.gdp_released[np.isfinite(panel.gdp.to_numpy())])
    )
    inside = stamps[(stamps >= quarter.start_time) & (stamps <= quarter.end_time)]
    return sorted(set(inside))


def track(
    panel: MacroPanel,
    quarter: pd.Period,
    window_quarters: int,
    teacher: DfmTeacher,
    student: StudentNews,
) -> dict[str, Any]:
    """The nowcast of `quarter` after every release time inside it (teacher and student),
    realized GDP, and per step both decompositions of the revision: the student's attribution
    and the teacher's statsmodels news."""
    cuts = release_times(panel, quarter, window_quarters)
    infos = [panel.info_set(quarter, cut, window_quarters) for cut in cuts]
    teacher_now = teacher.nowcasts(panel, infos)
    student_now = student.nowcasts(infos)
    steps = []
    for k, (before, after) in enumerate(itertools.pairwise(infos), start=1):
        rows, _, _ = student.impacts(panel, before, after)
        news = teacher.news(panel, before, after)
        joint = {_key(r["series"], r["period"]): r["impact"] for r in news["releases"]}
        for row in rows:
            row["teacher_impact_pp"] = float(joint.get((row["series"], row["period"]), 0.0))
        steps.append(
            {
                "released_at": after.cut.isoformat(),
                "student_revision": float(student_now[k] - student_now[k - 1]),
                "teacher_revision": float(news["updated"] - news["previous"]),
                "impacts": rows,
            }
        )
    return {
        "quarter": str(quarter),
        "actual": float(panel.gdp[quarter]),
        "points": [
            {"at": i.cut.isoformat(), "teacher": float(t), "student": float(s)}
            for i, t, s in zip(infos, teacher_now, student_now, strict=True)
        ],
        "steps": steps,
    }


def _key(series: str, period: str) -> tuple[str, str]:
    """statsmodels dates a quarterly release by its quarter's last month; the feed by quarter."""
    if series == GDP:
        return series, str(pd.Period(period, "M").asfreq("Q"))
    return series, period


def compare_news(tracks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How close the student's attribution is to the teacher's news over the tracks' steps:
    per revision and per release; and how exactly the student's impacts sum to its revision."""
    steps = [s for t in tracks for s in t["steps"]]
    student_rev = np.array([s["student_revision"] for s in steps])
    teacher_rev = np.array([s["teacher_revision"] for s in steps])
    rows = [r for s in steps for r in s["impacts"]]
    own = np.array([r["impact_pp"] for r in rows])
    theirs = np.array([r["teacher_impact_pp"] for r in rows])
    sums = [abs(sum(r["impact_pp"] for r in s["impacts"]) - s["student_revision"]) for s in steps]
    big = np.abs(theirs) >= 0.05
    return {
        "quarters": [t["quarter"] for t in tracks],
        "steps": len(steps),
        "releases": len(rows),
        "student_sum_minus_revision_max_abs": float(max(sums, default=0.0)),
        "revision": _agreement(student_rev, teacher_rev),
        "release": _agreement(own, theirs),
        "release_sign_agreement_where_teacher_ge_0.05pp": (
            float(np.mean(np.sign(own[big]) == np.sign(theirs[big]))) if big.any() else None
        ),
    }


def _agreement(student: np.ndarray, teacher: np.ndarray) -> dict[str, float | None]:
    corr = None
    if len(student) > 2 and np.std(student) > 0 and np.std(teacher) > 0:
        corr = float(np.corrcoef(student, teacher)[0, 1])
    return {
        "mean_abs_teacher": float(np.mean(np.abs(teacher))) if len(teacher) else 0.0,
        "mean_abs_gap": float(np.mean(np.abs(student - teacher))) if len(teacher) else 0.0,
        "max_abs_gap": float(np.max(np.abs(student - teacher))) if len(teacher) else 0.0,
        "correlation": corr,
    }
