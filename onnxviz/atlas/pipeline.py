"""`onnxviz atlas`: for every channel of the chosen layers, the N images of a dataset that excite it most.

One pass streams the images through the onnxviz file extended with per-channel reductions
(`graph.add_channel_reductions`): only a score and a position per channel leave ONNX
Runtime, and a `TopN` per layer keeps the best N per channel in fixed memory. Ties go to
the image that comes first in the dataset (its `id`). A second pass re-reads only the
winning images and cuts each winner's receptive field (`receptive.receptive_fields`) into
sprite sheets; `atlas_page` writes the table and the page.

State lives in `OUT/atlas-state.npz` (written atomically every few thousand images and
when a run is interrupted): a run on a folder that has one resumes it and adds new images
to it, so that the result is the same as one run over every image in that order.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from onnxviz import __version__
from onnxviz.errors import ImageError, LayerSelectionError, OnnxvizError, OutputError
from onnxviz.files import atomic_path, ensure_dir
from onnxviz.run.images import RESIZE_MODES, collect_images, load_image, resize_image
from onnxviz.model.info import LayerInfo, ModelInfo, read_info
from onnxviz.model.receptive import Field

SCORES = ("max", "mean")
ENGINES = ("local", "ray")
STATE_FILE = "atlas-state.npz"
EMPTY = np.iinfo(np.int64).max  # the id of an empty slot: after every real image
PADDING_OPS = frozenset({"ZeroPadding2D", "Pad"})
LIGHT_TENSOR_BYTES = 64 << 10  # make_plan rewrites the graph with larger initializers left hollow

Progress = Callable[[int, int, str], None]


@dataclass
class AtlasOptions:
    layers: list[str] = field(default_factory=list)
    top: int = 9
    score: str = "max"
    batch_size: int = 8
    provider: str = "auto"
    resize: str = "stretch"
    engine: str = "local"
    overlay: bool = False
    checkpoint_every: int = 2000
    tile: int = 64
    # --engine ray
    ray_address: str | None = None
    workers: int = 2
    worker_cpus: float | None = None
    worker_gpus: float = 0.0
    threads: int | None = None

    def check(self) -> None:
        """Reject bad options before any work starts (messages name the CLI flags)."""
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1:
            raise OnnxvizError(f"--top must be at least 1 (the number of images kept per channel), got {self.top}")
        if self.score not in SCORES:
            raise OnnxvizError(f"--score '{self.score}' is not valid; choose one of {', '.join(SCORES)}")
        if self.engine not in ENGINES:
            raise OnnxvizError(f"--engine '{self.engine}' is not valid; choose one of {', '.join(ENGINES)}")
        if self.resize not in RESIZE_MODES:
            raise OnnxvizError(f"--resize '{self.resize}' is not valid; choose one of {', '.join(RESIZE_MODES)}")
        if self.batch_size < 1:
            raise OnnxvizError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.checkpoint_every < 1:
            raise OnnxvizError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")
        if self.workers < 1:
            raise OnnxvizError(f"--workers must be at least 1, got {self.workers}")
        if self.engine == "ray" and self.provider == "cuda" and not self.worker_gpus:
            raise OnnxvizError("--provider cuda with --engine ray needs a GPU per actor: add --worker-gpus 1")
        if not 8 <= self.tile <= 512:
            raise OnnxvizError(f"--tile must be 8..512 pixels, got {self.tile}")


# ---------------------------------------------------------------- top N per channel

class TopN:
    """The best `n` (score, image id, position) of each of `channels` channels, in fixed memory.

    Order: higher score first; equal scores by smaller image id. NaN scores count as -inf.
    """

    def __init__(self, channels: int, n: int) -> None:
        self.scores = np.full((channels, n), -np.inf, np.float32)
        self.ids = np.full((channels, n), EMPTY, np.int64)
        self.positions = np.zeros((channels, n), np.int64)

    @property
    def n(self) -> int:
        return self.scores.shape[1]

    @property
    def channels(self) -> int:
        return self.scores.shape[0]

    def _keep(self, scores: np.ndarray, ids: np.ndarray, positions: np.ndarray, rows: np.ndarray | None = None) -> None:
        """The best n of each row of these candidates; `rows`: which channels they are (default all)."""
        scores = np.where(np.isnan(scores), -np.inf, scores).astype(np.float32, copy=False)
        order = np.lexsort((ids, -scores), axis=1)[:, : self.n]
        best = [np.take_along_axis(a, order, 1) for a in (scores, ids, positions)]
        if rows is None:
            self.scores, self.ids, self.positions = best
        else:
            self.scores[rows], self.ids[rows], self.positions[rows] = best

    def update(self, scores: np.ndarray, positions: np.ndarray, ids: np.ndarray) -> None:
        """Add a batch: `scores` and `positions` `[B, channels]`, `ids` `[B]`."""
        scores, positions = np.asarray(scores), np.asarray(positions)
        ids = np.asarray(ids, np.int64)
        if scores.shape != (len(ids), self.channels) or positions.shape != scores.shape:
            raise ValueError(f"expected [{len(ids)}, {self.channels}] scores and positions, got "
                             f"{scores.shape} and {positions.shape}")
        scores = np.where(np.isnan(scores), -np.inf, scores).astype(np.float32, copy=False).T  # [channels, B]
        # Only channels where some new entry beats the N-th kept one need sorting: late in a scan, few.
        worst_s, worst_i = self.scores[:, -1:], self.ids[:, -1:]
        enters = (scores > worst_s) | ((scores == worst_s) & (ids[None, :] < worst_i))
        rows = np.flatnonzero(enters.any(1))
        if rows.size == 0:
            return
        s, i, p = self.scores[rows], self.ids[rows], self.positions[rows]
        self._keep(np.concatenate([s, scores[rows]], 1),
                   np.concatenate([i, np.broadcast_to(ids, (len(rows), len(ids)))], 1),
                   np.concatenate([p, positions.T[rows].astype(np.int64)], 1), rows)

    def offer(self, channels: np.ndarray, scores: np.ndarray, ids: np.ndarray, positions: np.ndarray) -> None:
        """Add sparse candidates: entry k is (channel, score, image id, position)."""
        channels = np.asarray(channels, np.int64)
        if channels.size == 0:
            return
        order = np.argsort(channels, kind="stable")
        ch = channels[order]
        counts = np.bincount(ch, minlength=self.channels)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        col = np.arange(len(ch)) - starts[ch]
        shape = (self.channels, int(counts.max()))
        s = np.full(shape, -np.inf, np.float32)
        i = np.full(shape, EMPTY, np.int64)
        p = np.zeros(shape, np.int64)
        s[ch, col] = np.asarray(scores)[order]
        i[ch, col] = np.asarray(ids)[order]
        p[ch, col] = np.asarray(positions)[order]
        self._keep(np.concatenate([self.scores, s], 1), np.concatenate([self.ids, i], 1),
                   np.concatenate([self.positions, p], 1))

    def merge(self, other: "TopN") -> None:
        """Merge another TopN over other images: exactly the TopN of both image sets."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {other.channels} channels into {self.channels}")
        self._keep(np.concatenate([self.scores, other.scores], 1), np.concatenate([self.ids, other.ids], 1),
                   np.concatenate([self.positions, other.positions], 1))


