"""`forecaster report`: the metrics table of a bundle's report.json and its PNG charts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from forecaster.training.charts import plt, save_figure

__all__ = [
    "comparison_chart",
    "compression_table",
    "fan_chart",
    "metrics_table",
    "pareto_chart",
    "print_price_report",
    "series_table",
    "write_report_plots",
]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _mean(values: dict[str, Any]) -> float | None:
    finite = [v for v in values.values() if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def metrics_table(models: dict[str, dict[str, Any]], split: str = "test", title: str = "") -> Table:
    """One row per model: size, speed and the price metrics on `split`."""
    table = Table(title=title or f"{split} period", header_style="bold")
    horizons: list[str] = []
    for row in models.values():
        if split in row:
            horizons = list(row[split]["pinball"]["per_horizon"])
            break
    for col in ["model", "params", "bytes", "lat µs p50", "lat µs p99", "pinball"]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for h in horizons:
        table.add_column(f"pinball h{h}", justify="right")
    for col in ["cov 90%", "cov 80%", "MASE", "dir. acc", "PT p"]:
        table.add_column(col, justify="right")
    for name, row in models.items():
        m = row.get(split)
        if m is None:
            continue
        coverage = m.get("coverage", {})
        directional = m.get("directional", {})
        first_h = horizons[0] if horizons else None
        d1 = directional.get(first_h, {}) if first_h else {}
        table.add_row(
            name,
            _fmt(row.get("parameters")),
            _fmt(row.get("bytes")),
            _fmt(row.get("latency_us_median"), 3),
            _fmt(row.get("latency_us_p99"), 3),
            _fmt(m["pinball"]["overall"]),
            *[_fmt(m["pinball"]["per_horizon"].get(h)) for h in horizons],
            _fmt(_mean(coverage.get("90%", {})), 3),
            _fmt(_mean(coverage.get("80%", {})), 3),
            _fmt(_mean(m.get("mase", {})), 3),
            _fmt(d1.get("accuracy"), 3),
            _fmt(d1.get("pt_pvalue"), 2),
        )
    return table


_SERIES_MODELS = (
    ("teacher", "teacher"),
    ("random_walk", "random walk"),
    ("historical_quantiles", "hist. q"),
    ("garch", "GARCH"),
)


def _series_row(label: str, n: int, models: dict[str, Any], chosen: str, split: str) -> list[str]:
    def loss(name: str) -> float | None:
        m = models.get(name, {}).get(split)
        return None if m is None else m["pinball"]["overall"]

    student = models[chosen][split]
    return [
        label,
        _fmt(n),
        _fmt(loss(chosen)),
        *[_fmt(loss(name)) for name, _ in _SERIES_MODELS],
        _ratio(loss(chosen), loss("garch")),
        _ratio(loss(chosen), loss("historical_quantiles")),
        _fmt(_mean(student["coverage"].get("80%", {})), 3),
        _fmt(_mean(student["coverage"].get("90%", {})), 3),
    ]


def series_table(report: dict[str, Any], split: str = "test") -> Table:
    """One row per series and one for the pool (every window weighing the same): the shipped
    student's pinball loss beside the teacher's and each baseline's (fitted per series)."""
    chosen = report["headline"]["chosen"]
    table = Table(title=f"{report['name']}: {split} period by series", header_style="bold")
    for col in ["series", "windows", "student", *[t for _, t in _SERIES_MODELS]]:
        table.add_column(col, justify="left" if col == "series" else "right")
    for col in ["×GARCH", "×hist. q", "student cov 80%", "cov 90%"]:
        table.add_column(col, justify="right")
    for symbol, row in report.get("series", {}).items():
        table.add_row(*_series_row(symbol, row["samples"][split], row["models"], chosen, split))
    table.add_row(
        *_series_row("pool", report["samples"][split], report["models"], chosen, split),
        style="bold",
    )
    return table


