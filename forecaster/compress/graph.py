"""Finishing pass for every exported graph: what the device stores is weights, not the
exporter's bookkeeping. Folds weight quantizers into stored int8 tensors, drops what nothing
reads, stores weight tensors with few distinct values (clustered layers) as uint8 indices + a
codebook, shortens tensor names and drops node names and doc strings."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "compact_onnx",
    "constants_to_initializers",
    "distinct_weight_values",
    "drop_unused",
    "fold_weight_quantizers",
    "pack_shared_weights",
]

logger = logging.getLogger(__name__)

_MAX_CODES = 256
# Two extra nodes and two tensor headers cost about this many bytes; pack only above it.
_PACK_OVERHEAD = 96


def _short(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if i == 0:
            return out


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """QuantizeLinear of a stored float weight with constant scale / zero point becomes the
    stored integer tensor it computes (QAT exports weights this way). Returns how many."""
    graph = model.graph
    constants = _constants(graph)
    weights = {init.name for init in graph.initializer}
    folded, keep = [], []
    for node in graph.node:
        inputs = list(node.input)
        if (
            node.op_type != "QuantizeLinear"
            or inputs[0] not in weights
            or len(inputs) < 3
            or not all(name in constants for name in inputs[1:3])
        ):
            keep.append(node)
            continue
        x, scale, zero = (constants[name] for name in inputs[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1:  # per-axis: broadcast along `axis`
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(x / scale) + zero.astype(np.int64), info.min, info.max)
        folded.append(numpy_helper.from_array(q.astype(zero.dtype), node.output[0]))
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(folded)
    return len(folded)


def drop_unused(model: onnx.ModelProto) -> None:
    """Remove initializers and Constant nodes that no node or graph output reads."""
    graph = model.graph
    while True:
        used = {name for node in graph.node for name in node.input}
        used |= {out.name for out in graph.output}
        dead = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]
        inits = [i for i in graph.initializer if i.name in used]
        if not dead and len(inits) == len(graph.initializer):
            return
        for node in dead:
            graph.node.remove(node)
        del graph.initializer[:]
        graph.initializer.extend(inits)


def constants_to_initializers(model: onnx.ModelProto) -> None:
    """Constant nodes become initializers, and byte-identical initializers one shared tensor
    (the exporter emits a Constant node per Slice bound, most of them alike)."""
    graph = model.graph
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    first: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    alias: dict[str, str] = {}
    kept = []
    for init in graph.initializer:
        content = (init.data_type, tuple(init.dims), numpy_helper.to_array(init).tobytes())
        if content in first:
            alias[init.name] = first[content]
        else:
            first[content] = init.name
            kept.append(init)
    if alias:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        for node in graph.node:
            node.input[:] = [alias.get(n, n) for n in node.input]


def pack_shared_weights(model: onnx.ModelProto) -> list[str]:
    """Replace float initializers holding at most 256 distinct values by uint8 indices and a
    float codebook, rebuilt with Cast + Gather (standard ops; onnxruntime folds them at load,
    so inference runs the same dense weights). Returns the packed tensor names."""
    graph = model.graph
    packed, nodes, kept = [], [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        codebook, labels = np.unique(values, return_inverse=True)
        saving = values.size * 4 - values.size - codebook.size * 4
        if len(codebook) > _MAX_CODES or saving < _PACK_OVERHEAD:
            kept.append(init)
            continue
        idx_name, code_name, cast_name = f"{init.name}_i", f"{init.name}_c", f"{init.name}_j"
        kept.append(
            numpy_helper.from_array(labels.reshape(values.shape).astype(np.uint8), idx_name)
        )
        kept.append(numpy_helper.from_array(codebook.astype(np.float32), code_name))
        nodes.append(helper.make_node("Cast", [idx_name], [cast_name], to=TensorProto.INT32))
        nodes.append(helper.make_node("Gather", [code_name, cast_name], [init.name], axis=0))
        packed.append(init.name)
    if packed:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        existing = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + existing)
    return packed


def _rename_values(model: onnx.ModelProto) -> None:
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = _short(len(names))
        return names[name]

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]


def compact_onnx(model_bytes: bytes) -> bytes:
    """The same computation in fewer bytes (see module docstring); checked by onnx.checker."""
    model = onnx.load_from_string(model_bytes)
    fold_weight_quantizers(model)
    drop_unused(model)
    constants_to_initializers(model)
    pack_shared_weights(model)
    _rename_values(model)
    model.doc_string = ""
    model.graph.doc_string = ""
    model.graph.name = "g"
    del model.metadata_props[:]
    used = {node.domain for node in model.graph.node}
    opsets = [o for o in model.opset_import if o.domain in used | {"", "ai.onnx"}]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def distinct_weight_values(model_bytes: bytes) -> dict[str, int]:
    """Distinct values of each stored weight matrix (2-d float or packed codebook tensors)."""
    graph = onnx.load_from_string(model_bytes).graph
    counts = {}
    for init in graph.initializer:
        if len(init.dims) == 2 and init.data_type in (TensorProto.FLOAT, TensorProto.UINT8):
            counts[init.name] = int(np.unique(numpy_helper.to_array(init)).size)
    return counts
