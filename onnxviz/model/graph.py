"""Pure `ModelProto -> ModelProto` tools: fold preprocessing in, expose and strip outputs,
read the first layer's filters.

Every function works on a copy and leaves its argument alone. Nothing here reads files,
runs a model or imports TensorFlow; errors are `ValueError`s, because a bad argument
here is a bug in the caller (the export code turns user mistakes into `OnnxvizError`s
before it calls in).
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, helper, numpy_helper

from onnxviz.model.info import GRAY, Preprocessing

PREFIX = "onnxviz_"
LAYOUTS = ("NCHW", "NHWC")
# NHWC -> NCHW
TO_NCHW = [0, 3, 1, 2]


# ---------------------------------------------------------------- small helpers

def _copy(model: ModelProto) -> ModelProto:
    out = ModelProto()
    out.CopyFrom(model)
    return out


def _subgraphs(node: NodeProto) -> Iterator[GraphProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs


def _all_graphs(graph: GraphProto) -> Iterator[GraphProto]:
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _all_graphs(sub)


def used_names(graph: GraphProto) -> set[str]:
    """Every tensor and node name anywhere in the graph, so new ones can avoid them."""
    names: set[str] = set()
    for g in _all_graphs(graph):
        names.update(v.name for v in g.input)
        names.update(v.name for v in g.output)
        names.update(v.name for v in g.value_info)
        names.update(t.name for t in g.initializer)
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
            names.add(node.name)
    names.discard("")
    return names


def unique_name(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _references(graph: GraphProto) -> set[str]:
    """Names a subgraph reads, its own and its outer scope's (an over-approximation is fine)."""
    names: set[str] = set()
    for g in _all_graphs(graph):
        for node in g.node:
            names.update(node.input)
        names.update(v.name for v in g.output)
    return names


