"""How fast an onnxviz file runs, and what exposing its feature maps costs.

For each provider and batch size: latency (median, p90), images/s, megabytes of
feature maps produced per second, and the same network with only its final output
(the "floor") timed in alternating blocks with it, so the cost of extraction shows as a ratio.
Optionally the Keras source with the same outputs, timed in a separate process
(TensorFlow and ONNX Runtime in one process fight over threads).

TensorFlow is imported only in that worker process (`keras_worker`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx

from onnxviz.compare.keras_worker import EXPORT_HINT, run_keras_worker
from onnxviz.errors import ModelError, OnnxvizError, ProviderError
from onnxviz.files import write_text
from onnxviz.model.graph import strip_outputs
from onnxviz.model.info import ModelInfo
from onnxviz.run.session import PROVIDERS, Session, cuda_status, is_allocation_error, open_session, ort_versions, physical_cores

DEFAULT_PROVIDERS = tuple(PROVIDERS)  # ("cpu", "cuda"): unavailable ones are skipped, not errors
MB = 1e6  # megabytes are 10**6 bytes throughout
_EXTERNAL_DATA_ABOVE = 1_800_000_000  # protobuf cannot hold 2 GiB; larger floors keep weights beside them

Progress = Callable[[str], None]


@dataclass
class Timing:
    """Latencies of one configuration, in milliseconds."""

    median_ms: float
    p90_ms: float
    images_per_s: float
    samples_ms: list[float] = field(repr=False)

    @classmethod
    def of(cls, samples_ms: Sequence[float], batch_size: int) -> "Timing":
        median = float(np.median(samples_ms))
        return cls(median, float(np.percentile(samples_ms, 90)), batch_size / (median / 1e3) if median else 0.0,
                   [float(s) for s in samples_ms])


@dataclass
class BenchRow:
    """One provider at one batch size."""

    provider: str  # as asked for
    used: str  # what ONNX Runtime actually ran on
    batch_size: int
    full: Timing  # all outputs of the file
    feature_mb_per_s: float
    floor: Timing | None = None  # only the final output; None when the file has nothing else
    extraction_ratio: float | None = None  # full / floor medians
    keras_predict: Timing | None = None
    keras_function: Timing | None = None
    ort_over_keras_predict: float | None = None  # < 1: ONNX Runtime is faster
    ort_over_keras_function: float | None = None


@dataclass
class Skipped:
    """A provider (or one batch size on it) that was not measured, and why."""

    provider: str
    reason: str
    batch_size: int | None = None


@dataclass
class BenchResult:
    model: str
    source: str
    runs: int
    warmup: int
    batch_sizes: list[int]
    outputs: list[str]
    feature_maps: int
    feature_bytes_per_image: int
    floor_output: str | None
    threads: int
    rows: list[BenchRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keras: dict[str, Any] | None = None  # versions and device of the Keras comparison
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; times in ms, rounded to 0.001."""
        return _rounded(asdict(self))

    def save_json(self, path: Path) -> Path:
        """Write `to_dict()` to `path` under a hidden name, then rename it into place."""
        return write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n", param="json_out")


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# ---------------------------------------------------------------- input checks

def parse_providers(text: str) -> list[str]:
    """`"cpu,cuda"` -> ["cpu", "cuda"], checked; for the CLI's --providers."""
    return _check_providers([p for p in (part.strip() for part in text.split(",")) if p])


def parse_batch_sizes(text: str) -> list[int]:
    """`"1,8"` -> [1, 8], checked; for the CLI's --batch-sizes."""
    values: list[Any] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            values.append(int(part))
        except ValueError:
            values.append(part)
    return _check_batch_sizes(values)


def _check_providers(providers: Iterable[str]) -> list[str]:
    names = [str(p).strip().lower() for p in providers]
    bad = [p for p in names if p not in PROVIDERS]
    if bad or not names:
        raise ProviderError(f"{{providers}}: unknown provider {', '.join(repr(p) for p in bad) or '(none)'}; "
                            f"valid: {', '.join(PROVIDERS)}", params=("providers",))
    return list(dict.fromkeys(names))


def _check_batch_sizes(batch_sizes: Iterable[Any]) -> list[int]:
    values = list(batch_sizes)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1]
    if bad or not values:
        shown = ", ".join(repr(v) for v in bad) if bad else "(none)"
        raise OnnxvizError(f"{{batch_sizes}} must be positive integers, like 1,8; got {shown}",
                           params=("batch_sizes",))
    return list(dict.fromkeys(int(v) for v in values))


def _check_count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise OnnxvizError(f"{{{name}}} must be an integer >= {least}, not {value!r}", params=(name,))
    return int(value)


# ---------------------------------------------------------------- the floor

