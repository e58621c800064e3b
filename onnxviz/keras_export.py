"""`onnxviz export` for Keras models: one ONNX file whose outputs are the layers' feature maps.

TensorFlow, Keras and tf2onnx are imported inside the functions that need them, so the
rest of onnxviz runs where TensorFlow is not installed.

The path: build or load the Keras model, flatten nested models so every inner layer has
a tensor of its own, pick the layers, trace one `tf.function` that returns those tensors
(4-D maps transposed to NCHW, where tf2onnx's transpose optimiser cancels them against
its own), convert it with tf2onnx, name the outputs after the layers, fold the model's
preprocessing in front (the file takes RGB 0..255 NHWC), write it atomically, then run
it on ONNX Runtime and compare every output with Keras before saying done.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .compare import TensorDiff, diff_outputs, diff_tensor
from .errors import LayerSelectionError, ModelError, OnnxvizError, ValidationError
from .metadata import KERAS_MODES, LayerInfo, ModelInfo, Preprocessing, write_info

Progress = Callable[[str], None]

OPSET = 17
DEFAULT_TOLERANCE = 1e-4
CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


@dataclass(frozen=True)
class Application:
    """A `keras.applications` constructor and the preprocessing its weights expect."""

    constructor: str
    module: str
    mode: str
    alpha: bool = False
    size: int = 224  # Keras' default input size


def _apps() -> dict[str, Application]:
    table: dict[str, Application] = {
        "vgg16": Application("VGG16", "vgg16", "caffe"),
        "vgg19": Application("VGG19", "vgg19", "caffe"),
        "inceptionv3": Application("InceptionV3", "inception_v3", "tf", size=299),
        "inceptionresnetv2": Application("InceptionResNetV2", "inception_resnet_v2", "tf", size=299),
        "xception": Application("Xception", "xception", "tf", size=299),
        "mobilenet": Application("MobileNet", "mobilenet", "tf", alpha=True),
        "mobilenetv2": Application("MobileNetV2", "mobilenet_v2", "tf", alpha=True),
        "mobilenetv3small": Application("MobileNetV3Small", "mobilenet_v3", "none", alpha=True),
        "mobilenetv3large": Application("MobileNetV3Large", "mobilenet_v3", "none", alpha=True),
        "nasnetmobile": Application("NASNetMobile", "nasnet", "tf"),
        "nasnetlarge": Application("NASNetLarge", "nasnet", "tf", size=331),
    }
    for depth in (50, 101, 152):
        table[f"resnet{depth}"] = Application(f"ResNet{depth}", "resnet", "caffe")
        table[f"resnet{depth}v2"] = Application(f"ResNet{depth}V2", "resnet_v2", "tf")
    for depth in (121, 169, 201):
        table[f"densenet{depth}"] = Application(f"DenseNet{depth}", "densenet", "torch")
    for b, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
        table[f"efficientnetb{b}"] = Application(f"EfficientNetB{b}", "efficientnet", "none", size=size)
    for v, size in zip(("b0", "b1", "b2", "b3", "s", "m", "l"), (224, 240, 260, 300, 384, 480, 480)):
        table[f"efficientnetv2{v}"] = Application(f"EfficientNetV2{v.upper()}", "efficientnet_v2", "none", size=size)
    for size in ("tiny", "small", "base", "large", "xlarge"):
        table[f"convnext{size}"] = Application(f"ConvNeXt{size.capitalize()}", "convnext", "none")
    return table


APPLICATIONS = _apps()
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass
class ExportOptions:
    weights: str | None = None  # "imagenet" | "none" | a path; None: imagenet for applications, the file's own
    input_size: int | None = None
    alpha: float | None = None
    layers: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    skip_fused: bool = False  # leave out the tensors ORT would fuse away (see fused_away)
    preprocess: str | None = None  # for model files: caffe | tf | torch | none
    include_top: bool = True  # applications: keep the classifier
    tolerance: float = DEFAULT_TOLERANCE
    probes: int = 2


@dataclass
class ExportResult:
    """What `export_keras` wrote and how well it matched Keras."""

    path: Path
    info: ModelInfo
    diffs: list[TensorDiff]
    max_relative: float
    size_bytes: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # tf2onnx deep-copies the whole graph before each optimiser pass when it catches
    # errors: VGG16 went past 23 GiB that way. Without the copies it stays near 3 GiB.
    os.environ.setdefault("TF2ONNX_CATCH_ERRORS", "FALSE")


@contextlib.contextmanager
def _stderr_silenced():
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_keras():
    _quiet_tensorflow()
    try:
        with _stderr_silenced():  # TensorFlow's C++ start-up notes bypass Python logging
            import tensorflow as tf  # noqa: F401
            import keras
    except ImportError as exc:
        raise OnnxvizError(
            "exporting a Keras model needs TensorFlow and tf2onnx: pip install 'onnxviz[export]'"
        ) from exc
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    return tf, keras


def default_output(model: str) -> Path:
    stem = Path(model).stem if _looks_like_path(model) else model.lower()
    return Path("models") / f"{stem}.onnx"


def _looks_like_path(model: str) -> bool:
    return model.lower().endswith(MODEL_SUFFIXES) or os.sep in model or Path(model).exists()


def resolve_application(name: str) -> Application:
    app = APPLICATIONS.get(name.lower().replace("_", "").replace("-", ""))
    if app is None:
        raise ModelError(
            f"unknown model '{name}': give a .keras/.h5 file or one of {', '.join(sorted(APPLICATIONS))}"
        )
    return app


# ---------------------------------------------------------------- building the model

def _keras_cache_file(url: str) -> Path:
    try:
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / url.rsplit("/", 1)[-1]


def _download_error(exc: Exception, what: str) -> OnnxvizError | None:
    """Keras' download failure, said as: which file, where to put it, what else to do."""
    import re

    text = str(exc)
    match = re.match(r"URL fetch failure on (\S+?):? .*?(?: -- (.*))?$", text, re.S)
    if match is None:
        return None
    url, reason = match.group(1), (match.group(2) or "").strip() or "no network?"
    return OnnxvizError(
        f"could not download {what} from {url} ({reason}); put that file at {_keras_cache_file(url)}, "
        f"or pass --weights PATH or --weights none"
    )


