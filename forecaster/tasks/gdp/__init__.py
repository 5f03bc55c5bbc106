"""GDP task: a nowcast of this quarter's US GDP growth from a ragged panel of monthly
indicators. A dynamic factor model teacher distilled into a small ONNX student that reads NaNs."""

from forecaster.tasks import Task
from forecaster.tasks.gdp.pipeline import GdpData, load_gdp_data, train_gdp
from forecaster.tasks.gdp.report import print_gdp_report
from forecaster.tasks.gdp.settings import GdpSection, gdp_section

__all__ = [
    "TASK",
    "GdpData",
    "GdpSection",
    "gdp_section",
    "load_gdp_data",
    "print_gdp_report",
    "train_gdp",
]

TASK = Task("gdp", train_gdp, print_gdp_report)
