"""Golden images: the exact pixels of a few grids and filters, so that any change to how
maps are drawn shows up. Regenerate after an intended change with
`ONNXVIZ_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py` and look at the new files."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from onnxviz.picture.drawing import draw_filters
from onnxviz.picture.tiling import layer_grid

GOLDEN = Path(__file__).parent / "golden"


def maps(seed: int, c: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx * (i + 1) / c + i) + np.cos(4 * yy * (c - i) / c) for i in range(c)])
    out = np.maximum(base + rng.normal(0, 0.1, (c, h, w)), 0).astype(np.float32)
    out[1] = 0.5  # a dead (constant) channel: drawn flat
    return out


CASES = {
    "grid_12x20x20_viridis_channel.png": lambda: layer_grid(maps(0, 12, 20, 20)).image,
    "grid_10x7x7_gray_layer.png": lambda: layer_grid(maps(1, 10, 7, 7), norm="layer", colormap="gray").image,
    "grid_40x9x12_inferno_top16_mean.png": lambda: layer_grid(maps(2, 40, 9, 12), colormap="inferno", sort="mean",
                                                               max_channels=16).image,
    "filters_8x3x5x5.png": lambda: draw_filters(np.random.default_rng(3).normal(0, 1, (8, 3, 5, 5)).astype(np.float32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_golden_image(name):
    image = CASES[name]()
    path = GOLDEN / name
    if os.environ.get("ONNXVIZ_REGEN_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        cv2.imwrite(str(path), image)
    assert path.is_file(), f"golden image {path} is missing; run with ONNXVIZ_REGEN_GOLDEN=1 to create it"
    golden = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    golden = golden if golden.ndim == 3 or image.ndim == 2 else cv2.cvtColor(golden, cv2.COLOR_GRAY2BGR)
    assert golden.shape == image.shape
    assert np.array_equal(golden, image), f"{name}: {int((golden != image).any(axis=-1).sum())} pixels differ"
