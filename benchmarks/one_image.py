"""One image's whole `onnxviz render` process, two checkouts side by side; alternating, medians.

    python benchmarks/one_image.py MODEL.onnx IMAGE --checkout base=/tmp/base --checkout new=. --rounds 7

Each round runs `python -m onnxviz render MODEL IMAGE -o TMP` once per checkout (with
PYTHONPATH at that checkout), in turn, and records the process's wall time from outside
(interpreter start included) and the time render itself prints (`rendered 1 image(s) ... in
X s`). Page cache warm: one untimed run per checkout first.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(checkout: Path, model: Path, image: Path, out: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onnxviz", "render", str(model), str(image), "-o", str(out)],
                          env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    said = float(re.search(r"rendered 1 image\(s\) into .* in ([0-9.]+)s", proc.stdout).group(1))
    return wall, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--checkout", action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    checkouts = {c.split("=", 1)[0]: Path(c.split("=", 1)[1]).resolve() for c in args.checkout}
    walls: dict[str, list[float]] = {name: [] for name in checkouts}
    saids: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in checkouts.items():
            run(path, args.model, args.image, Path(tmp) / name)
        for _ in range(args.rounds):
            for name, path in checkouts.items():
                wall, said = run(path, args.model, args.image, Path(tmp) / name)
                walls[name].append(wall)
                saids[name].append(said)
    first = next(iter(checkouts))
    print(f"{'checkout':<10} {'process s':>10} {'render says s':>14} {'process ratio':>14}")
    for name in checkouts:
        ratio = statistics.median(walls[first]) / statistics.median(walls[name])
        print(f"{name:<10} {statistics.median(walls[name]):10.3f} {statistics.median(saids[name]):14.3f} "
              f"{ratio:13.2f}x")
    print(json.dumps({"walls": walls, "said": saids, "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
