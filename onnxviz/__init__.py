"""onnxviz: see what a convolutional network sees.

    import onnxviz
    onnxviz.export("vgg16")                    # models/vgg16.onnx, its feature maps as outputs
    model = onnxviz.load("models/vgg16.onnx")
    maps = model.activations("cat.jpg")        # {layer: [N, C, H, W]}
    onnxviz.grid(maps["block1_conv1"][0])      # the channels as one RGB picture

Importing onnxviz loads nothing heavy: ONNX Runtime, OpenCV, onnx and TensorFlow are
imported when first used.
"""
from __future__ import annotations

from onnxviz.errors import OnnxvizError

__version__ = "0.1.0"
__all__ = ["export", "load", "grid", "Model", "OnnxvizError", "demo_model", "demo_photo", "__version__"]

_LAZY = {"export": "api", "load": "api", "grid": "api", "Model": "api", "Activations": "api",
         "demo_model": "api", "demo_photo": "api",
         "Prediction": "api", "ExportOptions": "exporter.sources.base", "ExportResult": "exporter.pipeline"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'onnxviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
