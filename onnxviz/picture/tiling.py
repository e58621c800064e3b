"""Feature maps to pictures: pick channels, normalise, colour and tile them into one grid.

Pure numpy + OpenCV, arrays in, arrays out. A layer's maps for one image arrive as
float `[C, H, W]` (channel-first; the caller converts layouts). Everything is
vectorised over channels: a VGG block of 512 x 112 x 112 costs milliseconds, far
less than running the network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from onnxviz.errors import OnnxvizError

# Name -> OpenCV colormap id; None draws plain gray. The first entry is the default.
COLORMAPS: dict[str, int | None] = {
    "viridis": cv2.COLORMAP_VIRIDIS,
    "gray": None,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "cividis": cv2.COLORMAP_CIVIDIS,
    "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
    "parula": cv2.COLORMAP_PARULA,
    "twilight": cv2.COLORMAP_TWILIGHT,
    "ocean": cv2.COLORMAP_OCEAN,
    "rainbow": cv2.COLORMAP_RAINBOW,
    "hsv": cv2.COLORMAP_HSV,
    "pink": cv2.COLORMAP_PINK,
    "cool": cv2.COLORMAP_COOL,
    "spring": cv2.COLORMAP_SPRING,
    "summer": cv2.COLORMAP_SUMMER,
    "autumn": cv2.COLORMAP_AUTUMN,
    "winter": cv2.COLORMAP_WINTER,
    "deepgreen": cv2.COLORMAP_DEEPGREEN,
}
SORTS: tuple[str, ...] = ("index", "mean", "max")
NORMS: tuple[str, ...] = ("channel", "layer")

DEFAULT_MIN_TILE = 32
# Enlarging never makes a tile's long side exceed this (a 1 x 500 map stays usable).
MAX_ENLARGED_SIDE = 512
GAP_COLOR: tuple[int, int, int] = (255, 255, 255)  # white separators (BGR)
# A channel whose max - min is within this fraction of the layer's scale (the larger
# of its range and its largest magnitude) is constant: float32 rounding, not signal.
CONSTANT_RTOL = 1e-5
# scaled_sprites: channels of at least this many pixels are scaled by OpenCV, one call each, smaller
# ones by numpy over the whole batch at once. Batches of 8 x 64 channels: 224x224 6.3x faster with
# OpenCV, 56x56 1.3x, 28x28 0.5x (a call's overhead outweighs its speed), RESULTS 20.
OPENCV_FROM_PIXELS = 3000


@dataclass(frozen=True)
class Box:
    """Pixel box of one tile in a grid image: rows y0:y1, columns x0:x1."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass
class Grid:
    """One layer drawn as a grid: `image` BGR uint8; tile i shows channel `channels[i]`."""

    image: np.ndarray
    channels: list[int]
    columns: int
    rows: int
    tile_height: int  # after enlargement
    tile_width: int
    scale: int  # integer nearest-neighbour enlargement of each map
    gap: int

    def box(self, position: int) -> Box:
        """Where tile `position` (0-based, row-major) lies in `image`."""
        return tile_box(position, self.columns, self.tile_height, self.tile_width, self.gap)


