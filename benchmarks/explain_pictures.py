"""What an image page's explanation pictures cost: a class activation map's heat overlay and a
layer's parts overlay over a 224 x 224 photo, and one JPEG of it, as render draws them.

    python benchmarks/explain_pictures.py [--code ROOT] [--photo PHOTO]

`ROOT`: the checkout to time (default: this one; e.g. a `git worktree` of an older commit). A 7 x 7
map and 5 parts of 14 x 14 (ResNet50's conv5 and conv4), random; medians of 7 blocks of 100 calls,
milliseconds per call, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--photo", type=Path, default=ROOT.parent / "shared" / "data" / "images" / "coffee.png")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    import cv2

    from onnxviz.explain.overlay import heat_overlay, parts_overlay
    from onnxviz.explain.pages import _jpeg

    rgb = np.ascontiguousarray(cv2.resize(cv2.imread(str(args.photo)), (224, 224))[..., ::-1])
    rng = np.random.default_rng(0)
    cam = rng.random((7, 7)).astype(np.float32)
    maps = rng.random((5, 14, 14)).astype(np.float32)
    tops = maps.max(axis=(1, 2))
    overlay = heat_overlay(rgb, cam)

    def timed(f) -> float:
        for _ in range(20):
            f()
        blocks = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(100):
                f()
            blocks.append((time.perf_counter() - start) * 10)  # ms per call
        return round(float(np.median(blocks)), 3)

    print(json.dumps({"code": str(args.code), "heat_overlay_ms": timed(lambda: heat_overlay(rgb, cam)),
                      "parts_overlay_ms": timed(lambda: parts_overlay(rgb, maps, tops)),
                      "jpeg_ms": timed(lambda: _jpeg(overlay))}))


if __name__ == "__main__":
    main()
