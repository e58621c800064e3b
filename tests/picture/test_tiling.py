"""onnxviz.picture.tiling: channel selection, normalisation, colormaps, grids and layer stats."""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from onnxviz.errors import OnnxvizError
from onnxviz.picture.tiling import (
    COLORMAPS,
    GAP_COLOR,
    MAX_ENLARGED_SIDE,
    Box,
    colorize,
    enlargement,
    grid_columns,
    layer_grid,
    normalize,
    select_channels,
    tile,
    tile_box,
)


def numbered_tiles(count: int, h: int, w: int) -> np.ndarray:
    """uint8 tiles whose pixels are all different (mod 250) and never the gap value 255."""
    return (np.arange(count * h * w) % 250).astype(np.uint8).reshape(count, h, w)


# --- tile -------------------------------------------------------------------------

def test_tile_places_channel_i_at_row_i_div_columns_and_column_i_mod_columns():
    tiles = numbered_tiles(5, 2, 3)
    img = tile(tiles, columns=None, gap=1, gap_value=255, min_tile=None)
    assert img.shape == (2 * 2 + 1, 3 * 3 + 2)  # ceil(sqrt(5)) = 3 columns, 2 rows, no outer margin
    for i in range(5):
        box = tile_box(i, 3, 2, 3, gap=1)
        assert box == Box(y0=(i // 3) * 3, x0=(i % 3) * 4, y1=(i // 3) * 3 + 2, x1=(i % 3) * 4 + 3)
        assert np.array_equal(img[box.slices], tiles[i])


def test_tile_separators_are_gap_pixels_between_tiles_only():
    img = tile(numbered_tiles(9, 4, 5), columns=3, gap=2, gap_value=255, min_tile=None)
    assert img.shape == (3 * 4 + 2 * 2, 3 * 5 + 2 * 2)
    for y in (4, 5, 10, 11):
        assert (img[y] == 255).all()
    for x in (5, 6, 12, 13):
        assert (img[:, x] == 255).all()
    # Outside the separators no pixel is the gap value: no outer margin.
    inside = np.ones(img.shape, bool)
    inside[[4, 5, 10, 11]] = False
    inside[:, [5, 6, 12, 13]] = False
    assert (img[inside] != 255).all()


def test_tile_fills_unused_cells_of_last_row_with_separator_colour():
    tiles = numbered_tiles(5, 2, 3)
    img = tile(tiles, columns=3, gap=1, gap_value=255, min_tile=None)
    last = tile_box(5, 3, 2, 3, gap=1)
    assert (img[last.slices] == 255).all()
    assert (img[last.y0:, last.x0:] == 255).all()


def test_tile_colour_tiles_get_bgr_separators():
    tiles = np.stack([numbered_tiles(3, 2, 2)] * 3, axis=-1)
    img = tile(tiles, columns=2, gap=1, gap_value=(7, 8, 9), min_tile=None)
    assert img.shape == (5, 5, 3)
    assert (img[2] == (7, 8, 9)).all() and (img[:, 2] == (7, 8, 9)).all()
    assert (img[3:, 3:] == (7, 8, 9)).all()  # empty 4th cell
    assert np.array_equal(img[3:5, 0:2], tiles[2])


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 10, 16, 17, 64, 100, 512])
def test_default_columns_are_near_square(count):
    cols = grid_columns(count)
    rows = math.ceil(count / cols)
    assert cols == math.ceil(math.sqrt(count))
    assert rows <= cols and cols * rows >= count and (rows - 1) * cols < count


def test_columns_are_never_more_than_tiles_and_zero_is_refused():
    assert grid_columns(3, columns=10) == 3
    with pytest.raises(OnnxvizError, match="columns must be at least 1; got 0"):
        grid_columns(3, columns=0)


def test_tile_enlarges_7x7_maps_to_35x35_by_nearest_neighbour():
    tiles = numbered_tiles(4, 7, 7)
    img = tile(tiles, gap=1, gap_value=255, min_tile=32)
    assert enlargement(7, 7, 32) == 5
    assert img.shape == (2 * 35 + 1, 2 * 35 + 1)
    for i in range(4):
        box = tile_box(i, 2, 35, 35, gap=1)
        assert np.array_equal(img[box.slices], np.kron(tiles[i], np.ones((5, 5), np.uint8)))


def test_tile_keeps_native_resolution_when_maps_are_big_enough():
    tiles = numbered_tiles(2, 56, 40)
    assert enlargement(56, 40, 32) == 1
    img = tile(tiles, columns=2, gap=0, min_tile=32)
    assert np.array_equal(img, np.concatenate(list(tiles), axis=1))


