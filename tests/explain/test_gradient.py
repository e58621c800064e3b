"""Grad-CAM written into the graph: the CAM identity for GAP + linear heads, first-maximum routing
through MaxPool checked against a numpy derivation, and heads it must refuse, by name."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxviz
from onnxviz.errors import OnnxvizError
from onnxviz.explain.gradient import HeadError, add_gradcam
from tiny_models import tiny_classifier


def _file(tmp_path, head):
    path = tmp_path / f"{head}.onnx"
    onnx.save(tiny_classifier(head), str(path))
    return onnxviz.load(path, provider="cpu")


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3)).astype(np.uint8)


def _weights(model):
    return {t.name: onnx.numpy_helper.to_array(t) for t in tiny_classifier(model).graph.initializer}


def test_gap_linear_head_gives_the_original_cam(tmp_path):
    model = _file(tmp_path, "gap")
    images = _images()
    result = model.cam(images, top_k=5)
    assert result.layer == "relu" and result.maps.shape == (3, 5, 8, 8) and result.classes.shape == (3, 5)
    acts = model.activations(images, "relu")["relu"].astype(np.float64)
    fc = _weights("gap")["FC"].astype(np.float64)  # [4 channels, 5 classes]
    for i in range(3):
        for j, c in enumerate(result.classes[i]):
            cam = np.einsum("k,khw->hw", fc[:, c], acts[i])  # Zhou et al.'s CAM: sum_k w_k^c A_k
            np.testing.assert_allclose(result.maps[i, j], np.maximum(cam, 0) / 64, rtol=1e-5, atol=1e-6 * np.abs(cam).max())
    # the top classes are the model's own, best first, with its scores
    scores = model.activations(images, "predictions")["predictions"]
    np.testing.assert_array_equal(result.classes, np.argsort(-scores, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(result.scores, np.take_along_axis(scores, result.classes, 1), rtol=1e-6)
    assert result.labels[0][0] == ["ant", "bee", "cat", "dog", "eel"][result.classes[0, 0]]


def test_maxpool_flatten_dense_head_matches_a_numpy_derivation(tmp_path):
    model = _file(tmp_path, "pool")
    images = _images(4, seed=3)
    images[0, :4, :4] = 0  # a black corner: windows of zeros, where the first position takes the gradient
    classes = [[0, 4], [1, 2], [3, 3], [4, 0]]
    result = model.cam(images, classes=classes)
    np.testing.assert_array_equal(result.classes, classes)
    w = {k: v.astype(np.float64) for k, v in _weights("pool").items()}
    acts = model.activations(images, "relu")["relu"].astype(np.float64)  # [N, 4, 8, 8]
    for i in range(4):
        a = acts[i]
        windows = a.reshape(4, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(4, 4, 4, 4)
        first = windows.argmax(axis=3)  # the first maximum of each window, row-major
        pooled = windows.max(axis=3)
        hidden = pooled.reshape(-1) @ w["FC"] + w["FB"]
        for j, c in enumerate(classes[i]):
            g_hidden = w["FC2"][:, c] * (hidden > 0)
            g_pooled = (w["FC"] @ g_hidden).reshape(4, 4, 4)
            g = np.zeros((4, 4, 4, 4))
            np.put_along_axis(g, first[..., None], g_pooled[..., None], axis=3)
            g = g.reshape(4, 4, 4, 2, 2).transpose(0, 1, 3, 2, 4).reshape(4, 8, 8)
            want = np.maximum(np.einsum("k,khw->hw", g.mean(axis=(1, 2)), a), 0)
            np.testing.assert_allclose(result.maps[i, j], want, rtol=1e-4, atol=1e-5 * max(want.max(), 1e-6))


def test_a_head_with_another_op_is_refused_by_name(tmp_path):
    model = _file(tmp_path, "sigmoid")
    with pytest.raises(OnnxvizError, match=r"Sigmoid node .* whose gradient onnxviz does not write .*method='eigencam'"):
        model.cam(_images())
    # the class-agnostic map is there instead
    result = model.cam(_images(), method="eigencam")
    assert result.maps.shape == (3, 1, 8, 8) and result.classes is None and np.isfinite(result.maps).all()


def test_a_layer_the_logits_do_not_depend_on_is_refused():
    model = tiny_classifier("gap")
    model.graph.node.append(onnx.helper.make_node("Neg", ["conv"], ["side"]))  # a branch beside the head
    with pytest.raises(HeadError, match=r"the class logits \('logits'\) do not depend on layer 'side'") as caught:
        add_gradcam(model, "side", "logits", 1)
    assert caught.value.unrelated
    with pytest.raises(HeadError, match=r"layer 'predictions' is not a 4-D feature map"):
        add_gradcam(model, "predictions", "logits", 1)


def test_bad_inputs_name_what_is_wrong(tmp_path):
    model = _file(tmp_path, "gap")
    images = _images(2)
    cases = [(dict(classes=5), r"classes 5 is out of range; the model has 5 classes \(0..4\)"),
             (dict(classes=[[0], [-1]]), r"classes -1 is out of range"),
             (dict(classes=[[0, 1]] * 3), r"classes has shape \[3, 2\]; give one list per image \(2\)"),
             (dict(classes="cat"), r"classes must be a class index"),
             (dict(top_k=0), r"top_k must be a positive integer, got 0"),
             (dict(top_k=6), r"top_k is 6 but the model has 5 classes"),
             (dict(layer="nope"), r"layer 'nope' is not a layer of 'gap.onnx'; its 2 feature maps are conv, relu"),
             (dict(layer="predictions"), r"layer 'predictions' of 'gap.onnx' is not a 4-D feature map"),
             (dict(method="lime"), r"method 'lime' is not valid; choose one of gradcam, eigencam")]
    for kwargs, message in cases:
        with pytest.raises(OnnxvizError, match=message):
            model.cam(images, **kwargs)


def test_all_zero_activations_give_a_zero_map_and_a_note(tmp_path):
    model = _file(tmp_path, "gap")  # the conv has no bias: a black image gives zeros everywhere
    images = _images(2)
    images[1] = 0
    result = model.cam(images)
    assert np.isfinite(result.maps).all() and not result.maps[1].any() and result.maps[0].any()
    assert result.notes == ["image 1: the layer's activations are all zero, so its map is zero"]
    eigen = model.cam(images, method="eigencam")
    assert np.isfinite(eigen.maps).all() and not eigen.maps[1].any()
    assert eigen.notes == ["image 1: the layer's activations are the same at every position, so there is no map"]


def test_results_show_themselves(tmp_path):
    model = _file(tmp_path, "gap")
    result = model.cam(_images(2), top_k=2)
    assert repr(result).startswith("<CamResult gradcam at relu 8x8: 2 images x 2 maps: ")
    import cv2

    picture = cv2.imdecode(np.frombuffer(result._repr_png_(), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[1] > picture.shape[0]  # one row per image: input, 2 maps
    parts = model.factorize(_images(2), "relu", parts=2)
    assert repr(parts).startswith("<Factorization of relu into 2 parts over 2 images: error ")
    assert cv2.imdecode(np.frombuffer(parts._repr_png_(), np.uint8), cv2.IMREAD_COLOR) is not None
