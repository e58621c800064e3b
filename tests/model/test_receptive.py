"""Receptive fields from the graph, checked by perturbing pixels inside and outside the box."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxviz.model.receptive import Field, Span, receptive_fields

from atlas_models import SIZE, branchy_model

LAYERS = ["c1", "p1", "c2", "add", "c3"]


def run_maps(model, images):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": images.astype(np.float32)})))


def test_spans_follow_pad_dilation_stride_and_same_padding():
    fields = receptive_fields(branchy_model(), LAYERS + ["gap"])
    # Pad 1 then a 3x3 valid conv: position i reads pixels i-1 .. i+1
    assert fields["c1"] == Field(Span(1, -1, 3), Span(1, -1, 3), True)
    assert fields["p1"].height == Span(2, -1, 4)
    # 3x3 with dilation 2 (5 wide), stride 2, pads 2; the 1x1 shortcut's span lies inside it
    assert fields["c2"].height == Span(4, -5, 12)
    assert fields["add"] == fields["c2"]
    # SAME_UPPER, stride 2, on an 8-wide map: no padding before
    assert fields["c3"].height == Span(8, -5, 20)
    assert fields["gap"].exact is False and fields["gap"].box(0, 0, SIZE, SIZE) == (0, 0, SIZE, SIZE)


def test_box_is_clipped_to_the_image():
    field = Field(Span(8, -5, 20), Span(8, -5, 20), True)
    assert field.box(0, 0, 32, 32) == (0, 0, 15, 15)
    assert field.box(3, 3, 32, 32) == (19, 19, 32, 32)
    assert field.box(1, 2, 32, 32) == (11, 3, 31, 23)


def perturbation_setup(layer: str, linear: bool, seed: int):
    """The test model, `layer`'s receptive field, a random generator, a random input and `layer`'s maps for it."""
    model = branchy_model(linear=linear)
    field = receptive_fields(model, [layer])[layer]
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (1, SIZE, SIZE, 3))
    return model, field, rng, base, run_maps(model, base)[layer][0]


@pytest.mark.parametrize("layer", LAYERS)
def test_pixels_outside_the_box_never_change_the_activation(layer):
    model, field, rng, base, ref = perturbation_setup(layer, linear=False, seed=1)
    h, w = ref.shape[1:]
    for y, x in [(0, 0), (h // 2, w // 2), (h - 1, w - 1), (h // 3, w - 1)]:
        x0, y0, x1, y1 = field.box(y, x, SIZE, SIZE)
        outside = np.ones((SIZE, SIZE), bool)
        outside[y0:y1, x0:x1] = False
        assert outside.any()
        moved = base.copy()
        moved[0][outside] = rng.uniform(0, 255, (int(outside.sum()), 3))
        got = run_maps(model, moved)[layer][0]
        np.testing.assert_array_equal(got[:, y, x], ref[:, y, x], err_msg=f"{layer} at {(y, x)} box {x0, y0, x1, y1}")
        # ... while the perturbation did reach other positions of the same map
        assert not np.array_equal(got, ref)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_edge_of_the_box_can_change_the_activation(layer):
    """The box is tight: its first and last rows and columns each reach the position. (Where the
    box is clipped by the image border, strides and dilation may skip its last rows: there the box
    is a superset, which the outside test covers.)"""
    model, field, rng, base, ref = perturbation_setup(layer, linear=True, seed=2)
    h, w = ref.shape[1:]
    for y, x in [(h // 2, w // 2), (h // 2 - 1, w // 2 - 1)]:
        x0, y0, x1, y1 = field.box(y, x, SIZE, SIZE)
        assert (x1 - x0, y1 - y0) == (field.width.size, field.height.size), "pick positions whose box is not clipped"
        edges = {"top": (slice(y0, y0 + 1), slice(x0, x1)), "bottom": (slice(y1 - 1, y1), slice(x0, x1)),
                 "left": (slice(y0, y1), slice(x0, x0 + 1)), "right": (slice(y0, y1), slice(x1 - 1, x1))}
        for edge, (ys, xs) in edges.items():
            moved = base.copy()
            moved[0, ys, xs] += 100.0
            got = run_maps(model, moved)[layer][0]
            assert np.abs(got[:, y, x] - ref[:, y, x]).max() > 1e-4, f"{layer} {(y, x)}: the {edge} edge has no effect"


def test_real_network_outside_pixels_do_not_matter(shared_data, tmp_path):
    """SqueezeNet 1.1 (Caffe2, not made by onnxviz) through 'onnxviz export': fire modules, ceil-mode pools."""
    import onnx

    from onnxviz import export as export_onnx

    out = tmp_path / "squeezenet.onnx"
    export_onnx(shared_data / "onnx" / "squeezenet1.1.onnx", out, bgr=True)
    model = onnx.load(out)
    names = [o.name for o in model.graph.output][:-1]
    picks = [names[2], names[len(names) // 2], names[-3]]
    fields = receptive_fields(model, picks)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    from onnxviz.run.images import load_image, resize_image

    base = resize_image(load_image(shared_data / "images" / "coffee.png"), 224, 224)[None].astype(np.float32)
    ref = dict(zip(picks, session.run(picks, {model.graph.input[0].name: base})))
    for name in picks:
        field = fields[name]
        assert field.exact, name
        h, w = ref[name].shape[2:]
        y, x = h // 2, w // 2
        x0, y0, x1, y1 = field.box(y, x, 224, 224)
        assert (x1 - x0) < 224, f"{name}: box {x0, y0, x1, y1} covers the image, the check would prove nothing"
        moved = base.copy()
        mask = np.ones((224, 224), bool)
        mask[y0:y1, x0:x1] = False
        moved[0][mask] = rng.uniform(0, 255, (int(mask.sum()), 3))
        got = session.run([name], {model.graph.input[0].name: moved})[0]
        np.testing.assert_array_equal(got[0, :, y, x], ref[name][0, :, y, x], err_msg=name)
        inside = base.copy()
        inside[0, y0:y1, x0:x1] = rng.uniform(0, 255, (y1 - y0, x1 - x0, 3))
        got = session.run([name], {model.graph.input[0].name: inside})[0]
        assert not np.array_equal(got[0, :, y, x], ref[name][0, :, y, x]), name
