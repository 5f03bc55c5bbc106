"""`forecaster report` for GDP bundles: the metrics table per information month and the PNG
charts (test nowcasts against actual GDP, and the news behind one nowcast revision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console
from rich.table import Table

__all__ = ["gdp_table", "news_chart", "nowcast_chart", "print_gdp_report", "write_gdp_plots"]

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
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def news_chart(report: dict[str, Any], out: Path) -> Path:
    """Bar chart of the nowcast revision by indicator (DynamicFactorMQ news impacts)."""
    news = report["news"]
    impacts = news["impact_by_series"]
    names = sorted(impacts, key=lambda n: abs(impacts[n]))
    values = [impacts[n] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 2))
    colors = ["tab:green" if v >= 0 else "tab:red" for v in values]
    ax.barh(names, values, color=colors)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("impact on the nowcast, pp of annualized GDP growth")
    ax.set_title(
        f"{news['quarter']} nowcast revision, end of month 2 -> month 3:\n"
        f"{news['previous']:.2f}% -> {news['updated']:.2f}% "
        f"(news {news['impact_of_news']:+.3f} pp; params of {news['vintage'][:10]})",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_gdp_plots(bundle: Path, report: dict[str, Any]) -> list[Path]:
    """Write `nowcasts.png` and `news.png` beside the bundle's report.json."""
    return [nowcast_chart(report, bundle / "nowcasts.png"), news_chart(report, bundle / "news.png")]


def print_gdp_report(
    bundle: Path, report: dict[str, Any], console: Console, split: str = "test"
) -> None:
    """`forecaster report` for a GDP bundle: table, verdict, news, charts."""
    console.print(gdp_table(report, split))
    console.print(f"verdict: {report['verdict']['text']}")
    news = report["news"]
    console.print(
        f"news {news['quarter']} m2 -> m3: {news['previous']:.2f}% -> {news['updated']:.2f}%"
    )
    for path in write_gdp_plots(bundle, report):
        console.print(f"wrote {path}")
