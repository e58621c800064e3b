"""onnxviz.model.graph on tiny graphs built inline; ReferenceEvaluator and ORT CPU are the oracles."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxviz.model.graph import (
    expose_outputs,
    first_conv_weights,
    prepend_preprocessing,
    rename_tensors,
    set_input_shape,
    strip_outputs,
)
from onnxviz.model.info import KERAS_MODES, Preprocessing

OPSET = 17
RNG = np.random.default_rng(0)


def make_model(nodes, inputs, outputs, inits=(), opset=OPSET, ir_version=8, value_info=()):
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=list(inits), value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.checker.check_model(model)
    return model


def conv_model(layout: str = "NCHW", batch: int | str = 1, size: int = 8) -> onnx.ModelProto:
    """x -> [Transpose] -> Conv -> Relu -> MaxPool; outputs the pool."""
    w = numpy_helper.from_array(RNG.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(RNG.normal(size=(4,)).astype(np.float32), "b")
    nodes = []
    src = "x"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2], name="to_nchw"))
        src = "x_nchw"
        shape = [batch, size, size, 3]
    else:
        shape = [batch, 3, size, size]
    nodes += [
        helper.make_node("Conv", [src, "w", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu1"),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("pool", TensorProto.FLOAT, [None] * 4)], [w, b])


def numpy_prep(rgb: np.ndarray, prep: Preprocessing, layout: str) -> np.ndarray:
    x = rgb[..., ::-1] if prep.bgr else rgb
    y = (x * prep.scale - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    y = y.astype(np.float32)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if layout == "NCHW" else y


def ort_run(model: onnx.ModelProto, feeds: dict, names=None, opt=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if opt is not None:
        so.optimized_model_filepath = str(opt)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(names, feeds)))


PREPS = {
    "identity": Preprocessing("none"),
    "bgr_only": Preprocessing("custom", bgr=True),
    "caffe": KERAS_MODES["caffe"],
    "tf": KERAS_MODES["tf"],
    "torch": KERAS_MODES["torch"],
    "custom": Preprocessing("custom", 1 / 255, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4], bgr=True),
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("prep_name", list(PREPS))
def test_prepend_preprocessing_matches_numpy_in_ort_and_reference(layout, prep_name):
    prep = PREPS[prep_name]
    model = conv_model(layout, batch=1)
    folded = prepend_preprocessing(model, prep, layout)
    onnx.checker.check_model(folded, full_check=True)

    (inp,) = folded.graph.input
    assert inp.name == "x"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [8, 8, 3]

    rgb = RNG.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": numpy_prep(rgb, prep, layout)})[0]
    got_ref = ReferenceEvaluator(folded).run(None, {"x": rgb})[0]
    got_ort = ort_run(folded, {"x": rgb})["pool"]
    tol = 1e-4 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got_ref, expected, rtol=1e-4, atol=tol)
    np.testing.assert_allclose(got_ort, expected, rtol=1e-4, atol=tol)

    new_nodes = [n for n in folded.graph.node if n.name.startswith("onnxviz_")]
    assert len(folded.graph.node) == len(model.graph.node) + len(new_nodes)


@pytest.mark.parametrize(
    "prep_name,layout,ops",
    [
        ("identity", "NHWC", []),
        ("identity", "NCHW", ["Transpose"]),
        ("caffe", "NCHW", ["Gather", "Add", "Transpose"]),
        ("tf", "NHWC", ["Mul", "Add"]),
        ("torch", "NCHW", ["Mul", "Add", "Transpose"]),
        ("bgr_only", "NHWC", ["Gather"]),
    ],
)
def test_prepend_preprocessing_adds_only_the_nodes_it_needs(prep_name, layout, ops):
    folded = prepend_preprocessing(conv_model(layout), PREPS[prep_name], layout)
    added = [n for n in folded.graph.node if n.name.startswith("onnxviz_")]
    assert [n.op_type for n in added] == ops
    assert list(folded.graph.node)[: len(added)] == added
    names = [o for n in folded.graph.node for o in n.output] + [t.name for t in folded.graph.initializer]
    assert len(names) == len(set(names))
    assert all(n.startswith("onnxviz_") for n in names if n not in {o for n in conv_model(layout).graph.node for o in n.output} | {"w", "b"})


def test_prepend_preprocessing_avoids_names_already_in_the_model():
    model = conv_model("NCHW")
    model.graph.node[0].output[0] = "onnxviz_network_input"
    model.graph.node[1].input[0] = "onnxviz_network_input"
    folded = prepend_preprocessing(model, KERAS_MODES["torch"], "NCHW")
    onnx.checker.check_model(folded)
    outs = [o for n in folded.graph.node for o in n.output]
    assert len(outs) == len(set(outs))
    rgb = RNG.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": numpy_prep(rgb, KERAS_MODES["torch"], "NCHW")})[0]
    np.testing.assert_allclose(ort_run(folded, {"x": rgb})["pool"], expected, rtol=1e-4, atol=1e-4)


def test_prepend_preprocessing_keeps_symbolic_spatial_dims_and_old_ir_versions():
    model = conv_model("NCHW", batch="batch")
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    folded = prepend_preprocessing(model, KERAS_MODES["caffe"], "NCHW")
    dims = folded.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:3]] == ["N", "H", "W"] and dims[3].dim_value == 3

    old = conv_model("NCHW")
    old.ir_version, old.opset_import[0].version = 3, 7  # IR 3: initializers are graph inputs too
    old.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in old.graph.initializer)
    folded = prepend_preprocessing(old, KERAS_MODES["torch"], "NCHW")
    onnx.checker.check_model(folded)
    rgb = RNG.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    expected = ReferenceEvaluator(old).run(None, {"x": numpy_prep(rgb, KERAS_MODES["torch"], "NCHW")})[0]
    np.testing.assert_allclose(ort_run(folded, {"x": rgb})["pool"], expected, rtol=1e-4, atol=1e-4)


def test_prepend_preprocessing_rejects_bad_arguments():
    with pytest.raises(ValueError, match="network_layout"):
        prepend_preprocessing(conv_model(), PREPS["tf"], "CHW")
    with pytest.raises(ValueError, match="has 8 channels in NHWC"):
        prepend_preprocessing(conv_model("NCHW"), PREPS["tf"], "NHWC")


def test_expose_outputs_orders_types_and_values_like_the_reference():
    model = conv_model("NCHW")
    exposed = expose_outputs(model, ["relu", "conv", "pool"])
    onnx.checker.check_model(exposed)
    assert [o.name for o in exposed.graph.output] == ["relu", "conv", "pool"]
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in exposed.graph.output}
    assert shapes == {"relu": [1, 4, 8, 8], "conv": [1, 4, 8, 8], "pool": [1, 4, 4, 4]}
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x}, intermediate=True)
    got = ort_run(exposed, {"x": x})
    for name in ["relu", "conv", "pool"]:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5)
    # an existing output that is not named is dropped
    assert [o.name for o in expose_outputs(model, ["relu"]).graph.output] == ["relu"]


def test_expose_outputs_renames_in_place_and_keeps_the_conv_relu_fusion(tmp_path):
    model = conv_model("NCHW")
    exposed = expose_outputs(model, ["relu", "pool"], rename={"relu": "block1"})
    assert [n.op_type for n in exposed.graph.node] == ["Conv", "Relu", "MaxPool"]  # no Identity
    assert exposed.graph.node[1].output[0] == "block1" and exposed.graph.node[2].input[0] == "block1"
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x}, intermediate=True)
    got = ort_run(exposed, {"x": x}, opt=tmp_path / "opt.onnx")
    np.testing.assert_allclose(got["block1"], ref["relu"], rtol=1e-5, atol=1e-5)
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "Relu" not in optimized  # ORT folded it into the Conv (FusedConv or NCHWc Conv)


def test_expose_outputs_renames_a_graph_input_through_identity():
    exposed = expose_outputs(conv_model(), ["x", "pool"], rename={"x": "image"})
    assert exposed.graph.node[-1].op_type == "Identity"
    assert [o.name for o in exposed.graph.output] == ["image", "pool"]
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(exposed, {"x": x})["image"], x)


def test_expose_outputs_rejects_unknown_and_clashing_names():
    with pytest.raises(ValueError, match=r"no tensors named \['nope'\]"):
        expose_outputs(conv_model(), ["nope"])
    with pytest.raises(ValueError, match="already used"):
        expose_outputs(conv_model(), ["relu"], rename={"relu": "conv"})
    with pytest.raises(ValueError, match="not exposed"):
        expose_outputs(conv_model(), ["relu"], rename={"pool": "p"})


def test_rename_tensors_and_set_input_shape():
    renamed = rename_tensors(conv_model(), {"conv": "c1"})
    assert renamed.graph.node[0].output[0] == "c1" and renamed.graph.node[1].input[0] == "c1"
    model = conv_model()
    model.graph.value_info.append(helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 4, 8, 8]))
    model.graph.output[0].type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 4, 4, 4]))
    reshaped = set_input_shape(model, "x", ["N", 3, 16, 16])
    assert not reshaped.graph.value_info
    assert [d.HasField("dim_value") for d in reshaped.graph.output[0].type.tensor_type.shape.dim] == [False] * 4
    exposed = expose_outputs(reshaped, ["pool"])
    dims = exposed.graph.output[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [4, 8, 8]


def test_strip_outputs_drops_what_no_longer_feeds_an_output():
    model = expose_outputs(conv_model(), ["relu", "pool"])
    floor = strip_outputs(model, ["relu"])
    onnx.checker.check_model(floor)
    assert [n.op_type for n in floor.graph.node] == ["Conv", "Relu"]
    assert [o.name for o in floor.graph.output] == ["relu"]
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ort_run(floor, {"x": x})["relu"], ort_run(model, {"x": x})["relu"])
    with pytest.raises(ValueError, match="not graph outputs"):
        strip_outputs(model, ["conv"])
    # a branch feeding nothing loses its initializers too
    only_pool = strip_outputs(expose_outputs(model, ["pool"]), ["pool"])
    assert {t.name for t in only_pool.graph.initializer} == {"w", "b"}


def _weights_model(weight_nodes, weight_name, inits):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)
    nodes = weight_nodes + [helper.make_node("Conv", ["x", weight_name], ["y"])]
    return make_model(nodes, [x], [y], inits)


def test_first_conv_weights_reads_initializers_constants_and_simple_chains():
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    name, got = first_conv_weights(conv_model())
    assert name == "conv1" and got.shape == (4, 3, 3, 3) and got.dtype == np.float32

    const = _weights_model([helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w))], "w", [])
    name, got = first_conv_weights(const)
    assert name == "y"  # unnamed node: its output's name
    np.testing.assert_array_equal(got, w)

    half = _weights_model([helper.make_node("Identity", ["w16"], ["wi"]),
                           helper.make_node("Cast", ["wi"], ["w"], to=TensorProto.FLOAT)],
                          "w", [numpy_helper.from_array(w.astype(np.float16), "w16")])
    np.testing.assert_allclose(first_conv_weights(half)[1], w, atol=2e-3)

    scale = np.abs(w).reshape(4, -1).max(1) / 127
    q = np.round(w / scale[:, None, None, None]).astype(np.int8)
    deq = _weights_model([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=0)], "w",
                         [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scale.astype(np.float32), "s"),
                          numpy_helper.from_array(np.zeros(4, np.int8), "z")])
    expected = ort_run(expose_outputs(deq, ["w"]), {"x": np.zeros((1, 3, 8, 8), np.float32)})["w"]
    np.testing.assert_allclose(first_conv_weights(deq)[1], expected, rtol=1e-6)


def test_first_conv_weights_takes_the_first_conv_on_the_input_path_or_none():
    w1 = numpy_helper.from_array(RNG.normal(size=(4, 3, 1, 1)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(RNG.normal(size=(4, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w1"], ["c1"], name="first"),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], name="second"),
    ]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                       [helper.make_tensor_value_info("c2", TensorProto.FLOAT, [None] * 4)], [w1, w2])
    assert first_conv_weights(model)[0] == "first"
    no_conv = make_model([helper.make_node("Relu", ["x"], ["y"])],
                         [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)])
    assert first_conv_weights(no_conv) is None
