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


def test_results_show_themselves_in_a_line_or_a_small_table(tiny, tmp_path):
    src = tmp_path / "plain2.onnx"
    tiny_onnx(src)
    exported = onnxviz.export(src, tmp_path / "again.onnx")
    line = repr(exported)
    assert line.startswith(f"<ExportResult {tmp_path / 'again.onnx'} (") and "2 outputs match" in line
    assert len(line) < 300 and "\n" not in line
    model = onnxviz.load(tiny, provider="cpu")
    from tiny_models import write_image

    write_image(tmp_path / "a.png", 0, 8)
    result = model.render(tmp_path / "a.png", tmp_path / "out")
    line = repr(result)
    assert line.startswith(f"<RenderResult: 1 image(s) into {tmp_path / 'out'}/, ") and len(line) < 300
    assert f"{tmp_path / 'out' / 'a' / 'index.html'}" in line
    page = result._repr_html_()
    assert len(page) < 2000 and "<table>" in page and "a.png" in page


def test_layers_show_as_a_table_with_the_class_filled(tmp_path):
    from onnxviz.render.demo import MODEL

    model = onnxviz.load(MODEL, provider="cpu")
    table = repr(model.layers)
    lines = table.splitlines()
    assert lines[0].split() == ["name", "class", "shape", "channels"]
    assert lines[1].split() == ["0", "conv1", "Conv2D", "Nx8x64x64", "8"]
    assert len(lines) == 1 + len(model.info.layers)
    assert all(len(line.split()) >= 4 for line in lines[1:])  # every row has its class
    assert "<td>Conv2D</td>" in model.layers._repr_html_()
    assert model.layers[0].name == "conv1"  # still the LayerInfo objects


def test_arrays_that_would_predict_wrongly_are_refused_or_converted_aloud():
    import cv2

    from onnxviz.api import ImageWarning
    from onnxviz.render.demo import MODEL, PHOTO

    model = onnxviz.load(MODEL, provider="cpu")
    rgb = cv2.imread(str(PHOTO))[..., ::-1]
    assert model.predict(rgb, top_k=1)[0][0].label == "espresso"
    with pytest.raises(OnnxvizError, match=r"^image 0 is float with values from 0 to 1, which looks like pixels "
                                           r"scaled to 0..1; the model takes 0..255: pass a \* 255"):
        model.predict(rgb / 255.0)
    with pytest.raises(OnnxvizError, match=r"^image 0 has values from -1 to 1; expected pixels 0..255; the "
                                           r"model's own preprocessing is in the file"):
        model.predict(rgb / 127.5 - 1)
    with pytest.raises(OnnxvizError, match=r"^image 0 has values from 0 to 65535; expected pixels 0..255; for "
                                           r"16-bit pixels divide by 257"):
        model.predict(rgb.astype(np.uint16) * 257)
    bgr = cv2.imread(str(PHOTO))
    with pytest.warns(ImageWarning, match=r"image 0 looks BGR \(mean blue 159 against red 52\), as cv2.imread gives"):
        model.predict(bgr)
    assert model.predict(bgr, channels="bgr", top_k=1)[0][0].label == "espresso"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(bgr[..., ::-1].copy(), channels="rgb")  # said to be RGB: no warning
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    with pytest.warns(ImageWarning, match=r"image 0 has one channel \(\[400, 600\]\): taken as grey, its values "
                                          r"repeated into R, G and B"):
        a = model.activations(grey[..., None], layers="conv1")["conv1"]
    np.testing.assert_array_equal(a, model.activations(np.repeat(grey[..., None], 3, 2), layers="conv1")["conv1"])
    with pytest.raises(OnnxvizError, match=r"^channels must be 'rgb' or 'bgr', got 'rbg'"):
        model.predict(rgb, channels="rbg")


def test_a_folder_is_refused_with_what_to_do(tiny, tmp_path):
    model = onnxviz.load(tiny, provider="cpu")
    with pytest.raises(OnnxvizError, match=rf"^image 0 '{tmp_path}' is a folder; activations and predict take image "
                                           r"files, arrays or PIL images: list its files .*or give the folder to "
                                           r"model.render$"):
        model.activations(tmp_path)


def test_activations_say_when_their_pictures_show_only_32_channels():
    from onnxviz.render.demo import MODEL, PHOTO

    model = onnxviz.load(MODEL, provider="cpu")
    acts = model.activations(PHOTO, layers=["conv1", "conv_pw_13_relu"])
    page = acts._repr_html_()
    assert "at most 32 channels a layer" in page  # conv_pw_13_relu has 256
    assert repr(acts) == "<Activations of 2 layers: conv1: [1, 8, 64, 64], conv_pw_13_relu: [1, 256, 4, 4]>"
    small = model.activations(PHOTO, layers=["conv1"])
    assert "channels a layer" not in small._repr_html_()


def test_no_notebook_progress_outside_a_kernel_even_with_ipykernel_imported():
    pytest.importorskip("ipykernel", reason="ipykernel not installed")
    import ipykernel  # noqa: F401  (imported, as a test runner that runs notebooks has it)

    from onnxviz.api import notebook_progress

    assert notebook_progress() is None
