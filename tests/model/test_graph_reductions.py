"""graph.add_channel_reductions against onnx.reference.ReferenceEvaluator and ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from onnxviz.model.graph import add_channel_reductions, reduction_names

from atlas_models import SIZE, branchy_model

LAYERS = ["c1", "p1", "add", "c3"]


def full_maps(model, images):
    ref = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ref.run(None, {"image": images})))


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("score", ["max", "mean"])
def test_scores_and_positions_match_the_maps(opset, score):
    model = branchy_model(opset=opset)
    images = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    images[2] = 77.0  # a flat image: many equal values, the first one's position is kept
    maps = full_maps(model, images)
    reduced = add_channel_reductions(model, LAYERS, score)
    got_ref = dict(zip([o.name for o in reduced.graph.output], ReferenceEvaluator(reduced).run(None, {"image": images})))
    session = ort.InferenceSession(reduced.SerializeToString(), providers=["CPUExecutionProvider"])
    got_ort = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": images})))
    for layer in LAYERS:
        flat = maps[layer].reshape(3, maps[layer].shape[1], -1)
        want_score = flat.max(axis=2) if score == "max" else flat.mean(axis=2)
        want_pos = flat.argmax(axis=2)  # numpy: the first maximum
        s_name, p_name = reduction_names(layer)
        for got in (got_ref, got_ort):
            np.testing.assert_allclose(got[s_name], want_score, rtol=1e-5, atol=1e-5)
            assert got[s_name].shape == got[p_name].shape == flat.shape[:2]
            assert got[p_name].dtype == np.int64
        np.testing.assert_array_equal(got_ref[p_name], want_pos)
        # ORT's own maps may differ from the reference evaluator's in the last bits; positions of
        # distinct maxima agree, and its positions point at its own maximum
        ort_flat = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            [layer], {"image": images})[0].reshape(flat.shape)
        np.testing.assert_array_equal(got_ort[p_name], ort_flat.argmax(axis=2))


def test_only_scores_and_positions_leave_the_graph_and_the_head_is_pruned():
    model = branchy_model()
    reduced = add_channel_reductions(model, ["c1", "add"])
    outs = [o.name for o in reduced.graph.output]
    assert outs == [*reduction_names("c1"), *reduction_names("add")]
    ops = [n.op_type for n in reduced.graph.node]
    assert "MatMul" not in ops and "Softmax" not in ops and "GlobalAveragePool" not in ops
    assert len(model.graph.output) == 7  # the argument is left alone
    assert reduced.metadata_props == model.metadata_props


def test_bad_arguments_are_refused():
    model = branchy_model()
    with pytest.raises(ValueError, match="score must be one of"):
        add_channel_reductions(model, ["c1"], "median")
    with pytest.raises(ValueError, match="no tensors named \\['nope'\\]"):
        add_channel_reductions(model, ["nope"])
    with pytest.raises(ValueError, match="rank 2"):
        add_channel_reductions(model, ["predictions"])
    with pytest.raises(ValueError, match="repeated"):
        add_channel_reductions(model, ["c1", "c1"])
