"""Tiny onnxviz files for the atlas, receptive-field and reduction tests, built inline with onnx.helper.

`branchy_model` has what receptive fields must get right: a Pad node on the NHWC input, a
3x3 conv without padding, a pool, a dilated strided conv, a 1x1 strided shortcut added to
it, a SAME_UPPER conv, and a global pool. `linear=True` swaps ReLU for Identity and max
pooling for average pooling, so that every pixel of a receptive field really moves the
output (what the "inside the box" test needs).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxviz.model.info import KERAS_MODES, LayerInfo, ModelInfo, write_info

SIZE = 32


def _w(rng, *shape):
    return numpy_helper.from_array(rng.normal(0, 0.4, shape).astype(np.float32))


def branchy_model(linear: bool = False, opset: int = 17, seed: int = 3, size: int = SIZE) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    act = "Identity" if linear else "Relu"
    pool = "AveragePool" if linear else "MaxPool"
    s1 = size               # c1: pad 1 then 3x3 valid conv
    s2 = size // 2          # p1: 2x2 stride 2
    s3 = (s2 + 4 - 5) // 2 + 1  # c2: 3x3 dilation 2 (5 effective), stride 2, pads 2
    s4 = -(-s3 // 2)        # c3: SAME_UPPER stride 2
    inits = {
        "k": numpy_helper.from_array(np.array(1 / 255, np.float32)),
        "pads": numpy_helper.from_array(np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64)),
        "W1": _w(rng, 6, 3, 3, 3), "B1": _w(rng, 6), "W2": _w(rng, 8, 6, 3, 3), "W3": _w(rng, 8, 6, 1, 1),
        "W4": _w(rng, 5, 8, 3, 3), "FC": _w(rng, 5, 4),
    }
    for name, tensor in inits.items():
        tensor.name = name
    nodes = [
        helper.make_node("Mul", ["image", "k"], ["scaled"]),
        helper.make_node("Pad", ["scaled", "pads"], ["padded"]),
        helper.make_node("Transpose", ["padded"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "W1", "B1"], ["c1_conv"], kernel_shape=[3, 3]),
        helper.make_node(act, ["c1_conv"], ["c1"]),
        helper.make_node(pool, ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2],
                         pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["p1", "W3"], ["skip_full"], kernel_shape=[1, 1], strides=[2, 2]),
        helper.make_node("Slice", ["skip_full", "starts", "ends", "axes"], ["skip"]),
        helper.make_node("Add", ["c2", "skip"], ["add_sum"]),
        helper.make_node(act, ["add_sum"], ["add"]),
        helper.make_node("Conv", ["add", "W4"], ["c3"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "FC"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["predictions"], axis=-1),
    ]
    # The shortcut is sliced on channels only (a spatial Slice would make the field the whole image).
    inits["starts"] = numpy_helper.from_array(np.array([0], np.int64), "starts")
    inits["ends"] = numpy_helper.from_array(np.array([8], np.int64), "ends")
    inits["axes"] = numpy_helper.from_array(np.array([1], np.int64), "axes")
    shapes = {"c1": [6, s1, s1], "p1": [6, s2, s2], "c2": [8, s3, s3], "add": [8, s3, s3], "c3": [5, s4, s4],
              "gap": [5, 1, 1]}
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s]) for n, s in shapes.items()]
    outs.append(helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["N", 4]))
    graph = helper.make_graph(nodes, "branchy",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
                              outs, list(inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    ops = {"c1": "Conv2D", "p1": "MaxPooling2D", "c2": "Conv2D", "add": "Add", "c3": "Conv2D",
           "gap": "GlobalAveragePooling2D"}
    info = ModelInfo(
        input_name="image", height=size, width=size,
        layers=[LayerInfo(n, ops[n], [None, *s], "NCHW") for n, s in shapes.items()]
        + [LayerInfo("predictions", "Dense", [None, 4], "NC")],
        preprocessing=KERAS_MODES["none"], source="branchy", version="test",
        prediction_output="predictions", labels=["a", "b", "c", "d"],
    )
    write_info(model, info)
    onnx.checker.check_model(model)
    return model


def vectors_only_model() -> onnx.ModelProto:
    """An onnxviz file that exposes no 4-D map (its only output is the class vector)."""
    model = branchy_model()
    del model.graph.output[:-1]
    info = ModelInfo(input_name="image", height=SIZE, width=SIZE,
                     layers=[LayerInfo("predictions", "Dense", [None, 4], "NC")],
                     preprocessing=KERAS_MODES["none"], source="vectors", version="test",
                     prediction_output="predictions")
    write_info(model, info)
    return model


def write_images(folder, count: int, seed: int = 0, size: int = 40, constant: int = 0):
    """`count` random PNG/JPEG images of varied sizes, plus `constant` flat grey ones (ties)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(size // 2, size * 2)), int(rng.integers(size // 2, size * 2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 2)))
        path = folder / f"img{i:03d}.{'png' if i % 3 else 'jpg'}"
        cv2.imwrite(str(path), img)
        paths.append(path)
    for i in range(constant):
        path = folder / f"flat{i:02d}.png"
        cv2.imwrite(str(path), np.full((size, size, 3), 90, np.uint8))
        paths.append(path)
    return paths