def build_application(app: Application, opts: ExportOptions):
    """The keras.applications model with the requested weights, size and alpha."""
    kwargs: dict[str, Any] = {}
    if not opts.include_top:
        kwargs["include_top"] = False
    if opts.input_size is not None or not opts.include_top:
        size = opts.input_size or app.size  # without the classifier Keras would leave the size open
        kwargs["input_shape"] = (size, size, 3)
    if opts.alpha is not None:
        if not app.alpha:
            with_alpha = sorted(n for n, a in APPLICATIONS.items() if a.alpha)
            raise OnnxvizError(f"--alpha applies to {', '.join(with_alpha)}, not {app.constructor}")
        kwargs["alpha"] = opts.alpha
    weights = opts.weights or "imagenet"
    if weights.lower() == "none":
        weights_arg: str | None = None
    elif weights.lower() == "imagenet":
        weights_arg = "imagenet"
    else:
        path = Path(weights)
        if not path.is_file():
            raise OnnxvizError(f"weights file '{weights}' does not exist; give an .h5/.weights.h5 file, 'imagenet' or 'none'")
        weights_arg = str(path)
    _, keras = _import_keras()
    constructor = getattr(keras.applications, app.constructor)
    try:
        model = constructor(weights=weights_arg, **kwargs)
    except ValueError as exc:
        raise OnnxvizError(f"{app.constructor} cannot be built that way: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # Keras raises plain Exception for download failures
        err = _download_error(exc, f"ImageNet weights for {app.constructor}")
        if err is not None:
            raise err from exc
        if isinstance(exc, (OSError,)) and weights_arg not in (None, "imagenet"):
            raise OnnxvizError(f"cannot load weights '{weights}' into {app.constructor}: {exc}") from exc
        raise
    record = {"application": app.constructor, "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
              "weights": weights_arg if weights_arg in (None, "imagenet") else str(Path(weights_arg).resolve())}
    return model, record


def check_model_file(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ModelError(f"model file '{path}' cannot be read")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"'{path}' is not a Keras model file (.keras, .h5); for ONNX files use a .onnx path")


def load_model_file(path: Path, opts: ExportOptions):
    check_model_file(path)
    _, keras = _import_keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"'{path}' is not a Keras model onnxviz can load ({first[:200]})") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"'{path}' holds a {type(model).__name__}, not a Keras model")
    if opts.weights and opts.weights.lower() not in ("imagenet", "none"):
        try:
            model.load_weights(opts.weights)
        except Exception as exc:
            raise OnnxvizError(f"cannot load weights '{opts.weights}' into '{path}': {str(exc).splitlines()[0]}") from exc
    weights = opts.weights if opts.weights and opts.weights.lower() not in ("imagenet", "none") else None
    return model, {"path": str(path.resolve()), "weights": str(Path(weights).resolve()) if weights else None}


