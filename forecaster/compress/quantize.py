"""Post-training quantization in onnxruntime (graph in, graph out): dynamic int8, and static
QDQ int8 calibrated on real train windows, per tensor or per channel. Only the student's
learned layers are quantized: the in-graph preprocessing (squared returns, EWMA weights) spans
ranges that 8 bits would flatten, and it is a small share of the work."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
)
from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
from onnxruntime.quantization import quantize_static as ort_quantize_static

from forecaster.compress.context import CompressContext
from forecaster.errors import TrainError

__all__ = ["WindowReader", "learned_matmul_nodes", "quantize_dynamic", "quantize_static"]

logger = logging.getLogger(__name__)

# Exported node names of the student's learned layers (torch module paths) ...
_LEARNED_PREFIXES = ("/body/", "/head/")
# ... except the quantile head's constant cumulative-sum matrix, which is not learned
_FIXED_WEIGHTS = ("head.cumulative",)
_MATMULS = ["MatMul", "Gemm"]


def learned_matmul_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm nodes of the learned layers that multiply by a stored weight."""
    weights = {init.name for init in model.graph.initializer} - set(_FIXED_WEIGHTS)
    return [
        node.name
        for node in model.graph.node
        if node.op_type in _MATMULS
        and node.name.startswith(_LEARNED_PREFIXES)
        and any(name in weights for name in node.input[1:2])
    ]


class WindowReader(CalibrationDataReader):
    """Feeds real windows to the calibrator in batches."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([x[i : i + batch] for i in range(0, len(x), batch)])
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


@contextlib.contextmanager
def _workdir(model: bytes) -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        yield src, dst


def _excluded(path: Path) -> list[str]:
    """MatMul/Gemm nodes outside the learned layers. (Excluding, rather than naming the nodes
    to quantize, survives the dynamic quantizer's renaming of Gemm into MatMul + Add.)"""
    model = onnx.load(path)
    learned = set(learned_matmul_nodes(model))
    if not learned:
        raise TrainError("the graph has no learned MatMul/Gemm layers to quantize")
    return [n.name for n in model.graph.node if n.op_type in _MATMULS and n.name not in learned]


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    # onnxruntime.quantization logs advice to the root logger and prints calibration progress
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_dynamic(
    model: bytes, ctx: CompressContext | None = None, *, per_channel: bool = False
) -> bytes:
    """int8 weights; activations quantized on the fly per call (no calibration needed)."""
    del ctx  # dynamic ranges come from each call's own activations
    with _workdir(model) as (src, dst), _quiet_ort():
        try:
            ort_quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=_MATMULS,
                nodes_to_exclude=_excluded(src),
            )
        except TrainError:
            raise
        except Exception as exc:  # onnxruntime.quantization raises untyped errors
            raise TrainError(f"dynamic quantization failed: {exc}") from exc
        return dst.read_bytes()


def quantize_static(
    model: bytes,
    ctx: CompressContext,
    *,
    per_channel: bool = False,
    activations: Literal["uint8", "int8"] = "uint8",
    method: Literal["minmax", "entropy", "percentile"] = "minmax",
    preprocess: bool = True,
) -> bytes:
    """QDQ int8: symmetric int8 weights (per tensor or per output channel) and activation
    ranges calibrated on evenly spaced train windows."""
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with _workdir(model) as (src, dst), _quiet_ort():
        try:
            if preprocess:
                # shape inference lets the quantizer see every tensor; names are kept
                quant_pre_process(src, src, skip_symbolic_shape=True)
            input_name = onnx.load(src).graph.input[0].name
            ort_quantize_static(
                src,
                dst,
                WindowReader(input_name, ctx.calibration()),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=_MATMULS,
                nodes_to_exclude=_excluded(src),
                calibrate_method=methods[method],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        except TrainError:
            raise
        except Exception as exc:  # onnxruntime.quantization raises untyped errors
            raise TrainError(f"static quantization failed: {exc}") from exc
        return dst.read_bytes()
