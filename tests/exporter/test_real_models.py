"""Real trained models from public packages (tests/exporter/real_models/README.md), exported with the
preprocessing their packages use, every map compared on a photo with the source run on its own:
Keras 2 (tf_keras) on the `.h5`, TensorFlow's TFLite interpreter on the `.tflite`, ONNX Runtime on
the original ONNX file."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import onnxviz
from onnxviz.run.images import load_image, resize_image

HERE = Path(__file__).parent / "real_models"
DATA = Path(os.environ.get("ONNXVIZ_TEST_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
PHOTO = DATA / "images" / "astronaut.png"
needs_photo = pytest.mark.skipif(not PHOTO.is_file(), reason=f"the test photos are not at {PHOTO.parent} "
                                                              f"(set ONNXVIZ_TEST_DATA to the shared data folder)")


def photo(info) -> np.ndarray:
    return resize_image(load_image(PHOTO), info.height, info.width, info.resize or "stretch")[None].astype(np.float32)


def exported_maps(result, rgb):
    names = [layer.name for layer in result.info.layers]
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {result.info.input_name: rgb})))


def worst(got, want):
    """The largest difference over any map, relative to that map's range in the source."""
    out = 0.0
    for name, ref in want.items():
        ref = ref.transpose(0, 3, 1, 2) if ref.ndim == 4 and ref.shape[1:] != got[name].shape[1:] else ref
        out = max(out, float(np.abs(got[name] - ref).max()) / (float(ref.max() - ref.min()) or 1.0))
    return out


@needs_photo
def test_the_grayscale_keras2_emotion_model(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    result = onnxviz.export(str(HERE / "emotion_model.hdf5"), tmp_path / "emotion.onnx", preprocess="tf")
    assert result.info.preprocessing.gray and (result.info.height, result.info.width) == (64, 64)
    assert len(result.info.feature_maps) == 43
    rgb = photo(result.info)
    gray = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]).reshape(3, 1)) / 127.5 - 1
    model = tf_keras.models.load_model(HERE / "emotion_model.hdf5", compile=False)
    names = [layer.name for layer in result.info.layers]
    values = tf_keras.Model(model.inputs, [model.get_layer(n).output for n in names]).predict(
        gray.astype(np.float32), verbose=0)
    assert worst(exported_maps(result, rgb), dict(zip(names, values))) < 1e-5


@needs_photo
def test_the_int8_weight_tflite_emotion_model(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = HERE / "emotion_model_quantized.tflite"
    result = onnxviz.export(path, tmp_path / "emotion_tflite.onnx", scale="1/127.5", mean=1)
    assert result.info.preprocessing.gray and len(result.info.feature_maps) == 31
    rgb = photo(result.info)
    gray = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]).reshape(3, 1)) / 127.5 - 1
    runs = {}
    for kind in ("AUTO", "BUILTIN_REF"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                              experimental_op_resolver_type=getattr(
                                                  tf.lite.experimental.OpResolverType, kind))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], gray.astype(np.float32))
        interpreter.invoke()
        runs[kind] = {t["name"]: interpreter.get_tensor(t["index"]).astype(np.float64)
                      for t in interpreter.get_tensor_details()}
    names = [layer.name for layer in result.info.layers]
    got = exported_maps(result, rgb)
    # TFLite's hybrid kernels (int8 weights, activations quantized on the fly) differ from its own
    # reference kernels; the file lies within that.
    own = worst({n: runs["BUILTIN_REF"][n].transpose(0, 3, 1, 2) if runs["BUILTIN_REF"][n].ndim == 4
                 else runs["BUILTIN_REF"][n] for n in names}, {n: runs["AUTO"][n] for n in names})
    assert own > 1e-3
    assert worst(got, {n: runs["AUTO"][n] for n in names}) < 2 * own


@needs_photo
def test_the_paddleocr_direction_classifier_at_48x192(tmp_path):
    src = HERE / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    result = onnxviz.export(src, tmp_path / "cls.onnx", input_size="48x192", scale="1/255", mean=0.5, std=0.5,
                            bgr=True)
    assert (result.info.height, result.info.width) == (48, 192) and len(result.info.feature_maps) == 61
    rgb = photo(result.info)
    x = ((rgb[..., ::-1].astype(np.float64) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32)
    names = [layer.name for layer in result.info.layers]
    model = onnx.load(str(src))
    del model.graph.output[:]
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    want = dict(zip(names, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                    .run(names, {"x": x})))
    assert worst(exported_maps(result, rgb), want) < 1e-4
