"""ONNX Runtime sessions for verified bundles: raw values in, answers in natural units out."""

from __future__ import annotations

import logging
import time

import numpy as np
import onnxruntime as ort

from device.bundle import Bundle
from device.errors import ModelError
from device.onnxgraph import rows_independent

__all__ = ["OnnxModel", "make_session"]

logger = logging.getLogger(__name__)


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
        """Price/trend models: `[batch, window]` raw closes in, the single output tensor out."""
        outputs, latency_ms = self.run({self.input_names[0]: np.asarray(closes, dtype=np.float32)})
        return outputs[self.output_names[0]], latency_ms
