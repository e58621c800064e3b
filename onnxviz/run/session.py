"""ONNX Runtime sessions for onnxviz files: which provider really runs, and why not CUDA.

A session is opened once per model and run on NHWC float32 batches of RGB pixels
0..255 (the input every onnxviz file takes). The provider reported is the one ORT
actually used (`session.get_providers()`), never the one asked for. Session options
were chosen by measurement: see benchmarks/RESULTS.md.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from onnxviz.errors import ImageError, LayerSelectionError, ModelError, OnnxvizError, ProviderError
from onnxviz.model.info import ModelInfo

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
REQUESTS = ("auto", *PROVIDERS)

# Chosen by measurement: benchmarks/RESULTS.md (VGG16 and MobileNet files with every
# feature map exposed, CPU). The lower graph optimisation levels were 10-20% slower than
# ORT_ENABLE_ALL; one thread 1.9x slower than the physical cores; the CPU memory arena
# off 13-18% slower; IO binding and preallocated outputs never faster than a plain `run`
# (up to 4x slower on MobileNet), so `run` it is. Spinning (ORT's default) made no
# difference on VGG16; off was 1.2-1.5x slower on MobileNet. Memory patterns off (on the
# CPU): ORT takes each run's intermediate tensors from its arena instead of one block
# planned per run, which it gets fresh from the system every run while the previous batch's
# outputs are still held (as render holds them while drawing): ResNet101V2's render of 100
# photos spent 8.9-17.6 s of system time with patterns (most of it the kernel zeroing fresh
# pages, by perf), 6.1-9.3 s without, and took 25.1 s instead of 27.1 (medians of 5,
# alternating); inference alone 1.02-1.10x faster; the renders of VGG16, InceptionV3 and
# MobileNet 1.00-1.11x (2 pairs each; RESULTS 21). CUDA sessions keep ORT's default
# (patterns on): not measured there.
GRAPH_OPTIMIZATION = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
ENABLE_CPU_MEM_ARENA = True
CPU_MEM_PATTERN = False
ALLOW_SPINNING = True
LOG_ERRORS_ONLY = 3  # ORT's severity: 0 verbose .. 3 error, 4 fatal
LOG_FATAL_ONLY = 4

_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")
_LOAD_PREFIX = re.compile(r"^Load model from .*? failed: ?")
_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+:\d+ .*?\) ")
_ALLOCATION = ("Failed to allocate memory", "bad_alloc", "out of memory", "CUDA_ERROR_OUT_OF_MEMORY",
               "cudaErrorMemoryAllocation")


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _upwards(mount: Path, path: str) -> list[Path]:
    """`mount/path` and each folder above it up to `mount` (a limit higher up binds too)."""
    folder = mount / path.strip("/")
    return [folder, *folder.parents[:len(folder.relative_to(mount).parts)]]


def _read_quota(folder: Path, v2: bool) -> float | None:
    """The quota in `folder` in CPUs; None when there is none or it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        if v2:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota == "max":
                return None
        else:
            quota = (folder / "cpu.cfs_quota_us").read_text()
            period = (folder / "cpu.cfs_period_us").read_text()
        quota, period = int(quota), int(period)
        return quota / period if quota > 0 and period > 0 else None
    return None


