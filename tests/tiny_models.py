"""Tiny models that several test folders share, built here with fixed seeds."""
from __future__ import annotations

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxviz.model.info import KERAS_MODES, LayerInfo, ModelInfo, write_info

SIZE = 16
RNG = np.random.default_rng(7)
W = RNG.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float32)
B = RNG.normal(0, 0.1, 6).astype(np.float32)
FC = RNG.normal(0, 0.5, (6, 4)).astype(np.float32)


def tiny_model() -> onnx.ModelProto:
    """NHWC RGB 0..255 -> /255 -> Conv(6) -> Relu -> MaxPool -> GlobalAveragePool -> Dense(4) -> Softmax."""
    nodes = [
        helper.make_node("Mul", ["image", "k"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "W", "B"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "FC"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["predictions"], axis=-1),
    ]
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "k"), numpy_helper.from_array(W, "W"),
             numpy_helper.from_array(B, "B"), numpy_helper.from_array(FC, "FC")]
    outs = [helper.make_tensor_value_info("conv", TensorProto.FLOAT, ["N", 6, SIZE, SIZE]),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", 6, SIZE, SIZE]),
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["N", 6, SIZE // 2, SIZE // 2]),
            helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["N", 4])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    info = ModelInfo(
        input_name="image", height=SIZE, width=SIZE,
        layers=[LayerInfo("conv", "Conv2D", [None, 6, SIZE, SIZE], "NCHW"),
                LayerInfo("relu", "ReLU", [None, 6, SIZE, SIZE], "NCHW"),
                LayerInfo("pool", "MaxPooling2D", [None, 6, SIZE // 2, SIZE // 2], "NCHW"),
                LayerInfo("predictions", "Dense", [None, 4], "NC")],
        preprocessing=KERAS_MODES["none"], source="tiny", version="test",
        prediction_output="predictions", labels=["apple", "bean", "cherry", "date"],
    )
    write_info(model, info)
    return model


def numpy_conv(rgb: np.ndarray) -> np.ndarray:
    """The tiny model's conv output for one HxWx3 image, computed independently."""
    x = np.pad(rgb.astype(np.float64) / 255, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((6, SIZE, SIZE))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("hwc,oc->ohw", x[dy:dy + SIZE, dx:dx + SIZE], W[:, :, dy, dx])
    return out + B[:, None, None]


def write_image(path, seed=0, size=SIZE):
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return img[..., ::-1]  # RGB


def tiny_functional(keras):
    """A small functional Keras model: stem conv + BN + ReLU, two branches, a residual add, pool, dense."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem_conv")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    a = L.Conv2D(4, 1, activation="relu", name="branch_a")(x)
    b = L.Conv2D(4, 3, padding="same", activation="relu", name="branch_b")(x)
    x = L.Concatenate(name="concat")([a, b])
    y = L.Conv2D(8, 3, padding="same", name="res_conv")(x)
    x = L.Add(name="res_add")([x, y])
    x = L.MaxPooling2D(name="pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out, name="tiny")
    # Non-trivial batch-norm statistics, so a wrong fold would show.
    bn = model.get_layer("stem_bn")
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.3, 8), rng.normal(0, 0.2, 8), rng.uniform(0.5, 2, 8)])
    return model


def tiny_onnx(path):
    """x [1, 3, 8, 8] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> scores [1, 4]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["scores"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return model


def tiny_classifier(head: str = "gap", size: int = 8) -> onnx.ModelProto:
    """NHWC RGB 0..255 -> /255 -> Conv(4, no bias) "conv" -> Relu "relu" -> a head -> Softmax "predictions"
    (5 classes). Heads: "gap" (GlobalAveragePool, Flatten, Gemm with bias: the CAM head), "pool"
    (MaxPool 2x2, Flatten, Gemm, Relu, MatMul), "sigmoid" (GlobalAveragePool, Flatten, Sigmoid, Gemm)."""
    rng = np.random.default_rng(11)
    k = size // 2 * size // 2 * 4 if head == "pool" else 4
    inits = {"s": np.array(1 / 255, np.float32), "W": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
             "FC": rng.normal(0, 1, (k, 6 if head == "pool" else 5)).astype(np.float32),
             "FB": rng.normal(0, 0.1, 6 if head == "pool" else 5).astype(np.float32),
             "FC2": rng.normal(0, 1, (6, 5)).astype(np.float32)}
    nodes = [helper.make_node("Mul", ["image", "s"], ["scaled"]),
             helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "W"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"])]
    if head == "pool":
        nodes += [helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Flatten", ["pool"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "FC", "FB"], ["fc"]), helper.make_node("Relu", ["fc"], ["fc_relu"]),
                  helper.make_node("MatMul", ["fc_relu", "FC2"], ["logits"])]
    else:
        nodes += [helper.make_node("GlobalAveragePool", ["relu"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"])]
        if head == "sigmoid":
            nodes += [helper.make_node("Sigmoid", ["flat"], ["squashed"])]
        nodes += [helper.make_node("Gemm", ["squashed" if head == "sigmoid" else "flat", "FC", "FB"], ["logits"])]
    nodes.append(helper.make_node("Softmax", ["logits"], ["predictions"], axis=-1))
    outs = [helper.make_tensor_value_info("conv", TensorProto.FLOAT, ["N", 4, size, size]),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", 4, size, size]),
            helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["N", 5])]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])], outs,
                              [numpy_helper.from_array(v, name) for name, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    info = ModelInfo(input_name="image", height=size, width=size,
                     layers=[LayerInfo("conv", "Conv2D", [None, 4, size, size], "NCHW"),
                             LayerInfo("relu", "ReLU", [None, 4, size, size], "NCHW"),
                             LayerInfo("predictions", "Dense", [None, 5], "NC")],
                     preprocessing=KERAS_MODES["none"], source="classifier", version="test",
                     prediction_output="predictions", labels=["ant", "bee", "cat", "dog", "eel"])
    write_info(model, info)
    return model


def tiny_vgg(keras):
    """A VGG-style Keras model: two conv blocks with max pooling, Flatten, Dense + ReLU, Dropout, Dense."""
    keras.utils.set_random_seed(2)
    L = keras.layers
    inp = keras.Input((24, 24, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="block1_conv")(inp)
    x = L.MaxPooling2D(name="block1_pool")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="block2_conv")(x)
    x = L.MaxPooling2D(name="block2_pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(16, activation="relu", name="fc1")(x)
    x = L.Dropout(0.5, name="drop")(x)
    out = L.Dense(7, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="tiny_vgg")
