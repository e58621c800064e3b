"""An ONNX file from another exporter (torch writes `model.onnx` + `model.onnx.data`) copied without
its weights file: export names the missing file and where it was looked for."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.errors import ModelError
from onnxviz.api import export as export_onnx
from onnxviz.exporter.sources.onnx import load_onnx


def saved_with_external_data(folder):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [w])
    path = folder / "net.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path, save_as_external_data=True,
              all_tensors_to_one_file=True, location="net.onnx.data", size_threshold=0)
    return path


def test_the_missing_weights_file_is_named_with_the_folder_searched(tmp_path):
    path = saved_with_external_data(tmp_path)
    assert load_onnx(path).graph.node  # complete: loads
    (tmp_path / "net.onnx.data").unlink()
    message = f"'{path}' keeps its weights in '{tmp_path / 'net.onnx.data'}', which is missing; it must lie beside 'net.onnx'"
    with pytest.raises(ModelError, match=f"^{re.escape(message)}"):
        load_onnx(path)
    with pytest.raises(ModelError, match=f"^{re.escape(message)}"):
        export_onnx(path, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
