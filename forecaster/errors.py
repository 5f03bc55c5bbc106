"""One exception tree for the cloud side; the CLI turns each into a one-line message."""

from __future__ import annotations

__all__ = [
    "DataError",
    "FeedError",
    "ForecasterError",
    "RecipeError",
    "ScheduleError",
    "TrainError",
]


class ForecasterError(Exception):
    """Root of every error raised by the `forecaster` package."""


class RecipeError(ForecasterError):
    """A recipe file is missing, unreadable or names impossible settings."""


class DataError(ForecasterError):
    """Input data is missing, malformed or too short for what the recipe asks."""


class TrainError(ForecasterError):
    """Training, export or evaluation failed."""


class FeedError(ForecasterError):
    """A feed replay, the live view or the demo cannot do what was asked."""


class ScheduleError(ForecasterError):
    """The trainer's settings are wrong, or a scheduled run could not train or publish."""
