"""onnxviz.drawing: first-layer filters, the prediction panel and encoding."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from onnxviz.drawing import MIN_PREVIEW_SIDE, draw_filters, draw_predictions, encode
from onnxviz.errors import OnnxvizError
from onnxviz.tiling import tile_box

DATA = Path(os.environ.get("ONNXVIZ_TEST_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))

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


# --- draw_predictions -------------------------------------------------------------

def test_predictions_panel_beside_an_enlarged_small_input():
    rgb = np.random.default_rng(0).integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    out = draw_predictions(rgb, [("espresso", 0.971), ("cup", 0.02), ("eggnog", 0.005)])
    assert out.shape[0] == 384 and out.shape[1] > 384 + 200
    picture = out[:384, :384]
    assert np.array_equal(picture, np.kron(rgb[..., ::-1], np.ones((3, 3, 1), np.uint8)))  # BGR, 3x3 blocks
    panel = out[:, 384:]
    assert (panel < 100).any() and (panel == 255).mean() > 0.8  # dark text on white


def test_prediction_bars_are_proportional_to_scores():
    rgb = np.zeros((400, 400, 3), np.uint8)
    out = draw_predictions(rgb, [("one", 1.0), ("half", 0.5)])
    bar = np.all(out[:, 400:] == (200, 130, 40), axis=2)
    rows = np.nonzero(bar.any(axis=1))[0]
    first = bar[rows[0]].sum()
    second = bar[rows[-1]].sum()
    assert out.shape[0] == 400  # large input not enlarged
    assert second == pytest.approx(first / 2, abs=2)


def test_logits_are_shown_as_numbers_and_empty_predictions_give_the_image_alone():
    rgb = np.full((MIN_PREVIEW_SIDE, 500, 3), 7, np.uint8)
    out = draw_predictions(rgb, [("a_b", 12.5), ("négatif", -3.0)])
    assert out.shape[0] == MIN_PREVIEW_SIDE and out.shape[1] > 500
    alone = draw_predictions(rgb, [])
    assert np.array_equal(alone, rgb)


def test_predictions_reject_non_rgb_images():
    with pytest.raises(OnnxvizError, match=r"draw_predictions takes an RGB uint8 image \[H, W, 3\]; got float32 \(4, 4, 3\)"):
        draw_predictions(np.zeros((4, 4, 3), np.float32), [])


# --- encode -----------------------------------------------------------------------

def test_encode_jpeg_and_png():
    img = np.random.default_rng(0).integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    jpg = encode(img)
    assert jpg[:2] == b"\xff\xd8"
    assert cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR).shape == (64, 80, 3)
    assert len(encode(img, "jpeg", quality=50)) < len(encode(img, ".JPG", quality=95))
    png = encode(img, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), img)


def test_encode_rejects_unknown_formats_and_bad_quality():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(OnnxvizError, match="unknown image format 'gif'; valid: jpg, png"):
        encode(img, "gif")
    with pytest.raises(OnnxvizError, match=r"JPEG quality 0 is out of range; use 1..100"):
        encode(img, quality=0)
    with pytest.raises(OnnxvizError, match=r"encode takes a BGR or gray uint8 image; got float64 \(4, 4, 3\)"):
        encode(img.astype(float))
