"""Export's check against the source: it fails on real errors (a preprocessing folded wrongly) and
passes what is only rounding made large by a steep function (a saturating sigmoid), because each
output is allowed what the source's own output moves under rounding-level changes of its input."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz
from onnxviz.errors import ValidationError
from onnxviz.model import graph as graph_module

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def conv_model(path, weight_scale=0.5, then="Relu"):
    """x [N, 3, 16, 16] -> Conv 3x3 (zero padding 1) -> `then`."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.normal(size=(4, 3, 3, 3)) * weight_scale).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(then, ["conv"], ["act"], name="act")]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("act", TensorProto.FLOAT, ["n", 4, 16, 16])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def fold_mean_into_the_conv(real):
    """A wrong fold: the mean goes into the first Conv's bias, which is right where the kernel sees
    only pixels and wrong at the borders, where it sees the zero padding (zeros of the preprocessed
    image, not of the pixels)."""
    def fold(model, prep, layout):
        out = real(model, replace(prep, mean=[0.0, 0.0, 0.0]), layout)
        inits = {t.name: t for t in out.graph.initializer}
        w = numpy_helper.to_array(inits["w"])
        b = numpy_helper.to_array(inits["b"])
        shift = (w * (np.asarray(prep.mean) / np.asarray(prep.std))[None, :, None, None]).sum(axis=(1, 2, 3))
        inits["b"].CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), "b"))
        return out
    return fold


def test_a_mean_folded_into_a_padded_convolution_fails_at_the_borders(tmp_path, monkeypatch):
    src = conv_model(tmp_path / "m.onnx")
    monkeypatch.setattr(graph_module, "prepend_preprocessing", fold_mean_into_the_conv(graph_module.prepend_preprocessing))
    with pytest.raises(ValidationError) as err:
        onnxviz.export(src, tmp_path / "out" / "m.onnx", scale="1/255", mean=MEAN, std=STD)
    assert str(err.value).startswith("1 of 1 outputs differ from ONNX Runtime running the source model beyond "
                                     "relative 0.0001 and beyond 4x what rounding moves them by: act (")
    assert not (tmp_path / "out").exists()


def test_the_right_fold_passes_with_errors_at_rounding_level(tmp_path):
    src = conv_model(tmp_path / "m.onnx")
    result = onnxviz.export(src, tmp_path / "m_out.onnx", scale="1/255", mean=MEAN, std=STD)
    for d in result.diffs:
        assert d.relative < 1e-5 and d.noise < 1e-5, d


def test_a_saturating_sigmoid_after_a_right_fold_passes_on_what_rounding_moves_it(tmp_path):
    src = conv_model(tmp_path / "m.onnx", weight_scale=3000.0, then="Sigmoid")
    result = onnxviz.export(src, tmp_path / "m_out.onnx", scale="1/255", mean=MEAN, std=STD, layers=["conv", "act"])
    sigmoid = next(d for d in result.diffs if d.name == "act")
    conv = next(d for d in result.diffs if d.name == "conv")
    assert conv.relative < 1e-5  # the layer feeding it is right to rounding
    assert sigmoid.relative > 1e-4  # beyond the fixed tolerance: the rule of one figure would refuse it
    assert sigmoid.relative <= 4 * sigmoid.noise  # within what rounding moves the source's own sigmoid
