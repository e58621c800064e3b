"""One-channel (grayscale) networks: the file still takes RGB 0..255; the gray of the pixels
(0.299 R + 0.587 G + 0.114 B, in float) is folded in front of the model's own preprocessing, the
metadata says so, and the first-layer filters are drawn in gray. ONNX and Keras sources alike."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxviz
from onnxviz.errors import OnnxvizError
from onnxviz.model.info import load_info


def gray_onnx(path, layout="NCHW"):
    """x [N, 1, 12, 12] (or [N, 12, 12, 1]) -> Conv 5x5 -> Relu -> MaxPool -> Conv -> Relu."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 1, 5, 5)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, 6, 3, 3)).astype(np.float32), "w2")]
    nodes = []
    x = "x"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        x = "x_nchw"
    nodes += [helper.make_node("Conv", [x, "w1"], ["c1"], name="c1", pads=[2, 2, 2, 2]),
              helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
              helper.make_node("MaxPool", ["r1"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Conv", ["p1", "w2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c2"], ["r2"], name="r2")]
    shape = ["n", 1, 12, 12] if layout == "NCHW" else ["n", 12, 12, 1]
    graph = helper.make_graph(nodes, "gray", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["n", 4, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return model


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_a_one_channel_onnx_model_takes_rgb_and_sees_its_gray(tmp_path, layout):
    model = gray_onnx(tmp_path / "gray.onnx", layout)
    result = onnxviz.export(tmp_path / "gray.onnx", tmp_path / "out.onnx", scale="1/255", mean=0.5, std=0.5)
    info = load_info(result.path)
    assert info.preprocessing.gray and info.preprocessing.mode == "custom"
    assert "its one channel gets the gray of the RGB pixels first (0.299 R + 0.587 G + 0.114 B)" \
        in result.preprocessing_reason
    assert [layer.name for layer in info.layers] == ["r1", "p1", "r2"]
    # The file against onnx's own evaluator on the gray computed here, in float64.
    rgb = np.random.default_rng(1).integers(0, 256, (2, 12, 12, 3)).astype(np.float32)
    gray = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[..., None] / 255 * 2 - 1
    feed = gray.transpose(0, 3, 1, 2) if layout == "NCHW" else gray
    want = ReferenceEvaluator(model).run(None, {"x": feed.astype(np.float32)}, intermediate=True)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": rgb})))
    for name in ("r1", "p1", "r2"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4 * np.abs(want[name]).max())


def test_the_first_filters_of_a_one_channel_model_are_drawn_in_gray(tmp_path):
    from onnxviz.render.filters import load_filters

    gray_onnx(tmp_path / "gray.onnx")
    result = onnxviz.export(tmp_path / "gray.onnx", tmp_path / "out.onnx")
    filters = load_filters(result.path)
    assert filters.weights_shape == [6, 1, 5, 5]
    picture = filters.image
    assert picture.ndim == 3 and picture.shape[2] == 3
    assert np.array_equal(picture[..., 0], picture[..., 1]) and np.array_equal(picture[..., 1], picture[..., 2])


@pytest.mark.parametrize("options, message", [
    ({"bgr": True}, "takes one channel, computed as the gray of the RGB pixels: a BGR channel order does not apply "
                    "to it; leave out bgr"),
    ({"preprocess": "torchvision"}, "takes one channel: give one mean and one std, not one per colour (got mean "
                                    "[0.485, 0.456, 0.406], std [0.229, 0.224, 0.225], preset torchvision)"),
    ({"mean": [1, 2, 3]}, "takes one channel: give one mean and one std, not one per colour"),
])
def test_per_colour_preprocessing_is_refused_for_one_channel(tmp_path, options, message):
    gray_onnx(tmp_path / "gray.onnx")
    with pytest.raises(OnnxvizError) as err:
        onnxviz.export(tmp_path / "gray.onnx", tmp_path / "out" / "o.onnx", **options)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_one_channel_keras_model_exports_with_its_gray(tmp_path):
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, 1), name="face")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(3, activation="softmax", name="emotion")(x)
    model = keras.Model(inp, out)
    src = tmp_path / "gray.h5"
    model.save(src)
    result = onnxviz.export(str(src), tmp_path / "gray.onnx", preprocess="tf")
    info = result.info
    assert info.preprocessing.gray and info.preprocessing.mode == "tf" and result.max_relative < 1e-5
    rgb = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
    gray = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[..., None] / 127.5 - 1
    want = model.predict(gray.astype(np.float32), verbose=0)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = sess.run(["emotion"], {info.input_name: rgb})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(OnnxvizError, match="takes one channel, computed as the gray"):
        onnxviz.export(str(src), tmp_path / "caffe.onnx", preprocess="caffe")


@pytest.mark.parametrize("channels", [2, 4])
def test_a_keras_model_with_2_or_4_channels_is_refused_naming_the_count(tmp_path, channels):
    keras = pytest.importorskip("keras")
    inp = keras.Input((8, 8, channels))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, name="c")(inp))
    with pytest.raises(OnnxvizError, match=f"^the model input has {channels} channels; onnxviz takes RGB images "
                                           f"\\(3 channels, channels-last\\) and one-channel \\(grayscale\\) models$"):
        onnxviz.export(model, tmp_path / "o.onnx")
