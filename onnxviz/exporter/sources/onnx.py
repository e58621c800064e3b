"""ONNX sources: an ONNX file (external data included) or an `onnx.ModelProto` not written by onnxviz.

The steps: load and check the model; find its one image input and the input's layout;
fix height and width (the batch stays "N"); pick the feature maps; expose them as NCHW
outputs (the class scores as `[N, K]`). The pipeline folds the stated preprocessing in
front and checks every output against the source model run in ONNX Runtime (`_reference`).
TensorFlow is never imported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, TypeProto, helper

from onnxviz.errors import LayerSelectionError, ModelError, OnnxvizError, OptionError
from onnxviz.files import existing_file
from onnxviz.model.graph import (
    LAYOUTS,
    PREFIX,
    TO_NCHW,
    dims_of,
    expose_outputs,
    image_inputs,
    infer_types,
    rename_tensors,
    set_input_shape,
    unique_name,
    used_names,
)
from onnxviz.exporter.sources.onnx_batch import fixed_batch_of_one, free_batch
from onnxviz.model.info import LayerInfo, Preprocessing, gray_of
from onnxviz.exporter.sources.torch_names import apply_module_names, with_identity
from onnxviz.exporter.presets import choose_preprocessing, choose_resize
from onnxviz.model.selection import Candidate, select
from onnxviz.exporter.sources.base import (
    EVERY_SOURCE, GRAY_REASON, Adapter, Built, ExportOptions, Progress, for_one_channel)

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
    channels: int = 3  # the network input's: 3 (RGB) or 1 (gray)
    size_reason: str = ""  # where height x width came from, in words
    unlike_image: list[str] = field(default_factory=list)  # 4-D tensors left out of the default: not image-like


# ---------------------------------------------------------------- public API

def inspect_onnx(src: Path, *, layout: str | None = None,
                 input_size: int | tuple[int, int] | None = None) -> OnnxInspection:
    """The image input, layout and feature maps of an ONNX file (for `onnxviz layers`).

    Unlike `export_onnx`, dynamic height and width are allowed without `input_size`;
    the shapes then hold None where they depend on them.
    """
    src = Path(src)
    model, _, _ = apply_module_names(load_onnx(src))
    return _prepare(model, str(src), layout, input_size, require_size=False).inspection


class OnnxSource(Adapter):
    """What ONNX files and `onnx.ModelProto` objects share: the options they take and how they build."""

    kind = "ONNX model"
    options = EVERY_SOURCE | {"op_types", "mean", "std", "scale", "bgr", "layout", "preprocess", "resize"}

    def check(self, options: ExportOptions) -> None:
        # a preset and a resize are checked before the model is loaded
        choose_preprocessing(options.preprocess, mean=options.mean, std=options.std, scale=options.scale,
                             bgr=options.bgr)
        choose_resize(options.preprocess, options.resize, 224, 224)


class OnnxFile(OnnxSource):
    """An `.onnx` file (external data included)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(self.path.stem)

    @classmethod
    def claims(cls, source: Any) -> bool:
        return isinstance(source, (str, Path)) and str(source).lower().endswith(".onnx")

    @classmethod
    def open(cls, source: Any) -> OnnxFile:
        path = Path(source)
        existing_file(path, "model file")
        return cls(path)

    def build(self, options: ExportOptions, say: Progress) -> Built:
        say(f"loading {self.path}")
        return _build(load_onnx(self.path), str(self.path), options, say)


class OnnxProto(OnnxSource):
    """An `onnx.ModelProto` in memory."""

    def __init__(self, model: ModelProto) -> None:
        super().__init__(model.graph.name or "model")
        self.model = model

    @classmethod
    def claims(cls, source: Any) -> bool:
        kind = type(source)
        return kind.__name__ == "ModelProto" and kind.__module__.startswith("onnx")

    @classmethod
    def open(cls, source: Any) -> OnnxProto:
        return cls(source)

    def build(self, options: ExportOptions, say: Progress) -> Built:
        where = f"the ONNX model '{self.stem}'"
        _check(self.model, where, "build it with onnx.helper and check it with onnx.checker")
        return _build(self.model, where, options, say)


