"""The export pipeline, one for every source (`onnxviz export`, `onnxviz.export`).

A source adapter (`onnxviz.exporter.sources`, its contract in `sources/base.py`) turns what the user has (a `keras.applications`
name, a `keras.Model`, a `.keras`/`.h5` file, an ONNX file or `onnx.ModelProto`) into a
`Built`: the network as ONNX with the chosen layers as named outputs, their layer map,
the preprocessing the network expects, and a reference runner that computes the same
layers with the source's own framework. Everything after that happens here, once: the
preprocessing is folded in front (the file takes RGB 0..255 NHWC), the metadata is
written, every output is compared with the reference on the same probe images under
one tolerance rule, and the file is written atomically. Nothing is written when a
check fails.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxviz import __version__
from onnxviz.run.tensordiff import NOISE_FACTOR, TensorDiff, diff_outputs
from onnxviz.errors import ModelError, OptionError, ValidationError
from onnxviz.files import staged
from onnxviz.exporter.sources.base import ExportOptions, Progress, input_size_pair
from onnxviz.model.info import ModelInfo

PROBES = 2  # probe images compared per export


@dataclass
class ExportResult:
    """What `export` wrote and how well each output matched the source."""

    path: Path
    info: ModelInfo
    kind: str  # the kind of source
    reference: str  # what the outputs were checked against
    diffs: list[TensorDiff]
    tolerance: float
    size_bytes: int
    seconds: float
    preprocessing_reason: str
    input_layout: str  # the source network's own input layout (the file always takes NHWC)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    size_reason: str = ""  # where the input size came from, in words

    @property
    def max_relative(self) -> float:
        return max((d.relative for d in self.diffs), default=0.0)

    def __repr__(self) -> str:
        return (f"<ExportResult {self.path} ({self.size_bytes / 1e6:.1f} MB, {self.seconds:.0f}s): {len(self.diffs)} "
                f"outputs match {self.reference} (max relative error {self.max_relative:.1e}, tolerance "
                f"{self.tolerance:g}); input RGB 0..255 {self.info.height}x{self.info.width}>")


def probe_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Deterministic RGB 0..255 images with edges, gradients and texture: what every export is checked on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.float32)
    for i in range(n):
        base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 255
        blocks = ((xx // max(1, width // 8) + yy // max(1, height // 8)) % 2)[..., None] * 80
        noise = rng.uniform(0, 60, (height, width, 3))
        out[i] = np.clip(base * (0.5 + 0.5 * (i % 2)) + blocks + noise, 0, 255)
    return np.round(out)


def nudged(images: np.ndarray, seed: int = 1) -> np.ndarray:
    """`images` with every pixel moved by up to two float32 rounding steps of 255 (6e-5): a change
    of the input as small as rounding the folded preprocessing makes, to measure how much each
    output of the source moves under such changes."""
    rng = np.random.default_rng(seed)
    step = 2 * float(np.finfo(np.float32).eps) * 255
    return (images + rng.uniform(-step, step, images.shape)).astype(np.float32)


def export(source: Any, output: str | Path | None = None, options: ExportOptions | None = None, *,
           progress: Progress | None = None, verify: Callable[[Path], None] | None = None) -> ExportResult:
    """Export `source` to one onnxviz file at `output` (default `models/<name>.onnx`).

    `verify` is called with the written file before it is moved into place (the commands pass
    render's own checks and a render of a probe image): when it raises, nothing is written."""
    from onnxviz.files import check_writable
    from onnxviz.model.modelfile import drop_stale_data, save_model
    from onnxviz.model.graph import prepend_preprocessing
    from onnxviz.model.labels import load_labels
    from onnxviz.model.info import write_info
    from onnxviz.run.session import run_model
    from onnxviz.exporter.sources import open_source

    options = options or ExportOptions()
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    adapter = open_source(source)
    adapter.check_options(options)
    options = replace(options, input_size=input_size_pair(options.input_size))  # (height, width) from here on
    output = Path(output) if output is not None else Path("models") / f"{adapter.stem}.onnx"
    check_writable(output)  # before minutes of work; creates nothing
    given_labels = _labels(options.labels, load_labels)

    built = adapter.build(options, say)
    labels = given_labels if given_labels is not None else built.labels
    if given_labels is not None:
        if built.classes is None:
            raise ModelError(f"{len(given_labels)} labels given, but {built.source} has no class-score output; "
                             f"leave out the labels")
        if len(given_labels) != built.classes:
            raise ModelError(f"{len(given_labels)} labels given for a model with {built.classes} classes "
                             f"(output '{built.prediction_output}'); give {built.classes} names")

    proto = prepend_preprocessing(built.model, built.preprocessing, built.layout)
    built.model = None  # the adapter's copy is not needed any more (VGG16: 0.5 GB)
    info = ModelInfo(
        input_name=built.input_name, height=built.height, width=built.width, layers=built.layers,
        preprocessing=built.preprocessing, source=built.source, version=__version__,
        prediction_output=built.prediction_output, prediction_is_probability=built.prediction_is_probability,
        labels=labels if built.prediction_output else None, keras=built.keras, resize=built.resize,
    )
    write_info(proto, info)
    proto.producer_name, proto.producer_version = "onnxviz", __version__
    proto.doc_string = f"{info.source}, exported by onnxviz {__version__}"  # no folders of this machine

    step = time.perf_counter()
    with staged(output) as staged_path:
        # Written as it will be (weights beside the graph, see modelfile), then run from there:
        # what is checked is the file itself, and models over 2 GB need no protobuf of their own.
        size = save_model(proto, staged_path, options.external_data)
        del proto
        say(f"checking every output against {built.reference_name}")
        probes = probe_images(PROBES, built.height, built.width)
        want = built.reference(probes)
        names = [layer.name for layer in built.layers]
        # How far each output of the source itself moves when its input changes by rounding: a steep
        # function (a saturating sigmoid) turns rounding into large differences that are no error.
        moved = built.reference(nudged(probes))
        noise = {n: max(_max_abs(want[n], moved[n]), built.steps.get(n, 0.0)) for n in names}
        del moved
        got = run_model(str(staged_path), {built.input_name: probes}, what=f"the exported model of {built.source}")
        diffs = diff_outputs(want, got, names, noise)
        del want, got
        bad = [d for d in diffs if not d.ok(options.tolerance)]
        if bad:
            listing = ", ".join(f"{d.name} ({d.relative:.2g}; rounding moves it {d.noise:.2g})" for d in bad[:10])
            raise ValidationError(
                f"{len(bad)} of {len(diffs)} outputs differ from {built.reference_name} beyond relative "
                f"{options.tolerance:g} and beyond {NOISE_FACTOR:g}x what rounding moves them by: "
                f"{listing}{', ...' if len(bad) > 10 else ''}; nothing was written")
        if verify is not None:
            say("rendering a probe image")
            verify(staged_path)
        say(f"writing {output}")
    drop_stale_data(output)
    timings = dict(built.timings, check=time.perf_counter() - step)
    return ExportResult(output, info, adapter.kind, built.reference_name, diffs, options.tolerance, size,
                        time.perf_counter() - started, built.preprocessing_reason, built.layout, built.notes, timings,
                        built.size_reason)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape or a.size == 0:
        return 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _labels(value: Any, read_labels: Callable[[Path], list[str]]) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return read_labels(value)
    names = [str(v) for v in value]
    if not names:
        raise OptionError("{labels} is empty; give a labels file or the class names", params=("labels",))
    return names
