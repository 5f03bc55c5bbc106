"""What every report chart shares: the headless backend and how a finished figure is written."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["plt", "save_figure"]


def save_figure(
    fig: Figure, out: Path, rect: tuple[float, float, float, float] | None = None
) -> Path:
    """Lay `fig` out (inside `rect`, figure fractions, where given), write it to `out` as a
    110-dpi PNG and free it."""
    fig.tight_layout(rect=rect)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
