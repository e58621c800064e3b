"""onnxviz.exporter.sources.torch_names on real exports of torch's two exporters (tests/torch_models, made by
tests/torch_models/make_models.py with forward hooks as the reference; torch is not needed here)."""
from __future__ import annotations

import copy
import fnmatch
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxviz.exporter.sources.torch_names import CLASSES, SCOPES, apply_module_names, module_names
from onnxviz.api import export as export_onnx
from onnxviz.run.session import open_session

MODELS = Path(__file__).resolve().parents[1] / "torch_models"
FILES = sorted(MODELS.glob("*_opset*.onnx"))
NAMES = [f.stem for f in FILES]
# Maps made by functions called in a forward() of the root module, not by a module.
OUTSIDE_MODULES = {"densenet": {"relu_10", "/Relu_output_0"}}


def hooks(stem: str) -> dict[str, np.ndarray]:
    data = np.load(MODELS / f"{stem.split('_')[0]}_hooks.npz")
    refs = {k: data[k] for k in data.files if k not in ("rgb", "input", "aliases")}
    for alias in data["aliases"]:
        outer, inner = str(alias).split("=")
        refs[outer] = refs[inner]
    return refs


def rgb(stem: str) -> np.ndarray:
    return np.load(MODELS / f"{stem.split('_')[0]}_hooks.npz")["rgb"]


def bn_of_fold(stem: str) -> dict[str, str]:
    """For a TorchScript file: `conv+bn` name -> the BatchNorm the dynamo export of the same model names."""
    dynamo = module_names(onnx.load(MODELS / f"{stem.replace('legacy', 'dynamo')}.onnx"))
    return {f"{ident.folded[0]}+bn": ident.name for ident in dynamo.identities.values() if ident.folded}


def exported(stem: str, tmp_path: Path, **kwargs):
    out = tmp_path / f"{stem}.onnx"
    result = export_onnx(MODELS / f"{stem}.onnx", out, preprocess="torchvision", **kwargs)
    return out, result


def test_the_committed_files_are_what_the_script_says():
    assert len(FILES) == 12
    for f in FILES:
        model = onnx.load(f)
        opset = next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))
        assert f"opset{opset}" in f.stem, f.name
        assert model.producer_name == "pytorch"
        has_metadata = any(p.key == SCOPES for n in model.graph.node for p in n.metadata_props)
        assert has_metadata == ("dynamo" in f.stem), f.name


def test_resnet_names_calls_and_folds_from_both_exporters():
    dyn = module_names(onnx.load(MODELS / "resnet_dynamo_opset18.onnx"))
    assert dyn.exporter == "dynamo" and dyn.note is None
    by_name = {i.name: i for i in dyn.identities.values()}
    assert by_name["layer1.0.bn2"].cls == "BatchNorm2d" and by_name["layer1.0.bn2"].folded == ["layer1.0.conv2"]
    assert by_name["layer2.0.downsample.1"].folded == ["layer2.0.downsample.0"]
    assert by_name["layer1.0.relu"].cls == "ReLU" and by_name["layer1.0.relu#2"].folded == []
    assert "layer1.0:add" in by_name and by_name["layer1.0:add"].cls == ""
    assert not any(i.name.startswith("layer1.0.conv") for i in dyn.identities.values())
    leg = module_names(onnx.load(MODELS / "resnet_legacy_opset18.onnx"))
    assert leg.exporter == "torchscript" and leg.note is None
    assert leg.identities["/layer1/layer1.0/relu_1/Relu_output_0"].name == "layer1.0.relu#2"
    folded = leg.identities["/layer1/layer1.0/conv2/Conv_output_0"]
    assert (folded.name, folded.cls, folded.folded) == ("layer1.0.conv2+bn", "", ["layer1.0.conv2"])
    assert leg.identities["/layer2/layer2.0/downsample/downsample.0/Conv_output_0"].name == "layer2.0.downsample.0+bn"


