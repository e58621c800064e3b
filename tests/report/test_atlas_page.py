"""The atlas's page written from a plain data dict, and read back for render's links."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from onnxviz.errors import OnnxvizError
from onnxviz.report.atlas_page import page_html, read_atlas_layers, write_page


def data(title: str = "Atlas of net") -> dict:
    return {"title": title, "layers": [{"name": "conv1"}, {"name": "block 2/out"}], "top": 3}


def test_page_is_one_file_with_its_style_and_script_inlined_and_the_title_escaped():
    page = page_html("Atlas of <b>&net</b>")
    assets = resources.files("onnxviz.report.assets")
    assert "<title>Atlas of &lt;b&gt;&amp;net&lt;/b&gt; - onnxviz</title>" in page
    assert f"<style>\n{assets.joinpath('atlas.css').read_text()}</style>" in page
    assert f"<script>\n{assets.joinpath('atlas.js').read_text()}</script></body></html>\n" in page
    assert '<script src="atlas-data.js"></script>' in page
    assert "{{" not in page.replace("${", "")


def test_written_data_is_the_dict_and_render_reads_its_layers_back(tmp_path):
    written = write_page(tmp_path, data())
    assert written.page == tmp_path / "index.html" and written.data == tmp_path / "atlas-data.js"
    text = written.data.read_text()
    assert text.startswith("window.ATLAS = {") and text.endswith("};\n")
    assert json.loads(text[len("window.ATLAS = "):-2]) == data()
    assert written.bytes == written.page.stat().st_size + written.data.stat().st_size
    assert read_atlas_layers(tmp_path) == {"conv1": 0, "block 2/out": 1}


def test_a_folder_without_an_atlas_is_named_as_the_caller_spoke(tmp_path):
    (tmp_path / "atlas-data.js").write_text("window.ATLAS = {broken")
    with pytest.raises(OnnxvizError) as err:
        read_atlas_layers(tmp_path)
    assert str(err.value) == (f"atlas '{tmp_path}' holds no atlas (no readable atlas-data.js); make one with "
                              f"'onnxviz atlas MODEL IMAGES -o {tmp_path}'")
    assert err.value.spoken(lambda p: "--" + p).startswith(f"--atlas '{tmp_path}' holds no atlas")
