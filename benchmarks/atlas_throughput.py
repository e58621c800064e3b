"""Atlas throughput against a plain classification loop, side by side in one process, alternating.

For each model: (a) the baseline: decode, resize and classify every image with the plain
network (the onnxviz file stripped to its prediction output), batches of 8, same session
options; (b) `build_atlas` with the default layers over the same images (the whole
command: plan, scan, crops, page). Rounds alternate a, b, a, b, ...; medians reported,
with the atlas's scan alone (its pass through the network) and its fixed costs.

    python benchmarks/atlas_throughput.py /work/bigmodels/vgg16.onnx /work/bigmodels/resnet50.onnx \
        --images /tmp/atlas-data --count 160 --rounds 3 --json /tmp/atlas_throughput.json
    python benchmarks/atlas_throughput.py ... --block 16   # the scan alone, alternating every 16 images
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

from onnxviz.atlas.options import AtlasOptions  # noqa: E402
from onnxviz.atlas.pipeline import build_atlas  # noqa: E402
from onnxviz.run.images import collect_images, load_image, resize_image  # noqa: E402


def plain_network(model: Path, folder: Path) -> Path:
    """The onnxviz file with its prediction output only: what a classification loop runs."""
    import onnx

    from onnxviz.model.graph import strip_outputs
    from onnxviz.model.info import read_info

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


def blocks(model: Path, paths: list[Path], tmp: Path, block: int, rounds: int) -> dict:
    """The atlas scan (`atlas.local.run_local`, its sessions opened once) against the loop, alternating
    every `block` images: contention on a shared machine changes slower than a block takes."""
    from onnxviz.atlas.local import run_local
    from onnxviz.atlas.plan import make_plan, open_reduced
    from onnxviz.atlas.state import AtlasState
    from onnxviz.run.session import open_session

    opts = AtlasOptions(provider="cpu")
    plan = make_plan(model, opts)
    state = AtlasState.new(plan, opts.top)
    todo = state.add_images([str(p.resolve()) for p in paths])
    atlas_session = open_reduced(plan.reduced, "cpu")
    plain = open_session(plain_network(model, tmp), "cpu")
    classify_loop(plain, paths[:8])
    run_local(plan, state, todo[:8], opts, lambda: None, None, session=atlas_session)
    ratios, loop_s, scan_s = [], 0.0, 0.0
    for r in range(rounds):
        for start in range(0, len(paths), block):
            part = paths[start:start + block]
            a = classify_loop(plain, part)
            t = time.perf_counter()
            run_local(plan, state, todo[start:start + block], opts, lambda: None, None, session=atlas_session)
            b = time.perf_counter() - t
            ratios.append(a / b)
            loop_s, scan_s = loop_s + a, scan_s + b
    n = len(paths) * rounds
    return {"model": model.stem, "images": n, "block": block, "loop_img_s": n / loop_s, "scan_img_s": n / scan_s,
            "median_block_ratio": statistics.median(ratios), "blocks": len(ratios),
            "q1": float(np.percentile(ratios, 25)), "q3": float(np.percentile(ratios, 75))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--block", type=int, default=0, help="alternate the scan and the loop every BLOCK images "
                        "(sessions opened once) instead of whole commands")
    args = parser.parse_args()
    from onnxviz.run.session import open_session

    paths = collect_images([args.images])[0][: args.count]
    results = []
    if args.block:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [blocks(m, paths, Path(tmp), args.block, args.rounds) for m in args.models]
        print("\n| model | images | block | loop img/s | atlas scan img/s | scan / loop, median of blocks (IQR) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['images']} | {r['block']} | {r['loop_img_s']:.2f} | {r['scan_img_s']:.2f} | "
                  f"{r['median_block_ratio']:.2f}x ({r['q1']:.2f}-{r['q3']:.2f}, {r['blocks']} blocks) |")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return
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
    print("\n| model | images | loop img/s | atlas scan img/s | scan / loop | whole atlas / loop | fixed cost s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['images']} | {r['loop_img_s']:.2f} | {r['scan_img_s']:.2f} | "
              f"{r['scan_ratio']:.2f}x | {r['whole_ratio']:.2f}x | {r['fixed_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
