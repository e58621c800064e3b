"""torchvision's preprocessing: the resize against Pillow (torchvision's PIL path written out),
the presets, the resize recipe a file records and what render, diff and export do with it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxviz.errors import OnnxvizError
from onnxviz.run.images import center_crop, load_image, resize_image, resize_shorter
from onnxviz.exporter.presets import IMAGENET_MEAN, IMAGENET_STD, choose_preprocessing, choose_resize, get_preset

Image = pytest.importorskip("PIL.Image", reason="Pillow is the reference for torchvision's resize (pip install -e '.[dev]')")
MODELS = Path(__file__).resolve().parents[1] / "torch_models"


def torchvision_pil(img, size: int, crop_h: int, crop_w: int) -> np.ndarray:
    """torchvision.transforms.Resize(size) + CenterCrop((crop_h, crop_w)) on a PIL image, as
    torchvision 0.2x's functional code does it (F.resize -> _compute_resized_output_size ->
    img.resize(BILINEAR); F.center_crop -> int(round(...)) offsets, zero padding when smaller)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    w, h = img.size
    if crop_w > w or crop_h > h:
        pad = [(crop_w - w) // 2 if crop_w > w else 0, (crop_h - h) // 2 if crop_h > h else 0,
               (crop_w - w + 1) // 2 if crop_w > w else 0, (crop_h - h + 1) // 2 if crop_h > h else 0]
        padded = Image.new("RGB", (w + pad[0] + pad[2], h + pad[1] + pad[3]))
        padded.paste(img, (pad[0], pad[1]))
        img = padded
        w, h = img.size
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    return np.asarray(img.crop((left, top, left + crop_w, top + crop_h)))


@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (257, 256), (480, 640), (100, 70), (999, 13), (224, 224)])
def test_resize_matches_torchvision_on_pil_to_the_grey_level(shape):
    rng = np.random.default_rng(sum(shape))
    # Smooth content plus noise: both the filter's averaging and its edges are exercised.
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = (127 + 100 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None]) + rng.normal(0, 25, shape + (3,))
    rgb = np.clip(base, 0, 255).astype(np.uint8)
    for size, crop in ((256, 224), (342, 299), (232, 224), (64, 56), (16, 16)):
        want = torchvision_pil(Image.fromarray(rgb), size, crop, crop)
        got = resize_image(rgb, crop, crop, str(size))
        assert got.shape == want.shape
        assert np.array_equal(got, want), (shape, size, int(np.abs(got.astype(int) - want).max()))


def test_resize_matches_torchvision_on_the_real_photos(shared_data):
    worst = 0
    for path in sorted((shared_data / "images").iterdir()):
        want = torchvision_pil(Image.open(path).convert("RGB"), 256, 224, 224)
        got = resize_image(load_image(path), 224, 224, "256")
        worst = max(worst, int(np.abs(got.astype(int) - want.astype(int)).max()))
    assert worst <= 1, worst  # measured: 0 on all four photos


def test_center_crop_pads_like_torchvision_when_the_image_is_smaller():
    rgb = np.full((3, 5, 3), 200, np.uint8)
    want = torchvision_pil(Image.fromarray(rgb), 3, 6, 8)
    np.testing.assert_array_equal(center_crop(resize_shorter(rgb, 3), 6, 8), want)


def test_presets_and_their_errors():
    tv = get_preset("torchvision")
    assert tv.preprocessing.mean == IMAGENET_MEAN and tv.preprocessing.std == IMAGENET_STD
    assert tv.preprocessing.scale == pytest.approx(1 / 255) and not tv.preprocessing.bgr
    assert choose_resize("torchvision", None, 224, 224) == "256"
    assert choose_resize("torchvision", None, 299, 299) == "342"  # torchvision's Inception V3 recipe
    assert choose_resize("torchvision", "232", 224, 224) == "232"  # --resize overrides the preset
    assert choose_resize(None, None, 224, 224) is None
    with pytest.raises(OnnxvizError, match=r"^preprocess 'imagenet' is not a preset; the presets are: torchvision "
                                           r"\(ImageNet mean/std, scale 1/255, shorter side to 256 and centre crop "
                                           r"224\); caffe .*; tf .*; torch .*; none "):
        get_preset("imagenet")
    with pytest.raises(OnnxvizError, match=r"^preprocess torchvision already sets mean, std, scale and channel "
                                           r"order; leave out mean, bgr or preprocess$"):
        choose_preprocessing("torchvision", mean=[0.5], bgr=True)
    for bad in ("0", "-3"):
        with pytest.raises(OnnxvizError, match=rf"^resize {bad} is not a positive size; give the shorter side in "
                                               rf"pixels, e.g. 256$"):
            choose_resize("torchvision", bad, 224, 224)


