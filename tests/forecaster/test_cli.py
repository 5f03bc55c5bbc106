"""The `forecaster` command line: real subprocesses, one-line errors, real bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORECASTER = [sys.executable, "-m", "forecaster.cli"]


def run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FORECASTER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]


def test_missing_recipe_is_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run("train", str(tmp_path / "nope.toml")), "does not exist")


def test_bad_recipe_key_is_one_line_error(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[model]\ntask = "price"\nname = "x"\n[data]\nsource = "sp500"\n'
        '[split]\ntrain_end = "2012-12-31"\nvalid_end = "2010-12-31"\n'
    )
    assert_one_line_error(run("train", str(recipe)), "valid_end must come after train_end")


def test_csv_with_wrong_column_is_one_line_error(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    csv = ROOT / "models" / "data" / "nasdaq_close.csv"
    recipe.write_text(
        f'[model]\ntask = "price"\nname = "x"\n[data]\nsource = "csv"\npath = "{csv}"\n'
        'value_column = "price"\n[split]\ntrain_end = "2010-12-31"\nvalid_end = "2014-12-31"\n'
    )
    assert_one_line_error(
        run("train", str(recipe), "--quick", "--registry", str(tmp_path / "reg")),
        "no column 'price'",
    )


@pytest.fixture(scope="module")
def csv_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped CSV recipe trains end to end through the real command line."""
    registry = tmp_path_factory.mktemp("cli") / "registry"
    result = run("train", "models/price/ndx_csv.toml", "--quick", "--registry", str(registry))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    return Path(last)


def test_train_prints_bundle_dir_last(csv_bundle: Path) -> None:
    assert csv_bundle.is_dir()
    assert csv_bundle.parts[-3:-1] == ("price", "ndx")
    manifest = json.loads((csv_bundle / "manifest.json").read_text())
    assert manifest["data"]["source"] == "csv"
    assert manifest["periods"]["test"][0] > "2014-12-31"


def test_report_prints_table_and_writes_pngs(csv_bundle: Path) -> None:
    result = run("report", str(csv_bundle))
    assert result.returncode == 0, result.stderr
    for model in ("teacher", "student_distill", "random_walk", "historical_quantiles", "garch"):
        assert model in result.stdout
    assert "compression search" in result.stdout
    for png in ("fan_chart.png", "comparison.png", "pareto_bytes.png", "pareto_latency.png"):
        data = (csv_bundle / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_evaluate_on_another_series(csv_bundle: Path, tmp_path: Path) -> None:
    import arch.data.sp500

    frame = arch.data.sp500.load()[["Close"]].rename(columns={"Close": "px"})
    frame.index.name = "day"
    csv = tmp_path / "spx.csv"
    frame.to_csv(csv)
    registry = csv_bundle.parents[2]
    result = run(
        "evaluate",
        str(csv_bundle),
        "--csv",
        str(csv),
        "--date-column",
        "day",
        "--value-column",
        "px",
        "--registry",
        str(registry),
    )
    assert result.returncode == 0, result.stderr
    assert "student" in result.stdout and "garch" in result.stdout


def test_keys_generate(tmp_path: Path) -> None:
    result = run("keys", "generate", "--out", str(tmp_path / "k"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "k").glob("*.key"))) == 1
    assert len(list((tmp_path / "k").glob("*.pub"))) == 1
