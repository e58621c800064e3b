"""Models exported for one image at a time, made to run on batches.

`torch.onnx.export` without `dynamic_shapes` traces `torch.flatten(x, 1)` and `x.view(...)`
into a Reshape to a constant shape that starts with the batch size it saw, 1
(`[1, 512]`): the model then runs on one image only. ONNX's Reshape reads a 0 in the
target shape as "this dimension of the input", so `[0, 512]` is the same at batch 1 and
keeps any batch. The exported file is checked on a batch against the source run image by
image (`sources.onnx`), which proves the change for every output.
"""
from __future__ import annotations

import numpy as np
from onnx import ModelProto, numpy_helper

from onnxviz.model.graph import unique_name, used_names


def fixed_batch_of_one(model: ModelProto, input_name: str) -> bool:
    """Whether the model's input declares a batch of exactly 1."""
    for value in model.graph.input:
        if value.name == input_name:
            dims = value.type.tensor_type.shape.dim
            return len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == 1
    return False


def free_batch(model: ModelProto) -> tuple[ModelProto, int]:
    """A copy of `model` whose Reshapes to a constant shape `[1, ...]` reshape to `[0, ...]`;
    and how many were changed."""
    out = ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    taken = used_names(graph)
    changed = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        shape = _constant(node.input[1], inits, constants)
        if shape is None or shape.ndim != 1 or shape.size < 2 or shape[0] != 1 or shape.dtype != np.int64:
            continue
        if (shape == 0).any():
            continue  # with allowzero (the dynamo exporter sets it) a 0 there means an empty dimension
        # allowzero only changes what a 0 means; with none in the shape but ours it can go.
        for attr in node.attribute:
            if attr.name == "allowzero":
                attr.i = 0
        free = shape.copy()
        free[0] = 0
        name = unique_name(f"{node.input[1]}_any_batch", taken)
        graph.initializer.append(numpy_helper.from_array(free, name))
        node.input[1] = name
        changed += 1
    return out, changed


def _constant(name: str, inits: dict, constants: dict) -> np.ndarray | None:
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = constants.get(name)
    if node is not None:
        for a in node.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
    return None
