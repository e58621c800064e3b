"""Keras sources: `keras.applications` names, `keras.Model` objects and `.keras`/`.h5` files.

TensorFlow, Keras and tf2onnx are imported inside the functions that need them, so the
rest of onnxviz runs where TensorFlow is not installed.

The path: build or load the Keras model, flatten nested models so every inner layer has
a tensor of its own, pick the layers, trace one `tf.function` that returns those tensors
(4-D maps transposed to NCHW, where tf2onnx's transpose optimiser cancels them against
its own), convert it with tf2onnx and name the outputs after the layers. The pipeline
(`onnxviz.exporter.pipeline`) folds the preprocessing in, and checks every output against Keras
itself, with Keras' own `preprocess_input`, through `reference` below.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxviz.run.tensordiff import diff_tensor
from onnxviz.errors import ModelError, OnnxvizError, OptionError, ValidationError
from onnxviz.model.info import KERAS_MODES, LayerInfo, Preprocessing, gray_of
from onnxviz.model.selection import Candidate, select
from onnxviz.exporter.sources.base import (
    EVERY_SOURCE, GRAY_REASON, Adapter, Built, ExportOptions, Progress, for_one_channel, input_size_pair, size_text)
from onnxviz.exporter.sources.keras_apps import APPLICATIONS, Application, recognise, resolve_application
from onnxviz.exporter.sources.keras_files import SUFFIXES, LoadedModel, check_keras_file, load_model_file

OPSET = 17
CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


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
        f"or give a weights file or no weights ({{weights}} none)", params=("weights",)
    )


def build_application(app: Application, opts: ExportOptions):
    """The keras.applications model with the requested weights, size and alpha."""
    kwargs: dict[str, Any] = {}
    if not opts.include_top:
        kwargs["include_top"] = False
    if opts.input_size is not None or not opts.include_top:
        # without the classifier Keras would leave the size open
        height, width = input_size_pair(opts.input_size) or (app.size, app.size)
        kwargs["input_shape"] = (height, width, 3)
    if opts.alpha is not None:
        if not app.alpha:
            with_alpha = sorted(n for n, a in APPLICATIONS.items() if a.alpha)
            raise OptionError(f"{{alpha}} applies to {', '.join(with_alpha)}, not {app.constructor}", params=("alpha",))
        kwargs["alpha"] = opts.alpha
    weights = opts.weights or "imagenet"
    if weights.lower() == "none":
        weights_arg: str | None = None
    elif weights.lower() == "imagenet":
        weights_arg = "imagenet"
    else:
        path = Path(weights)
        if not path.is_file():
            raise OptionError(f"{{weights}} file '{weights}' does not exist; give an .h5/.weights.h5 file, "
                              f"'imagenet' or 'none'", params=("weights",))
        weights_arg = str(path)
    _, keras = _import_keras()
    constructor = getattr(keras.applications, app.constructor)
    try:
        model = constructor(weights=weights_arg, **kwargs)
    except ValueError as exc:
        hint = ""
        if opts.input_size is not None and opts.include_top and weights_arg == "imagenet":
            sizes = {"MobileNet": "128, 160, 192 and 224", "MobileNetV2": "96, 128, 160, 192 and 224"}.get(
                app.constructor, str(app.size))
            hint = (f"; with ImageNet weights and the classifier, {app.constructor} takes the sizes it has weights "
                    f"for: {sizes}; without the classifier ({{include_top}}) it takes other sizes, above its minimum")
        raise OptionError(f"{app.constructor} cannot be built with {{input_size}} {size_text(height, width)}: "
                          f"{str(exc).splitlines()[0]}{hint}" if opts.input_size is not None else
                          f"{app.constructor} cannot be built that way: {str(exc).splitlines()[0]}",
                          params=("input_size", "include_top") if opts.input_size is not None else ()) from exc
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


def _model_input_shape(model, opts: ExportOptions) -> tuple[tuple[int, int, int], str]:
    """(height, width, channels) of the model's input, and where the size came from."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ModelError("the model has no defined input; save it with an Input layer (keras.Input(shape=(H, W, 3)))")
    if len(inputs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs; onnxviz exports models with one image input")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelError(f"the model input has shape {shape}; onnxviz needs images [N, H, W, 3]")
    _, h, w, c = shape
    if c not in (1, 3):
        raise ModelError(f"the model input has {c} channels; onnxviz takes RGB images (3 channels, channels-last) "
                         f"and one-channel (grayscale) models")
    asked = input_size_pair(opts.input_size)
    if h is None or w is None:
        if asked is None:
            raise OptionError("the model takes images of any size; give one with {input_size} (N or HxW)",
                              params=("input_size",))
        for have, want, what in ((h, asked[0], "height"), (w, asked[1], "width")):
            if have is not None and have != want:
                raise OptionError(f"the model's input {what} is fixed at {have}; give {{input_size}} with {what} "
                                  f"{have}", params=("input_size",))
        h, w = asked
        reason = "as given"
    elif asked is not None and (h, w) != asked:
        raise OptionError(f"the model's input is fixed at {h}x{w}; leave out {{input_size}} or give "
                          f"{size_text(h, w)}", params=("input_size",))
    else:
        reason = "as given" if asked is not None else "fixed in the model's input"
    return (int(h), int(w), int(c)), reason


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


def choose_traced(traced: list[_Traced], final_names: list[str], include: list[str],
                  exclude: list[str], skip_fused: bool = False) -> list[_Traced]:
    """The layers to expose: globs if given, else every 4-D map plus the final outputs.

    `skip_fused` leaves out, from the default selection, the tensors `fused_away` names.
    """
    default = [t.name for t in traced
               if (len(t.tensor.shape) == 4 and t.op != "InputLayer" and not (skip_fused and fused_away(t)))
               or t.name in final_names]
    candidates = [Candidate(t.name) for t in traced if t.op != "InputLayer"]
    chosen = set(select(candidates, include, exclude, default))
    return [t for t in traced if t.name in chosen]


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



# ---------------------------------------------------------------- adapters

class KerasApplication(Adapter):
    """A `keras.applications` name: vgg16, resnet50, mobilenetv2, ..."""

    kind = "keras.applications name"
    options = EVERY_SOURCE | {"weights", "alpha", "include_top", "skip_fused"}

    def __init__(self, name: str) -> None:
        self.app = resolve_application(name)
        super().__init__(name.lower().replace("_", "").replace("-", ""))

    @classmethod
    def claims(cls, source: Any) -> bool:
        return isinstance(source, str)

    def build(self, options: ExportOptions, say: Progress) -> Built:
        app = self.app
        say(f"building {app.constructor} (weights: {options.weights or 'imagenet'})")
        step = time.perf_counter()
        model, record = build_application(app, options)
        prep = KERAS_MODES[app.mode]
        reason = f"keras.applications.{app.constructor} expects '{app.mode}'"
        return _build(model, LoadedModel(model, record), prep, reason, f"keras.applications.{app.constructor}",
                      options, say, time.perf_counter() - step)


class KerasSource(Adapter):
    """What Keras model files and `keras.Model` objects share."""

    kind = "Keras model"
    options = EVERY_SOURCE | {"weights", "skip_fused", "preprocess"}

    def check(self, options: ExportOptions) -> None:
        _check_preprocess(options)


class KerasFile(KerasSource):
    """A `.keras`, `.h5` or `.hdf5` file (a path that is not an ONNX file is taken for one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(self.path.stem)

    @classmethod
    def claims(cls, source: Any) -> bool:
        if not isinstance(source, (str, Path)):
            return False
        text = str(source)
        return text.lower().endswith(SUFFIXES) or Path(text).exists() or "/" in text or "\\" in text

    @classmethod
    def open(cls, source: Any) -> KerasFile:
        path = Path(source)
        check_keras_file(path)  # before the seconds TensorFlow takes to import
        return cls(path)

    def build(self, options: ExportOptions, say: Progress) -> Built:
        path = self.path
        say(f"loading {path}")
        step = time.perf_counter()
        _, keras = _import_keras()
        loaded = load_model_file(path, keras)
        if options.weights and options.weights.lower() not in ("imagenet", "none"):
            _load_weights(loaded.model, options.weights, str(path))
            loaded.record["weights"] = str(Path(options.weights).resolve())
        elif options.weights:
            raise OptionError(f"{{weights}} '{options.weights}' applies to keras.applications names; a model file "
                              f"has its own weights (give a weights file to replace them)", params=("weights",))
        for note in loaded.notes:
            say(note)
        prep, reason = _file_preprocessing(loaded.model, options)
        return _build(loaded.model, loaded, prep, reason, path.name, options, say, time.perf_counter() - step)


class KerasModel(KerasSource):
    """A `keras.Model` in memory (Keras 3 or Keras 2's tf_keras)."""

    def __init__(self, model: Any) -> None:
        super().__init__(getattr(model, "name", None) or "model")
        self.model = model

    @classmethod
    def claims(cls, source: Any) -> bool:
        return any(c.__module__.startswith(("keras", "tf_keras")) and c.__name__ in ("Model", "Functional", "Sequential")
                   for c in type(source).__mro__)

    @classmethod
    def open(cls, source: Any) -> KerasModel:
        return cls(source)

    def build(self, options: ExportOptions, say: Progress) -> Built:
        model = self.model
        if options.weights:
            if options.weights.lower() in ("imagenet", "none"):
                raise OptionError(f"{{weights}} '{options.weights}' applies to keras.applications names; a keras.Model "
                                  f"has its own weights", params=("weights",))
            _load_weights(model, options.weights, model.name)
        prep, reason = _file_preprocessing(model, options)
        # Rebuilt only from the file it was saved to: an in-memory model cannot be found again.
        loaded = LoadedModel(model, {"model": model.name, "in_memory": True})
        return _build(model, loaded, prep, reason, f"keras.Model '{model.name}'", options, say, 0.0)


def _check_preprocess(opts: ExportOptions) -> None:
    if opts.preprocess and opts.preprocess.lower() not in KERAS_MODES:
        raise OptionError(f"{{preprocess}} '{opts.preprocess}' is not valid; choose one of "
                          f"{', '.join(KERAS_MODES)}", params=("preprocess",))


def _load_weights(model: Any, weights: str, where: str) -> None:
    if not Path(weights).is_file():
        raise OptionError(f"{{weights}} file '{weights}' does not exist; give an .h5/.weights.h5 file",
                          params=("weights",))
    try:
        model.load_weights(weights)
    except Exception as exc:
        raise OnnxvizError(f"cannot load weights '{weights}' into {where}: {str(exc).splitlines()[0]}") from exc


def _file_preprocessing(model: Any, opts: ExportOptions) -> tuple[Preprocessing, str]:
    """What a model file expects of pixels: as asked, else its application's, else none."""
    if opts.preprocess:
        mode = opts.preprocess.lower()
        return KERAS_MODES[mode], f"'{mode}' as asked"
    found = recognise(model)
    if found is None:
        return KERAS_MODES["none"], ("'none': no keras.applications architecture recognised in the model (pass the "
                                     "preprocessing it was trained with if it expects scaled pixels)")
    app = found.application
    inside = "the model" if found.where == getattr(model, "name", None) else f"its part '{found.where}'"
    what = f"{inside} has the architecture of keras.applications.{app.constructor} (layers {', '.join(found.evidence)})"
    if found.scaled_by:
        return KERAS_MODES["none"], (f"'none': {what}, but the model scales pixels itself first, in layer "
                                     f"{found.scaled_by}")
    return KERAS_MODES[app.mode], f"'{app.mode}': {what}, which expects it"


def _build(keras_model: Any, loaded: LoadedModel, prep: Preprocessing, reason: str, source: str,
           opts: ExportOptions, say: Progress, build_s: float) -> Built:
    from onnxviz.model.graph import rename_tensors

    tf, keras = _import_keras()
    shape, size_reason = _model_input_shape(keras_model, opts)
    if shape[2] == 1:
        prep = for_one_channel(prep, source)
        reason += f"; {GRAY_REASON}"
    inp, finals, traced = flatten_model(keras_model, shape)
    final_names = [t.name for t in traced if any(t.tensor is f for f in finals)]
    chosen = choose_traced(traced, final_names, opts.layers, opts.exclude, opts.skip_fused)
    flat = keras.Model(inp, [t.tensor for t in chosen], name=f"{keras_model.name}_onnxviz")
    four_d = [len(t.tensor.shape) == 4 for t in chosen]
    say(f"exposing {len(chosen)} of {len(traced)} layers")
    step = time.perf_counter()
    say("converting with tf2onnx (VGG16-sized models take a few minutes)")
    proto = _convert(keras, tf, flat, inp.name, shape, four_d)
    convert_s = time.perf_counter() - step
    if len(proto.graph.output) != len(chosen):
        raise RuntimeError(f"tf2onnx produced {len(proto.graph.output)} outputs for {len(chosen)} layers")
    # tf2onnx names the outputs Identity:0, Identity_1:0, ...: give them the layer names
    proto = rename_tensors(proto, {out.name: t.name for out, t in zip(proto.graph.output, chosen)})
    layers = [
        LayerInfo(t.name, t.op,
                  [None, int(t.tensor.shape[3]), int(t.tensor.shape[1]), int(t.tensor.shape[2])] if is4
                  else [None, *[None if d is None else int(d) for d in t.tensor.shape[1:]]],
                  "NCHW" if is4 else ("NC" if len(t.tensor.shape) == 2 else ""))
        for t, is4 in zip(chosen, four_d)
    ]
    prediction = _prediction_layer(keras_model, traced, final_names, chosen)
    labels = None
    notes = list(loaded.notes)
    if prediction is not None and prediction[1] == 1000:
        labels = _fetch_labels(keras)
        if labels is None:
            notes.append("ImageNet class names not found (imagenet_class_index.json could not be downloaded); "
                         "predictions will show class numbers")
    record = dict(loaded.record)

    def reference(probes: np.ndarray) -> dict[str, np.ndarray]:
        return _keras_reference(keras, loaded, flat, finals, chosen, four_d, prep, record, probes)

    return Built(
        model=proto, input_name=inp.name, height=shape[0], width=shape[1], layout="NHWC", layers=layers,
        preprocessing=prep, preprocessing_reason=reason, source=source, reference_name="Keras",
        reference=reference, prediction_output=prediction[0] if prediction else None,
        prediction_is_probability=prediction[2] if prediction else True,
        classes=prediction[1] if prediction else None, labels=labels,
        keras=None if record.get("in_memory") else record, notes=notes,
        timings={"build": build_s, "convert": convert_s}, size_reason=size_reason,
    )


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


def _keras_reference(keras, loaded: LoadedModel, flat, finals, chosen, four_d, prep: Preprocessing, record, probes):
    """Keras' own answer: Keras' own preprocess_input, then the model, per exposed layer."""
    x = _keras_preprocess(keras, prep, record, gray_of(probes) if prep.gray else probes.copy())
    outs = flat.predict(x, batch_size=len(x), verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    ref = {t.name: (np.transpose(o, (0, 3, 1, 2)) if is4 else o) for t, o, is4 in zip(chosen, outs, four_d)}
    # The flattened graph must compute what the model as the user has it computes: for a
    # Keras 2 file, what Keras 2 itself computes from that file.
    if loaded.original is not None:
        direct = loaded.original(x)
        what = "Keras 2 (tf_keras) reading the same file"
    else:
        direct = loaded.model.predict(x, batch_size=len(x), verbose=0)
        direct = direct if isinstance(direct, list) else [direct]
        what = "the model"
    rebuilt = keras.Model(flat.inputs, finals).predict(x, batch_size=len(x), verbose=0)
    rebuilt = rebuilt if isinstance(rebuilt, list) else [rebuilt]
    for a, b in zip(direct, rebuilt):
        d = diff_tensor("output", np.asarray(a), np.asarray(b))
        if not d.ok(1e-5):
            raise ValidationError(f"the model onnxviz rebuilt computes another output than {what} "
                                  f"(relative {d.relative:.2g}); nothing was written")
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


# ---------------------------------------------------------------- the Keras model behind a file

def rebuild(info: Any, weights: bool = True) -> Any:
    """The Keras model an onnxviz file was exported from, flattened, with the file's layers as
    outputs (4-D maps NHWC, as Keras computes them): for `diff --against keras` and
    `bench --compare-keras`. `weights=False` builds applications without weights (timing)."""
    record = info.keras
    if not record:
        raise OnnxvizError(f"'{info.source}' was not exported from a Keras file or application, so there is no "
                           f"Keras model to rebuild; compare ONNX Runtime providers instead")
    if weights and "weights" not in record and "path" not in record:
        raise OnnxvizError("this file does not record which weights it was exported with; export it again")
    _, keras = _import_keras()
    if "application" in record:
        if weights and record.get("weights") is None:
            raise OnnxvizError("this file was exported with weights 'none': its random weights cannot be rebuilt "
                               "in Keras")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in record.get("kwargs", {}).items()}
        try:
            model = getattr(keras.applications, record["application"])(
                weights=record.get("weights") if weights else None, **kwargs)
        except Exception as exc:
            err = _download_error(exc, f"ImageNet weights for {record['application']}")
            raise (err or OnnxvizError(f"cannot rebuild {record['application']} in Keras: {exc}")) from exc
        loaded = LoadedModel(model, record)
    else:
        path = Path(record["path"])
        if not path.is_file():
            raise OnnxvizError(f"the Keras model this file came from, '{path}', is no longer there")
        loaded = load_model_file(path, keras)
        if weights and record.get("weights"):
            _load_weights(loaded.model, record["weights"], str(path))
    inp, finals, traced = flatten_model(loaded.model, (info.height, info.width, 1 if info.preprocessing.gray else 3))
    by_name = {t.name: t for t in traced}
    missing = [layer.name for layer in info.layers if layer.name not in by_name]
    if missing:
        raise OnnxvizError(f"the rebuilt Keras model has no layer {missing[0]!r}; has the source model changed?")
    chosen = [by_name[layer.name] for layer in info.layers]
    return loaded, keras.Model(inp, [t.tensor for t in chosen]), finals, chosen


def keras_outputs(info: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    """The exposed layers of an exported file computed by Keras itself, for RGB 0..255
    NHWC `images` (4-D maps as NCHW): the model is rebuilt from the file's metadata."""
    loaded, flat, finals, chosen = rebuild(info)
    keras = _import_keras()[1]
    four_d = [len(t.tensor.shape) == 4 for t in chosen]
    return _keras_reference(keras, loaded, flat, finals, chosen, four_d, info.preprocessing, loaded.record, images)