# ---------------------------------------------------------------- layers and the reduced model

def default_layers(info: ModelInfo) -> list[LayerInfo]:
    """At each spatial resolution, the last of its widest maps (padding left out): one layer per stage,
    where the stage's representation is richest. VGG16: block1_conv2, block2_conv2, block3_conv3,
    block4_conv3, block5_conv3, block5_pool; ResNet50: conv1_relu and each stage's last block output;
    ResNet101V2 (whose stages shrink inside their last block): conv1_conv and each stage's last
    `preact_relu`, then post_relu."""
    best: dict[tuple, LayerInfo] = {}
    for layer in info.feature_maps:
        if layer.op in PADDING_OPS:
            continue
        key = tuple(layer.shape[2:])
        if key not in best or int(layer.shape[1]) >= int(best[key].shape[1]):
            best[key] = layer
    chosen = {layer.name for layer in best.values()}
    return [layer for layer in info.feature_maps if layer.name in chosen]


def choose_layers(info: ModelInfo, patterns: list[str], where: str) -> list[LayerInfo]:
    maps = info.feature_maps
    if not maps:
        raise LayerSelectionError(f"'{where}' has no 4-D feature maps, so there are no channels to collect; "
                                  f"export it again with feature maps exposed (see 'onnxviz export --help')")
    if not patterns:
        return default_layers(info)
    from onnxviz.model.selection import select_layers

    return select_layers(info, patterns, where)


