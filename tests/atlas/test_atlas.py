"""`onnxviz atlas` as a whole: the result against brute force, bad input, the links from render."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from atlas_checks import LAYERS, assert_same_as_brute_force, brute_force_table, brute_top, invoke, runner, table
from atlas_models import SIZE, branchy_model
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.atlas.plan import default_layers
from onnxviz.cli import app
from onnxviz.model.info import read_info
from onnxviz.model.receptive import receptive_fields
from onnxviz.run.images import collect_images, load_image, resize_image


@pytest.mark.parametrize("score", ["max", "mean"])
def test_atlas_equals_brute_force(atlas_model, atlas_images, tmp_path, score):
    out = tmp_path / "atlas"
    result = build_atlas(atlas_model, [atlas_images], out,
                         AtlasOptions(layers=LAYERS, top=4, score=score, provider="cpu", batch_size=7))
    assert result.images == 33 and result.new_images == 33 and not result.failed
    assert_same_as_brute_force(out, brute_force_table(atlas_model, atlas_images, LAYERS, 4, score))
    # crop boxes are the receptive field of the position, clipped
    fields = receptive_fields(branchy_model(), LAYERS)
    for row in table(out)[::37]:
        y, x = row["position"]
        assert row["box"] == list(fields[row["layer"]].box(y, x, SIZE, SIZE))


def test_unreadable_image_is_a_warning_and_a_count(atlas_model, atlas_images, tmp_path):
    (atlas_images / "broken.jpg").write_bytes(b"not a jpeg")
    result = runner.invoke(app, ["atlas", str(atlas_model), str(atlas_images), "-o", str(tmp_path / "a"),
                                 "--layers", "c1",
                                 "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning: cannot read image" in result.output and "broken.jpg" in result.output
    assert "atlas of 33 images (34 new" in result.output and "1 unreadable" in result.output


def test_empty_dataset_and_folder_without_images(atlas_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    code, out = invoke(atlas_model, empty, "-o", tmp_path / "a")
    assert code == 1
    assert out.strip().startswith(f"error: no images found (folder '{empty}' has no images (.bmp, .jpeg, .jpg")
    assert out.count("\n") == 1
    assert not (tmp_path / "a").exists()


def test_top_zero(atlas_model, atlas_images, tmp_path):
    code, out = invoke(atlas_model, atlas_images, "-o", tmp_path / "a", "--top", "0")
    assert code == 1 and "error: --top must be at least 1" in out
    assert not (tmp_path / "a").exists()


def test_output_is_a_file(atlas_model, atlas_images, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, out = invoke(atlas_model, atlas_images, "-o", target)
    assert code == 1 and "is a file, not a folder" in out
    assert target.read_text() == "keep me"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_output_read_only(atlas_model, atlas_images, tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    try:
        code, out = invoke(atlas_model, atlas_images, "-o", target)
    finally:
        target.chmod(0o755)
    assert code == 1 and "is not writable" in out


def test_output_read_only_refused_before_work(atlas_model, atlas_images, tmp_path, monkeypatch):
    """As root the permission bits do not stop writes, so ask os.access as a non-root user would be answered."""
    target = tmp_path / "ro"
    target.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == target and mode & os.W_OK
                        else real(p, mode, *a, **k))
    code, out = invoke(atlas_model, atlas_images, "-o", target)
    assert code == 1 and f"output folder '{target}' is not writable" in out


def test_render_report_links_to_the_atlas(atlas_model, atlas_images, tmp_path):
    atlas_dir = tmp_path / "atlas"
    build_atlas(atlas_model, [atlas_images], atlas_dir, AtlasOptions(layers=["p1", "c3"], top=2, provider="cpu"))
    out = tmp_path / "render"
    result = runner.invoke(app, ["render", str(atlas_model), str(atlas_images / "img001.png"), "-o", str(out),
                                 "--atlas", str(atlas_dir), "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "img001" / "summary.json").read_text())
    assert summary["atlas"]["page"] == "../../atlas/index.html"
    links = {layer["name"]: layer.get("atlas") for layer in summary["layers"]}
    assert links["p1"] == "../../atlas/index.html#l=0" and links["c3"] == "../../atlas/index.html#l=1"
    assert links["c1"] is None
    page = (out / "img001" / "index.html").read_text()
    assert "href='../../atlas/index.html#l=1'>what its channels respond to</a>" in page
    bad = runner.invoke(app, ["render", str(atlas_model), str(atlas_images / "img001.png"), "-o", str(out),
                              "--atlas", str(tmp_path)])
    assert bad.exit_code == 1
    assert f"error: --atlas '{tmp_path}' holds no atlas (no readable atlas-data.js)" in bad.output


def test_option_errors_name_the_flag(atlas_model, atlas_images, tmp_path):
    for args, message in [(["--score", "median"], "error: --score 'median' is not valid; choose one of max, mean"),
                          (["--batch-size", "0"], "error: --batch-size must be at least 1, got 0"),
                          (["--engine", "spark"], "error: --engine 'spark' is not valid; choose one of local, ray"),
                          (["--engine", "ray", "--provider", "cuda"],
                           "error: --provider cuda with --engine ray needs a GPU per actor: add --worker-gpus 1"),
                          (["--layers", "zzz*"], "error: --layers 'zzz*' matches no layer of")]:
        code, out = invoke(atlas_model, atlas_images, "-o", tmp_path / "a", *args)
        assert code == 1 and out.startswith(message), (args, out)


def test_real_network_atlas_equals_brute_force(shared_data, tmp_path):
    """SqueezeNet 1.1 with its real weights over crops of the shared photos, default layers."""
    import cv2

    from onnxviz import export as export_onnx

    model = tmp_path / "squeezenet.onnx"
    export_onnx(shared_data / "onnx" / "squeezenet1.1.onnx", model, bgr=True)
    data = tmp_path / "crops"
    data.mkdir()
    rng = np.random.default_rng(4)
    photos = [load_image(p) for p in collect_images([shared_data / "images"])[0]]
    for i in range(24):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        s = int(rng.integers(min(h, w) // 4, min(h, w)))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        cv2.imwrite(str(data / f"crop{i:02d}.png"), photo[y:y + s, x:x + s, ::-1])
    out = tmp_path / "atlas"
    result = build_atlas(model, [data], out, AtlasOptions(top=5, provider="cpu"))
    info = read_info(onnx.load(model, load_external_data=False))
    assert result.layers == [layer.name for layer in default_layers(info)] and len(result.layers) >= 3
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    paths = collect_images([data])[0]
    maps = {name: [] for name in result.layers}
    for path in paths:
        rgb = resize_image(load_image(path), 224, 224)[None].astype(np.float32)
        for name, value in zip(result.layers, session.run(result.layers, {info.input_name: rgb})):
            maps[name].append(value[0])
    rows = table(out)
    k = 0
    for name in result.layers:
        stack = np.stack(maps[name])
        flat = stack.reshape(len(paths), stack.shape[1], -1)
        s, i, p = brute_top(flat.max(axis=2), flat.argmax(axis=2), np.arange(len(paths)), 5)
        for c in range(s.shape[0]):
            for r in range(5):
                row = rows[k]
                k += 1
                assert (row["layer"], row["channel"], row["rank"]) == (name, c, r)
                assert row["image"] == str(paths[i[c, r]].resolve()), (name, c, r)
                assert row["position"] == list(divmod(int(p[c, r]), stack.shape[3]))
                assert row["score"] == pytest.approx(float(s[c, r]), rel=1e-4, abs=1e-5)
    assert k == len(rows)


def test_a_python_caller_is_told_parameter_names(atlas_model, atlas_images, tmp_path):
    from onnxviz.errors import OptionError

    for opts, message in [(AtlasOptions(top=0),
                           "top must be at least 1 (the number of images kept per channel), got 0"),
                          (AtlasOptions(score="median"), "score 'median' is not valid; choose one of max, mean"),
                          (AtlasOptions(resize="squash"),
                           "resize 'squash' is not valid; choose one of stretch, crop, pad"),
                          (AtlasOptions(checkpoint_every=0), "checkpoint_every must be at least 1, got 0"),
                          (AtlasOptions(workers=0), "workers must be at least 1, got 0"),
                          (AtlasOptions(tile=4), "tile must be 8..512 pixels, got 4"),
                          (AtlasOptions(engine="ray", provider="cuda"),
                           "provider cuda with engine ray needs a GPU per actor: add worker_gpus 1")]:
        with pytest.raises(OptionError) as err:
            build_atlas(atlas_model, [atlas_images], tmp_path / "a", opts)
        assert str(err.value) == message
    assert not (tmp_path / "a").exists()


def test_option_errors_quote_a_value_with_braces_as_it_is(atlas_model, atlas_images, tmp_path):
    for args, message in [(["--score", "{a}"], "error: --score '{a}' is not valid; choose one of max, mean"),
                          (["--resize", "}{"], "error: --resize '}{' is not valid")]:
        code, out = invoke(atlas_model, atlas_images, "-o", tmp_path / "a", *args)
        assert code == 1 and out.startswith(message), (args, out)