# (prepared model, preprocessing, exposure plan, exposed names) -> RGB 0..255 batch -> each exposed tensor
ReferenceFor = Callable[["_Prepared", Preprocessing, "dict[str, _Exposure]", "list[str]"],
                        Callable[[np.ndarray], "dict[str, np.ndarray]"]]


def _build(model: ModelProto, where: str, opts: ExportOptions, say: Progress, *,
           tensors: Collection[str] | None = None, reference_for: ReferenceFor | None = None,
           reference_name: str = "ONNX Runtime running the source model") -> Built:
    """Pick the maps, give each an NCHW output; the source in ONNX Runtime is the reference.

    A source converted to ONNX (TFLite) names the `tensors` it has (only those can be exposed:
    others have no value in the source to check them against) and its own `reference_for`."""
    preset = choose_preprocessing(opts.preprocess, mean=opts.mean, std=opts.std, scale=opts.scale, bgr=opts.bgr)
    prep = preset or make_preprocessing(mean=opts.mean, std=opts.std, scale=opts.scale, bgr=opts.bgr)
    choose_resize(opts.preprocess, opts.resize, 224, 224)  # a bad value fails before any work
    reason = (f"the '{prep.mode}' preset" if preset is not None else "as given by mean, std, scale and bgr"
              if prep.mode == "custom" else "'none': the ONNX model gets 0..255 RGB pixels as they are (give "
                                            "mean, std, scale or bgr to say what it expects)")
    model, identities, note = apply_module_names(model)  # torch exports: maps named after their modules
    inputs = image_inputs(model.graph)
    one_by_one = len(inputs) == 1 and fixed_batch_of_one(model, inputs[0].name)
    if one_by_one:  # exported for one image: run on batches, checked against the source image by image
        model, freed = free_batch(model)
        if freed:
            say(f"the model was exported for batch 1: {freed} reshape(s) made to keep any batch")
    prepared = _prepare(model, where, opts.layout, opts.input_size, require_size=True, tensors=tensors)
    insp = prepared.inspection
    if insp.channels == 1:
        prep = for_one_channel(prep, where)
        reason += f"; {GRAY_REASON}"
    chosen = _select(prepared, opts.layers, opts.exclude, opts.op_types, where)
    exposed = _network_order(prepared, chosen + [o for o in insp.outputs if o not in chosen])
    say(f"exposing {len(exposed)} outputs ({sum(1 for n in exposed if n in prepared.maps)} feature maps); "
        f"input {insp.layout}{' (inferred)' if insp.layout_inferred else ''} {insp.height}x{insp.width}")
    plan = {name: _plan(prepared, name) for name in exposed}
    built = _expose(prepared.model, plan)
    _check(built, f"the exported model for {where}", "this is a bug in onnxviz; please report it")

    def run_source(rgb: np.ndarray) -> dict[str, np.ndarray]:
        return _reference(prepared, prep, plan, exposed, rgb, where)

    run = reference_for(prepared, prep, plan, exposed) if reference_for is not None else run_source

    def reference(rgb: np.ndarray) -> dict[str, np.ndarray]:
        if one_by_one:
            parts = [run(rgb[i:i + 1]) for i in range(len(rgb))]
            return {name: np.concatenate([p[name] for p in parts]) for name in exposed}
        return run(rgb)

    return Built(
        model=built, input_name=insp.input_name, height=int(insp.height), width=int(insp.width),  # type: ignore[arg-type]
        layout=insp.layout, layers=[with_identity(plan[name].info, identities) for name in exposed], preprocessing=prep,
        preprocessing_reason=reason, source=where, reference_name=reference_name,
        reference=reference, prediction_output=insp.prediction_output,
        prediction_is_probability=insp.prediction_is_probability if insp.prediction_output else False,
        classes=insp.classes,
        notes=([f"input layout {insp.layout}, inferred from its shape; give the layout if that is wrong"]
               if insp.layout_inferred else []) + ([f"module names: {note}"] if note else [])
        + (["its 1000 classes have no names: if they are ImageNet's (torchvision's classifiers), give the labels "
            "'imagenet' (--labels imagenet) for the names shipped with onnxviz"]
           if insp.classes == 1000 and opts.labels is None else [])
        + ([f"left out of the default selection, not laid out like the image: {_listed(insp.unlike_image, prepared)}"
             f"; name them in the layers to show them anyway"] if insp.unlike_image and not opts.layers else []),
        resize=choose_resize(opts.preprocess, opts.resize, int(insp.height), int(insp.width)),  # type: ignore[arg-type]
        size_reason=insp.size_reason,
    )