def cpu_quota(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """The CPUs a cgroup CPU quota gives this process (quota / period, e.g. 1.5), None without one.

    cgroup v2: `cpu.max` ("150000 100000"; "max ..." is none); v1: `cpu.cfs_quota_us` over
    `cpu.cfs_period_us` (-1 is none) in the `cpu` hierarchy. Read for the process's own cgroup
    (`/proc/self/cgroup`) and every cgroup above it, the smallest winning; where that path is not
    under the mount (a container that sees its own cgroup as the root), the mount's root counts.
    `root` and `proc_cgroup` stand for /sys/fs/cgroup and /proc/self/cgroup (tests give fakes).
    """
    root = Path(root or CGROUP_ROOT)
    v2_path = v1_path = "/"
    with contextlib.suppress(OSError):
        for line in Path(proc_cgroup or PROC_CGROUP).read_text().splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and not controllers:
                v2_path = path
            elif "cpu" in controllers.split(","):
                v1_path = path
    quotas = [_read_quota(folder, v2=True) for folder in _upwards(root, v2_path)]
    for name in _V1_CPU_MOUNTS:
        if (root / name).is_dir():
            quotas += [_read_quota(folder, v2=False) for folder in _upwards(root / name, v1_path)]
    quotas = [q for q in quotas if q]
    return min(quotas) if quotas else None


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _within_quota(count: int) -> int:
    quota = cpu_quota()
    return count if quota is None else min(count, max(1, math.ceil(quota)))


def usable_cpus() -> int:
    """Logical CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (`cpu_quota`,
    rounded up). What onnxviz's own threads count on (the atlas's reading ahead and its crops, a local
    Ray); a container limited to 2 CPUs on a 64-core host counts 2."""
    return _within_quota(len(_allowed_cpus()))


def physical_cores() -> int:
    """Cores this process may run on, SMT siblings counted once (ORT's own default rule).

    Unlike ORT's default it respects CPU affinity and a cgroup CPU quota (`cpu_quota`), so a
    container limited to 2 CPUs on a 64-core host does not start 64 threads.
    """
    cores: set[tuple[str, str]] = set()
    for cpu in _allowed_cpus():
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return _within_quota(len(cores) or 1)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _ort_message(exc: BaseException) -> str:
    """ORT's exception text without its error-code prefix and C++ source locations."""
    text = _one_line(str(exc))
    text = _ORT_PREFIX.sub("", text)
    text = _LOAD_PREFIX.sub("", text)
    return _SOURCE_LOCATION.sub("", text).strip()


def _package() -> tuple[str, str, str | None]:
    """(distribution name, version, CUDA version it was built for) of the installed onnxruntime."""
    try:
        from onnxruntime.capi import build_and_package_info as build
    except ImportError:  # pragma: no cover - every wheel ships it
        return "onnxruntime", ort.__version__, None
    return (getattr(build, "package_name", "onnxruntime"), getattr(build, "__version__", ort.__version__),
            getattr(build, "cuda_version", None) or None)


def _install_hint() -> str:
    name, version, cuda = _package()
    if cuda:
        major = cuda.split(".")[0]
        return (f"{name} {version} needs CUDA {major}.x and cuDNN 9: pip install 'onnxruntime-gpu[cuda,cudnn]' "
                f"or see https://onnxruntime.ai/docs/install/#cuda-and-cudnn")
    return "see https://onnxruntime.ai/docs/install/#cuda-and-cudnn"


def _tiny_model() -> bytes:
    """An Identity graph, to prove a provider can really create a session."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


def _driver_problem(cuda: str | None) -> str | None:
    """Why the NVIDIA driver cannot run CUDA here, or None when it has a GPU."""
    try:
        lib = ctypes.CDLL("libcuda.so.1" if os.name != "nt" else "nvcuda.dll")
    except OSError as exc:
        return f"no NVIDIA driver ({_one_line(str(exc))})"
    code = lib.cuInit(0)
    if code != 0:
        text = ctypes.c_char_p()
        with contextlib.suppress(Exception):
            lib.cuGetErrorString(code, ctypes.byref(text))
        what = text.value.decode(errors="replace") if text.value else f"CUDA error {code}"
        return f"the NVIDIA driver cannot start CUDA: {what}"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)"
    version = ctypes.c_int(0)
    if cuda and lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
        driver_major, needed = version.value // 1000, int(cuda.split(".")[0])
        if driver_major < needed:
            return (f"the NVIDIA driver supports CUDA {driver_major}.{version.value % 1000 // 10} but "
                    f"onnxruntime-gpu was built for CUDA {cuda}; update the driver")
    return None


@functools.cache
def cuda_status() -> tuple[bool, str]:
    """(True, "") when CUDA can really run a session here, else (False, why in one line).

    Checked in order: the provider is in this onnxruntime build; its library loads
    (after `onnxruntime.preload_dlls()`, which finds CUDA/cuDNN from pip nvidia-*
    packages); a driver and GPU are present; a one-node session really gets CUDA.
    """
    name, version, cuda = _package()
    if PROVIDERS["cuda"] not in ort.get_available_providers():
        return False, (f"CUDAExecutionProvider is not in this onnxruntime ({name} {version} is a CPU-only build; "
                       f"pip install onnxruntime-gpu)")
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        # It prints what it could not load; we report the loader's own message below.
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            preload()
    capi = Path(ort.__file__).parent / "capi"
    suffix = ".dll" if os.name == "nt" else ".so"
    library = capi / f"{'' if os.name == 'nt' else 'lib'}onnxruntime_providers_cuda{suffix}"
    if library.exists():
        try:
            shared = capi / f"{'' if os.name == 'nt' else 'lib'}onnxruntime_providers_shared{suffix}"
            if shared.exists():
                ctypes.CDLL(str(shared), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            ctypes.CDLL(str(library))
        except OSError as exc:
            return False, f"the CUDA provider library cannot load: {_one_line(str(exc))} ({_install_hint()})"
    problem = _driver_problem(cuda)
    if problem:
        return False, problem
    try:
        options = ort.SessionOptions()
        options.log_severity_level = LOG_FATAL_ONLY
        probe = ort.InferenceSession(_tiny_model(), options, providers=[PROVIDERS["cuda"], PROVIDERS["cpu"]])
    except Exception as exc:  # any failure here means "not usable", with ORT's reason
        return False, f"onnxruntime cannot create a CUDA session: {_ort_message(exc)}"
    if probe.get_providers()[0] != PROVIDERS["cuda"]:
        return False, "onnxruntime fell back to CPU when creating the CUDA provider (run with ORT logging for details)"
    return True, ""


def resolve_providers(request: str) -> list[str]:
    """ORT provider names for "auto" (CUDA when it can run, else CPU), "cpu" or "cuda".

    "cuda" raises ProviderError with the reason when CUDA cannot run here.
    """
    key = str(request).strip().lower()
    if key not in REQUESTS:
        raise ProviderError(f"unknown provider '{request}'; valid: {', '.join(REQUESTS)}")
    if key == "cpu":
        return [PROVIDERS["cpu"]]
    ok, why = cuda_status()
    if ok:
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    if key == "cuda":
        raise ProviderError(f"provider 'cuda' was asked for but cannot run here: {why}; "
                            f"ask for 'cpu' or 'auto' instead")
    return [PROVIDERS["cpu"]]


def session_options(threads: int | None = None, long_run: bool = True,
                    spinning: bool = ALLOW_SPINNING, cuda: bool = False) -> ort.SessionOptions:
    """The options every onnxviz session uses (chosen by measurement, see module constants);
    `cuda`: for a session that may run on CUDA, which keeps ORT's memory patterns.

    `spinning=False`: ORT's idle threads sleep at once instead of spinning. `render` draws in
    its own threads beside ORT, and spinning threads take their CPU: ResNet101V2 rendered 1.2x
    faster with it off, VGG16 1.04x (benchmarks/RESULTS.md 20).

    `long_run`: the session will run many batches, so it pays for work done once: weights
    repacked for faster kernels and every graph optimisation (GRAPH_OPTIMIZATION, with ONNX
    Runtime's layout transforms). For a run of a few batches (False) neither pays back: no
    repacking halves VGG16's session creation with its classifier (1.45 -> 0.95 s) and costs
    nothing at batch 1 and 3% at batch 8; with the extended level instead of all as well,
    ResNet101V2 opens in 0.02 s instead of 0.3 to 0.5 s and runs its first batch faster, against
    later batches up to 12% slower (VGG16; benchmarks/short_run_options.py, RESULTS 20.3).
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise OnnxvizError(f"threads must be a positive integer, not {threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_OPTIMIZATION if long_run else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = ENABLE_CPU_MEM_ARENA
    options.enable_mem_pattern = True if cuda else CPU_MEM_PATTERN
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # ORT's own "falling back to CPU" warnings: we compare get_providers() and say so ourselves.
    options.log_severity_level = LOG_ERRORS_ONLY
    if not long_run:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def is_allocation_error(exc: BaseException) -> bool:
    """Whether an ORT exception is an allocation failure (a batch too large for memory)."""
    return isinstance(exc, MemoryError) or any(s.lower() in str(exc).lower() for s in _ALLOCATION)


@dataclass
class Session:
    """An open onnxviz model: run NHWC float32 RGB 0..255 batches, get outputs by name."""

    path: Path
    session: ort.InferenceSession = field(repr=False)
    provider: str  # "cuda" or "cpu": what ORT actually uses
    fallback: str | None  # why "auto" runs on CPU, one line; None when not a fallback
    info: ModelInfo = field(repr=False)
    input_name: str
    output_names: list[str]  # what `run` returns by default: `open_session`'s outputs, else every one
    threads: int
    available: list[str] = field(default_factory=list, repr=False)  # every output of the file

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """`outputs` (names; default: `output_names`) for a batch `[N, H, W, 3]` (float32, RGB,
        0..255), by name. ONNX Runtime computes only what they need."""
        names = self.output_names if outputs is None else _checked_outputs(self.path, self.available, outputs)
        array = np.asarray(batch)
        expected = f"[N, {self.info.height}, {self.info.width}, 3] RGB 0..255"
        if array.ndim != 4 or tuple(array.shape[1:]) != (self.info.height, self.info.width, 3) or array.shape[0] < 1:
            raise ImageError(f"batch has shape {list(array.shape)} but '{self.path.name}' takes {expected}")
        if array.dtype != np.float32:
            if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
                raise ImageError(f"batch has dtype {array.dtype} but '{self.path.name}' takes float32 {expected}")
            array = array.astype(np.float32)
        run_options = ort.RunOptions()
        run_options.log_severity_level = LOG_FATAL_ONLY  # failures are raised, with a clearer message
        try:
            values = self.session.run(names, {self.input_name: array}, run_options)
        except Exception as exc:
            if is_allocation_error(exc):
                device = "GPU" if self.provider == "cuda" else "host"
                raise OnnxvizError(
                    f"a batch of {array.shape[0]} does not fit in {device} memory running '{self.path.name}' "
                    f"({_ort_message(exc)}); use a smaller batch size") from exc
            raise
        return dict(zip(names, values))


def _load_error(path: Path, exc: BaseException) -> ModelError:
    from onnxviz.model.modelfile import unreadable

    return unreadable(path, _ort_message(exc))


def open_session(path: Path, provider: str = "auto", *, threads: int | None = None,
                 outputs: list[str] | None = None, long_run: bool = True, optimize: bool = True,
                 model_bytes: bytes | None = None, data_folder: Path | None = None,
                 spinning: bool = ALLOW_SPINNING) -> Session:
    """Open an onnxviz file on `provider` ("auto" | "cpu" | "cuda").

    `long_run`, `spinning`: see `session_options` (long_run False for runs of a few batches).
    `optimize=False` runs the graph as written, without ONNX Runtime's fusions.

    `outputs` limits the outputs computed and returned (default: all graph outputs).
    `threads` is ORT's intra-op thread count (default: the physical cores available).
    A missing or truncated external-data file is named before ORT reads anything.
    `model_bytes`: a complete serialized model held in memory (weights included) to open
    instead of a file; `path` then only names it in messages. `data_folder`: where the weights
    that `model_bytes` keeps as external data references are (ORT reads them from there as it
    would beside a file, instead of a copy of them in the bytes).
    """
    from onnxviz.files import existing_file
    from onnxviz.model.modelfile import check_model_file

    if model_bytes is None:
        path = existing_file(Path(path), "model file")
        check_model_file(path)  # names a missing or truncated weights file before ORT reads anything
    providers = resolve_providers(provider)
    options = session_options(threads, long_run, spinning, cuda=PROVIDERS["cuda"] in providers)
    if not optimize:  # ONNX Runtime's graph rewrites (fusions) off: a reference for `diff`
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if model_bytes is not None and data_folder is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(data_folder))
    try:
        source = str(path) if model_bytes is None else model_bytes
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except OnnxvizError:
        raise
    except Exception as exc:  # ORT's pybind exceptions share no base class but Exception
        if is_allocation_error(exc):
            raise OnnxvizError(f"'{path}' does not fit in memory ({_ort_message(exc)})") from exc
        if model_bytes is not None:  # no file to look at for the cause
            raise ModelError(f"ONNX Runtime cannot load '{path}': {_ort_message(exc)}") from exc
        raise _load_error(path, exc) from exc

    used = "cuda" if session.get_providers()[0] == PROVIDERS["cuda"] else "cpu"
    request = str(provider).strip().lower()
    fallback = None
    if used == "cpu" and request != "cpu":
        why = cuda_status()[1] or "onnxruntime fell back to CPU when creating the CUDA provider"
        if request == "cuda":
            raise ProviderError(f"provider 'cuda' was asked for but cannot run here: {why}; "
                            f"ask for 'cpu' or 'auto' instead")
        fallback = why

    info = ModelInfo.from_props(session.get_modelmeta().custom_metadata_map, str(path))
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"'{path}' has {len(inputs)} inputs; onnxviz files have one image input")
    available = [o.name for o in session.get_outputs()]
    names = available if outputs is None else _checked_outputs(path, available, outputs)
    return Session(path=path, session=session, provider=used, fallback=fallback, info=info,
                   input_name=inputs[0].name, output_names=names, threads=options.intra_op_num_threads,
                   available=available)


def _checked_outputs(path: Path, available: list[str], outputs: Sequence[str]) -> list[str]:
    """`outputs` without repeats, each one an output of the file."""
    names = list(dict.fromkeys(outputs))
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise LayerSelectionError(
            f"output {', '.join(repr(n) for n in missing) or '(none)'} is not in '{path}'; it has "
            f"{len(available)}: {_shorten(available)}. Run 'onnxviz layers {path}'")
    return names


def run_model(model: bytes | str, feeds: dict[str, np.ndarray], *, what: str = "the model",
              optimize: bool = True) -> dict[str, np.ndarray]:
    """Every output of a model (serialized, or a file's path) for one set of inputs, on CPU:
    the one-off runs of export's checks. `optimize=False` turns ONNX Runtime's graph rewrites off."""
    options = ort.SessionOptions()
    options.log_severity_level = LOG_ERRORS_ONLY
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(model, options, providers=[PROVIDERS["cpu"]])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    except Exception as exc:  # ORT raises its own exception types for unsupported ops and the like
        if is_allocation_error(exc):
            raise OnnxvizError(f"{what} does not fit in memory ({_ort_message(exc)})") from exc
        raise ModelError(f"ONNX Runtime cannot run {what}: {_ort_message(exc)}") from exc


def _shorten(names: list[str], limit: int = 8) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[: limit - 2]) + ", ..., " + ", ".join(names[-2:])


def ort_versions() -> dict[str, Any]:
    """Versions that matter when comparing timings."""
    name, version, cuda = _package()
    return {"onnxruntime": version, "package": name, "built_for_cuda": cuda, "numpy": np.__version__}
