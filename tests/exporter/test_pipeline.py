"""The export pipeline: one options type checked against the source kind, one validation, one write."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from onnxviz.cli import app
from onnxviz.errors import OnnxvizError, ValidationError
from onnxviz.exporter.sources import adapters
from onnxviz.exporter.sources.base import ExportOptions
from onnxviz.exporter.sources.keras import KerasApplication, KerasFile
from onnxviz.exporter.sources.onnx import OnnxFile
from tiny_models import tiny_onnx

runner = CliRunner()


def test_every_option_belongs_to_some_source_kind():
    every = {f for kind in adapters() for f in kind.options}
    assert every == set(ExportOptions.__dataclass_fields__)


@pytest.mark.parametrize("source, options, named", [
    (OnnxFile("m.onnx"), ExportOptions(weights="x.h5", alpha=3.0, include_top=False, skip_fused=True),
     "weights}, {alpha}, {include_top}, {skip_fused}"),
    (KerasApplication("vgg16"), ExportOptions(mean=[1, 2, 3], layout="nhwc", op_types=["Conv"], preprocess="tf"),
     "preprocess}, {op_types}, {mean}, {layout}"),
    (KerasFile("m.h5"), ExportOptions(alpha=0.5, include_top=False, bgr=True, scale="1/255"),
     "alpha}, {include_top}, {scale}, {bgr}"),
    (KerasFile("m.h5"), ExportOptions(resize="256"), "resize}"),
])
def test_an_option_for_another_source_is_an_error_that_names_what_applies(source, options, named):
    with pytest.raises(OnnxvizError) as err:
        source.check_options(options)
    assert err.value.template.startswith("{" + named)
    for name in source.options:
        assert "{" + name + "}" in err.value.template


def test_the_command_names_flags_and_exits_1_for_options_of_the_other_source(tmp_path):
    src = tmp_path / "plain.onnx"
    tiny_onnx(src)
    out = tmp_path / "out" / "plain.onnx"
    result = runner.invoke(app, ["export", str(src), "--tolerance", "0", "--weights", "missing.h5", "--alpha", "3",
                                 "--skip-fused", "--no-top", "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: --weights, --alpha, --no-top, --skip-fused do not apply to an ONNX model; an ONNX "
        "model takes --bgr, --exclude, --external-data, --input-size, --labels, --layers, --layout, --mean, --op-types, --preprocess, "
        "--resize, --scale, --std, --tolerance")
    result = runner.invoke(app, ["export", "vgg16", "--mean", "1,2,3", "--layout", "nhwc", "--op-types", "Conv",
                                 "-o", str(out)])
    assert result.exit_code == 1 and result.stderr.startswith(
        "error: --op-types, --mean, --layout do not apply to a keras.applications name;")
    assert not (tmp_path / "out").exists()  # a failed command leaves no folder behind


def test_the_api_names_parameters(tmp_path):
    import onnxviz

    src = tmp_path / "plain.onnx"
    tiny_onnx(src)
    with pytest.raises(OnnxvizError, match=r"^alpha does not apply to an ONNX model; an ONNX model takes bgr, "):
        onnxviz.export(src, tmp_path / "o.onnx", alpha=0.5)
    with pytest.raises(OnnxvizError, match=r"^export has no option 'alhpa'; its options are weights, input_size"):
        onnxviz.export(src, tmp_path / "o.onnx", alhpa=0.5)
    with pytest.raises(OnnxvizError, match=r"^source must be a keras.applications name, a .keras/.h5/.onnx path"):
        onnxviz.export(42)


def test_a_modelproto_exports_and_validates(tmp_path):
    import onnxviz

    model = tiny_onnx(tmp_path / "plain.onnx")
    result = onnxviz.export(model, tmp_path / "from_proto.onnx", scale="1/255")
    assert [layer.name for layer in result.info.layers] == ["r", "scores"]
    assert result.kind == "ONNX model" and result.max_relative < 1e-5 and result.path.is_file()
    assert "scale" in result.preprocessing_reason


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    import onnxviz
    from onnxviz.exporter.sources import onnx as onnx_source

    src = tmp_path / "plain.onnx"
    tiny_onnx(src)
    real = onnx_source._reference

    def off_by_one(*args, **kwargs):
        return {k: v + 1.0 for k, v in real(*args, **kwargs).items()}

    monkeypatch.setattr(onnx_source, "_reference", off_by_one)
    out = tmp_path / "new" / "out.onnx"
    with pytest.raises(ValidationError, match=r"^2 of 2 outputs differ from ONNX Runtime running the source model "
                                              r"beyond relative 0.0001 and beyond 4x what rounding moves them by: "
                                              r"r \(.*; rounding moves it .*\), scores \(.*\); nothing was written$"):
        onnxviz.export(src, out)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("content, message", [
    (b"this is not a model", "is not an ONNX model: it does not parse as one (a truncated file, or another kind of "
                             "file); give a .onnx file written by an ONNX exporter or 'onnxviz export'"),
])
def test_one_bad_file_gets_one_message_from_every_command(tmp_path, content, message):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    (tmp_path / "cat.png").write_bytes(b"")
    lines = set()
    for args in (["render", str(bad), str(tmp_path / "cat.png"), "-o", str(tmp_path / "out")], ["layers", str(bad)],
                 ["export", str(bad), "-o", str(tmp_path / "x.onnx")], ["filters", str(bad), "-o",
                 str(tmp_path / "f.png")], ["bench", str(bad)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        lines.add(result.stderr.strip().splitlines()[-1])
    assert lines == {f"error: '{bad}' {message}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "cat.png"]  # no folders left behind
