"""First-layer filters: read from the weights, named after the layer, in the input's colour order."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxviz.render.filters import load_filters
from onnxviz.model.info import KERAS_MODES, LayerInfo, ModelInfo, write_info


def keras_like(weights: np.ndarray, metadata: bool = True) -> onnx.ModelProto:
    """Conv -> Relu, as tf2onnx writes a Keras Conv2D(activation='relu'): the layer's name is on the Relu."""
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "W"], ["conv_out"], name="model/block1_conv1/BiasAdd", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv_out"], ["block1_conv1"], name="model/block1_conv1/Relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("block1_conv1", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if metadata:
        write_info(model, ModelInfo("image", 8, 8, [LayerInfo("block1_conv1", "Conv2D", [None, 4, 8, 8], "NCHW")],
                                    KERAS_MODES["caffe"], "test", "test"))
    return model


def test_filters_take_the_keras_layer_name_and_the_bgr_order(tmp_path):
    w = np.zeros((4, 3, 3, 3), np.float32)
    w[0, 0] = 1.0  # filter 0 responds to input channel 0, which is blue for a 'caffe' (BGR) model
    onnx.save(keras_like(w), tmp_path / "m.onnx")
    filters = load_filters(tmp_path / "m.onnx")
    assert filters.layer == "block1_conv1" and filters.channel_order == "BGR"
    assert filters.weights_shape == [4, 3, 3, 3] and filters.kernel == "4 filters of 3x3x3"
    patch = filters.image[2:10, 2:10].reshape(-1, 3).mean(axis=0)  # inside the first patch
    assert patch[0] > patch[1] + 60 and patch[0] > patch[2] + 60  # blue, in OpenCV's BGR


def test_any_onnx_file_gets_rgb_and_the_node_name(tmp_path):
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    onnx.save(keras_like(w, metadata=False), tmp_path / "m.onnx")
    filters = load_filters(tmp_path / "m.onnx")
    assert filters.layer == "model/block1_conv1/BiasAdd" and filters.channel_order == "RGB"