# ---------------------------------------------------------------- flattening

@dataclass
class _Traced:
    name: str
    op: str
    tensor: Any
    readers: list[str] = field(default_factory=list)  # Keras classes of the layers that read `tensor`


def flatten_model(model, input_shape: tuple[int, int, int]):
    """Re-trace `model` from a new input, descending into nested models.

    Returns (new input, final output tensors, traced layers in network order). The
    layers are the same objects (same weights), so the flattened graph computes what
    the original does, with a tensor for every inner layer.
    """
    _, keras = _import_keras()
    inp = keras.Input(shape=input_shape, name=_input_name(model))
    traced: list[_Traced] = []
    by_tensor: dict[int, _Traced] = {}
    seen: set[str] = set()

    def record(op, out, scope: str) -> None:
        if not isinstance(out, keras.KerasTensor):
            return  # layers with several outputs are not feature maps
        name = op.name if op.name not in seen else f"{scope}/{op.name}"
        if name in seen:
            return  # a shared layer called again: keep its first call
        seen.add(name)
        traced.append(_Traced(name, type(op).__name__, out))
        by_tensor[id(out)] = traced[-1]  # `traced` keeps `out` alive, so its id stays its own

    def note_reader(op, value) -> None:
        if isinstance(value, (list, tuple)):
            for item in value:
                note_reader(op, item)
        elif id(value) in by_tensor:
            by_tensor[id(value)].readers.append(type(op).__name__)

    def call(op, *args, scope: str = "", **kwargs):
        if isinstance(op, keras.Model):
            return run(op, args[0] if len(args) == 1 else list(args), scope=op.name)
        note_reader(op, list(args) + list(kwargs.values()))
        out = op(*args, **kwargs)
        record(op, out, scope)
        return out

    def run(m, x, scope: str):
        functional = getattr(m, "_functional", None) or m  # Sequential keeps a Functional inside
        if hasattr(functional, "_run_through_graph"):
            outs = functional._run_through_graph(
                x, operation_fn=lambda op: op, call_fn=lambda op, *a, **k: call(op, *a, scope=scope, **k))
            return outs[0] if isinstance(outs, (list, tuple)) and len(outs) == 1 else outs
        for layer in m.layers:  # a Sequential that was never built with an input shape
            x = call(layer, x, scope=scope)
        return x

    out = run(model, inp, scope=model.name)
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    return inp, outputs, traced


def _input_name(model) -> str:
    try:
        name = model.inputs[0].name
    except (AttributeError, IndexError, TypeError):
        name = "input"
    return name.split(":")[0] or "input"


