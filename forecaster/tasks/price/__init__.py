"""Price task: quantiles of future log returns from a window of raw closes. An LSTM teacher,
a compression search over student chains, honest baselines, pinball/coverage metrics."""

from forecaster.tasks import Task
from forecaster.tasks.price.evaluate import evaluate_bundle
from forecaster.tasks.price.pipeline import (
    PriceData,
    compress_student,
    compression_context,
    evaluate_quantiles,
    load_price_data,
    train_price,
)
from forecaster.tasks.price.report import metrics_table, print_price_report

__all__ = [
    "TASK",
    "PriceData",
    "compress_student",
    "compression_context",
    "evaluate_bundle",
    "evaluate_quantiles",
    "load_price_data",
    "metrics_table",
    "print_price_report",
    "train_price",
]

TASK = Task("price", train_price, print_price_report, evaluate_bundle)
