"""Layer factorization against scikit-learn's NMF on the same matrices, and Eigen-CAM against a PCA."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

import onnxviz
from onnxviz.errors import OnnxvizError
from onnxviz.explain.factorize import eigen_cam, factorize_maps, nmf
from tiny_models import tiny_classifier

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is the reference NMF (pip install 'onnxviz[dev]')")


def _sklearn_error(v, k):
    from sklearn.decomposition import NMF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its ConvergenceWarning at max_iter
        found = NMF(k, init="nndsvda")
        w = found.fit_transform(v)
    return np.linalg.norm(v - w @ found.components_) / np.linalg.norm(v)


def _maps(seed, n=2, c=48, h=9, w=7, parts=4):
    """Activations made of a few non-negative parts plus noise, after a ReLU."""
    rng = np.random.default_rng(seed)
    where = rng.gamma(1.0, 1.0, (n, parts, h, w)) * (rng.random((n, parts, h, w)) < 0.4)
    what = rng.gamma(0.5, 1.0, (parts, c))
    return np.maximum(np.einsum("nphw,pc->nchw", where, what) + rng.normal(0, 0.2, (n, c, h, w)), 0)


@pytest.mark.parametrize("seed", range(4))
def test_error_is_within_2_percent_of_sklearn_on_the_same_matrix(seed):
    maps = _maps(seed)
    found = factorize_maps(maps, 5)
    v = maps.transpose(0, 2, 3, 1).reshape(-1, maps.shape[1])
    assert found.error <= 1.02 * _sklearn_error(v, 5)
    # the error it reports is the one of the maps and channels it returns
    approx = np.einsum("nkhw,kc->nchw", found.maps, found.channels)
    assert found.error == pytest.approx(np.linalg.norm(approx - maps) / np.linalg.norm(maps), rel=1e-4)
    assert (found.maps >= 0).all() and (found.channels >= 0).all()
    np.testing.assert_allclose(found.channels.max(axis=1), 1.0, rtol=1e-6)
    again = factorize_maps(maps, 5)  # deterministic
    np.testing.assert_array_equal(again.maps, found.maps)


def test_error_on_real_activations_is_within_2_percent_of_sklearn(mobilenet_onnx, shared_data):
    path, _ = mobilenet_onnx
    model = onnxviz.load(path, provider="cpu")
    images = [shared_data / "images" / name for name in ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")]
    acts = model.activations(images, ["conv_pw_3_relu", "conv_pw_11_relu", "conv_pw_13_relu"])
    for name, maps in acts.items():
        for subset in (maps[:1], maps):  # one image, and jointly
            v = np.maximum(subset.transpose(0, 2, 3, 1).reshape(-1, subset.shape[1]), 0).astype(np.float64)
            assert nmf(v, 5)[2] <= 1.02 * _sklearn_error(v, 5), name


def test_negative_activations_are_clipped_and_counted():
    maps = np.random.default_rng(0).normal(0, 1, (1, 6, 5, 5))
    found = factorize_maps(maps, 2)
    positive = np.maximum(maps, 0)
    assert found.clipped == pytest.approx((np.minimum(maps, 0) ** 2).sum() / (maps ** 2).sum())
    approx = np.einsum("nkhw,kc->nchw", found.maps, found.channels)
    assert found.error == pytest.approx(np.linalg.norm(approx - positive) / np.linalg.norm(positive), rel=1e-4)


def test_all_zero_activations_say_so_without_nan():
    found = factorize_maps(np.zeros((2, 4, 3, 3)), 2)
    assert found.zero and found.error == 0.0 and not found.maps.any() and np.isfinite(found.channels).all()


@pytest.mark.parametrize("parts, message", [(0, r"parts must be a positive integer \(the number of parts\), got 0"),
                                            (-3, "got -3"), (True, "got True"), (2.5, "got 2.5"),
                                            (50, r"parts is 50 but the layer has 18 positions and 4 channels; "
                                                 r"ask for at most 4 parts")])
def test_bad_part_counts_are_refused(parts, message):
    with pytest.raises(OnnxvizError, match=message):
        factorize_maps(np.ones((2, 4, 3, 3)), parts)


def test_factorize_api_shapes_and_errors(tmp_path):
    path = tmp_path / "gap.onnx"
    onnx.save(tiny_classifier("gap"), str(path))
    model = onnxviz.load(path, provider="cpu")
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    found = model.factorize(images, "relu", parts=3)
    assert found.maps.shape == (3, 3, 8, 8) and found.channels.shape == (3, 4) and found.layer == "relu"
    assert 0 <= found.error < 1 and found.strongest(0)
    with pytest.raises(OnnxvizError, match="parts must be a positive integer"):
        model.factorize(images, "relu", parts=0)
    with pytest.raises(OnnxvizError, match="layer 'predictions' of 'gap.onnx' is not a 4-D feature map"):
        model.factorize(images, "predictions")
    black = model.factorize(np.zeros((1, 8, 8, 3), np.uint8), "relu", parts=2)
    assert black.notes and "all zero" in black.notes[0] and np.isfinite(black.maps).all()


def test_eigen_cam_is_the_first_principal_component_signed_by_the_activations():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(4)
    maps = np.maximum(rng.normal(0, 1, (16, 6, 5)) + np.linspace(0, 3, 5), 0)
    found, varies = eigen_cam(maps)
    x = maps.reshape(16, -1).T
    want = PCA(1).fit_transform(x)[:, 0].reshape(6, 5)
    assert varies
    np.testing.assert_allclose(np.abs(found), np.abs(want), rtol=1e-4, atol=1e-5)
    assert np.corrcoef(found.ravel(), maps.sum(axis=0).ravel())[0, 1] > 0
    flipped, _ = eigen_cam(maps[::-1].copy())  # the sign follows the activations, not the SVD's whim
    assert np.corrcoef(flipped.ravel(), maps.sum(axis=0).ravel())[0, 1] > 0


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (2000, 128), (120, 700)])
def test_top_singular_equals_the_full_svd(shape):
    """The initialisation's SVD (from the Gram matrix of a short side, else randomized) finds the
    leading singular triplets the full SVD finds."""
    from onnxviz.explain.factorize import top_singular

    rng = np.random.default_rng(1)
    n, m = shape
    v = (rng.gamma(1.0, 1.0, (n, 8)) * np.linspace(3, 0.5, 8)) @ rng.gamma(1.0, 1.0, (8, m)) + rng.random((n, m)) * 0.1
    v = v.astype(np.float32)
    u, s, vt = top_singular(v, 5)
    u_ref, s_ref, vt_ref = np.linalg.svd(v.astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(s, s_ref[:5], rtol=1e-4)
    for j in range(5):  # each singular vector, up to its sign
        assert abs(float(np.dot(u[:, j], u_ref[:, j]))) == pytest.approx(1, abs=1e-3)
        assert abs(float(np.dot(vt[j], vt_ref[j]))) == pytest.approx(1, abs=1e-3)


def test_render_budget_of_sweeps_comes_near_the_converged_error(mobilenet_onnx, shared_data):
    """An image's parts on its render page: the budget of accelerated sweeps ends within 3% of the
    error of plain sweeps run until they converge, on MobileNet's default parts layers, real photos."""
    from onnxviz.explain.pages import RENDER_PASSES, render_sweeps

    path, _ = mobilenet_onnx
    model = onnxviz.load(path, provider="cpu")
    images = [shared_data / "images" / name for name in ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")]
    acts = model.activations(images, ["conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"])
    for name, maps in acts.items():
        c, h, w = maps.shape[1:]
        for i in range(len(maps)):
            quick = factorize_maps(maps[i:i + 1], 5, render_sweeps(h * w, c), RENDER_PASSES)
            assert quick.error <= 1.03 * factorize_maps(maps[i:i + 1], 5).error, (name, i)
            approx = np.einsum("nkhw,kc->nchw", quick.maps, quick.channels)
            kept = np.maximum(maps[i:i + 1], 0)
            assert quick.error == pytest.approx(np.linalg.norm(approx - kept) / np.linalg.norm(kept), rel=1e-3)
    assert render_sweeps(28 * 28, 512) == 10 and render_sweeps(4 * 4, 256) == 160


def test_a_batch_factorized_in_one_pass_gives_each_image_its_own_parts():
    """Render factorizes a batch's images in one pass (`factorize_each`): each image gets what it gets
    alone, whatever else is in the batch."""
    from onnxviz.explain.factorize import factorize_each

    maps = np.concatenate([_maps(seed, n=1, c=48, h=9, w=7) for seed in range(4)])
    maps[2] = -np.abs(maps[2])  # all clipped: nothing to factorize
    together = factorize_each(maps, 4, 10, 3)
    for i, found in enumerate(together):
        alone = factorize_maps(maps[i:i + 1], 4, 10, 3)
        np.testing.assert_array_equal(found.maps, alone.maps)
        np.testing.assert_array_equal(found.channels, alone.channels)
        assert found.error == alone.error and found.zero == alone.zero
    assert together[2].zero and not together[0].zero