def _listed(names: list[str], prepared: _Prepared) -> str:
    shown = [f"{n} {[d for d in prepared.maps[n].shape[1:]]}" for n in names[:SHOWN]]
    return ", ".join(shown) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def make_preprocessing(*, mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                       scale: float | str | None = None, bgr: bool = False) -> Preprocessing:
    """The `Preprocessing` for the export options: "custom", or "none" when nothing is given."""
    if mean is None and std is None and scale is None and not bgr:
        return Preprocessing("none")
    return Preprocessing(
        "custom",
        scale=1.0 if scale is None else _number(scale, "scale"),
        mean=_triple(mean, "mean", 0.0),
        std=_triple(std, "std", 1.0, nonzero=True),
        bgr=bool(bgr),
    )


def load_onnx(src: Path) -> ModelProto:
    """Load an ONNX file (external data included), refusing what onnxviz cannot write back."""
    from onnxviz.model.modelfile import unreadable

    src = existing_file(Path(src), "model file")
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf's DecodeError, missing external data, ...
        raise unreadable(src, f"{type(exc).__name__}: {_one_line(exc)}") from exc
    if not model.graph.node or not model.opset_import:
        raise unreadable(src)
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
    tensors: Collection[str] | None = None  # the only tensors that may be exposed (a converted source's own)


@dataclass
class _Exposure:
    info: LayerInfo
    transpose: bool = False  # NHWC in the source: Transpose to NCHW
    flatten: bool = False  # [N, K, 1, 1] class scores: Flatten to [N, K]


