from __future__ import annotations

import json

from onnxviz.report import render_html, write_report


def summary() -> dict:
    return {
        "image": "/p/cat <1>.png", "image_name": "cat <1>.png", "model": "m.onnx", "source": "keras.applications.VGG16",
        "onnxviz_version": "0.1.0", "provider": "cpu", "provider_fallback": None, "input": [224, 224],
        "resize": "stretch", "original": "original.jpg",
        "predictions": [{"label": "tabby", "score": 0.61, "index": 281}, {"label": "tiger_cat", "score": 0.2, "index": 282}],
        "filters": {"file": "filters.jpg", "layer": "block1_conv1", "count": 64, "kernel": "64 filters of 3x3x3",
                    "channel_order": "BGR"},
        "layers": [{"index": 0, "name": "block1_conv1", "op": "Conv2D", "shape": [None, 64, 224, 224],
                    "file": "0.block1_conv1_0-64.jpg", "channels_shown": 64, "channels_total": 64, "channels": list(range(64)),
                    "stats": {"mean": 1.5, "zero_fraction": 0.25, "dead_channels": 3, "min": 0.0, "max": 9.0}}],
        "timings_ms": {"inference": 300.0, "tiling": 100.0, "writing": 20.0},
    }


def test_html_names_everything_and_escapes_text():
    page = render_html(summary())
    assert "cat &lt;1&gt;.png" in page and "<1>" not in page
    assert "tabby" in page and "61.0%" in page
    assert "0.block1_conv1_0-64.jpg" in page and "channels shown 64 of 64" in page
    assert "3 dead channels" in page and "zeros 25.0%" in page and "filters.jpg" in page
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")


def test_write_report_writes_the_same_facts_as_json(tmp_path):
    json_path, html_path = write_report(tmp_path, summary())
    assert json.loads(json_path.read_text()) == summary()
    assert html_path.read_text() == render_html(summary())


def test_report_names_the_module_class_and_the_exporter_fold():
    from onnxviz.report import _kind

    assert _kind({"op": "Conv", "class": "BatchNorm2d", "folded": ["layer1.0.conv2"], "name": "layer1.0.bn2"}) == \
        "BatchNorm2d, ONNX Conv: conv2 + bn2 (folded by the exporter)"
    assert _kind({"op": "Conv", "class": "", "folded": ["layer1.0.conv2"], "name": "layer1.0.conv2+bn"}) == \
        "ONNX Conv: conv2 + bn (folded by the exporter)"
    assert _kind({"op": "Relu", "class": "ReLU", "folded": [], "name": "layer1.0.relu#2"}) == "ReLU, ONNX Relu"
    assert _kind({"op": "Conv2D", "name": "block1_conv1"}) == "Conv2D"  # files without classes, as before
