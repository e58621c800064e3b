"""reduce: one layer of a few images reduced to statistics, chosen channels and 8-bit sprites,
checked against a plain per-image computation (what another implementation must match)."""
from __future__ import annotations

import numpy as np
import pytest

from onnxviz.render.options import RenderOptions
from onnxviz.render.reduce import reduce_layer


def maps_with_traps(count: int, h: int, w: int) -> np.ndarray:
    """[count, 6, h, w]: a channel zero everywhere, a constant one, a half-zero one; NaN in the last image."""
    maps = np.random.default_rng(5).normal(0, 3, (count, 6, h, w)).astype(np.float32)
    maps[:, 1] = 0
    maps[:, 2] = -2.5
    maps[:, 3] = np.maximum(maps[:, 3], 0)
    maps[-1, 4, 0, 0] = np.nan
    return maps


@pytest.mark.parametrize("h, w", [(5, 7), (60, 70)])  # scaled by numpy, by OpenCV
def test_statistics_and_sprites_are_those_of_each_image_alone(h, w):
    maps = maps_with_traps(3, h, w)
    reduced = reduce_layer(maps, RenderOptions(channels=(1, 6), max_channels=4))
    assert reduced.values is None and reduced.columns == 2
    for n in range(3):
        x = maps[n].astype(np.float64)
        np.testing.assert_allclose(reduced.stats[n], [x.min(), x.max(), x.mean(), (x == 0).mean()], rtol=1e-6)
        assert reduced.dead[n] == 1  # channel 1; the constant channel 2 is not dead
        assert reduced.channels[n].tolist() == [1, 2, 3, 4]
        for j, c in enumerate([1, 2, 3, 4]):
            channel = maps[n, c]
            assert reduced.ch_min[n, j] == channel.min() or np.isnan(channel.min())
            assert reduced.ch_max[n, j] == channel.max() or np.isnan(channel.max())
            lo, hi = reduced.low[n, j], reduced.high[n, j]
            if c in (1, 2) and np.isfinite(maps[n]).all():  # flat: drawn at its value's place in the layer's range
                assert lo == hi
                level = np.rint(255 * (float(channel.min()) - x.min()) / (x.max() - x.min()))
                expected = np.full((h, w), level)
            elif c in (1, 2) or not np.isfinite(channel).all():  # no range known: drawn as 0
                assert lo == hi
                expected = np.zeros((h, w))
            else:
                assert lo == channel.min() and hi == channel.max()
                expected = np.rint((channel.astype(np.float64) - lo) * 255 / (hi - lo))
            r, col = divmod(j, 2)
            tile = reduced.sprites[n, r * h:(r + 1) * h, col * w:(col + 1) * w].astype(int)
            assert np.abs(tile - expected).max() <= 1  # rounding of float32 against float64 at .5


def test_sorted_channels_are_each_images_own():
    """sort=mean: image 0's channels rise in mean, image 1's fall, so each gets the opposite order."""
    maps = np.ones((2, 5, 4, 4), np.float32) * np.arange(5, dtype=np.float32)[None, :, None, None]
    maps[1] = maps[1, ::-1]
    maps += np.random.default_rng(1).uniform(0, 0.1, maps.shape).astype(np.float32)
    reduced = reduce_layer(maps, RenderOptions(sort="mean", max_channels=3))
    assert reduced.channels.tolist() == [[4, 3, 2], [0, 1, 2]]
    np.testing.assert_allclose(reduced.ch_mean, maps.mean(axis=(2, 3))[[[0], [1]], reduced.channels], rtol=1e-6)


def test_a_vector_layer_gives_its_values_and_no_sprite():
    maps = np.arange(12, dtype=np.float32).reshape(2, 6, 1, 1) - 3
    reduced = reduce_layer(maps, RenderOptions())
    assert reduced.sprites is None and reduced.channels is None
    assert reduced.values.tolist() == maps[:, :, 0, 0].tolist()
    assert reduced.stats[:, 0].tolist() == [-3, 3] and reduced.dead == [1, 0]  # image 0 has a channel at 0
