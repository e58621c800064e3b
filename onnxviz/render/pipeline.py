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
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from onnxviz.report import render_page as report
from onnxviz.render import store
from onnxviz.errors import ImageError, OptionError, OutputError
from onnxviz.files import clean_stages, ensure_dir, safe_name
from onnxviz.run.images import IMAGE_SUFFIXES, FoundImage, find_images, read_batch
from onnxviz.run.threads import one_blas_thread
from onnxviz.model.info import LayerInfo, ModelInfo, load_info
from onnxviz.model.labels import Prediction
from onnxviz.model.selection import select_layers
from onnxviz.render.options import RenderOptions, check_channels
from onnxviz.render.painting import ImageResult, Painter

LONG_RUN_FROM_IMAGES = 64

Progress = Callable[[int, int, str], None]


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
    timings: store.StageTimes  # seconds of work per stage; stages overlap, so they add up to more than `seconds`

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.images)

    def __repr__(self) -> str:
        first = ""
        if self.images:
            best = f" ({_top1(self.images[0])})" if self.images[0].predictions else ""
            first = f"; {self.images[0].folder / 'index.html'}{best}{', ...' if len(self.images) > 1 else ''}"
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return (f"<RenderResult: {len(self.images)} image(s){failed} into {self.output}/, {len(self.layers)} layers, "
                f"on {self.provider.upper()}, {self.seconds:.1f}s{first}>")

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td><code>{html.escape(str(i.folder / 'index.html'))}</code></td><td>{html.escape(i.image.name)}</td>"
            f"<td>{html.escape(_top1(i))}</td></tr>"
            for i in self.images[:10])
        more = f"<p>and {len(self.images) - 10} more in {html.escape(str(self.output))}/run.json</p>" if len(self.images) > 10 else ""
        failed = "".join(f"<p>could not render: {html.escape(w)}</p>" for w in self.failed[:5])
        return (f"<p>{len(self.images)} image(s) rendered into <code>{html.escape(str(self.output))}/</code> "
                f"({len(self.layers)} layers, on {self.provider.upper()}, {self.seconds:.1f}s); open the report "
                f"pages in a browser</p><table><tr><th>report</th><th>image</th><th>top-1</th></tr>{rows}</table>"
                f"{more}{failed}")


def _top1(image: ImageResult) -> str:
    top = image.predictions[0] if image.predictions else None
    return f"{top.label} {top.score * 100:.1f}%" if top else ""


def default_workers() -> int:
    """Threads that draw, encode and write: the physical cores, at most 4. Deep networks
    (ResNet101V2, InceptionV3) take longer to draw than to infer, so ONNX Runtime waits for
    the workers and they can use every core while it does."""
    from onnxviz.run.session import physical_cores

    return max(1, min(4, physical_cores()))


GROUP_SEPARATOR = "--"  # between the subfolders and the stem in an image folder's name: cats--cat


def _folder_names(images: list[FoundImage]) -> list[str]:
    """`<stem>`, with the image's subfolders in front (`cats--cat` for `cats/cat.jpg` found in a
    folder), so that two `cat.jpg` of two class folders get two folders; `<stem>_<suffix>` where
    two images of one folder share a stem."""
    def stem(image: FoundImage) -> str:
        return GROUP_SEPARATOR.join([*image.group.split("/"), image.path.stem] if image.group else [image.path.stem])

    stems: dict[str, int] = {}
    for image in images:
        stems[stem(image)] = stems.get(stem(image), 0) + 1
    names, used = [], set()
    for image in images:
        path = image.path
        name = GROUP_SEPARATOR.join(safe_name(part) for part in stem(image).split(GROUP_SEPARATOR))
        if stems[stem(image)] > 1:
            name = f"{name}_{safe_name(path.suffix.lstrip('.'))}"
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
            paths = images[start:start + options.batch_size]
            got = read_batch(paths, info.height, info.width, options.resize or info.resize or "stretch", stop=stop)
            if stop.is_set():
                return
            batch = _Batch([paths[k] for k in got.read], got.pixels.astype(np.float32) if got.read else None,
                           time.perf_counter() - t, [(paths[k], why) for k, why in got.failed])
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
    options = options or RenderOptions()
    options.check()
    started = time.perf_counter()
    plan = _plan(Path(model), list(inputs), Path(output), options)
    with one_blas_thread(), ThreadPoolExecutor(max_workers=plan.workers) as pool:
        loop = _Loop(plan, pool, progress)
        try:
            loop.open()
            loop.run()
        finally:
            loop.finish()
    return RenderResult(plan.model, plan.output, loop.session.provider, loop.session.fallback, loop.results,
                        loop.failed, [layer.name for layer in plan.chosen], time.perf_counter() - started,
                        loop.timings)


