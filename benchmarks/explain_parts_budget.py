"""What an image's parts cost in render, and how near the converged factorization they end.

    python benchmarks/explain_parts_budget.py vgg16.onnx resnet50.onnx [--photos DIR] [--repeats 5] [--code ROOT]

For each model's stage layers of at most 56 x 56 positions, the activations of 8 photos (the four of
../shared/data/images, twice): the factorization render gives each image (`factorize_each`, one pass
over the batch, `render_sweeps` sweeps of RENDER_PASSES) against the same images one by one, and the
relative error it reaches against 200 plain HALS sweeps (`factorize_maps`, the API's); then the run
page's joint factorization of the deepest layer over the 8 against 200 plain sweeps. Medians of
`--repeats`, BLAS on one thread as in render. One JSON line per layer. `--code ROOT`: another checkout
(one without `factorize_each`, as before it existed, is timed one image at a time with its own
RENDER_SWEEPS).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT)
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(args.code.resolve()))
    import onnxviz
    from onnxviz.explain import pages
    from onnxviz.explain.factorize import factorize_maps
    from onnxviz.model.selection import default_layers

    if not hasattr(pages, "render_sweeps"):  # the checkout before the batch factorization
        return _before(args, onnxviz, pages, factorize_maps, default_layers)
    from onnxviz.explain.factorize import factorize_each
    from onnxviz.explain.pages import JOINT_SWEEPS, RENDER_PASSES, render_sweeps

    for path, layers, acts in _activations(args, onnxviz, default_layers):
        for layer in layers:
            maps = acts[layer.name]
            c, h, w = maps.shape[1:]
            sweeps = render_sweeps(h * w, c)
            batch = _median(lambda: factorize_each(maps, 5, sweeps, RENDER_PASSES), args.repeats)
            single = _median(lambda: [factorize_each(maps[i:i + 1], 5, sweeps, RENDER_PASSES) for i in range(len(maps))],
                             args.repeats)
            quick = factorize_each(maps, 5, sweeps, RENDER_PASSES)
            ratios = [q.error / factorize_maps(maps[i:i + 1], 5).error for i, q in enumerate(quick)]
            print(json.dumps({"model": path.stem, "layer": layer.name, "positions_x_channels": [h * w, c],
                              "sweeps": sweeps, "ms_per_image_batch_of_8": round(batch * 1000 / len(maps), 1),
                              "ms_per_image_one_by_one": round(single * 1000 / len(maps), 1),
                              "error_over_converged": [round(min(ratios), 4), round(max(ratios), 4)]}), flush=True)
        deepest = acts[layers[-1].name]
        joint = _median(lambda: factorize_maps(deepest, 5, JOINT_SWEEPS, RENDER_PASSES), args.repeats)
        converged = _median(lambda: factorize_maps(deepest, 5), args.repeats)
        ratio = factorize_maps(deepest, 5, JOINT_SWEEPS, RENDER_PASSES).error / factorize_maps(deepest, 5).error
        print(json.dumps({"model": path.stem, "joint": layers[-1].name, "images": len(deepest),
                          "ms_render": round(joint * 1000, 1), "ms_200_plain": round(converged * 1000, 1),
                          "error_over_converged": round(ratio, 4)}), flush=True)


def _activations(args, onnxviz, default_layers):
    """(model path, its stage layers of at most 56 x 56 positions, their maps of the 8 photos) per model."""
    photos = sorted(p for p in args.photos.iterdir() if p.suffix in (".png", ".jpg"))[:4] * 2
    for path in args.models:
        model = onnxviz.load(path, provider="cpu")
        layers = [layer for layer in default_layers(model._session.info) if layer.shape[2] * layer.shape[3] <= 56 * 56]
        yield path, layers, model.activations(photos, [layer.name for layer in layers])


def _before(args, onnxviz, pages, factorize_maps, default_layers) -> None:
    for path, layers, acts in _activations(args, onnxviz, default_layers):
        for layer in layers:
            maps = acts[layer.name]
            c, h, w = maps.shape[1:]
            single = _median(lambda: [factorize_maps(maps[i:i + 1], 5, pages.RENDER_SWEEPS) for i in range(len(maps))],
                             args.repeats)
            print(json.dumps({"model": path.stem, "layer": layer.name, "code": str(args.code),
                              "positions_x_channels": [h * w, c], "sweeps": pages.RENDER_SWEEPS,
                              "ms_per_image_one_by_one": round(single * 1000 / len(maps), 1)}), flush=True)


def _median(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    main()
