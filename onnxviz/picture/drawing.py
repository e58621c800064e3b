"""The first layer's filters drawn as colour patches: pure numpy + OpenCV, BGR uint8, ready for
`encoding.encode`."""
from __future__ import annotations

import numpy as np

from onnxviz.errors import OnnxvizError
from onnxviz.picture.tiling import GAP_COLOR, tile

CHANNEL_ORDERS: tuple[str, ...] = ("RGB", "BGR")
# Pictures written for people to look at (`--grids`, `onnxviz filters`) are enlarged, pixel for
# pixel, until their longer side is at least this: MobileNet 0.25's grids were 197 px wide and its
# filters 74 px, too small to see on a screen or a page.
MIN_PICTURE_SIDE = 512


def enlarged(image: np.ndarray, min_side: int = MIN_PICTURE_SIDE) -> np.ndarray:
    """`image` repeated N x N pixel for pixel (nearest neighbour, integer N: no new values, no blur),
    with N the smallest that makes its longer side at least `min_side`; as it is when already so."""
    factor = -(-min_side // max(image.shape[:2]))
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)

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
