from __future__ import annotations

import onnx
import pytest

from onnxviz.errors import ModelError
from onnxviz.metadata import KERAS_MODES, LayerInfo, ModelInfo, load_info, read_info, write_info


def info() -> ModelInfo:
    return ModelInfo("image", 224, 224, [LayerInfo("block1_conv1", "Conv2D", [None, 64, 224, 224], "NCHW"),
                                         LayerInfo("predictions", "Dense", [None, 1000], "NC")],
                     KERAS_MODES["caffe"], "keras.applications.VGG16", "0.1.0", "predictions", True,
                     ["tench"] * 1000, {"application": "VGG16", "kwargs": {}, "weights": "imagenet"})


def test_round_trip_through_metadata_props_keeps_other_entries():
    model = onnx.ModelProto()
    entry = model.metadata_props.add()
    entry.key, entry.value = "author", "someone"
    write_info(model, info())
    write_info(model, info())  # rewriting replaces, never duplicates
    assert read_info(model) == info()
    keys = [p.key for p in model.metadata_props]
    assert keys.count("onnxviz.layer.000") == 1 and keys.count("onnxviz.layer.001") == 1 and "author" in keys
    assert [layer.name for layer in read_info(model).feature_maps] == ["block1_conv1"]
    assert read_info(model).layer("predictions").channels == 1000


def test_keras_modes_match_keras_preprocess_input_formulas():
    import numpy as np

    x = np.array([[[[0.0, 127.5, 255.0]]]])
    caffe = KERAS_MODES["caffe"]
    y = (x[..., ::-1] * caffe.scale - np.array(caffe.mean)) / np.array(caffe.std)
    np.testing.assert_allclose(y[0, 0, 0], [255 - 103.939, 127.5 - 116.779, 0 - 123.68])
    tf = KERAS_MODES["tf"]
    np.testing.assert_allclose((x * tf.scale - tf.mean[0]) / tf.std[0], [[[[-1.0, 0.0, 1.0]]]])
    assert KERAS_MODES["none"].is_identity and not caffe.is_identity


def test_files_without_onnxviz_metadata_and_damaged_metadata(tmp_path):
    with pytest.raises(ModelError, match="was not written by 'onnxviz export'.*onnxviz export x.onnx -o NEW.onnx"):
        read_info(onnx.ModelProto(), "x.onnx")
    model = onnx.ModelProto()
    write_info(model, info())
    for p in model.metadata_props:
        if p.key == "onnxviz.layer.001":
            p.value = "{broken"
    with pytest.raises(ModelError, match="has damaged onnxviz metadata"):
        read_info(model, "y.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        load_info(tmp_path / "none.onnx")
    (tmp_path / "text.onnx").write_text("plain text, not protobuf")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        load_info(tmp_path / "text.onnx")
