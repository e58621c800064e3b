"""`onnxviz demo`: the shipped MobileNet and photo render with nothing downloaded; a damaged
installation is named as such."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from onnxviz.cli import app
from onnxviz.errors import ModelError
from onnxviz.render import demo
from onnxviz.render.options import RenderOptions
from tiny_models import write_image

runner = CliRunner()


def test_the_shipped_files_are_small_single_and_licensed():
    assert demo.MODEL.is_file() and demo.PHOTO.is_file()
    assert not demo.MODEL.with_name(demo.MODEL.name + ".data").exists()  # one file, no data file beside it
    assert 1_000_000 < demo.MODEL.stat().st_size < 3_000_000
    notice = (demo.FOLDER / "NOTICE.md").read_text()
    assert "Apache License 2.0" in notice and "CC0" in notice
    assert demo.demo_model() == demo.MODEL and demo.demo_photo() == demo.PHOTO


def test_demo_renders_the_shipped_photo_as_espresso(tmp_path):
    result = demo.demo(output=tmp_path / "out", options=RenderOptions(top_k=3))
    assert [i.image for i in result.images] == [demo.PHOTO]
    top = result.images[0].predictions[0]
    assert top.label == "espresso" and top.score > 0.8, result.images[0].predictions
    assert (tmp_path / "out" / "coffee" / "index.html").is_file()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [i["image_name"] for i in run["images"]] == ["coffee.jpg"]


def test_demo_command_prints_where_the_report_is(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] in ("ran on CPU", "ran on CUDA")
    assert f"  {out}/coffee/index.html  88 layers: espresso" in result.stdout
    assert f"open {out}/coffee/index.html in a browser" in result.stdout


def test_demo_command_renders_given_photos_through_the_shipped_model(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, name in enumerate(("a.png", "b.png")):
        write_image(photos / name, seed, 50)
    result = runner.invoke(app, ["demo", str(photos), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir() and p.name != "assets") == ["a", "b"]
    assert f"(and {tmp_path / 'out'}/index.html for the run)" in result.stdout


def test_a_damaged_shipped_model_says_to_reinstall(tmp_path, monkeypatch):
    damaged = tmp_path / demo.MODEL.name
    data = bytearray(demo.MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(demo, "MODEL", damaged)
    with pytest.raises(ModelError, match="is damaged .*; reinstall onnxviz"):
        demo.demo_model()
    result = runner.invoke(app, ["demo", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: the demo file '{damaged}' shipped with onnxviz is damaged")
    assert "pip install --force-reinstall onnxviz" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_shipped_model_says_to_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "MODEL", tmp_path / "gone.onnx")
    with pytest.raises(ModelError, match=r"shipped with onnxviz are missing \(.*gone.onnx\); reinstall onnxviz"):
        demo.demo_model()
