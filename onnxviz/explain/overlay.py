"""Maps over photos: a heat map for a class activation map, one colour per part for a factorization.
Pure numpy + OpenCV, RGB uint8 in and out."""
from __future__ import annotations

import cv2
import numpy as np

# Tableau's 10 colours (matplotlib's tab10), RGB: part j of every image gets PALETTE[j % 10].
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)
HEAT = cv2.COLORMAP_TURBO
ALPHA = 0.7  # the heat colour's opacity at a map's peak; it fades into the photo towards 0


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """`[..., h, w]` float maps to `[..., height, width]`, bilinear (pixel centres aligned)."""
    a = np.asarray(maps, np.float32)
    lead = a.shape[:-2]
    flat = a.reshape(-1, *a.shape[-2:])
    out = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in flat])
    return out.reshape(*lead, height, width)


def _table(colours: np.ndarray) -> np.ndarray:
    """RGB colours as a 256-entry table for `cv2.applyColorMap(levels, table)` (which then gives RGB)."""
    return np.ascontiguousarray(np.resize(np.asarray(colours, np.uint8), (256, 3)).reshape(256, 1, 3))


HEAT_TABLE = _table(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], HEAT)[:, 0, ::-1])
PARTS_TABLE = _table(PALETTE)  # level j: PALETTE[j % 10]


def _levels(values: np.ndarray) -> np.ndarray:
    """Values 0..1 (float32) as uint8 levels 0..255, rounded."""
    return cv2.convertScaleAbs(values, alpha=255)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Values 0..1 `[H, W]` as RGB uint8 through the heat colour scale."""
    values = np.clip(np.asarray(values, np.float32), 0, 1)
    return cv2.applyColorMap(_levels(values), HEAT_TABLE)


def heat_scale(width: int = 256, height: int = 12) -> np.ndarray:
    """The colour scale itself, low on the left: RGB uint8 `[height, width, 3]`."""
    return np.repeat(heat_colors(np.linspace(0, 1, width, dtype=np.float32)[None]), height, axis=0)


def _blend(colours: np.ndarray, photo: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """`colours` over `photo` (RGB uint8), pixel by pixel as opaque as `opacity` `[H, W]` (0..1, float32)."""
    return cv2.blendLinear(colours, np.ascontiguousarray(photo), opacity, np.float32(1) - opacity)


def heat_overlay(rgb: np.ndarray, cam: np.ndarray, top: float | None = None) -> np.ndarray:
    """`cam` `[h, w]` (>= 0) over the photo, scaled to its own maximum (or `top`): RGB uint8. The heat
    colour is as opaque as the map is high (ALPHA at the peak), so the photo shows where it is low."""
    height, width = rgb.shape[:2]
    top = float(np.max(cam)) if top is None else float(top)
    low = np.asarray(cam, np.float32) * np.float32(1 / top if top > 0 else 0)  # scaled, then upsampled: the same
    values = np.clip(cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
    heat = cv2.applyColorMap(_levels(values), HEAT_TABLE)
    return _blend(heat, rgb, values * np.float32(ALPHA))


def parts_overlay(rgb: np.ndarray, maps: np.ndarray, tops: np.ndarray) -> np.ndarray:
    """Factorized parts `[k, h, w]` over the photo: where part j is the strongest, its colour, as
    opaque as the part is strong there (its map over `tops[j]`, its maximum over the images shown),
    over the photo in gray."""
    height, width = rgb.shape[:2]
    k = maps.shape[0]
    # scaled before upsampling (both linear: the same values); the strongest part found plane by plane
    # (numpy's reductions along a short last axis are several times slower)
    low = np.asarray(maps, np.float32) / np.maximum(np.asarray(tops, np.float32), 1e-12).reshape(k, 1, 1)
    best = cv2.resize(low[0], (width, height), interpolation=cv2.INTER_LINEAR)
    winner = np.zeros((height, width), np.uint8)
    for j in range(1, k):
        plane = cv2.resize(low[j], (width, height), interpolation=cv2.INTER_LINEAR)
        winner[plane > best] = j % len(PALETTE)  # the first of equal maxima wins, as argmax's
        np.maximum(best, plane, out=best)
    colours = cv2.applyColorMap(winner, PARTS_TABLE)
    gray = cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return _blend(colours, gray, np.clip(best, 0, 1) * np.float32(0.75))


def caption(picture: np.ndarray, text: str) -> np.ndarray:
    """The picture with a line of text on a dark band below it."""
    band = np.full((18, picture.shape[1], 3), 32, np.uint8)
    cv2.putText(band, text[: max(1, picture.shape[1] // 7)], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([picture, band], axis=0)


def sheet(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Pictures in rows (each row as tall as its tallest), on white: RGB uint8."""
    heights = [max(p.shape[0] for p in row) for row in rows]
    width = max(p.shape[1] for row in rows for p in row)
    columns = max(len(row) for row in rows)
    out = np.full((sum(heights) + gap * (len(rows) + 1), columns * (width + gap) + gap, 3), 255, np.uint8)
    y = gap
    for row, height in zip(rows, heights):
        for c, picture in enumerate(row):
            x = gap + c * (width + gap)
            out[y:y + picture.shape[0], x:x + picture.shape[1]] = picture
        y += height + gap
    return out