def fan_chart(report: dict[str, Any], out: Path) -> Path:
    """Realized price over the test period with the shipped student's bands per horizon."""
    f = report["test_forecasts"]
    levels = report["recipe"]["price"]["quantiles"]
    horizons = [str(h) for h in report["recipe"]["price"]["horizons"]]
    q = np.asarray(f["quantiles"])  # [N, H, Q] log returns
    close = np.asarray(f["close"])
    fig, axes = plt.subplots(len(horizons), 1, figsize=(11, 3.2 * len(horizons)), sharex=True)
    axes = np.atleast_1d(axes)
    n_pairs = len(levels) // 2
    for ax, (j, h) in zip(axes, enumerate(horizons), strict=True):
        dates = np.asarray(f["future_dates"][h], dtype="datetime64[D]")
        prices = close[:, None] * np.exp(q[:, j, :])
        for k in range(n_pairs):
            lo, hi = levels[k], levels[-1 - k]
            ax.fill_between(
                dates,
                prices[:, k],
                prices[:, -1 - k],
                alpha=0.18 + 0.12 * k,
                color="tab:blue",
                lw=0,
                label=f"{lo:g}-{hi:g} band",
            )
        if len(levels) % 2:
            ax.plot(dates, prices[:, n_pairs], color="tab:blue", lw=0.8, label="median")
        ax.plot(dates, f["future_close"][h], color="black", lw=0.9, label="realized close")
        symbol = f.get("symbol", report["name"])
        ax.set_title(f"{symbol}: {h}-day-ahead forecast bands ({report['headline']['chosen']})")
        ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, out)


def comparison_chart(report: dict[str, Any], out: Path) -> Path:
    """Bytes on disk, batch-1 latency and test pinball loss of every model side by side."""
    models = report["models"]
    deployable = [n for n, r in models.items() if "bytes" in r]
    everything = [n for n, r in models.items() if "test" in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].barh(deployable, [models[n]["bytes"] / 1024 for n in deployable], color="tab:gray")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("KiB on disk (log)")
    axes[1].barh(
        deployable, [models[n]["latency_us_median"] for n in deployable], color="tab:orange"
    )
    axes[1].set_xscale("log")
    axes[1].set_xlabel("batch-1 latency µs, 1 thread (log)")
    axes[2].barh(
        everything, [models[n]["test"]["pinball"]["overall"] for n in everything], color="tab:blue"
    )
    axes[2].set_xlabel("test pinball loss (lower is better)")
    chosen = report.get("headline", {}).get("chosen")
    for ax in axes:
        for label in ax.get_yticklabels():
            if label.get_text() == chosen:
                label.set_fontweight("bold")
    fig.suptitle(f"{report['name']}: size / latency / accuracy (chosen: {chosen})")
    return save_figure(fig, out)


def _score(row: dict[str, Any], split: str) -> float | None:
    m = row.get(split)  # None where a candidate produced non-finite forecasts
    return None if m is None else m["pinball"]["overall"]


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.4f}"


