"""`onnxviz render`: images through an onnxviz file, one folder of maps and a report each.

The folder layout is `store`'s (format 5): per layer the shown channels at native
resolution, 8-bit, as a PNG inside a stylesheet `maps/NNN-MMM.css` shared with neighbouring
layers (the page shows it, with or without JavaScript), plus `input.png`, `filters.png`,
`summary.json` and the report; `OUT/run.json` lists the images.

Three stages overlap, with memory bounded: a reader thread decodes and resizes the next
batch; ONNX Runtime runs the current one; worker threads turn the previous batch into
statistics and sprites and encode them, one task per layer for the whole batch (so that even a
single image's layers are drawn on every core); then one task per image writes its maps and
report. Doing the reductions inside the ONNX graph instead was
measured slower on CPU (benchmarks/RESULTS.md).
Each image is written into a hidden `.NAME.part-*` folder that is renamed into place once
its report is written: an interrupted or failed render leaves no half-made image folder.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from . import __version__
from . import report
from . import store
from .errors import ImageError, LayerSelectionError, OnnxvizError, OptionError, OutputError
from .files import ensure_dir
from .images import check_resize, collect_images, load_image, resize_image
from .metadata import LayerInfo, ModelInfo, load_info
from .tiling import (COLORMAPS, NORMS, SORTS, grid_columns, scaled_sprites, select_channels, sprite_grid,
                     sprite_ranges)

FORMATS = ("jpg", "png")
LONG_RUN_FROM_IMAGES = 64
GROUP_BYTES = 8 << 20  # draw_layer: maps of this many bytes at a time
STAGES = ("read", "infer", "draw", "encode", "write")
PART = ".part-"
_REPORT_FILES = ("summary.json", "summary.js", "index.html")

Progress = Callable[[int, int, str], None]


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
        if self.top_k < 0:
            raise OptionError(f"{{top_k}} must be 0 or more, got {self.top_k}", params=("top_k",))
        if not 1 <= self.quality <= 100:
            raise OptionError(f"{{quality}} must be 1..100, got {self.quality}", params=("quality",))


@dataclass
class ImageResult:
    image: Path
    folder: Path
    predictions: list[dict[str, Any]]
    layers: int
    files: int
    bytes: int


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
    timings: dict[str, float]  # seconds of work per stage (STAGES); stages overlap, so they add up to more than `seconds`

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.images)


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


def select_layers(info: ModelInfo, patterns: list[str], where: str) -> list[LayerInfo]:
    """The feature maps to draw: all of them, or those matching any glob."""
    from .selection import Candidate, select

    maps = info.feature_maps
    if not maps:
        raise LayerSelectionError(f"'{where}' exposes no 4-D feature maps; export it again with --layers")
    chosen = set(select([Candidate(layer.name) for layer in maps], patterns, where=where,
                        hint=f". Run 'onnxviz layers {where}'"))
    return [layer for layer in maps if layer.name in chosen]


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


def check_channels(chosen: list[LayerInfo], options: RenderOptions) -> None:
    """Every chosen layer has a fixed [C, H, W] and `--channels` selects something in each."""
    for layer in chosen:
        c, h, w = layer.shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in (c, h, w)):
            raise LayerSelectionError(f"layer '{layer.name}' has no fixed [C, H, W] shape ({layer.shape}); "
                                      f"export the model again with a fixed --input-size")
        if options.channels and options.channels[0] >= c and not h == w == 1:
            start, stop = options.channels
            raise OptionError(f"{{channels}} {start}:{stop} selects nothing in layer '{layer.name}', which has {c} "
                              f"channels; choose A below {c} or pick layers with {{layers}}", params=("channels", "layers"))


def default_workers() -> int:
    """Threads that draw, encode and write: the physical cores, at most 4. Deep networks
    (ResNet101V2, InceptionV3) take longer to draw than to infer, so ONNX Runtime waits for
    the workers and they can use every core while it does."""
    from .runtime import physical_cores

    return max(1, min(4, physical_cores()))


def _folder_names(images: list[Path]) -> list[str]:
    """`<stem>`, or `<stem>_<suffix>` where two images share a stem."""
    stems: dict[str, int] = {}
    for path in images:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    names, used = [], set()
    for path in images:
        name = store.safe_name(path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}")
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        names.append(name)
    return names


class _Stopped(Exception):
    """The run was interrupted: an image in progress is abandoned."""


@dataclass
class _Batch:
    paths: list[Path]
    pixels: np.ndarray | None
    read_s: float
    failed: list[tuple[Path, str]]


def _read_batches(images: list[Path], info: ModelInfo, options: RenderOptions, out: queue.Queue,
                  stop: threading.Event) -> None:
    """Reader thread: decoded, resized batches into `out` (bounded), then None."""
    try:
        for start in range(0, len(images), options.batch_size):
            t = time.perf_counter()
            pixels, ok, failed = [], [], []
            for path in images[start:start + options.batch_size]:
                if stop.is_set():
                    return
                try:
                    pixels.append(resize_image(load_image(path), info.height, info.width, options.resize or info.resize or "stretch"))
                    ok.append(path)
                except ImageError as exc:
                    failed.append((path, str(exc)))
            batch = _Batch(ok, np.stack(pixels).astype(np.float32) if pixels else None,
                           time.perf_counter() - t, failed)
            while not stop.is_set():
                try:
                    out.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
    except BaseException as exc:  # handed to the main thread, which raises it
        out.put(exc)
        return
    out.put(None)


def _clean_parts(output: Path) -> None:
    """Remove image folders left half-made by a run that was killed (`.NAME.part-*`)."""
    for part in output.glob(f".*{PART}*"):
        if part.is_dir():
            shutil.rmtree(part, ignore_errors=True)


def render(model: Path, inputs: list[Path], output: Path, options: RenderOptions | None = None,
           progress: Progress | None = None) -> RenderResult:
    """Render every image of `inputs` (files or folders) through `model` into `output`."""
    from .runtime import open_session

    options = options or RenderOptions()
    options.check()
    started = time.perf_counter()
    model = Path(model)
    images, failed = collect_images(list(inputs))
    info = load_info(model)
    chosen = select_layers(info, options.layers, str(model))
    check_channels(chosen, options)
    keep = [info.prediction_output] if info.prediction_output and options.top_k > 0 else []
    output = Path(output)
    made_output = not output.exists()
    workers = options.workers or default_workers()
    timings = dict.fromkeys(STAGES, 0.0)
    results: list[ImageResult] = []
    run = store.Run(str(model), info.source, [
        store.RunLayer(i, layer.name, list(layer.shape[1:]), "vector" if layer.shape[2] == layer.shape[3] == 1 else "map")
        for i, layer in ((info.layers.index(layer), layer) for layer in chosen)])
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # The filters are read while ORT builds the session (which releases the GIL) and runs the
        # first batch ...
        filters_job = pool.submit(_load_filters, model) if options.filters else None
        batches: queue.Queue = queue.Queue(maxsize=2)
        reader = threading.Thread(target=_read_batches, args=(images, info, options, batches, stop),
                                  name="onnxviz-reader", daemon=True)
        reader.start()  # and the first batch is decoded meanwhile
        try:
            # Repacked weights and layout transforms pay back only over many batches; ORT's threads do
            # not spin, leaving the CPU to the drawing threads (see runtime.session_options).
            session = open_session(model, options.provider, long_run=len(images) > LONG_RUN_FROM_IMAGES,
                                   spinning=False)
            session.output_names = keep + [layer.name for layer in chosen]
            output = ensure_dir(output)
            _clean_parts(output)
            painter = _Painter(model, session, chosen, options, output, filters_job, stop)
            if options.atlas is not None:
                from .atlas_page import read_atlas_layers

                painter.atlas_layers = read_atlas_layers(options.atlas)
        except BaseException:
            stop.set()  # the reader gives up
            raise
        folders = dict(zip(images, _folder_names(images)))
        slots = threading.BoundedSemaphore(options.batch_size)  # images drawn at once: one batch's maps
        pending: deque[tuple[Path, Future]] = deque()
        done = 0

        def collect(block: bool) -> None:
            nonlocal done
            while pending and (block or pending[0][1].done()):
                path, job = pending.popleft()
                try:
                    result, stage_s = job.result()
                except ImageError as exc:
                    failed.append(str(exc))
                    done += 1
                    if progress:
                        progress(done, len(images), f"skipped {path.name}")
                    continue
                for key, value in stage_s.items():
                    timings[key] += value
                results.append(result)
                run.images.append(_run_image(result))
                done += 1
                if progress:
                    progress(done, len(images), path.name)

        try:
            while True:
                item = batches.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                timings["read"] += item.read_s
                for path, warning in item.failed:
                    failed.append(warning)
                    done += 1
                    if progress:
                        progress(done, len(images), f"skipped {path.name}")
                if item.pixels is None:
                    continue
                t = time.perf_counter()
                outputs = session.run(item.pixels)
                infer_s = time.perf_counter() - t
                timings["infer"] += infer_s
                share = {"read": item.read_s / len(item.paths), "infer": infer_s / len(item.paths)}
                for _ in item.paths:
                    while not slots.acquire(timeout=0.1):
                        collect(False)
                jobs = painter.start(pool, [(path, folders[path]) for path in item.paths], item.pixels, outputs, share)
                for path, job in zip(item.paths, jobs):
                    job.add_done_callback(lambda _: slots.release())
                    pending.append((path, job))
                collect(False)
                del outputs
            collect(True)
        except BaseException:
            stop.set()  # queued tasks of unfinished images give up, and those images remove their folders
            for path, job in pending:
                try:
                    result, _ = job.result()
                except BaseException:  # noqa: S110 - an abandoned image cleans up after itself
                    continue
                results.append(result)  # finished while the run stopped: complete, so listed
                run.images.append(_run_image(result))
            pending.clear()
            _finish_run(output, run, made_output and not results)
            raise
        finally:
            stop.set()
            reader.join(timeout=5)
    _finish_run(output, run, made_output and not results)
    return RenderResult(model, output, session.provider, session.fallback, results, failed,
                        [layer.name for layer in chosen], time.perf_counter() - started, timings)


def _run_image(result: ImageResult) -> store.RunImage:
    top = result.predictions[0] if result.predictions else None
    return store.RunImage(result.folder.name, result.image.name,
                          {"label": top["label"], "score": top["score"]} if top else None)


def _finish_run(output: Path, run: store.Run, remove: bool) -> None:
    """Write the run's index (run.json and the page), or remove OUT when this run made it and
    rendered nothing."""
    if remove:
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        return
    if not run.images:
        return
    try:
        report.write_run(output, run.to_dict())
    except OSError as exc:
        raise store.output_error(exc, output / "run.json") from exc


def _load_filters(model: Path):
    from .filters import load_filters

    return load_filters(model)


class _Painter:
    """Turns a batch's ONNX Runtime outputs into its images' folders; shared state of one render run."""

    def __init__(self, model: Path, session, chosen: list[LayerInfo], options: RenderOptions,
                 output: Path, filters_job: Future | None, stop: threading.Event) -> None:
        self.model, self.session, self.info = model, session, session.info
        self.chosen, self.options, self.output = chosen, options, output
        self.stop = stop
        self.index_of = {layer.name: i for i, layer in enumerate(self.info.layers)}
        self.width = store.index_width(len(self.info.layers))
        self.filters_job, self.filters, self.filters_png = filters_job, None, None
        self.atlas_layers: dict[str, int] | None = None  # layer name -> its index on the atlas page

    def start(self, pool: ThreadPoolExecutor, items: list[tuple[Path, str]], pixels: np.ndarray,
              outputs: dict[str, np.ndarray], share: dict[str, float]) -> list[Future]:
        """Queue everything of one batch on `pool`: each layer is a task drawing it for every image
        of the batch; the task that finishes the last layer queues one task per image that writes
        its folder and renames it into place. Returns a future per image of `items` ((path, folder
        name), in batch order), each giving (ImageResult, seconds per stage). The first call takes
        the first layer's filters, read meanwhile by `filters_job`."""
        if self.filters_job is not None:
            self.filters = self.filters_job.result()
            self.filters_png = store.encode_png(self.filters.image) if self.filters is not None else None
            self.filters_job = None
        batch = _PaintBatch(self, pool, items, pixels, outputs, share)
        if not self.chosen:
            batch.layers_done()
        for task in range(len(self.chosen)):
            pool.submit(batch.run, task)
        return [image.future for image in batch.images]


