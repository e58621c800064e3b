"""Models as people bring them: any input size (HxW, or the size the model states), outputs whose
shapes only a run can tell, tensors that are not image-like maps, and the checks that keep export
from writing a file that render refuses. Tiny ONNX graphs built here, exported through the CLI
and the API (which run render's own checks on the file before writing it)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import onnxviz
from onnxviz.cli import app
from onnxviz.errors import OnnxvizError
from onnxviz.exporter.sources.base import input_size_pair
from onnxviz.model.info import load_info

runner = CliRunner()
OPSET = 17


def _model(nodes, inits, input_shape, outputs, props=None):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", "c", "h", "w"][:3 if o == "dbox" else 4])
                               for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def _w(name, shape, seed=0, scale=0.5):
    return numpy_helper.from_array((np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32), name)


def detector(props=None):
    """A YOLO-like graph with dynamic height and width: a stride-2 Conv+Relu backbone map, and a
    DFL-style box head whose shape only a run can tell: Reshape to [N, 4, 16, A] through a shape
    computed from Shape (A = h * w anchors), Transpose, Softmax, a 1x1 Conv 16 -> 1: [N, 1, 4, A],
    and the boxes [N, 4, A] as the output."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="backbone.conv", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["backbone.act"], name="backbone.relu"),
        helper.make_node("Conv", ["backbone.act", "w2"], ["head"], name="head.conv"),
        helper.make_node("Shape", ["head"], ["hs"]),
        helper.make_node("Gather", ["hs", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "four_sixteen", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["head", "target"], ["boxes"]),
        helper.make_node("Transpose", ["boxes"], ["boxes_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["boxes_t"], ["soft"], axis=1),
        helper.make_node("Conv", ["soft", "dfl_w"], ["dfl.conv"], name="dfl.conv"),
        helper.make_node("Reshape", ["dfl.conv", "boxes_shape"], ["dbox"]),
    ]
    inits = [_w("w1", (8, 3, 3, 3)), _w("b1", (8,), 1), _w("w2", (64, 8, 1, 1), 2),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([4, 16], np.int64), "four_sixteen"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), "dfl_w"),
             numpy_helper.from_array(np.array([0, 4, -1], np.int64), "boxes_shape")]
    return _model(nodes, inits, ["batch", 3, "height", "width"], ["dbox"], props)