def image_inputs(graph: GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are fed at run time (old IR versions list initializers too)."""
    constant = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in constant]


def dims_of(type_proto: TypeProto) -> list[int | str | None] | None:
    """A tensor type's shape: ints, symbolic names or None per dim; None when the rank is unknown."""
    if type_proto.WhichOneof("value") != "tensor_type" or not type_proto.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


def _opset(model: ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _rename_in_place(graph: GraphProto, mapping: Mapping[str, str], *, outputs: bool = True) -> None:
    """Rename tensors where they are made and wherever they are read, subgraphs included."""
    if not mapping:
        return
    for g in _all_graphs(graph):
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in mapping:
                    node.input[i] = mapping[name]
            for i, name in enumerate(node.output):
                if name in mapping:
                    node.output[i] = mapping[name]
        for v in g.value_info:
            if v.name in mapping:
                v.name = mapping[v.name]
        if outputs or g is not graph:
            for v in g.output:
                if v.name in mapping:
                    v.name = mapping[v.name]
    for t in graph.initializer:
        if t.name in mapping:
            t.name = mapping[t.name]
    for v in graph.input:
        if v.name in mapping:
            v.name = mapping[v.name]


def rename_tensors(model: ModelProto, mapping: Mapping[str, str]) -> ModelProto:
    """Rename tensors in place: producing node output, every consumer, value_info and graph outputs.

    No Identity nodes are added, so ORT's fusions (Conv+Relu, Conv+BN, ...) see the same graph.
    """
    taken = used_names(model.graph)
    for old, new in mapping.items():
        if old not in taken:
            raise ValueError(f"no tensor named {old!r} to rename")
        if new != old and new in taken:
            raise ValueError(f"cannot rename {old!r} to {new!r}: that name is already used")
    out = _copy(model)
    _rename_in_place(out.graph, {k: v for k, v in mapping.items() if k != v})
    return out


def infer_types(model: ModelProto) -> dict[str, TypeProto]:
    """Every tensor type shape inference can find: inputs, initializers, value_info, outputs."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # unknown opsets or domains: fall back to what the file declares
        inferred = model
    g = inferred.graph
    types: dict[str, TypeProto] = {}
    for t in g.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.type.WhichOneof("value") is not None:
            types[v.name] = v.type
    return types


def constants(graph: GraphProto) -> tuple[dict[str, TensorProto], dict[str, NodeProto]]:
    """The graph's initializers by name, and the node that produces each tensor: what
    `constant_value` looks values up in."""
    inits = {t.name: t for t in graph.initializer}
    producers = {o: node for node in graph.node for o in node.output if o}
    return inits, producers


# ---------------------------------------------------------------- preprocessing

def prepend_preprocessing(model: ModelProto, prep: Preprocessing, network_layout: str) -> ModelProto:
    """Make the model take RGB 0..255 float32 NHWC `[N, H, W, 3]` under its input's name.

    Adds, as needed: Gather (RGB -> BGR on the last axis) or, for a one-channel network
    (`prep.gray`), a MatMul by the gray weights (`info.GRAY`), Mul by `scale / std`, Add of
    `-mean / std`, and a Transpose to NCHW for an NCHW network; they feed what the
    network read before. With `prep.is_identity` and an NHWC network no node is added.
    The batch dimension becomes symbolic "N"; height and width stay as declared.
    """
    layout = network_layout.upper()
    if layout not in LAYOUTS:
        raise ValueError(f"network_layout must be one of {LAYOUTS}, not {network_layout!r}")
    out = _copy(model)
    graph = out.graph
    inputs = image_inputs(graph)
    if len(inputs) != 1:
        raise ValueError(f"expected one graph input, found {[v.name for v in inputs]}")
    net_in = inputs[0]
    dims = dims_of(net_in.type)
    if net_in.type.tensor_type.elem_type != TensorProto.FLOAT or dims is None or len(dims) != 4:
        raise ValueError(f"input {net_in.name!r} must be a float32 tensor of rank 4")
    channels = dims[1] if layout == "NCHW" else dims[3]
    want = 1 if prep.gray else 3
    if isinstance(channels, int) and channels != want:
        raise ValueError(f"input {net_in.name!r} has {channels} channels in {layout} layout, not {want}")
    height, width = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    name = net_in.name
    new_input = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", height, width, 3])
    new_input.doc_string = "RGB pixels 0..255, NHWC"

    scale = np.asarray(prep.scale, np.float64)
    mean = np.broadcast_to(np.asarray(prep.mean, np.float64), (3,))[:want]
    std = np.broadcast_to(np.asarray(prep.std, np.float64), (3,))[:want]
    if np.any(std == 0):
        raise ValueError(f"std must not be 0: {prep.std}")
    mul = (scale / std).astype(np.float32)
    add = (-mean / std).astype(np.float32)

    steps: list[tuple[str, list[np.ndarray], dict]] = []  # op, constant inputs, attributes
    if prep.gray:
        steps.append(("MatMul", [np.asarray(GRAY, np.float32).reshape(3, 1)], {}))
    elif prep.bgr:
        steps.append(("Gather", [np.array([2, 1, 0], np.int64)], {"axis": 3}))
    if np.any(mul != 1):
        steps.append(("Mul", [mul], {}))
    if np.any(add != 0):
        steps.append(("Add", [add], {}))
    if any(op in ("Mul", "Add") for op, _, _ in steps) and _opset(out) < 7:
        raise ValueError(f"opset {_opset(out)} is too old for broadcasting Mul/Add; convert the model to opset 7 or later")
    if layout == "NCHW":
        steps.append(("Transpose", [], {"perm": TO_NCHW}))

    position = [v.name for v in graph.input].index(net_in.name)
    if not steps:
        graph.input[position].CopyFrom(new_input)
        return out

    taken = used_names(graph)
    feed = unique_name(PREFIX + "network_input", taken)
    _rename_in_place(graph, {name: feed}, outputs=False)  # every reader of the old input now reads `feed`
    graph.input[position].CopyFrom(new_input)
    for v in list(graph.value_info):
        if v.name == feed:  # its declared shape (batch 1, maybe) is stale now
            graph.value_info.remove(v)

    nodes: list[NodeProto] = []
    current = name
    for i, (op, consts, attrs) in enumerate(steps):
        const_names = []
        for value in consts:
            cname = unique_name(f"{PREFIX}{op.lower()}_const", taken)
            graph.initializer.append(numpy_helper.from_array(value, cname))
            if out.ir_version < 4:  # before IR 4 every initializer had to be a graph input too
                graph.input.append(helper.make_tensor_value_info(
                    cname, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
            const_names.append(cname)
        result = feed if i == len(steps) - 1 else unique_name(f"{PREFIX}{op.lower()}", taken)
        nodes.append(helper.make_node(op, [current, *const_names], [result],
                                      name=unique_name(f"{PREFIX}{op.lower()}", taken), **attrs))
        current = result
    for node in reversed(nodes):
        graph.node.insert(0, node)
    return out


# ---------------------------------------------------------------- outputs

def expose_outputs(model: ModelProto, names: list[str], rename: dict[str, str] | None = None) -> ModelProto:
    """Make `names` the graph outputs, in that order, typed by shape inference.

    The output list becomes exactly `names` (an existing output stays only if it is named;
    use `strip_outputs` to drop the nodes that then feed nothing). `rename` maps a tensor
    to the output name it should have: the tensor is renamed where it is made and read
    (`rename_tensors`), so no Identity is added and ORT fuses as before; only a graph
    input or initializer, which has no producing node, goes through an Identity.
    """
    rename = dict(rename or {})
    if len(set(names)) != len(names):
        raise ValueError(f"names are repeated: {sorted({n for n in names if names.count(n) > 1})}")
    stray = set(rename) - set(names)
    if stray:
        raise ValueError(f"rename has names that are not exposed: {sorted(stray)}")
    graph = model.graph
    produced = {o for node in graph.node for o in node.output if o}
    available = produced | {v.name for v in graph.input} | {t.name for t in graph.initializer}
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"no tensors named {missing} in the graph")

    out = _copy(model)
    graph = out.graph
    types = infer_types(out)
    untyped = [n for n in names if n not in types]
    if untyped:
        raise ValueError(f"shape inference found no type for {untyped}")

    final = [rename.get(n, n) for n in names]
    if len(set(final)) != len(final):
        raise ValueError(f"renaming gives repeated output names: {final}")
    taken = used_names(graph)
    clash = [new for n, new in rename.items() if new != n and new in taken]
    if clash:
        raise ValueError(f"cannot rename to {clash}: those names are already used")
    taken.update(final)
    in_place: dict[str, str] = {}
    for n, new in rename.items():
        if new == n:
            continue
        if n in produced:
            in_place[n] = new
        else:
            graph.node.append(helper.make_node("Identity", [n], [new], name=unique_name(PREFIX + "identity", taken)))
        types[new] = types[n]
    _rename_in_place(graph, in_place)
    del graph.output[:]
    for n in final:
        graph.output.append(helper.make_value_info(n, types[n]))
    return out


def strip_outputs(model: ModelProto, keep: list[str]) -> ModelProto:
    """Keep only the outputs `keep` (in that order) and the nodes, initializers and
    value_info that still feed them: the "floor" model benchmarks compare against."""
    existing = {v.name: v for v in model.graph.output}
    missing = [k for k in keep if k not in existing]
    if missing:
        raise ValueError(f"{missing} are not graph outputs; the outputs are {list(existing)}")
    out = _copy(model)
    graph = out.graph
    needed = set(keep)
    kept: list[NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for sub in _subgraphs(node):
                needed.update(_references(sub))
    kept.reverse()
    outputs = [existing[k] for k in keep]
    del graph.output[:]
    graph.output.extend(outputs)
    del graph.node[:]
    graph.node.extend(kept)
    constant = {t.name for t in graph.initializer}
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    inputs = [v for v in graph.input if v.name not in constant or v.name in needed]
    del graph.input[:]
    graph.input.extend(inputs)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return out


def set_input_shape(model: ModelProto, name: str, shape: Sequence[int | str | None]) -> ModelProto:
    """Declare input `name` with `shape` and forget every derived shape (value_info and the
    outputs' sizes, not their ranks), which may be stale; shape inference gets them back."""
    out = _copy(model)
    graph = out.graph
    for v in graph.input:
        if v.name == name:
            elem = v.type.tensor_type.elem_type
            v.type.CopyFrom(helper.make_tensor_type_proto(elem, list(shape)))
            break
    else:
        raise ValueError(f"no graph input named {name!r}")
    del graph.value_info[:]
    for v in graph.output:  # keep the rank, forget the sizes
        if v.type.WhichOneof("value") == "tensor_type" and v.type.tensor_type.HasField("shape"):
            for d in v.type.tensor_type.shape.dim:
                d.Clear()
    return out


# ---------------------------------------------------------------- first layer

def first_conv_weights(model: ModelProto) -> tuple[str, np.ndarray] | None:
    """The first Conv reachable from the input and its weights, float32 `[O, I, kh, kw]`.

    The name is the node's name, or its output's name when the node has none. The weight
    may come from an initializer or a Constant, through Identity, Cast, Transpose or
    DequantizeLinear. None when there is no Conv, when the first one is not 2-D, or when
    its weight is computed in some other way.
    """
    graph = model.graph
    inits, producers = constants(graph)
    reachable = {v.name for v in image_inputs(graph)}
    for node in graph.node:
        reads = {i for i in node.input if i}
        for sub in _subgraphs(node):
            reads |= _references(sub)
        if not reads & reachable:
            continue
        if node.op_type == "Conv" and node.domain in ("", "ai.onnx") and node.input[0] in reachable:
            weight = constant_value(node.input[1], inits, producers)
            if weight is None or weight.ndim != 4:
                return None
            return (node.name or node.output[0], np.ascontiguousarray(weight, dtype=np.float32))
        reachable.update(o for o in node.output if o)
    return None


def constant_value(name: str, inits: dict[str, TensorProto], producers: dict[str, NodeProto],
                   depth: int = 0) -> np.ndarray | None:
    """Tensor `name`'s value when it is a constant (an initializer, a Constant node, or one seen
    through Identity, Cast, Transpose or DequantizeLinear of one); None when it is computed."""
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producers.get(name)
    if node is None or depth > 8:
        return None
    op = node.op_type
    if op == "Constant":
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
            if attr.name == "value_float":
                return np.asarray(attr.f, np.float32)
            if attr.name == "value_floats":
                return np.asarray(list(attr.floats), np.float32)
        return None
    source = constant_value(node.input[0], inits, producers, depth + 1)
    if source is None:
        return None
    if op == "Identity":
        return source
    if op == "Cast":
        return source.astype(np.float32)
    if op == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        return np.transpose(source, perm)
    if op == "DequantizeLinear":
        scale = constant_value(node.input[1], inits, producers, depth + 1)
        zero = (constant_value(node.input[2], inits, producers, depth + 1)
                if len(node.input) > 2 and node.input[2] else None)
        if scale is None:
            return None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        x = source.astype(np.float32)

        def along(v: np.ndarray) -> np.ndarray:
            v = v.astype(np.float32)
            if v.ndim == 1 and v.size > 1:  # per-channel
                shape = [1] * x.ndim
                shape[axis % x.ndim] = v.size
                return v.reshape(shape)
            return v

        return (x - (along(zero) if zero is not None else 0)) * along(scale)
    return None


# ---------------------------------------------------------------- per-channel reductions

REDUCTIONS = ("max", "mean")


def reduction_names(layer: str) -> tuple[str, str]:
    """The output names `add_channel_reductions` gives a layer: (score, position)."""
    return f"{PREFIX}score:{layer}", f"{PREFIX}argmax:{layer}"


def add_channel_reductions(model: ModelProto, layers: Sequence[str], score: str = "max") -> ModelProto:
    """Replace the outputs by two small ones per NCHW map in `layers`: a score and a position per channel.

    For a map `[N, C, H, W]` the graph computes `[N, C*H*W] -> [N, C, H*W]` (a Reshape, no copy),
    then `score` = ReduceMax (or ReduceMean) over the last axis, float32 `[N, C]`, and
    `position` = ArgMax over the last axis, int64 `[N, C]`, the flat index `y * W + x` of the
    channel's maximum (the first one in row-major order when several are equal). Nodes that no
    longer feed an output (the classifier, unselected maps) are removed, so only
    `2 * N * C` numbers per layer leave the session instead of the maps.
    """
    if score not in REDUCTIONS:
        raise ValueError(f"score must be one of {REDUCTIONS}, not {score!r}")
    if not layers:
        raise ValueError("no layers to reduce")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers are repeated: {sorted({n for n in layers if list(layers).count(n) > 1})}")
    out = _copy(model)
    graph = out.graph
    produced = {o for node in graph.node for o in node.output if o}
    missing = [n for n in layers if n not in produced]
    if missing:
        raise ValueError(f"no tensors named {missing} are made by a node of the graph")
    # Declared output types first: shape inference copies the whole model (500 MB for VGG16).
    types = {v.name: v.type for v in graph.output if dims_of(v.type) is not None}
    if any(n not in types for n in layers):
        types = infer_types(out)
    opset = _opset(out)
    taken = used_names(graph)
    shape_name = unique_name(PREFIX + "flatten_map_shape", taken)
    graph.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), shape_name))
    axes_name = None
    if opset >= 18:  # ReduceMax/ReduceMean take their axes as an input from opset 18
        axes_name = unique_name(PREFIX + "last_axis", taken)
        graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes_name))
    outputs = []
    for layer in layers:
        dims = dims_of(types[layer]) if layer in types else None
        if dims is not None and len(dims) != 4:
            raise ValueError(f"{layer!r} has rank {len(dims)}; reductions need a 4-D NCHW map")
        channels = dims[1] if dims is not None else None
        score_name, position_name = reduction_names(layer)
        if score_name in taken or position_name in taken:
            raise ValueError(f"{score_name!r} or {position_name!r} is already used in the graph")
        taken.update((score_name, position_name))
        flat = unique_name(f"{PREFIX}flat:{layer}", taken)
        graph.node.append(helper.make_node("Reshape", [layer, shape_name], [flat],
                                           name=unique_name(PREFIX + "reshape", taken)))
        op = "ReduceMax" if score == "max" else "ReduceMean"
        if axes_name:
            graph.node.append(helper.make_node(op, [flat, axes_name], [score_name], keepdims=0,
                                               name=unique_name(PREFIX + op.lower(), taken)))
        else:
            graph.node.append(helper.make_node(op, [flat], [score_name], axes=[2], keepdims=0,
                                               name=unique_name(PREFIX + op.lower(), taken)))
        argmax_attrs = {"axis": 2, "keepdims": 0}
        if opset >= 12:
            argmax_attrs["select_last_index"] = 0
        graph.node.append(helper.make_node("ArgMax", [flat], [position_name],
                                           name=unique_name(PREFIX + "argmax", taken), **argmax_attrs))
        outputs.append(helper.make_tensor_value_info(score_name, TensorProto.FLOAT, ["N", channels]))
        outputs.append(helper.make_tensor_value_info(position_name, TensorProto.INT64, ["N", channels]))
    del graph.output[:]
    graph.output.extend(outputs)
    return strip_outputs(out, [v.name for v in outputs])
