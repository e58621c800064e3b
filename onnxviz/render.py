"""`onnxviz render`: images through an onnxviz file, one folder of pictures and a report each.

Per image, in `OUT/<image stem>/`: one grid per layer `<index>.<layer>_<first>-<last>.jpg`,
`original.jpg` (the input as the model saw it, with its top-k predictions), `filters.jpg`
(the first convolution's kernels), `summary.json` and `index.html`. Everything is written
atomically; nothing already in OUT is deleted.
"""
from __future__ import annotations

import fnmatch
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import __version__
from .drawing import draw_predictions, encode
from .errors import ImageError, LayerSelectionError, OnnxvizError
from .files import ensure_dir, write_bytes
from .images import RESIZE_MODES, collect_images, load_image, resize_image
from .metadata import LayerInfo, ModelInfo
from .report import write_report
from .tiling import COLORMAPS, NORMS, SORTS, layer_grid, layer_stats

FORMATS = ("jpg", "png")
PREPACK_FROM_IMAGES = 64

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
    atlas: Path | None = None  # an `onnxviz atlas` folder: the report links each layer it covers

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
    images, failed = collect_images(list(inputs))
    output = ensure_dir(Path(output))
    # Drawing is numpy and OpenCV, which release the GIL: layers are drawn on all cores.
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        # The filters are read while ORT builds the session (which releases the GIL).
        filters_job = pool.submit(_load_filters, Path(model)) if options.filters else None
        # Repacking weights at load pays back only over many batches (see runtime.session_options).
        session = open_session(Path(model), options.provider, prepack=len(images) > PREPACK_FROM_IMAGES)
        chosen = select_layers(session.info, options.layers, str(model))
        wanted = [layer.name for layer in chosen]
        prediction = session.info.prediction_output
        if prediction and options.top_k > 0 and prediction not in wanted:
            wanted.append(prediction)
        session.output_names = wanted
        filters = filters_job.result() if filters_job else None
        painter = _Painter(Path(model), session, chosen, options, output, filters, pool)
        if options.atlas is not None:
            from .atlas_page import read_atlas_layers

            painter.atlas_layers = read_atlas_layers(options.atlas)
        results: list[ImageResult] = []
        folders = dict(zip(images, _folder_names(images)))
        done = 0
        for batch_paths in _batches(images, options.batch_size):
            t = time.perf_counter()
            pixels, ok_paths = [], []
            for path in batch_paths:
                try:
                    pixels.append(resize_image(load_image(path), session.info.height, session.info.width, options.resize))
                    ok_paths.append(path)
                except ImageError as exc:
                    failed.append(str(exc))
                    done += 1
                    if progress:
                        progress(done, len(images), f"skipped {path.name}")
            painter.timings["load"] += time.perf_counter() - t
            if not ok_paths:
                continue
            t = time.perf_counter()
            outputs = session.run(np.stack(pixels))
            infer_s = time.perf_counter() - t
            painter.timings["infer"] += infer_s
            for n, path in enumerate(ok_paths):
                results.append(painter.paint(path, folders[path], pixels[n], {k: v[n] for k, v in outputs.items()},
                                             infer_s * 1000 / len(ok_paths)))
                done += 1
                if progress:
                    progress(done, len(images), path.name)
            del outputs, pixels
    return RenderResult(Path(model), output, session.provider, session.fallback, results, failed,
                        wanted[:len(chosen)], time.perf_counter() - started, painter.timings)


def _load_filters(model: Path):
    from .filters import load_filters

    return load_filters(model)


