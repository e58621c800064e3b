"""The per-image output folder: its layout as dataclasses, and the writer of its pictures.

Layout (format 5), in `OUT/<image folder>/`:

- `index.html`, `summary.json`, `summary.js` (`onnxviz.summary({...})`): written by `report`.
- `input.png`: the exact pixels the model got (after resizing), lossless.
- `filters.png`: the first convolution's kernels, when the model has one.
- `maps/NNN-MMM.css`: for each map layer from index NNN to MMM, a rule `.mNNN
  b{background-image:url("data:image/png;base64,...")}` (NNN unpadded): the PNG of the layer's
  stored channels at native resolution, 8-bit gray, tiled row-major in `columns` columns with no
  gaps; pixel p of channel i stands for `low[i] + p / 255 * (high[i] - low[i])` (a constant
  channel is 0 with low == high). The page links these stylesheets, so its tiles show the exact
  maps without JavaScript, and its script reads the same PNG back from the rule (a `file://`
  page can read neither a JSON file nor an image's pixels, but it can read a style and decode a
  data: URL): one copy of the maps serves both. Consecutive layers share a file up to about
  CHUNK_BYTES, so that a deep network gets tens of files per image rather than hundreds; a
  layer's `data` names its file.
- `grids/NNN.<layer>_ch<first>-<last>.jpg` (inclusive, zero-padded; sorted selections
  `NNN.<layer>_top<k>-by-<mean|max>.jpg`): coloured grids for papers, with `grids=True`.
- NNN: the layer's index in the file, zero-padded to the width of the largest (at least 3).

`summary.json` is `Summary.to_dict()` (compact JSON; `summary.js` the same text inside
`onnxviz.summary(...)`); `OUT/run.json` is `Run.to_dict()`. Where this differs from the
design the report page was built to:

- `channel_stats` (`min`, `max`, `mean`) cover the *stored* channels of a map layer, in
  stored order (aligned with `channels`), and every channel of a vector layer. Every
  channel of every layer was 579,000 numbers for ResNet101V2 (193,000 channels): about
  4 MB in summary.json and again in summary.js per image, and most of a second of JSON
  work per image; the page can only reorder the channels it has. `--sort mean|max` picks
  the stored channels by every channel's statistic at render time.
- `low` / `high` are written with 9 significant digits (float32 exactly), so that
  `low + p / 255 * (high - low)` is within half a step of the value; other measured
  numbers (stats, channel_stats, values) with `DIGITS`.
- `timings_ms`: `read`, `inference` (this image's share of its batch), `drawing`,
  `encoding`, `writing`.
- `predictions[].score` unrounded.

Every file goes through an `ImageWriter`, into a hidden folder (`files.staged`) that is renamed into
place once the image's report is written (one rename instead of one per file), so a failed
or interrupted render leaves no half-made image folder behind. A full disk stops with
`OutputError`.
"""
from __future__ import annotations

import base64
import errno
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from onnxviz.errors import OutputError
from onnxviz.files import ensure_dir, safe_name
from onnxviz.model.labels import Prediction

