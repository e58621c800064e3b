"""The adapters' contract: what every source takes (`ExportOptions`) and hands back (`Built`).

An adapter is a class per kind of source. It says, as class attributes, what it is
called in messages (`kind`) and which `ExportOptions` fields it takes (`options`); it
claims the sources it reads (`claims`), checks its own options before any work
(`check`) and builds a `Built` (`build`). The pipeline refuses an option the adapter
does not take, so an option meant for another source is an error, never ignored.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from onnxviz.errors import OptionError
from onnxviz.model.info import LayerInfo, Preprocessing

if TYPE_CHECKING:
    from onnx import ModelProto

Progress = Callable[[str], None]

DEFAULT_TOLERANCE = 1e-4  # largest error allowed, relative to each output's range in the reference


@dataclass
class ExportOptions:
    """Every export option. Each adapter takes some of them (`Adapter.options`); an option
    given to a source it does not apply to is an error, never ignored."""

    weights: str | None = None  # "imagenet" | "none" | a weights file
    input_size: int | tuple[int, int] | None = None  # N (square) or (height, width)
    alpha: float | None = None  # MobileNets' width multiplier
    include_top: bool = True  # keras.applications: keep the classifier
    layers: list[str] = field(default_factory=list)  # globs
    exclude: list[str] = field(default_factory=list)
    skip_fused: bool = False
    preprocess: str | None = None  # Keras model files: caffe | tf | torch | none; ONNX: a preset (presets.PRESETS)
    resize: str | int | None = None  # ONNX: how photos are resized for the file: N, stretch, crop, pad
    op_types: list[str] = field(default_factory=list)  # ONNX: expose the outputs of these op types
    mean: float | str | Sequence[float | str] | None = None  # ONNX: what the network expects of pixels
    std: float | str | Sequence[float | str] | None = None
    scale: float | str | None = None
    bgr: bool = False
    layout: str | None = None  # ONNX: nchw | nhwc
    labels: str | Path | Sequence[str] | None = None  # a labels file or the class names
    tolerance: float = DEFAULT_TOLERANCE
    external_data: bool | None = None  # weights in a data file beside the .onnx; None: as modelfile chooses

    def given(self) -> list[str]:
        """The options set to something other than their default."""
        out = []
        for f in fields(self):
            default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
            if getattr(self, f.name) != default:
                out.append(f.name)
        return out


# What every adapter takes.
EVERY_SOURCE = frozenset({"layers", "exclude", "labels", "tolerance", "input_size", "external_data"})


@dataclass
class Built:
    """What a source adapter hands to the pipeline."""

    model: ModelProto  # the network's own input, the exposed layers as outputs (4-D maps NCHW)
    input_name: str
    height: int
    width: int
    layout: str  # the network input's layout: NHWC or NCHW
    layers: list[LayerInfo]  # the outputs, in the graph's output order
    preprocessing: Preprocessing
    preprocessing_reason: str  # why that preprocessing, in words
    source: str  # what the file says it was made from
    reference_name: str  # "Keras", "ONNX Runtime on the source model"
    # RGB 0..255 NHWC float32 batch -> the source framework's value of every exposed layer
    reference: Callable[[np.ndarray], dict[str, np.ndarray]]
    prediction_output: str | None = None
    prediction_is_probability: bool = True
    classes: int | None = None
    labels: list[str] | None = None  # the source's own class names, when it knows them
    keras: dict[str, Any] | None = None  # how to rebuild a Keras source
    notes: list[str] = field(default_factory=list)  # what a user should know about this export
    timings: dict[str, float] = field(default_factory=dict)
    resize: str | None = None  # how photos are resized for the file (images.resize_image), when the source says


class Adapter(ABC):
    """One kind of source. Subclasses set `kind` and `options` and implement `claims` and `build`."""

    kind: ClassVar[str]  # what the source is called in messages: "ONNX model"
    options: ClassVar[frozenset[str]]  # the ExportOptions fields it takes

    def __init__(self, stem: str) -> None:
        self.stem = stem  # default output: models/<stem>.onnx

    @classmethod
    @abstractmethod
    def claims(cls, source: Any) -> bool:
        """Whether `source` (a name, a path or an object) is of this kind."""

    @classmethod
    def open(cls, source: Any) -> Adapter:
        """The adapter for `source`, checking what can be checked before any work."""
        return cls(str(source))

    def check(self, options: ExportOptions) -> None:
        """Refuse bad values of this adapter's own options before any work (none by default)."""

    @abstractmethod
    def build(self, options: ExportOptions, say: Progress) -> Built:
        """The network as ONNX with the chosen layers as outputs, and how to check them."""

    def check_options(self, options: ExportOptions) -> None:
        """Refuse options this kind of source does not take, naming the ones it does; then the
        values every source shares, then the adapter's own."""
        takes = sorted(self.options)
        wrong = [name for name in options.given() if name not in self.options]
        if wrong:
            fields_ = ", ".join("{" + name + "}" for name in wrong)
            applicable = ", ".join("{" + name + "}" for name in takes)
            article = "an" if self.kind[0] in "AEIOUaeiou" else "a"
            raise OptionError(f"{fields_} {'does' if len(wrong) == 1 else 'do'} not apply to {article} {self.kind}; "
                              f"{article} {self.kind} takes {applicable}", params=tuple(wrong) + tuple(takes))
        if not options.tolerance > 0:
            raise OptionError(f"{{tolerance}} must be positive, got {options.tolerance:g}", params=("tolerance",))
        self.check(options)
        input_size_pair(options.input_size)


def input_size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """`input_size` as (height, width): N is N x N; None stays None."""
    if size is None:
        return None
    sizes = list(size) if isinstance(size, (tuple, list)) else [size]
    if not (len(sizes) in (1, 2) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in sizes)):
        raise OptionError(f"{{input_size}} must be a positive number of pixels (or height, width), got {size!r}",
                          params=("input_size",))
    return (int(sizes[0]), int(sizes[-1]))
