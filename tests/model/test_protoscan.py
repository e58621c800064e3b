"""Reading a model without its large weights gives exactly the model minus those weights."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.model.protoscan import join, load_light, split


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


def by_name(model: onnx.ModelProto) -> tuple[dict, onnx.ModelProto]:
    """(initializers by name, the model without them): join may put them in another order."""
    inits = {t.name: t.SerializeToString() for t in model.graph.initializer}
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    del rest.graph.initializer[:]
    return inits, rest


@pytest.mark.parametrize("big", [10, 40_000])
def test_split_leaves_large_initializers_hollow_and_join_puts_them_back(tmp_path, big):
    model = model_with(big, 1)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    light, spans = split(path)
    hollow = {t.name: t for t in light.graph.initializer if t.name in spans}
    assert set(hollow) == ({"big"} if big * 4 > 64 << 10 else set())
    for t in hollow.values():  # the shape and type are there, the values are not
        assert list(t.dims) == [1, big] and t.data_type == TensorProto.FLOAT and not t.raw_data
    assert by_name(onnx.ModelProto.FromString(join(light, path, spans))) == by_name(model)
    assert by_name(light)[1] == by_name(model)[1]  # join left `light` as it was


def test_join_after_a_rewrite_takes_only_the_initializers_still_there(tmp_path):
    model = model_with(40_000, 1)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    light, spans = split(path, max_tensor_bytes=0)  # every initializer hollow
    assert set(spans) == {"big", "small"}
    del light.graph.initializer[1]  # "small" dropped by a rewrite
    back = onnx.ModelProto.FromString(join(light, path, spans))
    assert [t.name for t in back.graph.initializer] == ["big"]
    np.testing.assert_array_equal(numpy_helper.to_array(back.graph.initializer[0]),
                                  numpy_helper.to_array(model.graph.initializer[0]))
    empty = onnx.ModelProto()
    empty.CopyFrom(light)
    empty.graph.Clear()  # nothing but the hollow initializer: the graph itself is empty
    empty.graph.initializer.add().CopyFrom(light.graph.initializer[0])
    back = onnx.ModelProto.FromString(join(empty, path, spans))
    assert [t.name for t in back.graph.initializer] == ["big"] and len(back.graph.initializer[0].raw_data) == 160_000


def test_outline_reads_metadata_nodes_and_external_entries_as_onnx_does(tmp_path):
    from onnx.external_data_helper import convert_model_to_external_data

    from onnxviz.model.protoscan import outline

    model = model_with(40_000, 1)
    entry = model.metadata_props.add()
    entry.key, entry.value = "onnxviz.layers", "ünïcode ✓"
    convert_model_to_external_data(model, location="m.onnx.data", size_threshold=1024)
    onnx.save(model, tmp_path / "m.onnx")
    found = outline(tmp_path / "m.onnx")
    parsed = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert found.props == {p.key: p.value for p in parsed.metadata_props}
    assert found.props["onnxviz.layers"] == "ünïcode ✓"
    assert (found.nodes, found.opsets) == (2, 1)
    assert found.external == [{e.key: e.value for e in t.external_data} for t in parsed.graph.initializer
                              if t.data_location == TensorProto.EXTERNAL]
    assert [e["location"] for e in found.external] == ["m.onnx.data"]


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff\xff\x0f not protobuf", b"\x3a\x20abc"])  # empty, junk, cut short
def test_outline_of_a_file_that_is_not_an_onnx_model_raises_value_error(tmp_path, data):
    from onnxviz.model.protoscan import outline

    path = tmp_path / "x.onnx"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        outline(path)
