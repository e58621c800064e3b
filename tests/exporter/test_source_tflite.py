"""onnxviz.exporter.sources.tflite: `.tflite` files (float, int8-quantized, one-channel) built here with
TensorFlow's converter, exported through tf2onnx, every map checked by the test against TensorFlow's
TFLite interpreter on its own; custom operators and files that are not TFLite refused."""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import onnxviz
from onnxviz.cli import app
from onnxviz.errors import OnnxvizError

runner = CliRunner()
# TensorFlow is imported by the tests that use it, not when the module is collected: other tests
# check that what they run never imports it.
needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="TensorFlow is not installed (pip install 'onnxviz[export]')")
pytestmark = needs_tensorflow


def _tf():
    import tensorflow as tf

    return tf


def _keras_model(channels: int):
    import keras

    inp = keras.Input((16, 16, channels))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="probs")(x))


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    """float.tflite, int8.tflite (full integer, float input and output), gray.tflite (one channel)."""
    folder = tmp_path_factory.mktemp("tflite")
    tf = _tf()
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    files = {}
    for name, channels, quantize in (("float", 3, False), ("int8", 3, True), ("gray", 1, False)):
        converter = tf.lite.TFLiteConverter.from_keras_model(_keras_model(channels))
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            rng = np.random.default_rng(0)
            converter.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)]
                                                        for _ in range(16))
        files[name] = folder / f"{name}.tflite"
        files[name].write_bytes(converter.convert())
    return files


def interpreter_values(path, x):
    """Every op output of the TFLite model for NHWC input `x` (one image), dequantized, by name."""
    tf = _tf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.astype(np.float32))
    interpreter.invoke()
    out = {}
    for t in interpreter.get_tensor_details():
        value = interpreter.get_tensor(t["index"])
        scale, zero = t["quantization"]
        out[t["name"]] = (value.astype(np.float64) - zero) * scale if scale else value.astype(np.float64)
        out[t["name"] + "/step"] = scale
    return out


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_every_map_is_the_tflite_tensor_it_is_named_after(tmp_path, tflite_files, kind):
    result = onnxviz.export(tflite_files[kind], tmp_path / f"{kind}.onnx", scale="1/127.5", mean=1)
    info = result.info
    names = [layer.name for layer in info.layers]
    conv1 = next(n for n in names if "conv1" in n)
    assert conv1.startswith("functional") and "Relu" in conv1  # TFLite's name for conv1 with its fused ReLU
    assert info.layer(conv1).cls == "CONV_2D" and len(info.feature_maps) == 3
    assert result.reference == "TensorFlow's TFLite interpreter"
    rgb = np.random.default_rng(5).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = dict(zip(names, sess.run(names, {info.input_name: rgb})))
    for i in range(2):
        want = interpreter_values(tflite_files[kind], rgb[i:i + 1] / 127.5 - 1)
        for layer in info.layers:
            ref = want[layer.name]
            ref = ref.transpose(0, 3, 1, 2) if ref.ndim == 4 else ref
            step = want[layer.name + "/step"]
            # int8: one quantization step where ONNX Runtime and TFLite round differently
            atol = 1.01 * step if kind == "int8" else 1e-5 * max(1.0, float(np.abs(ref).max()))
            np.testing.assert_allclose(got[layer.name][i:i + 1], ref, rtol=0, atol=atol, err_msg=layer.name)
    assert got[conv1].min() >= 0  # the ReLU's output, not the convolution's before it


def test_a_one_channel_tflite_model_takes_rgb_and_sees_its_gray(tmp_path, tflite_files):
    result = onnxviz.export(tflite_files["gray"], tmp_path / "gray.onnx", scale="1/255")
    assert result.info.preprocessing.gray and result.max_relative < 1e-5
    rgb = np.random.default_rng(6).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    gray = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[..., None] / 255
    want = interpreter_values(tflite_files["gray"], gray)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    name = result.info.feature_maps[0].name
    np.testing.assert_allclose(sess.run([name], {result.info.input_name: rgb})[0],
                               want[name].transpose(0, 3, 1, 2), atol=1e-5)


def test_tflite_takes_the_pixel_options_and_refuses_the_keras_ones(tmp_path, tflite_files):
    result = runner.invoke(app, ["export", str(tflite_files["float"]), "--weights", "none", "-o",
                                 str(tmp_path / "o.onnx")])
    assert result.exit_code == 1 and result.stderr.strip().startswith(
        "error: --weights does not apply to a TFLite model; a TFLite model takes --bgr, --exclude, --external-data, "
        "--input-size, --labels, --layers, --mean, --op-types, --preprocess, --resize, --scale, --std, --tolerance")
    fixed = runner.invoke(app, ["export", str(tflite_files["float"]), "--input-size", "32", "-o",
                                str(tmp_path / "o.onnx")])
    assert fixed.exit_code == 1 and "does not fit it (it takes 16x16 only)" in fixed.stderr


def test_a_file_that_is_not_tflite_is_refused_and_nothing_written(tmp_path):
    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"PK\x03\x04 not a flatbuffer at all")
    result = runner.invoke(app, ["export", str(fake), "-o", str(tmp_path / "out" / "m.onnx")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: '{fake}' is not a TFLite model: it lacks the TFL3 identifier every .tflite file has (a truncated "
        f"file, or another kind of file); give a .tflite file written by the TensorFlow Lite converter")
    assert not (tmp_path / "out").exists()


def test_custom_operators_are_refused_with_their_names(tmp_path):
    tf = _tf()

    @tf.autograph.experimental.do_not_convert
    def forward(x):
        return tf.math.erfinv(tf.tanh(tf.nn.relu(x)) * 0.5)

    fn = tf.function(forward, input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)], autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.allow_custom_ops = True
    path = tmp_path / "custom.tflite"
    path.write_bytes(converter.convert())
    with pytest.raises(OnnxvizError, match=r"^'.*custom.tflite' uses operators tf2onnx's TFLite converter does not "
                                           r"know: Erfinv \(custom or newer operators\); onnxviz exports TFLite models "
                                           r"of built-in operators$"):
        onnxviz.export(path, tmp_path / "out" / "c.onnx")
    assert not (tmp_path / "out").exists()
