"""`onnxviz export MODEL.onnx`: an onnxviz file from an ONNX model onnxviz did not write.

The steps: load and check the model; find its one image input and the input's layout;
fix height and width (the batch stays "N"); pick the feature maps; fold the stated
preprocessing in front; expose the maps as NCHW outputs (the class scores as `[N, K]`);
run the result and the source side by side in ONNX Runtime; write it atomically with
its metadata. TensorFlow is never imported; onnxruntime only for the validation.
"""
from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, TypeProto, helper

from . import __version__
from .errors import LayerSelectionError, ModelError, OnnxvizError, ValidationError
from .external_data import check_external_data
from .files import atomic_path, ensure_dir
from .labels import load_labels
from .graph import (
    LAYOUTS,
    PREFIX,
    TO_NCHW,
    dims_of,
    expose_outputs,
    image_inputs,
    infer_types,
    prepend_preprocessing,
    rename_tensors,
    set_input_shape,
    unique_name,
    used_names,
)
from .metadata import LayerInfo, ModelInfo, Preprocessing, write_info
from .module_names import apply_module_names, with_identity
from .presets import choose_preprocessing, choose_resize

MAX_BYTES = onnx.checker.MAXIMUM_PROTOBUF  # one protobuf file: 2 GiB
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
SHOWN = 20  # names listed in an error message

# Activations: a Conv (or BN, Add, ...) whose only reader is one of these is shown after it.
ACTIVATIONS = {
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
    "Selu", "Celu", "Softplus", "Softsign", "ThresholdedRelu", "Mish", "Gelu", "Swish",
}
# Ops whose 4-D output is a feature map worth showing by default.
FEATURE_OPS = {
    "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "MaxPool", "AveragePool",
    "LpPool", "GlobalAveragePool", "GlobalMaxPool", "Concat", "Add", "Sum",
}
# Per-channel affine steps (a bias Add after a Conv, ...) that a chain passes through.
AFFINE = {"Add", "Sub", "Mul", "Div"}
# Ops ONNX defines on NCHW whatever their input's layout was.
NCHW_OPS = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv", "BatchNormalization",
    "InstanceNormalization", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
    "GlobalMaxPool", "GlobalLpPool", "LRN", "MaxUnpool", "DepthToSpace", "SpaceToDepth",
    "QLinearAveragePool", "QLinearGlobalAveragePool",
}
# Ops whose 4-D output has the layout of their 4-D inputs.
KEEP_LAYOUT_OPS = ACTIVATIONS | {
    "Dropout", "Identity", "Cast", "Pad", "Resize", "Upsample", "Neg", "Abs", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "QuantizeLinear", "DequantizeLinear",
    "Slice", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Concat", "Where",
}
# Ops that only reshape: a Softmax before them still makes probabilities.
PASSTHROUGH = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose", "Cast"}

Progress = Callable[[str], None]


@dataclass
class OnnxLayer:
    """A 4-D feature map of a source model that `export_onnx` can expose."""

    name: str  # the tensor's name: the layer name in the exported file
    node: str  # the producing node's name ("" when unnamed)
    op: str  # the producing node's op type
    shape: list[int | None]  # NCHW, batch None
    layout: str  # the tensor's own layout in the source: NCHW, or NHWC (then transposed on export)
    default: bool  # exposed when no --layers / --op-types is given


@dataclass
class OnnxInspection:
    """What `export_onnx` sees in a source model before choosing anything."""

    source: str
    input_name: str
    layout: str  # the network input's layout
    layout_inferred: bool  # True when guessed from the input shape rather than given
    height: int | None
    width: int | None
    layers: list[OnnxLayer]  # every 4-D feature map, network order
    outputs: list[str]  # the model's own outputs
    prediction_output: str | None
    classes: int | None
    prediction_is_probability: bool


