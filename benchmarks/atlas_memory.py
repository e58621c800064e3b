"""Peak memory of an atlas against the number of images: each run in a fresh process.

    python benchmarks/atlas_memory.py /work/bigmodels/resnet50.onnx --images /tmp/atlas-data --counts 500,5000

Prints, per count, the peak resident set size (`ru_maxrss` of the child process) and the
wall time; the top N per channel has a fixed size, so the peak should not grow with the count.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {root!r})
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.run.images import collect_images
paths = collect_images([Path({images!r})])[0][:{count}]
assert len(paths) == {count}, len(paths)
with tempfile.TemporaryDirectory() as out:
    t = time.perf_counter()
    r = build_atlas(Path({model!r}), paths, Path(out) / "atlas", AtlasOptions(provider="cpu"))
    print(json.dumps({{"count": {count}, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - t, "scan_img_s": r.images_per_second}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--counts", default="500,5000")
    args = parser.parse_args()
    rows = []
    for count in [int(c) for c in args.counts.split(",")]:
        code = CHILD.format(root=str(ROOT), images=str(args.images), count=count, model=str(args.model))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["peak_rss_mb"]
    print("\n| images | peak RSS MB | vs first | wall s | scan img/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['count']} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base:.3f} | {r['seconds']:.0f} | "
              f"{r['scan_img_s']:.2f} |")


if __name__ == "__main__":
    main()