def _floor_model(path: Path, keep: str, folder: Path) -> Path:
    """Write `path` with `keep` as its only output to `folder`; return the new file."""
    floor = strip_outputs(onnx.load(str(path)), [keep])
    target = folder / f"floor-{path.stem}.onnx"
    if floor.ByteSize() > _EXTERNAL_DATA_ABOVE:
        onnx.save_model(floor, str(target), save_as_external_data=True, location=target.name + ".data")
    else:
        onnx.save_model(floor, str(target))
    return target


def _final_output(info: ModelInfo, outputs: list[str]) -> str:
    """The prediction output, else the deepest exposed layer, else the last graph output."""
    if info.prediction_output in outputs:
        return info.prediction_output  # type: ignore[return-value]
    for layer in reversed(info.layers):
        if layer.name in outputs:
            return layer.name
    return outputs[-1]


# ---------------------------------------------------------------- memory

def available_memory() -> int | None:
    """Bytes of host memory available to a new allocation (Linux MemAvailable), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(batch_size: int, output_bytes_per_image: int, input_bytes_per_image: int) -> None:
    """Refuse, before running, a batch whose outputs alone cannot fit in host memory.

    ORT holds the outputs (and about as much again in activations it frees along the
    way) while numpy receives them, so twice the output size is the estimate. Better a
    message now than Linux's OOM killer in a minute.
    """
    free = available_memory()
    need = batch_size * (2 * output_bytes_per_image + input_bytes_per_image)
    if free is not None and need > free:
        raise OnnxvizError(
            f"batch size {batch_size} needs about {need / 1e9:.1f} GB of host memory for its feature maps "
            f"({output_bytes_per_image / MB:.2f} MB per image) but {free / 1e9:.1f} GB is available; "
            f"use smaller {{batch_sizes}}", params=("batch_sizes",))


# ---------------------------------------------------------------- timing

def time_alternately(calls: Sequence[Callable[[], Any] | None], runs: int,
                     warmup: int) -> list[list[float]]:
    """Time `runs` calls of each, alternating in blocks whose order reverses every round
    (A A A B B B B B B A A A ..., or A B C C B A with three), ms per call; [] for a None.

    Load from other work falls on all alike. Each block starts with one untimed call:
    ORT's idle threads spin for a while after a run, and without it the session that
    follows pays for the other one's spinning (up to 23% on VGG16, see benchmarks/).
    """
    present = [(i, call) for i, call in enumerate(calls) if call is not None]
    for _ in range(warmup):
        for _, call in present:
            call()
    times: list[list[float]] = [[] for _ in calls]
    if len(present) == 1:
        index, call = present[0]
        times[index] = [_timed(call) for _ in range(runs)]
        return times
    block = max(1, min(5, runs // 4))
    while any(len(times[i]) < runs for i, _ in present):
        for index, call in present:
            todo = min(block, runs - len(times[index]))
            if todo:
                call()  # settle, untimed
                times[index] += [_timed(call) for _ in range(todo)]
        present.reverse()
    return times


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def machine_info(threads: int) -> dict[str, Any]:
    """What a timing depends on: CPU, cores, memory, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(), "ort_threads": threads,
            "memory_gb": round((available_memory() or 0) / 1e9, 1), "python": platform.python_version(),
            "platform": platform.platform(), **ort_versions()}


def run_bench(model: Path, providers: Sequence[str] | None = None, batch_sizes: Sequence[int] = (1, 8),
              runs: int = 20, warmup: int = 3, compare_keras: bool = False,
              progress: Progress | None = None) -> BenchResult:
    """Time `model` on each provider and batch size.

    `providers=None` means every provider onnxviz knows, skipping (with the reason) those
    that cannot run here; a provider named explicitly that cannot run is a ProviderError.
    """
    model = Path(model)
    explicit = providers is not None
    names = _check_providers(providers) if explicit else list(DEFAULT_PROVIDERS)
    sizes = _check_batch_sizes(batch_sizes)
    runs = _check_count("runs", runs, 1)
    warmup = _check_count("warmup", warmup, 0)
    say = progress or (lambda message: None)

    usable: list[str] = []
    skipped: list[Skipped] = []
    for name in names:
        ok, why = (True, "") if name == "cpu" else cuda_status()
        if ok:
            usable.append(name)
        elif explicit:
            raise ProviderError(f"provider '{name}' was asked for but cannot run here: {why}")
        else:
            skipped.append(Skipped(name, why))

    first = open_session(model, usable[0] if usable else "cpu")
    info = first.info
    if compare_keras:
        _check_keras_available(model, info)
    outputs = first.output_names
    final = _final_output(info, outputs)
    has_intermediates = len(outputs) > 1
    feature_names = [layer.name for layer in info.feature_maps if layer.name in outputs]
    rng = np.random.default_rng(0)
    probe = first.run(rng.uniform(0, 255, (1, info.height, info.width, 3)).astype(np.float32))
    output_bytes = sum(v.nbytes for v in probe.values())
    feature_bytes = sum(probe[n].nbytes for n in feature_names)
    input_bytes = info.height * info.width * 3 * 4
    for size in sizes:  # before any timing: fail in a second, not after minutes
        _check_memory(size, output_bytes, input_bytes)

    result = BenchResult(model=str(model), source=info.source, runs=runs, warmup=warmup, batch_sizes=sizes,
                         outputs=outputs, feature_maps=len(feature_names), feature_bytes_per_image=feature_bytes,
                         floor_output=final if has_intermediates else None, threads=first.threads,
                         skipped=skipped, machine=machine_info(first.threads))
    if not has_intermediates:
        result.notes.append(f"'{model.name}' has no intermediate outputs (only '{final}'): it is its own floor, "
                            f"so no extraction ratio")
    if not feature_names:
        result.notes.append("no output is a feature map (NCHW) in the file's metadata: feature MB/s is 0")
    del probe

    with tempfile.TemporaryDirectory(prefix="onnxviz-bench-") as tmp:
        floor_path = None
        if has_intermediates and usable:
            say(f"making the floor: '{model.name}' with only '{final}' as output")
            floor_path = _floor_model(model, final, Path(tmp))
        for name in usable:
            say(f"{name}: opening sessions")
            session = first if name == usable[0] else open_session(model, name)
            floor = open_session(floor_path, name, outputs=[final]) if floor_path else None
            for size in sizes:
                say(f"{name}: batch {size}, {warmup} warm-up + {runs} timed runs")
                row = _bench_one(name, session, floor, size, runs, warmup, feature_bytes, rng, info)
                if isinstance(row, Skipped):
                    skipped.append(row)
                else:
                    result.rows.append(row)
            del floor
    del first

    if compare_keras and result.rows:
        say("keras: timing model.predict and tf.function in a separate process")
        _add_keras(result, info, model, sizes, runs, warmup)
    return result


