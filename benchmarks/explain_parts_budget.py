"""What an image's parts cost in render, and how near the converged factorization they end.

    python benchmarks/explain_parts_budget.py vgg16.onnx resnet50.onnx [--photos DIR] [--repeats 5]

For each model's stage layers of at most 28 x 28 positions, the activations of 8 photos (the four of
../shared/data/images, twice): the factorization render gives each image (`factorize_each`, one pass
over the batch, `render_sweeps` sweeps of RENDER_PASSES) against the same images one by one, and the
relative error it reaches against 200 plain HALS sweeps (`factorize_maps`, the API's). Medians of
`--repeats`, BLAS on one thread as in render. One JSON line per layer.
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
    args = parser.parse_args()

    import onnxviz
    from onnxviz.explain.factorize import factorize_each, factorize_maps
    from onnxviz.explain.pages import RENDER_PASSES, render_sweeps
    from onnxviz.model.selection import default_layers

    photos = sorted(p for p in args.photos.iterdir() if p.suffix in (".png", ".jpg"))[:4] * 2
    for path in args.models:
        model = onnxviz.load(path, provider="cpu")
        layers = [layer for layer in default_layers(model._session.info) if layer.shape[2] * layer.shape[3] <= 28 * 28]
        acts = model.activations(photos, [layer.name for layer in layers])
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


def _median(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    main()
