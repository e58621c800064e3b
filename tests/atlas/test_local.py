"""atlas/local: the local engine."""
from __future__ import annotations

import numpy as np

from atlas_checks import LAYERS
from onnxviz.atlas.local import run_local
from onnxviz.atlas.options import AtlasOptions, EngineRun
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.atlas.plan import make_plan
from onnxviz.atlas.state import AtlasState
from onnxviz.run.images import collect_images


def test_reading_ahead_or_in_turn_gives_the_same_tops(atlas_model, atlas_images):
    """run_local's reading thread (at the lowest priority where ORT's threads take every core) and
    reading in turn give the same state, unreadable images included."""
    (atlas_images / "broken.jpg").write_bytes(b"not a jpeg")
    opts = AtlasOptions(layers=LAYERS, top=3, provider="cpu", batch_size=4)
    plan = make_plan(atlas_model, opts)
    paths = [str(p.resolve()) for p in collect_images([atlas_images])[0]]
    states = []
    for prefetch in (False, True):
        state = AtlasState.new(plan, opts.top)
        run_local(plan, state, state.add_images(paths), opts, lambda: None, None, prefetch=prefetch)
        states.append(state)
    a, b = states
    assert a.failed == b.failed and len(a.failed) == 1 and a.done.all() and b.done.all()
    for x, y in zip(a.tops, b.tops):
        for name in ("scores", "ids", "positions"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))


def test_the_local_engine_reports_where_it_ran(atlas_model, atlas_images, tmp_path):
    opts = AtlasOptions(layers=["c1"], top=2, provider="cpu")
    plan = make_plan(atlas_model, opts)
    state = AtlasState.new(plan, opts.top)
    ran = run_local(plan, state, state.add_images([str(p) for p in collect_images([atlas_images])[0]]), opts,
                    lambda: None, None)
    assert ran == EngineRun("cpu", None, 1, None)
    result = build_atlas(atlas_model, [atlas_images], tmp_path / "a", opts)
    assert (result.provider, result.fallback, result.ray, result.engine_times) == ("cpu", None, None, {})