class _Painter:
    """Draws and writes everything for one image; shared state of one render run."""

    def __init__(self, model: Path, session, chosen: list[LayerInfo], options: RenderOptions, output: Path,
                 filters, pool: ThreadPoolExecutor) -> None:
        self.model, self.session, self.info = model, session, session.info
        self.chosen, self.options, self.output, self.filters, self.pool = chosen, options, output, filters, pool
        self.index_of = {layer.name: i for i, layer in enumerate(self.info.layers)}
        self.filters_bytes = encode(filters.image, options.fmt, options.quality) if filters is not None else None
        self.timings = {"load": 0.0, "infer": 0.0, "draw": 0.0, "write": 0.0}
        self.atlas_layers: dict[str, int] | None = None

    def _layer(self, folder: Path, layer: LayerInfo, maps: np.ndarray) -> tuple[dict[str, Any], float, float]:
        opts = self.options
        t = time.perf_counter()
        grid = layer_grid(maps, max_channels=opts.max_channels, channels=opts.channels,
                          sort=opts.sort, norm=opts.norm, colormap=opts.colormap)
        stats = layer_stats(maps)
        data = encode(grid.image, opts.fmt, opts.quality)
        index = self.index_of[layer.name]
        name = _grid_file(index, layer, grid.channels, opts.sort, opts.fmt)
        t2 = time.perf_counter()
        write_bytes(folder / name, data)
        entry = {
            "index": index, "name": layer.name, "op": layer.op,
            "shape": [None, *maps.shape], "file": name, "channels_shown": len(grid.channels),
            "channels_total": int(maps.shape[0]), "channels": grid.channels,
            "stats": {"mean": stats.mean, "zero_fraction": stats.zero_fraction, "dead_channels": stats.dead_channels,
                      "min": stats.min, "max": stats.max},
        }
        return entry, t2 - t, time.perf_counter() - t2

    def paint(self, path: Path, folder_name: str, rgb: np.ndarray, outputs: dict[str, np.ndarray],
              infer_ms: float) -> ImageResult:
        opts, info = self.options, self.info
        folder = ensure_dir(self.output / folder_name)
        t0 = time.perf_counter()
        jobs = [self.pool.submit(self._layer, folder, layer, outputs[layer.name]) for layer in self.chosen]
        preds = (top_predictions(outputs[info.prediction_output], info, opts.top_k)
                 if info.prediction_output and opts.top_k > 0 else [])
        original = f"original.{opts.fmt}"
        write_bytes(folder / original, encode(draw_predictions(rgb, [(p["label"], p["score"]) for p in preds]),
                                              opts.fmt, opts.quality))
        filters_entry = None
        if self.filters is not None:
            filters_name = f"filters.{opts.fmt}"
            write_bytes(folder / filters_name, self.filters_bytes)
            filters_entry = {"file": filters_name, "layer": self.filters.layer, "count": self.filters.weights_shape[0],
                             "kernel": self.filters.kernel, "channel_order": self.filters.channel_order}
        done = [job.result() for job in jobs]
        layers = [entry for entry, _, _ in done]
        draw_s, write_s = sum(d for _, d, _ in done), sum(w for _, _, w in done)
        # wall time, split between drawing and writing as their CPU time was
        wall = time.perf_counter() - t0
        share = draw_s / (draw_s + write_s) if draw_s + write_s > 0 else 1.0
        self.timings["draw"] += wall * share
        self.timings["write"] += wall * (1 - share)
        summary = {
            "image": str(path), "image_name": path.name, "model": str(self.model), "source": info.source,
            "onnxviz_version": __version__, "provider": self.session.provider,
            "provider_fallback": self.session.fallback,
            "input": [info.height, info.width], "resize": opts.resize, "original": original,
            "predictions": [{"label": p["label"], "score": p["score"], "index": p["index"]} for p in preds],
            "filters": filters_entry, "layers": layers,
            "options": {"max_channels": opts.max_channels, "channels": opts.channels, "sort": opts.sort,
                        "norm": opts.norm, "colormap": opts.colormap},
            "timings_ms": {"inference": infer_ms, "drawing": wall * share * 1000, "writing": wall * (1 - share) * 1000},
        }
        if self.atlas_layers is not None:
            page = Path(os.path.relpath(Path(opts.atlas) / "index.html", folder)).as_posix()
            summary["atlas"] = {"page": page}
            for entry in layers:
                if entry["name"] in self.atlas_layers:
                    entry["atlas"] = f"{page}#l={self.atlas_layers[entry['name']]}"
        write_report(folder, summary)
        return ImageResult(path, folder, summary["predictions"], len(layers), len(layers) + 4 + (self.filters is not None))
