"""`onnxviz render`: images through an onnxviz file, one folder of pictures and a report each.

Per image, in `OUT/<image stem>/`: one grid per layer `<index>.<layer>_<first>-<last>.jpg`,
`original.jpg` (the input as the model saw it, with its top-k predictions), `filters.jpg`
(the first convolution's kernels), `summary.json` and `index.html`. Everything is written
atomically; nothing already in OUT is deleted.
"""
from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import __version__
from .drawing import draw_predictions, encode
from .errors import ImageError, LayerSelectionError, OnnxvizError
from .files import ensure_dir, write_bytes
from .images import collect_images, load_image, resize_image
from .metadata import LayerInfo, ModelInfo
from .report import write_report
from .tiling import COLORMAPS, layer_grid, layer_stats

RESIZE_MODES = ("stretch", "crop", "pad")
SORTS = ("index", "mean", "max")
NORMS = ("channel", "layer")
FORMATS = ("jpg", "png")

Progress = Callable[[int, int, str], None]


@dataclass
class RenderOptions:
    layers: list[str] = field(default_factory=list)
    max_channels: int | None = 64
    channels: tuple[int, int] | None = None
    sort: str = "index"
    norm: str = "channel"
    colormap: str = "viridis"
    fmt: str = "jpg"
    quality: int = 90
    top_k: int = 5
    resize: str = "stretch"
    batch_size: int = 8
    provider: str = "auto"
    filters: bool = True

    def check(self) -> None:
        """Reject bad options before any work starts."""
        for value, valid, flag in ((self.resize, RESIZE_MODES, "--resize"), (self.sort, SORTS, "--sort"),
                                   (self.norm, NORMS, "--norm"), (self.fmt, FORMATS, "--format"),
                                   (self.colormap, tuple(COLORMAPS), "--colormap")):
            if value not in valid:
                raise OnnxvizError(f"{flag} '{value}' is not valid; choose one of {', '.join(valid)}")
        if self.batch_size < 1:
            raise OnnxvizError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_channels is not None and self.max_channels < 1:
            raise OnnxvizError(f"--max-channels must be at least 1, got {self.max_channels}")
        if self.top_k < 0:
            raise OnnxvizError(f"--top-k must be 0 or more, got {self.top_k}")
        if not 1 <= self.quality <= 100:
            raise OnnxvizError(f"--quality must be 1..100, got {self.quality}")


@dataclass
class ImageResult:
    image: Path
    folder: Path
    predictions: list[dict[str, Any]]
    layers: int
    files: int


@dataclass
class RenderResult:
    """What one `render` run did."""

    model: Path
    output: Path
    provider: str
    fallback: str | None
    images: list[ImageResult]
    failed: list[str]  # one-line warnings, one per image that could not be rendered
    layers: list[str]
    seconds: float
    timings: dict[str, float]  # total seconds per stage: load, infer, draw, write

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.seconds if self.seconds > 0 else 0.0