def test_enlargement_never_shrinks_and_caps_long_side():
    assert enlargement(112, 112, 32) == 1
    assert enlargement(3, 3, 24) == 8
    assert enlargement(2, 100, 32) == MAX_ENLARGED_SIDE // 100  # 16 would make 1600 px
    assert enlargement(1, 600, 32) == 1
    assert enlargement(7, 7, None) == 1


def test_opencv_nearest_exact_maps_columns_exactly_over_the_enlargement_domain():
    # tile() relies on this for its column enlargement; plain INTER_NEAREST fails it.
    for w in range(1, MAX_ENLARGED_SIDE // 2 + 1):
        row = np.arange(w, dtype=np.uint16)[None, :].repeat(2, axis=0)
        for f in range(2, MAX_ENLARGED_SIDE // w + 1):
            out = cv2.resize(row, (w * f, 2), interpolation=cv2.INTER_NEAREST_EXACT)
            assert np.array_equal(out[0], np.arange(w * f) // f), (w, f)


def test_tile_enlarges_thousands_of_colour_tiles_exactly():
    rng = np.random.default_rng(3)
    tiles = rng.integers(0, 255, size=(2048, 5, 6, 3), dtype=np.uint8)
    img = tile(tiles, gap=1, min_tile=32)
    f = enlargement(5, 6, 32)
    assert f == 7
    for i in (0, 1, 45, 2047):
        box = tile_box(i, 46, 35, 42, gap=1)
        expected = np.repeat(np.repeat(tiles[i], f, axis=0), f, axis=1)
        assert np.array_equal(img[box.slices], expected)


def test_tile_refuses_bad_shapes_and_gap_values():
    with pytest.raises(OnnxvizError, match=r"tile takes \[C, h, w\] or \[C, h, w, 3\] with C >= 1; got shape \(4, 4\)"):
        tile(np.zeros((4, 4), np.uint8))
    with pytest.raises(OnnxvizError, match="got shape \\(0, 4, 4\\)"):
        tile(np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(OnnxvizError, match=r"gap_value \(1, 2, 3\) does not fit tiles of shape \(2, 4, 4\)"):
        tile(np.zeros((2, 4, 4), np.uint8), gap_value=(1, 2, 3))
    with pytest.raises(OnnxvizError, match="gap must be 0 or more pixels; got -1"):
        tile(np.zeros((2, 4, 4), np.uint8), gap=-1)


# --- normalize --------------------------------------------------------------------

def test_channel_normalisation_stretches_each_channel_to_0_255():
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    maps = np.stack([ramp, ramp * 10 - 3, ramp * 0.001])
    out = normalize(maps, "channel")
    assert out.dtype == np.uint8 and out.shape == maps.shape
    for c in range(3):
        assert out[c].min() == 0 and out[c].max() == 255
        assert np.array_equal(out[c], out[0])


def test_layer_normalisation_keeps_relative_strength():
    ramp = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    maps = np.stack([ramp, ramp * 10])
    out = normalize(maps, "layer")
    assert out[1].max() == 255 and out[1].min() == 0
    assert out[0].max() == round(255 / 10)  # 25.5 -> 26: ten times weaker shows ten times darker


def test_layer_normalisation_uses_given_value_range():
    maps = np.full((1, 4, 4), 5.0, np.float32)
    assert (normalize(maps, "layer", value_range=(0.0, 10.0)) == 128).all()


def test_constant_channels_are_flat_never_stretched_noise():
    rng = np.random.default_rng(0)
    maps = np.empty((3, 8, 8), np.float32)
    maps[0] = rng.uniform(0, 100, (8, 8))
    maps[1] = 42.0
    maps[2] = np.float32(3.0) + rng.normal(0, 1e-6, (8, 8)).astype(np.float32)  # float32 rounding noise
    out = normalize(maps, "channel")
    assert (out[1] == 0).all() and (out[2] == 0).all()
    assert out[0].max() == 255
    layer = normalize(maps, "layer")
    assert len(np.unique(layer[1])) == 1 and len(np.unique(layer[2])) == 1


def test_all_zero_layer_is_black_in_both_modes():
    maps = np.zeros((4, 5, 5), np.float32)
    assert (normalize(maps, "channel") == 0).all()
    assert (normalize(maps, "layer") == 0).all()


def test_nan_and_inf_count_as_zero_without_warnings():
    maps = np.ones((2, 4, 4), np.float32)
    maps[0, 0, 0] = np.nan
    maps[0, 0, 1] = np.inf
    maps[1, 1, 1] = -np.inf
    maps[1, 2, 2] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chan = normalize(maps, "channel")
        layer = normalize(maps, "layer")
    assert chan[0, 0, 0] == 0 and chan[0, 0, 1] == 0 and chan[0, 3, 3] == 255
    assert chan[1, 1, 1] == 0 and chan[1, 2, 2] == 255
    assert layer[1, 2, 2] == 255 and layer[0, 3, 3] == 128


def test_normalize_rejects_unknown_mode_and_wrong_shape():
    with pytest.raises(OnnxvizError, match="unknown normalisation 'global'; valid: channel, layer"):
        normalize(np.zeros((1, 2, 2), np.float32), "global")
    with pytest.raises(OnnxvizError, match=r"one image's \[C, H, W\] array; got shape \(1, 2, 2, 2\)"):
        normalize(np.zeros((1, 2, 2, 2), np.float32))


# --- select_channels --------------------------------------------------------------

def test_select_keeps_first_max_channels_in_index_order():
    maps = np.zeros((100, 2, 2), np.float32)
    assert np.array_equal(select_channels(maps), np.arange(64))
    assert np.array_equal(select_channels(maps, max_channels=None), np.arange(100))
    assert np.array_equal(select_channels(maps, max_channels=5), np.arange(5))


def test_select_sorts_by_mean_or_max_most_active_first():
    maps = np.zeros((4, 4, 4), np.float32)
    maps[0] = 1.0            # mean 1, max 1
    maps[1, 0, 0] = 10.0     # mean 0.625, max 10
    maps[2] = 2.0            # mean 2, max 2
    maps[3] = -1.0           # mean -1, max -1
    assert select_channels(maps, sort="mean").tolist() == [2, 0, 1, 3]
    assert select_channels(maps, sort="max").tolist() == [1, 2, 0, 3]
    assert select_channels(maps, max_channels=2, sort="max").tolist() == [1, 2]


def test_channels_slice_is_half_open_and_clipped_to_the_layer():
    maps = np.zeros((512, 2, 2), np.float32)
    assert select_channels(maps, channels=(10, 20)).tolist() == list(range(10, 20))
    assert select_channels(maps, channels=(500, 600), max_channels=None).tolist() == list(range(500, 512))
    maps[15] = 5.0
    assert select_channels(maps, channels=(10, 20), sort="max")[0] == 15  # indices stay absolute


@pytest.mark.parametrize("bad", [(20, 10), (600, 700), (-1, 5), (3, 3)])
def test_channels_slice_that_selects_nothing_is_refused(bad):
    with pytest.raises(OnnxvizError, match=rf"channels {bad[0]}:{bad[1]} select nothing in a layer with 512 channels; use a:b with 0 <= a < b and a < 512"):
        select_channels(np.zeros((512, 2, 2), np.float32), channels=bad)


def test_select_rejects_unknown_sort_and_zero_max_channels():
    maps = np.zeros((4, 2, 2), np.float32)
    with pytest.raises(OnnxvizError, match="unknown channel sort 'std'; valid: index, mean, max"):
        select_channels(maps, sort="std")
    with pytest.raises(OnnxvizError, match=r"max_channels must be at least 1 \(or None for all\); got 0"):
        select_channels(maps, max_channels=0)


# --- colorize ---------------------------------------------------------------------

def test_colorize_maps_any_leading_shape_in_one_call():
    gray = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5) * 4
    out = colorize(gray, "viridis")
    assert out.shape == (3, 4, 5, 3) and out.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(out[c], cv2.applyColorMap(gray[c], cv2.COLORMAP_VIRIDIS))
    assert colorize(gray[0], "turbo").shape == (4, 5, 3)


def test_gray_colormap_repeats_the_value_and_viridis_is_default():
    gray = np.array([[0, 128, 255]], np.uint8)
    assert np.array_equal(colorize(gray, "gray")[0], [[0, 0, 0], [128, 128, 128], [255, 255, 255]])
    assert next(iter(COLORMAPS)) == "viridis"
    dark, bright = colorize(np.array([[0, 255]], np.uint8))[0]
    assert dark.sum() < bright.sum() and bright[2] > 200 and bright[0] < 100  # purple -> yellow (BGR)


def test_colorize_rejects_unknown_names_and_float_input():
    with pytest.raises(OnnxvizError, match="unknown colormap 'rainbowz'; valid: viridis, gray, inferno, magma, plasma"):
        colorize(np.zeros((2, 2), np.uint8), "rainbowz")
    with pytest.raises(OnnxvizError, match=r"colorize takes uint8 \[..., H, W\]; got float32 of shape \(2, 2\); normalize\(\) it first"):
        colorize(np.zeros((2, 2), np.float32))


# --- layer_grid -------------------------------------------------------------------

def test_layer_grid_of_512_small_maps():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(512, 14, 14)).astype(np.float32)
    grid = layer_grid(maps, max_channels=None)
    assert grid.columns == 23 and grid.rows == 23
    assert grid.tile_height == grid.tile_width == 42 and grid.scale == 3
    assert grid.image.shape == (23 * 43 - 1, 23 * 43 - 1, 3) and grid.image.dtype == np.uint8
    assert grid.channels == list(range(512))
    assert (grid.image[grid.box(512).slices] == GAP_COLOR).all()


def test_layer_grid_tile_i_shows_channel_i_of_the_selection():
    rng = np.random.default_rng(2)
    maps = rng.uniform(0, 1, size=(10, 7, 7)).astype(np.float32)
    maps[6] *= 9.0
    grid = layer_grid(maps, max_channels=3, sort="max", colormap="gray", norm="channel")
    assert grid.channels[0] == 6
    for i, ch in enumerate(grid.channels):
        expected = np.kron(normalize(maps[ch:ch + 1])[0], np.ones((5, 5), np.uint8))
        assert np.array_equal(grid.image[grid.box(i).slices][..., 0], expected)


def test_layer_grid_layer_norm_uses_the_whole_layer_range():
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, 0, 0] = 1.0
    maps[1, 0, 0] = 10.0
    grid = layer_grid(maps, channels=(0, 1), norm="layer", colormap="gray")
    assert grid.channels == [0]
    assert grid.image.max() == 26  # 1/10 of the layer's max, not stretched to 255


def test_layer_grid_checks_options_before_work():
    maps = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(OnnxvizError, match="unknown colormap 'nope'"):
        layer_grid(maps, colormap="nope")
    with pytest.raises(OnnxvizError, match="unknown normalisation 'nope'"):
        layer_grid(maps, norm="nope")
    with pytest.raises(OnnxvizError, match=r"got shape \(1, 2, 4, 4\); take one image \(maps\[0\]\)"):
        layer_grid(maps[None])


def test_sprite_tiles_native_channels_row_major_without_gaps_and_keeps_values():
    from onnxviz.picture.tiling import grid_columns, scaled_sprites, sprite_ranges

    rng = np.random.default_rng(3)
    maps = rng.normal(0, 2, (5, 7, 9)).astype(np.float32)
    maps[3] = 1.5  # a constant channel
    low, high = sprite_ranges(maps.min(axis=(1, 2)), maps.max(axis=(1, 2)), "channel")
    columns = grid_columns(5)
    image = scaled_sprites(maps[None], low[None], high[None], columns)[0]
    assert columns == 3 and image.shape == (14, 27)
    assert image.dtype == np.uint8
    for i in range(5):
        r, c = divmod(i, 3)
        tile = image[r * 7:(r + 1) * 7, c * 9:(c + 1) * 9].astype(np.float64)
        values = low[i] + tile / 255 * (high[i] - low[i])
        assert np.abs(values - maps[i]).max() <= (high[i] - low[i]) / 255 * 0.5 + 1e-5
    assert low[3] == high[3] == pytest.approx(1.5) and not image[7:, :9].any()
    assert tile.shape == (7, 9) and not image[7:, 18:].any()  # the unused cell is 0


def test_sprite_ranges_layer_mode_shares_one_scale_and_rounding_noise_is_constant():
    from onnxviz.picture.tiling import sprite_ranges

    low, high = sprite_ranges(np.array([0.0, -1.0, 3.0]), np.array([2.0, 1.0, 3.0 + 1e-9]), "layer")
    assert low.tolist() == [-1.0] * 3 and high.tolist() == [3.0 + 1e-9] * 3
    low, high = sprite_ranges(np.array([0.0, -1.0, 3.0]), np.array([2.0, 1.0, 3.0 + 1e-9]), "channel")
    assert low.tolist() == [0.0, -1.0, 3.0] and high.tolist() == [2.0, 1.0, 3.0]  # within 1e-5 of the scale: constant


def test_sprite_grid_colours_each_tile_and_separates_them():
    from onnxviz.picture.tiling import grid_columns, scaled_sprites, sprite_grid

    maps = np.stack([np.full((4, 4), v, np.float32) + np.eye(4, dtype=np.float32) for v in range(3)])
    image = scaled_sprites(maps[None], np.zeros((1, 3)), np.ones((1, 3)) * 3, grid_columns(3))[0]
    grid = sprite_grid(image, (4, 4), 3, "gray", min_tile=8, gap=1)
    assert grid.shape == (17, 17, 3)  # 2x2 cells of 8 px (4 px maps enlarged twice) with 1 px gaps
    assert (grid[8, :] == 255).all() and (grid[:, 8] == 255).all()
    assert (grid[:8, :8, 0] == image[:4, :4].repeat(2, 0).repeat(2, 1)).all()


def test_large_maps_scaled_by_opencv_match_numpy_and_hit_both_ends():
    from onnxviz.picture.tiling import OPENCV_FROM_PIXELS, scaled_sprites, tile_sprites, to_uint8

    rng = np.random.default_rng(5)
    maps = rng.normal(0, 3, (2, 5, 50, 70)).astype(np.float32)
    assert 50 * 70 >= OPENCV_FROM_PIXELS
    maps[0, 2] = 4.0  # constant
    maps[1, 3] = np.maximum(maps[1, 3], 0)
    low, high = maps.min(axis=(2, 3)), maps.max(axis=(2, 3))
    high[0, 2] = low[0, 2]
    fast = scaled_sprites(maps, low, high, columns=2)  # 3 rows of 2, the last cell empty
    slow = tile_sprites(to_uint8(maps, low, high), 2)
    assert fast.shape == slow.shape == (2, 150, 140)
    assert np.abs(fast.astype(int) - slow).max() <= 1 and (fast != slow).mean() < 1e-3  # at most a rounding tie
    cells = fast.reshape(2, 3, 50, 2, 70).swapaxes(2, 3).reshape(2, 6, 50, 70)
    span = np.where(high > low, high - low, 1.0)
    exact = (maps - low[..., None, None]) / span[..., None, None] * 255
    assert np.abs(cells[:, :5] - exact).max() <= 0.5 + 1e-3
    assert (cells[:, 5] == 0).all() and (cells[0, 2] == 0).all()
    for n in range(2):
        for k in range(5):
            if (n, k) != (0, 2):
                assert cells[n, k].min() == 0 and cells[n, k].max() == 255
    # a NaN in one image sends that image (only) through numpy: the NaN drawn as 0, the rest the same
    bad = maps.copy()
    bad[1, 0, 0, 0] = np.nan
    again = scaled_sprites(bad, low, high, columns=2)
    assert np.array_equal(again[0], fast[0])
    assert again[1, 0, 0] == to_uint8(np.zeros((1, 1, 1), np.float32), low[1, :1], high[1, :1])[0, 0, 0]
    others = np.ones(again[1].shape, bool)
    others[0, 0] = False
    assert np.abs(again[1].astype(int) - fast[1])[others].max() <= 1


def test_a_channel_stuck_at_the_layers_max_is_drawn_at_the_max_and_a_dead_one_at_the_min():
    from onnxviz.picture.tiling import level_constant_channels, scaled_sprites, sprite_ranges

    maps = np.zeros((1, 3, 4, 4), np.float32)
    maps[0, 0] = np.linspace(0, 6, 16).reshape(4, 4)  # a live channel reaching the layer's max
    maps[0, 1] = 6.0  # stuck at the maximum (a saturated ReLU6)
    # channel 2: zero everywhere, the layer's minimum: dead
    low, high = sprite_ranges(maps.min(axis=(2, 3)), maps.max(axis=(2, 3)))
    sprites = scaled_sprites(maps, low, high, columns=3)
    assert (sprites[0, :, 4:8] == 0).all()  # before: drawn like the dead channel
    level_constant_channels(sprites, low, high, np.array([0.0]), np.array([6.0]), 3, (4, 4))
    assert (sprites[0, :, 4:8] == 255).all() and (sprites[0, :, 8:12] == 0).all()
    assert sprites[0, 0, 0] == 0 and sprites[0, 3, 3] == 255  # a live channel is untouched
    half = np.full((1, 1, 2, 2), 3.0, np.float32)
    low, high = sprite_ranges(half.min(axis=(2, 3)), half.max(axis=(2, 3)))
    sprite = scaled_sprites(half, low, high, columns=1)
    level_constant_channels(sprite, low, high, np.array([0.0]), np.array([6.0]), 1, (2, 2))
    assert (sprite == 128).all()  # halfway up the layer's range: the middle colour
