"""What an ONNX graph is made of, read from its protobuf bytes (the edge has no `onnx` package),
and whether its rows can share one onnxruntime call."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["PER_CALL_STATISTICS", "op_types", "rows_independent"]

# Ops that compute quantization parameters from the whole input tensor of the call, so a row's
# result depends on the other rows of its batch (`quantize_dynamic`, and onnxruntime's fusions of
# it). Static QDQ graphs carry their scales as constants and stay per-row.
PER_CALL_STATISTICS = frozenset(
    {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}
)

# Field numbers of onnx.proto3: ModelProto.graph, ModelProto.functions, GraphProto.node,
# FunctionProto.node, NodeProto.op_type, NodeProto.attribute, AttributeProto.g and .graphs.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _FUNCTION_NODE = 1, 7
_NODE_OP_TYPE, _NODE_ATTRIBUTE = 4, 5
_ATTR_GRAPH, _ATTR_GRAPHS = 6, 11


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The length-delimited fields of one protobuf message, as (field number, bytes)."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated protobuf field")
            yield tag >> 3, data[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _graph_ops(graph: bytes, node_field: int) -> Iterator[str]:
    for number, node in _fields(graph):
        if number != node_field:
            continue
        for field, value in _fields(node):
            if field == _NODE_OP_TYPE:
                yield value.decode("utf-8", "replace")
            elif field == _NODE_ATTRIBUTE:  # If / Loop / Scan bodies
                for attr_field, sub in _fields(value):
                    if attr_field in (_ATTR_GRAPH, _ATTR_GRAPHS):
                        yield from _graph_ops(sub, _GRAPH_NODE)


def op_types(model: bytes) -> frozenset[str]:
    """Every op type in the model's graph, its subgraphs and its local functions."""
    ops: set[str] = set()
    for number, value in _fields(model):
        if number == _MODEL_GRAPH:
            ops.update(_graph_ops(value, _GRAPH_NODE))
        elif number == _MODEL_FUNCTIONS:
            ops.update(_graph_ops(value, _FUNCTION_NODE))
    return frozenset(ops)


def rows_independent(model: bytes) -> bool:
    """False when some op computes statistics over the whole call (dynamic quantization): such a
    graph must run one window per call, or a symbol's forecast would depend on its batch-mates."""
    return not (op_types(model) & PER_CALL_STATISTICS)
