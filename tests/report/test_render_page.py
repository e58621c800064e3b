"""The report pages as HTML and files (tests/test_browser.py opens them in Chromium)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report_folder import build_image, example_layers, run_dict  # noqa: E402

from onnxviz.report import render_page as report  # noqa: E402
from onnxviz.report.render_page import render_html, render_run_html, tile_display, write_report, write_run  # noqa: E402


def page_of(tmp_path, **kw) -> tuple[dict, str]:
    summary = build_image(tmp_path, "cat", "cat <1> café.png", example_layers(0), **kw)
    return summary, (tmp_path / "cat" / "index.html").read_text(encoding="utf-8")


def section(page: str, index: int) -> str:
    start = page.index(f"id='layer-{index:03d}'")
    end = page.find("<section", start)
    return page[start:end if end > 0 else len(page)]


def test_page_escapes_names_and_links_files_whose_names_have_spaces_accents_and_hashes(tmp_path):
    summary, page = page_of(tmp_path)
    assert "cat &lt;1&gt; café.png" in page and "<1>" not in page
    assert "conv 1/ü#?" in page  # the layer's name as it is
    # its file, '000.conv 1_ü#?.css', as a URL path
    assert "maps/000.conv%201_%C3%BC%23%3F.css" in page and "000.conv 1_ü#?.css" not in page
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "tabby cat" in page and "71.0%" in page and page.count("café crème") == 1  # predictions once


def test_every_stored_channel_is_a_tile_labelled_with_its_channel_number(tmp_path):
    summary, page = page_of(tmp_path, sort="max", max_channels=16)
    relu = summary["layers"][1]
    part = section(page, 1)
    tiles = re.findall(r"<i(?: class=\w+)? style=--c:(\d+);--r:(\d+)><b></b>(\d+)<", part)
    columns = relu["columns"]
    assert tiles == [(str(k % columns), str(k // columns), str(c)) for k, c in enumerate(relu["channels"])]
    assert relu["channels"][0] == 5  # the strongest channel first
    assert "16 of 80 channels shown, by max, highest first" in part


def test_each_map_layer_has_a_legend_with_colormap_normalisation_and_range(tmp_path):
    summary, page = page_of(tmp_path, colormap="inferno")
    conv = summary["layers"][0]
    part = section(page, 0)
    assert "inferno; each tile scaled to its own min..max (per channel, as stored)" in part
    assert f"values in this layer {report._num(conv['stats']['min'])} .. {report._num(conv['stats']['max'])}" in part
    # the colour bar and the SVG filter are the colormap the grids were drawn with
    lut = report._lut("inferno")
    assert "#%02x%02x%02x" % lut[0] in part and "#%02x%02x%02x" % lut[255] in part
    first_r = re.search(r"<feFuncR type=table tableValues='([^']*)'", page).group(1).split()
    assert len(first_r) == 256 and abs(float(first_r[255]) - lut[255][0] / 255) < 1e-4


def test_dead_means_zero_everywhere_for_this_image_and_constant_channels_are_not_dead(tmp_path):
    summary, page = page_of(tmp_path)
    conv = section(page, 0)
    assert "1 of 12 channels is zero everywhere for this image (dead for this image)" in conv
    assert re.search(r"<i class=dead style=[^>]*><b></b>4<s> dead</s></i>", conv)
    assert re.search(r"<i class=flat style=[^>]*><b></b>7<s> flat</s></i>", conv)  # 0.53 everywhere: constant, not dead
    assert conv.count(" dead</s>") == 1
    assert "no channel is zero everywhere for this image" in section(page, 1)


def test_vectors_are_bar_charts_not_flat_tiles(tmp_path):
    summary, page = page_of(tmp_path)
    pooled = section(page, 3)
    assert "class=tile" not in pooled and pooled.count("<rect ") == 40
    assert "2 of 40 channels are 0 for this image" in pooled
    values = summary["layers"][3]["values"]
    best = int(np.argmax(values))
    assert f"<title>channel {best}: {report._num(values[best])}</title>" in pooled
    assert f"Largest: {best}: {report._num(values[best])}" in pooled
    logits = section(page, 4)
    assert "no channel is zero everywhere" in logits and logits.count("<rect ") == 10


def test_small_maps_are_enlarged_and_big_ones_stay_legible():
    assert tile_display(7, 7, 64) == (147, 147, True)
    assert tile_display(1, 1, 64)[0] <= report.TILE_MAX
    assert tile_display(56, 56, 64) == (168, 168, True)
    assert tile_display(224, 224, 64) == (176, 176, False)
    assert tile_display(500, 2, 64) == (1, 176, False)  # a long thin map keeps its shape
    w, h, up = tile_display(14, 14, 2048)  # thousands of channels: smaller tiles
    assert (w, up) == (98, True)


def test_filters_are_shown_large_enough_to_see(tmp_path):
    _, page = page_of(tmp_path)
    m = re.search(r"<img src='filters.png' width=(\d+) height=(\d+)", page)
    assert m and int(m[1]) == 27 * 4  # 27 px, enlarged 4x (at most)


def test_write_report_writes_json_and_js_with_the_same_facts_and_the_script_beside(tmp_path):
    summary, page = page_of(tmp_path)
    folder = tmp_path / "cat"
    text = (folder / "summary.json").read_text()
    assert json.loads(text) == summary
    assert not re.search(r"^\s*-?[0-9.]+,?$", text, re.M)  # lists of numbers stay on one line each
    js = (folder / "summary.js").read_text()
    assert js.startswith("onnxviz.summary(") and json.loads(js[len("onnxviz.summary("):js.rindex(")")]) == summary
    assert (tmp_path / "assets" / "onnxviz.js").read_bytes() == \
        (Path(report.__file__).parent / "assets" / "onnxviz.js").read_bytes()
    assert "<script src='../assets/onnxviz.js'></script><script src='summary.js'></script>" in page
    assert not list(tmp_path.rglob("*.part*"))
    again = write_report(folder, summary)
    assert again.html.read_text(encoding="utf-8") == render_html(summary, folder)


def test_run_page_lists_every_image_with_thumbnail_and_top1(tmp_path):
    a = build_image(tmp_path, "a b", "a b.png", example_layers(0))
    b = build_image(tmp_path, "ü", "ü.png", example_layers(1), predictions=[])
    run = run_dict([("a b", a), ("ü", b)])
    files = write_run(tmp_path, run)
    page = files.html.read_text(encoding="utf-8")
    assert json.loads(files.run_json.read_text()) == run
    assert files.run_js.read_text().startswith("onnxviz.run(")
    assert "href='a%20b/index.html'" in page and "src='a%20b/input.png' loading=lazy" in page
    assert "href='%C3%BC/index.html'" in page
    assert "tabby cat <b>71.0%</b>" in page and "no class output" in page
    assert "id=compare" in page and "2 images through test arrays" in page


def test_run_page_of_one_image_has_no_compare_view():
    run = {"format": 3, "model": "m.onnx", "source": "s", "layers": [{"index": 0, "name": "c", "shape": [2, 3, 3], "kind": "map"}],
           "images": [{"folder": "x", "image_name": "x.png", "top1": None}]}
    page = render_run_html(run)
    assert "id=compare" not in page and "1 image through s" in page


def test_the_legend_says_per_layer_when_the_render_scaled_per_layer(tmp_path):
    summary, page = page_of(tmp_path, norm="layer")
    conv = summary["layers"][0]
    part = section(page, 0)
    lo, hi = report._num(conv["stats"]["min"]), report._num(conv["stats"]["max"])
    assert f"one scale for every tile of this layer: {lo} .. {hi} (per layer, as stored)" in part
    assert f"<span class=lo>{lo}</span><span class=hi>{hi}</span>" in part
    # dead and flat come from each channel's own statistics, not from the layer-wide low/high
    assert re.search(r"<i class=dead style=[^>]*><b></b>4<", part) and re.search(r"<i class=flat style=[^>]*><b></b>7<", part)
    assert part.count("<i class=dead ") == 1 and part.count("<i class=flat ") == 1


def test_a_coloured_grid_written_with_the_render_is_linked_from_its_layer(tmp_path):
    summary = build_image(tmp_path, "g", "g.png", example_layers(0))
    summary["layers"][1]["grid"] = "grids/001.relu_2_ch000-063.jpg"
    page = render_html(summary)
    assert "<a href='grids/001.relu_2_ch000-063.jpg'>coloured grid picture</a>" in section(page, 1)
    assert "coloured grid picture" not in section(page, 0)


def test_report_names_the_module_class_and_the_exporter_fold():
    from onnxviz.report.render_page import _kind

    assert _kind({"op": "Conv", "class": "BatchNorm2d", "folded": ["layer1.0.conv2"], "name": "layer1.0.bn2"}) == \
        "BatchNorm2d, ONNX Conv: conv2 + bn2 (folded by the exporter)"
    assert _kind({"op": "Conv", "class": "", "folded": ["layer1.0.conv2"], "name": "layer1.0.conv2+bn"}) == \
        "ONNX Conv: conv2 + bn (folded by the exporter)"
    assert _kind({"op": "Relu", "class": "ReLU", "folded": [], "name": "layer1.0.relu#2"}) == "ReLU, ONNX Relu"
    assert _kind({"op": "Conv2D", "name": "block1_conv1"}) == "Conv2D"  # files without classes, as before
