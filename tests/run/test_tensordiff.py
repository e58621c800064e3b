from __future__ import annotations

import numpy as np
import pytest

from onnxviz.run.tensordiff import diff_outputs, diff_tensor, layer_group


def test_relative_error_is_max_error_over_the_reference_range():
    ref = np.array([[0.0, 10.0], [5.0, 2.0]])
    d = diff_tensor("x", ref, ref + np.array([[0.0, 0.01], [0.0, -0.02]]))
    assert d.max_abs == pytest.approx(0.02) and d.relative == pytest.approx(0.002)
    assert d.mean_abs == pytest.approx(0.0075) and d.cosine == pytest.approx(1.0, abs=1e-5)
    assert d.ok(0.003) and not d.ok(0.001)


def test_constant_reference_and_shape_mismatch():
    assert diff_tensor("c", np.ones(4), np.ones(4)).relative == 0.0
    assert not diff_tensor("c", np.ones(4), np.ones(4) * 1.1).ok(1.0)
    bad = diff_tensor("s", np.ones((2, 3)), np.ones((3, 2)))
    assert bad.relative == float("inf") and not bad.ok(1e9)


def test_opposite_maps_have_cosine_minus_one_and_nan_fails():
    a = np.random.default_rng(0).normal(size=100)
    assert diff_tensor("n", a, -a).cosine == pytest.approx(-1.0)
    b = a.copy()
    b[3] = np.nan
    assert not diff_tensor("nan", a, b).ok(1.0)


def test_diff_outputs_keeps_the_order_given():
    ref = {"b": np.zeros(2), "a": np.ones(2)}
    assert [d.name for d in diff_outputs(ref, ref, ["a", "b"])] == ["a", "b"]


@pytest.mark.parametrize("name, group", [("block1_conv2", "block1"), ("conv_pw_13_relu", "conv_pw_13"),
                                         ("conv2_block1_1_conv", "conv2"), ("mixed10", "mixed10"),
                                         ("predictions", "predictions"), ("base/conv1", "conv1")])
def test_layer_group(name, group):
    assert layer_group(name) == group
