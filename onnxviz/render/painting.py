"""Painting a batch: what `render`'s worker threads do with ONNX Runtime's outputs.

Per layer, one task draws it for every image of the batch (statistics, channel selection and the
8-bit sprite from `reduce`, then the sprite's PNG and the grid picture when asked for); after the
batch's last layer, one task per image stores its maps in `maps/*.css`, writes `input.png`, the
summary and the page into a hidden `.NAME.part-*` folder and renames it into place (`files.staged`).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from onnxviz import __version__
from onnxviz.files import staged
from onnxviz.picture import encoding
from onnxviz.report import render_page as report
from onnxviz.render import store
from onnxviz.model.labels import Prediction, top_predictions
from onnxviz.model.info import LayerInfo
from onnxviz.picture.drawing import enlarged
from onnxviz.picture.tiling import sprite_grid
from onnxviz.render.options import RenderOptions
from onnxviz.render.reduce import reduce_layer

GROUP_BYTES = 8 << 20  # draw_layer: maps of this many bytes at a time
_REPORT_FILES = ("summary.json", "summary.js", "index.html")


@dataclass
class ImageResult:
    image: Path
    folder: Path
    predictions: list[Prediction]
    layers: int
    files: int
    bytes: int


class _Stopped(Exception):
    """The run was interrupted: an image in progress is abandoned."""


class Painter:
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
        self.explain = None  # explain.pages.RenderExplainer, when the run shows where the network looks

    def start(self, pool: ThreadPoolExecutor, items: list[tuple[Path, str]], pixels: np.ndarray,
              outputs: dict[str, np.ndarray], share: store.StageTimes, cam=None) -> list[Future]:
        """Queue everything of one batch on `pool`: each layer is a task drawing it for every image
        of the batch; the task that finishes the last layer queues one task per image that writes
        its folder and renames it into place. Returns a future per image of `items` ((path, folder
        name), in batch order), each giving (ImageResult, its drawing, encoding and writing times);
        `share`: each image's part of the batch's reading and inference. The first call takes
        the first layer's filters, read meanwhile by `filters_job`. `cam`: the batch's explanations
        (`explain.pages.ExplainBatch`: class activation maps and parts), when the run shows them."""
        if self.filters_job is not None:
            self.filters = self.filters_job.result()
            self.filters_png = encoding.encode_png(self.filters.image) if self.filters is not None else None
            self.filters_job = None
        batch = _PaintBatch(self, pool, items, pixels, outputs, share, cam)
        if cam is not None:  # made while the layers are drawn, before the images' pages need it
            pool.submit(cam.prepare)
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
               clock: store.StageTimes | None = None) -> list[_Drawn]:
    """Layer `index` of every image of a batch (`maps`: `[N, C, H, W]`): each image's summary
    entry and, for a map layer, the PNG of its sprite and its grid picture. Vectorised over
    the batch, so per-layer work is paid once per batch, not once per image (RESULTS 20); each
    image gets exactly what it would get alone. `clock` gathers the seconds of drawing and encoding."""
    clock = clock if clock is not None else store.StageTimes()
    # A few images at a time, so that the passes over their maps (statistics, then scaling) find
    # them in the CPU's cache: a whole batch of VGG16's first layers is 100 MB (RESULTS 20).
    group = max(1, GROUP_BYTES // max(1, maps[0].nbytes))
    return [drawn for start in range(0, maps.shape[0], group)
            for drawn in _draw_group(layer, index, maps[start:start + group], opts, clock)]


def _draw_group(layer: LayerInfo, index: int, maps: np.ndarray, opts: RenderOptions,
                clock: store.StageTimes) -> list[_Drawn]:
    t = time.perf_counter()
    c, h, w = (int(d) for d in layer.shape[1:])
    reduced = reduce_layer(maps, opts)
    stats = [store.Stats(*row, d) for row, d in zip(_split(store.rounded(reduced.stats), 4), reduced.dead)]
    entries = [store.Layer(index, layer.name, layer.op, [c, h, w], "map", st, None, cls=layer.cls,
                           folded=list(layer.folded) or None) for st in stats]
    if reduced.values is not None:
        for entry, values in zip(entries, _split(store.rounded(reduced.values), c)):
            entry.kind, entry.values = "vector", values
            entry.channel_stats = store.ChannelStats(values, values, values)
        clock.drawing += time.perf_counter() - t
        return [_Drawn(entry) for entry in entries]
    k, columns = reduced.channels.shape[1], reduced.columns
    channel_numbers = store.rounded(np.stack([reduced.ch_min, reduced.ch_max, reduced.ch_mean], axis=1))
    ranges = store.rounded(np.stack([reduced.low, reduced.high], axis=1).astype(np.float32), store.EXACT_DIGITS)
    t2 = time.perf_counter()
    clock.drawing += t2 - t
    drawn = []
    for n, (entry, numbers3, range2) in enumerate(zip(entries, _split(channel_numbers, 3 * k),
                                                      _split(ranges, 2 * k))):
        channels = reduced.channels[n].tolist()
        entry.channel_stats = store.ChannelStats(numbers3[:k], numbers3[k:2 * k], numbers3[2 * k:])
        entry.channels, entry.tile, entry.columns = channels, [h, w], columns
        entry.low, entry.high = range2[:k], range2[k:]
        grid = None
        if opts.grids:
            picture = enlarged(sprite_grid(reduced.sprites[n], (h, w), k, opts.colormap))
            grid = encoding.encode_jpeg(picture, opts.quality) if opts.fmt == "jpg" else encoding.encode_png(picture)
        drawn.append(_Drawn(entry, encoding.encode_png(reduced.sprites[n]), grid))
    clock.encoding += time.perf_counter() - t2
    return drawn


def _split(values: list, size: int) -> list[list]:
    """A flat list in consecutive pieces of `size`."""
    return [values[i:i + size] for i in range(0, len(values), size)]


class _PaintBatch:
    """One batch being painted by several workers, one layer per task."""

    def __init__(self, painter: Painter, pool: ThreadPoolExecutor, items: list[tuple[Path, str]],
                 pixels: np.ndarray, outputs: dict[str, np.ndarray], share: store.StageTimes, cam=None) -> None:
        self.painter, self.pool, self.outputs = painter, pool, outputs
        self.images = [_Image(painter, path, folder, n, pixels, outputs, share, cam)
                       for n, (path, folder) in enumerate(items)]
        self.clock = store.StageTimes()
        self.left = len(painter.chosen)
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def run(self, task: int) -> None:
        """Draw layer `task` for every image, then, after the last layer, queue the images' folders."""
        clock = store.StageTimes()
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
            self.clock.add(clock)
            if error is not None and self.error is None:
                self.error = error
            self.left -= 1
            last = self.left == 0
        if last:
            self.layers_done()

    def layers_done(self) -> None:
        self.outputs = None
        for image in self.images:
            image.clock.add(self.clock, 1 / len(self.images))
            try:
                self.pool.submit(image.finish, self.error)
            except RuntimeError:  # the pool is shutting down: finish here
                image.finish(self.error)


