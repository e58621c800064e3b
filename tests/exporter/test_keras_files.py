"""Keras files as people have them: Keras 2 era .h5 files, custom layers, applications inside."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import needs_tensorflow

pytestmark = needs_tensorflow
needs_tf_keras = pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None,
                                    reason="tf_keras (Keras 2) is not installed: pip install 'onnxviz[export]'")


def _keras2(script: str, tmp_path):
    """Run `script` with Keras 2 (tf_keras) in its own process, as a Keras 2 user saving a file would."""
    code = "import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\nimport numpy as np\nimport tf_keras as k2\n"
    done = subprocess.run([sys.executable, "-c", code + textwrap.dedent(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@needs_tf_keras
def test_a_keras2_sequential_nesting_a_depthwise_model_exports_and_matches_keras2(tmp_path):
    # The shape of a Teachable Machine file: Sequential[Sequential[Functional base with
    # DepthwiseConv2D, pooling], Sequential[Dense, Dense]], saved by Keras 2.
    _keras2("""
        k2.utils.set_random_seed(0)
        inp = k2.Input((24, 24, 3), name="input_1")
        x = k2.layers.Conv2D(6, 3, strides=2, name="Conv1")(inp)
        x = k2.layers.BatchNormalization(name="bn_Conv1")(x)
        x = k2.layers.ReLU(name="Conv1_relu")(x)
        y = k2.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
        y = k2.layers.ReLU(6.0, name="dw_relu")(y)
        x = k2.layers.Add(name="add")([x, y])
        base = k2.Model(inp, x, name="model1")
        bn = base.get_layer("bn_Conv1")
        rng = np.random.default_rng(0)
        bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, .3, 6), rng.normal(0, .2, 6), rng.uniform(.5, 2, 6)])
        body = k2.Sequential([base, k2.layers.GlobalAveragePooling2D(name="gap")], name="sequential_1")
        head = k2.Sequential([k2.layers.Dense(5, activation="relu", input_shape=(6,), name="dense_Dense1"),
                              k2.layers.Dense(3, activation="softmax", name="dense_Dense2")], name="sequential_3")
        model = k2.Sequential([body, head], name="sequential_4")
        model.save("keras_model.h5")
        x = np.random.default_rng(1).uniform(0, 255, (2, 24, 24, 3)).astype("float32")
        np.save("x.npy", x)
        np.save("head.npy", model.predict(x / 127.5 - 1, verbose=0))
        inner = k2.Model(base.inputs, base.get_layer("dw_relu").output)
        np.save("dw_relu.npy", inner.predict(x / 127.5 - 1, verbose=0))
    """, tmp_path)
    from onnxviz.exporter.pipeline import ExportOptions, export

    import onnxruntime as ort

    result = export(str(tmp_path / "keras_model.h5"), tmp_path / "tm.onnx", ExportOptions(preprocess="tf"))
    names = [layer.name for layer in result.info.layers]
    assert names == ["Conv1", "bn_Conv1", "Conv1_relu", "dw", "dw_relu", "add", "dense_Dense2"]  # 4-D maps, output
    assert any("saved by Keras 2" in note and "dropped Keras 2's groups=1" in note for note in result.notes)
    assert not any("tf_keras is not installed" in note for note in result.notes)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.load(tmp_path / "x.npy")
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    want = np.load(tmp_path / "dw_relu.npy").transpose(0, 3, 1, 2)  # computed by Keras 2 itself
    assert np.abs(got["dw_relu"] - want).max() <= 1e-4 * (want.max() - want.min())
    np.testing.assert_allclose(got["dense_Dense2"], np.load(tmp_path / "head.npy"), rtol=1e-4, atol=1e-6)


@needs_tf_keras
def test_a_keras2_file_with_custom_layers_names_them(tmp_path):
    _keras2("""
        class Doubler(k2.layers.Layer):
            def call(self, x):
                return 2 * x
        model = k2.Sequential([k2.layers.Conv2D(2, 3, input_shape=(8, 8, 3)), Doubler(name="twice")])
        model.save("custom.h5")
    """, tmp_path)
    from onnxviz.errors import ModelError
    from onnxviz.exporter.pipeline import export

    with pytest.raises(ModelError, match=r"custom.h5' uses layers Keras does not know: Doubler; they are custom "
                                         r"layers of the code that saved it"):
        export(str(tmp_path / "custom.h5"), tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()


def test_a_file_keras_cannot_load_keeps_the_cause_whole(tmp_path):
    import h5py

    from onnxviz.errors import ModelError
    from onnxviz.exporter.pipeline import export

    with h5py.File(tmp_path / "weights_only.h5", "w") as f:
        f.create_dataset("w", data=np.zeros(3))
    with pytest.raises(ModelError) as err:
        export(str(tmp_path / "weights_only.h5"), tmp_path / "w.onnx")
    assert "weights only (no model config)" in str(err.value) or "Try: pip install tf_keras" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_saved_application_gets_its_preprocessing_and_says_why(tmp_path):
    import keras

    from onnxviz.exporter.pipeline import export

    keras.utils.set_random_seed(5)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    model = keras.Model(base.input, keras.layers.Dense(2, name="head")(x))
    model.save(tmp_path / "finetuned.keras")
    result = export(str(tmp_path / "finetuned.keras"), tmp_path / "f.onnx")
    assert result.info.preprocessing.mode == "tf"
    assert result.preprocessing_reason.startswith("'tf': the model has the architecture of keras.applications."
                                                  "MobileNetV2 (layers ")
    # nested as the base of a transfer-learning model, behind its own Rescaling: nothing is added twice
    inp = keras.Input((32, 32, 3))
    y = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inp)
    y = keras.layers.GlobalAveragePooling2D()(base(y))
    wrapped = keras.Model(inp, keras.layers.Dense(2)(y))
    result = export(wrapped, tmp_path / "w.onnx")
    assert result.info.preprocessing.mode == "none"
    assert "scales pixels itself first, in layer 'rescale' (Rescaling)" in result.preprocessing_reason
