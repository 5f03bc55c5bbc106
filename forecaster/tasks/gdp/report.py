"""`forecaster report` for GDP bundles: the metrics table per information month, the band's
coverage, the news comparison and the PNG charts (test nowcasts against actual GDP, the news
behind one nowcast revision, the track over a quarter beside realized GDP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from forecaster.training.charts import plt, save_figure

__all__ = [
    "gdp_table",
    "news_chart",
    "nowcast_chart",
    "print_gdp_report",
    "track_chart",
    "write_gdp_plots",
]

MONTHS = (1, 2, 3)
_STYLE = {
    "teacher": {"color": "tab:blue", "label": "teacher (DFM)"},
    "teacher_frozen": {"color": "tab:cyan", "label": "teacher, end-of-validation params"},
    "student": {"color": "tab:red", "label": "student (ONNX)"},
    "ar1": {"color": "tab:green", "label": "AR(1)"},
    "mean": {"color": "grey", "label": "historical mean", "linestyle": "--"},
}


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def gdp_table(report: dict[str, Any], split: str = "test") -> Table:
    """One row per model: RMSE and MAE per information month, DM p-value against AR(1)."""
    evaluation = report["evaluation"][split]
    quarters = report["data"]["periods"][split]
    table = Table(
        title=f"{report['name']}: {split} {quarters[0]}..{quarters[1]}, GDP growth % annualized"
    )
    table.add_column("model")
    for k in MONTHS:
        table.add_column(f"RMSE m{k}", justify="right")
    for k in MONTHS:
        table.add_column(f"MAE m{k}", justify="right")
    for k in MONTHS:
        table.add_column(f"DM p m{k}", justify="right")
    for name, rows in evaluation["metrics"].items():
        dm = evaluation["dm_vs_ar1"].get(name, {})
        table.add_row(
            name,
            *(_num(rows[f"month_{k}"]["rmse"]) for k in MONTHS),
            *(_num(rows[f"month_{k}"]["mae"]) for k in MONTHS),
            *(_num(dm.get(f"month_{k}", {}).get("pvalue")) for k in MONTHS),
        )
    return table


def nowcast_chart(report: dict[str, Any], out: Path) -> Path:
    """Actual GDP growth against every model's nowcast, one panel per information month."""
    rows = report["nowcasts"]
    models = [m for m in _STYLE if m in rows[0]]
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True, sharey=True)
    for ax, k in zip(axes, MONTHS, strict=True):
        sel = [r for r in rows if r["month"] == k]
        x = np.arange(len(sel))
        band = np.array([r["band"] for r in sel])
        ax.fill_between(
            x, band[:, 0], band[:, 1], color="tab:red", alpha=0.12, label="student 10-90%"
        )
        ax.plot(x, [r["actual"] for r in sel], color="black", lw=2.2, label="actual")
        for name in models:
            style = {"lw": 1.4, **_STYLE[name]}
            ax.plot(x, [r[name] for r in sel], marker="o", ms=3, **style)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel("% q/q annualized")
        ax.set_title(f"information at the end of month {k} of the quarter", fontsize=10)
        ax.set_xticks(x, [r["quarter"] for r in sel], rotation=60, fontsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(f"{report['name']}: US real GDP growth nowcasts, test period")
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.965),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    return save_figure(fig, out, rect=(0, 0, 1, 0.92))


def news_chart(report: dict[str, Any], out: Path) -> Path:
    """The month-2 -> month-3 revision by indicator: the teacher's statsmodels news beside the
    student's attribution of the same releases."""
    news = report["news"]
    teacher, student = news["impact_by_series"], news["student"]["impact_by_series"]
    names = sorted(set(teacher) | set(student), key=lambda n: abs(teacher.get(n, 0.0)))
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 2))
    ax.barh(y + 0.2, [teacher.get(n, 0.0) for n in names], 0.4, color="tab:blue",
            label="teacher: DynamicFactorMQ news")  # fmt: skip
    ax.barh(y - 0.2, [student.get(n, 0.0) for n in names], 0.4, color="tab:red",
            label="student: sequential / Shapley attribution")  # fmt: skip
    ax.set_yticks(y, names)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("impact on the nowcast, pp of annualized GDP growth")
    ax.set_title(
        f"{news['quarter']} nowcast revision, end of month 2 -> month 3 (params of "
        f"{news['vintage'][:10]}):\nteacher {news['previous']:.2f}% -> {news['updated']:.2f}%, "
        f"student {news['student']['previous']:.2f}% -> {news['student']['updated']:.2f}%",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out)


