"""Where exported models come from: one adapter per kind of source, side by side.

Each adapter (`base.Adapter`) says what kind of source it is, which options it takes,
which sources it claims, and builds a `base.Built` from the options. Adding a kind of
source means adding a module here and a line to `adapters()`; the pipeline stays as it is.

- `base.py`: the contract (`Adapter`, `ExportOptions`, `Built`)
- `keras.py`: `keras.applications` names, `keras.Model` objects and `.keras`/`.h5` files
  (TensorFlow is imported only when one is built)
- `keras_files.py`: loading Keras files, Keras 2 era `.h5` files included
- `keras_apps.py`: the `keras.applications` table, and recognising one inside a model
- `onnx.py`: ONNX files and `onnx.ModelProto` objects
- `tflite.py`: `.tflite` files (float and int8), converted with tf2onnx, checked against TFLite's interpreter
"""
from __future__ import annotations

from typing import Any

from onnxviz.errors import OptionError
from onnxviz.exporter.sources.base import Adapter


def adapters() -> list[type[Adapter]]:
    """Every kind of source, in the order they are asked whether a source is theirs (the
    first that claims it reads it; a keras.applications name claims any other name)."""
    from onnxviz.exporter.sources.keras import KerasApplication, KerasFile, KerasModel
    from onnxviz.exporter.sources.onnx import OnnxFile, OnnxProto
    from onnxviz.exporter.sources.tflite import TfliteFile

    return [OnnxFile, OnnxProto, TfliteFile, KerasFile, KerasModel, KerasApplication]


def open_source(source: Any) -> Adapter:
    """The adapter for a name, a path, a `keras.Model` or an `onnx.ModelProto`: the first that claims it."""
    for adapter in adapters():
        if adapter.claims(source):
            return adapter.open(source)
    kind = type(source)
    raise OptionError(f"{{source}} must be a keras.applications name, a .keras/.h5/.onnx path, a .tflite path, a "
                      f"keras.Model or an onnx.ModelProto; got a {kind.__module__}.{kind.__name__}", params=("source",))
