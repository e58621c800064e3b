"""Keras export: every exposed output equals Keras' own activation for that layer."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import needs_tensorflow
from tiny_models import tiny_functional

pytestmark = needs_tensorflow


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def _run_onnx(path, images):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: images})))


def _images(n=2, size=32, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def _keras_layer(keras, model, name, x):
    sub = keras.Model(model.inputs, model.get_layer(name).output)
    out = np.asarray(sub.predict(x, verbose=0))
    return np.transpose(out, (0, 3, 1, 2)) if out.ndim == 4 else out


def test_every_output_of_a_functional_model_equals_keras(tmp_path, keras):
    from onnxviz.exporter.pipeline import ExportOptions, export as export_keras
    from onnxviz.model.info import load_info

    model = tiny_functional(keras)
    src = tmp_path / "tiny.keras"
    model.save(src)
    result = export_keras(str(src), tmp_path / "tiny.onnx", ExportOptions(preprocess="tf"))
    info = load_info(result.path)
    names = [layer.name for layer in info.layers]
    assert names == ["stem_conv", "stem_bn", "stem_relu", "branch_a", "branch_b", "concat",
                     "res_conv", "res_add", "pool", "predictions"]
    assert info.layer("stem_conv").shape == [None, 8, 32, 32] and info.layer("stem_conv").layout == "NCHW"
    assert info.layer("predictions").layout == "NC"
    assert info.prediction_output == "predictions" and info.prediction_is_probability
    assert info.preprocessing.mode == "tf"
    x = _images()
    got = _run_onnx(result.path, x)
    keras_x = x / 127.5 - 1.0  # Keras 'tf' preprocessing, applied by hand
    for name in names:
        want = _keras_layer(keras, model, name, keras_x)
        assert got[name].shape == want.shape, name
        span = want.max() - want.min()
        assert np.abs(got[name] - want).max() <= 1e-4 * span, name
    assert result.max_relative < 1e-4


def test_sequential_and_nested_models_are_flattened(tmp_path, keras):
    from onnxviz.exporter.pipeline import ExportOptions, export as export_keras
    from onnxviz.model.info import load_info

    keras.utils.set_random_seed(2)
    L = keras.layers
    base = keras.Sequential([keras.Input((24, 24, 3)), L.Conv2D(6, 3, activation="relu", name="inner_conv"),
                             L.MaxPooling2D(name="inner_pool")], name="base")
    inp = keras.Input((24, 24, 3))
    x = base(inp)
    x = L.Conv2D(4, 3, name="head_conv")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(3, name="logits")(x)
    model = keras.Model(inp, out)
    src = tmp_path / "transfer.h5"
    model.save(src)
    result = export_keras(str(src), tmp_path / "transfer.onnx", ExportOptions())
    info = load_info(result.path)
    assert [layer.name for layer in info.layers] == ["inner_conv", "inner_pool", "head_conv", "logits"]
    assert not info.prediction_is_probability
    x = _images(2, 24)
    got = _run_onnx(result.path, x)
    inner = np.asarray(keras.Model(base.inputs, base.get_layer("inner_conv").output).predict(x, verbose=0))
    np.testing.assert_allclose(got["inner_conv"], inner.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["logits"], model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_layer_globs_select_and_bad_glob_lists_layers(tmp_path, keras):
    from onnxviz.errors import LayerSelectionError
    from onnxviz.exporter.pipeline import ExportOptions, export as export_keras
    from onnxviz.model.info import load_info

    src = tmp_path / "tiny.keras"
    tiny_functional(keras).save(src)
    result = export_keras(str(src), tmp_path / "sel.onnx", ExportOptions(layers=["branch_*", "stem_*"], exclude=["*_bn"]))
    assert [layer.name for layer in load_info(result.path).layers] == ["stem_conv", "stem_relu", "branch_a", "branch_b"]
    with pytest.raises(LayerSelectionError, match=r"layers 'conv_9' matches no layer of the model; it has \d+: stem_conv"):
        export_keras(str(src), tmp_path / "bad.onnx", ExportOptions(layers=["conv_9"]))
    assert not (tmp_path / "bad.onnx").exists()


def test_real_mobilenet_imagenet_export_predicts_espresso(mobilenet_onnx, shared_data):
    """The real keras.applications path through the CLI, weights from a Keras cache copied
    from the shared data."""
    import cv2

    out, proc = mobilenet_onnx
    assert "outputs match Keras" in proc.stdout
    from onnxviz.model.info import load_info

    info = load_info(out)
    assert info.labels is not None and len(info.labels) == 1000 and info.labels[967] == "espresso"
    assert info.preprocessing.mode == "tf"
    assert {"conv1", "conv_pw_13_relu", "predictions"} <= {layer.name for layer in info.layers}
    bgr = cv2.imread(str(shared_data / "images" / "coffee.png"))
    rgb = cv2.resize(bgr[..., ::-1], (128, 128), interpolation=cv2.INTER_NEAREST_EXACT).astype(np.float32)
    probs = _run_onnx(out, rgb[None])[info.prediction_output][0]
    assert info.labels[int(np.argmax(probs))] == "espresso" and probs.max() > 0.9
    props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(props["onnxviz.keras"]) == {"application": "MobileNet", "kwargs": {"input_shape": [128, 128, 3], "alpha": 0.25}, "weights": "imagenet"}


def test_missing_weights_offline_says_which_file_and_where(tmp_path):
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "empty_home"), https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "onnxviz", "export", "mobilenet", "--alpha", "0.25", "--input-size", "128",
                           "-o", str(tmp_path / "m.onnx")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not download ImageNet weights for MobileNet from https://")
    assert str(tmp_path / "empty_home" / "models" / "mobilenet_2_5_128_tf.h5") in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_transfer_learning_model_with_an_application_inside(tmp_path, keras):
    """The usual transfer-learning shape: a keras.applications base nested in a new head."""
    from onnxviz.exporter.pipeline import ExportOptions, export as export_keras

    keras.utils.set_random_seed(3)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3), alpha=0.35)
    inp = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inp)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    src = tmp_path / "transfer.keras"
    model.save(src)
    result = export_keras(str(src), tmp_path / "transfer.onnx", ExportOptions(layers=["rescale", "Conv1", "block_16_project", "out_relu", "head"]))
    names = [layer.name for layer in result.info.layers]
    assert names == ["rescale", "Conv1", "block_16_project", "out_relu", "head"]
    x = _images(2, 64)
    got = _run_onnx(result.path, x)
    inner = keras.Model(base.inputs, base.get_layer("block_16_project").output)
    want = np.asarray(inner.predict(x / 127.5 - 1, verbose=0)).transpose(0, 3, 1, 2)
    assert np.abs(got["block_16_project"] - want).max() <= 1e-4 * (want.max() - want.min())
    np.testing.assert_allclose(got["head"], model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def _ort_ops(path, tmp_path):
    """Operator types left after ONNX Runtime's graph fusions (portable level)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / f"optimized-{path.stem}.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_skip_fused_leaves_out_the_tensors_ort_fuses_away(tmp_path, keras):
    from onnxviz.exporter.pipeline import ExportOptions, export as export_keras
    from onnxviz.model.info import load_info

    keras.utils.set_random_seed(4)
    L = keras.layers
    inp = keras.Input((28, 28, 3), name="image")
    x = L.ZeroPadding2D(1, name="stem_pad")(inp)
    x = L.Conv2D(8, 3, use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    y = L.Conv2D(8, 3, padding="same", name="side_conv")(x)  # read only by the Add: fused into it
    x = L.Add(name="add")([x, y])
    x = L.Conv2D(4, 1, name="mixed")(x)  # negative values: zero padding matters to the max
    x = L.ZeroPadding2D(1, name="pool_pad")(x)
    x = L.MaxPooling2D(3, 2, name="pool")(x)
    model = keras.Model(inp, x, name="fusable")
    bn = model.get_layer("stem_bn")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.3, 8), rng.normal(0, 0.2, 8), rng.uniform(0.5, 2, 8)])
    src = tmp_path / "fusable.keras"
    model.save(src)

    every = export_keras(str(src), tmp_path / "every.onnx", ExportOptions(preprocess="none"))
    lean = export_keras(str(src), tmp_path / "lean.onnx", ExportOptions(preprocess="none", skip_fused=True))
    assert [layer.name for layer in load_info(every.path).layers] == \
        ["stem_pad", "stem_conv", "stem_bn", "stem_relu", "side_conv", "add", "mixed", "pool_pad", "pool"]
    # pool_pad stays: ORT would fold it into the MaxPool as if MaxPool padded with zeros
    assert [layer.name for layer in load_info(lean.path).layers] == ["stem_relu", "add", "mixed", "pool_pad", "pool"]
    assert lean.max_relative < 1e-4  # export compared every remaining output with Keras

    # The point of it: ORT now folds the padding, batch norm and ReLU into the convolution.
    every_ops, lean_ops = _ort_ops(every.path, tmp_path), _ort_ops(lean.path, tmp_path)
    assert {"Pad", "BatchNormalization", "Relu"} & set(every_ops)
    assert lean_ops.count("Pad") == 1 and not {"BatchNormalization", "Relu", "Mul"} & set(lean_ops), lean_ops
    x = _images(2, 28)
    got, full = _run_onnx(lean.path, x), _run_onnx(every.path, x)
    for name in ("stem_relu", "add", "pool"):  # fused: float32 rounding only
        assert full["mixed"].min() < 0  # so the check below would see a wrong fold
        assert np.abs(got[name] - full[name]).max() <= 1e-5 * np.abs(full[name]).max(), name


def test_skip_fused_keeps_layers_named_with_layers(tmp_path, keras):
    from onnxviz.exporter.pipeline import ExportOptions, export as export_keras
    from onnxviz.model.info import load_info

    src = tmp_path / "tiny.keras"
    tiny_functional(keras).save(src)
    result = export_keras(str(src), tmp_path / "tiny.onnx",
                          ExportOptions(preprocess="tf", skip_fused=True, layers=["stem_*"]))
    assert [layer.name for layer in load_info(result.path).layers] == ["stem_conv", "stem_bn", "stem_relu"]