def _model_input_shape(model, opts: ExportOptions) -> tuple[int, int, int]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ModelError("the model has no defined input; save it with an Input layer (keras.Input(shape=(H, W, 3)))")
    if len(inputs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs; onnxviz exports models with one image input")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelError(f"the model input has shape {shape}; onnxviz needs images [N, H, W, 3]")
    _, h, w, c = shape
    if c != 3:
        raise ModelError(f"the model input has {c} channels; onnxviz takes RGB images (3 channels, channels-last)")
    if h is None or w is None:
        if opts.input_size is None:
            raise ModelError("the model takes images of any size; give one with --input-size N")
        h = w = opts.input_size
    elif opts.input_size is not None and (h, w) != (opts.input_size, opts.input_size):
        raise OnnxvizError(f"the model's input is fixed at {h}x{w}; drop --input-size or give {h}")
    return int(h), int(w), 3


_CONVOLUTIONS = frozenset({"Conv2D", "DepthwiseConv2D", "SeparableConv2D"})
_ACTIVATIONS = frozenset({"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU"})
# What ORT folds into the layer before it: BatchNorm and activations into a convolution
# (and its residual Add on CPU), an activation into a BatchNorm that follows a convolution.
_FUSED_INTO = {**{conv: _ACTIVATIONS | {"BatchNormalization", "Add"} for conv in _CONVOLUTIONS},
               "BatchNormalization": _ACTIVATIONS}


def fused_away(t: _Traced) -> bool:
    """Whether `t` is a tensor ORT fuses away when it is not an output: zero padding read
    only by convolutions, a convolution's output read only by BatchNorm, activations or a
    residual Add, or a BatchNorm's read only by activations (the maps after them remain).

    Zero padding before a MaxPooling2D stays: ONNX Runtime 1.31 folds a Pad into the
    MaxPool after it as if MaxPool's own padding (which ignores the border) were zeros,
    which changes every window whose values are all negative (ResNet101V2's pool1_pool was
    off by 0.3 of its range). Exposing the padding keeps the two apart.
    """
    if t.op == "ZeroPadding2D":
        return bool(t.readers) and all(r in _CONVOLUTIONS for r in t.readers)
    return t.op in _FUSED_INTO and bool(t.readers) and all(r in _FUSED_INTO[t.op] for r in t.readers)


def select_layers(traced: list[_Traced], final_names: list[str], include: list[str],
                  exclude: list[str], skip_fused: bool = False) -> list[_Traced]:
    """The layers to expose: globs if given, else every 4-D map plus the final outputs.

    `skip_fused` leaves out, from the default selection, the tensors `fused_away` names.
    """
    if include:
        chosen = []
        for pattern in include:
            if not any(fnmatch.fnmatchcase(t.name, pattern) for t in traced):
                raise LayerSelectionError(_no_match(pattern, traced))
        chosen = [t for t in traced if any(fnmatch.fnmatchcase(t.name, p) for p in include)]
    else:
        chosen = [t for t in traced
                  if (len(t.tensor.shape) == 4 and t.op != "InputLayer" and not (skip_fused and fused_away(t)))
                  or t.name in final_names]
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(t.name, pattern) for t in traced):
            raise LayerSelectionError(_no_match(pattern, traced, flag="--exclude"))
    chosen = [t for t in chosen if not any(fnmatch.fnmatchcase(t.name, p) for p in exclude)]
    if not chosen:
        raise LayerSelectionError("the layer selection is empty; loosen --layers/--exclude")
    return chosen


def _no_match(pattern: str, traced: list[_Traced], flag: str = "--layers") -> str:
    names = [t.name for t in traced if t.op != "InputLayer"]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"{flag} '{pattern}' matches no layer; the model has {len(names)}: {shown}"


# ---------------------------------------------------------------- conversion

