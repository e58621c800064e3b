"""onnxviz.run.session on tiny onnxviz files built here: providers, outputs, and error texts."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxviz.run import session as runtime
from onnxviz.errors import ImageError, LayerSelectionError, ModelError, OnnxvizError, ProviderError
from onnxviz.model.info import LayerInfo, ModelInfo, Preprocessing, write_info

H = W = 8
RNG = np.random.default_rng(42)
KERNEL = RNG.normal(size=(2, 3, 3, 3)).astype(np.float32)  # OIHW
BIAS = np.array([0.5, -0.25], np.float32)


def tiny_model(*, metadata: bool = True) -> onnx.ModelProto:
    """image NHWC -> NCHW -> conv1 (Conv+Relu, 2 ch) -> pool1 (MaxPool 2) -> predictions (mean per channel)."""
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "kernel", "bias"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["conv1"]),
        helper.make_node("MaxPool", ["conv1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("ReduceMean", ["pool1"], ["predictions"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, 3])],
        [helper.make_tensor_value_info("conv1", TensorProto.FLOAT, ["N", 2, H, W]),
         helper.make_tensor_value_info("pool1", TensorProto.FLOAT, ["N", 2, H // 2, W // 2]),
         helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(KERNEL, "kernel"), numpy_helper.from_array(BIAS, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if metadata:
        write_info(model, ModelInfo(
            input_name="image", height=H, width=W,
            layers=[LayerInfo("conv1", "Conv2D", [None, 2, H, W], "NCHW"),
                    LayerInfo("pool1", "MaxPooling2D", [None, 2, H // 2, W // 2], "NCHW"),
                    LayerInfo("predictions", "Dense", [None, 2], "NC")],
            preprocessing=Preprocessing(), source="tests", version="0.1.0",
            prediction_output="predictions", prediction_is_probability=False))
    onnx.checker.check_model(model)
    return model


def numpy_reference(batch: np.ndarray) -> dict[str, np.ndarray]:
    x = np.pad(batch.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))  # N C H W 3 3
    conv1 = np.maximum(np.einsum("nchwij,ocij->nohw", windows, KERNEL) + BIAS[None, :, None, None], 0)
    n, c = conv1.shape[:2]
    pool1 = conv1.reshape(n, c, H // 2, 2, W // 2, 2).max(axis=(3, 5))
    return {"conv1": conv1, "pool1": pool1, "predictions": pool1.mean(axis=(2, 3))}


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(path))
    return path


def batch(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, H, W, 3)).astype(np.float32)


def cuda_works() -> bool:
    return runtime.cuda_status()[0]


# ---------------------------------------------------------------- providers

def test_resolve_cpu_is_cpu_only():
    assert runtime.resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert runtime.resolve_providers(" CPU ") == ["CPUExecutionProvider"]


def test_unknown_provider_names_the_valid_ones():
    with pytest.raises(ProviderError) as err:
        runtime.resolve_providers("tpu")
    assert str(err.value) == "unknown provider 'tpu'; valid: auto, cpu, cuda"


def test_cuda_status_is_one_cached_line():
    ok, why = runtime.cuda_status()
    assert runtime.cuda_status() is runtime.cuda_status()
    assert ok == (why == "")
    assert "\n" not in why


@pytest.mark.skipif(cuda_works(), reason="CUDA really runs here")
def test_cuda_asked_for_by_name_raises_with_the_reason(model_path):
    reason = runtime.cuda_status()[1]
    assert reason
    with pytest.raises(ProviderError) as err:
        runtime.resolve_providers("cuda")
    assert str(err.value).startswith("provider 'cuda' was asked for but cannot run here: ")
    assert reason in str(err.value)
    with pytest.raises(ProviderError, match="cannot run here"):
        runtime.open_session(model_path, "cuda")


@pytest.mark.skipif(cuda_works(), reason="CUDA really runs here")
def test_auto_falls_back_to_cpu_and_says_why(model_path):
    session = runtime.open_session(model_path, "auto")
    assert session.provider == "cpu"
    assert session.fallback == runtime.cuda_status()[1]
    assert session.fallback and "\n" not in session.fallback
    assert session.session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.skipif(not cuda_works(), reason="CUDA cannot run here: " + runtime.cuda_status()[1])
def test_cuda_session_reports_cuda(model_path):
    session = runtime.open_session(model_path, "cuda")
    assert session.provider == "cuda" and session.fallback is None
    assert session.session.get_session_options().enable_mem_pattern  # ORT's default on a GPU
    for name, expected in numpy_reference(batch()).items():
        np.testing.assert_allclose(session.run(batch())[name], expected, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- running

def test_cpu_session_outputs_equal_numpy_reference(model_path):
    session = runtime.open_session(model_path, "cpu")
    assert session.provider == "cpu" and session.fallback is None
    assert session.output_names == ["conv1", "pool1", "predictions"]
    got = session.run(batch(3))
    assert list(got) == ["conv1", "pool1", "predictions"]
    for name, expected in numpy_reference(batch(3)).items():
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-4)


def test_outputs_equal_onnx_reference_evaluator(model_path):
    session = runtime.open_session(model_path, "cpu")
    oracle = ReferenceEvaluator(tiny_model())
    names = ["conv1", "pool1", "predictions"]
    for got, expected in zip(session.run(batch()).values(), oracle.run(names, {"image": batch()})):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_requested_outputs_only(model_path):
    session = runtime.open_session(model_path, "cpu", outputs=["pool1"])
    got = session.run(batch())
    assert list(got) == ["pool1"]
    np.testing.assert_allclose(got["pool1"], numpy_reference(batch())["pool1"], rtol=1e-5, atol=1e-4)


def test_each_run_can_ask_for_its_own_outputs_without_changing_the_session(model_path):
    session = runtime.open_session(model_path, "cpu")
    got = session.run(batch(), ["predictions", "conv1", "predictions"])
    assert list(got) == ["predictions", "conv1"]
    np.testing.assert_allclose(got["conv1"], numpy_reference(batch())["conv1"], rtol=1e-5, atol=1e-4)
    assert session.output_names == ["conv1", "pool1", "predictions"] and list(session.run(batch())) == session.output_names
    narrow = runtime.open_session(model_path, "cpu", outputs=["pool1"])
    assert list(narrow.run(batch(), ["conv1"])) == ["conv1"]  # any output of the file, not only those opened
    with pytest.raises(LayerSelectionError) as err:
        session.run(batch(), ["conv9"])
    assert str(err.value) == (f"output 'conv9' is not in '{model_path}'; it has 3: conv1, pool1, predictions. "
                              f"Run 'onnxviz layers {model_path}'")


def test_unknown_output_lists_the_ones_there(model_path):
    with pytest.raises(LayerSelectionError) as err:
        runtime.open_session(model_path, "cpu", outputs=["conv9"])
    assert str(err.value) == (f"output 'conv9' is not in '{model_path}'; it has 3: conv1, pool1, predictions. "
                              f"Run 'onnxviz layers {model_path}'")


def test_info_comes_from_the_session_metadata(model_path):
    info = runtime.open_session(model_path, "cpu").info
    assert (info.input_name, info.height, info.width) == ("image", H, W)
    assert [layer.name for layer in info.feature_maps] == ["conv1", "pool1"]
    assert info.prediction_output == "predictions"


def test_uint8_batch_is_accepted(model_path):
    session = runtime.open_session(model_path, "cpu")
    pixels = batch().round().astype(np.uint8)
    np.testing.assert_allclose(session.run(pixels)["conv1"], numpy_reference(pixels.astype(np.float32))["conv1"],
                               rtol=1e-5, atol=1e-4)


def test_wrong_batch_shape_says_what_the_model_takes(model_path):
    session = runtime.open_session(model_path, "cpu")
    with pytest.raises(ImageError) as err:
        session.run(np.zeros((H, W, 3), np.float32))
    assert str(err.value) == "batch has shape [8, 8, 3] but 'tiny.onnx' takes [N, 8, 8, 3] RGB 0..255"


def test_threads_and_options(model_path):
    session = runtime.open_session(model_path, "cpu", threads=1)
    assert session.threads == 1
    assert runtime.open_session(model_path, "cpu").threads == runtime.physical_cores() >= 1
    options = runtime.session_options()
    assert options.log_severity_level == 3
    assert options.graph_optimization_level == runtime.GRAPH_OPTIMIZATION
    # memory patterns off on the CPU (RESULTS 21): what a CPU session really runs with
    assert not runtime.open_session(model_path, "cpu").session.get_session_options().enable_mem_pattern
    assert runtime.session_options(cuda=True).enable_mem_pattern  # ORT's default where it may run on a GPU
    with pytest.raises(OnnxvizError, match="threads must be a positive integer, not 0"):
        runtime.open_session(model_path, "cpu", threads=0)


def test_allocation_failure_is_a_clear_message(tmp_path):
    """A graph whose output needs 8 TB: ORT's arena refuses, we say what to do."""
    model = tiny_model()
    model.graph.initializer.append(numpy_helper.from_array(np.array([10**6, 10**6, 2], np.int64), "huge_shape"))
    model.graph.node.append(helper.make_node("Expand", ["predictions", "huge_shape"], ["huge"]))
    model.graph.output.append(helper.make_tensor_value_info("huge", TensorProto.FLOAT, None))
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    session = runtime.open_session(path, "cpu", outputs=["huge"])
    with pytest.raises(OnnxvizError) as err:
        session.run(batch(1))
    message = str(err.value)
    assert message.startswith("a batch of 1 does not fit in host memory running 'huge.onnx' (")
    assert message.endswith("; use a smaller batch size")
    assert "Failed to allocate memory" in message and "[ONNXRuntimeError]" not in message