class _Image:
    """One image of a batch: its layers as they are drawn, then its folder, written into a hidden
    folder renamed into place, and the future that `render` waits on."""

    def __init__(self, painter: Painter, path: Path, folder_name: str, n: int, pixels: np.ndarray,
                 outputs: dict[str, np.ndarray], share: store.StageTimes, cam=None) -> None:
        self.painter, self.path, self.folder_name, self.n = painter, path, folder_name, n
        self.pixels, self.share = pixels, share
        self.predictions = outputs[painter.info.prediction_output][n] if painter.info.prediction_output in outputs else None
        self.cam = cam  # explain.pages.ExplainBatch
        self.final = painter.output / folder_name
        self.layers: list[_Drawn | None] = [None] * len(painter.chosen)
        self.clock = store.StageTimes()
        self.future: Future = Future()

    def finish(self, error: BaseException | None) -> None:
        try:
            if error is not None:
                raise error
            if self.painter.stop.is_set():
                raise _Stopped()
            with staged(self.final, folder=True) as part:
                writer = store.ImageWriter(part)
                self._input(writer)
                predictions = self._report(writer, part)
                t = time.perf_counter()
            self.clock.writing += time.perf_counter() - t  # the rename into place
            report_files = [p for p in (self.final / name for name in _REPORT_FILES) if p.is_file()]
            result = ImageResult(self.path, self.final, predictions, len(self.layers),
                                 len(writer.written) + len(report_files),
                                 writer.bytes + sum(p.stat().st_size for p in report_files))
        except BaseException as exc:
            self.future.set_exception(store.output_error(exc, self.final) if isinstance(exc, OSError) else exc)
        else:
            self.future.set_result((result, self.clock))
        finally:
            self.pixels = self.layers = self.cam = None

    def _input(self, writer: store.ImageWriter) -> None:
        painter, clock = self.painter, self.clock
        t = time.perf_counter()
        rgb = self.pixels[self.n].astype(np.uint8)
        input_png = encoding.encode_png(rgb[..., ::-1])  # RGB as OpenCV's BGR order, a view
        clock.encoding += time.perf_counter() - t
        t = time.perf_counter()
        writer.write("input.png", input_png)
        if painter.filters is not None:
            filters = painter.filters
            writer.write("filters.png", painter.filters_png)
            self.filters_entry = store.FiltersEntry("filters.png", filters.layer, filters.weights_shape[0],
                                                    filters.kernel, filters.channel_order)
        else:
            self.filters_entry = None
        clock.writing += time.perf_counter() - t

    def _explain(self, writer: store.ImageWriter, final: Path) -> dict:
        """Where the network looks (explain.pages): its pictures in explain/ and the summary's entry."""
        painter = self.painter
        t = time.perf_counter()
        atlas = None
        if painter.atlas_layers is not None:
            page = Path(os.path.relpath(Path(painter.options.atlas) / "index.html", final)).as_posix()
            atlas = lambda name, c: (f"{page}#l={painter.atlas_layers[name]}&c={c}"  # noqa: E731
                                     if name in painter.atlas_layers else None)
        entry = painter.explain.image(writer.write, self.pixels[self.n].astype(np.uint8), self.cam, self.n,
                                      painter.index_of, self.folder_name, atlas)
        self.clock.drawing += time.perf_counter() - t
        return entry

    def _report(self, writer: store.ImageWriter, part: Path) -> list[Prediction]:
        """Store the maps and grids, then the summary and the page; the predictions."""
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
        clock.writing += time.perf_counter() - t
        t = time.perf_counter()
        chunks = store.chunk_maps([(d.entry, d.png) for d in self.layers if d.png is not None], painter.width)
        t2 = time.perf_counter()
        for chunk in chunks:
            writer.write(chunk.file, chunk.css)
        clock.encoding += t2 - t
        clock.writing += time.perf_counter() - t2
        explained = self._explain(writer, final) if painter.explain is not None else None
        preds = (top_predictions(self.predictions, opts.top_k, info.labels, info.prediction_is_probability)
                 if self.predictions is not None and opts.top_k > 0 else [])
        share = self.share
        summary = store.Summary(
            image=str(path), image_name=path.name, model=str(painter.model), source=info.source,
            onnxviz_version=__version__, provider=painter.session.provider,
            provider_fallback=painter.session.fallback,
            input=store.Input(info.height, info.width, opts.resize or info.resize or "stretch"),
            predictions=preds,
            filters=self.filters_entry,
            options={"max_channels": opts.max_channels, "channels": list(opts.channels) if opts.channels else None,
                     "sort": opts.sort, "norm": opts.norm, "colormap": opts.colormap},
            timings=store.StageTimes(share.read, share.inference, clock.drawing, clock.encoding, clock.writing),
            layers=layers, explain=explained)
        if painter.atlas_layers is not None:
            page = Path(os.path.relpath(Path(opts.atlas) / "index.html", final)).as_posix()
            summary.atlas = {"page": page}
            for entry in layers:
                if entry.name in painter.atlas_layers:
                    entry.atlas = f"{page}#l={painter.atlas_layers[entry.name]}"
        t = time.perf_counter()
        report.write_report(part, summary.to_dict())
        clock.writing += time.perf_counter() - t
        return preds