@contextlib.contextmanager
def _fresh_node_protos():
    """Rebuild each tf2onnx node's NodeProto instead of clearing and refilling it.

    tf2onnx refreshes every node's proto after each optimiser pass (about 36 passes).
    With protobuf's upb backend a cleared repeated field keeps its memory in the
    message's arena, so every pass left one more copy of all the weights behind:
    +2 GB for VGG16 without its classifier, about 15 GB with it. A new proto per
    refresh frees the old one; the graph built is the same.
    """
    from onnx import NodeProto
    from tf2onnx.graph import Node

    original = getattr(Node, "update_proto", None)
    if original is None:  # a tf2onnx without this method: nothing to fix
        yield
        return

    def update_proto(self, external_tensor_storage=None):
        old = self._op
        self._op = NodeProto(name=old.name, op_type=old.op_type, domain=old.domain, doc_string=old.doc_string)
        return original(self, external_tensor_storage)

    Node.update_proto = update_proto
    try:
        yield
    finally:
        Node.update_proto = original


def _convert(keras, tf, flat_model, input_name: str, shape: tuple[int, int, int],
             four_d: list[bool]) -> Any:
    import logging

    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = tf.TensorSpec((None, *shape), tf.float32, name=input_name)

    @tf.autograph.experimental.do_not_convert
    def forward(x):
        outs = flat_model(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        # NCHW outputs: the transpose cancels against tf2onnx's own NHWC->NCHW rewrite.
        return [tf.transpose(o, [0, 3, 1, 2]) if is4 else o for o, is4 in zip(outs, four_d)]

    fn = tf.function(forward, input_signature=[spec], autograph=False)
    with _fresh_node_protos():
        model_proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=OPSET)
    return model_proto