@dataclass
class _Plan:
    """What a run knows before it opens anything: its images, the file's metadata, the chosen
    layers and the run's index (`run.json`), which lists each image once it is rendered."""

    model: Path
    output: Path
    options: RenderOptions
    images: list[Path]
    folders: dict[Path, str]  # image -> the name of its folder in `output`
    groups: dict[Path, str]  # image -> its subfolder in the folder it was found in ("" at the top)
    failed: list[str]  # images that cannot be read at all (find_images)
    info: ModelInfo
    chosen: list[LayerInfo]
    outputs: list[str]  # asked of ONNX Runtime: the predictions when shown, and the chosen layers
    run: store.Run
    made_output: bool  # OUT did not exist: a run that renders nothing removes it
    workers: int
    earlier: list[store.RunImage]  # the images of the run already in OUT, which this one adds to


def _check_arguments(model: Path, inputs: list[Path], output: Path) -> None:
    """The mistakes of order a command line invites: images first, or a model file as the output."""
    models = (".onnx", ".h5", ".keras")
    if model.suffix.lower() in IMAGE_SUFFIXES and any(Path(p).suffix.lower() == ".onnx" for p in inputs):
        onnx_file = next(Path(p) for p in inputs if Path(p).suffix.lower() == ".onnx")
        raise OptionError(f"'{model}' is an image and '{onnx_file}' a model: give the model first, then the "
                          f"images ({{model}} then {{images}})", params=("model", "images"))
    if output.suffix.lower() in models + tuple(IMAGE_SUFFIXES) and not output.is_dir():
        raise OptionError(f"{{output}} '{output}' names a {output.suffix} file, but render writes a folder of "
                          f"reports; give a folder name (default onnxviz-out)", params=("output",))


def _model_id(path: Path) -> str:
    """Which model file this is: SHA-256 of its size and its first and last MiB (the graph, the
    metadata, and for a pair the data file's token), so a second render can tell its own model's
    run from another's without reading a large file whole."""
    import hashlib

    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), 2)
            digest.update(fh.read())
    return digest.hexdigest()[:32]


