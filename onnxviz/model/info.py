"""What an onnxviz file says about itself, stored in the ONNX `metadata_props`.

Every file written by `onnxviz export` takes RGB pixels 0..255, float32, NHWC
`[N, H, W, 3]`; the model's own preprocessing is folded into the graph. The keys:

- `onnxviz.version`: the onnxviz version that wrote the file (its presence marks the file)
- `onnxviz.source`: what it was made from (`keras.applications.VGG16`, a path)
- `onnxviz.input`: `{"name", "height", "width", "layout": "NHWC", "color": "RGB", "range": [0, 255]}`
- `onnxviz.preprocessing`: how pixels were turned into the network's input (folded in);
  `"gray": true` for one-channel networks, fed the gray of the RGB pixels first
- `onnxviz.resize`: how photos are brought to the input size, when the source says
  (`{"mode": "shorter", "size": 256, "crop": "center"}`: torchvision's Resize + CenterCrop)
- `onnxviz.layer.000`, `onnxviz.layer.001`, ...: the exposed outputs in network order, one
  short entry each, `{name, op, shape, layout}`, plus `class` (the source framework's
  class, e.g. `BatchNorm2d`) and `folded` (modules the exporter folded into it) when known
- `onnxviz.predictions`: the output holding class scores and whether they are probabilities
- `onnxviz.model.labels`: class names, when known; `imagenet` for the list shipped with onnxviz
- `onnxviz.keras`: how to rebuild the Keras source, for files exported from Keras

Each value is short compact JSON so that Netron shows it whole. Files written before
these keys (one `onnxviz.layers` list) are read as well.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from onnxviz.errors import ModelError, NotOnnxvizFile

PREFIX = "onnxviz."


@dataclass
class LayerInfo:
    """One exposed output: `name` is the graph output name (the Keras layer name)."""

    name: str
    op: str
    shape: list[int | None]
    layout: str  # "NCHW" for feature maps, "NC" for vectors, "" for anything else
    cls: str = ""  # the source framework's class (PyTorch: `BatchNorm2d`), when known and not `op`
    folded: list[str] = field(default_factory=list)  # what the exporter folded into it (`layer1.0.conv2`)

    @property
    def channels(self) -> int | None:
        return self.shape[1] if len(self.shape) >= 2 else None

    @property
    def is_feature_map(self) -> bool:
        return self.layout == "NCHW" and len(self.shape) == 4


# Gray from RGB as ITU-R BT.601 luma, the weights PIL's convert("L") and OpenCV's cvtColor use.
GRAY = (0.299, 0.587, 0.114)


@dataclass
class Preprocessing:
    """`y = (x[..., order] * scale - mean) / std`, x being RGB 0..255; `bgr` reverses the channels.

    With `gray` (one-channel networks) x is first the gray of the RGB pixels (`gray_of`), one
    channel, and the first mean and std apply to it."""

    mode: str = "none"  # caffe | tf | torch | none | custom
    scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    bgr: bool = False
    gray: bool = False

    @property
    def is_identity(self) -> bool:
        return (not self.bgr and not self.gray and self.scale == 1.0 and all(m == 0 for m in self.mean)
                and all(s == 1 for s in self.std))


def gray_of(rgb: Any) -> Any:
    """`[..., 3]` RGB -> `[..., 1]` gray, in float32 (numpy)."""
    import numpy as np

    return np.asarray(rgb, np.float32) @ np.asarray(GRAY, np.float32).reshape(3, 1)


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
    # How photos are resized to height x width: "stretch", "crop", "pad", or a number N (the
    # shorter side to N, bilinear with antialias, then a centre crop: torchvision's
    # Resize(N) + CenterCrop); None when the source says nothing (render then stretches).
    resize: str | None = None

    def __post_init__(self) -> None:
        self.source = portable_source(self.source)

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
            PREFIX + "source": portable_source(self.source),
            PREFIX + "input": _json({
                "name": self.input_name, "height": self.height, "width": self.width,
                "layout": "NHWC", "color": "RGB", "range": [0, 255], "dtype": "float32",
            }),
            PREFIX + "preprocessing": _json(_preprocessing(self.preprocessing)),
            PREFIX + "predictions": _json({
                "output": self.prediction_output, "probabilities": self.prediction_is_probability,
            }),
        }
        if self.resize is not None:
            props[PREFIX + "resize"] = _json(resize_to_json(self.resize))
        digits = max(3, len(str(len(self.layers) - 1)))
        for i, layer in enumerate(self.layers):
            entry: dict[str, Any] = {"name": layer.name}  # what Netron shows first, before it cuts the line
            if layer.cls:
                entry["class"] = layer.cls
            if layer.folded:
                entry["folded"] = layer.folded
            entry.update(op=layer.op, shape=layer.shape, layout=layer.layout)
            props[f"{PREFIX}layer.{i:0{digits}d}"] = _json(entry)
        if self.labels is not None:
            from onnxviz.model.labels import IMAGENET, imagenet_labels

            shipped = len(self.labels) == 1000 and self.labels == imagenet_labels()
            props[PREFIX + "labels"] = IMAGENET if shipped else _json(self.labels)
        if self.keras is not None:
            props[PREFIX + "keras"] = _json(self.keras)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "the model") -> "ModelInfo":
        if PREFIX + "version" not in props:
            raise NotOnnxvizFile(
                f"{where} was not written by 'onnxviz export' (it has no onnxviz metadata); "
                f"run 'onnxviz export {where} -o NEW.onnx' to make an onnxviz file from it"
            )
        try:
            inp: dict[str, Any] = json.loads(props[PREFIX + "input"])
            pred = json.loads(props.get(PREFIX + "predictions", "{}"))
            labels = None
            if PREFIX + "labels" in props:
                from onnxviz.model.labels import IMAGENET, imagenet_labels

                raw = props[PREFIX + "labels"]
                labels = imagenet_labels() if raw == IMAGENET else json.loads(raw)
            if PREFIX + "layers" in props:  # files written before one entry per layer
                entries = json.loads(props[PREFIX + "layers"])
            else:
                keys = sorted((k for k in props if k.startswith(PREFIX + "layer.")),
                              key=lambda k: int(k.rsplit(".", 1)[1]))
                entries = [json.loads(props[k]) for k in keys]
                if not entries:
                    raise KeyError(PREFIX + "layer.000")
            resize = props.get(PREFIX + "resize")
            return cls(
                input_name=inp["name"], height=int(inp["height"]), width=int(inp["width"]),
                layers=[_layer(d) for d in entries],
                preprocessing=Preprocessing(**json.loads(props[PREFIX + "preprocessing"])),
                source=props.get(PREFIX + "source", ""),
                version=props[PREFIX + "version"],
                prediction_output=pred.get("output"),
                prediction_is_probability=bool(pred.get("probabilities", True)),
                labels=labels,
                keras=json.loads(props[PREFIX + "keras"]) if PREFIX + "keras" in props else None,
                resize=resize_from_json(json.loads(resize)) if resize is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where} has damaged onnxviz metadata ({exc}); export it again") from exc


def _preprocessing(prep: Preprocessing) -> dict[str, Any]:
    """Its fields; `gray` only when set, so that files of RGB networks read as before."""
    fields_ = asdict(prep)
    if not fields_["gray"]:
        del fields_["gray"]
    return fields_


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _layer(d: dict[str, Any]) -> LayerInfo:
    return LayerInfo(d["name"], d["op"], d["shape"], d["layout"], d.get("class", d.get("cls", "")),
                     list(d.get("folded", [])))


def portable_source(source: str) -> str:
    """What a file was made from, without the exporting machine's folders: a path becomes its name."""
    if "/" in source or "\\" in source:
        return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return source


def resize_to_json(spec: str) -> dict[str, Any]:
    if spec.isdigit():
        return {"mode": "shorter", "size": int(spec), "crop": "center"}
    return {"mode": spec}


def resize_from_json(value: dict[str, Any]) -> str:
    if value["mode"] == "shorter":
        return str(int(value["size"]))
    return str(value["mode"])


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
    """The `ModelInfo` of an onnxviz file on disk, read from the wire format (`protoscan.outline`:
    no `onnx` import, no weights read)."""
    from pathlib import Path

    from onnxviz.files import existing_file
    from onnxviz.model.modelfile import read_outline, unreadable

    path = existing_file(Path(path), "model file")
    found = read_outline(path)
    if not found.nodes:
        raise unreadable(path)
    return ModelInfo.from_props(found.props, str(path))