def pyramid():
    """Dynamic size, a stride-2 Conv, a 2x upsample and a Concat with the full-size map: runs only
    at even sizes."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["full"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["full", "w2"], ["half"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["half", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["full", "up"], ["cat"], axis=1),
    ]
    inits = [_w("w1", (4, 3, 3, 3)), _w("w2", (4, 4, 3, 3), 1),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    return _model(nodes, inits, ["n", 3, "h", "w"], ["cat"])


@pytest.mark.parametrize("given, pair", [("48x192", (48, 192)), (" 48 X 192 ", (48, 192)), ("224", (224, 224)),
                                         (224, (224, 224)), ((48, 192), (48, 192)), ([32], (32, 32)), (None, None)])
def test_input_size_is_n_or_height_by_width(given, pair):
    assert input_size_pair(given) == pair


@pytest.mark.parametrize("given, message", [
    ("0x5", "input_size 0x5 is not a size: height and width are whole numbers of pixels, at least 1; give N or HxW "
            "(e.g. 224 or 48x192)"),
    ("abc", "input_size takes N or HxW (e.g. 224 or 48x192), got 'abc'"),
    ("48x", "input_size takes N or HxW (e.g. 224 or 48x192), got '48x'"),
    ((0, 5), "input_size 0x5 is not a size"),
    (True, "input_size True is not a size"),
])
def test_a_bad_input_size_is_named(given, message):
    with pytest.raises(OnnxvizError) as err:
        input_size_pair(given)
    assert str(err.value).startswith(message)


def test_the_command_takes_height_by_width_and_render_resizes_to_it(tmp_path):
    src = tmp_path / "det.onnx"
    onnx.save(detector(), src)
    out = tmp_path / "det_48x64.onnx"
    result = runner.invoke(app, ["export", str(src), "--input-size", "48x64", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "input RGB 0..255 48x64 (as given)" in result.stdout
    info = load_info(out)
    assert (info.height, info.width) == (48, 64)
    assert info.layer("backbone.act").shape == [None, 8, 24, 32]
    photo = tmp_path / "wide.png"
    import cv2

    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (100, 300, 3), dtype=np.uint8))
    rendered = runner.invoke(app, ["render", str(out), str(photo), "-o", str(tmp_path / "r")])
    assert rendered.exit_code == 0, rendered.output
    summary = json.loads((tmp_path / "r" / "wide" / "summary.json").read_text())
    layers = {layer["name"]: layer for layer in summary["layers"]}
    assert layers["backbone.act"]["shape"] == [8, 24, 32]


@pytest.mark.parametrize("bad, message", [
    ("0x5", "error: --input-size 0x5 is not a size: height and width are whole numbers of pixels, at least 1; give "
            "N or HxW (e.g. 224 or 48x192)"),
    ("abc", "error: --input-size takes N or HxW (e.g. 224 or 48x192), got 'abc'"),
])
def test_the_command_refuses_a_bad_size_in_one_line_and_writes_nothing(tmp_path, bad, message):
    src = tmp_path / "det.onnx"
    onnx.save(detector(), src)
    result = runner.invoke(app, ["export", str(src), "--input-size", bad, "-o", str(tmp_path / "out" / "x.onnx")])
    assert result.exit_code == 1 and result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


def test_a_size_stated_in_the_metadata_is_the_default_and_export_says_so(tmp_path):
    src = tmp_path / "det.onnx"
    onnx.save(detector({"imgsz": "[32, 48]", "stride": "32"}), src)
    result = onnxviz.export(src, tmp_path / "det.onnx.out.onnx")
    assert (result.info.height, result.info.width) == (32, 48)
    assert result.size_reason == "from the model's metadata imgsz [32, 48]"
    given = onnxviz.export(src, tmp_path / "given.onnx", input_size=(16, 16))
    assert (given.info.height, given.info.width) == (16, 16) and given.size_reason == "as given"


def test_shapes_only_a_run_can_tell_are_measured_and_a_detection_head_is_left_out_with_a_note(tmp_path):
    src = tmp_path / "det.onnx"
    onnx.save(detector(), src)
    from onnxviz.exporter.sources.onnx import inspect_onnx

    open_shape = {layer.name: layer.shape for layer in inspect_onnx(src, input_size=(32, 32)).layers}
    assert None in open_shape["dfl.conv"][1:]  # shape inference alone cannot tell it
    result = onnxviz.export(src, tmp_path / "default.onnx", input_size=32)
    names = [layer.name for layer in result.info.layers]
    assert "backbone.act" in names and "dfl.conv" not in names
    assert result.info.layer("dbox").shape == [None, 4, 256]  # the output, its size measured
    assert any(note.startswith("left out of the default selection, not laid out like the image: dfl.conv [1, 4, 256]")
               for note in result.notes), result.notes
    # Asked for by name, it is exposed with its measured static shape and renders.
    chosen = onnxviz.export(src, tmp_path / "dfl.onnx", input_size=32, layers=["dfl.conv", "backbone.act"])
    assert chosen.info.layer("dfl.conv").shape == [None, 1, 4, 256]
    got = ort.InferenceSession(str(chosen.path), providers=["CPUExecutionProvider"]).run(
        ["dfl.conv"], {"x": np.zeros((2, 32, 32, 3), np.float32)})[0]
    assert got.shape == (2, 1, 4, 256)
    for layer in chosen.info.layers:  # every exposed output has a static shape
        assert all(isinstance(d, int) for d in layer.shape[1:]), layer


def test_a_size_the_model_cannot_run_at_is_refused_naming_one_it_runs_at(tmp_path):
    src = tmp_path / "pyramid.onnx"
    onnx.save(pyramid(), src)
    with pytest.raises(OnnxvizError) as err:
        onnxviz.export(src, tmp_path / "out" / "p.onnx", input_size=(33, 30))
    text = str(err.value)
    assert text.startswith(f"{src} does not run at input_size 33x30; it runs at 40x32, the next size up that is a "
                           f"multiple of 8: ONNX Runtime cannot run ")
    assert "\n" not in text and not (tmp_path / "out").exists()
    assert onnxviz.export(src, tmp_path / "ok.onnx", input_size=(34, 30)).info.height == 34


def test_a_fixed_size_model_names_the_size_it_takes(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"])]
    src = tmp_path / "fixed.onnx"
    onnx.save(_model(nodes, [_w("w", (4, 3, 3, 3))], [1, 3, 24, 24], ["r"]), src)
    result = runner.invoke(app, ["export", str(src), "--input-size", "48x192", "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: input 'x' of {src} has a fixed size [1, 3, 24, 24]: --input-size 48x192 does not fit it (it takes "
        f"24x24 only); leave it out")
    ok = onnxviz.export(src, tmp_path / "o.onnx")
    assert ok.size_reason == "fixed in the model's input"


def test_two_image_inputs_are_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["s"])], "two",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in "ab"],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 3, 8, 8])])
    src = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), src)
    result = runner.invoke(app, ["export", str(src), "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1] == (
        f"error: {src} has 2 inputs ('a' float[1, 3, 8, 8], 'b' float[1, 3, 8, 8]); onnxviz needs a model with one "
        f"image input")


def test_a_selection_that_filters_out_every_output_is_refused(tmp_path):
    src = tmp_path / "det.onnx"
    onnx.save(detector(), src)
    result = runner.invoke(app, ["export", str(src), "--input-size", "32", "--exclude", "*", "-o",
                                 str(tmp_path / "out" / "o.onnx")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (f"error: the selection leaves no layer of {src} to expose; run 'onnxviz layers "
                                     f"{src}' to see what it has")
    assert not (tmp_path / "out").exists()


def test_a_file_whose_layer_map_names_a_missing_output_is_refused_in_one_line(tmp_path):
    src = tmp_path / "det.onnx"
    onnx.save(detector(), src)
    good = onnxviz.export(src, tmp_path / "good.onnx", input_size=32).path
    model = onnx.load(str(good))
    entry = next(p for p in model.metadata_props if p.key == "onnxviz.layer.000")
    entry.value = entry.value.replace('"backbone.act"', '"backbone.gone"')
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    (tmp_path / "p.png").write_bytes(__import__("cv2").imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    for args in (["render", str(broken), str(tmp_path / "p.png"), "-o", str(tmp_path / "r")],):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.strip().splitlines()[-1].startswith(
            f"error: output 'backbone.gone' is not in '{broken}'; it has 3: backbone.act, head, dbox."), args
        assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()
    with pytest.raises(OnnxvizError, match="^output 'backbone.gone' is not in "):
        onnxviz.load(broken).activations(tmp_path / "p.png")


def test_export_refuses_what_render_would_refuse_and_writes_nothing(tmp_path, monkeypatch):
    from onnxviz.render import probe

    src = tmp_path / "det.onnx"
    onnx.save(detector(), src)

    def refuse(path):
        raise OnnxvizError("render says no")

    monkeypatch.setattr(probe, "check_renders", refuse)
    out = tmp_path / "new" / "det.onnx"
    with pytest.raises(OnnxvizError, match="^render says no$"):
        onnxviz.export(src, out, input_size=32)
    assert not (tmp_path / "new").exists()


def test_every_command_and_the_api_take_a_non_square_file(tmp_path):
    import cv2

    src = tmp_path / "det.onnx"
    onnx.save(detector(), src)
    out = onnxviz.export(src, tmp_path / "wide.onnx", input_size="32x64").path
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), np.random.default_rng(i).integers(0, 255, (90, 70, 3), dtype=np.uint8))
    model = onnxviz.load(out)
    maps = model.activations(photos / "p0.png")
    assert maps["backbone.act"].shape == (1, 8, 16, 32)
    for args in (["diff", str(out), str(photos / "p0.png"), "--providers", "cpu,cpu"],
                 ["bench", str(out), "--providers", "cpu", "--batch-sizes", "1", "--runs", "2", "--warmup", "1"],
                 ["atlas", str(out), str(photos), "-o", str(tmp_path / "atlas"), "--top", "2"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
