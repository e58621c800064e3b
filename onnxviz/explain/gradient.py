"""Grad-CAM inside the ONNX graph: the gradient of class logits with respect to a feature map,
written as extra nodes that ONNX Runtime computes with the forward pass (on CUDA too).

One mechanism for every classifier head: the nodes between the feature map `A` and the logits
(the input of the final `Softmax`, or the score output itself when it holds logits) are walked
backwards, and each op contributes its vector-Jacobian product as ONNX nodes. The gradient
carries a leading class axis `K` (`[K, N, ...]`), so the top-k classes of every image are
differentiated in one pass. Supported ops are those classification heads are made of:

    GlobalAveragePool, ReduceMean, AveragePool, MaxPool (the gradient goes to each window's
    first maximum, through MaxPool's Indices output, as TensorFlow and PyTorch route it),
    Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Gemm, MatMul (constant weights), Add, Sub,
    Mul, Div (by a tensor the map does not feed), Relu, Clip (ReLU6), Dropout, Identity,
    BatchNormalization (inference), Concat, Conv (any 2-D convolution: its gradient is
    ConvTranspose with the same weights, which are never copied).

Any other op between the map and the logits raises `HeadError`, which names it; nothing is
approximated. Grad-CAM (Selvaraju et al. 2017) is then `relu(sum_c mean_hw(dy/dA_c) * A_c)`:
for a global-average-pooling + linear head, `dy/dA_c = w_c / (h*w)` everywhere, so the map is
the original CAM (Zhou et al. 2016) `relu(sum_c w_c A_c)` divided by `h*w`.

Everything here is `ModelProto -> ModelProto` and never reads a weight's values, so it works on
`protoscan.split`'s light model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from onnxviz.explain.errors import HeadError
from onnxviz.model.graph import _copy, _opset, dims_of, infer_types, unique_name, used_names

PREFIX = "onnxviz_cam_"
CAM_OUTPUT = PREFIX + "maps"  # float32 [N, K, h, w]: Grad-CAM after the ReLU
CLASSES_OUTPUT = PREFIX + "classes"  # int64 [N, K]: the classes differentiated
PEAK_OUTPUT = PREFIX + "peak"  # float32 [N]: the layer's largest |activation| (0: all zero, say so)
CLASSES_INPUT = PREFIX + "wanted"  # int64 [N, K], fed when the classes are chosen, not the top k

# Ops whose outputs carry no gradient (integers, shapes, comparisons).
_NOT_DIFFERENTIABLE = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero", "Equal", "Greater", "Less",
                       "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "ConstantOfShape", "Constant"}
# Which inputs carry the map's gradient (default: all of them).
_DATA_INPUTS = {"Reshape": (0,), "Flatten": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Expand": (0,),
                "Transpose": (0,), "Slice": (0,), "Gather": (0,), "BatchNormalization": (0,),
                "Dropout": (0,), "Clip": (0,), "ReduceMean": (0,), "ReduceSum": (0,), "TopK": (0,),
                "Tile": (0,), "Pad": (0,), "Resize": (0,), "Upsample": (0,)}
SUPPORTED = ("GlobalAveragePool", "ReduceMean", "AveragePool", "MaxPool", "Flatten", "Reshape", "Squeeze",
             "Unsqueeze", "Transpose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Clip",
             "Dropout", "Identity", "BatchNormalization", "Conv", "Concat")


@dataclass
class Head:
    """Where the gradient starts and ends: `logits` (a tensor of the graph) and `layer`."""

    logits: str
    layer: str
    classes: int  # how many logits


def logits_of(model: ModelProto, prediction_output: str | None, probabilities: bool, where: str) -> str:
    """The tensor holding the class logits: the input of the Softmax that makes the scores, or the
    score output itself when it holds logits."""
    if prediction_output is None:
        raise HeadError(f"{where} has no class-score output, so there is no class to explain; export it with its "
                        f"classifier, or use the class-agnostic map (method='eigencam')")
    producer = next((n for n in model.graph.node if prediction_output in n.output), None)
    if producer is not None and producer.op_type in ("Softmax", "LogSoftmax"):
        return producer.input[0]
    if not probabilities:
        return prediction_output
    op = producer.op_type if producer is not None else "a graph input"
    raise HeadError(f"the class scores of {where} ('{prediction_output}') are probabilities made by {op}, not by a "
                    f"Softmax, so their logits cannot be found; use the class-agnostic map (method='eigencam')", op)


def _attr(node: NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Builder:
    """Appends nodes and constants to a graph under fresh names; knows the opset's quirks."""

    def __init__(self, model: ModelProto, k: int) -> None:
        self.graph = model.graph
        self.opset = _opset(model)
        self.taken = used_names(self.graph)
        self.k = k
        self.nodes: list[NodeProto] = []
        self._k_shape: str | None = None

    def name(self, base: str) -> str:
        return unique_name(PREFIX + base, self.taken)

    def const(self, value: np.ndarray, base: str = "const") -> str:
        name = self.name(base)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op.lower() + "_node"), **attrs))
        return outs[0] if n_out == 1 else outs

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int) -> str:
        takes_input = self.opset >= (13 if op == "ReduceSum" else 18)
        if takes_input:
            return self.op(op, [x, self.const(np.array(axes, np.int64), "axes")], keepdims=keepdims)
        return self.op(op, [x], axes=axes, keepdims=keepdims)

    def with_k(self, like: str) -> str:
        """The shape [K, *shape(like)], computed at run time."""
        if self._k_shape is None:
            self._k_shape = self.const(np.array([self.k], np.int64), "k")
        return self.op("Concat", [self._k_shape, self.op("Shape", [like])], axis=0)

    def reshape_like(self, g: str, like: str) -> str:
        return self.op("Reshape", [g, self.with_k(like)])

    def fold_k(self, g: str, tail: list[int]) -> str:
        """[K, N, *tail] -> [K*N, *tail]."""
        return self.op("Reshape", [g, self.const(np.array([-1, *tail], np.int64), "shape")])


