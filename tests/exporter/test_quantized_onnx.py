"""Quantized ONNX files (QDQ, as onnxruntime.quantization writes them) export as they are: their maps are
the float tensors after DequantizeLinear, checked against the quantized source in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxviz


def float_model(path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
             numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(size=(4, 8, 3, 3)).astype(np.float32) * 0.3, "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="r2")]
    graph = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("r2", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_a_qdq_model_exports_with_float_maps_that_match_it(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    float_model(tmp_path / "f.onnx")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": np.random.default_rng(i).uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)}
                                 for i in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantization.quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                                 quant_format=quantization.QuantFormat.QDQ)
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    result = onnxviz.export(tmp_path / "q.onnx", tmp_path / "q_out.onnx", scale="1/255")
    maps = result.info.feature_maps
    assert maps and all(d.ok(result.tolerance) for d in result.diffs)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    rgb = np.random.default_rng(9).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    outs = sess.run([m.name for m in maps], {"x": rgb})
    assert all(o.dtype == np.float32 for o in outs)
    # Every map against the quantized source itself, run on the same pixels as ONNX defines QDQ graphs
    # (float arithmetic between DequantizeLinear and QuantizeLinear; ONNX Runtime's fused integer kernels,
    # which it uses only where no intermediate tensor is an output, round differently).
    names = [m.name for m in maps]
    assert names == ["r1", "p1", "r2_QuantizeLinear_Input", "r2"]
    source = onnx.load(str(tmp_path / "q.onnx"))
    del source.graph.output[:]
    source.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = ort.InferenceSession(source.SerializeToString(), so, providers=["CPUExecutionProvider"])
    want = src.run(names, {"x": (rgb / 255).transpose(0, 3, 1, 2).astype(np.float32)})
    for name, got, ref in zip(names, outs, want):
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=name)
