"""painting: a layer drawn for a whole batch at once."""
from __future__ import annotations

import numpy as np
import pytest

from onnxviz.render import painting
from onnxviz.model.info import LayerInfo
from onnxviz.render.painting import draw_layer
from onnxviz.render.options import RenderOptions


def awkward_maps(count: int) -> np.ndarray:
    """[count, 8, 5, 7] maps with what drawing must get right: a channel zero everywhere, a
    constant one, negative values, and NaN and inf in the second image."""
    maps = np.random.default_rng(3).normal(0, 2, (count, 8, 50, 70)).astype(np.float32)
    maps[:, 1] = 0
    maps[:, 2] = 1.5
    maps[:, 3] = np.maximum(maps[:, 3], 0)
    if count > 1:
        maps[1, 4, 0, 0], maps[1, 5, 1, 1], maps[1, 6, 2, 2] = np.nan, np.inf, -np.inf
    return maps


@pytest.mark.parametrize("options", [dict(), dict(sort="mean", max_channels=5, norm="layer", grids=True),
                                     dict(sort="max", channels=(2, 7), fmt="png", grids=True),
                                     dict(channels=(1, 8), max_channels=3)])
@pytest.mark.parametrize("shape", [(8, 5, 7), (8, 50, 70), (8, 1, 1)])  # scaled by numpy, by OpenCV; a vector
@pytest.mark.parametrize("group", [None, 2])  # the batch's maps at once, or two images at a time
def test_a_batch_drawn_at_once_gives_each_image_what_it_gets_alone(options, shape, group, monkeypatch):
    """render draws a layer for a whole batch in one go: each image's entry, sprite, PNG and grid
    must be exactly those it gets drawn alone."""
    opts = RenderOptions(**options)
    maps = awkward_maps(3)[:, :, :shape[1], :shape[2]].copy()
    if group:
        monkeypatch.setattr(painting, "GROUP_BYTES", maps[0].nbytes * group)
    layer = LayerInfo("conv", "Conv2D", [None, *shape], "NCHW")
    together = draw_layer(layer, 4, maps, opts)
    assert len(together) == 3
    for n in range(3):
        alone = draw_layer(layer, 4, maps[n:n + 1].copy(), opts)[0]
        assert together[n].entry.to_dict() == alone.entry.to_dict()
        assert together[n].png == alone.png and together[n].grid == alone.grid  # the PNG holds the sprite
        assert (alone.png is None) == (shape[1] == 1)
    assert together[0].entry.to_dict() != together[1].entry.to_dict()  # not one image drawn thrice
    if shape[1] > 1:
        entry = together[1].entry
        assert entry.stats.dead_channels == 1
        if not options:  # channels 0..7 in order: the constant channel is flat, the zero one dead
            assert entry.low[1] == entry.high[1] == 0 and entry.low[2] == entry.high[2] == 1.5
            assert entry.channel_stats.min[4] is None  # NaN is written as null