def probe_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Deterministic RGB 0..255 images with edges, gradients and texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.float32)
    for i in range(n):
        base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 255
        blocks = ((xx // max(1, width // 8) + yy // max(1, height // 8)) % 2)[..., None] * 80
        noise = rng.uniform(0, 60, (height, width, 3))
        out[i] = np.clip(base * (0.5 + 0.5 * (i % 2)) + blocks + noise, 0, 255)
    return np.round(out)


def _fetch_labels(keras) -> list[str] | None:
    try:
        path = keras.utils.get_file("imagenet_class_index.json", CLASS_INDEX_URL,
                                    cache_subdir="models", file_hash=CLASS_INDEX_MD5)
    except Exception:
        return None
    index = json.loads(Path(path).read_text())
    return [index[str(i)][1] for i in range(len(index))]


def _is_softmax(layer) -> bool:
    if type(layer).__name__ == "Softmax":
        return True
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "") == "softmax"


def export_keras(model: str, output: Path | None = None, opts: ExportOptions | None = None,
                 progress: Progress | None = None, labels: list[str] | None = None) -> ExportResult:
    """Export a keras.applications name or a .keras/.h5 file; see the module docstring."""
    opts = opts or ExportOptions()
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    output = Path(output) if output else default_output(model)

    from .files import atomic_path, ensure_dir

    ensure_dir(output.parent)  # fail on an unwritable destination before minutes of work

    step = time.perf_counter()
    if _looks_like_path(model):
        check_model_file(Path(model))  # before the seconds TensorFlow takes to import
        if opts.preprocess and opts.preprocess.lower() not in KERAS_MODES:
            raise OnnxvizError(f"--preprocess '{opts.preprocess}' is not valid; choose one of {', '.join(KERAS_MODES)}")
        say(f"loading {model}")
        keras_model, record = load_model_file(Path(model), opts)
        prep = KERAS_MODES[(opts.preprocess or "none").lower()]
        source = str(model)
    else:
        app = resolve_application(model)
        if opts.preprocess:
            raise OnnxvizError("--preprocess applies to model files; keras.applications models come with their own")
        say(f"building {app.constructor} (weights: {opts.weights or 'imagenet'})")
        keras_model, record = build_application(app, opts)
        prep = KERAS_MODES[app.mode]
        source = f"keras.applications.{app.constructor}"
    tf, keras = _import_keras()
    timings["build"] = time.perf_counter() - step

    shape = _model_input_shape(keras_model, opts)
    inp, finals, traced = flatten_model(keras_model, shape)
    final_names = [t.name for t in traced if any(t.tensor is f for f in finals)]
    chosen = select_layers(traced, final_names, opts.layers, opts.exclude, opts.skip_fused)
    flat = keras.Model(inp, [t.tensor for t in chosen], name=f"{keras_model.name}_onnxviz")
    four_d = [len(t.tensor.shape) == 4 for t in chosen]
    say(f"exposing {len(chosen)} of {len(traced)} layers")

    step = time.perf_counter()
    say("converting with tf2onnx (VGG16-sized models take a few minutes)")
    proto = _convert(keras, tf, flat, inp.name, shape, four_d)
    timings["convert"] = time.perf_counter() - step
    from .graph import prepend_preprocessing, rename_tensors

    if len(proto.graph.output) != len(chosen):
        raise RuntimeError(f"tf2onnx produced {len(proto.graph.output)} outputs for {len(chosen)} layers")
    # tf2onnx names the outputs Identity:0, Identity_1:0, ...: give them the layer names
    proto = rename_tensors(proto, {out.name: t.name for out, t in zip(proto.graph.output, chosen)})
    proto = prepend_preprocessing(proto, prep, "NHWC")

    layer_infos = [
        LayerInfo(t.name, t.op,
                  [None, int(t.tensor.shape[3]), int(t.tensor.shape[1]), int(t.tensor.shape[2])] if is4
                  else [None, *[None if d is None else int(d) for d in t.tensor.shape[1:]]],
                  "NCHW" if is4 else ("NC" if len(t.tensor.shape) == 2 else ""))
        for t, is4 in zip(chosen, four_d)
    ]
    prediction = _prediction_layer(keras_model, traced, final_names, chosen)
    if prediction is not None and labels is None and prediction[1] == 1000:
        labels = _fetch_labels(keras)
        if labels is None:
            say("warning: ImageNet class names not found (imagenet_class_index.json could not be "
                "downloaded); predictions will show class numbers")
    if labels is not None and prediction is not None and len(labels) != prediction[1]:
        raise ModelError(f"{len(labels)} labels given for a model with {prediction[1]} classes")
    info = ModelInfo(
        input_name=inp.name, height=shape[0], width=shape[1], layers=layer_infos,
        preprocessing=prep, source=source, version=__version__,
        prediction_output=prediction[0] if prediction else None,
        prediction_is_probability=prediction[2] if prediction else True,
        labels=labels if prediction else None, keras=record,
    )
    write_info(proto, info)
    proto.producer_name, proto.producer_version = "onnxviz", __version__
    proto.doc_string = f"{source}, exported by onnxviz {__version__}"

    step = time.perf_counter()
    say("checking every output against Keras")
    probes = probe_images(opts.probes, shape[0], shape[1])
    reference = _keras_reference(keras, keras_model, flat, finals, chosen, four_d, prep, record, probes)
    data = proto.SerializeToString()
    del proto
    actual = _ort_outputs(data, inp.name, probes)
    names = [t.name for t in chosen]
    diffs = diff_outputs(reference, actual, names)
    timings["check"] = time.perf_counter() - step
    bad = [d for d in diffs if not d.ok(opts.tolerance)]
    if bad:
        listing = ", ".join(f"{d.name} ({d.relative:.2g})" for d in bad[:10])
        raise ValidationError(
            f"{len(bad)} of {len(diffs)} outputs differ from Keras beyond relative {opts.tolerance:g}: "
            f"{listing}{', ...' if len(bad) > 10 else ''}; nothing was written"
        )
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return ExportResult(output, info, diffs, max((d.relative for d in diffs), default=0.0),
                        len(data), time.perf_counter() - started, timings)


def _prediction_layer(keras_model, traced, final_names, chosen) -> tuple[str, int, bool] | None:
    """(name, classes, is_probability) of the model's classifier output, when it has one."""
    chosen_names = {t.name for t in chosen}
    for t in traced:
        if t.name in final_names and t.name in chosen_names and len(t.tensor.shape) == 2 and (t.tensor.shape[1] or 0) > 1:
            try:
                layer = keras_model.get_layer(t.name.split("/")[-1])
            except ValueError:
                layer = None
            return t.name, int(t.tensor.shape[1]), bool(layer is not None and _is_softmax(layer))
    return None


def _keras_reference(keras, original, flat, finals, chosen, four_d, prep: Preprocessing, record, probes):
    """Keras' own answer: Keras' own preprocess_input, then the model, per exposed layer."""
    x = _keras_preprocess(keras, prep, record, probes.copy())
    outs = flat.predict(x, batch_size=len(x), verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    ref = {t.name: (np.transpose(o, (0, 3, 1, 2)) if is4 else o) for t, o, is4 in zip(chosen, outs, four_d)}
    # The flattened graph must compute what the model as the user has it computes.
    direct = original.predict(x, batch_size=len(x), verbose=0)
    direct = direct if isinstance(direct, list) else [direct]
    rebuilt = keras.Model(flat.inputs, finals).predict(x, batch_size=len(x), verbose=0)
    rebuilt = rebuilt if isinstance(rebuilt, list) else [rebuilt]
    for a, b in zip(direct, rebuilt):
        d = diff_tensor("output", np.asarray(a), np.asarray(b))
        if not d.ok(1e-5):
            raise ValidationError(f"flattening the nested model changed its output (relative {d.relative:.2g}); "
                                  "export the inner model on its own")
    return ref


def _keras_preprocess(keras, prep: Preprocessing, record, x: np.ndarray) -> np.ndarray:
    if "application" in record and prep.mode != "none":
        app = next(a for a in APPLICATIONS.values() if a.constructor == record["application"])
        module = getattr(keras.applications, app.module)
        return np.asarray(module.preprocess_input(x))
    if prep.mode in ("caffe", "tf", "torch"):
        from keras.applications import imagenet_utils

        return np.asarray(imagenet_utils.preprocess_input(x, mode=prep.mode))
    return x


def _ort_outputs(data: bytes, input_name: str, probes: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {input_name: probes})))


