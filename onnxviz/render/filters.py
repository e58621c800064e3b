"""The first convolution's learned filters, read from the ONNX weights (`onnxviz filters`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxviz.picture.drawing import draw_filters
from onnxviz.picture.encoding import encode
from onnxviz.errors import ModelError
from onnxviz.files import write_bytes
from onnxviz.model.info import read_info


@dataclass
class Filters:
    """The first Conv of a model and its kernels drawn as colour patches (BGR)."""

    layer: str
    weights_shape: list[int]
    channel_order: str
    image: np.ndarray

    @property
    def kernel(self) -> str:
        o, i, kh, kw = self.weights_shape
        return f"{o} filters of {kh}x{kw}x{i}"


def load_filters(model_path: Path) -> Filters | None:
    """Read the first convolution of any ONNX file; None when it has none.

    Colours follow the network's input channel order: files exported from models that
    take BGR (Keras 'caffe' models, `--bgr` ONNX models) say so in their metadata.
    """
    import onnx

    from onnxviz.model.graph import first_conv_weights
    from onnxviz.model.protoscan import load_light

    from onnxviz.files import existing_file

    path = existing_file(Path(model_path), "model file")
    try:
        model = load_light(path)  # the first filters are small: skip reading the big weights
        _load_small_external(model, path.parent)
        found = first_conv_weights(model)
        if found is None and any(n.op_type == "Conv" for n in model.graph.node):
            model = onnx.load(str(path))  # an unusually large first kernel
            found = first_conv_weights(model)
    except Exception as exc:
        from onnxviz.model.modelfile import unreadable

        raise unreadable(path, type(exc).__name__) from exc
    if found is None:
        return None
    name, weights = found
    try:
        info = read_info(model, str(path))
    except ModelError:  # any ONNX file: no metadata, so RGB input and node names
        info = None
    order = "BGR" if info is not None and info.preprocessing.bgr else "RGB"
    if info is not None:
        name = _layer_name(model, name, {layer.name for layer in info.layers})
    return Filters(name, list(weights.shape), order, draw_filters(weights, channel_order=order))


def _load_small_external(model, base_dir: Path, max_bytes: int = 64 << 10) -> None:
    """Read the small tensors of a model whose weights are external data (a first conv's
    kernels are a few KB), leaving the large ones on disk."""
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        if int(info.get("length", max_bytes + 1)) <= max_bytes:
            load_external_data_for_tensor(tensor, str(base_dir))
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]


_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "HardSwish", "Add"}


def _layer_name(model, conv_name: str, exposed: set[str]) -> str:
    """The exposed layer the first Conv belongs to: its own output, or, for a Keras
    Conv2D with an activation, the activation's output that carries the layer's name."""
    node = next((n for n in model.graph.node if (n.name or n.output[0]) == conv_name), None)
    for _ in range(3):
        if node is None or not node.output:
            break
        if node.output[0] in exposed:
            return node.output[0]
        readers = [n for n in model.graph.node if node.output[0] in n.input]
        node = readers[0] if len(readers) == 1 and readers[0].op_type in _ACTIVATIONS else None
    return conv_name


def write_filters(model_path: Path, output: Path, fmt: str = "jpg") -> Filters:
    """`onnxviz filters`: draw the first convolution's filters into `output`."""
    filters = load_filters(model_path)
    if filters is None:
        raise ModelError(f"'{model_path}' has no 2-D convolution reachable from its input; there are no filters to draw")
    write_bytes(output, encode(filters.image, fmt))
    return filters
