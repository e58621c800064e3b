"""`onnxviz render` end to end through the CLI, on a tiny model built here and the real MobileNet."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxviz.cli import app
from report_folder import decode_layer_css
from tiny_models import FC, SIZE, numpy_conv, tiny_model, write_image

runner = CliRunner()
@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    return path


def test_render_writes_every_file_with_the_real_activations(tmp_path, model_path):
    rgb = write_image(tmp_path / "photo.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "photo.png"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    folder = out / "photo"
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    # the three small layers share one stylesheet
    # explain/: the class activation maps of the top 3 classes, their colour scale, the parts of one layer per
    # stage of at most 14 x 14 positions, and this image in the run's joint parts
    assert names == ["explain/cam-0.jpg", "explain/cam-1.jpg", "explain/cam-2.jpg", "explain/joint.jpg",
                     "explain/layer-2.jpg", "explain/scale.png", "filters.png", "index.html", "input.png",
                     "maps/000-002.css", "summary.js", "summary.json"]
    assert sorted(p.name for p in out.iterdir()) == ["assets", "index.html", "photo", "run.js", "run.json"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["format"] == 5 and summary["input"] == {"height": SIZE, "width": SIZE, "resize": "stretch",
                                                           "file": "input.png"}
    script = (folder / "summary.js").read_text()
    assert script.startswith("onnxviz.summary(") and script.endswith(");\n")
    assert json.loads(script[len("onnxviz.summary("):-3]) == summary
    # input.png holds exactly the pixels the model got
    assert np.array_equal(cv2.imread(str(folder / "input.png"))[..., ::-1], rgb)
    conv = numpy_conv(rgb)
    layer = summary["layers"][0]
    assert layer["name"] == "conv" and layer["shape"] == [6, SIZE, SIZE] and layer["kind"] == "map"
    assert layer["data"] == "maps/000-002.css" and layer["grid"] is None
    assert layer["channels"] == list(range(6)) and layer["tile"] == [SIZE, SIZE] and layer["columns"] == 3
    assert layer["stats"]["mean"] == pytest.approx(conv.mean(), rel=1e-3, abs=1e-5)
    assert layer["channel_stats"]["max"] == pytest.approx(conv.max(axis=(1, 2)).tolist(), rel=1e-3)
    relu = summary["layers"][1]["stats"]
    assert relu["zero_fraction"] == pytest.approx((np.maximum(conv, 0) == 0).mean(), abs=1e-3)
    assert relu["dead_channels"] == int(sum(np.all(np.maximum(c, 0) == 0) for c in conv))
    # the sprite: channel i at row i // 3, column i % 3, native size, values low + p / 255 * (high - low)
    sprites = decode_layer_css((folder / "maps" / "000-002.css").read_bytes())
    assert sorted(sprites) == [0, 1, 2]
    sprite = sprites[0]
    assert sprite.shape == (2 * SIZE, 3 * SIZE) and sprite.dtype == np.uint8
    for i in range(6):
        r, c = divmod(i, 3)
        tile = sprite[r * SIZE:(r + 1) * SIZE, c * SIZE:(c + 1) * SIZE].astype(float)
        low, high = layer["low"][i], layer["high"][i]
        assert low == pytest.approx(conv[i].min(), rel=1e-3) and high == pytest.approx(conv[i].max(), rel=1e-3)
        assert np.abs(low + tile / 255 * (high - low) - conv[i]).max() <= (high - low) / 255 * 0.51 + 1e-4
    # the page links the stylesheet, and each layer's tiles carry its rule's class
    page = (folder / "index.html").read_text()
    assert page.count("<link rel=stylesheet href='maps/000-002.css'") == 1
    assert all(f"class='tiles m{i}" in page for i in range(3))
    # predictions are the softmax of the model, best first, with labels
    logits = np.maximum(conv, 0).reshape(6, SIZE // 2, 2, SIZE // 2, 2).max(axis=(2, 4)).mean(axis=(1, 2)) @ FC
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [p["label"] for p in summary["predictions"]] == [["apple", "bean", "cherry", "date"][i] for i in np.argsort(-probs)]
    assert summary["predictions"][0]["score"] == pytest.approx(probs.max(), rel=1e-4)
    assert summary["provider"] == "cpu"
    assert summary["filters"] == {"file": "filters.png", "layer": "conv", "count": 6, "kernel": "6 filters of 3x3x3",
                                  "channel_order": "RGB"}
    assert set(summary["timings_ms"]) == {"read", "inference", "drawing", "encoding", "writing"}
    run = json.loads((out / "run.json").read_text())
    assert run["format"] == 5 and run["images"] == [{"folder": "photo", "image_name": "photo.png", "top1": {
        "label": summary["predictions"][0]["label"], "score": summary["predictions"][0]["score"]}, "group": ""}]
    assert [(x["index"], x["name"], x["shape"], x["kind"]) for x in run["layers"]] == [
        (0, "conv", [6, SIZE, SIZE], "map"), (1, "relu", [6, SIZE, SIZE], "map"), (2, "pool", [6, SIZE // 2, SIZE // 2], "map")]
    assert not [p for p in out.rglob("*part*")]


def test_options_choose_layers_channels_sort_and_grids(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(out), "--layers", "re*",
                                 "--channels", "2:5", "--grids", "--format", "png", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "a" / "summary.json").read_text())
    assert [(x["name"], x["grid"], x["channels"]) for x in summary["layers"]] == [
        ("relu", "grids/001.relu_ch002-004.png", [2, 3, 4])]
    assert (out / "a" / "grids" / "001.relu_ch002-004.png").is_file()
    assert len(summary["predictions"]) == 2
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(out), "--layers", "conv",
                                 "--sort", "max", "--max-channels", "3", "--grids"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "a" / "summary.json").read_text())
    conv = summary["layers"][0]
    by_max = sorted(range(6), key=lambda i: -conv["channel_stats"]["max"][conv["channels"].index(i)]
                    if i in conv["channels"] else 0)[:3]
    assert conv["grid"] == "grids/000.conv_top3-by-max.jpg" and conv["channels"] == by_max
    assert (out / "a" / "grids" / "000.conv_top3-by-max.jpg").is_file()
    assert not (out / "a" / "grids" / "001.relu_ch002-004.png").exists()  # a re-render replaces the image's folder


def test_a_bad_image_among_many_is_skipped_with_a_warning_and_exit_1(tmp_path, model_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "good1.png", 1)
    write_image(src / "good2.jpg", 2)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model_path), str(src), "-o", str(out)])
    assert result.exit_code == 1
    assert (out / "good1" / "index.html").is_file() and (out / "good2" / "index.html").is_file()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and any("broken.jpg" in w for w in warnings) and any("empty.png" in w for w in warnings)
    assert "error: 2 input(s) could not be rendered" in result.stderr
    assert not (out / "broken").exists()


@pytest.mark.parametrize("args, message", [
    (["--layers", "conv_9"], "error: --layers 'conv_9' matches no layer of {model}; it has 3: conv, relu, pool. Run 'onnxviz layers {model}'"),
    (["--sort", "loud"], "error: --sort 'loud' is not valid; choose one of index, mean, max"),
    (["--colormap", "rainbow2"], "error: --colormap 'rainbow2' is not valid; choose one of"),
    (["--provider", "tpu"], "error: unknown provider 'tpu'"),
    (["--channels", "5:2"], "error: --channels 5:2 is empty; B must be larger than A"),
])
def test_bad_options_are_one_line_errors(tmp_path, model_path, args, message):
    write_image(tmp_path / "a.png")
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(model=model_path)), result.stderr
    assert not (tmp_path / "o" / "a").exists()


def test_models_that_are_not_onnxviz_files(tmp_path):
    write_image(tmp_path / "a.png")
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    result = runner.invoke(app, ["render", str(text), str(tmp_path / "a.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "is not an ONNX model" in result.stderr
    plain = tiny_model()
    del plain.metadata_props[:]
    onnx.save(plain, tmp_path / "plain.onnx")
    result = runner.invoke(app, ["render", str(tmp_path / "plain.onnx"), str(tmp_path / "a.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "was not written by 'onnxviz export'" in result.stderr and "onnxviz export" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(locked / "out")])
    assert result.exit_code == 1 and "cannot create output folder" in result.stderr


def test_output_path_that_is_a_file(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "taken").write_text("keep me")
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(tmp_path / "taken")])
    assert result.exit_code == 1 and "cannot create output folder" in result.stderr
    assert (tmp_path / "taken").read_text() == "keep me"


def test_render_layers_filters_and_diff_never_import_tensorflow(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom onnxviz.cli import app\n"
        f"r = CliRunner().invoke(app, ['render', {str(model_path)!r}, {str(tmp_path / 'a.png')!r}, '-o', {str(tmp_path / 'o')!r}])\n"
        "r2 = CliRunner().invoke(app, ['layers', " + repr(str(model_path)) + "])\n"
        f"r3 = CliRunner().invoke(app, ['filters', {str(model_path)!r}, '-o', {str(tmp_path / 'f.jpg')!r}])\n"
        f"r4 = CliRunner().invoke(app, ['diff', {str(model_path)!r}, {str(tmp_path / 'a.png')!r}, '--providers', 'cpu,cpu'])\n"
        "assert all(x.exit_code == 0 for x in (r, r2, r3, r4)), [x.output for x in (r, r2, r3, r4)]\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\nprint('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_real_mobilenet_render_top1_is_espresso(tmp_path, mobilenet_onnx, shared_data):
    model, _ = mobilenet_onnx
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model), str(shared_data / "images" / "coffee.png"),
                                 str(shared_data / "images" / "chelsea.png"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "coffee" / "summary.json").read_text())
    assert summary["predictions"][0]["label"] == "espresso" and summary["predictions"][0]["score"] > 0.9
    assert len(summary["layers"]) == 88 and summary["layers"][0]["name"] == "conv1"
    assert summary["filters"]["count"] == 8 and (out / "coffee" / "filters.png").is_file()
    kinds = {layer["kind"] for layer in summary["layers"]}
    assert kinds == {"map", "vector"}  # the global pooling output is 1x1: its values, no picture
    for layer in summary["layers"]:
        if layer["kind"] == "map":
            assert (out / "coffee" / layer["data"]).is_file()
        else:
            assert layer["shape"][1:] == [1, 1] and len(layer["values"]) == layer["shape"][0]


def test_an_interrupted_render_leaves_only_finished_folders_each_with_its_report(tmp_path, model_path):
    from onnxviz.render.options import RenderOptions
    from onnxviz.render.pipeline import render

    src = tmp_path / "in"
    src.mkdir()
    for k in range(6):
        write_image(src / f"p{k}.png", k)
    out = tmp_path / "out"
    seen = []

    def progress(done, total, name):
        seen.append(name)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render(model_path, [src], out, RenderOptions(batch_size=2, provider="cpu"), progress=progress)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "assets")  # assets: the pages' script
    assert folders and len(folders) < 6 and not [p for p in out.iterdir() if "part" in p.name]
    for name in folders:
        assert {"summary.json", "summary.js", "index.html", "input.png"} <= {p.name for p in (out / name).iterdir()}
    run = json.loads((out / "run.json").read_text())
    assert [i["image_name"] for i in run["images"]][:3] == seen[:3]
    assert sorted(i["folder"] for i in run["images"]) == folders  # the run's index lists every finished image
    # the next run renders everything again
    result = runner.invoke(app, ["render", str(model_path), str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["assets"] + [f"p{k}" for k in range(6)]


def test_a_full_disk_stops_with_a_clear_message_and_leaves_no_half_made_folder(tmp_path, model_path, monkeypatch):
    import errno

    from onnxviz.render import store

    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        write_image(src / f"p{k}.png", k)
    calls = {"n": 0}
    real_open = open

    def filling_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".css") and "maps" in str(path):
            calls["n"] += 1
            if calls["n"] > 1:  # the first image's data file fits, the second's does not
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(store, "open", filling_open, raising=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model_path), str(src), "-o", str(out), "--batch-size", "1"])
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the output disk is full (writing '") and "free some space" in line
    assert "this image was not finished" in line and "choose another folder with -o/--output;" in line
    folders = [p for p in out.iterdir() if p.is_dir() and p.name != "assets"]  # assets: the pages' script
    assert [p.name for p in folders] == ["p0"] and (out / "p0" / "summary.json").is_file()
    assert not [p for p in out.rglob("*part*")]


def test_a_render_that_fails_before_any_image_leaves_no_output_folder(tmp_path, model_path):
    write_image(tmp_path / "a.png")
    out = tmp_path / "new" / "out"
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(out),
                                 "--channels", "9:12"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: --channels 9:12 selects nothing in layer 'conv', which has 6 channels; "
                                     "choose A below 6 or pick layers with --layers")
    assert not out.exists()


def test_a_full_disk_while_writing_the_report_is_one_line_too(tmp_path, model_path, monkeypatch):
    import errno

    from onnxviz.report import render_page as report

    write_image(tmp_path / "a.png")

    def full(folder, summary):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "write_report", full)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: the output disk is full (writing '{out / 'a'}')")
    assert not out.exists()  # made by this run, nothing finished: removed


def test_class_folders_render_into_their_own_folders_grouped_on_the_run_page(tmp_path, model_path):
    data = tmp_path / "imagenet_like"
    for seed, name in enumerate(["n01/cat.png", "n02/cat.png", "n02/dog.png", "top.png"]):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(data / name, seed)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model_path), str(data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"n01--cat", "n02--cat", "n02--dog", "top", "assets"}
    run = json.loads((out / "run.json").read_text())
    assert [(i["folder"], i["image_name"], i["group"]) for i in run["images"]] == [
        ("n01--cat", "cat.png", "n01"), ("n02--cat", "cat.png", "n02"), ("n02--dog", "dog.png", "n02"),
        ("top", "top.png", "")]
    page = (out / "index.html").read_text()
    assert page.count("<section class=group>") == 3
    assert page.index("<h3>n01 <small>1 image</small>") < page.index("<h3>n02 <small>2 images</small>") \
        < page.index("<h3>(top folder) <small>1 image</small>")


def test_a_folder_of_folders_without_images_is_one_error_line(tmp_path, model_path):
    (tmp_path / "data" / "a" / "b").mkdir(parents=True)
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "data"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"error: no images to render: folder '{tmp_path / 'data'}' has no images (.bmp, .jpeg, "
                             f".jpg, .png, .tif, .tiff, .webp) in it or its 2 subfolders; skipped\n")
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["render", str(model_path), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out")])
    assert result.stderr == f"error: no images to render: '{tmp_path / 'missing.png'}' does not exist; skipped\n"


def test_a_second_render_adds_to_the_run_and_replaces_an_image_rendered_again(tmp_path, model_path):
    for seed, name in enumerate(["a.png", "b.png", "c.png"]):
        write_image(tmp_path / name, seed)
    out = tmp_path / "out"
    first = runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out),
                                "--layers", "conv"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["render", str(model_path), str(tmp_path / "b.png"), str(tmp_path / "c.png"), "-o", str(out),
                                 "--layers", "relu"])
    assert second.exit_code == 0, second.output
    run = json.loads((out / "run.json").read_text())
    assert [i["folder"] for i in run["images"]] == ["a", "b", "c"]  # b rendered again keeps its place, once
    assert [layer["name"] for layer in run["layers"]] == ["conv", "relu"]  # both runs' layers
    page = (out / "index.html").read_text()
    assert all(f"href='{name}/index.html'" in page for name in "abc")
    b = json.loads((out / "b" / "summary.json").read_text())
    assert [layer["name"] for layer in b["layers"]] == ["relu"]  # the second render's


def test_a_render_into_another_models_run_is_refused_unless_fresh(tmp_path, model_path):
    write_image(tmp_path / "a.png", 0)
    write_image(tmp_path / "b.png", 1)
    other = tmp_path / "other.onnx"
    changed = onnx.load(str(model_path))
    changed.doc_string = "another model"
    onnx.save(changed, other)
    out = tmp_path / "out"
    assert runner.invoke(app, ["render", str(model_path), str(tmp_path / "a.png"), "-o", str(out)]).exit_code == 0
    before = (out / "run.json").read_bytes()
    refused = runner.invoke(app, ["render", str(other), str(tmp_path / "b.png"), "-o", str(out)])
    assert refused.exit_code == 1
    assert refused.stderr == (f"error: '{out}' holds a run of another model file ('{model_path}', tiny), which this render "
                              f"would drop from its run page; render into another folder (-o/--output), or start its "
                              f"run page afresh with --fresh\n")
    assert (out / "run.json").read_bytes() == before and not (out / "b").exists()
    fresh = runner.invoke(app, ["render", str(other), str(tmp_path / "b.png"), "-o", str(out), "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    assert [i["folder"] for i in json.loads((out / "run.json").read_text())["images"]] == ["b"]
    assert (out / "a" / "index.html").is_file()  # the earlier image's folder stays on disk


@pytest.mark.parametrize("args, message", [
    (["{image}", "{model}"], "error: '{image}' is an image and '{model}' a model: give the model first, then the "
                             "images (MODEL then IMAGES)"),
    (["{model}", "{image}", "-o", "{tmp}/model.h5"], "error: -o/--output '{tmp}/model.h5' names a .h5 file, but render "
                                                     "writes a folder of reports; give a folder name (default onnxviz-out)"),
    (["{model}", "{image}", "--top-k", "0"], "error: --top-k must be at least 1 (the classes each report lists), got 0"),
])
def test_mistakes_of_order_and_values_are_one_line(tmp_path, model_path, args, message):
    write_image(tmp_path / "a.png")
    fill = {"model": str(model_path), "image": str(tmp_path / "a.png"), "tmp": str(tmp_path)}
    result = runner.invoke(app, ["render", *[a.format(**fill) for a in args]])
    assert result.exit_code == 1 and result.stderr == message.format(**fill) + "\n"
    assert not (tmp_path / "model.h5").exists()
