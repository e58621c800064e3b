"""`--engine ray` against `--engine local` on this machine: same images, alternating, one process each run.

    python benchmarks/atlas_ray_overhead.py /work/bigmodels/resnet50.onnx --images /tmp/atlas-data --count 128

Each run is a fresh `onnxviz atlas` process (as a user runs it), so Ray's start-up counts.
Per run: the whole command, the scan (the pass through the network, as build_atlas times it)
and, for Ray, `ray.init()` + `ray.shutdown()` alone, timed in a process of its own. The two
tables must be identical.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def atlas(model: Path, images: list[Path], out: Path, engine: str, workers: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "onnxviz", "atlas", str(model), *map(str, images), "-o", str(out),
           "--provider", "cpu", "--engine", engine, "--workers", str(workers)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    rate = float(re.search(r"new, ([\d.]+) images/s", proc.stdout).group(1))
    return wall, len(images) / rate


def ray_start() -> float:
    code = ("import time, os, logging, ray; t = time.perf_counter(); "
            "ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING, "
            "object_store_memory=1 << 30); ray.shutdown(); print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from onnxviz.run.images import collect_images

    images = collect_images([args.images])[0][: args.count]
    runs: dict[str, list] = {"local": [], "ray": []}
    starts = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in ("local", "ray"):
                out = Path(tmp) / f"{engine}{r}"
                runs[engine].append(atlas(args.model, images, out, engine, args.workers))
                print(engine, r, "whole %.1fs scan %.1fs" % runs[engine][-1], flush=True)
            starts.append(ray_start())
            same = (Path(tmp) / f"local{r}" / "atlas.jsonl").read_bytes() == (Path(tmp) / f"ray{r}" / "atlas.jsonl").read_bytes()
            print("tables identical:", same, flush=True)
            assert same
    med = {e: (statistics.median(w for w, _ in v), statistics.median(s for _, s in v)) for e, v in runs.items()}
    n = len(images)
    print("\n| engine | whole s | scan s | scan img/s |\n|---|---|---|---|")
    for e, (w, s) in med.items():
        print(f"| {e} | {w:.1f} | {s:.1f} | {n / s:.2f} |")
    print(f"\nray.init + shutdown alone: median {statistics.median(starts):.1f}s; "
          f"ray/local whole {med['ray'][0] / med['local'][0]:.2f}x, scan {med['ray'][1] / med['local'][1]:.2f}x")


if __name__ == "__main__":
    main()