FORMAT = 5
DIGITS = 4
# low/high of a sprite: float32 written in full (9 digits round-trip it), so that
# low + p / 255 * (high - low) is the stored value to within half a step of 255.
EXACT_DIGITS = 9
# Consecutive map layers share a stylesheet until it reaches CHUNK_BYTES: creating a file costs 0.5
# to 1 ms on this kind of disk, which was most of the time spent per image when every layer had two
# files (752 for ResNet101V2, RESULTS 19).
CHUNK_BYTES = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def rounded(values, digits: int = DIGITS) -> list[float]:
    """Floats with `digits` significant digits (JSON stays small); non-finite values become None.

    Rounded in numpy (an integer over a power of ten, correctly rounded, so JSON writes the short
    decimal): the same values as formatting with `%.{digits}g`, in about a quarter of the time.
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(array)
    out = np.where(finite, array, 0.0)
    nonzero = out != 0
    if nonzero.any():
        v = out[nonzero]
        shift = np.minimum(digits - 1 - np.floor(np.log10(np.abs(v))), 300)  # 1e-300 and below: as they are
        scale = 10.0 ** np.abs(shift)
        with np.errstate(over="ignore", invalid="ignore"):  # the branch np.where does not take
            out[nonzero] = np.where(shift >= 300, v,
                                    np.where(shift >= 0, np.round(v * scale) / scale, np.round(v / scale) * scale))
    result = out.tolist()
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            result[i] = None
    return result


def one(value: float) -> float | None:
    return rounded([value])[0]


@dataclass
class Stats:
    min: float | None
    max: float | None
    mean: float | None
    zero_fraction: float | None
    dead_channels: int  # channels that are 0 everywhere for this image


@dataclass
class ChannelStats:
    min: list[float | None]
    max: list[float | None]
    mean: list[float | None]


@dataclass
class Layer:
    """One layer of one image. `kind` "map": a sprite; "vector" (H == W == 1): `values`."""

    index: int
    name: str
    op: str
    shape: list[int]  # C, H, W
    kind: str
    stats: Stats
    channel_stats: ChannelStats | None  # of the stored channels (kind "map"), of every channel (kind "vector")
    channels: list[int] | None = None
    tile: list[int] | None = None
    columns: int | None = None
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    data: str | None = None  # the stylesheet holding this layer's rule `.mNNN b{...}`
    grid: str | None = None
    values: list[float | None] | None = None
    cls: str = ""  # the source framework's class (PyTorch: `BatchNorm2d`), when the file says
    folded: list[str] | None = None  # what the exporter folded into it (`layer1.0.conv2`)
    atlas: str | None = None  # its page in an `onnxviz atlas` of the model (render --atlas)

    def to_dict(self) -> dict[str, Any]:
        d = {"index": self.index, "name": self.name, "op": self.op, "shape": self.shape, "kind": self.kind,
             "stats": vars(self.stats).copy(),
             "channel_stats": vars(self.channel_stats).copy() if self.channel_stats is not None else None}
        if self.cls or self.folded:
            d.update({"class": self.cls, "folded": list(self.folded or [])})
        if self.kind == "map":
            d.update(channels=self.channels, tile=self.tile, columns=self.columns, low=self.low, high=self.high,
                     data=self.data, grid=self.grid)
        else:
            d["values"] = self.values
        if self.atlas:
            d["atlas"] = self.atlas
        return d


@dataclass
class Input:
    height: int
    width: int
    resize: str
    file: str = "input.png"


@dataclass
class FiltersEntry:
    file: str
    layer: str
    count: int
    kernel: str
    channel_order: str


@dataclass
class StageTimes:
    """Seconds of work per stage of a render, named as `timings_ms` names them. The stages overlap
    (a reader thread, ONNX Runtime and the painting workers run at once), so over a run they add
    up to more than its wall time."""

    read: float = 0.0
    inference: float = 0.0
    drawing: float = 0.0
    encoding: float = 0.0
    writing: float = 0.0

    def add(self, other: StageTimes, fraction: float = 1.0) -> None:
        """Add `other`'s times, or that `fraction` of them."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name) * fraction)

    def milliseconds(self) -> dict[str, float]:
        return {f.name: round(getattr(self, f.name) * 1000, 1) for f in fields(self)}


@dataclass
class Summary:
    image: str
    image_name: str
    model: str
    source: str
    onnxviz_version: str
    provider: str
    provider_fallback: str | None
    input: Input
    predictions: list[Prediction]
    filters: FiltersEntry | None
    options: dict[str, Any]
    timings: StageTimes  # this image's: its share of its batch's reading and inference, and its own
    layers: list[Layer]
    atlas: dict[str, str] | None = None  # {"page": the atlas page, relative to the image folder}
    explain: dict[str, Any] | None = None  # class activation maps and factorized parts (explain.pages)
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "image": self.image, "image_name": self.image_name, "model": self.model,
            "source": self.source, "onnxviz_version": self.onnxviz_version, "provider": self.provider,
            "provider_fallback": self.provider_fallback, "input": asdict(self.input),
            "predictions": [{"index": p.index, "label": p.label, "score": p.score} for p in self.predictions],
            "filters": asdict(self.filters) if self.filters else None,
            "options": self.options, "timings_ms": self.timings.milliseconds(),
            "layers": [layer.to_dict() for layer in self.layers],
            **({"atlas": self.atlas} if self.atlas else {}),
            **({"explain": self.explain} if self.explain else {}),
        }


