"""`onnxviz diff`: layer-by-layer comparison between providers and against Keras."""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from conftest import needs_tensorflow
from onnxviz.cli import app
from onnxviz.run.session import cuda_status
from tiny_models import tiny_model, write_image

runner = CliRunner()


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    return path


def test_same_provider_twice_agrees_exactly(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    result = runner.invoke(app, ["diff", str(model_path), str(tmp_path / "a.png"), "--providers", "cpu,cpu",
                                 "--json", str(tmp_path / "d.json"), "--maps", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "d.json").read_text())
    assert [d["name"] for d in data["layers"]] == ["conv", "relu", "pool", "predictions"]
    assert all(d["max_abs"] == 0 and d["cosine"] == pytest.approx(1.0) for d in data["layers"])
    assert data["first_divergent"] is None
    assert "4 of 4 layers agree within 0.001" in result.stdout
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["0.conv_diff.png", "1.relu_diff.png", "2.pool_diff.png"]


@pytest.mark.skipif(cuda_status()[0], reason="CUDA works here; the unavailable-provider message cannot be shown")
def test_cuda_not_available_is_a_one_line_error(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    result = runner.invoke(app, ["diff", str(model_path), str(tmp_path / "a.png"), "--providers", "cpu,cuda"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: provider 'cuda' was asked for but cannot run here: ")


def test_against_keras_needs_a_keras_export(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    result = runner.invoke(app, ["diff", str(model_path), str(tmp_path / "a.png"), "--against", "keras"])
    assert result.exit_code == 1
    assert "error: 'tiny' was not exported from a Keras file or application, so there is no Keras model to rebuild" in result.stderr


@needs_tensorflow
def test_against_keras_finds_the_first_layer_that_diverges(tmp_path):
    """A correct export agrees with Keras everywhere; one whose residual conv weights were
    changed after export diverges first at that conv, and so does everything after it."""
    import keras

    from onnxviz.exporter.pipeline import ExportOptions, export as export_keras
    from tiny_models import tiny_functional

    src = tmp_path / "tiny.keras"
    tiny_functional(keras).save(src)
    good = export_keras(str(src), tmp_path / "good.onnx", ExportOptions(preprocess="tf")).path
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    result = runner.invoke(app, ["diff", str(good), str(img), "--against", "keras", "--json", str(tmp_path / "g.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "g.json").read_text())["first_divergent"] is None

    model = onnx.load(str(good))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and "res_conv" in n.output)
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, tmp_path / "bad.onnx")
    result = runner.invoke(app, ["diff", str(tmp_path / "bad.onnx"), str(img), "--against", "keras", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["first_divergent"] == "res_conv"
    assert "res_conv" in result.stdout and "<- first divergence" in result.stdout
    by_name = {d["name"]: d for d in data["layers"]}
    assert by_name["concat"]["relative"] < 1e-4 and by_name["res_add"]["relative"] > 1e-3
