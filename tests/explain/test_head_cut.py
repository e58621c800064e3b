"""Render's Grad-CAM from the activations its own run computed: the head cut at the layer gives the
same maps, classes and scores as the whole graph with its gradient, which runs the network again."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxviz
from onnxviz.explain.explainer import Explainer
from onnxviz.model.info import load_info
from onnxviz.run.session import open_session
from tiny_models import tiny_classifier

DEMO = Path(onnxviz.__file__).parent / "data" / "demo" / "mobilenet_0.25_128.onnx"


def _both(path: Path, layer: str | None, pixels: np.ndarray, k: int = 3):
    info = load_info(path)
    explainer = Explainer(path, info, "cpu")
    layer = layer or explainer.default_layer()
    acts = open_session(path, "cpu").run(pixels, [layer])[layer]
    return explainer, explainer.gradcam_of_maps(acts, layer, k), explainer.gradcam(pixels, layer, k)


@pytest.mark.parametrize("head", ["gap", "pool"])
def test_the_head_alone_gives_the_whole_graphs_maps(tmp_path, head):
    path = tmp_path / f"{head}.onnx"
    onnx.save(tiny_classifier(head, size=16), str(path))
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype(np.float32)
    explainer, cut, whole = _both(path, "relu", pixels)
    assert cut is not None
    session, feed, axes = explainer.head_session("relu", 3)
    assert feed == "relu" and axes is None and "image" not in [i.name for i in session.session.get_inputs()]
    assert np.array_equal(cut.classes, whole.classes)
    np.testing.assert_allclose(cut.maps, whole.maps, rtol=1e-5, atol=1e-6 * whole.maps.max())
    np.testing.assert_allclose(cut.scores, whole.scores, rtol=1e-5)


def test_a_real_keras_export_gives_the_same_maps_from_its_head_alone():
    """The shipped MobileNet 0.25 (Keras' ImageNet weights): the head from conv_pw_13_relu on."""
    if not DEMO.is_file():
        pytest.skip(f"the shipped demo model is missing at {DEMO}")
    from onnxviz.run.images import load_image, resize_image

    photo = DEMO.parent / "coffee.jpg"
    pixels = resize_image(load_image(photo), 128, 128)[None].astype(np.float32)
    pixels = np.concatenate([pixels, pixels[:, ::-1]])
    explainer, cut, whole = _both(DEMO, None, pixels)
    assert cut is not None
    session, feed, axes = explainer.head_session(explainer.default_layer(), 3)
    assert len(session.session.get_inputs()) == 1
    assert np.array_equal(cut.classes, whole.classes)
    np.testing.assert_allclose(cut.maps, whole.maps, rtol=1e-4, atol=1e-5 * whole.maps.max())


@pytest.mark.parametrize("head", ["pool"])  # its classifier's weights (6 KB) go to the data file
def test_weights_in_a_data_file_are_read_from_the_files_folder(tmp_path, head):
    """A file whose weights lie in NAME.onnx.data: the Grad-CAM graphs keep the references and ONNX
    Runtime reads the weights from the file's folder; the same maps as the single file's."""
    from onnxviz.model.modelfile import save_model

    single, pair = tmp_path / "one" / "net.onnx", tmp_path / "two" / "net.onnx"
    single.parent.mkdir()
    pair.parent.mkdir()
    save_model(tiny_classifier(head, size=16), single, external=False)
    save_model(tiny_classifier(head, size=16), pair, external=True)
    assert (pair.parent / "net.onnx.data").stat().st_size > 0 and not (single.parent / "net.onnx.data").exists()
    pixels = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
    _, cut_one, whole_one = _both(single, "relu", pixels)
    _, cut_two, whole_two = _both(pair, "relu", pixels)
    for got, want in ((cut_two, cut_one), (whole_two, whole_one)):
        assert np.array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.maps, want.maps)
    (pair.parent / "net.onnx.data").rename(pair.parent / "elsewhere")  # the references are really followed
    with pytest.raises(Exception):
        _both(pair, "relu", pixels)
