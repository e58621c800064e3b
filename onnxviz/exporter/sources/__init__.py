"""Where exported models come from: one adapter per kind of source, side by side.

An adapter says what kind of source it is (for messages and for which options apply,
see `pipeline.APPLICABLE`), the default file name, and builds a `pipeline.Built` from
the options. Adding a kind of source means adding a module here and a line to
`open_source`; the pipeline stays as it is.

- `keras.py`: `keras.applications` names, `keras.Model` objects and `.keras`/`.h5` files
  (TensorFlow is imported only when one is built)
- `keras_files.py`: loading Keras files, Keras 2 era `.h5` files included
- `keras_apps.py`: the `keras.applications` table, and recognising one inside a model
- `onnx.py`: ONNX files and `onnx.ModelProto` objects
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from onnxviz.errors import OptionError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass
class Adapter:
    kind: str  # a key of pipeline.APPLICABLE
    stem: str  # default output: models/<stem>.onnx
    build: Callable[..., Any]  # (ExportOptions, progress) -> pipeline.Built


def open_source(source: Any) -> Adapter:
    """The adapter for a name, a path, a `keras.Model` or an `onnx.ModelProto`."""
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.lower().endswith(".onnx"):
            from onnxviz.exporter.sources.onnx import onnx_file

            return onnx_file(Path(text))
        if text.lower().endswith(KERAS_SUFFIXES) or Path(text).exists() or "/" in text or "\\" in text:
            from onnxviz.exporter.sources.keras import keras_file

            return keras_file(Path(text))
        from onnxviz.exporter.sources.keras import application

        return application(text)
    kind = type(source)
    if kind.__name__ == "ModelProto" and kind.__module__.startswith("onnx"):
        from onnxviz.exporter.sources.onnx import onnx_proto

        return onnx_proto(source)
    if any(c.__module__.startswith(("keras", "tf_keras")) and c.__name__ in ("Model", "Functional", "Sequential")
           for c in kind.__mro__):
        from onnxviz.exporter.sources.keras import keras_model

        return keras_model(source)
    raise OptionError(f"{{source}} must be a keras.applications name, a .keras/.h5/.onnx path, a keras.Model or "
                      f"an onnx.ModelProto; got a {kind.__module__}.{kind.__name__}", params=("source",))
