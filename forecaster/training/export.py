"""ONNX export, torch/onnxruntime parity, onnxruntime int8 quantization and runtime benchmarks."""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from device.runtime import make_session

__all__ = [
    "OPSET",
    "benchmark_latency",
    "export_window_model",
    "graph_footprint",
    "onnx_parameter_count",
    "parity_max_abs",
    "run_onnx",
]

logger = logging.getLogger(__name__)

OPSET = 17


def export_window_model(
    model: nn.Module, window: int, input_name: str = "close", output_name: str = "quantiles"
) -> bytes:
    """Serialize a `[batch, window]` -> output model with a dynamic batch axis."""
    model.eval()
    example = torch.full((2, window), 100.0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which takes seconds per
        # export where this takes milliseconds; torch is pinned, so keep the fast path.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # the stub omits file objects; the exporter takes them
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def run_onnx(model: bytes, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    session = make_session(model)
    name = session.get_inputs()[0].name
    chunks = [
        session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks)


def parity_max_abs(model: nn.Module, onnx_model: bytes, x: np.ndarray) -> float:
    """Largest absolute difference between torch and onnxruntime outputs on the same windows."""
    from forecaster.training.loops import predict_torch

    diff = np.abs(predict_torch(model, x) - run_onnx(onnx_model, x))
    return float(diff.max())


def onnx_parameter_count(model: bytes) -> int:
    """Number of stored weight values in the graph (initializers), whatever their dtype."""
    graph = onnx.load_from_string(model).graph
    return int(sum(np.prod(init.dims, dtype=np.int64) for init in graph.initializer))


def benchmark_latency(
    model: bytes, x: np.ndarray, runs: int = 2000, warmup: int = 100, batch: int = 256
) -> dict[str, float]:
    """Single-thread onnxruntime latency at batch 1 (median, p99 in microseconds) and
    batch-`batch` throughput in rows per second, on real windows."""
    session = make_session(model, intra_op_threads=1)
    name = session.get_inputs()[0].name
    rows = [x[i % len(x)][None, :] for i in range(runs + warmup)]
    for row in rows[:warmup]:
        session.run(None, {name: row})
    times = np.empty(runs)
    for i, row in enumerate(rows[warmup:]):
        start = time.perf_counter_ns()
        session.run(None, {name: row})
        times[i] = time.perf_counter_ns() - start
    block = np.resize(x, (batch, x.shape[1])).astype(np.float32)
    session.run(None, {name: block})
    reps = max(3, min(50, runs // 50))
    began = time.perf_counter()
    for _ in range(reps):
        session.run(None, {name: block})
    elapsed = time.perf_counter() - began
    return {
        "latency_us_median": float(np.median(times) / 1000),
        "latency_us_p99": float(np.percentile(times, 99) / 1000),
        "batch_rows_per_s": float(batch * reps / elapsed),
    }


def graph_footprint(model: bytes, x: np.ndarray, runs: int) -> dict[str, float | int]:
    """What a graph costs on the device: stored weights, bytes on disk and onnxruntime speed."""
    return {
        "onnx_weights": onnx_parameter_count(model),
        "bytes": len(model),
        **benchmark_latency(model, x, runs=runs, warmup=min(100, runs)),
    }
