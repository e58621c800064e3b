"""Loading the Keras files people have: `.keras` files, and `.h5` files of Keras 2 and 3.

Keras 3 refuses many Keras 2 era `.h5` files (Teachable Machine's among them) over
arguments Keras 2 wrote into every layer's config: `groups=1` on `DepthwiseConv2D`,
`batch_input_shape` on a Sequential's first layer. Those are rewritten into their Keras 3
form (the values are Keras 2's defaults or the input shape, so the network is the same),
the weights are loaded by Keras' own legacy reader, and, where `tf_keras` (Keras 2 for
current TensorFlow) is installed, the rebuilt model's output is checked against the file
loaded by Keras 2 itself before anything is exported.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ModelError, OnnxvizError

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


def check_model_file(path: Path) -> None:
    from ..files import existing_file

    existing_file(path, "model file")
    if path.suffix.lower() not in SUFFIXES:
        raise ModelError(f"'{path}' is not a Keras model file (.keras, .h5); ONNX files end in .onnx")


def load_model_file(path: Path, keras: Any) -> LoadedModel:
    """The Keras 3 model in `path`, Keras 2 `.h5` files included."""
    check_model_file(path)
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
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", b"")
            version = version.decode() if isinstance(version, bytes) else str(version)
            if raw is None:
                raise ModelError(f"'{path}' holds weights only (no model config); load it into the model it came "
                                 f"from and save that with model.save('model.keras')")
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            unknown = sorted(_unknown_classes(config, keras))
            if unknown:
                raise ModelError(
                    f"'{path}' uses layers Keras does not know: {', '.join(unknown)}; they are custom layers of "
                    f"the code that saved it: export a keras.Model you built with those classes imported "
                    f"(onnxviz.export(model)), or save it again without them")
            changes: list[str] = []
            config = _keras3_config(config, changes)
            # Keras' own reader of legacy .h5 files, fed the rewritten config
            from keras.src.legacy.saving import legacy_h5_format, saving_options, saving_utils
            from keras.src.saving import serialization_lib

            with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
                model = saving_utils.model_from_config(config)
                legacy_h5_format.load_weights_from_hdf5_group(f["model_weights"], model)
    except (OnnxvizError, OSError) as exc:
        if isinstance(exc, OnnxvizError):
            raise
        raise ModelError(f"cannot read '{path}' as HDF5 ({exc}); {_what_to_try(path)}") from exc
    except Exception as exc:
        raise ModelError(f"Keras cannot load '{path}': {_cause(first_error)}. Read as a Keras {version or '2'} file "
                         f"it still fails: {_cause(exc)}. {_what_to_try(path)}") from exc
    model = _checked_model(model, path, keras)
    notes = [f"'{path.name}' was saved by Keras {version or '2'}; rebuilt for Keras 3"
             + (f" ({'; '.join(sorted(set(changes)))})" if changes else "")]
    original = _keras2_runner(path)
    if original is None:
        notes.append("tf_keras is not installed, so the rebuilt model was not compared with Keras 2's own reading "
                     "of the file (pip install tf_keras)")
    return LoadedModel(model, {}, original, notes)


def _keras2_runner(path: Path) -> Callable[[np.ndarray], list[np.ndarray]] | None:
    """The file as Keras 2 (`tf_keras`) computes it, or None without tf_keras."""
    try:
        import tf_keras
    except ImportError:
        return None
    try:
        model = tf_keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras 2 cannot read it either: nothing to compare with
        raise ModelError(f"Keras 2 (tf_keras) cannot load '{path}' either: {_cause(exc)}") from exc

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = model.predict(x, batch_size=len(x), verbose=0)
        return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]

    return run


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
    """The exception's own words, whole, on one line (the cause is often at the end)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    reason = text.rsplit("Exception encountered: ", 1)[-1]
    return reason if len(reason) < len(text) else text


def _what_to_try(path: Path) -> str:
    return ("Try: pip install tf_keras (Keras 2) and save it again from there with model.save('model.keras'); or "
            f"load it in your own code and pass the keras.Model to onnxviz.export(); or export it to ONNX "
            f"(tf2onnx) and run 'onnxviz export MODEL.onnx'")
