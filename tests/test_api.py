"""The Python API as a notebook uses it: load, activations, predict, grid, render."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import onnxviz
from onnxviz.errors import OnnxvizError
from tiny_models import tiny_onnx


@pytest.fixture()
def tiny(tmp_path):
    src = tmp_path / "plain.onnx"
    tiny_onnx(src)
    return onnxviz.export(src, tmp_path / "tiny.onnx").path


def test_import_is_light_and_fast():
    code = ("import sys, time; t = time.perf_counter(); import onnxviz; dt = time.perf_counter() - t; "
            "heavy = [m for m in ('numpy', 'onnxruntime', 'cv2', 'onnx', 'tensorflow', 'typer') if m in sys.modules]; "
            "print(heavy, dt)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]"
    assert float(out[-1]) < 0.05  # measured about 2 ms; the interpreter itself starts in about 15 ms


def test_activations_are_the_files_outputs_in_nchw(tiny):
    model = onnxviz.load(tiny, provider="cpu")
    assert [layer.name for layer in model.layers] == ["r", "scores"] and model.provider == "cpu"
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    acts = model.activations(images)
    assert list(acts) == ["r", "scores"] and acts["r"].shape == (3, 4, 8, 8) and acts["scores"].shape == (3, 4)
    # the same numbers as ONNX Runtime on the file itself (with its default options, whose kernels
    # may round differently), batch by batch or all at once
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"])
    want = sess.run(["r"], {sess.get_inputs()[0].name: images.astype(np.float32)})[0]
    np.testing.assert_allclose(acts["r"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(model.activations(list(images), layers="r", batch_size=2)["r"], acts["r"])
    assert "<table>" in acts._repr_html_()


def test_grid_is_rgb_uint8_and_shows_itself(tiny):
    model = onnxviz.load(tiny, provider="cpu")
    maps = model.activations(np.full((8, 8, 3), 200, np.uint8))["r"]
    picture = onnxviz.grid(maps[0], colormap="gray")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture._repr_png_().startswith(b"\x89PNG")
    coloured_png = onnxviz.grid(maps[0])._repr_png_()  # the PNG Jupyter shows is the picture, in RGB
    import cv2

    shown = cv2.imdecode(np.frombuffer(coloured_png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(shown, onnxviz.grid(maps[0]))
    # gray colormap: the three channels are equal, so RGB and BGR agree; viridis tells them apart
    coloured = onnxviz.grid(maps[0])
    from onnxviz.picture.tiling import layer_grid

    np.testing.assert_array_equal(coloured, layer_grid(maps[0]).image[..., ::-1])
    with pytest.raises(OnnxvizError, match=r"^maps must be one image's maps \[C, H, W\] \(or \[1, C, H, W\]\); "
                                           r"got shape \[2, 4, 8, 8\]"):
        onnxviz.grid(np.concatenate([maps, maps]))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 8, 8)), r"image 0 has shape \[3, 8, 8\]; expected \[H, W, 3\] RGB .* channels-first"),
    (np.zeros((8, 8, 3), complex), r"image 0 has dtype complex128; expected"),
    (np.zeros((8, 8, 3), bool), r"image 0 has dtype bool; expected"),
    (np.full((8, 8, 3), np.nan), r"image 0 has NaN or infinite values"),
    ([], r"images is empty"),
    (7, r"image 0 is a int; give a file path, a numpy array"),
    ("missing.png", r"cannot read image 'missing.png': no such file"),
])
def test_bad_images_say_what_was_expected(tiny, bad, message):
    model = onnxviz.load(tiny, provider="cpu")
    with pytest.raises(OnnxvizError, match=message):
        model.activations(bad)


def test_bad_arguments_name_the_parameter(tiny):
    model = onnxviz.load(tiny, provider="cpu")
    with pytest.raises(OnnxvizError, match=r"^layers 'nope' matches no layer of 'tiny.onnx'; it has 2: r, scores"):
        model.activations(np.zeros((8, 8, 3)), layers="nope")
    with pytest.raises(OnnxvizError, match=r"^top_k must be a positive integer"):
        model.predict(np.zeros((8, 8, 3)), top_k=0)
    with pytest.raises(OnnxvizError, match=r"^batch_size must be a positive integer"):
        model.activations(np.zeros((8, 8, 3)), batch_size=0)
    with pytest.raises(OnnxvizError, match=r"^render has no option 'colour'"):
        model.render("x.png", colour="red")


def test_real_mobilenet_in_a_notebook_agrees_with_the_command(mobilenet_onnx, shared_data, tmp_path):
    path, _ = mobilenet_onnx
    model = onnxviz.load(path, provider="cpu")
    photo = shared_data / "images" / "coffee.png"
    best = model.predict(photo, top_k=3)[0]
    assert best[0].label == "espresso" and best[0].score > 0.9
    # arrays already at the model's size go in as they are; paths are read and resized as the command does
    from onnxviz.run.images import load_image, resize_image

    pixels = resize_image(load_image(photo), 128, 128)
    acts = model.activations([photo, pixels], layers=["conv1*", "conv_pw_13_relu"])
    np.testing.assert_array_equal(acts["conv_pw_13_relu"][0], acts["conv_pw_13_relu"][1])
    assert acts["conv1_relu"].shape[:2] == (2, 8)
    result = model.render(photo, tmp_path / "out", layers=["conv1_relu"])
    summary = json.loads((result.images[0].folder / "summary.json").read_text())
    top = summary["predictions"][0]
    assert (top["label"], round(top["score"], 5)) == (best[0].label, round(best[0].score, 5))


def test_pil_images_are_accepted(tiny):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    model = onnxviz.load(tiny, provider="cpu")
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    np.testing.assert_array_equal(model.activations(Image.fromarray(rgb))["r"], model.activations(rgb)["r"])
