"""What an onnxviz file says about itself, stored in the ONNX `metadata_props`.

Every file written by `onnxviz export` takes RGB pixels 0..255, float32, NHWC
`[N, H, W, 3]`; the model's own preprocessing is folded into the graph. The keys:

- `onnxviz.version`: the onnxviz version that wrote the file (its presence marks the file)
- `onnxviz.source`: what it was made from (`keras.applications.VGG16`, a path)
- `onnxviz.input`: `{"name", "height", "width", "layout": "NHWC", "color": "RGB", "range": [0, 255]}`
- `onnxviz.preprocessing`: how pixels were turned into the network's input (folded in)
- `onnxviz.layers`: the exposed outputs in network order, `{name, op, shape, layout}`
- `onnxviz.predictions`: the output holding class scores and whether they are probabilities
- `onnxviz.labels`: class names, when known
- `onnxviz.keras`: how to rebuild the Keras source, for files exported from Keras
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import ModelError

PREFIX = "onnxviz."


@dataclass
class LayerInfo:
    """One exposed output: `name` is the graph output name (the Keras layer name)."""

    name: str
    op: str
    shape: list[int | None]
    layout: str  # "NCHW" for feature maps, "NC" for vectors, "" for anything else

    @property
    def channels(self) -> int | None:
        return self.shape[1] if len(self.shape) >= 2 else None

    @property
    def is_feature_map(self) -> bool:
        return self.layout == "NCHW" and len(self.shape) == 4


@dataclass
class Preprocessing:
    """`y = (x[..., order] * scale - mean) / std`, x being RGB 0..255; `bgr` reverses the channels."""

    mode: str = "none"  # caffe | tf | torch | none | custom
    scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    bgr: bool = False

    @property
    def is_identity(self) -> bool:
        return (not self.bgr and self.scale == 1.0 and all(m == 0 for m in self.mean)
                and all(s == 1 for s in self.std))


# Keras' `preprocess_input` modes, as the parameters above.
KERAS_MODES: dict[str, Preprocessing] = {
    "caffe": Preprocessing("caffe", 1.0, [103.939, 116.779, 123.68], [1.0, 1.0, 1.0], bgr=True),
    "tf": Preprocessing("tf", 1.0 / 127.5, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
    "torch": Preprocessing("torch", 1.0 / 255.0, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "none": Preprocessing("none"),
}


@dataclass
class ModelInfo:
    """Everything render, layers, bench and diff need to know about a file."""

    input_name: str
    height: int
    width: int
    layers: list[LayerInfo]
    preprocessing: Preprocessing
    source: str
    version: str
    prediction_output: str | None = None
    prediction_is_probability: bool = True
    labels: list[str] | None = None
    # How to rebuild the source in Keras (bench --compare-keras, diff --against keras):
    # {"application": "VGG16", "kwargs": {...}} or {"path": "model.keras"}; None for ONNX sources.
    keras: dict[str, Any] | None = None

    @property
    def feature_maps(self) -> list[LayerInfo]:
        return [layer for layer in self.layers if layer.is_feature_map]

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_props(self) -> dict[str, str]:
        props = {
            PREFIX + "version": self.version,
            PREFIX + "source": self.source,
            PREFIX + "input": json.dumps({
                "name": self.input_name, "height": self.height, "width": self.width,
                "layout": "NHWC", "color": "RGB", "range": [0, 255], "dtype": "float32",
            }),
            PREFIX + "preprocessing": json.dumps(asdict(self.preprocessing)),
            PREFIX + "layers": json.dumps([asdict(layer) for layer in self.layers]),
            PREFIX + "predictions": json.dumps({
                "output": self.prediction_output, "probabilities": self.prediction_is_probability,
            }),
        }
        if self.labels is not None:
            props[PREFIX + "labels"] = json.dumps(self.labels)
        if self.keras is not None:
            props[PREFIX + "keras"] = json.dumps(self.keras)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "the model") -> "ModelInfo":
        if PREFIX + "version" not in props:
            raise ModelError(
                f"{where} was not written by 'onnxviz export' (it has no onnxviz metadata); "
                f"run 'onnxviz export {where} -o NEW.onnx' to make an onnxviz file from it"
            )
        try:
            inp: dict[str, Any] = json.loads(props[PREFIX + "input"])
            pred = json.loads(props.get(PREFIX + "predictions", "{}"))
            labels = json.loads(props[PREFIX + "labels"]) if PREFIX + "labels" in props else None
            return cls(
                input_name=inp["name"], height=int(inp["height"]), width=int(inp["width"]),
                layers=[LayerInfo(**d) for d in json.loads(props[PREFIX + "layers"])],
                preprocessing=Preprocessing(**json.loads(props[PREFIX + "preprocessing"])),
                source=props.get(PREFIX + "source", ""),
                version=props[PREFIX + "version"],
                prediction_output=pred.get("output"),
                prediction_is_probability=bool(pred.get("probabilities", True)),
                labels=labels,
                keras=json.loads(props[PREFIX + "keras"]) if PREFIX + "keras" in props else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where} has damaged onnxviz metadata ({exc}); export it again") from exc


def write_info(model: Any, info: ModelInfo) -> None:
    """Replace the onnxviz entries of an `onnx.ModelProto`'s metadata_props with `info`."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + list(info.to_props().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_info(model: Any, where: str = "the model") -> ModelInfo:
    """The `ModelInfo` of an `onnx.ModelProto`."""
    return ModelInfo.from_props({p.key: p.value for p in model.metadata_props}, where)


def load_info(path: Any) -> ModelInfo:
    """The `ModelInfo` of an onnxviz file on disk (weights are parsed too: use a session's
    `custom_metadata_map` where one is open anyway)."""
    from pathlib import Path

    from .files import existing_file
    from .modelfile import unreadable
    from .protoscan import load_light

    path = existing_file(Path(path), "model file")
    try:
        model = load_light(path)
    except Exception as exc:  # protobuf's DecodeError, a truncated or foreign file
        raise unreadable(path, type(exc).__name__) from exc
    if not model.graph.node:
        raise unreadable(path)
    return read_info(model, str(path))