def _prepare(model: ModelProto, where: str, layout: str | None, input_size: int | tuple[int, int] | None,
             require_size: bool, tensors: Collection[str] | None = None) -> _Prepared:
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
    channels = int(dims[1] if net_layout == "NCHW" else dims[3])  # type: ignore[arg-type]
    stated = _stated_size(model)
    height, width = _size(inp.name, dims, net_layout, input_size, where, require_size, stated)
    size_reason = ("as given" if input_size is not None else "fixed in the model's input"
                   if height is not None and None not in _fixed_size(dims, net_layout) else
                   f"from the model's metadata imgsz {list(stated)}" if stated is not None else "")
    opset = next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), 0)
    if opset < 7:
        raise ModelError(f"{where} uses ONNX opset {opset}; onnxviz needs opset 7 or later: convert it with "
                         f"onnx.version_converter.convert_version(model, 13)")

    def dim(value: int | None, old: int | str | None) -> int | str | None:
        return value if value is not None else old

    if net_layout == "NCHW":
        shape = ["N", channels, dim(height, dims[2]), dim(width, dims[3])]
    else:
        shape = ["N", dim(height, dims[1]), dim(width, dims[2]), channels]
    fixed = set_input_shape(model, inp.name, shape)
    types = infer_types(fixed)
    graph = fixed.graph
    producer = {o: (i, node) for i, node in enumerate(graph.node) for o in node.output if o}
    consumers: dict[str, list[NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(i for i in node.input if i):
            consumers.setdefault(name, []).append(node)
    outputs = [v.name for v in graph.output]
    if require_size:  # every tensor export may expose gets its static shape, measured where inference stops
        _measure_shapes(fixed, types, inp.name, shape, net_layout, outputs, where,
                        always=None in _fixed_size(dims, net_layout))
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
            if tensors is not None and name not in tensors:
                continue
            lay = layouts.get(name, net_layout)
            maps[name] = OnnxLayer(name, node.name, node.op_type, _nchw(d, lay), lay, False)
    unlike: list[str] = []  # 4-D tensors laid out unlike the image: left out of the default selection
    if tensors is not None:  # a converted source's own tensors are its layers' outputs, activations included
        ends = list(maps)
    else:
        ends = [_chain_end(node.output[0], consumers, set(outputs), constants, maps) for node in graph.node
                if node.op_type in FEATURE_OPS and node.domain in ("", "ai.onnx") and node.output[0] in maps]
    for end in ends:
        _, _, h, w = maps[end].shape
        if h == 1 and w == 1:  # a global pool's [N, C, 1, 1] is a vector, not a map
            continue
        if height is not None and width is not None and not _image_like(h, w, height, width):
            if end not in unlike:
                unlike.append(end)
            continue
        maps[end].default = True
    if not maps:
        raise ModelError(f"{where} has no 4-D feature maps (no node makes a float tensor of rank 4); "
                         f"onnxviz shows the feature maps of convolutional networks")
    inspection = OnnxInspection(
        source=where, input_name=inp.name, layout=net_layout, layout_inferred=inferred,
        height=height if height is not None else _int_or_none(dims[2] if net_layout == "NCHW" else dims[1]),
        width=width if width is not None else _int_or_none(dims[3] if net_layout == "NCHW" else dims[2]),
        layers=list(maps.values()), outputs=outputs, prediction_output=prediction, classes=classes,
        prediction_is_probability=probability, channels=channels, size_reason=size_reason,
        unlike_image=[n for n in unlike if not maps[n].default],
    )
    return _Prepared(fixed, inspection, types, producer, layouts, maps, tensors)


def _image_like(h: int | None, w: int | None, height: int, width: int) -> bool:
    """Whether a [C, h, w] tensor is laid out like the image: a map no more than twice the input's
    size on each side (a detection head's [1, 4, 2100] boxes per anchor is not)."""
    return h is not None and w is not None and h <= 2 * height and w <= 2 * width


def _stated_size(model: ModelProto) -> tuple[int, int] | None:
    """The input size a model's metadata states (Ultralytics writes `imgsz: [320, 320]`)."""
    import re

    for prop in model.metadata_props:
        if prop.key.lower() in ("imgsz", "img_size", "input_size", "image_size"):
            numbers = [int(n) for n in re.findall(r"\d+", prop.value)]
            if len(numbers) in (1, 2) and all(n > 0 for n in numbers):
                return numbers[0], numbers[-1]
    return None


def _fixed_size(dims: list, layout: str) -> tuple[int | None, int | None]:
    h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    return (h if isinstance(h, int) else None, w if isinstance(w, int) else None)


def _measure_shapes(model: ModelProto, types: dict[str, TypeProto], input_name: str, shape: list, layout: str,
                    outputs: list[str], where: str, always: bool) -> None:
    """Static shapes for the 4-D float tensors and the outputs whose size shape inference leaves
    open (a Reshape to a computed shape), measured by running the model once at its fixed size;
    `types` is updated in place. With `always` (a size the graph leaves open) the model runs even
    when nothing is open: a size it cannot run at is refused, naming one it can."""
    from onnxviz.run.session import run_model

    open_dims = [name for name, tp in types.items()
                 if (name in outputs or (len(dims_of(tp) or ()) == 4 and _elem(name, types) in FLOAT_TYPES))
                 and name != input_name and dims_of(tp) is not None
                 and not all(isinstance(d, int) for d in (dims_of(tp) or [])[1:])]
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if not open_dims and not always:
        return
    try:
        values = run_model(_serialize(expose_outputs(model, list(dict.fromkeys(open_dims + outputs))), where),
                           {input_name: np.zeros([1 if d == "N" else d for d in shape], np.float32)},
                           what=f"{where} at {height}x{width}")
    except ModelError as exc:
        fits = _size_that_runs(model, input_name, shape, layout, where)
        hint = f"; it runs at {fits[0]}x{fits[1]}, the next size up that is a multiple of {fits[2]}" if fits else ""
        raise OptionError(f"{where} does not run at {{input_size}} {height}x{width}{hint}: {exc}",
                          params=("input_size",)) from exc
    for name in open_dims:
        measured = values[name].shape
        elem = types[name].tensor_type.elem_type
        old = dims_of(types[name]) or []
        types[name] = helper.make_tensor_type_proto(elem, [old[0] if old else "N", *measured[1:]])


def _size_that_runs(model: ModelProto, input_name: str, shape: list, layout: str,
                    where: str) -> tuple[int, int, int] | None:
    """The nearest larger size that is a multiple of 8, 16, 32 or 64 at which the model runs, if any."""
    from onnxviz.run.session import run_model

    nchw = layout == "NCHW"
    h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    if not (isinstance(h, int) and isinstance(w, int)):
        return None
    for step in (8, 16, 32, 64):
        h2, w2 = -(-h // step) * step, -(-w // step) * step
        if (h2, w2) == (h, w):
            continue
        trial = list(shape)
        if nchw:
            trial[2], trial[3] = h2, w2
        else:
            trial[1], trial[2] = h2, w2
        sized = set_input_shape(model, input_name, trial)
        try:
            run_model(_serialize(sized, where), {input_name: np.zeros([1 if d == "N" else d for d in trial],
                                                                      np.float32)}, what=where)
        except ModelError:
            continue
        return h2, w2, step
    return None


def _layout(name: str, dims: list, layout: str | None, where: str) -> tuple[str, bool]:
    """The input's layout: as given, else inferred from which axis holds 1 or 3 channels."""
    shape = _shape_str(dims)
    if layout is not None:
        chosen = layout.upper()
        if chosen not in LAYOUTS:
            raise OptionError(f"{{layout}} '{layout}' is not one of nchw, nhwc", params=("layout",))
        channels = dims[1] if chosen == "NCHW" else dims[3]
        if isinstance(channels, int) and channels not in (1, 3):
            raise OptionError(f"input '{name}' of {where} is {shape}: in {chosen} layout that is {channels} channels, "
                              f"and onnxviz feeds RGB images (3 channels) or their gray (1 channel); check {{layout}}",
                              params=("layout",))
        if not isinstance(channels, int):
            raise ModelError(f"input '{name}' of {where} is {shape}: in {chosen} layout its channels are not fixed; "
                             f"onnxviz feeds 3-channel (RGB) or 1-channel (gray) inputs")
        return chosen, False
    c1, c3 = dims[1], dims[3]
    takes = (1, 3)
    if c1 in takes and c3 not in takes:
        return "NCHW", True
    if c3 in takes and c1 not in takes:
        return "NHWC", True
    if c1 not in takes and c3 not in takes and (isinstance(c1, int) or isinstance(c3, int)):
        count = c1 if isinstance(c1, int) and not (isinstance(c3, int) and c3 < c1) else c3
        raise ModelError(f"input '{name}' of {where} is {shape}: {count} channels; onnxviz feeds RGB images to "
                         f"3-channel inputs and their gray conversion to 1-channel inputs, not {count} channels")
    raise OptionError(f"cannot tell whether input '{name}' {shape} of {where} is NCHW or NHWC; "
                      f"give {{layout}} nchw or nhwc", params=("layout",))


def _size(name: str, dims: list, layout: str, input_size: int | tuple[int, int] | None, where: str,
          require: bool, stated: tuple[int, int] | None = None) -> tuple[int | None, int | None]:
    want: tuple[int, int] | None = None
    if input_size is not None:
        pair = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
            raise OptionError(f"{{input_size}} {input_size!r} is not a positive size; give e.g. 224 or (224, 224)",
                              params=("input_size",))
        want = (int(pair[0]), int(pair[1]))
    fixed = _fixed_size(dims, layout)
    if want is None:
        if None in fixed and stated is not None and all(f is None or f == s for f, s in zip(fixed, stated)):
            return stated
        if None in fixed and require:
            raise OptionError(f"input '{name}' of {where} has a dynamic height or width ({_shape_str(dims)}); "
                              f"give {{input_size}} (e.g. 224 or 48x192) to fix it", params=("input_size",))
        return fixed
    for have, asked, what in zip(fixed, want, ("height", "width")):
        if have is not None and have != asked:
            takes = (f"it takes {fixed[0]}x{fixed[1]} only" if None not in fixed
                     else f"its {what} is fixed at {have}")
            raise OptionError(f"input '{name}' of {where} has a fixed size {_shape_str(dims)}: {{input_size}} "
                              f"{want[0]}x{want[1]} does not fit it ({takes}); leave it out", params=("input_size",))
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
    candidates = [Candidate(o, (node.name,)) for node in graph.node for o in node.output
                  if o and (prepared.tensors is None or o in prepared.tensors)]
    hint = f". Run 'onnxviz layers {where}' to see them all"
    default = list(maps) if op_types else [name for name, layer in maps.items() if layer.default]
    chosen = select(candidates, layers or (), (), default, where=where, hint=hint, listed=list(maps))
    if op_types:
        wanted = [t.strip() for spec in op_types for t in spec.split(",") if t.strip()]
        present = {node.op_type.lower(): node.op_type for node in graph.node}
        unknown = [t for t in wanted if t.lower() not in present]
        if unknown:
            raise OptionError(f"{{op_types}} {', '.join(unknown)}: no such op in {where}; it has "
                              f"{', '.join(sorted(set(present.values())))}", params=("op_types",))
        keep = {present[t.lower()] for t in wanted}
        chosen = [n for n in chosen if prepared.producer[n][1].op_type in keep]
    if exclude:
        dropped = set(select(candidates, exclude, (), where=where, params=("exclude", "exclude"), hint=hint,
                             listed=list(maps)))
        chosen = [n for n in chosen if n not in dropped]
    if not chosen:
        raise LayerSelectionError(f"the selection leaves no layer of {where} to expose; run 'onnxviz layers "
                                  f"{where}' to see what it has")
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
                         f"choose other layers")
    shape = [None] + [_int_or_none(v) for v in d[1:]] if d else []
    return _Exposure(LayerInfo(name, op, shape, "NC" if len(d) == 2 else ""))


# ---------------------------------------------------------------- building and checking

def _expose(model: ModelProto, plan: dict[str, _Exposure]) -> ModelProto:
    """A Transpose or Flatten after each tensor that needs one; the outputs."""
    built = model
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


def _reference(prepared: _Prepared, prep: Preprocessing, plan: dict[str, _Exposure], exposed: list[str],
               rgb: np.ndarray, where: str) -> dict[str, np.ndarray]:
    """The source model's own values of the exposed tensors (preprocessing done in numpy),
    in the exported file's layout."""
    from onnxviz.run.session import run_model

    insp = prepared.inspection
    if prep.gray:
        x = (gray_of(rgb) * np.float32(prep.scale) - np.float32(prep.mean[0])) / np.float32(prep.std[0])
    else:
        x = rgb[..., ::-1] if prep.bgr else rgb
        x = ((x * np.float32(prep.scale) - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32))
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if insp.layout == "NCHW" else x, dtype=np.float32)
    source = expose_outputs(prepared.model, exposed)
    want = run_model(_serialize(source, where), {insp.input_name: x}, what=f"the source model {where}")
    out = {}
    for name in exposed:
        ref = want[name]
        if plan[name].transpose:
            ref = ref.transpose(0, 3, 1, 2)
        if plan[name].flatten:
            ref = ref.reshape(ref.shape[0], -1)
        out[name] = ref
    return out


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


def _number(value: float | str, param: str) -> float:
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.split("/", 1)
            return float(num) / float(den)
        return float(value)
    except (ValueError, ZeroDivisionError) as exc:
        raise OptionError(f"{{{param}}} {value!r} is not a number; give e.g. 0.00392157 or 1/255",
                          params=(param,)) from exc


def _triple(value: float | Sequence[float] | None, param: str, default: float, nonzero: bool = False) -> list[float]:
    if value is None:
        return [default] * 3
    values = [value] if isinstance(value, (int, float, str)) else list(value)
    if len(values) not in (1, 3):
        raise OptionError(f"{{{param}}} takes 1 or 3 numbers, got {len(values)} (one per channel)", params=(param,))
    try:
        numbers = [_number(v, param) for v in values] * (3 if len(values) == 1 else 1)
    except OnnxvizError:
        shown = ",".join(map(str, values))
        raise OptionError(f"{{{param}}} takes numbers separated by commas, e.g. 0.485,0.456,0.406; got '{shown}'",
                          params=(param,)) from None
    if nonzero and any(v == 0 for v in numbers):
        raise OptionError(f"{{{param}}} {numbers} has a 0; every std must be non-zero", params=(param,))
    return numbers
