"""Reading a model without its large weights gives exactly the model minus those weights."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.protoscan import load_light


def model_with(big: int, small: int) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "big"], ["y"]), helper.make_node("Add", ["y", "small"], ["z"])]
    inits = [numpy_helper.from_array(np.arange(big, dtype=np.float32).reshape(1, big), "big"),
             numpy_helper.from_array(np.ones((1, 1), np.float32), "small")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, big])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="t")
    entry = model.metadata_props.add()
    entry.key, entry.value = "onnxviz.version", "x" * 300  # a multi-byte length prefix
    return model


@pytest.mark.parametrize("big", [10, 40_000])  # 40 B and 160 KB of raw data
def test_light_model_is_the_model_without_large_initializers(tmp_path, big):
    model = model_with(big, 1)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    light = load_light(path)
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    if big * 4 > 64 << 10:
        kept = [i for i in expected.graph.initializer if i.name != "big"]
        del expected.graph.initializer[:]
        expected.graph.initializer.extend(kept)
    assert light == expected


def test_a_file_that_is_not_protobuf_raises(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\xff\xff\xff\xff\x0f not protobuf")
    from google.protobuf.message import DecodeError

    with pytest.raises((ValueError, IndexError, DecodeError)):
        load_light(path)
