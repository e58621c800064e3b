"""The local engine: the images streamed through one ONNX Runtime session on the reduced model,
each batch's per-channel scores and positions added to the run's `TopN`s."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from onnxviz.atlas.options import AtlasOptions, EngineRun, Progress
from onnxviz.atlas.plan import Plan, open_reduced
from onnxviz.atlas.state import AtlasState
from onnxviz.model.graph import reduction_names
from onnxviz.run.images import ImageBatch, read_batch
from onnxviz.run.session import Session, usable_cpus


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _read(batch: list[tuple[int, str]], height: int, width: int, resize: str) -> ImageBatch:
    return read_batch([path for _, path in batch], height, width, resize)


def update_tops(state: AtlasState, plan: Plan, outputs: dict[str, np.ndarray], ids: np.ndarray) -> None:
    """Add one batch's reductions (`outputs` of the reduced model) to every layer's `TopN`."""
    for layer, top in zip(plan.layers, state.tops):
        score_name, position_name = reduction_names(layer.name)
        top.update(outputs[score_name], outputs[position_name], ids)


def run_local(plan: Plan, state: AtlasState, todo: list[tuple[int, str]], options: AtlasOptions,
              checkpoint: Callable[[], None], progress: Progress | None, session: Session | None = None,
              prefetch: bool | None = None) -> EngineRun:
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
        prefetch = session.provider == "cuda" or session.threads < usable_cpus()
    h, w = plan.info.height, plan.info.width
    done = since = 0
    batches = list(_chunks(todo, options.batch_size))
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(_read, batches[0], h, w, options.resize) if batches else None
        for k, batch in enumerate(batches):
            got = pending.result() if pending else _read(batch, h, w, options.resize)
            pending = (reader.submit(_read, batches[k + 1], h, w, options.resize)
                       if prefetch and k + 1 < len(batches) else None)
            if got.read:
                outputs = session.run(got.pixels)
                update_tops(state, plan, outputs, np.asarray([batch[j][0] for j in got.read], np.int64))
            for j, why in got.failed:
                state.failed[batch[j][0]] = why
            for image_id, _ in batch:
                state.done[image_id] = 1
            done += len(batch)
            since += len(batch)
            if progress:
                progress(done, len(todo), Path(batch[-1][1]).name)
            if since >= options.checkpoint_every:
                checkpoint()
                since = 0
    return EngineRun(session.provider, session.fallback, workers=1)