@dataclass
class OnnxExportResult:
    output: Path
    info: ModelInfo
    layers: list[str]  # every exposed output, in the file's order (feature maps and final outputs)
    size_bytes: int
    layout: str
    layout_inferred: bool
    # Largest |exported - source| per output, relative to the source output's range;
    # empty when validate=False.
    max_relative_error: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------- public API

def read_labels(path: Path) -> list[str]:
    """Class names: one per line, or `index,name` lines (indices 0..K-1, any order)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ModelError(f"cannot read labels file '{path}': {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"labels file '{path}' is not UTF-8 text; give one class name per line") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ModelError(f"labels file '{path}' is empty; give one class name per line")
    indexed = [re.match(r"^(\d+)\s*,\s*(.*)$", line) for line in lines]
    if not all(indexed):
        return lines
    labels: dict[int, str] = {}
    for m in indexed:
        index = int(m.group(1))  # type: ignore[union-attr]
        if index in labels:
            raise ModelError(f"labels file '{path}' gives index {index} twice")
        labels[index] = m.group(2).strip()  # type: ignore[union-attr]
    missing = sorted(set(range(len(labels))) - set(labels))
    if missing:
        raise ModelError(f"labels file '{path}' has {len(labels)} 'index,name' lines but no index "
                         f"{missing[0]}; indices must run 0..{len(labels) - 1}")
    return [labels[i] for i in range(len(labels))]


def inspect_onnx(src: Path, *, layout: str | None = None,
                 input_size: int | tuple[int, int] | None = None) -> OnnxInspection:
    """The image input, layout and feature maps of an ONNX file (for `onnxviz layers`).

    Unlike `export_onnx`, dynamic height and width are allowed without `input_size`;
    the shapes then hold None where they depend on them.
    """
    src = Path(src)
    model, _, _ = apply_module_names(load_onnx(src))
    return _prepare(model, str(src), layout, input_size, require_size=False).inspection


def export_onnx(
    src: Path,
    output: Path,
    *,
    layers: list[str] | None = None,
    exclude: list[str] | None = None,
    op_types: list[str] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    scale: float | str | None = None,
    bgr: bool = False,
    layout: str | None = None,
    labels: Path | str | None = None,
    input_size: int | tuple[int, int] | None = None,
    progress: Progress | None = None,
    preprocess: str | None = None,
    resize: str | int | None = None,
    validate: bool = True,
    tolerance: float = 1e-3,
) -> OnnxExportResult:
    """Write an onnxviz file from `src`: RGB 0..255 NHWC in, chosen feature maps (NCHW) out.

    `layers`/`exclude` are fnmatch globs over tensor and node names; `op_types` keeps the
    maps made by those op types; `mean`/`std` (1 or 3 numbers, in the network's channel
    order) and `scale` describe what the network expects of 0..255 pixels, `bgr` that it
    takes BGR. With `validate`, the file is run next to the source in ONNX Runtime (CPU)
    and every output must agree within `tolerance` of its range. `preprocess` names a preset
    (`torchvision`, see `presets`); `resize` overrides the preset's resize recipe.
    Models exported by torch are named after their modules (see `module_names`).
    """
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    src, output = Path(src), Path(output)
    where = str(src)
    prep = (choose_preprocessing(preprocess, mean=mean, std=std, scale=scale, bgr=bgr)
            or make_preprocessing(mean=mean, std=std, scale=scale, bgr=bgr))
    choose_resize(preprocess, resize, 224, 224)  # bad values fail before any work
    ensure_dir(output.parent)  # an unwritable destination fails before any work
    label_names = load_labels(labels) if labels is not None else None

    say(f"loading {src}")
    model, identities, note = apply_module_names(load_onnx(src))
    if note:
        say(f"module names: {note}")
    prepared = _prepare(model, where, layout, input_size, require_size=True)
    insp = prepared.inspection
    if label_names is not None:
        if insp.classes is None:
            raise ModelError(f"{len(label_names)} labels given, but {where} has no class-score output "
                             f"(its first output '{insp.outputs[0]}' is not [N, K] or [N, K, 1, 1]); leave out --labels")
        if len(label_names) != insp.classes:
            raise ModelError(f"{labels} has {len(label_names)} labels but {where} has {insp.classes} classes "
                             f"(output '{insp.prediction_output}'); give a labels file with {insp.classes} names")

    chosen = _select(prepared, layers, exclude, op_types, where)
    exposed = _network_order(prepared, chosen + [o for o in insp.outputs if o not in chosen])
    say(f"exposing {len(exposed)} outputs ({sum(1 for n in exposed if n in prepared.maps)} feature maps); "
        f"input {insp.layout}{' (inferred)' if insp.layout_inferred else ''} {insp.height}x{insp.width}")

    plan = {name: _plan(prepared, name) for name in exposed}
    built = _build(prepared.model, prep, insp.layout, plan)
    infos = [with_identity(plan[name].info, identities) for name in exposed]
    info = ModelInfo(
        input_name=insp.input_name, height=int(insp.height), width=int(insp.width),  # type: ignore[arg-type]
        layers=infos, preprocessing=prep, source=where, version=__version__,
        prediction_output=insp.prediction_output,
        prediction_is_probability=insp.prediction_is_probability if insp.prediction_output else False,
        labels=label_names, keras=None,
        resize=choose_resize(preprocess, resize, int(insp.height), int(insp.width)),  # type: ignore[arg-type]
    )
    write_info(built, info)
    _check(built, f"the exported model for {where}", "this is a bug in onnxviz; please report it")
    data = _serialize(built, where)

    errors: dict[str, float] = {}
    if validate:
        say("checking the exported model against the source in ONNX Runtime")
        errors = _validate(prepared, prep, plan, exposed, data, where, tolerance)

    say(f"writing {output}")
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return OnnxExportResult(
        output=output, info=info, layers=exposed, size_bytes=output.stat().st_size,
        layout=insp.layout, layout_inferred=insp.layout_inferred, max_relative_error=errors,
        seconds=time.perf_counter() - started,
    )


def make_preprocessing(*, mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                       scale: float | str | None = None, bgr: bool = False) -> Preprocessing:
    """The `Preprocessing` for the export options: "custom", or "none" when nothing is given."""
    if mean is None and std is None and scale is None and not bgr:
        return Preprocessing("none")
    return Preprocessing(
        "custom",
        scale=1.0 if scale is None else _number(scale, "--scale"),
        mean=_triple(mean, "--mean", 0.0),
        std=_triple(std, "--std", 1.0, nonzero=True),
        bgr=bool(bgr),
    )


def load_onnx(src: Path) -> ModelProto:
    """Load an ONNX file (external data included), refusing what onnxviz cannot write back."""
    src = Path(src)
    if not src.is_file():
        raise ModelError(f"model file '{src}' does not exist")
    check_external_data(src)
    if src.stat().st_size > MAX_BYTES:
        raise _too_big(str(src), src.stat().st_size)
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf's DecodeError, missing external data, ...
        raise ModelError(f"'{src}' is not a readable ONNX model ({type(exc).__name__}: {_one_line(exc)}); "
                         f"give a .onnx file saved by an ONNX exporter") from exc
    if not model.graph.node or not model.opset_import:
        raise ModelError(f"'{src}' is not an ONNX model (it has no graph); give a .onnx file saved by an ONNX exporter")
    if model.ByteSize() > MAX_BYTES:
        raise _too_big(str(src), model.ByteSize())
    _check(model, str(src), "re-export it with a current exporter, or run "
                            "'python -c \"import onnx; onnx.checker.check_model(onnx.load(PATH), full_check=True)\"' for details")
    return model


# ---------------------------------------------------------------- preparation

@dataclass
class _Prepared:
    model: ModelProto  # input fixed to [N, C, H, W] / [N, H, W, C], stale shapes dropped
    inspection: OnnxInspection
    types: dict[str, TypeProto]
    producer: dict[str, tuple[int, NodeProto]]
    layouts: dict[str, str]
    maps: dict[str, OnnxLayer]  # every 4-D feature map by tensor name


@dataclass
class _Exposure:
    info: LayerInfo
    transpose: bool = False  # NHWC in the source: Transpose to NCHW
    flatten: bool = False  # [N, K, 1, 1] class scores: Flatten to [N, K]


def _prepare(model: ModelProto, where: str, layout: str | None, input_size: int | tuple[int, int] | None,
             require_size: bool) -> _Prepared:
    inputs = image_inputs(model.graph)
    if len(inputs) != 1:
        listed = ", ".join(f"'{v.name}' {_type_str(v.type)}" for v in inputs)
        raise ModelError(f"{where} has {len(inputs)} inputs ({listed}); onnxviz needs a model with one image input")
    inp = inputs[0]
    dims = dims_of(inp.type)
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT or dims is None or len(dims) != 4:
        raise ModelError(f"input '{inp.name}' of {where} is {_type_str(inp.type)}; onnxviz needs a float32 image "
                         f"input of rank 4 ([N, C, H, W] or [N, H, W, C])")
    net_layout, inferred = _layout(inp.name, dims, layout, where)
    height, width = _size(inp.name, dims, net_layout, input_size, where, require_size)
    opset = next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), 0)
    if opset < 7:
        raise ModelError(f"{where} uses ONNX opset {opset}; onnxviz needs opset 7 or later: convert it with "
                         f"onnx.version_converter.convert_version(model, 13)")

    def dim(value: int | None, old: int | str | None) -> int | str | None:
        return value if value is not None else old

    if net_layout == "NCHW":
        shape = ["N", 3, dim(height, dims[2]), dim(width, dims[3])]
    else:
        shape = ["N", dim(height, dims[1]), dim(width, dims[2]), 3]
    fixed = set_input_shape(model, inp.name, shape)
    types = infer_types(fixed)
    graph = fixed.graph
    producer = {o: (i, node) for i, node in enumerate(graph.node) for o in node.output if o}
    consumers: dict[str, list[NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(i for i in node.input if i):
            consumers.setdefault(name, []).append(node)
    outputs = [v.name for v in graph.output]
    layouts = _layouts(graph, types, inp.name, net_layout)

    prediction, classes = _prediction(outputs[0], types)
    probability = prediction is not None and _ends_in_softmax(prediction, producer)

    constants = {t.name for t in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    maps: dict[str, OnnxLayer] = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            d = _dims(name, types)
            if not name or name == prediction or d is None or len(d) != 4 or _elem(name, types) not in FLOAT_TYPES:
                continue
            lay = layouts.get(name, net_layout)
            maps[name] = OnnxLayer(name, node.name, node.op_type, _nchw(d, lay), lay, False)
    for node in graph.node:
        if node.op_type not in FEATURE_OPS or node.domain not in ("", "ai.onnx") or node.output[0] not in maps:
            continue
        end = _chain_end(node.output[0], consumers, set(outputs), constants, maps)
        _, _, h, w = maps[end].shape
        if not (h == 1 and w == 1):  # a global pool's [N, C, 1, 1] is a vector, not a map
            maps[end].default = True
    if not maps:
        raise ModelError(f"{where} has no 4-D feature maps (no node makes a float tensor of rank 4); "
                         f"onnxviz shows the feature maps of convolutional networks")
    inspection = OnnxInspection(
        source=where, input_name=inp.name, layout=net_layout, layout_inferred=inferred,
        height=height if height is not None else _int_or_none(dims[2] if net_layout == "NCHW" else dims[1]),
        width=width if width is not None else _int_or_none(dims[3] if net_layout == "NCHW" else dims[2]),
        layers=list(maps.values()), outputs=outputs, prediction_output=prediction, classes=classes,
        prediction_is_probability=probability,
    )
    return _Prepared(fixed, inspection, types, producer, layouts, maps)


def _layout(name: str, dims: list, layout: str | None, where: str) -> tuple[str, bool]:
    shape = _shape_str(dims)
    if layout is not None:
        chosen = layout.upper()
        if chosen not in LAYOUTS:
            raise OnnxvizError(f"layout '{layout}' is not one of nchw, nhwc")
        channels = dims[1] if chosen == "NCHW" else dims[3]
        if isinstance(channels, int) and channels != 3:
            raise ModelError(f"input '{name}' of {where} is {shape}: in {chosen} layout that is {channels} channels, "
                             f"and onnxviz feeds RGB images (3 channels); check --layout")
        return chosen, False
    c1, c3 = dims[1], dims[3]
    if c1 == 3 and c3 != 3:
        return "NCHW", True
    if c3 == 3 and c1 != 3:
        return "NHWC", True
    if isinstance(c1, int) and isinstance(c3, int) and c1 != 3 and c3 != 3:
        raise ModelError(f"input '{name}' of {where} is {shape}, with no axis of 3 channels; "
                         f"onnxviz feeds RGB images to [N, 3, H, W] or [N, H, W, 3] inputs")
    raise ModelError(f"cannot tell whether input '{name}' {shape} of {where} is NCHW or NHWC; "
                     f"pass --layout nchw or --layout nhwc")


def _size(name: str, dims: list, layout: str, input_size: int | tuple[int, int] | None, where: str,
          require: bool) -> tuple[int | None, int | None]:
    h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    want: tuple[int, int] | None = None
    if input_size is not None:
        pair = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
            raise OnnxvizError(f"input size {input_size!r} is not a positive size; give e.g. 224 or (224, 224)")
        want = (int(pair[0]), int(pair[1]))
    fixed = (h if isinstance(h, int) else None, w if isinstance(w, int) else None)
    if want is None:
        if None in fixed and require:
            raise ModelError(f"input '{name}' of {where} has a dynamic height or width ({_shape_str(dims)}); "
                             f"pass --input-size (e.g. --input-size 224) to fix it")
        return fixed
    for have, asked in zip(fixed, want):
        if have is not None and have != asked:
            raise ModelError(f"input '{name}' of {where} has a fixed size {_shape_str(dims)}; --input-size "
                             f"{want[0]}x{want[1]} does not fit it: leave --input-size out")
    return want


def _layouts(graph: onnx.GraphProto, types: dict[str, TypeProto], input_name: str, net_layout: str) -> dict[str, str]:
    """The layout of every 4-D tensor that can be traced from the input or an NCHW op."""
    layouts = {input_name: net_layout}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        op = node.op_type
        if op in NCHW_OPS:
            lay: str | None = "NCHW"
        elif op == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [3, 2, 1, 0])
            src = layouts.get(node.input[0])
            lay = "".join(src[p] for p in perm) if src and len(perm) == 4 else None
        elif op in KEEP_LAYOUT_OPS:
            known = {layouts[i] for i in node.input if i in layouts and len(_dims(i, types) or ()) == 4}
            lay = known.pop() if len(known) == 1 else None
        else:
            lay = None
        if lay in LAYOUTS:
            for o in node.output:
                if o and len(_dims(o, types) or ()) == 4:
                    layouts[o] = lay
    return layouts


def _chain_end(name: str, consumers: dict[str, list[NodeProto]], outputs: set[str], constants: set[str],
               maps: dict[str, OnnxLayer]) -> str:
    """Follow a feature map through its activation (and BN, a constant bias or scale, swish, a
    Transpose into an activation) while nothing else reads it."""
    seen = set()
    while name not in outputs and name not in seen:
        seen.add(name)
        users = consumers.get(name, [])
        nxt = None
        if len(users) == 1:
            (user,) = users
            if user.op_type in ACTIVATIONS | {"BatchNormalization"} and user.input[0] == name:
                nxt = user.output[0]
            elif user.op_type in AFFINE and all(i == name or i in constants for i in user.input):
                nxt = user.output[0]
            elif user.op_type == "Transpose" and len(consumers.get(user.output[0], [])) == 1:
                # Conv (NCHW) -> Transpose to NHWC -> Relu, as TensorFlow converters leave it
                (act,) = consumers[user.output[0]]
                if act.op_type in ACTIVATIONS and act.input[0] == user.output[0] and user.output[0] not in outputs:
                    nxt = act.output[0]
        elif len(users) == 2:  # x * sigmoid(x): SiLU / swish, and x * hardsigmoid(x)
            gate = next((u for u in users if u.op_type in ("Sigmoid", "HardSigmoid") and u.input[0] == name), None)
            mul = next((u for u in users if u.op_type == "Mul"), None)
            if (gate is not None and mul is not None and set(mul.input) == {name, gate.output[0]}
                    and consumers.get(gate.output[0]) == [mul]):
                nxt = mul.output[0]
        if nxt is None or nxt not in maps:
            break
        name = nxt
    return name


def _prediction(name: str, types: dict[str, TypeProto]) -> tuple[str | None, int | None]:
    d = _dims(name, types)
    if d is None or _elem(name, types) not in FLOAT_TYPES:
        return None, None
    if len(d) == 2 and isinstance(d[1], int) and d[1] > 1:
        return name, d[1]
    if len(d) == 4 and isinstance(d[1], int) and d[1] > 1 and d[2] == 1 and d[3] == 1:
        return name, d[1]
    return None, None


def _ends_in_softmax(name: str, producer: dict[str, tuple[int, NodeProto]]) -> bool:
    for _ in range(16):
        if name not in producer:
            return False
        node = producer[name][1]
        if node.op_type == "Softmax":
            return True
        if node.op_type not in PASSTHROUGH:
            return False
        name = node.input[0]
    return False


# ---------------------------------------------------------------- selection

def _select(prepared: _Prepared, layers: list[str] | None, exclude: list[str] | None,
            op_types: list[str] | None, where: str) -> list[str]:
    graph = prepared.model.graph
    maps = prepared.maps
    tensors = [(node, o) for node in graph.node for o in node.output if o]

    def matches(glob: str) -> list[str]:
        return [o for node, o in tensors
                if fnmatch.fnmatchcase(o, glob) or (node.name and fnmatch.fnmatchcase(node.name, glob))]

    def nothing(flag: str, glob: str) -> LayerSelectionError:
        names = list(maps)
        shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
        return LayerSelectionError(f"{flag} '{glob}' matches no tensor or node of {where}; it has {len(names)} "
                                   f"feature maps: {shown}. Run 'onnxviz layers {where}' to see them all")

    if layers:
        chosen: list[str] = []
        for glob in layers:
            hits = matches(glob)
            if not hits:
                raise nothing("--layers", glob)
            chosen += hits
        chosen = list(dict.fromkeys(chosen))
    elif op_types:
        chosen = list(maps)
    else:
        chosen = [name for name, layer in maps.items() if layer.default]
    if op_types:
        wanted = [t.strip() for spec in op_types for t in spec.split(",") if t.strip()]
        present = {node.op_type.lower(): node.op_type for node in graph.node}
        unknown = [t for t in wanted if t.lower() not in present]
        if unknown:
            raise LayerSelectionError(f"--op-types {', '.join(unknown)}: no such op in {where}; it has "
                                      f"{', '.join(sorted(set(present.values())))}")
        keep = {present[t.lower()] for t in wanted}
        chosen = [n for n in chosen if prepared.producer[n][1].op_type in keep]
    for glob in exclude or []:
        hits = set(matches(glob))
        if not hits:
            raise nothing("--exclude", glob)
        chosen = [n for n in chosen if n not in hits]
    if not chosen:
        raise LayerSelectionError(f"the selection (--layers, --exclude, --op-types) leaves no layer of {where} "
                                  f"to expose; run 'onnxviz layers {where}' to see what it has")
    return chosen


def _network_order(prepared: _Prepared, names: list[str]) -> list[str]:
    position = {n: prepared.producer[n][0] if n in prepared.producer else -1 for n in names}
    return sorted(dict.fromkeys(names), key=lambda n: position[n])


def _plan(prepared: _Prepared, name: str) -> _Exposure:
    insp = prepared.inspection
    op = prepared.producer[name][1].op_type if name in prepared.producer else "Input"
    if name == insp.prediction_output:
        return _Exposure(LayerInfo(name, op, [None, insp.classes], "NC"),
                         flatten=len(_dims(name, prepared.types) or ()) == 4)
    if name in prepared.maps:
        layer = prepared.maps[name]
        return _Exposure(LayerInfo(name, op, layer.shape, "NCHW"), transpose=layer.layout == "NHWC")
    d = _dims(name, prepared.types)
    if d is None:
        raise ModelError(f"shape inference cannot tell the shape of '{name}' in {insp.source}; "
                         f"choose other layers with --layers")
    shape = [None] + [_int_or_none(v) for v in d[1:]] if d else []
    return _Exposure(LayerInfo(name, op, shape, "NC" if len(d) == 2 else ""))


# ---------------------------------------------------------------- building and checking

def _build(model: ModelProto, prep: Preprocessing, layout: str, plan: dict[str, _Exposure]) -> ModelProto:
    """Preprocessing in front; a Transpose or Flatten after each tensor that needs one; the outputs."""
    built = prepend_preprocessing(model, prep, layout)
    taken = used_names(built.graph)
    renames: dict[str, str] = {}
    extra: list[NodeProto] = []
    for name, exp in plan.items():
        if not (exp.transpose or exp.flatten):
            continue
        kind = "nhwc" if exp.transpose else "4d"
        inner = unique_name(f"{PREFIX}{kind}_{name}", taken)
        renames[name] = inner
        node_name = unique_name(f"{PREFIX}{'to_nchw' if exp.transpose else 'flatten'}_{name}", taken)
        if exp.transpose:
            extra.append(helper.make_node("Transpose", [inner], [name], name=node_name, perm=TO_NCHW))
        else:
            extra.append(helper.make_node("Flatten", [inner], [name], name=node_name, axis=1))
    built = rename_tensors(built, renames)
    built.graph.node.extend(extra)
    return expose_outputs(built, list(plan))


def _validate(prepared: _Prepared, prep: Preprocessing, plan: dict[str, _Exposure], exposed: list[str],
              data: bytes, where: str, tolerance: float) -> dict[str, float]:
    """Run the file and the source (same tensors exposed, preprocessing in numpy) in ORT CPU."""
    insp = prepared.inspection
    rng = np.random.default_rng(0)
    rgb = np.round(rng.uniform(0, 255, (1, int(insp.height), int(insp.width), 3))).astype(np.float32)  # type: ignore[arg-type]
    x = rgb[..., ::-1] if prep.bgr else rgb
    x = ((x * np.float32(prep.scale) - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32))
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if insp.layout == "NCHW" else x, dtype=np.float32)
    source = expose_outputs(prepared.model, exposed)
    want = _run(_serialize(source, where), {insp.input_name: x}, where, "the source model")
    got = _run(data, {insp.input_name: rgb}, where, "the exported model")
    errors: dict[str, float] = {}
    failed = []
    for name in exposed:
        ref = want[name]
        if plan[name].transpose:
            ref = ref.transpose(0, 3, 1, 2)
        if plan[name].flatten:
            ref = ref.reshape(ref.shape[0], -1)
        out = got[name]
        if out.shape != ref.shape:
            failed.append(f"{name}: shape {list(out.shape)} != {list(ref.shape)}")
            continue
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        span = float(ref64.max() - ref64.min()) if ref64.size else 0.0
        diff = float(np.abs(out64 - ref64).max()) if ref64.size else 0.0
        errors[name] = diff / span if span > 0 else diff
        if not errors[name] <= tolerance:
            failed.append(f"{name}: max relative error {errors[name]:.1e}")
    if failed:
        raise ValidationError(f"the exported model disagrees with {where} on {len(failed)} outputs "
                              f"(tolerance {tolerance:g}): {'; '.join(failed[:SHOWN])}")
    return errors


def _run(data: bytes, feeds: dict[str, np.ndarray], where: str, what: str) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    except Exception as exc:  # ORT raises its own exception types for unsupported ops and the like
        raise ModelError(f"ONNX Runtime cannot run {what} for {where}: {_one_line(exc)}") from exc


def _check(model: ModelProto, where: str, advice: str) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"{where} fails the ONNX checker: {_one_line(exc)}; {advice}") from exc


def _serialize(model: ModelProto, where: str) -> bytes:
    size = model.ByteSize()
    if size > MAX_BYTES:
        raise _too_big(where, size)
    return model.SerializeToString()


def _too_big(where: str, size: int) -> ModelError:
    return ModelError(f"{where} is {size / 2**30:.1f} GiB; onnxviz writes single-file ONNX models, which "
                      f"protobuf limits to 2 GiB, and does not use external data: export a smaller model")


# ---------------------------------------------------------------- small helpers

def _dims(name: str, types: dict[str, TypeProto]) -> list[int | str | None] | None:
    return dims_of(types[name]) if name in types else None


def _elem(name: str, types: dict[str, TypeProto]) -> int | None:
    if name not in types or types[name].WhichOneof("value") != "tensor_type":
        return None
    return types[name].tensor_type.elem_type


def _nchw(d: list[int | str | None], layout: str) -> list[int | None]:
    order = [0, 3, 1, 2] if layout == "NHWC" else [0, 1, 2, 3]
    return [None] + [_int_or_none(d[i]) for i in order[1:]]


def _int_or_none(v: object) -> int | None:
    return int(v) if isinstance(v, (int, np.integer)) else None


def _shape_str(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _type_str(tp: TypeProto) -> str:
    if tp.WhichOneof("value") != "tensor_type":
        return tp.WhichOneof("value") or "untyped"
    elem = helper.tensor_dtype_to_string(tp.tensor_type.elem_type).removeprefix("TensorProto.").lower()
    d = dims_of(tp)
    return elem + (_shape_str(d) if d is not None else "[rank unknown]")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _number(value: float | str, flag: str) -> float:
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.split("/", 1)
            return float(num) / float(den)
        return float(value)
    except (ValueError, ZeroDivisionError) as exc:
        raise OnnxvizError(f"{flag} {value!r} is not a number; give e.g. 0.00392157 or 1/255") from exc


def _triple(value: float | Sequence[float] | None, flag: str, default: float, nonzero: bool = False) -> list[float]:
    if value is None:
        return [default] * 3
    values = [value] if isinstance(value, (int, float, str)) else list(value)
    if len(values) not in (1, 3):
        raise OnnxvizError(f"{flag} takes 1 or 3 numbers, got {len(values)} (one per channel)")
    try:
        numbers = [_number(v, flag) for v in values] * (3 if len(values) == 1 else 1)
    except OnnxvizError:
        shown = ",".join(map(str, values))
        raise OnnxvizError(f"{flag} takes numbers separated by commas, e.g. 0.485,0.456,0.406; got '{shown}'") from None
    if nonzero and any(v == 0 for v in numbers):
        raise OnnxvizError(f"{flag} {numbers} has a 0; every std must be non-zero")
    return numbers
