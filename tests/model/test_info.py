from __future__ import annotations

import onnx
import pytest

from onnxviz.errors import ModelError, NotOnnxvizFile
from onnxviz.model.info import KERAS_MODES, LayerInfo, ModelInfo, load_info, read_info, write_info


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
    with pytest.raises(NotOnnxvizFile):
        read_info(onnx.ModelProto(), "x.onnx")
    model = onnx.ModelProto()
    write_info(model, info())
    for p in model.metadata_props:
        if p.key == "onnxviz.layer.001":
            p.value = "{broken"
    with pytest.raises(ModelError, match="has damaged onnxviz metadata"):
        read_info(model, "y.onnx")
    try:
        read_info(model, "y.onnx")
    except ModelError as exc:
        assert not isinstance(exc, NotOnnxvizFile)  # an onnxviz file, damaged: not a plain ONNX file
    with pytest.raises(ModelError, match="does not exist"):
        load_info(tmp_path / "none.onnx")
    (tmp_path / "text.onnx").write_text("plain text, not protobuf")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        load_info(tmp_path / "text.onnx")


def test_files_written_with_one_layers_list_are_still_read():
    import json

    old = info().to_props()
    layers = [{"name": layer.name, "op": layer.op, "shape": layer.shape, "layout": layer.layout} for layer in info().layers]
    for key in [k for k in old if k.startswith("onnxviz.layer.")]:
        del old[key]
    old["onnxviz.layers"] = json.dumps(layers)
    old["onnxviz.labels"] = json.dumps(["tench"] * 1000)
    assert ModelInfo.from_props(old) == info()


def test_values_are_short_and_portable_for_netron(tmp_path):
    """Netron cuts metadata values off after 1000 characters: one entry per layer keeps each short,
    and the source is the file's name, not the exporting machine's path."""
    from pathlib import Path

    from onnxviz.api import export as export_onnx

    src = Path(__file__).resolve().parents[1] / "torch_models" / "densenet_dynamo_opset18.onnx"
    out = tmp_path / "d.onnx"
    export_onnx(src.resolve(), out, preprocess="torchvision",
                layers=["features.*"])
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["onnxviz.source"] == "densenet_dynamo_opset18.onnx"
    assert max(len(v) for v in props.values()) < 300
    assert props["onnxviz.resize"] == '{"mode":"shorter","size":27,"crop":"center"}'
    layer = next(v for k, v in props.items() if k.startswith("onnxviz.layer.") and "norm2" in v)
    assert layer == ('{"name":"features.denseblock1.denselayer1.norm2","class":"BatchNorm2d",'
                     '"folded":["features.denseblock1.denselayer1.conv1"],"op":"Conv","shape":[null,16,6,6],"layout":"NCHW"}')
    assert not any(str(tmp_path) in v or "/work/" in v for v in props.values())
