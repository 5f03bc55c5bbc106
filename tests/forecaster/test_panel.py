"""Price recipes over several series: parsing (errors included), pooled samples that never
cross a series' periods, and a quick panel bundle scored per series and on the pool."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device import load_bundle, load_trusted_keys
from device.manifest import BundleManifest
from forecaster.data import (
    load_close_series,
    period_samples,
    pool_samples,
    split_index,
)
from forecaster.errors import RecipeError
from forecaster.recipe import DataSection, SplitSection, load_recipe
from scripts.loso_bundles import RECIPE as LOSO_RECIPE
from scripts.loso_bundles import held_out

ROOT = Path(__file__).resolve().parents[2]
PANEL = ROOT / "models" / "price" / "panel.toml"
SYMBOLS = ["SPX", "NDX", "CAC", "SMI"]
BASELINES = ("random_walk", "historical_quantiles", "garch")

HEAD = """
[model]
task = "{task}"
name = "multi"
[split]
train_end = "2012-12-31"
valid_end = "2015-12-31"
"""


def _recipe(tmp_path: Path, body: str, task: str = "price") -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(HEAD.format(task=task) + body)
    return path


def test_panel_recipe_names_four_series_with_their_own_dates() -> None:
    recipe = load_recipe(PANEL)
    pairs = recipe.series_splits()
    assert [s.label for s, _ in pairs] == SYMBOLS
    assert pairs[0][1] == recipe.split  # SPX takes the recipe's dates
    assert pairs[2][1].train_end == date(1996, 6, 28)  # CAC ends in 1998: its own dates
    assert pairs[3][1].valid_end == date(1997, 8, 29)


def test_one_series_data_keeps_working(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, '[data]\nsource = "nasdaq"\nsymbol = "NDX"\n'))
    [(series, split)] = recipe.series_splits()
    assert (series.source, series.label, split) == ("nasdaq", "NDX", recipe.split)


def test_csv_series_paths_resolve_from_the_recipe(tmp_path: Path) -> None:
    body = '[[data.series]]\nsource = "csv"\nsymbol = "X"\npath = "x.csv"\n'
    body += '[[data.series]]\nsource = "sp500"\n'
    recipe = load_recipe(_recipe(tmp_path, body))
    first, second = recipe.data.entries()
    assert recipe.csv_path(first) == tmp_path / "x.csv"
    assert second.label == "sp500"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[data]\nsource = "sp500"\n[[data.series]]\nsource = "nasdaq"\n',
            "data: [data] with [[data.series]] takes no source: set it per series",
        ),
        (
            '[[data.series]]\nsource = "sp500"\n[[data.series]]\nsource = "sp500"\n',
            "data: data.series names sp500 twice; give each a symbol",
        ),
        (
            '[[data.series]]\nsource = "csv"\nsymbol = "X"\n',
            "data.series.0: source = 'csv' needs `path`",
        ),
        (
            '[[data.series]]\nsource = "cac"\nsplit = { train_end = "1997-01-01", '
            'valid_end = "1996-01-01" }\n',
            "data.series.0.split: valid_end must come after train_end",
        ),
        (
            '[[data.series]]\nsource = "cac"\nsplit = { train_end = "1997-01-01" }\n',
            "data.series.0.split.valid_end: Field required",
        ),
        (
            '[[data.series]]\nsource = "cac"\ncolour = "red"\n',
            "data.series.0.colour: Extra inputs are not permitted",
        ),
        (
            '[data]\nsource = "sp500"\nsplit = { train_end = "2001-01-01", '
            'valid_end = "2002-01-01" }\n',
            "data: a one-series [data] takes its dates from [split], not data.split",
        ),
    ],
)
def test_bad_series_tables_are_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(_recipe(tmp_path, body))
    text = str(caught.value)
    assert "\n" not in text
    assert text.endswith(message), text


def test_only_price_recipes_take_several_series(tmp_path: Path) -> None:
    body = '[[data.series]]\nsource = "sp500"\n[[data.series]]\nsource = "cac"\n'
    with pytest.raises(RecipeError, match=r"\[\[data.series\]\] is for price recipes"):
        load_recipe(_recipe(tmp_path, body, task="trend"))


@pytest.fixture(scope="module")
def closes() -> list[pd.Series]:
    return [load_close_series(DataSection(source=s)) for s in ("sp500", "cac")]


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(
        st.tuples(st.floats(0.3, 0.7), st.floats(0.05, 0.2), st.floats(0.5, 1.0)),
        min_size=2,
        max_size=2,
    ),
    window=st.integers(8, 64),
    horizons=st.sampled_from([[1], [1, 5], [1, 5, 20], [3, 10]]),
)
def test_pooled_samples_never_cross_a_series_periods(
    closes: list[pd.Series],
    cuts: list[tuple[float, float, float]],
    window: int,
    horizons: list[int],
) -> None:
    """Every pooled row belongs to one series and one period: its window and every target
    close lie in that series, and its targets stay inside that series' period."""
    max_h, splits, parts = max(horizons), [], []
    for close, (train, valid, end) in zip(closes, cuts, strict=True):
        dates = pd.DatetimeIndex(close.index)
        n = len(dates)
        t = int(n * train * end)
        v = min(t + max(int(n * valid * end), max_h + 2), n - max_h - 3)
        split = SplitSection(
            train_end=dates[t].date(),
            valid_end=dates[v].date(),
            end=dates[int((n - 1) * end)].date(),
        )
        idx = split_index(dates, split, window, max_h)
        splits.append(idx)
        parts.append(period_samples(close, idx, window, horizons))
    for k in range(3):  # train, validation, test
        pooled = pool_samples([p[k] for p in parts])
        assert len(pooled) == sum(len(p[k]) for p in parts)
        assert pooled.series is not None
        for i, (close, idx) in enumerate(zip(closes, splits, strict=True)):
            mine = pooled.series == i
            origins = pooled.origins[mine]
            lo, hi = [
                (idx.start, idx.train_end),
                (idx.train_end + 1, idx.valid_end),
                (idx.valid_end + 1, idx.end),
            ][k]
            assert (origins >= max(lo, window - 1)).all()
            assert (origins + max_h <= hi).all()
            values = close.to_numpy()
            np.testing.assert_allclose(pooled.x[mine][:, -1], values[origins].astype(np.float32))
            expected = np.log(values[origins + horizons[-1]]) - np.log(values[origins])
            np.testing.assert_allclose(pooled.y[mine][:, -1], expected, atol=1e-5)


