"""One layer of a few images reduced to what the report shows: the layer's statistics, the
channels chosen, their ranges and the 8-bit sprite that holds them.

This is the part of painting that touches every value of a map (two passes: statistics, then
scaling), so it is the seam where another implementation (on a GPU, or as reductions inside
the ONNX graph) would replace numpy and OpenCV. `painting` turns a `Reduced` into summary
entries and encoded pictures.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from onnxviz.picture.tiling import grid_columns, level_constant_channels, scaled_sprites, select_channels, sprite_ranges
from onnxviz.render.options import RenderOptions


@dataclass
class Reduced:
    """One layer of N images (`reduce_layer`'s `maps`: `[N, C, H, W]`)."""

    stats: np.ndarray  # [N, 4] float64: the layer's min, max, mean and fraction of zeros per image
    dead: list[int]  # per image: channels that are zero everywhere
    values: np.ndarray | None = None  # a vector layer (H = W = 1): [N, C], its values; nothing below
    channels: np.ndarray | None = None  # [N, k] the channels shown, in order
    ch_min: np.ndarray | None = None  # [N, k] each shown channel's min, max and mean
    ch_max: np.ndarray | None = None
    ch_mean: np.ndarray | None = None
    low: np.ndarray | None = None  # [N, k] the values drawn as 0 and 255
    high: np.ndarray | None = None
    columns: int = 0  # of the sprites' tiles
    sprites: np.ndarray | None = None  # uint8 [N, rows * H, columns * W]: the shown channels tiled


def reduce_layer(maps: np.ndarray, opts: RenderOptions) -> Reduced:
    """`maps` (`[N, C, H, W]`, float32) reduced as `opts` asks (channels, sort, norm). Each
    image gets exactly what it gets reduced alone."""
    count, c, h, w = maps.shape
    flat = maps.reshape(count, c, -1)
    size = flat.shape[2] * c
    # Per channel min and max (which give the layer's, the channels that are zero everywhere
    # and the stored channels' ranges), then OpenCV's count of non-zero values and its sum
    # (each about half numpy's time on these arrays, RESULTS 19.3).
    ch_lo, ch_hi = flat.min(axis=2), flat.max(axis=2)
    lo, hi = ch_lo.min(axis=1), ch_hi.max(axis=1)
    stats = np.empty((count, 4))
    stats[:, 0], stats[:, 1] = lo, hi
    for n in range(count):
        stats[n, 2] = cv2.sumElems(flat[n])[0] / size
        stats[n, 3] = 1.0 - cv2.countNonZero(flat[n]) / size
    dead = np.count_nonzero((ch_lo == 0) & (ch_hi == 0), axis=1).tolist()
    if h == w == 1:
        return Reduced(stats, dead, values=flat[:, :, 0])
    if opts.sort == "index":  # the same channels for every image
        chosen = select_channels(maps[0], opts.max_channels, opts.channels, opts.sort)
        if np.array_equal(chosen, np.arange(chosen[0], chosen[0] + len(chosen))):
            picked = maps[:, chosen[0]:chosen[0] + len(chosen)]  # a run of channels: a view, not a copy
        else:
            picked = maps[:, chosen]
        chosen = np.broadcast_to(chosen, (count, len(chosen)))
    else:  # each image's most active channels
        means = flat.mean(axis=2)
        chosen = np.stack([select_channels(maps[n], opts.max_channels, opts.channels, opts.sort,
                                           scores=(means[n], ch_hi[n])) for n in range(count)])
        picked = np.take_along_axis(maps, chosen[:, :, None, None], axis=1)
    k = chosen.shape[1]
    ch_min, ch_max = np.take_along_axis(ch_lo, chosen, axis=1), np.take_along_axis(ch_hi, chosen, axis=1)
    low, high = sprite_ranges(ch_min, ch_max, opts.norm, layer_range=(lo, hi))
    columns = grid_columns(k)
    finite = np.isfinite(lo) & np.isfinite(hi)  # min and max carry any NaN or inf
    sprites = scaled_sprites(picked, low, high, columns, finite)
    level_constant_channels(sprites, low, high, lo, hi, columns, (h, w))
    return Reduced(stats, dead, channels=chosen, ch_min=ch_min, ch_max=ch_max,
                   ch_mean=picked.reshape(count, k, -1).mean(axis=2), low=low, high=high, columns=columns,
                   sprites=sprites)