def _earlier_run(output: Path, run: store.Run, options: RenderOptions) -> list[store.RunImage]:
    """The images of the run already in `output`, when it was made by the same model file: this run
    adds to it (and `run` gets the union of both runs' layers: the compare view skips an image
    that lacks the layer shown). Another model's run is refused, unless `options.fresh` starts
    the run page afresh."""
    import json

    index = output / "run.json"
    if options.fresh or not index.is_file():
        return []
    again = "; render into another folder ({output}), or start its run page afresh with {fresh}"
    try:
        earlier = json.loads(index.read_text())
        images = [store.RunImage(i["folder"], i["image_name"], _prediction(i.get("top1")), i.get("group", ""))
                  for i in earlier["images"]]
        layers = [store.RunLayer(layer["index"], layer["name"], layer["shape"], layer["kind"])
                  for layer in earlier["layers"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"'{index}' cannot be read ({type(exc).__name__}){again}",
                          params=("output", "fresh")) from exc
    same_model = (earlier.get("model_id") == run.model_id if earlier.get("model_id")
                  else Path(earlier.get("model", "")).resolve() == Path(run.model).resolve())
    if not same_model:
        raise OptionError(f"'{output}' holds a run of another model file ('{earlier.get('model')}', "
                          f"{earlier.get('source', 'unknown source')}), which this render would drop from its run "
                          f"page{again}", params=("output", "fresh"))
    known = {layer.index for layer in run.layers}
    run.layers = sorted(run.layers + [layer for layer in layers if layer.index not in known], key=lambda l: l.index)
    return [image for image in images if (output / image.folder).is_dir()]


def _prediction(top1: dict | None) -> Prediction | None:
    """run.json's top-1 (label and score) as a Prediction; run.json keeps no class index (-1)."""
    return Prediction(top1["label"], top1["score"], -1) if top1 else None


def _plan(model: Path, inputs: list[Path], output: Path, options: RenderOptions) -> _Plan:
    _check_arguments(model, inputs, output)
    found, failed = find_images(inputs)
    if not found:
        raise ImageError(f"no images to render: {'; '.join(failed) if failed else 'none given'}")
    images = [image.path for image in found]
    info = load_info(model)
    chosen = select_layers(info, options.layers, str(model))
    check_channels(chosen, options)
    keep = [info.prediction_output] if info.prediction_output and options.top_k > 0 else []
    run = store.Run(str(model), info.source, [
        store.RunLayer(i, layer.name, list(layer.shape[1:]), "vector" if layer.shape[2] == layer.shape[3] == 1 else "map")
        for i, layer in ((info.layers.index(layer), layer) for layer in chosen)], model_id=_model_id(model))
    earlier = _earlier_run(output, run, options)
    return _Plan(model, output, options, images, dict(zip(images, _folder_names(found))),
                 {image.path: image.group for image in found}, failed, info, chosen,
                 keep + [layer.name for layer in chosen], run, not output.exists(), options.workers or default_workers(),
                 earlier)


class _Loop:
    """One run's three overlapping stages: the reader thread decodes batches, ONNX Runtime runs
    them here, the pool's workers paint them (`Painter`), at most one batch of images being
    painted at a time (back-pressure). `finish` ends every run, whatever happened: it stops the
    reader, keeps the images that were completed and writes the run's index."""

    def __init__(self, plan: _Plan, pool: ThreadPoolExecutor, progress: Progress | None) -> None:
        self.plan, self.pool, self.progress = plan, pool, progress
        self.stop = threading.Event()  # set: the reader and queued painting tasks give up
        self.batches: queue.Queue = queue.Queue(maxsize=2)
        self.reader: threading.Thread | None = None
        self.session = self.painter = None
        self.explain = None  # explain.pages.RenderExplainer: class activation maps and parts
        self.outputs: list[str] = []  # asked of ONNX Runtime for each batch
        self.slots = threading.BoundedSemaphore(plan.options.batch_size)  # images drawn at once: one batch's maps
        self.pending: deque[tuple[Path, Future]] = deque()
        self.results: list[ImageResult] = []
        self.failed = plan.failed
        self.timings = store.StageTimes()
        self.done = 0

    def open(self) -> None:
        """Start the reader, open the session and the output folder."""
        from onnxviz.run.session import open_session

        plan, options = self.plan, self.plan.options
        # The filters are read while ORT builds the session (which releases the GIL) and runs the
        # first batch ...
        filters_job = self.pool.submit(_load_filters, plan.model) if options.filters else None
        self.reader = threading.Thread(target=_read_batches, args=(plan.images, plan.info, options, self.batches,
                                                                   self.stop),
                                       name="onnxviz-reader", daemon=True)
        self.reader.start()  # and the first batch is decoded meanwhile
        # Repacked weights and layout transforms pay back only over many batches; ORT's threads do
        # not spin, leaving the CPU to the drawing threads (see runtime.session_options).
        long_run = len(plan.images) > LONG_RUN_FROM_IMAGES
        explain_job = None
        if options.cam or options.parts:  # its graphs are built while ORT builds the session (1.5 s for VGG16's)
            from onnxviz.explain.pages import ExplainOptions, RenderExplainer

            explain_job = self.pool.submit(RenderExplainer, plan.model, plan.info, options.provider, ExplainOptions(
                options.cam, options.cam_layer, options.parts, options.parts_layers), options.top_k, long_run=long_run)
        try:
            self.session = open_session(plan.model, options.provider, long_run=long_run, spinning=False)
        except BaseException:
            if explain_job is not None:
                explain_job.cancel()
            raise
        self.explain = explain_job.result() if explain_job is not None else None
        self.outputs = list(plan.outputs)
        if self.explain is not None:
            extra = self.explain.layers + ([self.explain.cam_layer] if self.explain.cam_layer else [])
            self.outputs += [n for n in dict.fromkeys(extra) if n not in self.outputs]
        output = ensure_dir(plan.output)
        clean_stages(output)
        self.painter = Painter(plan.model, self.session, plan.chosen, options, output, filters_job, self.stop)
        self.painter.explain = self.explain
        if options.atlas is not None:
            from onnxviz.report.atlas_page import read_atlas_layers

            self.painter.atlas_layers = read_atlas_layers(options.atlas)

    def run(self) -> None:
        """Infer batch after batch as the reader delivers them, handing each to the painters."""
        while True:
            item = self.batches.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            self.timings.read += item.read_s
            for path, warning in item.failed:
                self._skipped(path, warning)
            if item.pixels is None:
                continue
            t = time.perf_counter()
            outputs = self.session.run(item.pixels, self.outputs)
            cam = (self.explain.batch(item.pixels, outputs, [self.plan.folders[path] for path in item.paths])
                   if self.explain is not None else None)
            infer_s = time.perf_counter() - t
            self.timings.inference += infer_s
            share = store.StageTimes(read=item.read_s / len(item.paths), inference=infer_s / len(item.paths))
            for _ in item.paths:
                while not self.slots.acquire(timeout=0.1):
                    self._collect(block=False)
            jobs = self.painter.start(self.pool, [(path, self.plan.folders[path]) for path in item.paths],
                                      item.pixels, outputs, share, cam)
            for path, job in zip(item.paths, jobs):
                job.add_done_callback(lambda _: self.slots.release())
                self.pending.append((path, job))
            self._collect(block=False)
            del outputs
        if self.explain is not None:  # the run's joint parts, while the last images are drawn
            self.explain.prepare_run()
        self._collect(block=True)

    def _collect(self, block: bool) -> None:
        """Take the painted images in order: all of them, or (not `block`) those done already."""
        while self.pending and (block or self.pending[0][1].done()):
            path, job = self.pending.popleft()
            try:
                result, stage_s = job.result()
            except ImageError as exc:
                self._skipped(path, str(exc))
                continue
            self.timings.add(stage_s)
            self._completed(result)
            if self.progress:
                self.progress(self.done, len(self.plan.images), path.name)

    def _skipped(self, path: Path, warning: str) -> None:
        self.failed.append(warning)
        self.done += 1
        if self.progress:
            self.progress(self.done, len(self.plan.images), f"skipped {path.name}")

    def _completed(self, result: ImageResult) -> None:
        self.results.append(result)
        self.plan.run.images.append(_run_image(result, self.plan.groups.get(result.image, "")))
        self.done += 1

    def finish(self) -> None:
        """After the loop, or instead of it when something failed: queued tasks of unfinished
        images give up (and those images remove their folders), images that finished meanwhile
        are complete and listed, and the run's index is written."""
        self.stop.set()
        for _, job in self.pending:
            try:
                result, _ = job.result()
            except BaseException:  # noqa: S110 - an abandoned image cleans up after itself
                continue
            self._completed(result)
        self.pending.clear()
        if self.reader is not None:
            self.reader.join(timeout=5)
        run = _with_earlier(self.plan.run, self.plan.earlier)
        if self.explain is not None and self.plan.run.images:  # the parts over this render's images
            run.explain = _explain_run(self.explain, self.plan, self.pool.map)
        _finish_run(self.plan.output, run, self.plan.made_output and not self.results)


def _with_earlier(run: store.Run, earlier: list[store.RunImage]) -> store.Run:
    """`run` with the images of the earlier run in OUT first; an image rendered again takes its
    own entry's place."""
    if not earlier:
        return run
    new = {image.folder: image for image in run.images}
    merged = [new.pop(image.folder, image) for image in earlier]
    return store.Run(run.model, run.source, run.layers, merged + list(new.values()), run.format, run.model_id)


def _run_image(result: ImageResult, group: str = "") -> store.RunImage:
    return store.RunImage(result.folder.name, result.image.name, result.predictions[0] if result.predictions else None,
                          group)


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


def _explain_run(explain, plan: _Plan, map_) -> dict | None:
    """The parts of one layer factorized over the run's images: each image's picture in its folder's
    explain/joint.jpg (drawn through `map_`, the pool's), their legend in run.json."""
    from onnxviz.files import write_bytes

    def write(name: str, data: bytes) -> str:
        write_bytes(ensure_dir((plan.output / name).parent) / Path(name).name, data)
        return name

    index = {layer.name: i for i, layer in enumerate(plan.info.layers)}
    return explain.run(write, [image.folder for image in plan.run.images], index, map_)


def _load_filters(model: Path):
    from onnxviz.render.filters import load_filters

    return load_filters(model)
