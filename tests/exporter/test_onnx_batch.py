"""onnxviz.exporter.sources.onnx_batch: torch exports traced at batch 1 run on batches after export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxviz.api import export
from onnxviz.exporter.sources.onnx_batch import fixed_batch_of_one, free_batch
from onnxviz.run.session import open_session

MODELS = Path(__file__).resolve().parents[1] / "torch_models"


def test_a_batch_one_dynamo_export_runs_on_batches_and_equals_one_by_one(tmp_path):
    src = MODELS / "resnet_dynamo_opset18.onnx"
    assert fixed_batch_of_one(onnx.load(src), "image")
    notes: list[str] = []
    out = tmp_path / "r.onnx"
    export(src, out, preprocess="torchvision", progress=notes.append)
    assert "the model was exported for batch 1: 1 reshape(s) made to keep any batch" in notes
    session = open_session(out, "cpu")
    rgb = np.random.default_rng(0).integers(0, 256, (3, 24, 24, 3)).astype(np.float32)
    together = session.run(rgb)
    for i in range(3):
        alone = session.run(rgb[i:i + 1])
        for name, value in alone.items():
            np.testing.assert_allclose(together[name][i:i + 1], value, rtol=1e-5, atol=1e-5)


def test_only_reshapes_to_a_leading_one_without_other_zeros_change():
    def reshape(shape, allowzero):
        g = helper.make_graph(
            [helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=allowzero)], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array(shape, np.int64), "s")])
        return helper.make_model(g)

    freed, n = free_batch(reshape([1, 4], 1))
    assert n == 1 and numpy_helper.to_array(freed.graph.initializer[-1]).tolist() == [0, 4]
    assert freed.graph.node[0].attribute[0].i == 0
    assert free_batch(reshape([1, 0, 4], 1))[1] == 0  # a real empty dimension stays
    assert free_batch(reshape([4, 1], 0))[1] == 0
    assert free_batch(reshape([-1, 4], 0))[1] == 0
