"""onnxviz.picture.drawing: first-layer filters drawn as colour patches."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from onnxviz.picture.drawing import draw_filters
from onnxviz.errors import OnnxvizError
from onnxviz.picture.tiling import tile_box

DATA = Path(os.environ.get("ONNXVIZ_TEST_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))

RED, GREEN, BLUE = 0, 1, 2  # input channel positions in RGB order


def colour_filters() -> np.ndarray:
    """[4, 3, 3, 3]: 0 red-opponent, 1 zero, 2 +1 on input 0 only, 3 half strength on input 0."""
    w = np.zeros((4, 3, 3, 3), np.float32)
    w[0] = -1.0
    w[0, RED] = 1.0
    w[2, 0] = 1.0
    w[3, 0] = 0.5
    return w


def patch(image: np.ndarray, i: int, columns: int = 2, size: int = 24) -> np.ndarray:
    return image[tile_box(i, columns, size, size, gap=1).slices]


def test_filters_form_a_near_square_grid_of_enlarged_patches():
    img = draw_filters(colour_filters())
    assert img.shape == (2 * 24 + 1, 2 * 24 + 1, 3) and img.dtype == np.uint8  # 3x3 kernels x 8
    assert draw_filters(np.zeros((64, 3, 7, 7), np.float32)).shape == (8 * 28 + 7, 8 * 28 + 7, 3)


def test_red_filter_comes_out_red_in_rgb_order():
    img = draw_filters(colour_filters(), channel_order="RGB")
    assert (patch(img, 0) == (0, 0, 255)).all()          # BGR red
    assert (patch(img, 1) == (128, 128, 128)).all()      # zero weights are mid-gray
    assert (patch(img, 2) == (128, 128, 255)).all()      # +1 on R only: more red than G and B
    assert (patch(img, 3) == (128, 128, 191)).all()      # one scale for all filters: half strength


def test_bgr_channel_order_reads_weights_0_as_blue():
    img = draw_filters(colour_filters(), channel_order="BGR")
    assert (patch(img, 2) == (255, 128, 128)).all()      # weights[:, 0] is blue
    assert (patch(img, 0) == (255, 0, 0)).all()


def test_single_input_filters_are_gray_and_others_use_the_mean():
    w1 = np.zeros((2, 1, 5, 5), np.float32)
    w1[0, 0, 0, 0] = -2.0
    w1[1, 0, 0, 0] = 2.0
    img = draw_filters(w1, min_patch=10)
    assert img.shape == (10, 21, 3)  # 5x5 x 2, one row of two
    assert (img[0, 0] == 0).all() and (img[0, 11] == 255).all() and (img[9, 9] == 128).all()
    w5 = np.zeros((1, 5, 2, 2), np.float32)
    w5[0, :, 0, 0] = [1, 1, 1, 1, -4]  # mean 0
    w5[0, :, 1, 1] = 1.0              # mean 1: the peak
    img = draw_filters(w5, min_patch=2)
    assert img[0, 0].tolist() == [128] * 3 and img[1, 1].tolist() == [255] * 3


def test_filters_reject_bad_input():
    with pytest.raises(OnnxvizError, match=r"filters must be a convolution weight \[O, I, kh, kw\] \(ONNX Conv layout\); got shape \(3, 3, 3\)"):
        draw_filters(np.zeros((3, 3, 3), np.float32))
    with pytest.raises(OnnxvizError, match="unknown channel_order 'GBR'; valid: RGB, BGR"):
        draw_filters(colour_filters(), channel_order="GBR")


def test_real_squeezenet_first_layer_filters():
    path = DATA / "onnx" / "squeezenet1.1.onnx"
    if not path.exists():
        pytest.skip(f"real test data not found at {DATA} (set ONNXVIZ_TEST_DATA)")
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weights = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == conv.input[1])
    assert weights.shape == (64, 3, 3, 3)
    img = draw_filters(weights, channel_order="BGR")  # SqueezeNet (Caffe2) takes BGR
    assert img.shape == (8 * 24 + 7, 8 * 24 + 7, 3)
    colourful = np.ptp(img.astype(int), axis=2) > 40
    assert colourful.mean() > 0.05  # trained filters have colour, not just gray
