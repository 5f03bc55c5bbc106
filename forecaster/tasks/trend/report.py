"""`forecaster report` for trend bundles: the metrics table and the PNG charts (regime
probabilities against the price over the test period, reliability of the probabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.patches import Patch
from rich.console import Console
from rich.table import Table

from forecaster.training.charts import plt, save_figure

__all__ = [
    "calibration_chart",
    "print_trend_report",
    "regime_chart",
    "trend_table",
    "write_trend_plots",
]

# columns: (title, metric key, digits); accuracies read as percentages
_COLUMNS = (
    ("accuracy", "accuracy", "pct"),
    ("bal. acc", "balanced_accuracy", "pct"),
    ("Brier", "brier", "4"),
    ("log loss", "log_loss", "4"),
    ("ECE", "ece", "3"),
    ("agree teacher", "agreement", "pct"),
    ("KL teacher", "kl_from_teacher", "3"),
)


def _cell(value: Any, style: str = "4") -> str:
    if value is None:
        return "-"
    if style == "pct":
        return f"{100 * value:.1f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{int(style)}g}" if isinstance(value, float) else str(value)


def trend_table(report: dict[str, Any], split: str = "test") -> Table:
    """One row per model: size, batch-1 latency and the classification metrics on `split`."""
    table = Table(title=f"{report['name']}: {split} period ({', '.join(report['classes'])})")
    for col in ("model", "kind", "params", "bytes", "lat µs p50", "lat µs p99"):
        table.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for title, _, _ in _COLUMNS:
        table.add_column(title, justify="right")
    for name, row in report["models"].items():
        m = row.get(split)
        if m is None:
            continue
        table.add_row(
            name,
            row.get("kind", ""),
            _cell(row.get("parameters")),
            _cell(row.get("bytes")),
            _cell(row.get("latency_us_median"), "3"),
            _cell(row.get("latency_us_p99"), "3"),
            *[_cell(m.get(key), style) for _, key, style in _COLUMNS],
        )
    return table


def _colors(k: int) -> list[Any]:
    # lowest regime (bear) red through gold to the highest (bull) green
    cmap = LinearSegmentedColormap.from_list("regimes", ["#d62728", "#e6b800", "#2ca02c"])
    return [cmap(i / max(k - 1, 1)) for i in range(k)]


def regime_chart(report: dict[str, Any], out: Path) -> Path:
    """Test period: the close with ex-post regimes shaded, then the shipped student's and the
    teacher's real-time probabilities as stacked areas under the price line."""
    f, classes = report["test_forecasts"], report["classes"]
    dates = np.asarray(f["dates"], dtype="datetime64[D]")
    close = np.asarray(f["close"])
    colors = _colors(len(classes))
    chosen = report["headline"]["chosen"]
    panels = [
        ("ex-post regime (smoothed, hindsight)", np.asarray(f["expost"])),
        (f"shipped student ({chosen}), real time", np.asarray(f["proba"])),
        ("teacher: Markov-switching filter, real time", np.asarray(f["teacher"])),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 9), sharex=True)
    for ax, (title, proba) in zip(axes, panels, strict=True):
        if title.startswith("ex-post"):
            onehot = np.eye(len(classes))[proba.argmax(axis=1)]
            ax.stackplot(dates, onehot.T, colors=colors, alpha=0.35, step="mid", lw=0)
        else:
            ax.stackplot(dates, proba.T, colors=colors, alpha=0.8, lw=0)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(title, fontsize=10)
        price = ax.twinx()
        price.plot(dates, close, color="black", lw=0.9)
        price.set_ylabel("close")
    handles: list[Artist] = [
        Patch(color=c, label=name) for c, name in zip(colors, classes, strict=True)
    ]
    handles.append(plt.Line2D([], [], color="black", lw=0.9, label="close"))
    axes[0].legend(handles=handles, loc="upper left", fontsize=8, ncol=len(handles))
    fig.suptitle(f"{report['name']}: regime probabilities over the test period")
    return save_figure(fig, out)


def calibration_chart(report: dict[str, Any], out: Path, split: str = "test") -> Path:
    """Reliability diagram (one-vs-rest, pooled over classes) of every model on `split`, with
    how many forecasts fall in each probability bin. The window filter is left out: it draws
    the same curve as the full-history teacher."""
    models = {n: r for n, r in report["models"].items() if n != "teacher_window"}
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(7, 8), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=0.8, label="perfectly calibrated")
    width = 0.1 / (len(models) + 1)
    for i, (name, row) in enumerate(models.items()):
        curve = row.get(split, {}).get("reliability")
        if not curve:
            continue
        ece = row[split]["ece"]
        ax.plot(
            curve["forecast"], curve["observed"], marker="o", ms=4, label=f"{name} (ECE {ece:.3f})"
        )
        centers = np.asarray(curve["forecast"])
        counts.bar(centers + (i - len(models) / 2) * width, curve["count"], width=width)
    ax.set_ylabel("observed frequency of the class")
    ax.set_title(f"{report['name']}: reliability on the {split} period (vs ex-post labels)")
    ax.legend(fontsize=8)
    counts.set_yscale("log")
    counts.set_xlabel("forecast probability")
    counts.set_ylabel("forecasts")
    return save_figure(fig, out)


def write_trend_plots(bundle: Path, report: dict[str, Any]) -> list[Path]:
    """Write the PNGs of a trend bundle beside its report.json."""
    return [
        regime_chart(report, bundle / "regimes.png"),
        calibration_chart(report, bundle / "calibration.png"),
    ]


def print_trend_report(
    bundle: Path, report: dict[str, Any], console: Console, split: str = "test"
) -> None:
    """`forecaster report` for a trend bundle: table, one-line verdict, charts."""
    console.print(trend_table(report, split))
    h = report["headline"]
    console.print(
        f"shipped [bold]{h['chosen']}[/]: {h['size_ratio']:.1f}x smaller and "
        f"{h['speed_ratio']:.1f}x faster than the teacher's window filter; test accuracy "
        f"{100 * h['test_accuracy']:.1f}% (teacher {100 * h['teacher_test_accuracy']:.1f}%, "
        f"persistence {100 * h['persistence_test_accuracy']:.1f}%, majority "
        f"{100 * h['majority_test_accuracy']:.1f}%), agreement with the teacher "
        f"{100 * h['test_agreement']:.1f}%"
    )
    console.print(f"labels: {report['definitions']['labels']}")
    for path in write_trend_plots(bundle, report):
        console.print(f"wrote {path}")
