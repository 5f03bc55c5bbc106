"""The macro feed: every value of the US macro panel as a `MacroRelease`, in release order, for
`forecaster feed macro` to replay on `macro/<series>` (the publishing is `feeds.replay`)."""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd

from device.schemas import MacroRelease
from forecaster.data.macro import load_macro_panel, release_stream
from forecaster.errors import FeedError

__all__ = ["macro_releases"]

logger = logging.getLogger(__name__)


def macro_releases(
    start: date | None = None, end: date | None = None, limit: int | None = None
) -> list[MacroRelease]:
    """Releases from `start` (00:00 UTC) through `end` (the whole day), oldest first; at most
    `limit`. The panel spans macrodata's GDP quarters (1959Q2-2009Q3); indicators appear as
    their shipped data begin."""
    if limit is not None and limit < 1:
        raise FeedError(f"limit must be at least 1, not {limit}")
    if start is not None and end is not None and end < start:
        raise FeedError(f"--end {end} is before --start {start}")
    panel = load_macro_panel()
    lo = None if start is None else pd.Timestamp(start)
    hi = None if end is None else pd.Timestamp(end) + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    releases = []
    for row in release_stream(panel, lo, hi):
        releases.append(MacroRelease.model_validate(row))
        if limit is not None and len(releases) >= limit:
            break
    if not releases:
        first, last = panel.quarters[0], panel.quarters[-1]
        raise FeedError(
            f"no macro releases between {start or 'the start'} and {end or 'the end'} "
            f"(the panel covers {first}..{last}, released until {last + 1})"
        )
    logger.info(
        "%d macro releases, %s .. %s",
        len(releases),
        releases[0].released_at,
        releases[-1].released_at,
    )
    return releases
