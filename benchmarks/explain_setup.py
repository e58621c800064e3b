"""Render's explainer: how long it takes to open, and its Grad-CAM head per batch of 4.

    python benchmarks/explain_setup.py MODEL.onnx [--code ROOT] [--long-run] [--photos DIR]

One process per call (run it again for another variant: the first `import onnx` is part of the
setup), `ROOT` the checkout to time (default: this one; e.g. a `git worktree` of an older commit).
Opens `explain.pages.RenderExplainer` with the class activation maps only, then runs Grad-CAM's head
on the default layer's activations of 4 photos 5 times: prints the setup seconds and the median
seconds per batch, one JSON line.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--long-run", action="store_true", help="open the head as render does for more than 64 images")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "images")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))

    import onnxviz
    from onnxviz.explain.pages import ExplainOptions, RenderExplainer

    model = onnxviz.load(args.model, provider="cpu")
    info = model._session.info
    extra = {"long_run": True} if args.long_run else {}
    if extra and "long_run" not in inspect.signature(RenderExplainer).parameters:
        raise SystemExit("this checkout's RenderExplainer has no long_run")
    start = time.perf_counter()
    explainer = RenderExplainer(args.model, info, "cpu", ExplainOptions(parts=0), 5, **extra)
    setup = time.perf_counter() - start
    layer = explainer.cam_layer
    photos = sorted(p for p in args.photos.iterdir() if p.suffix in (".png", ".jpg"))[:4]
    maps = np.asarray(model.activations(photos, [layer])[layer])
    times = []
    for _ in range(5):
        start = time.perf_counter()
        explainer.explainer.gradcam_of_maps(maps, layer, explainer.k)
        times.append(time.perf_counter() - start)
    print(json.dumps({"model": args.model.stem, "code": str(args.code), "long_run": args.long_run, "layer": layer,
                      "setup_s": round(setup, 2), "head_batch_of_4_s": round(float(np.median(times)), 3)}))


if __name__ == "__main__":
    main()