@pytest.mark.parametrize("stem", NAMES)
def test_every_default_map_is_named_after_its_module_and_equals_its_hook_output(stem, tmp_path):
    path, result = exported(stem, tmp_path)
    refs = hooks(stem)
    renames = bn_of_fold(stem) if "legacy" in stem else {}
    session = open_session(path, "cpu")
    outputs = session.run(rgb(stem)[None].astype(np.float32))
    maps = result.info.feature_maps
    named = 0
    outside = OUTSIDE_MODULES.get(stem.split("_")[0], set())
    for layer in maps:
        module = renames.get(layer.name, layer.name)
        if layer.name in outside:  # made outside every module (torch.relu in forward): keeps its name
            assert layer.cls == "" and layer.name not in refs
            continue
        assert module in refs, f"{layer.name} is not a module of the model ({sorted(refs)[:8]}...)"
        ref, got = refs[module], outputs[layer.name]
        span = float(ref.max() - ref.min())
        assert got.shape == ref.shape, layer.name
        assert np.abs(got - ref).max() <= 1e-5 * span, (layer.name, np.abs(got - ref).max() / span)
        for inner in layer.folded:  # the map is not the folded module's output: the fold matters
            assert np.abs(refs[inner] - ref).max() > 0.05 * span, (layer.name, inner)
        named += 1
    assert named == len(maps) - len(outside & {m.name for m in maps}) and named >= 6
    if "dynamo" in stem:
        assert all(layer.cls for layer in maps if layer.name not in outside), [m.name for m in maps if not m.cls]


def test_a_module_output_that_is_not_exposed_by_default_can_be_chosen_by_module_path(tmp_path):
    # densenet: conv1 + norm2 folded, read only by relu2, so hidden by default; --layers finds it.
    path, result = exported("densenet_dynamo_opset18", tmp_path, layers=["features.denseblock1.*.norm?"])
    names = [layer.name for layer in result.info.feature_maps]
    assert names == ["features.denseblock1.denselayer1.norm1", "features.denseblock1.denselayer1.norm2",
                     "features.denseblock1.denselayer2.norm1", "features.denseblock1.denselayer2.norm2"]
    assert result.info.layer("features.denseblock1.denselayer1.norm2").folded == ["features.denseblock1.denselayer1.conv1"]
    refs = hooks("densenet_dynamo_opset18")
    outputs = open_session(path, "cpu").run(rgb("densenet")[None].astype(np.float32))
    for name in names:
        np.testing.assert_allclose(outputs[name], refs[name], atol=1e-5 * float(np.ptp(refs[name])))


def test_layers_and_exclude_globs_match_module_paths(tmp_path):
    _, result = exported("resnet_dynamo_opset20", tmp_path, layers=["layer1.*"], exclude=["*#2"])
    chosen = [layer.name for layer in result.info.feature_maps]
    assert chosen == ["layer1.0.bn1", "layer1.0.relu", "layer1.0.bn2", "layer1.0:add"]
    _, result = exported("mobilenetv3_legacy_opset18", tmp_path, layers=["features.?.block.?.?"])
    assert all(fnmatch.fnmatchcase(layer.name, "features.?.block.?.?") for layer in result.info.feature_maps)
    assert "features.1.block.1.2" in [layer.name for layer in result.info.feature_maps]


def test_the_file_records_class_and_fold_and_render_layers_matches_module_names(tmp_path):
    from onnxviz.model.info import load_info
    from onnxviz.model.selection import select_layers

    path, _ = exported("resnet_dynamo_opset18", tmp_path)
    info = load_info(path)
    bn2 = info.layer("layer1.0.bn2")
    assert (bn2.op, bn2.cls, bn2.folded) == ("Conv", "BatchNorm2d", ["layer1.0.conv2"])
    assert [layer.name for layer in select_layers(info, ["layer2.*"], str(path))] == [
        "layer2.0.relu", "layer2.0.bn2", "layer2.0.downsample.1", "layer2.0.relu#2"]


def _strip(model: onnx.ModelProto, every: int) -> onnx.ModelProto:
    out = copy.deepcopy(model)
    for i, node in enumerate(out.graph.node):
        if i % every == 0:
            del node.metadata_props[:]
    return out