def _check_maps(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.size == 0:
        raise OnnxvizError(
            f"feature maps must be one image's [C, H, W] array; got shape {tuple(maps.shape)}; "
            f"take one image (maps[0]) and convert NHWC to channel-first first"
        )
    if not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
        raise OnnxvizError(f"feature maps must be real numbers; got dtype {maps.dtype}")
    return maps


def _all_finite(x: np.ndarray) -> bool:
    # min and max carry any NaN or inf and, unlike isfinite(x).all(), allocate nothing
    return bool(np.isfinite(x.min()) and np.isfinite(x.max()))


def _finite(x: np.ndarray) -> np.ndarray:
    """`x` as float32 with NaN and +-inf replaced by 0 (copies only when needed)."""
    x = np.asarray(x, dtype=np.float32)
    if _all_finite(x):
        return x
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _constant_tolerance(lo: float, hi: float) -> float:
    return CONSTANT_RTOL * max(hi - lo, abs(lo), abs(hi))


def _value_range(maps: np.ndarray) -> tuple[float, float]:
    lo, hi = float(maps.min()), float(maps.max())
    if np.isfinite(lo) and np.isfinite(hi):
        return lo, hi
    x = _finite(maps)
    return float(x.min()), float(x.max())


def select_channels(
    maps: np.ndarray,
    max_channels: int | None = 64,
    channels: tuple[int, int] | None = None,
    sort: str = "index",
    scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Indices (into the layer's C) of the channels to draw, in drawing order.

    `scores`: every channel's (mean, max) when the caller has them already.

    `channels=(a, b)` keeps a:b (half-open, b clipped to C); `sort` orders them by index,
    or most active first by per-channel mean or max; then the first `max_channels`
    (None: all) are kept.
    """
    maps = _check_maps(maps)
    n = maps.shape[0]
    if sort not in SORTS:
        raise OnnxvizError(f"unknown channel sort '{sort}'; valid: {', '.join(SORTS)}")
    if max_channels is not None and max_channels < 1:
        raise OnnxvizError(f"max_channels must be at least 1 (or None for all); got {max_channels}")
    start, stop = 0, n
    if channels is not None:
        try:
            start, stop = (int(c) for c in channels)
        except (TypeError, ValueError):
            raise OnnxvizError(f"channels must be two integers a:b; got {channels!r}") from None
        if start < 0 or stop <= start or start >= n:
            raise OnnxvizError(
                f"channels {start}:{stop} select nothing in a layer with {n} channels; "
                f"use a:b with 0 <= a < b and a < {n}"
            )
        stop = min(stop, n)
    index = np.arange(start, stop)
    if sort != "index" and scores is not None:
        score = np.nan_to_num(np.asarray(scores[0 if sort == "mean" else 1][start:stop], dtype=np.float64))
        index = index[np.argsort(-score, kind="stable")]
    elif sort != "index":
        part = _finite(maps[start:stop]).reshape(stop - start, -1)
        score = part.mean(axis=1, dtype=np.float64) if sort == "mean" else part.max(axis=1)
        index = index[np.argsort(-score, kind="stable")]
    return index if max_channels is None else index[:max_channels]


def normalize(
    maps: np.ndarray,
    mode: str = "channel",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Float `[C, H, W]` -> uint8 `[C, H, W]` in 0..255.

    - `channel`: each channel min-max to 0..255, to show every channel's pattern.
    - `layer`: one min-max for all channels, so relative strength shows.
    Constant channels (max - min within CONSTANT_RTOL of the layer's scale) stay flat,
    0 in channel mode, never stretched into rounding noise. NaN and inf count as 0.
    `value_range` is the (min, max) of the whole layer when `maps` holds only some of
    its channels: layer mode maps it to 0..255, and both modes judge constancy by it.
    """
    maps = _check_maps(maps)
    if mode not in NORMS:
        raise OnnxvizError(f"unknown normalisation '{mode}'; valid: {', '.join(NORMS)}")
    x = _finite(maps)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    if value_range is None:
        value_range = (float(flat.min()), float(flat.max()))
    lo_all, hi_all = float(value_range[0]), float(value_range[1])
    tol = _constant_tolerance(lo_all, hi_all)
    if mode == "layer":
        span = hi_all - lo_all
        if span <= tol:
            return np.zeros(x.shape, dtype=np.uint8)
        lo = np.float32(lo_all)
        scale = np.float32(255.0 / span)
    else:
        lo = flat.min(axis=1)
        span = flat.max(axis=1).astype(np.float64) - lo
        with np.errstate(divide="ignore"):
            scale = np.where(span > tol, np.minimum(255.0 / span, np.finfo(np.float32).max), 0.0)
        lo = lo[:, None, None]
        scale = scale.astype(np.float32)[:, None, None]
    out = np.subtract(x, lo, dtype=np.float32)
    out *= scale
    out += 0.5
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def colorize(gray_u8: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """uint8 `[..., H, W]` -> BGR uint8 `[..., H, W, 3]` through a named colormap.

    One OpenCV call on a 2-D view, whatever the leading dimensions.
    """
    if colormap not in COLORMAPS:
        raise OnnxvizError(f"unknown colormap '{colormap}'; valid: {', '.join(COLORMAPS)}")
    gray = np.asarray(gray_u8)
    if gray.dtype != np.uint8 or gray.ndim < 2 or gray.size == 0:
        raise OnnxvizError(
            f"colorize takes uint8 [..., H, W]; got {gray.dtype} of shape {tuple(gray.shape)}; normalize() it first"
        )
    flat = np.ascontiguousarray(gray).reshape(-1, gray.shape[-1])
    cmap = COLORMAPS[colormap]
    bgr = cv2.cvtColor(flat, cv2.COLOR_GRAY2BGR) if cmap is None else cv2.applyColorMap(flat, cmap)
    return bgr.reshape(*gray.shape, 3)


def enlargement(height: int, width: int, min_tile: int | None = DEFAULT_MIN_TILE) -> int:
    """Integer factor that makes an `height x width` map at least `min_tile` on its short side.

    1 when it already is (no downscaling, ever); capped so the long side stays within
    MAX_ENLARGED_SIDE. 7x7 with min_tile 32 -> 5 (35x35).
    """
    if not min_tile or min(height, width) >= min_tile:
        return 1
    factor = math.ceil(min_tile / min(height, width))
    return max(1, min(factor, MAX_ENLARGED_SIDE // max(height, width)))


def grid_columns(count: int, columns: int | None = None) -> int:
    """Columns of a grid of `count` tiles: near-square by default, never more than `count`."""
    if columns is not None and columns < 1:
        raise OnnxvizError(f"columns must be at least 1; got {columns}")
    return max(1, min(columns or math.ceil(math.sqrt(count)), count))


def _enlarge(tiles: np.ndarray, f: int) -> np.ndarray:
    """`[C, h, w, (3)]` -> `[C, h*f, w*f, (3)]`, each pixel an f x f block.

    Rows: np.repeat copies whole pixel rows. Columns: one cv2.resize of all tiles
    stacked into a tall image, rows unscaled; INTER_NEAREST_EXACT maps column x to
    x // f exactly for every width tile() enlarges (plain INTER_NEAREST does not: its
    float step misses some, e.g. x = 3k with f = 3), which a test checks.
    """
    count, h, w = tiles.shape[:3]
    tall = np.repeat(tiles, f, axis=1)
    if tiles.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):  # beyond cv2.resize
        return np.repeat(tall, f, axis=2)
    tall = tall.reshape((count * h * f, w) + tiles.shape[3:])
    wide = cv2.resize(tall, (w * f, count * h * f), interpolation=cv2.INTER_NEAREST_EXACT)
    return wide.reshape((count, h * f, w * f) + tiles.shape[3:])


def tile_box(position: int, columns: int, tile_height: int, tile_width: int, gap: int = 1) -> Box:
    """Pixel box of tile `position` (row-major) in a grid built by `tile`."""
    row, col = divmod(position, columns)
    y0, x0 = row * (tile_height + gap), col * (tile_width + gap)
    return Box(y0, x0, y0 + tile_height, x0 + tile_width)


def tile(
    tiles: np.ndarray,
    columns: int | None = None,
    gap: int = 1,
    gap_value: int | tuple[int, int, int] = 255,
    min_tile: int | None = DEFAULT_MIN_TILE,
) -> np.ndarray:
    """Tiles `[C, h, w]` or `[C, h, w, 3]` -> one grid image, row-major.

    Tile i goes to row i // columns, column i % columns (`columns` defaults to
    ceil(sqrt(C))). Separators of `gap` px lie between tiles only, no outer margin;
    unused cells of the last row take the separator colour. Maps smaller than
    `min_tile` on their short side are enlarged by an integer nearest-neighbour factor
    (see `enlargement`). One resize and one strided write, no loop over tiles.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim not in (3, 4) or (tiles.ndim == 4 and tiles.shape[3] != 3) or 0 in tiles.shape:
        raise OnnxvizError(f"tile takes [C, h, w] or [C, h, w, 3] with C >= 1; got shape {tuple(tiles.shape)}")
    if gap < 0:
        raise OnnxvizError(f"gap must be 0 or more pixels; got {gap}")
    count, h, w = tiles.shape[:3]
    extra = tiles.shape[3:]
    cols = grid_columns(count, columns)
    rows = math.ceil(count / cols)
    f = enlargement(h, w, min_tile)
    th, tw = h * f, w * f
    fill = np.asarray(gap_value, dtype=tiles.dtype)
    if fill.shape not in ((), extra):
        raise OnnxvizError(
            f"gap_value {gap_value!r} does not fit tiles of shape {tuple(tiles.shape)}; "
            f"give one number for gray tiles, one or three (B, G, R) for colour tiles"
        )
    depth = int(np.prod(extra, dtype=int))  # 1 for gray, 3 for BGR
    height, width = rows * (th + gap) - gap, cols * (tw + gap) - gap
    image = np.empty((height, width * depth), dtype=tiles.dtype)  # 2-D: pixel rows as flat runs
    image[:] = np.broadcast_to(fill, (width,) + extra).reshape(1, -1)  # one pattern row, copied down

    if f > 1:
        tiles = _enlarge(tiles, f)
    runs = np.ascontiguousarray(tiles).reshape(count, th, tw * depth)

    # A writeable view of the cells as [row, y, col, run]: every index lands inside
    # `image` and no two overlap, so one assignment places all full rows of tiles.
    sy, sx = image.strides
    cells = np.lib.stride_tricks.as_strided(
        image, shape=(rows, th, cols, tw * depth), strides=((th + gap) * sy, sy, (tw + gap) * depth * sx, sx),
        writeable=True,
    )
    full = count // cols
    if full:
        cells[:full] = runs[: full * cols].reshape(full, cols, th, tw * depth).swapaxes(1, 2)
    rest = count - full * cols
    if rest:
        cells[full, :, :rest] = runs[full * cols:].swapaxes(0, 1)
    return image.reshape((height, width) + extra)


def layer_grid(
    maps: np.ndarray,
    *,
    max_channels: int | None = 64,
    channels: tuple[int, int] | None = None,
    sort: str = "index",
    norm: str = "channel",
    colormap: str = "viridis",
    min_tile: int | None = DEFAULT_MIN_TILE,
    columns: int | None = None,
    gap: int = 1,
) -> Grid:
    """Draw one layer's `[C, H, W]` maps as a BGR grid: select, normalise, colour, tile.

    Only the selected channels are normalised and coloured; layer normalisation still
    uses the whole layer's range, so the picture does not change with the selection.
    """
    maps = _check_maps(maps)
    if norm not in NORMS:
        raise OnnxvizError(f"unknown normalisation '{norm}'; valid: {', '.join(NORMS)}")
    if colormap not in COLORMAPS:
        raise OnnxvizError(f"unknown colormap '{colormap}'; valid: {', '.join(COLORMAPS)}")
    index = select_channels(maps, max_channels=max_channels, channels=channels, sort=sort)
    gray = normalize(maps[index], norm, value_range=_value_range(maps))
    image = tile(colorize(gray, colormap), columns=columns, gap=gap, gap_value=GAP_COLOR, min_tile=min_tile)
    h, w = maps.shape[1:]
    f = enlargement(h, w, min_tile)
    cols = grid_columns(len(index), columns)
    return Grid(
        image=image, channels=[int(i) for i in index], columns=cols, rows=math.ceil(len(index) / cols),
        tile_height=h * f, tile_width=w * f, scale=f, gap=gap,
    )


# ---------------------------------------------------------------- sprites: native resolution, 8-bit

def sprite_ranges(ch_min: np.ndarray, ch_max: np.ndarray, norm: str = "channel",
                  layer_range: tuple[Any, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per channel from the channels' min and max: `[k]` for one image, or
    `[N, k]` for N images at once.

    `channel`: each channel's own min..max; `layer`: the layer's min..max for all. A channel
    (or, in layer mode, a layer) whose span is within CONSTANT_RTOL of the layer's scale is
    constant: low == high, so float32 rounding is never stretched into a pattern.
    `layer_range`: the whole layer's (min, max) (numbers, or `[N]` arrays) when
    `ch_min`/`ch_max` cover only some of its channels (default: theirs; a non-finite one is
    ignored).
    """
    if norm not in NORMS:
        raise OnnxvizError(f"unknown normalisation '{norm}'; valid: {', '.join(NORMS)}")
    lo = np.asarray(ch_min, dtype=np.float64)
    hi = np.asarray(ch_max, dtype=np.float64)
    finite = np.isfinite(lo) & np.isfinite(hi)
    lo = np.where(finite, lo, 0.0)
    hi = np.where(finite, hi, 0.0)
    with np.errstate(invalid="ignore"):
        lo_all = np.where(finite, lo, np.inf).min(axis=-1, keepdims=True)
        hi_all = np.where(finite, hi, -np.inf).max(axis=-1, keepdims=True)
    if layer_range is not None:
        given_lo = np.asarray(layer_range[0], dtype=np.float64)[..., None]
        given_hi = np.asarray(layer_range[1], dtype=np.float64)[..., None]
        use = np.isfinite(given_lo) & np.isfinite(given_hi)
        lo_all, hi_all = np.where(use, given_lo, lo_all), np.where(use, given_hi, hi_all)
    none = ~np.isfinite(lo_all)  # no finite channel and no range given
    lo_all, hi_all = np.where(none, 0.0, lo_all), np.where(none, 0.0, hi_all)
    tol = CONSTANT_RTOL * np.maximum(np.maximum(hi_all - lo_all, np.abs(lo_all)), np.abs(hi_all))
    if norm == "layer":
        high = np.where(hi_all - lo_all > tol, hi_all, lo_all)
        return np.broadcast_to(lo_all, lo.shape).copy(), np.broadcast_to(high, lo.shape).copy()
    return lo, np.where(hi - lo > tol, hi, lo)


def _scale_shift(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: value * scale + shift maps low -> 0 and high -> 255 (a constant channel: 0)."""
    low = np.asarray(low, dtype=np.float64)
    span = np.asarray(high, dtype=np.float64) - low
    with np.errstate(divide="ignore"):
        scale = np.where(span > 0, np.minimum(255.0 / np.where(span > 0, span, 1.0), np.finfo(np.float32).max), 0.0)
    return scale, -low * scale


def to_uint8(maps: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Float `[k, H, W]` (or `[N, k, H, W]` with `[N, k]` ranges) -> uint8, channel i scaled so
    low[i] -> 0 and high[i] -> 255, rounded half to even; NaN and inf are drawn as 0."""
    scale, shift = _scale_shift(low, high)
    out = np.multiply(_finite(maps), scale.astype(np.float32)[..., None, None], dtype=np.float32)
    out += shift.astype(np.float32)[..., None, None]
    np.rint(out, out=out)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def tile_sprites(gray: np.ndarray, columns: int) -> np.ndarray:
    """uint8 `[N, k, H, W]` -> N sprites `[N, rows * H, columns * W]`: tiles row-major, no gaps,
    the unused cells of the last row 0. One copy."""
    n, k, h, w = gray.shape
    rows = math.ceil(k / columns)
    if rows * columns != k:
        padded = np.zeros((n, rows * columns, h, w), np.uint8)
        padded[:, :k] = gray
        gray = padded
    return np.ascontiguousarray(gray.reshape(n, rows, columns, h, w).transpose(0, 1, 3, 2, 4)).reshape(
        n, rows * h, columns * w)


def scaled_sprites(maps: np.ndarray, low: np.ndarray, high: np.ndarray, columns: int,
                   finite: Any = None) -> np.ndarray:
    """Float channels `[N, k, H, W]` with `[N, k]` ranges -> N sprites `[N, rows * H, columns * W]`:
    `to_uint8` then `tile_sprites`, each image the same whatever its batch.

    Large maps are scaled by OpenCV straight into their place in the sprite, one call per
    channel, which rounds and saturates in the same pass: for VGG16's maps a tenth of numpy's
    time for scaling and tiling (RESULTS 20). Every value lies in low..high, so the absolute value
    OpenCV takes changes nothing. An image with NaN or inf, or with values so far from 0 for
    their span that float32 cannot place them, goes through numpy. `finite`: whether each image
    is free of NaN and inf, when the caller knows (from its min and max); None: look.
    """
    x = np.asarray(maps, dtype=np.float32)
    count, k, h, w = x.shape
    if h * w < OPENCV_FROM_PIXELS:
        return tile_sprites(to_uint8(x, low, high), columns)
    scale, shift = _scale_shift(low, high)
    finite = np.broadcast_to(np.asarray([_all_finite(i) for i in x] if finite is None else finite), count)
    out = np.zeros((count, math.ceil(k / columns) * h, columns * w), np.uint8)
    for n in range(count):
        if not finite[n] or np.abs(shift[n]).max(initial=0) >= 1e6:
            out[n] = tile_sprites(to_uint8(x[n:n + 1], low[n:n + 1], high[n:n + 1]), columns)[0]
            continue
        for j, (alpha, beta) in enumerate(zip(scale[n].tolist(), shift[n].tolist())):
            r, c = divmod(j, columns)
            cv2.convertScaleAbs(x[n, j], out[n, r * h:(r + 1) * h, c * w:(c + 1) * w], alpha, beta)
    return out


def level_constant_channels(sprites: np.ndarray, low: np.ndarray, high: np.ndarray, layer_low: np.ndarray,
                            layer_high: np.ndarray, columns: int, cell: tuple[int, int]) -> None:
    """Draw each constant channel (low == high) of `[N, rows * H, columns * W]` sprites, in place, at
    its value's place in its layer's range `layer_low..layer_high` (`[N]`), not at 0: a channel
    stuck at the layer's maximum is then drawn in the colour of the maximum, and only a channel at
    the layer's minimum (a dead ReLU, zero everywhere) in the colour of the minimum. Its value is
    still `low`, whatever the level."""
    h, w = cell
    for n, j in zip(*np.nonzero(np.asarray(low) == np.asarray(high))):
        lo, hi, value = float(layer_low[n]), float(layer_high[n]), float(low[n, j])
        if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(value)) or hi <= lo:
            continue
        r, c = divmod(int(j), columns)
        sprites[n, r * h:(r + 1) * h, c * w:(c + 1) * w] = int(np.clip(np.rint(255 * (value - lo) / (hi - lo)), 0, 255))


def sprite_grid(sprite: np.ndarray, cell: tuple[int, int], count: int, colormap: str = "viridis",
                min_tile: int | None = DEFAULT_MIN_TILE, gap: int = 1) -> np.ndarray:
    """The coloured grid of the first `count` channels of a sprite (uint8, maps of `cell` (H, W)
    tiled row-major without gaps, as `scaled_sprites` makes), with white separators and small
    maps enlarged, BGR uint8."""
    h, w = cell
    columns = sprite.shape[1] // w
    rows = sprite.shape[0] // h
    cells = sprite.reshape(rows, h, columns, w).swapaxes(1, 2).reshape(rows * columns, h, w)[:count]
    return tile(colorize(cells, colormap), columns=columns, gap=gap, gap_value=GAP_COLOR, min_tile=min_tile)
