"""atlas/state: the top N per channel, the state file, resuming and adding images."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from atlas_checks import LAYERS, assert_same_as_brute_force, brute_force_table, brute_top, invoke
from atlas_models import branchy_model
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.atlas.state import EMPTY, TopN
from onnxviz.errors import OnnxvizError


@pytest.mark.parametrize("n", [1, 3, 9])
def test_topn_equals_brute_force_with_ties_in_any_batching(n):
    rng = np.random.default_rng(n)
    count, channels = 200, 7
    scores = rng.integers(0, 6, (count, channels)).astype(np.float32)  # many ties
    positions = rng.integers(0, 50, (count, channels))
    ids = np.arange(count)
    want = brute_top(scores, positions, ids, n)
    for sizes in ([1] * count, [8] * 25, [200], list(rng.integers(1, 30, 40))):
        top, start = TopN(channels, n), 0
        for size in sizes:
            stop = min(count, start + int(size))
            if start < stop:
                top.update(scores[start:stop], positions[start:stop], ids[start:stop])
            start = stop
        assert start == count
        for got, exp in zip((top.scores, top.ids, top.positions), want):
            np.testing.assert_array_equal(got, exp)


def test_topn_merge_and_sparse_offer_are_exact():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (120, 5)).astype(np.float32)
    positions = rng.integers(0, 9, (120, 5))
    ids = rng.permutation(120)
    want = brute_top(scores, positions, ids, 4)
    a, b = TopN(5, 4), TopN(5, 4)
    a.update(scores[:70], positions[:70], ids[:70])
    b.update(scores[70:], positions[70:], ids[70:])
    a.merge(b)
    np.testing.assert_array_equal(a.ids, want[1])
    c = TopN(5, 4)
    rows = [(ch, scores[k, ch], ids[k], positions[k, ch]) for k in range(120) for ch in range(5)]
    rng.shuffle(rows)
    ch, s, i, p = map(np.array, zip(*rows))
    c.offer(ch, s, i, p)
    for got, exp in zip((c.scores, c.ids, c.positions), want):
        np.testing.assert_array_equal(got, exp)


def test_topn_nan_counts_as_lowest_and_empty_slots_stay_last():
    top = TopN(2, 3)
    top.update(np.array([[np.nan, 1.0], [2.0, np.nan]], np.float32), np.zeros((2, 2), np.int64), np.array([0, 1]))
    assert top.ids[0].tolist() == [1, 0, EMPTY] and top.ids[1].tolist() == [0, 1, EMPTY]


def test_interrupted_atlas_resumes_and_added_images_merge_exactly(atlas_model, atlas_images, tmp_path):
    paths = sorted(atlas_images.iterdir())
    expected = brute_force_table(atlas_model, atlas_images, LAYERS, 3, "max")
    out = tmp_path / "atlas"
    opts = AtlasOptions(layers=LAYERS, top=3, provider="cpu", batch_size=2, checkpoint_every=4)

    seen = []

    def stop_after_ten(done, total, name):
        seen.append(done)
        if done >= 10:
            raise KeyboardInterrupt

    # the first 20 images (in name order), interrupted after 10
    with pytest.raises(KeyboardInterrupt):
        build_atlas(atlas_model, paths[:20], out, opts, progress=stop_after_ten)
    from onnxviz.atlas.state import AtlasState

    state = AtlasState.load(out / "atlas-state.npz")
    assert int(state.done.sum()) == 10 and len(state.images) == 20
    resumed = build_atlas(atlas_model, paths[:20], out, opts)
    assert resumed.resumed and resumed.new_images == 10
    # then the whole folder: the 13 new images are added
    added = build_atlas(atlas_model, [atlas_images], out, opts)
    assert added.new_images == 13 and added.images == 33
    assert_same_as_brute_force(out, expected)


def test_resumed_with_other_options_is_refused(atlas_model, atlas_images, tmp_path):
    out_dir = tmp_path / "a"
    code, _ = invoke(atlas_model, atlas_images, "-o", out_dir, "--layers", "c1", "--top", "3", "--provider", "cpu")
    assert code == 0
    before = (out_dir / "atlas-state.npz").read_bytes()
    code, out = invoke(atlas_model, atlas_images, "-o", out_dir, "--layers", "c1", "--top", "4", "--provider", "cpu")
    assert code == 1
    assert "holds an atlas made with another model or options (it has --top 3, this run --top 4)" in out
    code, out = invoke(atlas_model, atlas_images, "-o", out_dir, "--layers", "p1", "--top", "3")
    assert code == 1 and "it has layers c1, this run layers p1" in out
    other = tmp_path / "other.onnx"
    onnx.save(branchy_model(seed=9), other)
    code, out = invoke(other, atlas_images, "-o", out_dir, "--layers", "c1", "--top", "3")
    assert code == 1 and "it has model sha256" in out
    assert (out_dir / "atlas-state.npz").read_bytes() == before


def test_resuming_with_other_options_names_the_parameters_to_a_python_caller(atlas_model, atlas_images, tmp_path):
    from onnxviz.errors import OutputError

    build_atlas(atlas_model, [atlas_images], tmp_path / "a", AtlasOptions(layers=["c1"], top=3, provider="cpu"))
    with pytest.raises(OutputError) as err:
        build_atlas(atlas_model, [atlas_images], tmp_path / "a",
                    AtlasOptions(layers=["c1"], top=4, score="mean", provider="cpu"))
    assert "(it has top 3, this run top 4; it has score max, this run score mean)" in str(err.value)
    assert err.value.params == ("top", "score")


def test_state_file_round_trip(atlas_model, atlas_images, tmp_path):
    from onnxviz.atlas.state import AtlasState

    build_atlas(atlas_model, [atlas_images], tmp_path / "a", AtlasOptions(layers=["c1", "c3"], top=2, provider="cpu"))
    state = AtlasState.load(tmp_path / "a" / "atlas-state.npz")
    state.save(tmp_path)
    again = AtlasState.load(tmp_path / "atlas-state.npz")
    assert (again.fingerprint, again.images, again.failed) == (state.fingerprint, state.images, state.failed)
    np.testing.assert_array_equal(again.done, state.done)
    for x, y in zip(again.tops, state.tops):
        for name in ("scores", "ids", "positions"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    (tmp_path / "atlas-state.npz").write_bytes(b"PK damaged")
    with pytest.raises(OnnxvizError, match="atlas-state.npz' is damaged .*; delete it to start the atlas again"):
        AtlasState.load(tmp_path / "atlas-state.npz")