def test_partial_metadata_keeps_tensor_names_for_the_rest_and_says_so_once():
    model = onnx.load(MODELS / "resnet_dynamo_opset18.onnx")
    partial = _strip(model, 3)
    found = module_names(partial)
    stripped = sum(1 for i, n in enumerate(model.graph.node) if i % 3 == 0 and n.op_type != "Constant")
    assert found.note == (f"{stripped} without pkg.torch.onnx.name_scopes of {len(model.graph.node)} nodes: "
                          f"the maps they make keep their tensor names")
    renamed, ids, note = apply_module_names(partial)
    assert note == found.note
    first = partial.graph.node[0].output[0]  # stripped: keeps its tensor name
    assert first in {o for n in renamed.graph.node for o in n.output} and first not in ids


def test_inconsistent_metadata_falls_back_for_those_nodes():
    model = onnx.load(MODELS / "resnet_dynamo_opset18.onnx")
    bad = copy.deepcopy(model)
    node = next(n for n in bad.graph.node if n.output[0] == "relu_1")
    for p in node.metadata_props:
        if p.key == SCOPES:
            p.value = "['', 'layer1', 'layer2.0', 'layer2.0.relu', 'relu_1']"  # layer2.0 is not inside layer1
    other = next(n for n in bad.graph.node if n.output[0] == "relu")
    for p in other.metadata_props:
        if p.key == CLASSES:
            p.value = "['only one']"  # not in step with the scopes
    found = module_names(bad)
    assert found.note == (f"2 with inconsistent module metadata of {len(bad.graph.node)} nodes: "
                          f"the maps they make keep their tensor names")
    assert "relu_1" not in found.identities and "relu" not in found.identities
    assert found.identities["getitem_6"].name == "layer1.0.bn2"


def test_torchscript_call_suffix_is_read_as_a_call_only_after_the_first_call():
    from onnxviz.exporter.sources.torch_names import _legacy_paths

    seen: dict[str, set[str]] = {}
    assert _legacy_paths(["block_1"], seen) == ["block_1"]  # a module really named block_1
    assert _legacy_paths(["layer1", "layer1.0", "relu"], seen)[-1] == "layer1.0.relu"
    assert _legacy_paths(["layer1", "layer1.0", "relu_1"], seen)[-1] == "layer1.0.relu#2"
    assert _legacy_paths(["features", "features.1", "block", "block.0", "block.0.0"], seen)[-1] == "features.1.block.0.0"


def test_other_onnx_files_are_left_alone(shared_data):
    model = onnx.load(shared_data / "onnx" / "squeezenet1.1.onnx")
    found = module_names(model)
    assert (found.exporter, found.identities, found.note) == (None, {}, None)
    assert apply_module_names(model)[0] is model


def test_fraction_of_default_maps_named_after_modules(tmp_path):
    """Every default map of every committed file but the ones made outside any module gets a
    module name (the figure the README quotes: 140 of 144)."""
    total = named = 0
    for stem in NAMES:
        _, result = exported(stem, tmp_path)
        for layer in result.info.feature_maps:
            total += 1
            if layer.name in OUTSIDE_MODULES.get(stem.split("_")[0], set()):
                continue
            named += 1
            assert not layer.name.startswith(("/", "getitem", "conv2d", "max_pool", "cat")), layer.name
    assert (named, total) == (140, 144)


def test_the_command_says_once_that_some_maps_keep_tensor_names(tmp_path):
    from typer.testing import CliRunner

    from onnxviz.cli import app

    model = onnx.load(MODELS / "resnet_dynamo_opset18.onnx")
    partial = tmp_path / "partial.onnx"
    onnx.save(_strip(model, 3), partial)
    result = CliRunner().invoke(app, ["export", str(partial), "-o", str(tmp_path / "out.onnx")])
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "module names:" in line]
    assert said == [f"note: module names: {module_names(_strip(model, 3)).note}"]