def _bench_one(name: str, session: Session, floor: Session | None, size: int, runs: int, warmup: int,
               feature_bytes: int, rng: np.random.Generator, info: ModelInfo) -> BenchRow | Skipped:
    batch = rng.uniform(0, 255, (size, info.height, info.width, 3)).astype(np.float32)
    try:
        full_ms, floor_ms = time_alternately([lambda: session.run(batch),
                                              (lambda: floor.run(batch)) if floor else None], runs, warmup)
    except OnnxvizError as exc:
        if isinstance(exc.__cause__, Exception) and is_allocation_error(exc.__cause__):
            return Skipped(name, str(exc), size)
        raise
    full = Timing.of(full_ms, size)
    row = BenchRow(provider=name, used=session.provider, batch_size=size, full=full,
                   feature_mb_per_s=feature_bytes * full.images_per_s / MB)
    if floor_ms:
        row.floor = Timing.of(floor_ms, size)
        row.extraction_ratio = full.median_ms / row.floor.median_ms if row.floor.median_ms else None
    return row


# ---------------------------------------------------------------- Keras, in another process


def _check_keras_available(model: Path, info: ModelInfo) -> None:
    if info.keras is None:
        raise ModelError(f"'{model}' does not say how to rebuild its Keras source (it was not exported "
                         f"from Keras), so {{compare_keras}} has nothing to compare with", params=("compare_keras",))
    if "path" in info.keras and not Path(info.keras["path"]).exists():
        raise ModelError(f"the Keras source '{info.keras['path']}' recorded in '{model}' is not there; "
                         f"run from the folder it was exported in, or export again")
    if "path" not in info.keras and "application" not in info.keras:
        raise ModelError(f"'{model}' has Keras metadata onnxviz cannot use: {info.keras}; export it again")
    if importlib.util.find_spec("tensorflow") is None:
        raise OnnxvizError(f"{{compare_keras}} needs TensorFlow, which is not installed: {EXPORT_HINT}",
                           params=("compare_keras",))


def _add_keras(result: BenchResult, info: ModelInfo, model: Path, sizes: list[int], runs: int, warmup: int) -> None:
    names = [layer.name for layer in info.layers if layer.name in result.outputs]
    if info.prediction_output and info.prediction_output in result.outputs and info.prediction_output not in names:
        names.append(info.prediction_output)
    spec = {"keras": info.keras, "layers": names, "height": info.height, "width": info.width,
            "batch_sizes": sizes, "runs": runs, "warmup": warmup}
    report = run_keras_worker(spec)
    result.keras = {k: v for k, v in report.items() if k != "timings"}
    timings = report["timings"]
    for row in result.rows:
        predict = timings["predict"].get(str(row.batch_size))
        function = timings["function"].get(str(row.batch_size))
        if predict:
            row.keras_predict = Timing.of(predict, row.batch_size)
            row.ort_over_keras_predict = row.full.median_ms / row.keras_predict.median_ms
        if function:
            row.keras_function = Timing.of(function, row.batch_size)
            row.ort_over_keras_function = row.full.median_ms / row.keras_function.median_ms
    result.notes.append("Keras was timed after ONNX Runtime, in its own process, on random batches of the same shape, "
                        "without the preprocessing the ONNX file has folded in (a few elementwise ops)")
