"""Where the painting of an image goes, on one thread, with nothing else running.

Runs one batch of IMAGES through MODEL, then times, per image: the statistics' reductions over
every map (numpy's per-channel min and max, OpenCV's sum and non-zero count), the whole of
`painting.draw_layer` for every layer (its drawing and encoding clocks, and the functions it calls
for PNG, 8-bit scaling, rounding and ranges) and the base64 of the sprites' PNGs; the reductions
by map size (H x W), which shows what short rows cost, against reducing a transposed copy; the
sprites' deflate at ISA-L's levels 0 to 3; then `render` of the same images with one worker,
which paints after inference (one batch), so its draw, encode and write clocks are the
painting's uncontended cost per image.

    python benchmarks/painting_cost.py MODEL IMAGES [--repeats 3]

Prints a table per repeat and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import base64
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxviz.picture import encoding
from onnxviz.render import painting
from onnxviz.render import reduce, store  # noqa: E402
from onnxviz.run.images import collect_images, load_image, resize_image  # noqa: E402
from onnxviz.model.selection import select_layers  # noqa: E402
from onnxviz.render.options import RenderOptions  # noqa: E402
from onnxviz.render.pipeline import render  # noqa: E402
from onnxviz.run.session import open_session  # noqa: E402


def _timed(owner, name: str, seconds: dict[str, float], label: str, keep: list | None = None):
    """Replace `owner.name` by a wrapper that adds its seconds to seconds[label]; returns the original."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        result = original(*args, **kwargs)
        seconds[label] += time.perf_counter() - t
        if keep is not None:
            keep.append(result)
        return result

    setattr(owner, name, wrapper)
    return original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path, help="a folder: its images make one batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    session = open_session(args.model, "cpu", long_run=False)
    info = session.info
    chosen = select_layers(info, [], str(args.model))
    images, _ = collect_images([args.images])
    pixels = np.stack([resize_image(load_image(p), info.height, info.width) for p in images]).astype(np.float32)
    outputs = session.run(pixels, [layer.name for layer in chosen])
    n = len(images)
    runs = []
    for _ in range(args.repeats):
        ms: dict[str, float] = collections.defaultdict(float)
        by_size: dict[int, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
        for layer in chosen:
            maps = outputs[layer.name]
            flat = maps.reshape(n, maps.shape[1], -1)
            t = time.perf_counter()
            flat.min(axis=2), flat.max(axis=2)
            t2 = time.perf_counter()
            for image in flat:
                cv2.sumElems(image), cv2.countNonZero(image)
            t3 = time.perf_counter()
            t4 = time.perf_counter()
            rows = np.ascontiguousarray(flat.transpose(0, 2, 1))  # channels last: each reduction runs across C
            rows.min(axis=1), rows.max(axis=1)
            t5 = time.perf_counter()
            ms["min and max"] += t2 - t
            ms["sum and non-zero"] += t3 - t2
            size = by_size[flat.shape[2]]
            size[0] += 1
            size[1] += maps.nbytes
            size[2] += t2 - t
            size[3] += t3 - t2
            size[4] += t5 - t4
        clock = store.StageTimes()
        t = time.perf_counter()
        drawn = [painting.draw_layer(layer, i, outputs[layer.name], RenderOptions(), clock)
                 for i, layer in enumerate(chosen)]
        ms["draw_layer"] = time.perf_counter() - t
        ms["  its draw clock"], ms["  its encode clock"] = clock.drawing, clock.encoding
        pngs = [one.png for layer in drawn for one in layer if one.png]
        sprites: list[np.ndarray] = []
        parts = {"  PNG encoding": 0.0, "  8-bit scaling and tiling": 0.0, "  rounding for JSON": 0.0, "  ranges": 0.0}
        wrapped = [(encoding, "encode_png", "  PNG encoding", None), (reduce, "scaled_sprites", "  8-bit scaling and tiling", sprites),
                   (store, "rounded", "  rounding for JSON", None), (reduce, "sprite_ranges", "  ranges", None)]
        originals = [(owner, name, _timed(owner, name, parts, label, keep)) for owner, name, label, keep in wrapped]
        try:
            t = time.perf_counter()
            for i, layer in enumerate(chosen):
                painting.draw_layer(layer, i, outputs[layer.name], RenderOptions())
            ms["draw_layer, timed by parts"] = time.perf_counter() - t
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)
        ms.update(parts)
        deflate_mb = {}
        filtered = [_up_filtered(s) for batch in sprites for s in batch]
        for level in range(4) if encoding._isal is not None else ():
            t = time.perf_counter()
            size = sum(len(encoding._isal.compress(rows, level)) for rows in filtered)
            ms[f"deflate, ISA-L level {level}"] = time.perf_counter() - t
            deflate_mb[level] = size / n / 1e6
        t = time.perf_counter()
        for png in pngs:
            base64.b64encode(png)
        ms["base64 of the PNGs"] = time.perf_counter() - t
        out = Path(tempfile.mkdtemp(prefix="painting_cost_"))
        result = render(args.model, [args.images], out, RenderOptions(provider="cpu", workers=1, batch_size=n))
        shutil.rmtree(out)
        for stage in ("drawing", "encoding", "writing"):
            ms[f"render, one worker: {stage}"] = getattr(result.timings, stage)
        ms["render, one worker: painting"] = sum(getattr(result.timings, s) for s in ("drawing", "encoding", "writing"))
        per_image = {key: value / n * 1000 for key, value in ms.items()}
        print(f"{n} images, {sum(outputs[layer.name].nbytes for layer in chosen) / n / 1e6:.1f} MB of maps each; ms per image:")
        for key, value in per_image.items():
            print(f"  {key:34s} {value:7.1f}")
        print(f"  {'H x W':>8s} {'layers':>6s} {'MB/image':>8s} {'min+max ms':>10s} {'GB/s':>5s} {'sum+nz ms':>9s} "
              f"{'transposed copy, min+max ms':>27s}")
        for hw, (count, nbytes, mm, sn, tr) in sorted(by_size.items()):
            print(f"  {hw:8d} {count:6d} {nbytes / n / 1e6:8.1f} {mm / n * 1000:10.1f} {nbytes / mm / 1e9:5.1f} {sn / n * 1000:9.1f} "
                  f"{tr / n * 1000:27.1f}")
        print("  deflated sprites, MB per image by ISA-L level: "
              + ", ".join(f"{level}: {mb:.2f}" for level, mb in deflate_mb.items()))
        runs.append({**per_image, **{f"deflate MB, level {level}": mb for level, mb in deflate_mb.items()}})
    median = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    print(json.dumps({"model": str(args.model), "images": n, "ms_per_image_median": median}))


def _up_filtered(sprite: np.ndarray) -> bytes:
    """A gray sprite's rows with PNG's UP filter, as `encoding.encode_png` deflates them."""
    filtered = np.empty((sprite.shape[0], sprite.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = sprite[0]
    np.subtract(sprite[1:], sprite[:-1], out=filtered[1:, 1:])
    return filtered.tobytes()


if __name__ == "__main__":
    main()
