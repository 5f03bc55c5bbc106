"""Console-script entry: a one-line hint instead of a traceback on an edge-only install."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    try:
        from forecaster.cli import main as cli_main
    except ModuleNotFoundError as exc:
        print(
            f"forecaster: error: the cloud tools need the train extra ({exc.name} is missing); "
            "install with: pip install 'forecaster[train]'",
            file=sys.stderr,
        )
        sys.exit(1)
    cli_main()
