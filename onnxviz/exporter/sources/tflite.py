"""TFLite sources: `.tflite` files, float or int8-quantized, converted with tf2onnx's TFLite converter.

The converted graph is exported as an ONNX source would be (`sources.onnx`), with two
differences. Only the TFLite model's own tensors can be exposed, named as TFLite names them,
and each holds what TFLite's tensor holds: where the converter splits a fused activation off
a convolution, the name moves to the activation's output; where a tensor is quantized, the
name goes to its dequantized float value. The reference is TensorFlow's TFLite interpreter,
every tensor read back (`experimental_preserve_all_tensors`) and dequantized; a quantized
tensor may differ from it by one quantization step, where the two runtimes round differently.
Operators the converter does not know (custom operators) are refused with their names.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from onnx import ModelProto

from onnxviz.errors import ModelError
from onnxviz.exporter.sources.base import EVERY_SOURCE, Adapter, Built, ExportOptions, Progress
from onnxviz.files import existing_file
from onnxviz.model.info import Preprocessing, gray_of

OPSET = 17
IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of every TFLite model, bytes 4 to 8
# Activations the converter splits off the op they were fused into.
FUSED = {"Relu", "Clip", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu"}


class TfliteFile(Adapter):
    """A `.tflite` file."""

    kind = "TFLite model"
    options = EVERY_SOURCE | {"mean", "std", "scale", "bgr", "preprocess", "resize", "op_types"}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(self.path.stem)

    @classmethod
    def claims(cls, source: Any) -> bool:
        return isinstance(source, (str, Path)) and str(source).lower().endswith(".tflite")

    @classmethod
    def open(cls, source: Any) -> TfliteFile:
        path = existing_file(Path(source), "model file")
        with open(path, "rb") as f:
            head = f.read(8)
        if head[4:8] != IDENTIFIER:
            raise ModelError(f"'{path}' is not a TFLite model: it lacks the TFL3 identifier every .tflite file has (a "
                             f"truncated file, or another kind of file); give a .tflite file written by the TensorFlow "
                             f"Lite converter")
        return cls(path)

    def check(self, options: ExportOptions) -> None:
        from onnxviz.exporter.presets import choose_preprocessing, choose_resize

        choose_preprocessing(options.preprocess, mean=options.mean, std=options.std, scale=options.scale,
                             bgr=options.bgr)
        choose_resize(options.preprocess, options.resize, 224, 224)

    def build(self, options: ExportOptions, say: Progress) -> Built:
        from onnxviz.exporter.sources.onnx import _build

        path = self.path
        say(f"converting {path} with tf2onnx's TFLite converter")
        step = time.perf_counter()
        tensors = _tflite_tensors(path)
        proto = _convert(path)
        proto, names = _name_after_tflite(proto, tensors)
        convert_s = time.perf_counter() - step

        # Per tensor, what the file may differ by: one quantization step, or as much as TFLite's own
        # kernels differ from its reference kernels on the same images (hybrid int8-weight kernels
        # quantize activations on the fly, and differ from float arithmetic by that much).
        steps = {name: t.step for name, t in tensors.items() if t.step}

        def reference_for(prepared, prep: Preprocessing, plan, exposed) -> Callable[[np.ndarray], dict]:
            return _interpreter_reference(path, prep, plan, exposed, tensors, steps)

        # TFLite models are NHWC, and the converter keeps their input so
        built = _build(proto, str(path), replace(options, layout="nhwc"), say, tensors=names,
                       reference_for=reference_for, reference_name="TensorFlow's TFLite interpreter")
        for layer in built.layers:  # the TFLite operator that made each tensor
            if layer.name in tensors:
                layer.cls = tensors[layer.name].op
        built.steps = steps  # filled in further by each reference run
        built.timings["convert"] = convert_s
        return built


class _Tensor:
    """A TFLite tensor: its index in the interpreter and, when quantized, its scale and zero point."""

    def __init__(self, index: int, scale: float, zero: int, dtype: Any, op: str) -> None:
        self.index, self.scale, self.zero, self.dtype, self.op = index, scale, zero, dtype, op

    @property
    def step(self) -> float:
        return self.scale if self.dtype != np.float32 and self.scale else 0.0

    def value(self, raw: np.ndarray) -> np.ndarray:
        if self.step:
            return ((raw.astype(np.float64) - self.zero) * self.scale).astype(np.float32)
        return raw.astype(np.float32)


def _interpreter(path: Path, reference_kernels: bool = False):
    from onnxviz.exporter.sources.keras import _import_keras

    tf, _ = _import_keras()
    import warnings

    kind = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():  # tf.lite.Interpreter warns of its move to another package
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                   experimental_op_resolver_type=kind.BUILTIN_REF if reference_kernels else kind.AUTO)


def _tflite_tensors(path: Path) -> dict[str, _Tensor]:
    """The tensors the model's operators make, by name (what can become a map)."""
    try:
        interpreter = _interpreter(path)
        ops = interpreter._get_ops_details()
        details = {t["index"]: t for t in interpreter.get_tensor_details()}
    except Exception as exc:  # the flatbuffer does not parse
        raise ModelError(f"TensorFlow cannot read '{path}' as a TFLite model: {_one_line(exc)}") from exc
    out: dict[str, _Tensor] = {}
    for op in ops:
        for index in op["outputs"]:
            t = details.get(int(index))
            if t is None:
                continue
            scale, zero = t["quantization"]
            out[t["name"]] = _Tensor(int(index), float(scale), int(zero), t["dtype"], str(op["op_name"]))
    return out


