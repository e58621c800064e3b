"""onnxviz.compare.bench on tiny onnxviz files: sane numbers, JSON keys, skipped providers, error texts."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.cli import bench_table, flag_of
from onnxviz.compare import bench

from onnxviz.run import session as runtime
from onnxviz.errors import ModelError, OnnxvizError, ProviderError
from onnxviz.model.info import LayerInfo, ModelInfo, Preprocessing, write_info

REPO = Path(__file__).resolve().parents[2]


def tiny_model(size: int = 16, *, names=("conv1_relu", "pool1"), keras: dict | None = None,
               intermediates: bool = True) -> onnx.ModelProto:
    """image NHWC -> conv (8 ch) -> relu -> maxpool -> mean: outputs the two maps and the prediction."""
    conv, pool = names
    kernel = np.random.default_rng(1).normal(size=(8, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "kernel"], ["pre"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["pre"], [conv]),
        helper.make_node("MaxPool", [conv], [pool], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("ReduceMean", [pool], ["predictions"], axes=[2, 3], keepdims=0),
    ]
    outputs = [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["N", 8])]
    layers = [LayerInfo("predictions", "Dense", [None, 8], "NC")]
    if intermediates:
        outputs[:0] = [helper.make_tensor_value_info(conv, TensorProto.FLOAT, ["N", 8, size, size]),
                       helper.make_tensor_value_info(pool, TensorProto.FLOAT, ["N", 8, size // 2, size // 2])]
        layers[:0] = [LayerInfo(conv, "Conv2D", [None, 8, size, size], "NCHW"),
                      LayerInfo(pool, "MaxPooling2D", [None, 8, size // 2, size // 2], "NCHW")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                              ["N", size, size, 3])],
                              outputs, [numpy_helper.from_array(kernel, "kernel")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    write_info(model, ModelInfo(input_name="image", height=size, width=size, layers=layers,
                                preprocessing=Preprocessing(), source="tests", version="0.1.0",
                                prediction_output="predictions", keras=keras))
    return model


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(path))
    return path


def test_bench_gives_sane_numbers_and_json(model_path):
    messages: list[str] = []
    result = bench.run_bench(model_path, None, [1, 4], runs=5, warmup=1, progress=messages.append)
    assert [(r.provider, r.used, r.batch_size) for r in result.rows] == [("cpu", "cpu", 1), ("cpu", "cpu", 4)]
    per_image = 4 * 8 * (16 * 16 + 8 * 8)  # float32 conv1_relu + pool1
    assert result.feature_bytes_per_image == per_image and result.feature_maps == 2
    assert result.floor_output == "predictions"
    for row in result.rows:
        assert 0 < row.full.median_ms <= row.full.p90_ms
        assert len(row.full.samples_ms) == 5
        assert row.full.images_per_s == pytest.approx(row.batch_size / (row.full.median_ms / 1e3))
        assert row.feature_mb_per_s == pytest.approx(per_image * row.full.images_per_s / 1e6)
        assert row.floor is not None and row.floor.median_ms > 0
        assert row.extraction_ratio == pytest.approx(row.full.median_ms / row.floor.median_ms)
    data = json.loads(result.save_json(model_path.parent / "out" / "bench.json").read_text())
    assert {"model", "rows", "skipped", "notes", "machine", "feature_bytes_per_image", "floor_output"} <= set(data)
    assert {"provider", "used", "batch_size", "full", "floor", "extraction_ratio", "feature_mb_per_s",
            "ort_over_keras_predict"} <= set(data["rows"][0])
    assert {"median_ms", "p90_ms", "images_per_s", "samples_ms"} <= set(data["rows"][0]["full"])
    assert data["machine"]["onnxruntime"] and data["machine"]["ort_threads"] >= 1
    assert any("batch 4" in m for m in messages)
    table = bench_table(result)
    assert "floor: the same network with only 'predictions' as output, timed in alternating blocks" in table
    assert table.count("\ncpu ") == 2


@pytest.mark.skipif(runtime.cuda_status()[0], reason="CUDA really runs here")
def test_unavailable_provider_is_skipped_with_its_reason_unless_named(model_path):
    result = bench.run_bench(model_path, None, [1], runs=2, warmup=0)
    assert [(s.provider, s.reason) for s in result.skipped] == [("cuda", runtime.cuda_status()[1])]
    assert f"skipped cuda: {runtime.cuda_status()[1]}" in bench_table(result)
    with pytest.raises(ProviderError) as err:
        bench.run_bench(model_path, ["cpu", "cuda"], [1], runs=2, warmup=0)
    assert str(err.value) == f"provider 'cuda' was asked for but cannot run here: {runtime.cuda_status()[1]}"


def test_alternating_blocks_time_each_the_same_number_of_runs_after_a_settling_call():
    calls: list[str] = []
    a, b = bench.time_alternately([lambda: calls.append("a"), lambda: calls.append("b")], runs=8, warmup=1)
    assert len(a) == len(b) == 8
    assert "".join(calls) == "ab" + "aaa" + "bbb" + "bbb" + "aaa" + "aaa" + "bbb" + "bbb" + "aaa"
    alone, none = bench.time_alternately([lambda: calls.append("c"), None], runs=3, warmup=0)
    assert len(alone) == 3 and none == []


def test_three_way_alternation_reverses_the_order_every_round():
    calls: list[str] = []
    times = bench.time_alternately([lambda: calls.append("a"), lambda: calls.append("b"),
                                    lambda: calls.append("c")], runs=4, warmup=0)
    assert [len(t) for t in times] == [4, 4, 4]
    assert "".join(calls) == "aa" "bb" "cc" "cc" "bb" "aa" "aa" "bb" "cc" "cc" "bb" "aa"


def test_unknown_provider_lists_valid_ones(model_path):
    with pytest.raises(ProviderError) as err:
        bench.run_bench(model_path, ["cpu", "tpu"], [1])
    assert str(err.value) == "providers: unknown provider 'tpu'; valid: cpu, cuda"
    assert bench.parse_providers("cpu, CUDA") == ["cpu", "cuda"]


@pytest.mark.parametrize("sizes, shown", [([0], "0"), ([1, -2], "-2"), ([1.5], "1.5"), (["8"], "'8'"),
                                          ([True], "True"), ([], "(none)")])
def test_bad_batch_sizes(model_path, sizes, shown):
    with pytest.raises(OnnxvizError) as err:
        bench.run_bench(model_path, ["cpu"], sizes)
    assert str(err.value) == f"batch_sizes must be positive integers, like 1,8; got {shown}"


def test_parse_batch_sizes():
    assert bench.parse_batch_sizes("1, 8,8") == [1, 8]
    with pytest.raises(OnnxvizError, match=r"got 'x'$"):
        bench.parse_batch_sizes("1,x")


def test_bad_runs(model_path):
    with pytest.raises(OnnxvizError, match=r"^runs must be an integer >= 1, not 0$"):
        bench.run_bench(model_path, ["cpu"], [1], runs=0)


def test_batch_too_large_for_memory_fails_before_timing(model_path, monkeypatch):
    monkeypatch.setattr(bench, "available_memory", lambda: 50_000_000)
    with pytest.raises(OnnxvizError) as err:
        bench.run_bench(model_path, ["cpu"], [1, 20_000])
    assert err.value.spoken(flag_of) == ("batch size 20000 needs about 0.5 GB of host memory for its feature maps "
                                         "(0.01 MB per image) but 0.1 GB is available; use smaller --batch-sizes")
    assert str(err.value).endswith("; use smaller batch_sizes")  # the library names its parameter


def test_model_without_intermediate_outputs_is_benched_with_a_note(tmp_path):
    path = tmp_path / "plain.onnx"
    onnx.save(tiny_model(intermediates=False), str(path))
    result = bench.run_bench(path, ["cpu"], [2], runs=2, warmup=0)
    assert result.rows[0].floor is None and result.rows[0].extraction_ratio is None
    assert result.floor_output is None and result.feature_maps == 0
    assert result.notes[0] == ("'plain.onnx' has no intermediate outputs (only 'predictions'): it is its own floor, "
                               "so no extraction ratio")


def test_floor_file_has_only_the_final_output_and_the_same_values(model_path, tmp_path):
    floor_path = bench._floor_model(model_path, "predictions", tmp_path)
    floor = onnx.load(str(floor_path))
    assert [o.name for o in floor.graph.output] == ["predictions"]
    original = onnx.load(str(model_path))
    assert {p.key: p.value for p in floor.metadata_props} == {p.key: p.value for p in original.metadata_props}
    image = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    full = runtime.open_session(model_path, "cpu").run(image)["predictions"]
    np.testing.assert_allclose(runtime.open_session(floor_path, "cpu").run(image)["predictions"], full, rtol=1e-6)


def test_compare_keras_needs_keras_metadata(model_path):
    with pytest.raises(ModelError) as err:
        bench.run_bench(model_path, ["cpu"], [1], compare_keras=True)
    assert str(err.value) == (f"'{model_path}' does not say how to rebuild its Keras source (it was not exported "
                              f"from Keras), so compare_keras has nothing to compare with")


def test_compare_keras_without_tensorflow_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "k.onnx"
    onnx.save(tiny_model(keras={"application": "MobileNet", "kwargs": {}}), str(path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(OnnxvizError) as err:
        bench.run_bench(path, ["cpu"], [1], compare_keras=True)
    assert str(err.value) == "compare_keras needs TensorFlow, which is not installed: pip install 'onnxviz[export]'"


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_compare_keras_times_the_keras_model_in_another_process(tmp_path):
    """MobileNet's first layers have these names; the ONNX side is the tiny graph, so only the plumbing is real."""
    path = tmp_path / "k.onnx"
    keras = {"application": "MobileNet", "kwargs": {"alpha": 0.25, "input_shape": [32, 32, 3]}, "weights": "imagenet"}
    onnx.save(tiny_model(32, names=("conv1_relu", "conv_pw_1_relu"), keras=keras), str(path))
    result = bench.run_bench(path, ["cpu"], [2], runs=1, warmup=0, compare_keras=True)
    assert "tensorflow" not in sys.modules
    assert result.keras["device"] in ("CPU", "GPU") and result.keras["tensorflow"]
    for row in result.rows:
        assert row.keras_predict.median_ms > 0 and row.keras_function.median_ms > 0
        assert row.ort_over_keras_predict == pytest.approx(row.full.median_ms / row.keras_predict.median_ms)
        assert row.ort_over_keras_function == pytest.approx(row.full.median_ms / row.keras_function.median_ms)
    assert "ORT/predict" in bench_table(result)


def test_runtime_and_bench_do_not_import_tensorflow(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(path))
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from onnxviz.cli import bench_table
        from onnxviz.compare import bench
        from onnxviz.run import session as runtime
        session = runtime.open_session({str(path)!r}, "auto")
        session.run(np.zeros((1, 16, 16, 3), np.float32))
        bench_table(bench.run_bench({str(path)!r}, None, [1], runs=1, warmup=0))
        heavy = sorted(m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules)
        assert not heavy, heavy
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_keras_worker_answers_on_one_marked_line_even_when_its_input_is_bad():
    done = subprocess.run([sys.executable, "-m", "onnxviz.compare.keras_worker"], input="not json",
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    from onnxviz.compare.keras_worker import MARK

    report = json.loads(done.stdout.strip().splitlines()[-1][len(MARK):])
    assert report["error"].startswith("the Keras timing failed: JSONDecodeError: ")
