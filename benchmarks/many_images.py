"""Memory over a long render: resident memory sampled through the progress callback.

    python benchmarks/many_images.py MODEL.onnx --count 10000 --work /tmp/many

Makes COUNT small photos (copies of crops of the test photos, 64..128 px), renders them
all through MODEL into WORK/out with default options, and prints the resident set size
(from /proc/self/statm) after 1%, 10%, 50% and 100% of the images, and the peak.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxviz.render.options import RenderOptions  # noqa: E402
from onnxviz.render.pipeline import render  # noqa: E402


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/many"))
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "images")
    args = parser.parse_args()
    photos = args.work / "photos"
    shutil.rmtree(args.work, ignore_errors=True)
    photos.mkdir(parents=True)
    sources = [cv2.imread(str(p)) for p in sorted(args.src.iterdir())]
    rng = np.random.default_rng(0)
    for k in range(args.count):
        img = sources[k % len(sources)]
        side = int(rng.integers(64, 129))
        cv2.imwrite(str(photos / f"{k:05d}.jpg"), cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
    marks = {max(1, args.count // 100), args.count // 10, args.count // 2, args.count}
    samples: dict[int, float] = {}

    def progress(done: int, total: int, name: str) -> None:
        if done in marks:
            samples[done] = round(rss_mb(), 1)

    t = time.perf_counter()
    result = render(args.model, [photos], args.work / "out", RenderOptions(provider="cpu"), progress=progress)
    print(json.dumps({"images": len(result.images), "seconds": round(time.perf_counter() - t, 1),
                      "rss_mb_after": samples,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)}))


if __name__ == "__main__":
    main()
