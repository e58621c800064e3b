"""The first convolution's learned filters, read from the ONNX weights (`onnxviz filters`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxviz.picture.drawing import draw_filters, enlarged
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
    from onnxviz.files import existing_file

    path = existing_file(Path(model_path), "model file")
    light = _scanned_filters(path)
    if light is not _UNSURE:
        return light
    import onnx

    from onnxviz.model.graph import first_conv_weights
    from onnxviz.model.protoscan import load_light

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
        name = _layer_name(model.graph.node, name, {layer.name for layer in info.layers})
    return Filters(name, list(weights.shape), order, draw_filters(weights, channel_order=order))


_UNSURE = object()  # the wire-format reader leaves this model to onnx


def _scanned_filters(path: Path):
    """`load_filters` from the wire format, without importing `onnx` (about 1 s of a one-image
    render): for the usual first convolution, whose weights are a float32 initializer. Returns
    `_UNSURE` for anything else (a weight computed by Constant, Cast, DequantizeLinear..., a
    subgraph), which `load_filters` then reads with onnx."""
    from onnxviz.model.info import ModelInfo
    from onnxviz.model.protoscan import float_values, scan_graph

    try:
        scan = scan_graph(path)
    except (OSError, ValueError, IndexError):
        return _UNSURE  # the onnx path names what is wrong with the file
    reachable = {name for name in scan.inputs if name not in scan.initializers}
    for node in scan.nodes:
        if node.subgraphs:
            return _UNSURE
        if not {i for i in node.input if i} & reachable:
            continue
        if node.op_type == "Conv" and node.domain in ("", "ai.onnx") and node.input[0] in reachable:
            tensor = scan.initializers.get(node.input[1]) if len(node.input) > 1 else None
            if tensor is None or len(tensor.dims) != 4:
                return _UNSURE
            try:
                weights = float_values(path, tensor)
            except (OSError, ValueError):
                return _UNSURE
            if weights is None:
                return _UNSURE
            name = node.name or node.output[0]
            try:
                info = ModelInfo.from_props(scan.props, str(path))
            except ModelError:  # any ONNX file: no metadata, so RGB input and node names
                info = None
            order = "BGR" if info is not None and info.preprocessing.bgr else "RGB"
            if info is not None:
                name = _layer_name(scan.nodes, name, {layer.name for layer in info.layers})
            return Filters(name, list(weights.shape), order, draw_filters(weights, channel_order=order))
        reachable.update(o for o in node.output if o)
    return None


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


def _layer_name(nodes, conv_name: str, exposed: set[str]) -> str:
    """The exposed layer the first Conv belongs to: its own output, or, for a Keras
    Conv2D with an activation, the activation's output that carries the layer's name.
    `nodes`: the graph's nodes (`onnx.NodeProto`s or `protoscan.ScannedNode`s)."""
    node = next((n for n in nodes if (n.name or n.output[0]) == conv_name), None)
    for _ in range(3):
        if node is None or not node.output:
            break
        if node.output[0] in exposed:
            return node.output[0]
        readers = [n for n in nodes if node.output[0] in n.input]
        node = readers[0] if len(readers) == 1 and readers[0].op_type in _ACTIVATIONS else None
    return conv_name


def write_filters(model_path: Path, output: Path, fmt: str = "jpg") -> Filters:
    """`onnxviz filters`: draw the first convolution's filters into `output`."""
    filters = load_filters(model_path)
    if filters is None:
        raise ModelError(f"'{model_path}' has no 2-D convolution reachable from its input; there are no filters to draw")
    write_bytes(output, encode(enlarged(filters.image), fmt))
    return filters
