"""model/selection: choosing layers of a file by glob, the one entry for render, atlas and the API."""
from __future__ import annotations

import pytest

from onnxviz.errors import LayerSelectionError
from onnxviz.model.info import LayerInfo, ModelInfo, Preprocessing
from onnxviz.model.selection import select_layers


def info(*layers: LayerInfo) -> ModelInfo:
    return ModelInfo("image", 8, 8, list(layers), Preprocessing(), "test", "0.1.0")


MAPS = info(LayerInfo("conv1", "Conv2D", [None, 4, 8, 8], "NCHW"), LayerInfo("conv2", "Conv2D", [None, 4, 4, 4], "NCHW"),
            LayerInfo("scores", "Dense", [None, 10], "NC"))


def test_maps_by_default_every_output_when_asked_in_network_order():
    assert [layer.name for layer in select_layers(MAPS, [], "m.onnx")] == ["conv1", "conv2"]
    assert [layer.name for layer in select_layers(MAPS, ["conv2", "conv*"], "m.onnx")] == ["conv1", "conv2"]
    assert [layer.name for layer in select_layers(MAPS, ["s*"], "'m.onnx'", every_output=True)] == ["scores"]
    with pytest.raises(LayerSelectionError) as err:
        select_layers(MAPS, ["s*"], "m.onnx")  # the vector is not a map
    assert str(err.value) == ("layers 's*' matches no layer of m.onnx; it has 2: conv1, conv2. "
                              "Run 'onnxviz layers m.onnx'")
    with pytest.raises(LayerSelectionError) as err:
        select_layers(MAPS, ["x{a}"], "'m.onnx'", every_output=True, hint=". See model.layers")
    assert str(err.value) == "layers 'x{a}' matches no layer of 'm.onnx'; it has 3: conv1, conv2, scores. See model.layers"
    assert err.value.spoken(lambda p: "--" + p).startswith("--layers 'x{a}' matches")


def test_a_file_without_maps_names_the_parameter_that_exposes_them():
    vectors = info(LayerInfo("scores", "Dense", [None, 10], "NC"))
    with pytest.raises(LayerSelectionError) as err:
        select_layers(vectors, [], "v.onnx")
    assert str(err.value) == "'v.onnx' exposes no 4-D feature maps; export it again with layers"
    assert err.value.spoken(lambda p: "--" + p) == "'v.onnx' exposes no 4-D feature maps; export it again with --layers"