@pytest.fixture(scope="module")
def panel_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The committed panel recipe with --quick settings: (bundle, keys dir)."""
    from forecaster.tasks import train_recipe

    root = tmp_path_factory.mktemp("panel")
    path = train_recipe(PANEL, registry=root / "registry", quick=True)
    return path, root / "keys"


def test_quick_panel_trains_a_signed_bundle_scored_per_series(
    panel_bundle: tuple[Path, Path],
) -> None:
    path, keys = panel_bundle
    bundle = load_bundle(path, load_trusted_keys([keys]))  # verifies signature and hash
    manifest = BundleManifest.model_validate_json((path / "manifest.json").read_bytes())
    assert manifest.name == "panel"
    assert [s["symbol"] for s in manifest.data["series"]] == SYMBOLS
    assert manifest.data["series"][2]["periods"]["test"][1] <= "1998-08-14"
    # the single-series fields still hold: the pooled span
    assert (
        manifest.periods.train[0] < date(1992, 1, 1) < date(2012, 1, 1) < manifest.periods.test[1]
    )
    assert bundle.manifest.window == 64
    report = json.loads((path / "report.json").read_text())
    assert list(report["series"]) == SYMBOLS
    student = report["headline"]["chosen"]
    for symbol, row in report["series"].items():
        assert set(row["models"]) == {"teacher", student, *BASELINES}, symbol
        for model in row["models"].values():
            assert model["test"]["pinball"]["overall"] > 0
    # the pool is every window of every series, each weighing the same
    n = {s: r["samples"]["test"] for s, r in report["series"].items()}
    pooled = sum(
        n[s] * report["series"][s]["models"]["garch"]["test"]["pinball"]["overall"] for s in n
    ) / sum(n.values())
    assert report["samples"]["test"] == sum(n.values())
    assert report["models"]["garch"]["test"]["pinball"]["overall"] == pytest.approx(pooled)


def test_panel_report_prints_one_row_per_series_and_the_pool(
    panel_bundle: tuple[Path, Path],
) -> None:
    from rich.console import Console

    from forecaster.tasks.price.report import series_table

    path, _ = panel_bundle
    report = json.loads((path / "report.json").read_text())
    console = Console(width=250, record=True)
    console.print(series_table(report))
    lines = console.export_text().splitlines()
    for symbol in [*SYMBOLS, "pool"]:
        assert sum(line.lstrip("│ ").startswith(symbol) for line in lines) == 1, symbol


@pytest.mark.parametrize("level", ["window", "both"])
def test_window_vol_level_needs_no_asset_scale(level: str) -> None:
    """The window's short/long volatility ratio is the same for a calm and a wild asset whose
    returns differ only by a factor; the train-relative level is not."""
    import torch

    from forecaster.training.nets import ReturnFeatures

    returns = torch.from_numpy(np.random.default_rng(0).standard_normal((16, 63)) * 0.01)
    # a tiny train vol keeps the volatility floor out of the comparison
    features = ReturnFeatures(64, train_vol=1e-4, level=level)  # type: ignore[arg-type]
    calm, wild = (
        torch.exp(torch.cat([torch.zeros(16, 1), torch.cumsum(c * returns, 1)], 1)).float()
        for c in (0.5, 3.0)
    )
    (_, a, _), (_, b, _) = features(calm), features(wild)
    torch.testing.assert_close(a[:, -1], b[:, -1], atol=2e-3, rtol=0)
    if level == "both":
        assert (b[:, 0] - a[:, 0]).min() > 1.0  # log(3 / 0.5) apart


@settings(max_examples=25, deadline=None)
@given(factor=st.floats(0.25, 4.0), seed=st.integers(0, 2**16))
def test_a_window_level_student_widens_its_quantiles_with_the_volatility(
    factor: float, seed: int
) -> None:
    """With the scale-free level a series whose log returns are `factor` times another's gets
    quantiles exactly `factor` times as far out, so an asset at any volatility level reads as
    the same market (docs/CALIBRATION.md, round 8); with the train-relative level it does not."""
    import torch

    from forecaster.tasks.price.nets import MLPStudent

    torch.manual_seed(seed)
    returns = torch.from_numpy(np.random.default_rng(seed).standard_normal((8, 63)) * 0.01)
    calm, wild = (
        torch.exp(torch.cat([torch.zeros(8, 1), torch.cumsum(c * returns, 1)], 1))
        for c in (1.0, factor)
    )
    # a tiny train vol keeps the volatility floor out of the comparison
    for level in ("window", "train"):
        # in float64, so that rounding does not hide a dependence on the level
        student = MLPStudent(64, [1, 5, 20], [0.05, 0.5, 0.95], 1e-8, (8,), level).double()
        with torch.no_grad():
            expected = factor * student(calm)
            gap = (student(wild) - expected).abs().max().item()
        scale = expected.abs().max().item()
        if level == "window":
            assert gap <= 1e-9 * scale
        elif abs(np.log(factor)) > 0.2:
            assert gap > 1e-6 * scale


def test_a_leave_one_series_out_recipe_drops_exactly_that_series() -> None:
    # round 4 of the calibration study tunes on these: the held-out series must be unseen
    recipe = load_recipe(LOSO_RECIPE)
    loso = held_out(recipe, "CAC", ["distill", "svd"])
    assert [s.symbol for s in loso.data.entries()] == ["SPX", "NDX", "SMI"]
    assert loso.model.name == "loso-cac" and loso.compress.chains == [["distill", "svd"]]
    assert loso.data.entries()[2].split == recipe.data.entries()[3].split  # its own dates kept
    with pytest.raises(SystemExit, match="DAX is not a series"):
        held_out(recipe, "DAX", ["distill"])


def test_a_leave_one_series_out_recipe_may_take_another_level_input() -> None:
    # round 8 compares the two level inputs on these bundles; nothing else may change
    recipe = load_recipe(LOSO_RECIPE)
    assert recipe.price is not None
    other = "train" if recipe.price.vol_level == "window" else "window"  # not the recipe's own
    loso = held_out(recipe, "SMI", ["distill"], other)
    assert loso.price is not None
    assert loso.price.vol_level == other
    assert loso.price.model_dump(exclude={"vol_level"}) == recipe.price.model_dump(
        exclude={"vol_level"}
    )
