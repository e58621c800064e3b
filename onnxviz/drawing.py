"""Pictures other than feature-map grids: first-layer filters, the prediction panel, encoding.

Pure numpy + OpenCV; every picture is BGR uint8, ready for `encode`.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .errors import OnnxvizError
from .tiling import GAP_COLOR, tile

CHANNEL_ORDERS: tuple[str, ...] = ("RGB", "BGR")
ENCODE_FORMATS: tuple[str, ...] = ("jpg", "png")

# The input image is enlarged (integer nearest-neighbour factor) until its short side
# reaches this, so that a 128x128 network input is legible beside its labels.
MIN_PREVIEW_SIDE = 320

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.55
_TEXT = (30, 30, 30)
_BAR = (200, 130, 40)  # BGR: a calm blue
_BAR_BACK = (230, 230, 230)
_PAD = 12
_ROW = 40  # text line + bar + spacing
_MAX_LABEL_CHARS = 40


def draw_filters(
    weights: np.ndarray,
    channel_order: str = "RGB",
    min_patch: int = 24,
    gap: int = 1,
) -> np.ndarray:
    """A first convolution's kernels `[O, I, kh, kw]` (ONNX Conv layout) as a BGR grid.

    One patch per output channel, near-square grid, patches enlarged by nearest
    neighbour to at least `min_patch` px. I == 3 gives colour patches, `channel_order`
    naming which input is R, G, B ("BGR" for networks fed BGR, e.g. Keras 'caffe'
    models: weights[:, 0] is then blue); I == 1 gray; any other I the mean over inputs,
    gray.

    Scaling: one symmetric scale for all filters, `w / max|w| * 127.5 + 127.5`, so that
    0 is mid-gray in every patch. The sign of each weight reads the same everywhere,
    filters compare in strength (a weak or dead filter looks flat instead of being
    stretched into noise), and a colour means the same in every patch: a red blob is
    a filter that wants more red than green and blue, a red/green pair is a
    colour-opponent filter. Per-filter min-max would move zero per patch and tint
    patches with colours their weights do not favour.
    """
    w = np.asarray(weights)
    if w.ndim != 4 or w.size == 0:
        raise OnnxvizError(
            f"filters must be a convolution weight [O, I, kh, kw] (ONNX Conv layout); got shape {tuple(w.shape)}"
        )
    if channel_order not in CHANNEL_ORDERS:
        raise OnnxvizError(f"unknown channel_order '{channel_order}'; valid: {', '.join(CHANNEL_ORDERS)}")
    w = np.nan_to_num(w.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    inputs = w.shape[1]
    if inputs == 3:
        bgr = w[:, ::-1] if channel_order == "RGB" else w
        patches = bgr.transpose(0, 2, 3, 1)  # [O, kh, kw, 3] in BGR
    elif inputs == 1:
        patches = w[:, 0]
    else:
        patches = w.mean(axis=1)
    peak = float(np.abs(patches).max())
    scale = 127.5 / peak if peak > 0 else 0.0
    u8 = np.clip(patches * scale + 128.0, 0, 255).astype(np.uint8)  # +128 = 127.5 + 0.5 rounding
    if u8.ndim == 3:
        u8 = np.repeat(u8[..., None], 3, axis=3)
    return tile(u8, gap=gap, gap_value=GAP_COLOR, min_tile=min_patch)


def _label_text(label: str) -> str:
    """Hershey fonts draw ASCII only; keep labels short enough for the panel."""
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in str(label).replace("_", " "))
    return text if len(text) <= _MAX_LABEL_CHARS else text[: _MAX_LABEL_CHARS - 3] + "..."


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0]


def draw_predictions(rgb: np.ndarray, predictions: list[tuple[str, float]]) -> np.ndarray:
    """The network's input image with its top-k labels and scores beside it, BGR uint8.

    `rgb` is the image as the model saw it (after resizing); inputs whose short side is
    under MIN_PREVIEW_SIDE are enlarged by an integer nearest-neighbour factor, so the
    pixels stay the model's. Scores all in 0..1 are shown as percentages with bars to
    scale; any other scores (logits) as numbers with bars relative to the largest.
    No predictions: the image alone.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
        raise OnnxvizError(f"draw_predictions takes an RGB uint8 image [H, W, 3]; got {img.dtype} {tuple(img.shape)}")
    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    if min(h, w) < MIN_PREVIEW_SIDE:
        f = math.ceil(MIN_PREVIEW_SIDE / min(h, w))
        bgr = np.repeat(np.repeat(bgr, f, axis=0), f, axis=1)  # exact f x f blocks
        h, w = h * f, w * f
    if not predictions:
        return bgr

    scores = [float(score) for _, score in predictions]
    finite = [s for s in scores if math.isfinite(s)]
    as_percent = bool(finite) and all(0.0 <= s <= 1.0 for s in finite)
    top = max((abs(s) for s in finite), default=0.0)
    rows = []
    for (label, _), score in zip(predictions, scores):
        value = f"{score * 100:.1f}%" if as_percent else f"{score:.3g}"
        if as_percent:
            frac = score
        else:
            frac = max(score, 0.0) / top if top > 0 and math.isfinite(score) else 0.0
        rows.append((_label_text(label), value, min(max(frac, 0.0), 1.0)))

    value_w = max(_text_width(v) for _, v, _ in rows)
    label_w = max(_text_width(t) for t, _, _ in rows)
    panel_w = max(260, label_w + value_w + 3 * _PAD)
    height = max(h, 2 * _PAD + len(rows) * _ROW)
    canvas = np.full((height, w + panel_w, 3), 255, dtype=np.uint8)
    canvas[:h, :w] = bgr
    x0, x1 = w + _PAD, w + panel_w - _PAD
    for k, (text, value, frac) in enumerate(rows):  # one row per label: k is small
        base = _PAD + k * _ROW + 18
        cv2.putText(canvas, text, (x0, base), _FONT, _FONT_SCALE, _TEXT, 1, cv2.LINE_AA)
        cv2.putText(canvas, value, (x1 - _text_width(value), base), _FONT, _FONT_SCALE, _TEXT, 1, cv2.LINE_AA)
        top_y = base + 7
        cv2.rectangle(canvas, (x0, top_y), (x1, top_y + 7), _BAR_BACK, -1)
        if frac > 0:
            cv2.rectangle(canvas, (x0, top_y), (x0 + max(1, round(frac * (x1 - x0))), top_y + 7), _BAR, -1)
    return canvas


def encode(image_bgr: np.ndarray, fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encode a BGR (or gray) uint8 picture as JPEG or PNG bytes.

    `quality` is the JPEG quality 1..100 (ignored for PNG, which is lossless and written
    at OpenCV's fast compression level 3).
    """
    kind = fmt.lower().lstrip(".")
    kind = "jpg" if kind == "jpeg" else kind
    if kind not in ENCODE_FORMATS:
        raise OnnxvizError(f"unknown image format '{fmt}'; valid: {', '.join(ENCODE_FORMATS)}")
    img = np.asarray(image_bgr)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))) or 0 in img.shape:
        raise OnnxvizError(f"encode takes a BGR or gray uint8 image; got {img.dtype} {tuple(img.shape)}")
    if kind == "jpg":
        if not 1 <= int(quality) <= 100:
            raise OnnxvizError(f"JPEG quality {quality} is out of range; use 1..100 (90 is a good default)")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode("." + kind, np.ascontiguousarray(img), params)
    if not ok:
        raise OnnxvizError(f"OpenCV could not encode a {img.shape} image as {kind}")
    return buf.tobytes()