def parse_channels(text: str | None) -> tuple[int, int] | None:
    """'A:B' -> (A, B)."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not match:
        raise OnnxvizError(f"--channels takes A:B (e.g. 0:32), got '{text}'")
    a = int(match.group(1) or 0)
    b = int(match.group(2)) if match.group(2) else 1 << 30
    if b <= a:
        raise OnnxvizError(f"--channels {text} is empty; B must be larger than A")
    return a, b


def select_layers(info: ModelInfo, patterns: list[str], where: str) -> list[LayerInfo]:
    """The feature maps to draw: all of them, or those matching any glob."""
    maps = info.feature_maps
    if not patterns:
        if not maps:
            raise LayerSelectionError(f"'{where}' exposes no 4-D feature maps; export it again with --layers")
        return maps
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in maps):
            names = [layer.name for layer in maps]
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise LayerSelectionError(
                f"layer '{pattern}' is not in {where}; it has {len(names)}: {shown}. Run 'onnxviz layers {where}'")
    return [layer for layer in maps if any(fnmatch.fnmatchcase(layer.name, p) for p in patterns)]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


def top_predictions(scores: np.ndarray, info: ModelInfo, k: int) -> list[dict[str, Any]]:
    """The k best classes with their probabilities (softmax applied when the model gives logits)."""
    if k <= 0:
        return []
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not info.prediction_is_probability:
        s = np.exp(s - s.max())
        s /= s.sum()
    order = np.argsort(-s, kind="stable")[:k]
    labels = info.labels or []
    return [{"index": int(i), "label": labels[i] if i < len(labels) else f"class {i}", "score": float(s[i])}
            for i in order]


def _grid_file(layer_index: int, layer: LayerInfo, shown: list[int], sort: str, fmt: str) -> str:
    if sort == "index":
        span = f"{shown[0]}-{shown[0] + len(shown)}" if shown == list(range(shown[0], shown[0] + len(shown))) \
            else f"{min(shown)}-{max(shown) + 1}"
    else:
        span = f"top{len(shown)}-by-{sort}"
    return f"{layer_index}.{safe_name(layer.name)}_{span}.{fmt}"


def _folder_names(images: list[Path]) -> list[str]:
    """`<stem>`, or `<stem>_<suffix>` where two images share a stem."""
    stems: dict[str, int] = {}
    for path in images:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    names, used = [], set()
    for path in images:
        name = safe_name(path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}")
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        names.append(name)
    return names


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def render(model: Path, inputs: list[Path], output: Path, options: RenderOptions | None = None,
           progress: Progress | None = None) -> RenderResult:
    """Render every image of `inputs` (files or folders) through `model` into `output`."""
    from .runtime import open_session

    options = options or RenderOptions()
    options.check()
    started = time.perf_counter()
    timings = {"load": 0.0, "infer": 0.0, "draw": 0.0, "write": 0.0}
    images, failed = collect_images(list(inputs))
    output = ensure_dir(Path(output))

    session = open_session(Path(model), options.provider)
    info = session.info
    chosen = select_layers(info, options.layers, str(model))
    index_of = {layer.name: i for i, layer in enumerate(info.layers)}
    wanted = [layer.name for layer in chosen]
    if info.prediction_output and options.top_k > 0 and info.prediction_output not in wanted:
        wanted.append(info.prediction_output)
    session.output_names = wanted
    filters = None
    if options.filters:
        from .filters import load_filters

        filters = load_filters(Path(model))
    filters_bytes = encode(filters.image, options.fmt, options.quality) if filters is not None else None

    results: list[ImageResult] = []
    folders = dict(zip(images, _folder_names(images)))
    done = 0
    for batch_paths in _batches(images, options.batch_size):
        t = time.perf_counter()
        pixels, ok_paths = [], []
        for path in batch_paths:
            try:
                pixels.append(resize_image(load_image(path), info.height, info.width, options.resize))
                ok_paths.append(path)
            except ImageError as exc:
                failed.append(str(exc))
                done += 1
                if progress:
                    progress(done, len(images), f"skipped {path.name}")
        timings["load"] += time.perf_counter() - t
        if not ok_paths:
            continue
        t = time.perf_counter()
        batch = np.stack(pixels).astype(np.float32)
        outputs = session.run(batch)
        infer_ms = (time.perf_counter() - t) * 1000 / len(ok_paths)
        timings["infer"] += time.perf_counter() - t
        for n, path in enumerate(ok_paths):
            result = _render_one(path, folders[path], pixels[n], {k: v[n] for k, v in outputs.items()},
                                 chosen, index_of, info, options, output, session, filters, filters_bytes,
                                 infer_ms, timings, model)
            results.append(result)
            done += 1
            if progress:
                progress(done, len(images), path.name)
        del outputs, batch, pixels
    return RenderResult(Path(model), output, session.provider, session.fallback, results, failed,
                        [layer.name for layer in chosen], time.perf_counter() - started, timings)


def _render_one(path, folder_name, rgb, outputs, chosen, index_of, info, options, output, session,
                filters, filters_bytes, infer_ms, timings, model) -> ImageResult:
    folder = ensure_dir(output / folder_name)
    draw_s = write_s = 0.0
    layers = []
    for layer in chosen:
        t = time.perf_counter()
        maps = outputs[layer.name]
        grid = layer_grid(maps, max_channels=options.max_channels, channels=options.channels,
                          sort=options.sort, norm=options.norm, colormap=options.colormap)
        stats = layer_stats(maps)
        data = encode(grid.image, options.fmt, options.quality)
        name = _grid_file(index_of[layer.name], layer, grid.channels, options.sort, options.fmt)
        t2 = time.perf_counter()
        write_bytes(folder / name, data)
        draw_s += t2 - t
        write_s += time.perf_counter() - t2
        layers.append({
            "index": index_of[layer.name], "name": layer.name, "op": layer.op,
            "shape": [None, *maps.shape], "file": name, "channels_shown": len(grid.channels),
            "channels_total": int(maps.shape[0]), "channels": grid.channels,
            "stats": {"mean": stats.mean, "zero_fraction": stats.zero_fraction, "dead_channels": stats.dead_channels,
                      "min": stats.min, "max": stats.max},
        })
    t = time.perf_counter()
    preds = (top_predictions(outputs[info.prediction_output], info, options.top_k)
             if info.prediction_output and options.top_k > 0 else [])
    original = f"original.{options.fmt}"
    write_bytes(folder / original, encode(draw_predictions(rgb, [(p["label"], p["score"]) for p in preds]),
                                          options.fmt, options.quality))
    filters_entry = None
    if filters is not None:
        filters_name = f"filters.{options.fmt}"
        write_bytes(folder / filters_name, filters_bytes)
        filters_entry = {"file": filters_name, "layer": filters.layer, "count": filters.weights_shape[0],
                         "kernel": filters.kernel, "channel_order": filters.channel_order}
    draw_ms, write_ms = draw_s * 1000, (write_s + time.perf_counter() - t) * 1000
    timings["draw"] += draw_s
    timings["write"] += write_s + time.perf_counter() - t
    summary = {
        "image": str(path), "image_name": path.name, "model": str(model), "source": info.source,
        "onnxviz_version": __version__, "provider": session.provider, "provider_fallback": session.fallback,
        "input": [info.height, info.width], "resize": options.resize, "original": original,
        "predictions": [{"label": p["label"], "score": p["score"], "index": p["index"]} for p in preds],
        "filters": filters_entry, "layers": layers,
        "options": {"max_channels": options.max_channels, "channels": options.channels, "sort": options.sort,
                    "norm": options.norm, "colormap": options.colormap},
        "timings_ms": {"inference": infer_ms, "tiling": draw_ms, "writing": write_ms},
    }
    write_report(folder, summary)
    return ImageResult(path, folder, summary["predictions"], len(layers), len(layers) + 4 + (filters is not None))