def keras_outputs(info: ModelInfo, images: np.ndarray) -> dict[str, np.ndarray]:
    """The exposed layers of an exported file computed by Keras itself, for RGB 0..255
    NHWC `images` (4-D maps as NCHW): the model is rebuilt from the file's metadata."""
    record = info.keras
    if not record:
        raise OnnxvizError(f"'{info.source}' was not exported from Keras; compare providers instead (--providers cpu,cuda)")
    opts = ExportOptions(weights=record.get("weights") or "none")
    if "weights" not in record:
        raise OnnxvizError("this file does not record which weights it was exported with; export it again")
    if "application" in record:
        if record.get("weights") is None:
            raise OnnxvizError("this file was exported with --weights none: its random weights cannot be rebuilt in Keras")
        _, keras = _import_keras()
        kwargs = dict(record.get("kwargs", {}))
        if "input_shape" in kwargs:
            kwargs["input_shape"] = tuple(kwargs["input_shape"])
        try:
            model = getattr(keras.applications, record["application"])(weights=record["weights"], **kwargs)
        except Exception as exc:
            err = _download_error(exc, f"ImageNet weights for {record['application']}")
            raise (err or OnnxvizError(f"cannot rebuild {record['application']} in Keras: {exc}")) from exc
    else:
        path = Path(record["path"])
        if not path.is_file():
            raise OnnxvizError(f"the Keras model this file came from, '{path}', is no longer there")
        model, _ = load_model_file(path, opts)
    tf, keras = _import_keras()
    inp, finals, traced = flatten_model(model, (info.height, info.width, 3))
    by_name = {t.name: t for t in traced}
    missing = [layer.name for layer in info.layers if layer.name not in by_name]
    if missing:
        raise OnnxvizError(f"the rebuilt Keras model has no layer {missing[0]!r}; has the source model changed?")
    chosen = [by_name[layer.name] for layer in info.layers]
    flat = keras.Model(inp, [t.tensor for t in chosen])
    four_d = [len(t.tensor.shape) == 4 for t in chosen]
    return _keras_reference(keras, model, flat, finals, chosen, four_d, info.preprocessing, record, images)
