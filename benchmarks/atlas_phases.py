"""The fixed part of `onnxviz atlas` (reading the model, cutting the crops, writing the page), phase
by phase, for this checkout and another one (e.g. an earlier commit), alternating fresh processes.

Each run resumes a finished atlas (`--state`: a folder an earlier `onnxviz atlas` over the same
images left, its state included) on a copy, so nothing is scanned and only the fixed part runs:
`make_plan`, then `write_atlas` (read the winning images, cut the crops, write sheets, table and
page). Peak RSS is the process's `ru_maxrss`.

    onnxviz atlas /work/bigmodels/resnet50.onnx <1000 images> -o /tmp/r50_1000 --provider cpu
    git archive 27b535c | tar -x -C /tmp/before      # the code to compare with
    python benchmarks/atlas_phases.py /work/bigmodels/resnet50.onnx --state /tmp/r50_1000 \
        --images /tmp/atlas-data5k --count 1000 --code /tmp/before --rounds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, shutil, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {code!r})
import onnxviz.atlas.pipeline as atlas
import onnxviz.atlas.crops as page
from onnxviz.run.images import collect_images
times = {{}}
def timed(module, name):
    original = getattr(module, name)
    def run(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t
    setattr(module, name, run)
timed(atlas, "make_plan")
timed(atlas if hasattr(atlas, "write_atlas") else page, "write_atlas")  # where build_atlas finds it
paths = collect_images([Path({images!r})])[0][:{count}]
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "atlas"
    shutil.copytree({state!r}, out)
    t = time.perf_counter()
    cpu = time.process_time()
    result = atlas.build_atlas(Path({model!r}), paths, out, atlas.AtlasOptions(provider="cpu"))
    assert result.new_images == 0, "the state does not cover these images"
    print(json.dumps({{"whole": time.perf_counter() - t, "cpu": time.process_time() - cpu,
                      "plan": times["make_plan"], "write": times["write_atlas"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--state", type=Path, required=True, help="a finished atlas folder over the same images")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another checkout's root to compare with (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    codes = [ROOT, *args.code]
    runs: dict[Path, list[dict]] = {c: [] for c in codes}
    for r in range(args.rounds):
        for code in codes:
            child = CHILD.format(code=str(code), images=str(args.images), count=args.count,
                                 state=str(args.state), model=str(args.model))
            proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
            runs[code].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r} {code}: {runs[code][-1]}", flush=True)
    print(f"\n{args.model.stem}, {args.count} images, medians of {args.rounds} runs each, alternating:")
    print("| code | plan s | crops + page s | whole (nothing to scan) s | CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for code in codes:
        med = {k: statistics.median(run[k] for run in runs[code]) for k in runs[code][0]}
        print(f"| {'this checkout' if code == ROOT else code} | {med['plan']:.2f} | {med['write']:.2f} | "
              f"{med['whole']:.2f} | {med['cpu']:.2f} | {med['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
