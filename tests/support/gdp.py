"""What the GDP student tests share: the window, its input cells and a masked information set."""

from __future__ import annotations

import numpy as np

from forecaster.data.macro import SERIES, MacroPanel, information_cut
from forecaster.tasks.gdp.student import stack_inputs

WQ = 3  # quarters in the student's window
CELLS = 3 * WQ * len(SERIES) + WQ - 1  # the student's input cells


def masked_inputs(
    panel: MacroPanel, quarter_offset: int, month: int, hide: list[bool]
) -> tuple[np.ndarray, np.ndarray]:
    """The student's inputs for a quarter at an information month, with the cells `hide` marks
    missing (as a release that has not come out)."""
    quarter = panel.quarters[0] + quarter_offset
    info = panel.info_set(quarter, information_cut(quarter, month), WQ, month)
    mask = np.array(hide)
    info = info.masked(
        mask[: info.monthly.size].reshape(info.monthly.shape), mask[info.monthly.size :]
    )
    return stack_inputs([info])
