"""Render speed against the same file's inference alone, side by side, alternating; medians.

    python benchmarks/make_photos.py --out /tmp/photos100
    python benchmarks/render_speed.py /tmp/startup_resnet/external.onnx /tmp/photos100 --repeats 2 \
        --before /tmp/before --before-repeats 1 --before-model /work/bigmodels/resnet101v2.onnx

Each measurement runs in its own process (so each starts cold, as a user's run does), in
turn: `infer` (an ONNX Runtime session with render's options running the file with every
output over the photos in batches, pixels decoded beforehand: the network's own speed),
`after` (`onnxviz.render.pipeline.render` of this tree over the same folder, default options),
and, with `--before CODE_ROOT`, `before` (the same call in another checkout). Prints one
JSON object: per kind the images/s of every run, the median, output bytes per image and
the time split per stage of the median run; and after/infer, before/infer.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INFER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from onnxviz.run.images import collect_images, load_image, resize_image
from onnxviz.run.session import open_session
model, folder, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
session = open_session(model, "cpu", long_run=True)
images, _ = collect_images([folder])
info = session.info
pixels = np.stack([resize_image(load_image(p), info.height, info.width) for p in images]).astype(np.float32)
session.run(pixels[:1])  # not timed: first-run allocations, as render's first batch pays them too
t = time.perf_counter()
for start in range(0, len(pixels), batch):
    session.run(pixels[start:start + batch])
seconds = time.perf_counter() - t
print(json.dumps({"images": len(pixels), "seconds": seconds}))
"""

RENDER = r"""
import json, sys, time
from pathlib import Path
from onnxviz.render.options import RenderOptions
from onnxviz.render.pipeline import render
model, folder, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
result = render(model, [folder], out, RenderOptions(provider="cpu"))
size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
print(json.dumps({"images": len(result.images), "seconds": result.seconds, "bytes": size,
                  "timings": vars(result.timings)}))
"""


def run(code: str, root: Path, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    # cwd: `python -c` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=root)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="code root of the version to compare with")
    parser.add_argument("--before-repeats", type=int, default=1)
    parser.add_argument("--before-model", type=Path, help="the file the earlier version reads (default: MODEL)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--kinds", default="infer,after,before", help="which to run, e.g. before")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"infer": [], "after": [], "before": []}
    for k in range(args.repeats):
        kinds = ["infer", "after"] + (["before"] if args.before and k < args.before_repeats else [])
        kinds = [kind for kind in kinds if kind in args.kinds.split(",")]
        for kind in kinds:
            if kind == "infer":
                r = run(INFER, ROOT, [str(args.model), str(args.photos), str(args.batch_size)])
            else:
                out = Path(tempfile.mkdtemp(prefix=f"render-{kind}-"))
                try:
                    model = args.model if kind == "after" else (args.before_model or args.model)
                    r = run(RENDER, ROOT if kind == "after" else args.before, [str(model), str(args.photos), str(out)])
                finally:
                    shutil.rmtree(out, ignore_errors=True)
            r["images_per_s"] = r["images"] / r["seconds"]
            runs[kind].append(r)
            print(kind, json.dumps(r), file=sys.stderr, flush=True)
    summary: dict = {"model": str(args.model), "photos": str(args.photos)}
    for kind, rs in runs.items():
        if not rs:
            continue
        rates = [r["images_per_s"] for r in rs]
        med = statistics.median(rates)
        middle = min(rs, key=lambda r: abs(r["images_per_s"] - med))
        summary[kind] = {"images_per_s": rates, "median": med}
        if "bytes" in middle:
            summary[kind]["bytes_per_image"] = middle["bytes"] / middle["images"]
            summary[kind]["seconds"] = middle["seconds"]
            summary[kind]["timings"] = middle["timings"]
    for kind in ("after", "before"):
        if kind in summary and "infer" in summary:
            summary[f"{kind}/infer"] = summary[kind]["median"] / summary["infer"]["median"]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