def compression_table(compression: dict[str, Any]) -> Table:
    """One row per (chain, step) of the search: size, speed, validation and test loss as a
    multiple of the teacher's, and the step's own effect against the chain before it."""
    teacher = compression["teacher"]
    t_valid, t_test = _score(teacher, "validation"), _score(teacher, "test")
    table = Table(
        title=f"compression search (budget: validation loss <= {compression['budget']:g}x teacher)",
        header_style="bold",
    )
    for col in ["chain", "params", "sparsity", "bytes", "lat µs p50", "lat µs p99", "rows/s"]:
        table.add_column(col, justify="left" if col == "chain" else "right")
    for col in ["valid ×T", "test ×T", "step: bytes ×", "step: lat ×", "step: valid ×", ""]:
        table.add_column(col, justify="right")
    table.add_row(
        "teacher",
        _fmt(teacher.get("parameters")),
        "-",
        _fmt(teacher["bytes"]),
        _fmt(teacher["latency_us_median"], 3),
        _fmt(teacher["latency_us_p99"], 3),
        _fmt(teacher["batch_rows_per_s"], 3),
        "1",
        "1",
        "",
        "",
        "",
        "",
        style="dim",
    )
    for row in compression["rows"]:
        effect = row.get("effect_vs_parent", {})
        mark = "chosen" if row.get("chosen") else ("" if row["within_budget"] else "over")
        table.add_row(
            row["chain"],
            _fmt(row["parameters"]),
            _fmt(row.get("sparsity"), 2),
            _fmt(row["bytes"]),
            _fmt(row["latency_us_median"], 3),
            _fmt(row["latency_us_p99"], 3),
            _fmt(row["batch_rows_per_s"], 3),
            _ratio(_score(row, "validation"), t_valid),
            _ratio(_score(row, "test"), t_test),
            _fmt(effect.get("bytes"), 3),
            _fmt(effect.get("latency"), 3),
            _fmt(effect.get("validation"), 4),
            mark,
            style="bold green" if row.get("chosen") else None,
        )
    return table


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (lower is better), sorted by x."""
    front, best = [], math.inf
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def pareto_chart(report: dict[str, Any], out: Path, x_key: str, x_label: str) -> Path:
    """Every candidate of the compression search, `x_key` against the pinball loss on
    validation (what the search decided on, with the budget line) and on test; the teacher
    and the chosen student marked, the Pareto front drawn."""
    c = report["compression"]
    teacher, rows = c["teacher"], c["rows"]
    techniques = sorted({r["technique"] for r in rows})
    # tab20: twelve techniques now (svd, tt, cp, tucker, ...), more than tab10 tells apart
    colors = {t: plt.cm.tab20(i % 20) for i, t in enumerate(techniques)}
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, split in zip(axes, ("validation", "test"), strict=True):
        scored = [r for r in rows if _score(r, split) is not None]
        front = _front([(r[x_key], s) for r in scored if (s := _score(r, split)) is not None])
        for r in scored:
            point = (r[x_key], _score(r, split))
            ax.scatter(*point, color=colors[r["technique"]], s=28, zorder=3)
            if point in front or r.get("chosen"):  # label what matters; colour tells the rest
                ax.annotate(
                    r["chain"], point, fontsize=7, xytext=(4, 4), textcoords="offset points"
                )
        ax.step(*zip(*front, strict=True), where="post", color="gray", lw=0.8, label="Pareto front")
        ax.scatter(
            teacher[x_key], _score(teacher, split), marker="s", color="black", s=50, label="teacher"
        )
        chosen = next((r for r in scored if r.get("chosen")), None)
        if chosen:
            ax.scatter(
                chosen[x_key],
                _score(chosen, split),
                marker="*",
                s=320,
                facecolor="none",
                edgecolor="red",
                lw=1.5,
                zorder=4,
                label=f"chosen: {chosen['chain']}",
            )
        budget = c["budget"] * _score(teacher, split)
        ax.axhline(budget, color="red", ls="--", lw=0.8, label=f"{c['budget']:g}x teacher")
        for t in techniques:
            ax.scatter([], [], color=colors[t], label=f"last step: {t}")
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{split} pinball loss (lower is better)")
        ax.set_title(f"{split}" + (" (the search decides here)" if split == "validation" else ""))
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{report['name']}: compression candidates, {x_label} vs accuracy")
    return save_figure(fig, out)


def write_report_plots(bundle: Path, report: dict[str, Any]) -> list[Path]:
    """Write the PNGs for a price bundle beside its report.json."""
    paths = [
        fan_chart(report, bundle / "fan_chart.png"),
        comparison_chart(report, bundle / "comparison.png"),
    ]
    if report.get("compression"):
        paths += [
            pareto_chart(report, bundle / "pareto_bytes.png", "bytes", "bytes on disk (log)"),
            pareto_chart(
                report,
                bundle / "pareto_latency.png",
                "latency_us_median",
                "batch-1 latency µs, 1 thread (log)",
            ),
        ]
    return paths


def print_price_report(
    bundle: Path, report: dict[str, Any], console: Console, split: str = "test"
) -> None:
    """`forecaster report` for a price bundle: metrics and compression tables, the headline,
    charts."""
    # piped or redirected output gets the full tables instead of an 80-column squeeze
    out = console if console.is_terminal else Console(width=220)
    out.print(
        metrics_table(report["models"], split=split, title=f"{report['name']}: {split} period")
    )
    if len(report.get("series", {})) > 1:
        out.print(series_table(report, split=split))
    if report.get("compression"):
        out.print(compression_table(report["compression"]))
    headline = report["headline"]
    console.print(
        f"shipped [bold]{headline['chosen']}[/]: {headline['size_ratio']:.1f}x smaller and "
        f"{headline['speed_ratio']:.1f}x faster than the teacher; test pinball "
        f"{headline['test_pinball_ratio_vs_teacher']:.3f}x the teacher's, "
        f"{headline['test_pinball_ratio_vs_historical']:.3f}x the historical-quantile baseline's"
    )
    for path in write_report_plots(bundle, report):
        console.print(f"wrote {path}")
