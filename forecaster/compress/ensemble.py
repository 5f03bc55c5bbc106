"""Averaging students: several compressed students, trained from different seeds, run side by
side in one graph whose output is the mean of theirs. Averaging independently trained nets
removes part of what one training run's seed decides (Lakshminarayanan et al. 2017 average
deep ensembles for the same reason); the mean of non-crossing quantiles does not cross."""

from __future__ import annotations

import onnx
from onnx import compose, helper

from forecaster.compress.graph import compact_onnx

__all__ = ["average_graphs"]


def _opsets(models: list[onnx.ModelProto]) -> list[onnx.OperatorSetIdProto]:
    versions: dict[str, int] = {}
    for model in models:
        for opset in model.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    return [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]


def average_graphs(graphs: list[bytes]) -> bytes:
    """One graph that feeds its input to every member graph and outputs the mean of their
    outputs, given the finishing pass every graph gets. Members must share one input and one
    output name (`close` -> `quantiles`)."""
    if not graphs:
        raise ValueError("average_graphs needs at least one graph")
    if len(graphs) == 1:
        return graphs[0]
    models = [onnx.load_from_string(g) for g in graphs]
    first = models[0].graph
    (source,), (target,) = first.input, first.output
    for model in models[1:]:
        if [i.name for i in model.graph.input] != [source.name] or [
            o.name for o in model.graph.output
        ] != [target.name]:
            raise ValueError(f"every member must map {source.name!r} to {target.name!r}")
    # the input keeps its name, so one tensor feeds every member
    members = [
        compose.add_prefix(m, f"m{k}_", rename_inputs=False).graph for k, m in enumerate(models)
    ]
    mean = helper.make_node(
        "Mean", [f"m{k}_{target.name}" for k in range(len(models))], [target.name], name="average"
    )
    graph = helper.make_graph(
        [node for g in members for node in g.node] + [mean],
        "average",
        [source],
        [target],
        initializer=[init for g in members for init in g.initializer],
    )
    model = helper.make_model(graph, opset_imports=_opsets(models))
    model.ir_version = models[0].ir_version
    onnx.checker.check_model(model)
    return compact_onnx(model.SerializeToString())
