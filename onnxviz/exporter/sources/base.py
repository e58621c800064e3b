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
    input_size: int | str | tuple[int, int] | None = None  # N (square), (height, width) or "HxW"
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
    size_reason: str = ""  # where height x width came from, in words: "fixed in the model's input", ...
    # Per output, the smallest step the source's own tensor takes (a quantized tensor's scale):
    # the file may differ from the source by that much wherever the two round differently.
    steps: dict[str, float] = field(default_factory=dict)


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


def input_size_pair(size: int | str | Sequence[int] | None) -> tuple[int, int] | None:
    """`input_size` as (height, width): N is N x N, "HxW" or (H, W) is H x W; None stays None."""
    if size is None:
        return None
    if isinstance(size, str):
        import re

        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", size)
        if match is None:
            shown = size.replace("{", "{{").replace("}", "}}")
            raise OptionError(f"{{input_size}} takes N or HxW (e.g. 224 or 48x192), got '{shown}'",
                              params=("input_size",))
        size = (int(match.group(1)), int(match.group(2) or match.group(1)))
    sizes = list(size) if isinstance(size, (tuple, list)) else [size]
    if not (len(sizes) in (1, 2) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in sizes)):
        shown = "x".join(map(str, sizes)) if all(isinstance(v, (int, np.integer)) for v in sizes) else repr(size)
        raise OptionError(f"{{input_size}} {shown} is not a size: height and width are whole numbers of pixels, at "
                          f"least 1; give N or HxW (e.g. 224 or 48x192)", params=("input_size",))
    return (int(sizes[0]), int(sizes[-1]))


GRAY_REASON = "its one channel gets the gray of the RGB pixels first (0.299 R + 0.587 G + 0.114 B)"


def for_one_channel(prep: Preprocessing, where: str) -> Preprocessing:
    """The preprocessing of a one-channel network: its gray computed from RGB first, then one mean
    and one std. Refused where it asks for channel order or differs per channel."""
    from dataclasses import replace

    if prep.bgr:
        raise OptionError(f"{where} takes one channel, computed as the gray of the RGB pixels: a BGR channel order "
                          f"does not apply to it; leave out {{bgr}} (and presets that swap channels, such as caffe)",
                          params=("bgr",))
    if len(set(prep.mean)) > 1 or len(set(prep.std)) > 1:
        raise OptionError(f"{where} takes one channel: give one {{mean}} and one {{std}}, not one per colour "
                          f"(got mean {prep.mean}, std {prep.std}{f', preset {prep.mode}' if prep.mode != 'custom' else ''})",
                          params=("mean", "std"))
    return replace(prep, gray=True)


def size_text(height: int, width: int) -> str:
    """224 for a square, 48x192 otherwise: how `input_size` is written on the command line."""
    return str(height) if height == width else f"{height}x{width}"
