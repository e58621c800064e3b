"""CPU seconds per image of an atlas's two kinds of work, for projecting a large run.

CPU time (`time.process_time`), not wall time, so that other work on a shared machine does
not count: (1) reading and resizing one ImageNet-sized JPEG (500x375, quality 90, made from
the shared photos); (2) the atlas scan (`atlas.local.run_local`, default layers, batch 8) on an
ONNX Runtime session with one thread, so that no thread spins waiting for another.

    python benchmarks/atlas_cpu_cost.py /work/bigmodels/resnet50.onnx /work/bigmodels/resnet101v2.onnx \
        --images /tmp/atlas-data --count 64
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxviz.atlas.local import run_local  # noqa: E402
from onnxviz.atlas.options import AtlasOptions  # noqa: E402
from onnxviz.atlas.plan import make_plan, open_reduced  # noqa: E402
from onnxviz.atlas.state import AtlasState  # noqa: E402
from onnxviz.run.images import collect_images, load_image, resize_image  # noqa: E402


def decode_cost(photos: Path, count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sources = collect_images([photos])[0]
        paths = []
        for i in range(count):
            img = load_image(sources[i % len(sources)])
            img = cv2.resize(img, (500, 375), interpolation=cv2.INTER_AREA)
            path = Path(tmp) / f"{i}.jpg"
            cv2.imwrite(str(path), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            paths.append(path)
        t = time.process_time()
        for p in paths:
            resize_image(load_image(p), 224, 224)
        return (time.process_time() - t) / count


def scan_cost(model: Path, paths: list[Path]) -> tuple[float, float]:
    opts = AtlasOptions(provider="cpu", threads=1)
    plan = make_plan(model, opts)
    state = AtlasState.new(plan, opts.top)
    todo = state.add_images([str(p.resolve()) for p in paths])
    session = open_reduced(plan.reduced, "cpu", threads=1)
    run_local(plan, state, todo[:8], opts, lambda: None, None, session=session)  # warm-up
    t, w = time.process_time(), time.perf_counter()
    run_local(plan, state, todo, opts, lambda: None, None, session=session)
    return (time.process_time() - t) / len(todo), (time.perf_counter() - w) / len(todo)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "images")
    parser.add_argument("--count", type=int, default=64)
    args = parser.parse_args()
    d = decode_cost(args.photos, 200)
    print(f"read + resize a 500x375 JPEG to 224x224: {d * 1000:.1f} ms CPU ({1 / d:.0f} images/s per core)")
    paths = collect_images([args.images])[0][: args.count]
    for model in args.models:
        cpu, wall = scan_cost(model, paths)
        print(f"{model.stem}: atlas scan {cpu * 1000:.0f} ms CPU per image on one thread "
              f"({1 / cpu:.2f} images/s per core; wall {wall * 1000:.0f} ms)", flush=True)


if __name__ == "__main__":
    main()