# ---------------------------------------------------------------- bad files

def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelError) as err:
        runtime.open_session(path, "cpu")
    assert str(err.value) == f"'{path}' is not an ONNX model: it does not parse as one (a truncated file, or another kind of file); give a .onnx file written by an ONNX exporter or 'onnxviz export'"


def test_empty_file_is_not_an_onnx_model(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match=r"is not an ONNX model: it does not parse as one"):
        runtime.open_session(path, "cpu")


def test_model_held_in_memory_runs_like_its_file_and_names_itself_when_broken(model_path):
    session = runtime.open_session(Path("in memory"), "cpu", model_bytes=model_path.read_bytes())
    for name, expected in numpy_reference(batch(2)).items():
        np.testing.assert_allclose(session.run(batch(2))[name], expected, rtol=1e-5, atol=1e-4)
    model = tiny_model()
    model.graph.node[1].input[1] = "no_such_kernel"
    with pytest.raises(ModelError) as err:
        runtime.open_session(Path("in memory"), "cpu", model_bytes=model.SerializeToString())
    assert str(err.value).startswith("ONNX Runtime cannot load 'in memory': ") and "no_such_kernel" in str(err.value)


def test_broken_graph_is_an_onnx_model_that_cannot_load(tmp_path):
    model = tiny_model()
    model.graph.node[1].input[1] = "no_such_kernel"
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError) as err:
        runtime.open_session(path, "cpu")
    assert str(err.value).startswith(f"'{path}' is an ONNX model that cannot be opened: ")
    assert "no_such_kernel" in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError) as err:
        runtime.open_session(tmp_path / "gone.onnx", "cpu")
    assert str(err.value) == f"model file '{tmp_path / 'gone.onnx'}' does not exist; check the path"


