"""Session options for a short run against a long one: `runtime.session_options(long_run=...)`.

    python benchmarks/short_run_options.py /tmp/startup_resnet/external.onnx --rounds 2

Each variant runs in a fresh process, alternating: it opens the file with onnxviz's options
(`long_run=True`: every graph optimisation and repacked weights; False: the extended level,
no repacking; ORT's threads not spinning, as in `render`), runs one batch of 8 random images
and then three more, and prints the seconds to open, of the first batch and of a later batch
(the median of three). One JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
from onnxviz.run.session import session_options
path, long_run = sys.argv[1], sys.argv[2] == "1"
t = time.perf_counter()
session = ort.InferenceSession(path, session_options(long_run=long_run, spinning=False),
                               providers=["CPUExecutionProvider"])
opened = time.perf_counter() - t
inp = session.get_inputs()[0]
x = (np.random.default_rng(0).random((8, inp.shape[1], inp.shape[2], 3)) * 255).astype(np.float32)
t = time.perf_counter(); session.run(None, {inp.name: x}); first = time.perf_counter() - t
later = []
for _ in range(3):
    t = time.perf_counter(); session.run(None, {inp.name: x}); later.append(time.perf_counter() - t)
print(json.dumps({"long_run": long_run, "open_s": round(opened, 3), "first_batch_s": round(first, 3),
                  "later_batch_s": round(sorted(later)[1], 3)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    for _ in range(args.rounds):
        for long_run in ("1", "0"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.model), long_run], capture_output=True,
                                 text=True, check=True, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
            print(json.dumps({"model": args.model.name, **json.loads(out.stdout.strip().splitlines()[-1])}), flush=True)


if __name__ == "__main__":
    main()
