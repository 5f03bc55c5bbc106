"""`forecaster` command line. Commands are thin: parse, call a module, print one-line errors.

The training commands (keys, train, evaluate, report) live here; the operator tools' commands
(feed, publish, fleet, nowcast, watch, demo, schedule) in `forecaster.ops.cli`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from device.errors import DeviceError
from forecaster.console import (
    REGISTRY_DEFAULT,
    TrustedKeyOption,
    TrustedRegistryOption,
    console,
    err_console,
)
from forecaster.console import trusted_or_fail as _trusted
from forecaster.errors import ForecasterError
from forecaster.ops.cli import register as register_operator_commands

__all__ = ["app", "main"]

app = typer.Typer(
    help="Forecaster: train, compress, sign and serve economic forecasters on edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Signing keys for bundles.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@keys_app.command("generate")
def keys_generate(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for <key_id>.key and <key_id>.pub.")
    ],
) -> None:
    """Create an Ed25519 signing key pair; give the .pub file to devices as a trusted key."""
    from device.keys import generate_keypair

    private, public = generate_keypair(out)
    console.print(f"private key: {private} (keep secret)\npublic key:  {public} (trust on devices)")


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe file, e.g. models/price/spx.toml.")],
    registry: Annotated[Path, typer.Option(help="Where bundles are written.")] = REGISTRY_DEFAULT,
    quick: Annotated[bool, typer.Option("--quick", help="Small, fast settings for tests.")] = False,
    key: Annotated[
        Path | None, typer.Option(help="Ed25519 private key (else $FORECASTER_SIGNING_KEY).")
    ] = None,
) -> None:
    """Teacher -> compress -> sign -> bundle. Prints the bundle directory last."""
    from forecaster.tasks import train_recipe

    path = train_recipe(recipe, registry=registry, quick=quick, key=key, console=err_console)
    print(path)


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    csv: Annotated[Path, typer.Option(help="CSV file with a date column and a close column.")],
    date_column: Annotated[str, typer.Option(help="Name of the date column.")] = "date",
    value_column: Annotated[str, typer.Option(help="Name of the close column.")] = "close",
    fit_fraction: Annotated[
        float, typer.Option(min=0.1, max=0.9, help="Share of the series used to fit the baselines.")
    ] = 0.5,
    registry: TrustedRegistryOption = REGISTRY_DEFAULT,
    trusted_key: TrustedKeyOption = None,
) -> None:
    """The bundle's metrics on another daily close series, beside the baselines."""
    from forecaster.data import load_csv_series
    from forecaster.tasks.price import evaluate_bundle, metrics_table

    series = load_csv_series(csv, date_column, value_column)
    result = evaluate_bundle(bundle, series, _trusted(registry, trusted_key), fit_fraction)
    start, end = result["period"]
    console.print(metrics_table(result["models"], title=f"{result['series']}: {start} .. {end}"))


@app.command()
def report(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    split: Annotated[str, typer.Option(help="validation or test.")] = "test",
) -> None:
    """Print the bundle's metrics table and write its PNG charts beside report.json."""
    from forecaster.tasks import TASK_NAMES, load_task
    from forecaster.training.reports import load_report

    data = load_report(bundle)
    if data.get("task") not in TASK_NAMES:
        console.print_json(data=data.get("headline", data.get("metrics", {})))
        return
    load_task(data["task"]).print_report(bundle, data, console, split)


register_operator_commands(app)


def main() -> None:
    """Entry point: library errors become one line on stderr and exit status 1."""
    try:
        app()
    except (ForecasterError, DeviceError) as exc:
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
