"""Loading the Keras files people have: `.keras` files, and `.h5` files of Keras 2 and 3.

Keras 3 refuses many Keras 2 era `.h5` files (Teachable Machine's among them) over
arguments Keras 2 wrote into every layer's config (`groups=1` on `DepthwiseConv2D`,
`batch_input_shape`, `axis=[3]`) and over nested models. Such a file is read by Keras 2
itself (`tf_keras`, Keras 2 for current TensorFlow), then rebuilt in Keras 3 layer by
layer: each layer from its own config (those arguments rewritten to their Keras 3 form,
same meaning) with its own weights, wired as in the original, nested models inlined. The
export then checks the rebuilt model's output against Keras 2's on the probe images.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxviz.errors import ModelError, OnnxvizError

SUFFIXES = (".keras", ".h5", ".hdf5")
# Keras 2 config entries that Keras 3 layers refuse, when they hold Keras 2's default.
_KERAS2_DEFAULTS: dict[str, dict[str, Any]] = {"DepthwiseConv2D": {"groups": 1}}


@dataclass
class LoadedModel:
    model: Any  # a Keras 3 model
    record: dict[str, Any]  # how to find it again (for diff --against keras, bench)
    # The model as the file's own Keras computes it: batch -> final outputs. None when the
    # Keras 3 model is that model.
    original: Callable[[np.ndarray], list[np.ndarray]] | None = None
    notes: list[str] = field(default_factory=list)


def check_keras_file(path: Path) -> None:
    from onnxviz.files import existing_file

    existing_file(path, "model file")
    if path.suffix.lower() not in SUFFIXES:
        raise ModelError(f"'{path}' is not a Keras model file (.keras, .h5); ONNX files end in .onnx")


def load_model_file(path: Path, keras: Any) -> LoadedModel:
    """The Keras 3 model in `path`, Keras 2 `.h5` files included."""
    check_keras_file(path)
    record = {"path": str(Path(path).resolve())}
    try:
        model = keras.models.load_model(path, compile=False)
        return LoadedModel(_checked_model(model, path, keras), record)
    except Exception as exc:
        first_error = exc
    if path.suffix.lower() in (".h5", ".hdf5"):
        loaded = _load_keras2_h5(path, keras, first_error)
        loaded.record = record
        return loaded
    raise ModelError(f"Keras cannot load '{path}': {_cause(first_error)}. {_what_to_try(path)}") from first_error


def _checked_model(model: Any, path: Path, keras: Any) -> Any:
    if not isinstance(model, keras.Model):
        raise ModelError(f"'{path}' holds a {type(model).__name__}, not a Keras model")
    return model


def _load_keras2_h5(path: Path, keras: Any, first_error: BaseException) -> LoadedModel:
    """A Keras 2 `.h5` file read by Keras 2 (`tf_keras`) and rebuilt, layer by layer, in Keras 3."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", b"")
    except OSError as exc:
        with open(path, "rb") as fh:
            signature = fh.read(8)
        if signature != b"\x89HDF\r\n\x1a\n":  # not HDF5 at all: a download page, a renamed file...
            raise ModelError(f"'{path}' is not an HDF5 file (it does not start with HDF5's signature), so not a "
                             f"Keras .h5 model; check that it is the file you meant (a failed download saves a web "
                             f"page under the model's name)") from exc
        raise ModelError(f"cannot read '{path}' as HDF5 ({exc}); {_what_to_try(path)}") from exc
    version = version.decode() if isinstance(version, bytes) else str(version or "")
    if raw is None:
        raise ModelError(f"'{path}' holds weights only (no model config); load it into the model it came "
                         f"from and save that with model.save('model.keras')")
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    unknown = sorted(_unknown_classes(config, keras))
    if unknown:
        raise ModelError(
            f"'{path}' uses layers Keras does not know: {', '.join(unknown)}; they are custom layers of the code "
            f"that saved it: export a keras.Model you built with those classes imported (onnxviz.export(model)), "
            f"or save it again without them")
    try:
        import tf_keras
    except ImportError:
        raise ModelError(f"Keras 3 cannot load '{path}' ({_cause(first_error)}); it was saved by Keras "
                         f"{version or '2'}: pip install tf_keras (Keras 2), then export again") from first_error
    try:
        original = tf_keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelError(f"neither Keras 3 nor Keras 2 (tf_keras) can load '{path}': {_cause(exc)}. "
                         f"{_what_to_try(path)}") from exc
    changes: list[str] = []
    try:
        model = _from_keras2(original, keras, changes)
    except Exception as exc:
        raise ModelError(f"Keras 2 reads '{path}', but its layers could not be rebuilt in Keras 3: {_cause(exc)}. "
                         f"{_what_to_try(path)}") from exc

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = original.predict(x, batch_size=len(x), verbose=0)
        return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]

    note = (f"'{path.name}' was saved by Keras {version or '2'}: read by Keras 2 (tf_keras) and rebuilt in Keras 3 "
            f"layer by layer" + (f" ({'; '.join(sorted(set(changes)))})" if changes else ""))
    return LoadedModel(model, {}, run, [note])


