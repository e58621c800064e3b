"""`onnxviz render` shows where the network looks: the class activation maps of each image's top
classes and its layers' parts, the run's joint parts; in the report, from file://, with and
without JavaScript (real Chromium)."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import onnxviz
from onnxviz.cli import app
from tiny_models import tiny_classifier

runner = CliRunner()


def _setup(tmp_path, head="gap", n=3):
    model = tmp_path / f"{head}.onnx"
    onnx.save(tiny_classifier(head, size=32), str(model))
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(3)
    for k in range(n):
        image = cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(src / f"p{k}.png"), image)
    return model, src


def test_render_writes_the_maps_of_the_top_classes_and_the_parts(tmp_path):
    model, src = _setup(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model), str(src), "-o", str(out), "--provider", "cpu", "--parts", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "p1" / "summary.json").read_text())
    cam = summary["explain"]["cam"]
    assert cam["layer"] == "relu" and cam["shape"] == [32, 32] and len(cam["maps"]) == 3
    # the same classes, scores and maps as the API's
    api = onnxviz.load(model, provider="cpu").cam(out / "p1" / "input.png", top_k=3)
    assert [m["class"] for m in cam["maps"]] == api.classes[0].tolist()
    assert [m["label"] for m in cam["maps"]] == [p["label"] for p in summary["predictions"][:3]]
    assert [m["max"] for m in cam["maps"]] == pytest.approx(api.maps[0].max(axis=(1, 2)).tolist(), rel=1e-5)
    for m in cam["maps"]:
        assert cv2.imread(str(out / "p1" / m["file"])).shape == (32, 32, 3)
    parts = summary["explain"]["parts"]
    assert [p["layer"] for p in parts] == ["relu"]  # one layer per stage: this model has one resolution
    assert len(parts[0]["parts"]) == 3 and 0 <= parts[0]["error"] < 1
    assert all(set(p["channels"]) <= set(range(4)) for p in parts[0]["parts"])
    assert cv2.imread(str(out / "p1" / parts[0]["file"])).shape == (32, 32, 3)
    run = json.loads((out / "run.json").read_text())
    joint = run["explain"]
    assert joint["layer"] == "relu" and [i["folder"] for i in joint["images"]] == ["p0", "p1", "p2"]
    assert all((out / i["file"]).is_file() for i in joint["images"])
    page = (out / "p1" / "index.html").read_text()
    assert "Where the network looks" in page and "explain/cam-0.jpg" in page and "data-open='1:" in page


def test_no_cam_and_no_parts_render_as_before(tmp_path):
    model, src = _setup(tmp_path, n=1)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model), str(src), "-o", str(out), "--provider", "cpu", "--no-cam",
                                 "--parts", "0"])
    assert result.exit_code == 0, result.output
    assert not (out / "p0" / "explain").exists()
    assert "explain" not in json.loads((out / "p0" / "summary.json").read_text())
    assert "Where the network looks" not in (out / "p0" / "index.html").read_text()


def test_a_head_without_a_gradient_gets_a_note_and_still_its_parts(tmp_path):
    model, src = _setup(tmp_path, head="sigmoid", n=1)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model), str(src), "-o", str(out), "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    explain = json.loads((out / "p0" / "summary.json").read_text())["explain"]
    assert explain["cam"] == {"note": explain["cam"]["note"]} and "Sigmoid node" in explain["cam"]["note"]
    assert explain["parts"] and not list((out / "p0" / "explain").glob("cam-*"))
    assert "Sigmoid node" in (out / "p0" / "index.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--parts", "-1"], "error: --parts must be 0 (no factorization) or a number of parts, got -1"),
    (["--cam-layer", "nope"], "error: --cam-layer 'nope' is not a layer of "),
    (["--cam-layer", "predictions"], "is not a 4-D feature map"),
    (["--parts-layers", "zzz*"], "error: --layers 'zzz*' matches no layer of"),
])
def test_bad_options_stop_before_anything_is_written(tmp_path, args, message):
    model, src = _setup(tmp_path, n=1)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model), str(src), "-o", str(out), "--provider", "cpu", *args])
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert not out.exists()


# ---------------------------------------------------------------- in Chromium

def _browser():
    import os

    chromium = os.environ.get("ONNXVIZ_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("no Chromium found (apt-get install chromium, or set ONNXVIZ_CHROMIUM to its path)")
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright not installed (pip install -e '.[dev]')")
    return chromium, playwright


def test_the_pages_show_it_from_file_with_and_without_javascript(tmp_path):
    chromium, playwright = _browser()
    model, src = _setup(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(model), str(src), "-o", str(out), "--provider", "cpu", "--parts", "3"])
    assert result.exit_code == 0, result.output
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for javascript in (True, False):
            context = browser.new_context(viewport={"width": 1200, "height": 900}, java_script_enabled=javascript)
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url}"))
            page.goto((out / "p1" / "index.html").as_uri())
            page.wait_for_load_state("load")
            pictures = page.locator("#explain img")
            assert pictures.count() == 3 + 1 + 1  # three maps, the colour scale, one layer's parts
            widths = page.eval_on_selector_all("#explain img", "els => els.map(e => e.naturalWidth)")
            assert all(w > 0 for w in widths), widths
            assert page.locator("#explain figcaption").first.inner_text().startswith(
                json.loads((out / "p1" / "summary.json").read_text())["predictions"][0]["label"])
            if javascript:  # a part's channel opens in the viewer
                link = page.locator("#explain a[data-open]").first
                channel = link.inner_text()
                link.click()
                page.wait_for_selector("#viewer:not([hidden])")
                assert f"channel {channel}" in page.locator("#viewer").inner_text()
            page.goto((out / "index.html").as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("#explain img", "els => els.map(e => e.naturalWidth)")
            assert len(widths) == 3 and all(w > 0 for w in widths)
            assert errors == []
            context.close()
        browser.close()


def test_a_parts_channel_links_to_the_viewer_only_where_it_was_stored():
    """A part's strongest channel that render did not store for the image (past --max-channels) is
    named, not linked to a view that does not hold it; the run page's compare view takes any."""
    from onnxviz.report.explain_page import image_section, run_section

    part = {"colour": "#1f77b4", "share": 1.0, "channels": [1, 70], "atlas": None}
    layer = {"layer": "conv", "index": 5, "shape": [128, 4, 4], "file": "explain/layer-5.jpg", "error": 0.3,
             "parts": [part]}
    html = image_section({"layers": [{"index": 5, "channels": list(range(64))}], "explain": {"parts": [layer]}}, 3)
    assert "data-open='5:1'" in html and "data-open='5:70'" not in html
    assert "channel 70 is not stored for this image" in html
    joint = dict(layer, images=[{"folder": "a", "file": "a/explain/joint.jpg"}])
    joint.pop("file")
    run_html = run_section({"layers": [{"index": 5}], "explain": joint})
    assert "#compare=5:70" in run_html and "#compare=5:1" in run_html
