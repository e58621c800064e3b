from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from onnxviz.cli import app
from onnxviz.errors import ModelError, OutputError
from onnxviz.model.modelfile import ALIGNMENT, DATA_KEY, check_model_file, data_path, save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import tiny_model, write_image  # noqa: E402

runner = CliRunner()


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    """The tiny model's weights are under 1 KB: store tensors of 64 bytes or more externally."""
    import onnxviz.model.modelfile as modelfile

    monkeypatch.setattr(modelfile, "EXTERNAL_FROM_BYTES", 64)


def outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})


def test_save_model_writes_a_pair_that_runs_like_the_single_file(tmp_path):
    model = tiny_model()
    onnx.save(model, tmp_path / "single.onnx")
    written = save_model(model, tmp_path / "pair.onnx", external=True)
    data = data_path(tmp_path / "pair.onnx")
    assert data.name == "pair.onnx.data" and data.is_file()
    assert written == (tmp_path / "pair.onnx").stat().st_size + data.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair.onnx", "pair.onnx.data", "single.onnx"]
    light = onnx.load(str(tmp_path / "pair.onnx"), load_external_data=False)
    external = [t for t in light.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert [t.name for t in external] == ["W", "FC"]  # the tensors of 64 bytes or more
    for t in external:
        offset = int({e.key: e.value for e in t.external_data}["offset"])
        assert offset % ALIGNMENT == 0  # so that ORT can map them
    props = {p.key: p.value for p in light.metadata_props}
    assert json.loads(props[DATA_KEY])["file"] == "pair.onnx.data"
    assert "onnxviz.layer.000" in props  # the model's own metadata kept
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    for a, b in zip(outputs(tmp_path / "single.onnx", x), outputs(tmp_path / "pair.onnx", x)):
        np.testing.assert_array_equal(a, b)
    found = check_model_file(tmp_path / "pair.onnx")
    assert found.data == data and found.external_tensors == 2


def test_a_small_model_stays_one_file_and_a_stale_data_file_goes(tmp_path):
    """A model with no tensor over the threshold is one file; the data file of an earlier
    export of the same name is removed with the new model in place."""
    save_model(tiny_model(), tmp_path / "m.onnx", external=True)
    model = tiny_model()
    for t in model.graph.initializer:  # make every tensor small
        if t.name in ("W", "FC"):
            t.CopyFrom(onnx.numpy_helper.from_array(np.zeros((1,), np.float32), t.name))
    save_model(model, tmp_path / "m.onnx", external=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert check_model_file(tmp_path / "m.onnx").data is None


def test_missing_truncated_and_foreign_data_files_are_named(tmp_path):
    path = tmp_path / "m.onnx"
    save_model(tiny_model(), path, external=True)
    data = data_path(path)
    good = data.read_bytes()
    data.write_bytes(good[:-100])
    with pytest.raises(ModelError, match=r"the weights file '.*m\.onnx\.data' is truncated or damaged: \d+ bytes "
                                         r"where 'm\.onnx' expects \d+"):
        check_model_file(path)
    data.unlink()
    with pytest.raises(ModelError, match=r"'.*m\.onnx' keeps its weights in '.*m\.onnx\.data', which is missing; it "
                                         r"must lie beside 'm\.onnx'"):
        check_model_file(path)
    save_model(tiny_model(), tmp_path / "other.onnx", external=True)
    data.write_bytes(data_path(tmp_path / "other.onnx").read_bytes())  # same size, another export
    with pytest.raises(ModelError, match=r"does not belong to '.*m\.onnx' \(it comes from another export\)"):
        check_model_file(path)


def test_render_names_the_missing_data_file_in_one_line(tmp_path):
    path = tmp_path / "m.onnx"
    save_model(tiny_model(), path, external=True)
    write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    assert runner.invoke(app, ["render", str(path), str(tmp_path / "a.png"), "-o", str(out)]).exit_code == 0
    data_path(path).unlink()
    result = runner.invoke(app, ["render", str(path), str(tmp_path / "a.png"), "-o", str(tmp_path / "out2")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"keeps its weights in '{data_path(path)}', which is missing" in lines[0]
    assert not (tmp_path / "out2").exists()


def test_save_model_leaves_the_old_pair_when_the_disk_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    save_model(tiny_model(), path, external=True)
    before = path.read_bytes(), data_path(path).read_bytes()
    import onnxviz.model.modelfile as modelfile

    def fail(fh, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile, "_fsync_write", fail)
    with pytest.raises(Exception, match=r"cannot write '.*m\.onnx': No space left on device; free some space") as err:
        save_model(tiny_model(), path, external=True)
    assert str(err.value).endswith("choose another output") and err.value.spoken(lambda p: "-o").endswith("another -o")
    assert (path.read_bytes(), data_path(path).read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_small_weights_go_in_one_file_large_ones_in_a_pair_and_a_choice_wins(tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from onnxviz.model import modelfile

    small = tiny_model()
    assert modelfile.weight_bytes(small) < modelfile.SINGLE_FILE_UP_TO
    save_model(small, tmp_path / "small.onnx")
    assert not data_path(tmp_path / "small.onnx").exists()
    assert check_model_file(tmp_path / "small.onnx").data is None
    big = tiny_model()
    big.graph.initializer.append(numpy_helper.from_array(np.zeros(modelfile.SINGLE_FILE_UP_TO // 4 + 1, np.float32), "pad"))
    save_model(big, tmp_path / "big.onnx")
    assert data_path(tmp_path / "big.onnx").is_file()
    save_model(big, tmp_path / "chosen.onnx", external=False)
    assert not data_path(tmp_path / "chosen.onnx").exists()
    np.testing.assert_array_equal(numpy_helper.to_array(onnx.load(str(tmp_path / "chosen.onnx")).graph.initializer[-1]),
                                  np.zeros(modelfile.SINGLE_FILE_UP_TO // 4 + 1, np.float32))
    monkeypatch.setattr(modelfile, "SINGLE_FILE_MAX", 10)  # as if the weights passed protobuf's 2 GB
    with pytest.raises(OutputError, match=r"do not fit in one ONNX file \(protobuf's 2 GB limit\); write them as a "
                                          r"data file beside it \(external_data\)"):
        save_model(small, tmp_path / "too_big.onnx", external=False)


def test_a_single_file_export_over_an_earlier_pair_removes_its_stale_data_file(tmp_path):
    from onnxviz.api import export
    from tiny_models import tiny_onnx

    tiny_onnx(tmp_path / "plain.onnx")
    export(tmp_path / "plain.onnx", tmp_path / "m.onnx", external_data=True)
    assert data_path(tmp_path / "m.onnx").is_file()
    export(tmp_path / "plain.onnx", tmp_path / "m.onnx")
    assert not data_path(tmp_path / "m.onnx").exists()
    check_model_file(tmp_path / "m.onnx")
