"""The overlays' pictures against plain numpy formulas of what they draw."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxviz.explain.overlay import ALPHA, HEAT, PALETTE, heat_colors, heat_overlay, heat_scale, parts_overlay


def _photo(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _up(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps])


def test_heat_colours_are_opencvs_colour_map_in_rgb():
    values = np.linspace(0, 1, 256, dtype=np.float32)[None]
    bgr = cv2.applyColorMap(np.round(values * 255).astype(np.uint8), HEAT)
    assert np.array_equal(heat_colors(values), bgr[..., ::-1])
    assert heat_scale(64, 3).shape == (3, 64, 3)


@pytest.mark.parametrize("size", [(224, 224), (96, 160)])
def test_heat_overlay_blends_the_map_as_opaque_as_it_is_high(size):
    height, width = size
    rgb = _photo(height, width)
    cam = np.random.default_rng(2).random((7, 5)).astype(np.float32) * 3
    got = heat_overlay(rgb, cam)
    values = np.clip(_up(cam[None] / cam.max(), height, width)[0], 0, 1)
    heat = heat_colors(values).astype(np.float64)
    alpha = (values * ALPHA)[..., None]
    want = rgb + alpha * (heat - rgb)
    assert got.shape == rgb.shape and got.dtype == np.uint8
    assert np.abs(got - want).max() <= 1  # OpenCV's blend: within a level
    # where the map is 0 the photo is untouched
    low = values == 0
    assert np.array_equal(heat_overlay(rgb, np.zeros((7, 5), np.float32)), rgb)
    assert np.array_equal(got[low], rgb[low])


def test_parts_overlay_colours_each_pixel_by_its_strongest_part():
    height, width = 112, 84
    rgb = _photo(height, width)
    maps = np.random.default_rng(3).random((12, 7, 6)).astype(np.float32)
    tops = maps.max(axis=(1, 2)) * 1.2
    got = parts_overlay(rgb, maps, tops)
    up = _up(maps / tops[:, None, None], height, width)
    winner, strength = up.argmax(axis=0), np.clip(up.max(axis=0), 0, 1) * 0.75
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)[..., None]
    want = gray * (1 - strength[..., None]) + PALETTE[winner % len(PALETTE)] * strength[..., None]
    assert got.shape == rgb.shape and got.dtype == np.uint8
    assert np.abs(got - want).max() <= 1
