"""onnxviz.picture.encoding: pictures as JPEG or PNG bytes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxviz.picture.encoding import encode, encode_png
from onnxviz.errors import OnnxvizError, OutputError


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


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (97, 64), (5, 9, 3), (40, 33, 3)])
def test_png_decodes_to_the_same_pixels_with_opencv(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    image[: shape[0] // 2] = 17  # a flat part as well as noise
    back = cv2.imdecode(np.frombuffer(encode_png(image), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.shape == image.shape and np.array_equal(back, image)  # BGR in, BGR back


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 3), np.uint8)])
def test_png_refuses_what_it_cannot_write(bad):
    with pytest.raises(OutputError, match="cannot encode a .* image of shape"):
        encode_png(bad)
