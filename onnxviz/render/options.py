"""What `onnxviz render` can be asked for: its options, checked before any work starts."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from onnxviz.errors import LayerSelectionError, OptionError
from onnxviz.model.info import LayerInfo
from onnxviz.picture.tiling import COLORMAPS, NORMS, SORTS
from onnxviz.run.images import check_resize

FORMATS = ("jpg", "png")


@dataclass
class RenderOptions:
    layers: list[str] = field(default_factory=list)
    max_channels: int | None = 64
    channels: tuple[int, int] | None = None
    sort: str = "index"
    norm: str = "channel"
    colormap: str = "viridis"
    grids: bool = False  # coloured grid pictures for papers, in grids/
    fmt: str = "jpg"  # of the grids
    quality: int = 90  # JPEG quality of the grids
    top_k: int = 5
    resize: str | None = None  # None: the file's own recipe (metadata), else "stretch"
    batch_size: int = 8
    provider: str = "auto"
    filters: bool = True
    workers: int | None = None  # threads that draw, encode and write (default: the CPUs, at most 4)
    atlas: Path | None = None  # an `onnxviz atlas` folder: the report links each layer it covers
    fresh: bool = False  # start the run page of `output` afresh instead of adding to the run there
    cam: bool = True  # class activation maps of the top classes (models with a classifier)
    cam_layer: str | None = None  # default: the last feature map before the classifier
    parts: int = 5  # factorized parts per layer; 0 turns the factorization off
    parts_layers: list[str] = field(default_factory=list)  # globs; default: one layer per stage

    def check(self) -> None:
        """Reject bad options before any work starts."""
        if self.resize is not None:
            self.resize = check_resize(self.resize)
        for value, valid, param in ((self.sort, SORTS, "sort"), (self.norm, NORMS, "norm"), (self.fmt, FORMATS, "fmt"),
                                    (self.colormap, tuple(COLORMAPS), "colormap")):
            if value not in valid:
                raise OptionError(f"{{{param}}} '{value}' is not valid; choose one of {', '.join(valid)}",
                                  params=(param,))
        if self.batch_size < 1:
            raise OptionError(f"{{batch_size}} must be at least 1, got {self.batch_size}", params=("batch_size",))
        if self.max_channels is not None and self.max_channels < 1:
            raise OptionError(f"{{max_channels}} must be at least 1, got {self.max_channels}",
                              params=("max_channels",))
        if self.top_k < 1:
            raise OptionError(f"{{top_k}} must be at least 1 (the classes each report lists), got {self.top_k}",
                              params=("top_k",))
        if isinstance(self.parts, bool) or not isinstance(self.parts, int) or self.parts < 0:
            raise OptionError(f"{{parts}} must be 0 (no factorization) or a number of parts, got {self.parts!r}",
                              params=("parts",))
        if not 1 <= self.quality <= 100:
            raise OptionError(f"{{quality}} must be 1..100, got {self.quality}", params=("quality",))


def parse_channels(text: str | None) -> tuple[int, int] | None:
    """'A:B' -> (A, B)."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not match:
        raise OptionError(f"{{channels}} takes A:B (e.g. 0:32), got '{text}'", params=("channels",))
    a = int(match.group(1) or 0)
    b = int(match.group(2)) if match.group(2) else 1 << 30
    if b <= a:
        raise OptionError(f"{{channels}} {text} is empty; B must be larger than A", params=("channels",))
    return a, b


def check_channels(chosen: list[LayerInfo], options: RenderOptions) -> None:
    """Every chosen layer has a fixed [C, H, W] and `--channels` selects something in each."""
    for layer in chosen:
        c, h, w = layer.shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in (c, h, w)):
            raise LayerSelectionError(f"layer '{layer.name}' has no fixed [C, H, W] shape "
                                      f"({layer.shape}); export the model again with a fixed {{input_size}}",
                                      params=("input_size",))
        if options.channels and options.channels[0] >= c and not h == w == 1:
            start, stop = options.channels
            raise OptionError(f"{{channels}} {start}:{stop} selects nothing in layer '{layer.name}', which has {c} "
                              f"channels; choose A below {c} or pick layers with {{layers}}", params=("channels", "layers"))
