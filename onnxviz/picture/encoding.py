"""Pictures as JPEG or PNG bytes: the one place onnxviz encodes images.

PNG is written here rather than by OpenCV: the UP filter and one deflate stream at ISA-L's
level 2 (`isal`, where it has wheels; zlib level 1 with the RLE strategy elsewhere). Measured on
ResNet101V2's 376 sprites of one photo (13.7 M pixels): 46 ms and 10.07 MB against OpenCV's
fastest settings, 199 ms and 9.94 MB (benchmarks/RESULTS.md). JPEG is OpenCV's (libjpeg-turbo).
"""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from onnxviz.errors import OnnxvizError, OutputError

try:
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - platforms without isal wheels
    _isal = None

FORMATS: tuple[str, ...] = ("jpg", "png")


def encode(image_bgr: np.ndarray, fmt: str = "jpg", quality: int = 90) -> bytes:
    """A BGR (or gray) uint8 picture as JPEG (`quality` 1..100) or PNG bytes, its arguments checked."""
    kind = fmt.lower().lstrip(".")
    kind = "jpg" if kind == "jpeg" else kind
    if kind not in FORMATS:
        raise OnnxvizError(f"unknown image format '{fmt}'; valid: {', '.join(FORMATS)}")
    img = np.asarray(image_bgr)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))) or 0 in img.shape:
        raise OnnxvizError(f"encode takes a BGR or gray uint8 image; got {img.dtype} {tuple(img.shape)}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if kind == "png":
        return encode_png(img)
    if not 1 <= int(quality) <= 100:
        raise OnnxvizError(f"JPEG quality {quality} is out of range; use 1..100 (90 is a good default)")
    return encode_jpeg(img, quality)


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit gray ([H, W]) or BGR ([H, W, 3], OpenCV's order) image as PNG, every row UP-filtered."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or 0 in image.shape:
        raise OutputError(f"cannot encode a {image.dtype} image of shape {image.shape} as PNG")
    height, width = image.shape[:2]
    rows = image.reshape(height, -1) if image.ndim == 2 else image[:, :, ::-1].reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # UP: each byte minus the byte above it
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if image.ndim == 2 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", _deflate(filtered.data))
            + _chunk(b"IEND", b""))


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise OutputError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def _deflate(data: bytes) -> bytes:
    if _isal is not None:
        return _isal.compress(data, 2)
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return packer.compress(data) + packer.flush()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