def _from_keras2(original: Any, keras: Any, changes: list[str]) -> Any:
    """The Keras 3 twin of a Keras 2 model: the same layers (names, configs, weights), wired the
    same way, nested models flattened into one graph."""
    made: dict[int, Any] = {}

    def twin(layer: Any) -> Any:
        if id(layer) not in made:
            cls = type(layer).__name__
            config = {"class_name": cls, "config": dict(layer.get_config())}
            _keras3_config(config, changes)
            made[id(layer)] = getattr(keras.layers, cls).from_config(config["config"])
        return made[id(layer)]

    def call(layer: Any, args: Any, kwargs: dict) -> Any:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested model: inline it
            return run(layer, args[0] if len(args) == 1 else list(args))
        new = twin(layer)
        first = not new.built
        out = new(*args, **kwargs)
        if first:
            new.set_weights(layer.get_weights())
        return out

    def run(model: Any, x: Any) -> Any:
        if type(model).__name__ == "Sequential":
            for layer in model.layers:
                x = call(layer, (x,), {})
            return x
        xs = x if isinstance(x, (list, tuple)) else [x]
        value = {id(t): v for t, v in zip(model.inputs, xs)}
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                swap = lambda t: value[id(t)] if id(t) in value else t  # noqa: E731
                args = _map(swap, node.call_args)
                kwargs = {k: _map(swap, v) for k, v in node.call_kwargs.items() if k not in ("training", "mask")}
                out = call(node.layer, args, kwargs)
                outs = out if isinstance(out, (list, tuple)) else [out]
                for t, v in zip(_flat(node.outputs), outs):
                    value[id(t)] = v
        outs = [value[id(t)] for t in model.outputs]
        return outs[0] if len(outs) == 1 else outs

    shape = original.inputs[0].shape
    inp = keras.Input(shape=tuple(shape[1:]), name=original.inputs[0].name.split(":")[0])
    return keras.Model(inp, run(original, inp), name=original.name)


def _map(fn: Callable, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    return fn(value)


def _flat(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [value]


def _layer_configs(config: Any):
    """Every layer config dict in a (nested) model config."""
    if isinstance(config, dict):
        if "class_name" in config and isinstance(config.get("config"), dict):
            yield config
        for value in config.values():
            yield from _layer_configs(value)
    elif isinstance(config, list):
        for value in config:
            yield from _layer_configs(value)


def _unknown_classes(config: Any, keras: Any) -> set[str]:
    known_modules = (keras.layers, keras.models, keras)
    unknown = set()
    for layer in _layer_configs(config):
        name = layer["class_name"]
        if name in ("Functional", "Model", "Sequential", "InputLayer", "TFOpLambda", "SlicingOpLambda"):
            continue
        if not any(hasattr(module, name) for module in known_modules) and _looks_like_layer(layer):
            unknown.add(name)
    return unknown


def _looks_like_layer(layer: dict) -> bool:
    # initializers, regularizers and constraints are configs with class names too
    return "name" in layer["config"] and ("trainable" in layer["config"] or "dtype" in layer["config"])


def _keras3_config(config: Any, changes: list[str]) -> Any:
    """Keras 2 layer configs in the form Keras 3 reads, noting each change made."""
    for layer in _layer_configs(config):
        # tf_keras names its own modules (tf_keras.src.engine.functional): Keras 3 finds
        # the same classes by name.
        if str(layer.get("module", "")).startswith("tf_keras"):
            del layer["module"]
            if layer.get("registered_name") == layer["class_name"]:
                layer["registered_name"] = None
        cls, cfg = layer["class_name"], layer["config"]
        for key, default in _KERAS2_DEFAULTS.get(cls, {}).items():
            if key in cfg and cfg[key] == default:
                del cfg[key]
                changes.append(f"{cls}: dropped Keras 2's {key}={default}")
        if cls in ("Sequential",) and isinstance(cfg.get("layers"), list) and cfg["layers"]:
            first = cfg["layers"][0]
            shape = first.get("config", {}).get("batch_input_shape")
            if shape is not None and first.get("class_name") != "InputLayer":
                del first["config"]["batch_input_shape"]
                cfg["layers"].insert(0, {"class_name": "InputLayer", "config": {
                    "batch_shape": shape, "dtype": first["config"].get("dtype", "float32"),
                    "name": f"{first['config'].get('name', 'input')}_input"}})
                changes.append("Sequential: batch_input_shape made an Input layer")
        if cls in ("BatchNormalization", "LayerNormalization") and isinstance(cfg.get("axis"), list) \
                and len(cfg["axis"]) == 1:
            cfg["axis"] = cfg["axis"][0]  # Keras 2 wrote [3]; Keras 3 takes 3
            changes.append(f"{cls}: axis as a number")
        if cls == "InputLayer" and "batch_input_shape" in cfg:
            cfg["batch_shape"] = cfg.pop("batch_input_shape")
    for layer in _layer_configs(config):  # what is left of batch_input_shape says nothing Keras 3 needs
        layer["config"].pop("batch_input_shape", None)
    return config


def _cause(exc: BaseException) -> str:
    """The exception's own words on one line: its last "Exception encountered" (the cause,
    which Keras puts at the end), without the layer configs Keras prints around it."""
    import re

    text = " ".join(str(exc).split()) or type(exc).__name__
    reason = text.rsplit("Exception encountered: ", 1)[-1]
    reason = re.sub(r" ?(Full object config|config)[:=] ?\{.*$", "", reason)
    return reason.strip() or text[:500]


def _what_to_try(path: Path) -> str:
    return ("Try: pip install tf_keras (Keras 2) and save it again from there with model.save('model.keras'); or "
            f"load it in your own code and pass the keras.Model to onnxviz.export(); or export it to ONNX "
            f"(tf2onnx) and run 'onnxviz export MODEL.onnx'")
