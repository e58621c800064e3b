"""The atlas scan reading the next batch ahead in a thread at the lowest priority (nice 19; Linux
gives each thread its own) against reading each batch in turn (`run_local`'s default where ONNX
Runtime's threads take every core), one session, alternating every BLOCK images; medians of the
per-block ratios. (A reading thread at normal priority was measured slower before: it preempts
an ORT thread. This asks whether one that yields to every other thread pays.)

    python benchmarks/atlas_prefetch.py /work/bigmodels/resnet50.onnx /work/bigmodels/vgg16.onnx \
        --images /tmp/atlas-data5k --count 320 --block 32
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxviz.atlas.local as local  # noqa: E402
from onnxviz.atlas.local import run_local  # noqa: E402
from onnxviz.atlas.options import AtlasOptions  # noqa: E402
from onnxviz.atlas.plan import make_plan, open_reduced  # noqa: E402
from onnxviz.atlas.state import AtlasState  # noqa: E402
from onnxviz.run.images import collect_images  # noqa: E402

_read = local._read


def _read_niced(*args):
    """run_local's reading, from a thread that first lowers its own priority to the lowest."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    return _read(*args)


def compare(model: Path, paths: list[Path], block: int) -> dict:
    opts = AtlasOptions(provider="cpu")
    plan = make_plan(model, opts)
    state = AtlasState.new(plan, opts.top)
    todo = state.add_images([str(p.resolve()) for p in paths])
    session = open_reduced(plan.reduced, "cpu")
    run_local(plan, state, todo[:8], opts, lambda: None, None, session=session)  # warm-up
    in_turn, ahead = [], []
    for k, start in enumerate(range(0, len(todo), block)):
        part = todo[start:start + block]
        for prefetch, times in ((False, in_turn), (True, ahead))[:: 1 if k % 2 == 0 else -1]:
            local._read = _read_niced if prefetch else _read  # in turn: read in this thread
            t = time.perf_counter()
            run_local(plan, state, part, opts, lambda: None, None, session=session, prefetch=prefetch)
            times.append(time.perf_counter() - t)
    local._read = _read
    ratios = [a / b for a, b in zip(in_turn, ahead)]
    return {"model": model.stem, "images": len(todo), "blocks": len(ratios), "in_turn_img_s": len(todo) / sum(in_turn),
            "ahead_img_s": len(todo) / sum(ahead), "median": statistics.median(ratios),
            "q1": float(np.percentile(ratios, 25)), "q3": float(np.percentile(ratios, 75))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=320)
    parser.add_argument("--block", type=int, default=32)
    args = parser.parse_args()
    paths = collect_images([args.images])[0][: args.count]
    rows = [compare(m, paths, args.block) for m in args.models]
    print("\n| model | images | in turn img/s | read ahead img/s | in turn time / read ahead time, median of blocks (IQR) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['images']} | {r['in_turn_img_s']:.2f} | {r['ahead_img_s']:.2f} | "
              f"{r['median']:.3f} ({r['q1']:.3f}-{r['q3']:.3f}, {r['blocks']} blocks) |")


if __name__ == "__main__":
    main()
