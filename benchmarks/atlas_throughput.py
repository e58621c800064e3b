"""Atlas throughput against a plain classification loop, side by side in one process, alternating.

For each model: (a) the baseline: decode, resize and classify every image with the plain
network (the onnxviz file stripped to its prediction output), batches of 8, same session
options; (b) `build_atlas` with the default layers over the same images (the whole
command: plan, scan, crops, page). Rounds alternate a, b, a, b, ...; medians reported,
with the atlas's scan alone (its pass through the network) and its fixed costs.

    python benchmarks/atlas_throughput.py /work/bigmodels/vgg16.onnx /work/bigmodels/resnet50.onnx \
        --images /tmp/atlas-data --count 160 --rounds 3 --json /tmp/atlas_throughput.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxviz.atlas import AtlasOptions, build_atlas  # noqa: E402
from onnxviz.images import collect_images, load_image, resize_image  # noqa: E402


def plain_network(model: Path, folder: Path) -> Path:
    """The onnxviz file with its prediction output only: what a classification loop runs."""
    import onnx

    from onnxviz.graph import strip_outputs
    from onnxviz.metadata import read_info

    proto = onnx.load(str(model))
    info = read_info(proto)
    if not info.prediction_output:
        raise SystemExit(f"{model} has no prediction output; export it with its classifier")
    path = folder / f"{model.stem}_plain.onnx"
    onnx.save(strip_outputs(proto, [info.prediction_output]), str(path))
    return path


def classify_loop(session, paths: list[Path], batch: int = 8) -> float:
    h, w = session.info.height, session.info.width
    t = time.perf_counter()
    for start in range(0, len(paths), batch):
        pixels = [resize_image(load_image(p), h, w) for p in paths[start:start + batch]]
        session.run(np.stack(pixels))
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from onnxviz.runtime import open_session

    paths = collect_images([args.images])[0][: args.count]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            plain = open_session(plain_network(model, Path(tmp)), "cpu")
            classify_loop(plain, paths[:8])  # warm-up
            base, whole, scan, fixed = [], [], [], []
            for r in range(args.rounds):
                base.append(classify_loop(plain, paths))
                out = Path(tmp) / f"atlas_{r}"
                t = time.perf_counter()
                result = build_atlas(model, paths, out, AtlasOptions(provider="cpu"))
                whole.append(time.perf_counter() - t)
                scan.append(result.scan_seconds)
                fixed.append(whole[-1] - result.scan_seconds)
                shutil.rmtree(out)
                print(f"{model.stem} round {r}: loop {len(paths) / base[-1]:.2f} img/s, atlas scan "
                      f"{len(paths) / scan[-1]:.2f} img/s, whole atlas {whole[-1]:.1f}s "
                      f"(scan {scan[-1]:.1f}s, plan+crops+page {fixed[-1]:.1f}s)", flush=True)
            row = {"model": model.stem, "images": len(paths), "layers": result.layers, "channels": result.channels,
                   "loop_img_s": len(paths) / statistics.median(base),
                   "scan_img_s": len(paths) / statistics.median(scan),
                   "scan_ratio": statistics.median(b / s for b, s in zip(base, scan)),
                   "whole_ratio": statistics.median(b / w for b, w in zip(base, whole)),
                   "fixed_s": statistics.median(fixed), "output_mb": result.bytes / 1e6, "files": result.files}
            results.append(row)
            del plain
    print(f"\n| model | images | loop img/s | atlas scan img/s | scan / loop | whole atlas / loop | fixed cost s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['images']} | {r['loop_img_s']:.2f} | {r['scan_img_s']:.2f} | "
              f"{r['scan_ratio']:.2f}x | {r['whole_ratio']:.2f}x | {r['fixed_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
