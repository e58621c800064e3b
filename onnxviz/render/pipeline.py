"""`onnxviz render`: images through an onnxviz file, one folder of maps and a report each.

The folder layout is `store`'s (format 5): per layer the shown channels at native
resolution, 8-bit, as a PNG inside a stylesheet `maps/NNN-MMM.css` shared with neighbouring
layers (the page shows it, with or without JavaScript), plus `input.png`, `filters.png`,
`summary.json` and the report; `OUT/run.json` lists the images.

Three stages overlap, with memory bounded: a reader thread decodes and resizes the next
batch; ONNX Runtime runs the current one; worker threads paint the previous batch (`painting`):
one task per layer for the whole batch (so that even a single image's layers are drawn on every
core), then one task per image that writes its maps and report. Doing the reductions inside
the ONNX graph instead was measured slower on CPU (benchmarks/RESULTS.md).
Each image is written into a hidden `.NAME.part-*` folder that is renamed into place once
its report is written: an interrupted or failed render leaves no half-made image folder.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from onnxviz.report import render_page as report
from onnxviz.render import store
from onnxviz.errors import ImageError, LayerSelectionError, OptionError
from onnxviz.files import ensure_dir, safe_name
from onnxviz.run.images import check_resize, collect_images, load_image, resize_image
from onnxviz.model.info import LayerInfo, ModelInfo, load_info
from onnxviz.model.selection import select_layers
from onnxviz.render.painting import STAGES, ImageResult, Painter
from onnxviz.picture.tiling import COLORMAPS, NORMS, SORTS

FORMATS = ("jpg", "png")
LONG_RUN_FROM_IMAGES = 64

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
    from onnxviz.run.session import physical_cores

    return max(1, min(4, physical_cores()))


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


def render(model: Path, inputs: list[Path], output: Path, options: RenderOptions | None = None,
           progress: Progress | None = None) -> RenderResult:
    """Render every image of `inputs` (files or folders) through `model` into `output`."""
    from onnxviz.run.session import open_session

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
            store.clean_parts(output)
            painter = Painter(model, session, chosen, options, output, filters_job, stop)
            if options.atlas is not None:
                from onnxviz.report.atlas_page import read_atlas_layers

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
    from onnxviz.render.filters import load_filters

    return load_filters(model)
