"""atlas/plan: the layers chosen, the reduced model, its weights."""
from __future__ import annotations

import onnx
import pytest

from atlas_checks import LAYERS, assert_same_as_brute_force, brute_force_table, invoke
from atlas_models import branchy_model, vectors_only_model
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.atlas.plan import default_layers
from onnxviz.model.info import read_info


def test_default_layers_take_the_deepest_map_of_each_resolution():
    info = read_info(branchy_model())
    assert [layer.name for layer in default_layers(info)] == ["c1", "p1", "add", "c3", "gap"]


@pytest.mark.parametrize("light_bytes", [0, 64 << 10])
def test_weights_left_out_of_the_rewrite_or_in_an_external_file_give_the_same_atlas(atlas_model, atlas_images, tmp_path,
                                                                                   monkeypatch, light_bytes):
    """make_plan rewrites the graph with the large weights left out and puts them back from the file
    (0: every floating-point initializer, as VGG16's large ones are); weights in an external file
    are loaded into the bytes ONNX Runtime gets. The table, boxes included, is the one made with
    every weight parsed."""
    import onnxviz.atlas.plan as atlas

    opts = AtlasOptions(layers=LAYERS, top=3, provider="cpu")
    monkeypatch.setattr(atlas, "LIGHT_TENSOR_BYTES", 1 << 62)  # nothing left out
    build_atlas(atlas_model, [atlas_images], tmp_path / "whole", opts)
    assert_same_as_brute_force(tmp_path / "whole", brute_force_table(atlas_model, atlas_images, LAYERS, 3, "max"))
    monkeypatch.setattr(atlas, "LIGHT_TENSOR_BYTES", light_bytes)
    build_atlas(atlas_model, [atlas_images], tmp_path / "a", opts)
    external = tmp_path / "ext" / "branchy.onnx"
    external.parent.mkdir()
    onnx.save(branchy_model(), external, save_as_external_data=True, all_tensors_to_one_file=True,
              location="branchy.weights", size_threshold=0)
    build_atlas(external, [atlas_images], tmp_path / "b", opts)
    want = (tmp_path / "whole" / "atlas.jsonl").read_text()
    assert (tmp_path / "a" / "atlas.jsonl").read_text() == want
    assert (tmp_path / "b" / "atlas.jsonl").read_text() == want


def test_model_without_maps(tmp_path, atlas_images):
    path = tmp_path / "vectors.onnx"
    onnx.save(vectors_only_model(), path)
    code, out = invoke(path, atlas_images, "-o", tmp_path / "a")
    assert code == 1 and "has no 4-D feature maps, so there are no channels to collect" in out
