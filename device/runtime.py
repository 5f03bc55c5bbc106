"""ONNX Runtime sessions for verified bundles: raw values in, answers in natural units out."""

from __future__ import annotations

import logging
import time

import numpy as np
import onnxruntime as ort

from device.bundle import Bundle
from device.errors import ModelError
from device.onnxgraph import rows_independent

__all__ = ["ROW_BLOCK", "OnnxModel", "make_session"]

logger = logging.getLogger(__name__)

# onnxruntime's CPU GEMM runs a call of 1-3 rows through other kernels (another order of the
# float operations) than blocks of 4: a window's result in the last bit then depends on how many
# windows share its call (measured: 64 of 700 SPX windows differ by up to 3e-8). A batchable
# model's calls are padded to a multiple of this many rows, single windows included, so a row
# gives the same bits in any call; device/modelset.py checks that exactly at load.
ROW_BLOCK = 4


def make_session(model: bytes | str, intra_op_threads: int = 1) -> ort.InferenceSession:
    """A CPU session; one intra-op thread by default because edge boxes serve many symbols."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from exc


class OnnxModel:
    """A bundle's student graph, ready to run; `run` returns outputs and latency in ms."""

    def __init__(self, bundle: Bundle, intra_op_threads: int = 1) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.session = make_session(bundle.model_bytes, intra_op_threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # Whether one call may carry several windows (see `rows_independent`); the smoke test
        # also checks it on real inputs.
        self.batchable = rows_independent(bundle.model_bytes)
        expected = [i.name for i in self.manifest.inputs]
        if self.input_names != expected:
            raise ModelError(f"graph inputs {self.input_names} differ from manifest {expected}")

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        start = time.perf_counter()
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{self.manifest.model_id}: inference failed: {exc}") from exc
        latency_ms = (time.perf_counter() - start) * 1000.0
        return dict(zip(self.output_names, values, strict=True)), latency_ms

    def run_window(self, closes: np.ndarray) -> tuple[np.ndarray, float]:
        """Price/trend models: `[batch, window]` raw closes in, the single output tensor out
        (a batchable model's call padded to whole ROW_BLOCKs with copies of the last window)."""
        x = np.asarray(closes, dtype=np.float32)
        n = len(x)
        pad = (-n) % ROW_BLOCK if self.batchable else 0
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        outputs, latency_ms = self.run({self.input_names[0]: x})
        out = outputs[self.output_names[0]]
        return (out[:n] if pad else out), latency_ms