def track_chart(report: dict[str, Any], out: Path) -> Path:
    """The nowcast over each tracked quarter, a step at every release, beside realized GDP;
    the three largest student impacts of each quarter are labelled."""
    tracks = report["tracks"]
    fig, axes = plt.subplots(len(tracks), 1, figsize=(11, 4.2 * len(tracks)), squeeze=False)
    for ax, tr in zip(axes[:, 0], tracks, strict=True):
        at = [np.datetime64(p["at"][:19]) for p in tr["points"]]
        for name in ("teacher", "student"):
            ax.step(at, [p[name] for p in tr["points"]], where="post", marker="o", ms=3,
                    lw=1.5, **_STYLE[name])  # fmt: skip
        ax.axhline(tr["actual"], color="black", lw=2, label=f"realized GDP {tr['actual']:.2f}%")
        impacts = [(r, s["released_at"]) for s in tr["steps"] for r in s["impacts"]]
        top = sorted(impacts, key=lambda x: -abs(x[0]["impact_pp"]))[:3]
        for n, (row, when) in enumerate(top):
            y = next(p["student"] for p in tr["points"] if p["at"] == when)
            ax.annotate(f"{row['series']} {row['period']}: {row['impact_pp']:+.2f}",
                        (np.datetime64(when[:19]), y), fontsize=7, xytext=(4, 6 + 10 * n),
                        textcoords="offset points")  # fmt: skip
        ax.set_title(f"{tr['quarter']}: nowcast after every release", fontsize=10)
        ax.set_ylabel("% q/q annualized")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.tick_params(axis="x", labelrotation=30)
    return save_figure(fig, out)


def write_gdp_plots(bundle: Path, report: dict[str, Any]) -> list[Path]:
    """Write `nowcasts.png`, `news.png` and `track.png` beside the bundle's report.json."""
    return [
        nowcast_chart(report, bundle / "nowcasts.png"),
        news_chart(report, bundle / "news.png"),
        track_chart(report, bundle / "track.png"),
    ]


def _print_checks(report: dict[str, Any], console: Console) -> None:
    """The band coverage and the news comparison, one line each."""
    coverage = report["evaluation"]["test"]["band_coverage"]
    console.print(
        f"band {coverage['nominal']:.0%} coverage, test: "
        + " / ".join(f"m{k} {coverage[f'month_{k}']:.0%}" for k in MONTHS)
    )
    cmp = report["news_comparison"]
    rel, rev = cmp["release"], cmp["revision"]
    console.print(
        f"news, student vs teacher over {cmp['steps']} release times of {', '.join(cmp['quarters'])}: "
        f"revisions |gap| {rev['mean_abs_gap']:.3f} pp (teacher {rev['mean_abs_teacher']:.3f}), "
        f"per release |gap| {rel['mean_abs_gap']:.3f} pp (teacher {rel['mean_abs_teacher']:.3f}), "
        f"impacts sum to the revision within {cmp['student_sum_minus_revision_max_abs']:.1e}"
    )


def print_gdp_report(
    bundle: Path, report: dict[str, Any], console: Console, split: str = "test"
) -> None:
    """`forecaster report` for a GDP bundle: table, verdict, news, charts."""
    console.print(gdp_table(report, split))
    console.print(f"verdict: {report['verdict']['text']}")
    _print_checks(report, console)
    news = report["news"]
    console.print(
        f"news {news['quarter']} m2 -> m3: teacher {news['previous']:.2f}% -> "
        f"{news['updated']:.2f}%, student {news['student']['previous']:.2f}% -> "
        f"{news['student']['updated']:.2f}%"
    )
    for path in write_gdp_plots(bundle, report):
        console.print(f"wrote {path}")