@dataclass
class Plan:
    """What both engines need: the layers, their receptive fields and the reduced model."""

    model: Path
    info: ModelInfo
    layers: list[LayerInfo]
    fields: dict[str, Field]
    reduced: bytes = field(repr=False)  # the onnxviz file with per-channel score and position outputs
    fingerprint: dict


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_plan(model: Path, options: AtlasOptions) -> Plan:
    """Read the model, choose the layers, add the reductions and compute the receptive fields.

    The graph is rewritten without its large weights (`protoscan.split`: VGG16's 553 MB are
    never parsed or copied); the reduced model's bytes take the weights it still uses straight
    from the file (`protoscan.join`), while the file's SHA-256 is computed in a second thread.
    """
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    from onnxviz.files import existing_file
    from onnxviz.model.graph import add_channel_reductions
    from onnxviz.model.modelfile import check_model_file, unreadable
    from onnxviz.model.protoscan import join, split
    from onnxviz.model.receptive import receptive_fields

    model = existing_file(Path(model), "model file")
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(_sha256, model)
        try:
            light, spans = split(model, LIGHT_TENSOR_BYTES)
        except Exception as exc:  # DecodeError, a truncated or foreign file
            raise unreadable(model, type(exc).__name__) from exc
        check_model_file(model)  # names a missing or truncated weights file
        info = read_info(light, str(model))
        layers = choose_layers(info, options.layers, str(model))
        names = [layer.name for layer in layers]
        reduced = add_channel_reductions(light, names, options.score)
        del light
        for tensor in reduced.graph.initializer:  # weights in external files: into the bytes ORT gets
            if uses_external_data(tensor):
                load_external_data_for_tensor(tensor, str(model.parent))
                tensor.data_location = TensorProto.DEFAULT
                del tensor.external_data[:]
                spans.pop(tensor.name, None)  # loaded: join must not put the file's reference back
        fields = receptive_fields(reduced, names)
        data = join(reduced, model, spans)
        fingerprint = {"model_sha256": digest.result(), "layers": names, "top": options.top,
                       "score": options.score, "resize": options.resize}
    return Plan(model, info, layers, fields, data, fingerprint)


def open_reduced(reduced: bytes, provider: str, threads: int | None = None,
                 name: str = "the atlas's reduced model"):
    """An ORT session (runtime.open_session) on the reduced model held in memory; `name` names it
    in messages."""
    from onnxviz.run.session import open_session

    return open_session(Path(name), provider, threads=threads, model_bytes=reduced)


# ---------------------------------------------------------------- state, checkpoints