def _convert(path: Path) -> ModelProto:
    import logging

    import onnx

    from onnxviz.exporter.sources.keras import _import_keras, _stderr_silenced

    _import_keras()
    import tf2onnx

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # it logs unsupported ops as errors; they are named below
    try:
        with _stderr_silenced():
            proto, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
    except Exception as exc:
        raise ModelError(f"tf2onnx cannot convert '{path}': {_one_line(exc)}") from exc
    finally:
        logger.setLevel(level)
    unknown = sorted({node.op_type.removeprefix("TFL_") for node in proto.graph.node
                      if not onnx.defs.has(node.op_type, node.domain or "")})
    if unknown:
        raise ModelError(f"'{path}' uses operators tf2onnx's TFLite converter does not know: {', '.join(unknown)} "
                         f"(custom or newer operators); onnxviz exports TFLite models of built-in operators")
    return proto


def _name_after_tflite(model: ModelProto, tensors: dict[str, _Tensor]) -> tuple[ModelProto, set[str]]:
    """Give each TFLite tensor's name to the ONNX tensor that holds its (float) value: the output
    of an activation split off a fused op, the dequantized value of a quantized tensor. Returns
    the model and the names that now hold a TFLite tensor's value."""
    from onnx import TensorProto

    from onnxviz.model.graph import infer_types, rename_tensors, unique_name, used_names

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    types = infer_types(model)
    taken = used_names(graph)
    renames: dict[str, str] = {}
    holds: set[str] = set()
    for name, tensor in tensors.items():
        if name not in taken:
            continue
        users = consumers.get(name, [])
        elem = types[name].tensor_type.elem_type if name in types else None
        if elem not in (TensorProto.FLOAT, None):  # quantized: its DequantizeLinear holds the value
            deq = next((u for u in users if u.op_type == "DequantizeLinear" and u.input[0] == name), None)
            if deq is not None and deq.output[0] not in tensors:
                renames[name] = unique_name(f"{name}_quantized", taken)
                renames[deq.output[0]] = name
                holds.add(name)
        elif len(users) == 1 and users[0].op_type in FUSED and users[0].output[0] not in tensors:
            renames[name] = unique_name(f"{name}_before_{users[0].op_type.lower()}", taken)
            renames[users[0].output[0]] = name
            holds.add(name)
        else:
            holds.add(name)
    # The converter names nodes after their outputs: those names move aside for the tensors'.
    targets = set(renames.values())
    for node in graph.node:
        if node.name in targets:
            node.name = unique_name(f"{node.name}_node", taken)
    # Swap in two steps, so that no new name is taken while the old one still stands.
    parked = {old: unique_name(f"onnxviz_parked_{i}", taken) for i, old in enumerate(renames)}
    model = rename_tensors(model, parked)
    return rename_tensors(model, {parked[old]: new for old, new in renames.items()}), holds


def _interpreter_reference(path: Path, prep: Preprocessing, plan: dict, exposed: list[str],
                           tensors: dict[str, _Tensor],
                           steps: dict[str, float]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """RGB 0..255 batch -> every exposed tensor as TensorFlow's TFLite interpreter computes it
    (preprocessing done in numpy, one image at a time, quantized tensors dequantized). Each run
    also raises `steps[name]` to how far TFLite's reference kernels differ from it."""
    interpreter = _interpreter(path)
    interpreter.allocate_tensors()
    plain = _interpreter(path, reference_kernels=True)
    plain.allocate_tensors()
    (feed,) = interpreter.get_input_details()
    missing = [name for name in exposed if name not in tensors]
    if missing:
        raise ModelError(f"the TFLite interpreter has no tensor {missing[0]!r} of {path}; choose other layers")

    def run(rgb: np.ndarray) -> dict[str, np.ndarray]:
        if prep.gray:
            x = (gray_of(rgb) * np.float32(prep.scale) - np.float32(prep.mean[0])) / np.float32(prep.std[0])
        else:
            x = rgb[..., ::-1] if prep.bgr else rgb
            x = (x * np.float32(prep.scale) - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
        if list(feed["shape"][1:3]) != list(x.shape[1:3]) and feed["shape"][3] == x.shape[1]:
            x = x.transpose(0, 3, 1, 2)  # an NCHW input (rare in TFLite)
        out: dict[str, list[np.ndarray]] = {name: [] for name in exposed}
        for image in x:
            for runner in (interpreter, plain):
                runner.set_tensor(feed["index"], np.ascontiguousarray(image[None], dtype=feed["dtype"]))
                runner.invoke()
            for name in exposed:
                value = tensors[name].value(interpreter.get_tensor(tensors[name].index))
                other = tensors[name].value(plain.get_tensor(tensors[name].index))
                steps[name] = max(steps.get(name, 0.0), float(np.abs(value.astype(np.float64) - other).max()))
                out[name].append(value)
        values = {}
        for name in exposed:
            value = np.concatenate(out[name])
            if value.ndim == 4 and plan[name].info.layout == "NCHW":
                value = value.transpose(0, 3, 1, 2)  # TFLite keeps maps NHWC
            if plan[name].flatten:
                value = value.reshape(value.shape[0], -1)
            values[name] = value
        return values

    return run


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
