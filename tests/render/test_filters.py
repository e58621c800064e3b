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


def _both_ways(path, monkeypatch):
    """(wire-format reader's filters, onnx's filters) of `path`."""
    from onnxviz.render import filters

    light = filters._scanned_filters(path)
    assert light is not filters._UNSURE, f"{path.name}: the wire-format reader gave up"
    with monkeypatch.context() as m:
        m.setattr(filters, "_scanned_filters", lambda _path: filters._UNSURE)
        full = filters.load_filters(path)
    return light, full


def test_the_wire_format_reader_finds_what_onnx_finds(tmp_path, monkeypatch):
    from pathlib import Path

    from onnxviz.model.modelfile import save_model
    from onnxviz.render.demo import MODEL
    from tiny_models import tiny_model

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    onnx.save(keras_like(w), tmp_path / "keras_like.onnx")
    onnx.save(tiny_model(), tmp_path / "tiny.onnx")
    pair = tmp_path / "pair" / "demo.onnx"
    save_model(onnx.load(str(MODEL)), pair, external=True)
    torch_models = sorted((Path(__file__).parents[1] / "torch_models").glob("*.onnx"))
    assert len(torch_models) == 12
    for path in [tmp_path / "keras_like.onnx", tmp_path / "tiny.onnx", MODEL, pair, *torch_models]:
        light, full = _both_ways(path, monkeypatch)
        assert (light.layer, light.weights_shape, light.channel_order) == \
            (full.layer, full.weights_shape, full.channel_order), path.name
        assert np.array_equal(light.image, full.image), path.name
    assert _both_ways(MODEL, monkeypatch)[0].layer == "conv1"


def test_a_weight_made_by_a_node_is_left_to_onnx(tmp_path):
    from onnxviz.render import filters

    w = np.ones((4, 3, 3, 3), np.float32)
    model = keras_like(w)
    model.graph.initializer[0].name = "W_f16"
    model.graph.node.insert(0, helper.make_node("Identity", ["W_f16"], ["W"]))
    onnx.save(model, tmp_path / "m.onnx")
    assert filters._scanned_filters(tmp_path / "m.onnx") is filters._UNSURE
    assert load_filters(tmp_path / "m.onnx").weights_shape == [4, 3, 3, 3]


def test_render_layers_and_load_never_import_onnx(tmp_path):
    import subprocess
    import sys

    from onnxviz.render.demo import MODEL, PHOTO

    # --no-cam: the class activation maps add their gradient to the graph with onnx; the rest of render
    # (the factorized parts included) reads the file's wire format
    code = (f"import sys\nfrom pathlib import Path\nimport onnxviz\nfrom onnxviz.cli import app\n"
            f"from typer.testing import CliRunner\nr = CliRunner()\n"
            f"assert r.invoke(app, ['render', '{MODEL}', '{PHOTO}', '-o', '{tmp_path / 'out'}', '--no-cam']).exit_code == 0\n"
            f"assert r.invoke(app, ['layers', '{MODEL}']).exit_code == 0\n"
            f"m = onnxviz.load('{MODEL}')\nm.layers\nm.predict('{PHOTO}')\n"
            f"print(sorted(n for n in sys.modules if n == 'onnx' or n.startswith(('onnx.', 'ml_dtypes'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
    assert (tmp_path / "out" / "coffee" / "filters.png").is_file()


def test_pictures_for_people_are_at_least_512_pixels_pixel_for_pixel(tmp_path):
    import cv2

    from onnxviz.picture.drawing import enlarged
    from onnxviz.render.demo import MODEL, PHOTO
    from onnxviz.render.filters import write_filters
    from onnxviz.render.options import RenderOptions
    from onnxviz.render.pipeline import render

    filters = write_filters(MODEL, tmp_path / "f.png", "png")
    written = cv2.imread(str(tmp_path / "f.png"))
    assert max(filters.image.shape[:2]) < 100 and max(written.shape[:2]) >= 512  # was 74 px
    factor = written.shape[0] // filters.image.shape[0]
    np.testing.assert_array_equal(written[::factor, ::factor], filters.image)  # nearest neighbour: no new values
    render(MODEL, [PHOTO], tmp_path / "out", RenderOptions(grids=True, fmt="png", layers=["conv_pw_13_relu"]))
    grid = cv2.imread(str(next((tmp_path / "out" / "coffee" / "grids").glob("*.png"))))
    assert max(grid.shape[:2]) >= 512  # was 197 px for MobileNet 0.25's 4 x 4 maps
    big = np.zeros((600, 300, 3), np.uint8)
    assert enlarged(big) is big