def test_onnx_file_not_written_by_onnxviz(tmp_path):
    path = tmp_path / "plain.onnx"
    onnx.save(tiny_model(metadata=False), str(path))
    with pytest.raises(ModelError) as err:
        runtime.open_session(path, "cpu")
    assert str(err.value) == (f"{path} was not written by 'onnxviz export' (it has no onnxviz metadata); "
                              f"run 'onnxviz export {path} -o NEW.onnx' to make an onnxviz file from it")


# ---------------------------------------------------------------- cores: affinity and cgroup quotas

def fake_cgroups(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup (`files`: path under it -> content) and /proc/self/cgroup (`proc`)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc)
    return root, tmp_path / "proc_cgroup"


@pytest.mark.parametrize("proc, files, want", [
    # cgroup v2, a container that sees its own cgroup as the root
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    # v2 on a host: the process's cgroup and the ones above it; the smallest limit binds
    ("0::/app.slice/job.scope\n", {"app.slice/job.scope/cpu.max": "max 100000", "app.slice/cpu.max": "200000 100000",
                                   "cpu.max": "max 100000"}, 2.0),
    ("0::/app.slice/job.scope\n", {"app.slice/job.scope/cpu.max": "50000 100000",
                                   "app.slice/cpu.max": "200000 100000"}, 0.5),
    # v1: the cpu hierarchy, under any of its mount names; -1 is no quota
    ("4:cpu,cpuacct:/\n3:memory:/x\n", {"cpu,cpuacct/cpu.cfs_quota_us": "300000\n",
                                        "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3.0),
    ("1:cpu:/\n2:cpuacct:/\n0::/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    # v1 in a container without its own cgroup namespace: the path is not under the mount, whose root is its cgroup
    ("5:cpuacct,cpu:/docker/0123abc\n", {"cpuacct,cpu/cpu.cfs_quota_us": "50000", "cpuacct,cpu/cpu.cfs_period_us": "25000"},
     2.0),
    # hybrid (v1 controllers, v2 mounted at unified/): the v1 quota
    ("1:cpu:/\n0::/\n", {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000", "unified/cgroup.procs": ""},
     1.0),
    # nothing there, or nothing readable: no quota
    ("", {}, None),
    ("0::/\n", {"cpu.max": "garbage"}, None),
    ("0::/\n", {"cpu.max": "100000 0"}, None),
])
def test_cpu_quota_from_cgroup_files(tmp_path, proc, files, want):
    root, proc_path = fake_cgroups(tmp_path, proc, files)
    assert runtime.cpu_quota(root, proc_path) == want


def test_core_counts_honour_affinity_and_the_quota(tmp_path, monkeypatch):
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    root, proc_path = fake_cgroups(tmp_path, "0::/\n", {"cpu.max": "max 100000"})
    monkeypatch.setattr(runtime, "CGROUP_ROOT", root)
    monkeypatch.setattr(runtime, "PROC_CGROUP", proc_path)
    unlimited_cpus, unlimited_cores = runtime.usable_cpus(), runtime.physical_cores()
    assert unlimited_cpus == allowed and 1 <= unlimited_cores <= allowed
    (root / "cpu.max").write_text("50000 100000")  # half a CPU: one thread
    assert runtime.usable_cpus() == runtime.physical_cores() == 1
    (root / "cpu.max").write_text(f"{100000 * allowed + 1} 100000")  # more than the affinity allows
    assert runtime.usable_cpus() == allowed and runtime.physical_cores() == unlimited_cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # pinned to one CPU
    assert runtime.usable_cpus() == 1 and runtime.physical_cores() == 1