def _spatial(dims: list | None, what: str) -> list[int]:
    if dims is None or len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise HeadError(f"'{what}' has no fixed [C, H, W] shape ({dims}); export the model with a fixed input size")
    return [int(d) for d in dims[1:]]


def _pads(node: NodeProto, in_hw: list[int], kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return list(_attr(node, "pads", [0, 0, 0, 0]))
    if auto == "VALID":
        return [0, 0, 0, 0]
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


def _backward(b: _Builder, node: NodeProto, g: str, wrt: list[int], dims: dict[str, list | None],
              constant: set[str]) -> dict[int, str]:
    """The vector-Jacobian product of `node` for each input index in `wrt`, `g` being [K, *y.shape]."""
    op, x = node.op_type, node.input[0]
    where = f"{op} node '{node.name or node.output[0]}'"

    def only_first() -> None:
        if wrt != [0]:
            raise HeadError(f"the map reaches input {wrt[-1]} of the {where}, whose gradient onnxviz does not write; "
                            f"use the class-agnostic map (method='eigencam')", op)

    if op in ("Identity", "Dropout"):
        only_first()
        return {0: g}
    if op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
        only_first()
        return {0: b.reshape_like(g, x)}
    if op == "Transpose":
        only_first()
        perm = list(_attr(node, "perm", []) or range(len(dims[x] or []))[::-1])
        inverse = list(np.argsort(perm))
        return {0: b.op("Transpose", [g], perm=[0] + [i + 1 for i in inverse])}
    if op == "Relu":
        only_first()
        zero = b.const(np.zeros((), np.float32), "zero")
        return {0: b.op("Where", [b.op("Greater", [x, zero]), g, zero])}
    if op == "Clip":
        only_first()
        zero = b.const(np.zeros((), np.float32), "zero")
        keep = None
        low = node.input[1] if len(node.input) > 1 and node.input[1] else None
        high = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if b.opset < 11:
            low_v, high_v = _attr(node, "min"), _attr(node, "max")
            low = b.const(np.array(low_v, np.float32), "min") if low_v is not None else None
            high = b.const(np.array(high_v, np.float32), "max") if high_v is not None else None
        for bound, cmp in ((low, "Greater"), (high, "Less")):
            if bound is None:
                continue
            inside = b.op(cmp, [x, bound])
            keep = inside if keep is None else b.op("And", [keep, inside])
        return {0: g if keep is None else b.op("Where", [keep, g, zero])}
    if op == "GlobalAveragePool":
        only_first()
        c, h, w = _spatial(dims[x], x)
        scaled = b.op("Mul", [g, b.const(np.array(1.0 / (h * w), np.float32), "scale")])
        return {0: b.op("Expand", [scaled, b.with_k(x)])}
    if op == "ReduceMean":
        only_first()
        shape = dims[x]
        if shape is None or not all(isinstance(d, int) for d in shape[1:]):
            raise HeadError(f"the {where} reduces a tensor of unknown shape", op)
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = _constant_ints(b.graph, node.input[1])
        rank = len(shape)
        axes = sorted(a % rank for a in (axes if axes is not None else range(rank)))
        if 0 in axes:
            raise HeadError(f"the {where} averages over the batch axis", op)
        count = int(np.prod([shape[a] for a in axes]))
        kept = [-1 if i == 0 else (1 if i in axes else shape[i]) for i in range(rank)]  # keepdims form
        g = b.op("Reshape", [g, b.const(np.array([b.k, *kept], np.int64), "shape")])
        scaled = b.op("Mul", [g, b.const(np.array(1.0 / count, np.float32), "scale")])
        return {0: b.op("Expand", [scaled, b.with_k(x)])}
    if op in ("Add", "Sub", "Mul", "Div"):
        out: dict[int, str] = {}
        y_dims = dims[node.output[0]]
        for i in wrt:
            other = node.input[1 - i]
            x_dims = dims[node.input[i]]
            if y_dims is None or x_dims is None or len(x_dims) != len(y_dims) or x_dims[1:] != y_dims[1:]:
                raise HeadError(f"the {where} broadcasts the map's path ({x_dims} to {y_dims}), "
                                f"whose gradient onnxviz does not write; use method='eigencam'", op)
            if op == "Add" or (op == "Sub" and i == 0):
                out[i] = g
            elif op == "Sub":
                out[i] = b.op("Neg", [g])
            elif len(wrt) > 1:
                raise HeadError(f"the {where} multiplies two tensors that both depend on the map; "
                                f"use method='eigencam'", op)
            elif op == "Mul":
                out[i] = b.op("Mul", [g, other])
            elif i == 0:
                out[i] = b.op("Div", [g, other])
            else:
                raise HeadError(f"the {where} divides by the map; use method='eigencam'", op)
        return out
    if op == "Concat":
        rank = len(dims[node.output[0]] or [])
        axis = int(_attr(node, "axis")) % rank if rank else None
        sizes = [(dims[name] or [None] * rank)[axis] if axis is not None else None for name in node.input]
        if axis in (None, 0) or not all(isinstance(v, int) for v in sizes):
            raise HeadError(f"the {where} joins tensors of unknown sizes (or along the batch); use method='eigencam'", op)
        out = {}
        for i in wrt:
            start = sum(sizes[:i])
            out[i] = b.op("Slice", [g, b.const(np.array([start], np.int64), "starts"),
                                    b.const(np.array([start + sizes[i]], np.int64), "ends"),
                                    b.const(np.array([axis + 1], np.int64), "axes")])
        return out
    if op == "BatchNormalization":
        only_first()
        scale, _, _, var = node.input[1:5]
        eps = b.const(np.array(_attr(node, "epsilon", 1e-5), np.float32), "epsilon")
        factor = b.op("Div", [scale, b.op("Sqrt", [b.op("Add", [var, eps])])])
        rank = len(dims[x] or [0, 0, 0, 0])
        factor = b.op("Reshape", [factor, b.const(np.array([-1] + [1] * (rank - 2), np.int64), "shape")])
        return {0: b.op("Mul", [g, factor])}
    if op in ("Gemm", "MatMul"):
        weight = node.input[1]
        if wrt != [0] and not (op == "Gemm" and wrt == [0, 2]) or weight not in constant:
            raise HeadError(f"the {where} multiplies the map by a tensor that is not a constant weight; "
                            f"use method='eigencam'", op)
        if op == "Gemm" and _attr(node, "transA", 0):
            raise HeadError(f"the {where} transposes the map's path (transA=1); use method='eigencam'", op)
        w_dims = dims[weight]
        if w_dims is None or len(w_dims) != 2:
            raise HeadError(f"the {where} has a weight of rank other than 2 ({w_dims}); use method='eigencam'", op)
        trans_b = _attr(node, "transB", 0) if op == "Gemm" else 0
        alpha = float(_attr(node, "alpha", 1.0)) if op == "Gemm" else 1.0
        outputs = int(w_dims[0] if trans_b else w_dims[1])
        flat = b.fold_k(g, [outputs])
        back = b.op("Gemm", [flat, weight], alpha=alpha, transB=1 - int(trans_b))
        result = {0: b.reshape_like(back, x)}
        if 2 in wrt:
            raise HeadError(f"the {where} adds a bias that depends on the map; use method='eigencam'", op)
        return result
    if op == "Conv":
        only_first()
        c, h, w = _spatial(dims[x], x)
        co, ho, wo = _spatial(dims[node.output[0]], node.output[0])
        weight = node.input[1]
        w_dims = dims[weight]
        if weight not in constant or w_dims is None or len(w_dims) != 4:
            raise HeadError(f"the {where} has no constant 2-D kernel; use method='eigencam'", op)
        kernel = [int(v) for v in w_dims[2:]]
        strides = list(_attr(node, "strides", [1, 1]))
        dilations = list(_attr(node, "dilations", [1, 1]))
        pads = _pads(node, [h, w], kernel, strides, dilations)
        extra = [size - ((o - 1) * s + (k - 1) * d + 1 - p0 - p1)
                 for size, o, s, k, d, p0, p1 in zip((h, w), (ho, wo), strides, kernel, dilations, pads[:2], pads[2:])]
        if any(e < 0 or e >= s for e, s in zip(extra, strides)):
            raise HeadError(f"the {where} has a geometry onnxviz cannot invert ({extra}); use method='eigencam'", op)
        back = b.op("ConvTranspose", [b.fold_k(g, [co, ho, wo]), weight], strides=strides, dilations=dilations,
                    pads=pads, group=int(_attr(node, "group", 1)), output_padding=extra)
        return {0: b.reshape_like(back, x)}
    if op == "AveragePool":
        only_first()
        c, h, w = _spatial(dims[x], x)
        _, ho, wo = _spatial(dims[node.output[0]], node.output[0])
        kernel = list(_attr(node, "kernel_shape"))
        strides = list(_attr(node, "strides", [1, 1]))
        pads = _pads(node, [h, w], kernel, strides, [1, 1])
        if any(pads) and not _attr(node, "count_include_pad", 0) or _attr(node, "ceil_mode", 0):
            raise HeadError(f"the {where} pads without counting the padding (or rounds up); use method='eigencam'", op)
        extra = [size - ((o - 1) * s + k - p0 - p1)
                 for size, o, s, k, p0, p1 in zip((h, w), (ho, wo), strides, kernel, pads[:2], pads[2:])]
        ones = np.full((c, 1, *kernel), 1.0 / float(np.prod(kernel)), np.float32)
        back = b.op("ConvTranspose", [b.fold_k(g, [c, ho, wo]), b.const(ones, "box")], strides=strides,
                    pads=pads, group=c, output_padding=extra)
        return {0: b.reshape_like(back, x)}
    if op == "MaxPool":
        only_first()
        c, h, w = _spatial(dims[x], x)
        kernel = list(_attr(node, "kernel_shape"))
        strides = list(_attr(node, "strides", [1, 1]))
        overlap = any(k > s for k, s in zip(kernel, strides)) or any(d != 1 for d in _attr(node, "dilations", [1, 1]))
        if _attr(node, "storage_order", 0):
            raise HeadError(f"the {where} stores its indices column-major; use method='eigencam'", op)
        if overlap and b.opset < 16:
            raise HeadError(f"the {where} has overlapping windows and the model's opset {b.opset} has no "
                            f"ScatterElements with reduction; use method='eigencam'", op)
        if len(node.output) < 2 or not node.output[1]:  # ask the forward pass for the argmax of every window
            while len(node.output) < 2:
                node.output.append("")
            node.output[1] = b.name("argmax")
        indices = node.output[1]  # flat positions in x, batch and channel included
        flat_indices = b.op("Reshape", [indices, b.const(np.array([1, -1], np.int64), "shape")])
        k_indices = b.op("Expand", [flat_indices, b.const(np.array([b.k, 1], np.int64), "shape")])
        updates = b.op("Reshape", [g, b.const(np.array([b.k, -1], np.int64), "shape")])
        size = b.op("ReduceProd", [b.op("Shape", [x])], keepdims=1)
        zeros = b.op("ConstantOfShape", [b.op("Concat", [b.const(np.array([b.k], np.int64), "k"), size], axis=0)],
                     value=numpy_helper.from_array(np.zeros(1, np.float32)))
        attrs = {"axis": 1}
        if b.opset >= 16:
            attrs["reduction"] = "add"
        routed = b.op("ScatterElements", [zeros, k_indices, updates], **attrs)
        return {0: b.reshape_like(routed, x)}
    raise HeadError(f"the ops between the layer and the class logits include {where}, whose gradient onnxviz does "
                    f"not write (it writes {', '.join(SUPPORTED)}); use the class-agnostic map (method='eigencam')", op)


def _constant_ints(graph, name: str) -> list[int] | None:
    for t in graph.initializer:
        if t.name == name:
            return [int(v) for v in numpy_helper.to_array(t).ravel()]
    for n in graph.node:
        if n.op_type == "Constant" and name in n.output:
            return [int(v) for v in numpy_helper.to_array(n.attribute[0].t).ravel()]
    return None


def _data_inputs(node: NodeProto) -> list[int]:
    if node.op_type in _NOT_DIFFERENTIABLE:
        return []
    keep = _DATA_INPUTS.get(node.op_type, range(len(node.input)))
    return [i for i in keep if i < len(node.input) and node.input[i]]


def _data_outputs(node: NodeProto) -> list[str]:
    if node.op_type in _NOT_DIFFERENTIABLE:
        return []
    if node.op_type in ("Dropout", "MaxPool", "TopK"):
        return [node.output[0]]
    return [o for o in node.output if o]


def logit_sources(model: ModelProto, logits: str) -> set[str]:
    """Every tensor the logits depend on through data inputs (not shapes), and the tensors an exposed
    layer copies them from (a Transpose or Identity of one of them): the layers Grad-CAM can start at."""
    nodes = list(model.graph.node)
    ancestors = {logits}
    for n in reversed(nodes):
        if any(o in ancestors for o in _data_outputs(n)):
            ancestors.update(n.input[i] for i in _data_inputs(n))
    for n in nodes:  # in graph order, so a chain of copies is followed
        if n.op_type in ("Transpose", "Identity") and n.input and n.input[0] in ancestors:
            ancestors.update(o for o in n.output if o)
    return ancestors


def add_gradcam(model: ModelProto, layer: str, logits: str, k: int, *, chosen: bool = False,
                keep_outputs: bool = True) -> ModelProto:
    """`model` with Grad-CAM outputs for `layer` (a 4-D NCHW tensor): `CAM_OUTPUT` `[N, k, h, w]`
    and `CLASSES_OUTPUT` `[N, k]` (and `PEAK_OUTPUT` `[N]`, the layer's largest |value|), for the top `k` logits of each image or, with `chosen`, for the
    classes fed as `CLASSES_INPUT` (int64 `[N, k]`). `keep_outputs=False` drops the other outputs.

    Raises `HeadError` naming the op when the path from `layer` to `logits` has one it cannot
    differentiate, or when `logits` does not depend on `layer`.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    out = _copy(model)
    graph = out.graph
    types = infer_types(out)
    dims = {name: dims_of(t) for name, t in types.items()}
    constant = {t.name for t in graph.initializer}
    constant |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    nodes = list(graph.node)

    source, transposes = layer, []  # an exposed NCHW copy of an NHWC tensor: follow it to the tensor the head reads
    producers = {o: n for n in nodes for o in n.output if o}
    a_dims = dims.get(layer)
    if a_dims is None or len(a_dims) != 4:
        raise HeadError(f"layer '{layer}' is not a 4-D feature map ({a_dims}); choose a layer [N, C, H, W]")

    def descendants(start: str) -> set[str]:
        reached = {start}
        for n in nodes:
            if any(n.input[i] in reached for i in _data_inputs(n)):
                reached.update(_data_outputs(n))
        return reached

    ancestors = {logits}
    for n in reversed(nodes):
        if any(o in ancestors for o in _data_outputs(n)):
            ancestors.update(n.input[i] for i in _data_inputs(n))
    while source not in ancestors:
        p = producers.get(source)
        if p is None or p.op_type not in ("Transpose", "Identity"):
            raise HeadError(f"the class logits ('{logits}') do not depend on layer '{layer}'; choose a layer "
                            f"before the classifier", unrelated=True)
        transposes.append(p)
        source = p.input[0]
    reached = descendants(source)
    on_path = [n for n in nodes if any(o in ancestors for o in _data_outputs(n))
               and any(n.input[i] in reached for i in _data_inputs(n))]

    b = _Builder(out, k)
    flat_logits = b.op("Reshape", [logits, b.const(np.array([0, -1], np.int64), "shape")])
    count = 1
    for d in (dims.get(logits) or [])[1:]:
        count = count * d if isinstance(d, int) else None
    if count is None:
        raise HeadError(f"the class logits '{logits}' have no fixed size ({dims.get(logits)})")
    if chosen:
        # an initializer that is also an input: ORT lets a run override it, and the image stays the only
        # input a session lists (get_inputs)
        graph.initializer.append(numpy_helper.from_array(np.zeros((1, k), np.int64), CLASSES_INPUT))
        graph.input.append(helper.make_tensor_value_info(CLASSES_INPUT, TensorProto.INT64, ["N", k]))
        b.nodes.append(helper.make_node("Identity", [CLASSES_INPUT], [CLASSES_OUTPUT], name=b.name("classes")))
    else:
        kk = b.const(np.array([k], np.int64), "k")
        _, idx = b.op("TopK", [flat_logits, kk], n_out=2, axis=-1, largest=1, sorted=1)
        b.nodes.append(helper.make_node("Identity", [idx], [CLASSES_OUTPUT], name=b.name("classes")))
    onehot = b.op("OneHot", [CLASSES_OUTPUT, b.const(np.array(count, np.int64), "depth"),
                             b.const(np.array([0, 1], np.float32), "values")], axis=-1)  # [N, K, M]
    seed = b.op("Transpose", [onehot], perm=[1, 0, 2])  # [K, N, M]
    grads: dict[str, str] = {logits: b.reshape_like(seed, logits)}
    for node in reversed(on_path):
        outs = [o for o in _data_outputs(node) if o in grads]
        if len(outs) != 1:
            continue  # feeds the logits only through outputs without a gradient (never: checked below)
        wrt = [i for i in _data_inputs(node) if node.input[i] in reached]
        for i, contribution in _backward(b, node, grads[outs[0]], wrt, dims, constant).items():
            name = node.input[i]
            grads[name] = contribution if name not in grads else b.op("Add", [grads[name], contribution])
    g = grads[source]
    for p in reversed(transposes):  # back to the exposed layout
        if p.op_type == "Transpose":
            perm = list(_attr(p, "perm"))
            g = b.op("Transpose", [g], perm=[0] + [i + 1 for i in perm])
    weights = b.reduce("ReduceMean", g, [3, 4], keepdims=1)  # [K, N, C, 1, 1]
    weighted = b.reduce("ReduceSum", b.op("Mul", [weights, layer]), [2], keepdims=0)  # [K, N, h, w]
    cam = b.op("Relu", [weighted])
    b.nodes.append(helper.make_node("Transpose", [cam], [CAM_OUTPUT], perm=[1, 0, 2, 3], name=b.name("maps")))
    peak = b.reduce("ReduceMax", b.op("Abs", [layer]), [1, 2, 3], keepdims=0)
    b.nodes.append(helper.make_node("Identity", [peak], [PEAK_OUTPUT], name=b.name("peak")))
    graph.node.extend(b.nodes)
    h, w = a_dims[2], a_dims[3]
    new_outputs = [helper.make_tensor_value_info(CAM_OUTPUT, TensorProto.FLOAT, ["N", k, h, w]),
                   helper.make_tensor_value_info(CLASSES_OUTPUT, TensorProto.INT64, ["N", k]),
                   helper.make_tensor_value_info(PEAK_OUTPUT, TensorProto.FLOAT, ["N"])]
    if not keep_outputs:
        del graph.output[:]
    graph.output.extend(new_outputs)
    return out