def test_export_records_the_recipe_and_render_and_diff_use_it(tmp_path, monkeypatch):
    from onnxviz.compare.diff import diff_model
    from onnxviz.model.info import load_info
    from onnxviz.api import export as export_onnx
    from onnxviz.render.options import RenderOptions
    from onnxviz.render.pipeline import render

    out = tmp_path / "resnet.onnx"
    export_onnx(MODELS / "resnet_dynamo_opset18.onnx", out, preprocess="torchvision")
    info = load_info(out)
    assert info.resize == "27" and info.preprocessing.mode == "torchvision"  # 24 * 256 / 224 = 27.4
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(1)
    import cv2

    cv2.imwrite(str(photo), rng.integers(0, 256, (40, 61, 3), dtype=np.uint8))
    result = render(out, [photo], tmp_path / "out", RenderOptions(filters=False))
    summary = json.loads((result.images[0].folder / "summary.json").read_text())
    assert summary["input"]["resize"] == "27"
    result = render(out, [photo], tmp_path / "out2", RenderOptions(filters=False, resize="stretch"))
    assert json.loads((result.images[0].folder / "summary.json").read_text())["input"]["resize"] == "stretch"
    seen = []
    import onnxviz.compare.diff as diff_mod

    real = diff_mod.resize_image
    monkeypatch.setattr(diff_mod, "resize_image", lambda *a: seen.append(a[3]) or real(*a))
    diff_model(out, photo, ("cpu", "cpu"), None, 1e-3, None)
    assert seen == ["27"]
    with pytest.raises(OnnxvizError, match="^resize 0 is not a positive size"):
        render(out, [photo], tmp_path / "out3", RenderOptions(resize="0"))


def test_a_photo_through_the_file_equals_torchvisions_transform_through_the_source(shared_data, tmp_path):
    """What render feeds (resize from the file's recipe, preprocessing folded in) against torchvision's
    Resize + CenterCrop + ToTensor + Normalize, run through the original torch export."""
    import onnxruntime as ort

    from onnxviz.api import export as export_onnx
    from onnxviz.run.session import open_session

    src = MODELS / "mobilenetv3_dynamo_opset18.onnx"
    out = tmp_path / "m.onnx"
    result = export_onnx(src, out, preprocess="torchvision")
    photo = shared_data / "images" / "chelsea.png"
    pixels = resize_image(load_image(photo), 24, 24, result.info.resize)
    ours = open_session(out, "cpu").run(pixels[None].astype(np.float32))
    tv = torchvision_pil(Image.open(photo).convert("RGB"), 27, 24, 24).astype(np.float32) / 255.0
    x = ((tv - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)).transpose(2, 0, 1)[None]
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    got = ours[result.info.prediction_output]
    assert np.abs(got - want).max() <= 1e-5 * float(np.ptp(want))


def test_the_api_resizes_as_the_file_says(tmp_path):
    import cv2

    import onnxviz

    out = tmp_path / "resnet.onnx"
    onnxviz.export(MODELS / "resnet_legacy_opset20.onnx", out, preprocess="torchvision")
    photo = tmp_path / "photo.png"
    rgb = np.random.default_rng(3).integers(0, 256, (41, 57, 3), dtype=np.uint8)
    cv2.imwrite(str(photo), rgb[..., ::-1])
    model = onnxviz.load(out)
    got = model.activations(photo, "layer1.*")
    want = model.activations(resize_image(rgb, 24, 24, "27"), "layer1.*", resize="stretch")  # already 24x24
    assert list(got) == ["layer1.0.relu", "layer1.0.conv2+bn", "layer1.0.relu#2"]
    for name in got:
        np.testing.assert_array_equal(got[name], want[name])
    stretched = model.activations(photo, "layer1.0.relu", resize="stretch")["layer1.0.relu"]
    assert not np.array_equal(stretched, got["layer1.0.relu"])