@dataclass
class RunImage:
    folder: str
    image_name: str
    top1: Prediction | None
    group: str = ""  # the image's folder relative to the folder it was found in ("cats"), "" at the top

    def to_dict(self) -> dict[str, Any]:
        top1 = {"label": self.top1.label, "score": self.top1.score} if self.top1 else None
        return {"folder": self.folder, "image_name": self.image_name, "top1": top1, "group": self.group}


@dataclass
class RunLayer:
    index: int
    name: str
    shape: list[int]
    kind: str


@dataclass
class Run:
    model: str
    source: str
    layers: list[RunLayer]
    images: list[RunImage] = field(default_factory=list)
    format: int = FORMAT
    model_id: str = ""  # which model file made the run (a later render of the same one adds to it)
    explain: dict[str, Any] | None = None  # the parts of one layer factorized over the last render's images

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "model": self.model, "model_id": self.model_id, "source": self.source,
                "layers": [asdict(layer) for layer in self.layers], "images": [i.to_dict() for i in self.images],
                **({"explain": self.explain} if self.explain else {})}


# ---------------------------------------------------------------- names

def index_width(layer_count: int) -> int:
    """Digits of NNN: the width of the largest layer index, at least 3."""
    return max(3, len(str(max(layer_count - 1, 0))))


def layer_stem(index: int, width: int, name: str) -> str:
    return f"{index:0{width}d}.{safe_name(name)}"


def channel_span(channels: list[int], total: int, sort: str) -> str:
    """`ch000-063` for a run of channels (inclusive, zero-padded to the layer's widest index),
    `top64-by-max` for a sorted selection."""
    if sort != "index":
        return f"top{len(channels)}-by-{sort}"
    width = max(3, len(str(total - 1)))
    return f"ch{min(channels):0{width}d}-{max(channels):0{width}d}"


# ---------------------------------------------------------------- the maps' stylesheets

def layer_css(index: int, png: bytes) -> bytes:
    """`.mNNN b{background-image:url("data:image/png;base64,...")}`: a layer's exact maps, for
    the picture of each of the page's tiles (`b`, inside the layer's `.mNNN`). A plain property,
    not a custom one: Chromium parsed ResNet101V2's 13.7 MB of these twice as fast (RESULTS 20)."""
    return b'.m%d b{background-image:url("data:image/png;base64,' % index + base64.b64encode(png) + b'")}\n'


@dataclass
class Chunk:
    """Consecutive map layers of one image stored together in one stylesheet."""

    file: str  # maps/NNN-MMM.css (first and last layer index), relative to the image folder
    css: bytes  # one rule per layer (`layer_css`)


def chunk_maps(drawn: list[tuple[Layer, bytes]], width: int) -> list[Chunk]:
    """Group map layers, each `(entry, PNG of its sprite)` in layer order, into chunks of about
    CHUNK_BYTES and set each entry's `data` to its chunk's file."""
    groups: list[list[tuple[Layer, bytes]]] = []
    size = 0
    for entry, png in drawn:
        if not groups or size >= CHUNK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((entry, png))
        size += len(png)
    chunks = []
    for group in groups:
        file = f"maps/{group[0][0].index:0{width}d}-{group[-1][0].index:0{width}d}.css"
        for entry, _ in group:
            entry.data = file
        chunks.append(Chunk(file, b"".join(layer_css(entry.index, png) for entry, png in group)))
    return chunks


# ---------------------------------------------------------------- writing

class ImageWriter:
    """Writes the files of one image folder, counting them and their bytes."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.written: list[Path] = []
        self.bytes = 0
        self._known: set[Path] = {self.folder}

    def write(self, relative: str, data: bytes) -> str:
        """Write one file. Plainly, not through a hidden name: the whole folder is a hidden
        one (`files.staged`) until `render` renames it into place."""
        path = self.folder / relative
        if path.parent not in self._known:
            ensure_dir(path.parent)
            self._known.add(path.parent)
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise output_error(exc, path) from exc
        self.written.append(path)
        self.bytes += len(data)
        return relative


def output_error(exc: OSError, path: Path) -> OutputError:
    """A write that failed, as one line; a full disk says so."""
    if exc.errno in _NO_SPACE:
        return OutputError(f"the output disk is full (writing '{path}'); free some space or choose another "
                           f"folder with {{output}}; this image was not finished", params=("output",))
    return OutputError(f"cannot write '{path}': {exc.strerror or exc}")