@dataclass
class AtlasState:
    """Everything a run has learnt so far; `images[i]` has id i."""

    fingerprint: dict
    images: list[str]
    done: np.ndarray  # uint8 per image: 1 once it went through the network (or failed)
    failed: dict[int, str]  # id -> why it could not be read
    tops: list[TopN]

    @classmethod
    def new(cls, plan: Plan, top: int) -> "AtlasState":
        return cls(plan.fingerprint, [], np.zeros(0, np.uint8), {},
                   [TopN(int(layer.shape[1]), top) for layer in plan.layers])

    def add_images(self, paths: list[str]) -> list[tuple[int, str]]:
        """Give new paths the next ids; return (id, path) of every image not done yet."""
        known = set(self.images)
        fresh = [p for p in dict.fromkeys(paths) if p not in known]
        self.images.extend(fresh)
        self.done = np.concatenate([self.done, np.zeros(len(fresh), np.uint8)])
        return [(i, self.images[i]) for i in np.flatnonzero(self.done == 0)]

    def save(self, folder: Path) -> Path:
        meta = {"format": 1, "onnxviz_version": __version__, "fingerprint": self.fingerprint,
                "images": self.images, "failed": {str(k): v for k, v in self.failed.items()}}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), "done": self.done}
        for i, t in enumerate(self.tops):
            arrays.update({f"scores{i}": t.scores, f"ids{i}": t.ids, f"positions{i}": t.positions})
        with atomic_path(Path(folder) / STATE_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return Path(folder) / STATE_FILE

    @classmethod
    def load(cls, path: Path) -> "AtlasState":
        try:
            with np.load(path) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                count = len(meta["fingerprint"]["layers"])
                tops = []
                for i in range(count):
                    t = TopN(1, 1)
                    t.scores, t.ids, t.positions = data[f"scores{i}"], data[f"ids{i}"], data[f"positions{i}"]
                    tops.append(t)
                return cls(meta["fingerprint"], list(meta["images"]), data["done"].astype(np.uint8),
                           {int(k): v for k, v in meta["failed"].items()}, tops)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise OutputError(f"'{path}' is damaged ({type(exc).__name__}: {exc}); delete it to start the atlas "
                              f"again, or choose another -o") from exc


def _describe(fp: dict) -> dict[str, str]:
    return {"model": f"model sha256 {fp['model_sha256'][:12]}", "layers": f"layers {','.join(fp['layers'])}",
            "top": f"--top {fp['top']}", "score": f"--score {fp['score']}", "resize": f"--resize {fp['resize']}"}


def resume_state(output: Path, plan: Plan, options: AtlasOptions) -> tuple[AtlasState, bool]:
    """The state in `output` (refused when made with another model or options), or a new one."""
    path = output / STATE_FILE
    if not path.exists():
        return AtlasState.new(plan, options.top), False
    state = AtlasState.load(path)
    old, new = state.fingerprint, plan.fingerprint
    keys = {"model_sha256": "model", "layers": "layers", "top": "top", "score": "score", "resize": "resize"}
    differ = [k for k in keys if old.get(k) != new.get(k)]
    if differ:
        was, now = _describe(old), _describe(new)
        what = "; ".join(f"it has {was[keys[k]]}, this run {now[keys[k]]}" for k in differ)
        raise OutputError(f"'{output}' holds an atlas made with another model or options ({what}); "
                          f"run with the same model and options to resume or add images, or choose another -o")
    return state, True


# ---------------------------------------------------------------- the local engine

def read_pixels(path: str, height: int, width: int, resize: str) -> np.ndarray:
    return resize_image(load_image(Path(path)), height, width, resize)


def _read_batch(batch: list[tuple[int, str]], height: int, width: int, resize: str):
    ids, pixels, failed = [], [], []
    for image_id, path in batch:
        try:
            pixels.append(read_pixels(path, height, width, resize))
            ids.append(image_id)
        except ImageError as exc:
            failed.append((image_id, str(exc)))
    return ids, pixels, failed


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def update_tops(state: AtlasState, plan: Plan, outputs: dict[str, np.ndarray], ids: np.ndarray) -> None:
    from onnxviz.model.graph import reduction_names

    for layer, top in zip(plan.layers, state.tops):
        score_name, position_name = reduction_names(layer.name)
        top.update(outputs[score_name], outputs[position_name], ids)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_local(plan: Plan, state: AtlasState, todo: list[tuple[int, str]], options: AtlasOptions,
              checkpoint: Callable[[], None], progress: Progress | None, session=None,
              prefetch: bool | None = None) -> dict:
    """Stream `todo` through one session (`session`, or one opened on the reduced model).

    `prefetch` reads the next batch while ORT runs this one; by default only when ORT's threads
    leave a core free: on a machine whose every core runs an ORT thread the reading thread
    preempts one of them and the whole batch waits for it (VGG16 on 2 cores: 8% slower than
    reading in turn; at the lowest thread priority still 2.5% slower for ResNet50,
    benchmarks/RESULTS.md).
    """
    if session is None:
        # Always the long-run options: they choose ONNX Runtime's kernels, and a channel's scores
        # must not depend on how many images a run has (resumed and merged runs, Ray's actors).
        session = open_reduced(plan.reduced, options.provider, options.threads,
                               name=f"{plan.model} with the atlas's reductions")
    if prefetch is None:
        prefetch = session.provider == "cuda" or session.threads < _cpus()
    h, w = plan.info.height, plan.info.width
    done = since = 0
    batches = list(_chunks(todo, options.batch_size))
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(_read_batch, batches[0], h, w, options.resize) if batches else None
        for k in range(len(batches)):
            ids, pixels, failed = pending.result() if pending else _read_batch(batches[k], h, w, options.resize)
            pending = (reader.submit(_read_batch, batches[k + 1], h, w, options.resize)
                       if prefetch and k + 1 < len(batches) else None)
            if pixels:
                outputs = session.run(np.stack(pixels))
                update_tops(state, plan, outputs, np.asarray(ids, np.int64))
            for image_id, why in failed:
                state.failed[image_id] = why
            for image_id, _ in batches[k]:
                state.done[image_id] = 1
            done += len(batches[k])
            since += len(batches[k])
            if progress:
                progress(done, len(todo), Path(batches[k][-1][1]).name)
            if since >= options.checkpoint_every:
                checkpoint()
                since = 0
    return {"provider": session.provider, "fallback": session.fallback, "workers": 1}


# ---------------------------------------------------------------- the whole command

@dataclass
class AtlasResult:
    output: Path
    model: Path
    layers: list[str]
    channels: int
    images: int  # images in the atlas (all runs)
    new_images: int  # processed by this run
    failed: list[str]  # this run's unreadable images, one line each
    resumed: bool
    engine: str
    provider: str
    fallback: str | None
    seconds: float
    scan_seconds: float  # the pass through the network
    crop_seconds: float
    table: Path
    page: Path
    files: int
    bytes: int
    warnings: list[str] = field(default_factory=list)
    engine_times: dict = field(default_factory=dict)  # --engine ray: init_s, first_result_s, after_start_img_s

    @property
    def images_per_second(self) -> float:
        return self.new_images / self.scan_seconds if self.scan_seconds > 0 else 0.0


def check_output(output: Path) -> Path:
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputError(f"output '{output}' is a file, not a folder; choose a folder with -o")
    return ensure_dir(output)


def build_atlas(model: Path, inputs: list[Path], output: Path, options: AtlasOptions | None = None,
                progress: Progress | None = None, note: Callable[[str], None] | None = None) -> AtlasResult:
    """Collect the top images of every channel of `model`'s chosen layers over `inputs` into `output`."""
    options = options or AtlasOptions()
    options.check()
    started = time.perf_counter()
    note = note or (lambda message: None)
    paths, warnings = collect_images(list(inputs))
    if not paths and not (Path(output) / STATE_FILE).exists():
        why = "; ".join(warnings) or "no inputs given"
        raise ImageError(f"no images found ({why}); give image files or folders that hold them")
    output = check_output(output)
    if options.engine == "ray":
        from onnxviz.atlas.ray import check_ray

        check_ray(options.ray_address)  # before minutes of work: is Ray here, does the address answer
    plan = make_plan(Path(model), options)
    state, resumed = resume_state(output, plan, options)
    todo = state.add_images([str(Path(p).resolve()) for p in paths])
    if resumed:
        note(f"resuming the atlas in {output}: {len(state.images) - len(todo)} images done, {len(todo)} to go")
    channels = sum(t.channels for t in state.tops)
    note(f"{len(plan.layers)} layers, {channels} channels, top {options.top} by spatial {options.score}: "
         f"{', '.join(layer.name for layer in plan.layers)}")
    failed_before = set(state.failed)

    def checkpoint() -> None:
        state.save(output)

    t = time.perf_counter()
    try:
        if options.engine == "ray":
            from onnxviz.atlas.ray import run_ray

            ran = run_ray(plan, state, todo, options, checkpoint, progress)
        else:
            ran = run_local(plan, state, todo, options, checkpoint, progress)
    except KeyboardInterrupt:
        state.save(output)
        raise
    scan_seconds = time.perf_counter() - t
    plan = replace(plan, reduced=b"")  # the page does not need the reduced model: 100 MB (ResNet50) freed
    state.save(output)
    new_failed = [why for k, why in sorted(state.failed.items()) if k not in failed_before]
    if len(state.failed) == len(state.images):
        raise ImageError(f"none of the {len(state.images)} images could be read (first: {state.failed[min(state.failed)]})")
    t = time.perf_counter()
    from onnxviz.atlas.crops import write_atlas

    written = write_atlas(plan, state, output, options, note)
    crop_seconds = time.perf_counter() - t
    return AtlasResult(output, Path(model), [layer.name for layer in plan.layers], channels,
                       len(state.images) - len(state.failed), len(todo), new_failed, resumed, options.engine,
                       ran["provider"], ran.get("fallback"), time.perf_counter() - started, scan_seconds,
                       crop_seconds, written.table, written.page, written.files, written.bytes, warnings,
                       {k: v for k, v in ran.items() if k in ("init_s", "first_result_s", "after_start_img_s")})


@dataclass
class Winners:
    """Every (layer, channel, rank) kept, in table order, as flat arrays: one entry per row."""

    layer: np.ndarray  # index into plan.layers
    channel: np.ndarray
    rank: np.ndarray
    image: np.ndarray  # image id
    score: np.ndarray  # float32
    y: np.ndarray  # position of the maximum in the map
    x: np.ndarray
    box: np.ndarray  # [rows, 4] x0, y0, x1, y1 (end exclusive) in the network's input pixels

    def __len__(self) -> int:
        return len(self.image)


def winners(plan: Plan, state: AtlasState) -> Winners:
    """The kept entries of every layer with their crop boxes (`Field.boxes`)."""
    height, width = plan.info.height, plan.info.width
    parts = []
    for li, (layer, top) in enumerate(zip(plan.layers, state.tops)):
        fld = plan.fields[layer.name]
        c, r = np.nonzero(top.ids != EMPTY)  # row-major: channel, then rank
        y, x = np.divmod(top.positions[c, r], int(layer.shape[3]))
        parts.append((np.full(len(c), li), c, r, top.ids[c, r], top.scores[c, r], y, x, fld.boxes(y, x, height, width)))
    if not parts:
        empty = np.zeros(0, np.int64)
        return Winners(empty, empty, empty, empty, np.zeros(0, np.float32), empty, empty, np.zeros((0, 4), np.int64))
    return Winners(*(np.concatenate([p[k] for p in parts]) for k in range(8)))
