"""Trend task: probabilities of the market's volatility regime from a window of raw closes.
A Markov-switching teacher's filter distilled into an MLP classifier."""

from forecaster.tasks import Task
from forecaster.tasks.trend.pipeline import TrendData, load_trend_data, train_trend
from forecaster.tasks.trend.report import print_trend_report
from forecaster.tasks.trend.settings import TrendSection, trend_section

__all__ = [
    "TASK",
    "TrendData",
    "TrendSection",
    "load_trend_data",
    "print_trend_report",
    "train_trend",
    "trend_section",
]

TASK = Task("trend", train_trend, print_trend_report)