@dataclass
class _Drawn:
    """One layer of one image: its summary entry and, for a map layer, the PNG of its sprite
    (stored with its neighbours' by `_Image._report`) and its grid picture (`grids`)."""

    entry: store.Layer
    png: bytes | None = None
    grid: bytes | None = None


def draw_layer(layer: LayerInfo, index: int, maps: np.ndarray, opts: RenderOptions,
               clock: dict[str, float] | None = None) -> list[_Drawn]:
    """Layer `index` of every image of a batch (`maps`: `[N, C, H, W]`): each image's summary
    entry and, for a map layer, the PNG of its sprite and its grid picture. Vectorised over
    the batch, so per-layer work is paid once per batch, not once per image (RESULTS 20); each
    image gets exactly what it would get alone. `clock` gathers the seconds of "draw" and "encode"."""
    clock = clock if clock is not None else dict.fromkeys(STAGES, 0.0)
    # A few images at a time, so that the passes over their maps (statistics, then scaling) find
    # them in the CPU's cache: a whole batch of VGG16's first layers is 100 MB (RESULTS 20).
    group = max(1, GROUP_BYTES // max(1, maps[0].nbytes))
    return [drawn for start in range(0, maps.shape[0], group)
            for drawn in _draw_group(layer, index, maps[start:start + group], opts, clock)]


def _draw_group(layer: LayerInfo, index: int, maps: np.ndarray, opts: RenderOptions,
                clock: dict[str, float]) -> list[_Drawn]:
    t = time.perf_counter()
    count = maps.shape[0]
    c, h, w = (int(d) for d in layer.shape[1:])
    flat = maps.reshape(count, c, -1)
    size = flat.shape[2] * c
    # Per channel min and max (which give the layer's, the channels that are zero everywhere
    # and the stored channels' ranges), then OpenCV's count of non-zero values and its sum
    # (each about half numpy's time on these arrays, RESULTS 19.3).
    ch_lo, ch_hi = flat.min(axis=2), flat.max(axis=2)
    lo, hi = ch_lo.min(axis=1), ch_hi.max(axis=1)
    numbers = np.empty((count, 4))
    numbers[:, 0], numbers[:, 1] = lo, hi
    for n in range(count):
        numbers[n, 2] = cv2.sumElems(flat[n])[0] / size
        numbers[n, 3] = 1.0 - cv2.countNonZero(flat[n]) / size
    dead = np.count_nonzero((ch_lo == 0) & (ch_hi == 0), axis=1).tolist()
    stats = [store.Stats(*row, d) for row, d in zip(_split(store.rounded(numbers), 4), dead)]
    entries = [store.Layer(index, layer.name, layer.op, [c, h, w], "map", st, None, cls=layer.cls,
                           folded=list(layer.folded) or None) for st in stats]
    if h == w == 1:
        for entry, values in zip(entries, _split(store.rounded(flat[:, :, 0]), c)):
            entry.kind, entry.values = "vector", values
            entry.channel_stats = store.ChannelStats(values, values, values)
        clock["draw"] += time.perf_counter() - t
        return [_Drawn(entry) for entry in entries]
    if opts.sort == "index":  # the same channels for every image
        chosen = select_channels(maps[0], opts.max_channels, opts.channels, opts.sort)
        if np.array_equal(chosen, np.arange(chosen[0], chosen[0] + len(chosen))):
            picked = maps[:, chosen[0]:chosen[0] + len(chosen)]  # a run of channels: a view, not a copy
        else:
            picked = maps[:, chosen]
        chosen = np.broadcast_to(chosen, (count, len(chosen)))
    else:  # each image's most active channels
        means = flat.mean(axis=2)
        chosen = np.stack([select_channels(maps[n], opts.max_channels, opts.channels, opts.sort,
                                           scores=(means[n], ch_hi[n])) for n in range(count)])
        picked = np.take_along_axis(maps, chosen[:, :, None, None], axis=1)
    k = chosen.shape[1]
    ch_min, ch_max = np.take_along_axis(ch_lo, chosen, axis=1), np.take_along_axis(ch_hi, chosen, axis=1)
    low, high = sprite_ranges(ch_min, ch_max, opts.norm, layer_range=(lo, hi))
    columns = grid_columns(k)
    finite = np.isfinite(lo) & np.isfinite(hi)  # min and max carry any NaN or inf
    sprites = scaled_sprites(picked, low, high, columns, finite)
    channel_numbers = store.rounded(np.stack([ch_min, ch_max, picked.reshape(count, k, -1).mean(axis=2)], axis=1))
    ranges = store.rounded(np.stack([low, high], axis=1).astype(np.float32), store.EXACT_DIGITS)
    t2 = time.perf_counter()
    clock["draw"] += t2 - t
    drawn = []
    for n, (entry, numbers3, range2) in enumerate(zip(entries, _split(channel_numbers, 3 * k),
                                                      _split(ranges, 2 * k))):
        channels = chosen[n].tolist()
        entry.channel_stats = store.ChannelStats(numbers3[:k], numbers3[k:2 * k], numbers3[2 * k:])
        entry.channels, entry.tile, entry.columns = channels, [h, w], columns
        entry.low, entry.high = range2[:k], range2[k:]
        grid = None
        if opts.grids:
            picture = sprite_grid(sprites[n], (h, w), k, opts.colormap)
            grid = store.encode_jpeg(picture, opts.quality) if opts.fmt == "jpg" else store.encode_png(picture)
        drawn.append(_Drawn(entry, store.encode_png(sprites[n]), grid))
    clock["encode"] += time.perf_counter() - t2
    return drawn


def _split(values: list, size: int) -> list[list]:
    """A flat list in consecutive pieces of `size`."""
    return [values[i:i + size] for i in range(0, len(values), size)]


class _PaintBatch:
    """One batch being painted by several workers, one layer per task."""

    def __init__(self, painter: _Painter, pool: ThreadPoolExecutor, items: list[tuple[Path, str]],
                 pixels: np.ndarray, outputs: dict[str, np.ndarray], share: dict[str, float]) -> None:
        self.painter, self.pool, self.outputs = painter, pool, outputs
        self.images = [_Image(painter, path, folder, n, pixels, outputs, share)
                       for n, (path, folder) in enumerate(items)]
        self.clock = dict.fromkeys(STAGES, 0.0)
        self.left = len(painter.chosen)
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def run(self, task: int) -> None:
        """Draw layer `task` for every image, then, after the last layer, queue the images' folders."""
        clock = dict.fromkeys(STAGES, 0.0)
        error = None
        if self.error is None:
            try:
                if self.painter.stop.is_set():
                    raise _Stopped()
                layer = self.painter.chosen[task]
                drawn = draw_layer(layer, self.painter.index_of[layer.name], self.outputs[layer.name][:len(self.images)],
                                   self.painter.options, clock)
                for image, one in zip(self.images, drawn):
                    image.layers[task] = one
            except BaseException as exc:  # handed to `render` through the images' futures
                error = exc
        with self.lock:
            for key, value in clock.items():
                self.clock[key] += value
            if error is not None and self.error is None:
                self.error = error
            self.left -= 1
            last = self.left == 0
        if last:
            self.layers_done()

    def layers_done(self) -> None:
        self.outputs = None
        for image in self.images:
            for key, value in self.clock.items():
                image.clock[key] += value / len(self.images)
            try:
                self.pool.submit(image.finish, self.error)
            except RuntimeError:  # the pool is shutting down: finish here
                image.finish(self.error)


class _Image:
    """One image of a batch: its layers as they are drawn, then its folder, written into a hidden
    folder renamed into place, and the future that `render` waits on."""

    def __init__(self, painter: _Painter, path: Path, folder_name: str, n: int, pixels: np.ndarray,
                 outputs: dict[str, np.ndarray], share: dict[str, float]) -> None:
        self.painter, self.path, self.folder_name, self.n = painter, path, folder_name, n
        self.pixels, self.share = pixels, share
        self.predictions = outputs[painter.info.prediction_output][n] if painter.info.prediction_output in outputs else None
        self.final = painter.output / folder_name
        self.layers: list[_Drawn | None] = [None] * len(painter.chosen)
        self.clock = dict.fromkeys(STAGES, 0.0)
        self.future: Future = Future()

    def finish(self, error: BaseException | None) -> None:
        part = None
        try:
            if error is not None:
                raise error
            if self.painter.stop.is_set():
                raise _Stopped()
            part = Path(tempfile.mkdtemp(prefix=f".{self.folder_name}{PART}", dir=self.painter.output))
            writer = store.ImageWriter(part)
            self._input(writer)
            result = self._report(writer, part)
        except BaseException as exc:
            if part is not None:
                shutil.rmtree(part, ignore_errors=True)
            self.future.set_exception(store.output_error(exc, self.final) if isinstance(exc, OSError) else exc)
        else:
            self.future.set_result((result, self.clock))
        finally:
            self.pixels = self.layers = None

    def _input(self, writer: store.ImageWriter) -> None:
        painter, clock = self.painter, self.clock
        t = time.perf_counter()
        rgb = self.pixels[self.n].astype(np.uint8)
        input_png = store.encode_png(rgb[..., ::-1])  # RGB as OpenCV's BGR order, a view
        clock["encode"] += time.perf_counter() - t
        t = time.perf_counter()
        writer.write("input.png", input_png)
        if painter.filters is not None:
            filters = painter.filters
            writer.write("filters.png", painter.filters_png)
            self.filters_entry = store.FiltersEntry("filters.png", filters.layer, filters.weights_shape[0],
                                                    filters.kernel, filters.channel_order)
        else:
            self.filters_entry = None
        clock["write"] += time.perf_counter() - t

    def _report(self, writer: store.ImageWriter, part: Path) -> ImageResult:
        painter, path, final = self.painter, self.path, self.final
        opts, info = painter.options, painter.info
        layers = [drawn.entry for drawn in self.layers]
        clock = self.clock
        t = time.perf_counter()
        for drawn in self.layers:
            if drawn.grid is not None:
                entry = drawn.entry
                stem = store.layer_stem(entry.index, painter.width, entry.name)
                span = store.channel_span(entry.channels, entry.shape[0], opts.sort)
                entry.grid = writer.write(f"grids/{stem}_{span}.{opts.fmt}", drawn.grid)
        clock["write"] += time.perf_counter() - t
        t = time.perf_counter()
        chunks = store.chunk_maps([(d.entry, d.png) for d in self.layers if d.png is not None], painter.width)
        t2 = time.perf_counter()
        for chunk in chunks:
            writer.write(chunk.file, chunk.css)
        clock["encode"] += t2 - t
        clock["write"] += time.perf_counter() - t2
        preds = (top_predictions(self.predictions, info, opts.top_k)
                 if self.predictions is not None and opts.top_k > 0 else [])
        share = self.share
        summary = store.Summary(
            image=str(path), image_name=path.name, model=str(painter.model), source=info.source,
            onnxviz_version=__version__, provider=painter.session.provider,
            provider_fallback=painter.session.fallback,
            input=store.Input(info.height, info.width, opts.resize or info.resize or "stretch"),
            predictions=[{"index": p["index"], "label": p["label"], "score": p["score"]} for p in preds],
            filters=self.filters_entry,
            options={"max_channels": opts.max_channels, "channels": list(opts.channels) if opts.channels else None,
                     "sort": opts.sort, "norm": opts.norm, "colormap": opts.colormap},
            timings_ms={"read": share["read"] * 1000, "inference": share["infer"] * 1000,
                        "drawing": clock["draw"] * 1000, "encoding": clock["encode"] * 1000,
                        "writing": clock["write"] * 1000},
            layers=layers)
        if painter.atlas_layers is not None:
            page = Path(os.path.relpath(Path(opts.atlas) / "index.html", final)).as_posix()
            summary.atlas = {"page": page}
            for entry in layers:
                if entry.name in painter.atlas_layers:
                    entry.atlas = f"{page}#l={painter.atlas_layers[entry.name]}"
        t = time.perf_counter()
        report.write_report(part, summary.to_dict())
        _replace_folder(part, final)
        clock["write"] += time.perf_counter() - t
        report_files = [p for p in (final / name for name in _REPORT_FILES) if p.is_file()]
        files = len(writer.written) + len(report_files)
        size = writer.bytes + sum(p.stat().st_size for p in report_files)
        return ImageResult(path, final, summary.predictions, len(layers), files, size)


def _replace_folder(part: Path, final: Path) -> None:
    """Put the finished `part` folder at `final`, replacing an earlier render of the same image."""
    os.chmod(part, 0o777 & ~_umask())
    if final.exists() and not final.is_dir():
        raise OutputError(f"cannot write image folder '{final}': a file of that name is in the way; "
                          f"move it or choose another -o")
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}{PART}old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(part, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
