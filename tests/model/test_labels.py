"""onnxviz.model.labels: the shipped ImageNet names, and `--labels imagenet` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxviz.model.labels import Prediction, imagenet_labels, load_labels, top_predictions
from onnxviz.model.info import load_info


def test_shipped_imagenet_names_are_keras_own_list(shared_data):
    keras = json.loads((shared_data / "keras_home" / "models" / "imagenet_class_index.json").read_text())
    assert imagenet_labels() == [keras[str(i)][1] for i in range(1000)]


def test_imagenet_names_in_index_order():
    names = imagenet_labels()
    assert len(names) == 1000 and names[281] == "tabby" and names[967] == "espresso" and names[0] == "tench"


def test_a_file_called_imagenet_is_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("imagenet").write_text("cat\ndog\n")
    assert load_labels("imagenet") == ["cat", "dog"]


def classifier(path: Path) -> Path:
    """x [1,3,8,8] -> Conv -> GlobalAveragePool -> Flatten -> Gemm to 1000 -> Softmax."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.normal(size=108).astype(np.float32).tolist())
    fc = rng.normal(size=(4, 1000)).astype(np.float32)
    fc[:, 281] += 5  # tabby wins for bright inputs
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fc"], ["g"]), helper.make_node("Softmax", ["g"], ["probs"])],
        "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 1000])],
        [w, helper.make_tensor("fc", TensorProto.FLOAT, [4, 1000], fc.ravel().tolist())])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_labels_imagenet_is_stored_by_name_and_read_back_as_the_names(tmp_path):
    from onnxviz.api import export as export_onnx

    out = tmp_path / "out.onnx"
    export_onnx(classifier(tmp_path / "c.onnx"), out, labels="imagenet")
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["onnxviz.labels"] == "imagenet"  # 10 kB of names would be cut off in Netron
    assert load_info(out).labels == imagenet_labels()
    from onnxviz.errors import ModelError

    with pytest.raises(ModelError, match=r"^1000 labels given for a model with 10 classes"):
        from onnxviz.api import export as again

        again(Path(__file__).resolve().parents[1] / "torch_models" / "resnet_dynamo_opset18.onnx", tmp_path / "r.onnx",
              labels="imagenet")


def test_a_1000_class_head_without_labels_gets_a_note_naming_the_shipped_list(tmp_path):
    from onnxviz.api import export

    result = export(classifier(tmp_path / "c.onnx"), tmp_path / "out.onnx")
    assert ("its 1000 classes have no names: if they are ImageNet's (torchvision's classifiers), give the labels "
            "'imagenet' (--labels imagenet) for the names shipped with onnxviz") in result.notes
    assert not any("1000 classes" in n for n in export(classifier(tmp_path / "d.onnx"), tmp_path / "o2.onnx",
                                                        labels="imagenet").notes)


def test_top_predictions_from_logits_or_probabilities_with_and_without_names():
    logits = np.array([1.0, 3.0, 2.0, 3.0])
    softmax = np.exp(logits) / np.exp(logits).sum()
    best = top_predictions(logits, 3, ["a", "b", "c"], probabilities=False)
    assert [(p.label, p.index) for p in best] == [("b", 1), ("class 3", 3), ("c", 2)]  # ties keep index order
    np.testing.assert_allclose([p.score for p in best], softmax[[1, 3, 2]], rtol=1e-12)
    given = top_predictions(np.array([[0.1, 0.6, 0.3]], np.float32), 5)  # already probabilities, no names
    assert given == [Prediction("class 1", float(np.float32(0.6)), 1), Prediction("class 2", float(np.float32(0.3)), 2),
                     Prediction("class 0", float(np.float32(0.1)), 0)]
    assert top_predictions(logits, 0, ["a"]) == []


def test_the_api_prediction_is_the_one_render_and_labels_use():
    import onnxviz

    assert onnxviz.Prediction is Prediction
    assert repr(Prediction("tabby", 0.5, 281)) == "Prediction(label='tabby', score=0.5, index=281)"
