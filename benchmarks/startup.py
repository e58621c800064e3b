"""One image through VGG16 as a whole process, with the weights stored four ways; alternating, medians.

    python benchmarks/convert_weights.py /work/bigmodels/vgg16.onnx /tmp/startup_vgg
    python benchmarks/startup.py /tmp/startup_vgg ../shared/data/images/chelsea.png --repeats 5

Two measurements per storage, each a new process timed from outside (interpreter start
included): `render` is `python -m onnxviz render MODEL IMAGE` (default options);
`session` is a bare process that imports onnxruntime, opens the model with onnxviz's
session options and runs the one image, which the ORT format (not readable by onnx, so
not by `onnxviz render`) can take part in too. Page cache warm: every file is read once
before timing, as a model used twice is.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SESSION = r"""
import sys
import numpy as np, onnxruntime as ort, cv2
from onnxviz.run.session import session_options
from onnxviz.run.images import load_image, resize_image
s = ort.InferenceSession(sys.argv[1], session_options(long_run=False), providers=["CPUExecutionProvider"])
shape = s.get_inputs()[0].shape
x = resize_image(load_image(sys.argv[2]), shape[1], shape[2])[None].astype(np.float32)
s.run(None, {s.get_inputs()[0].name: x})
"""
STORAGES = {"single": "single.onnx", "external": "external.onnx", "ort-optimized": "optimized.onnx", "ort-format": "model.ort"}


def timed(cmd: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for p in args.folder.iterdir():  # warm the page cache
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for storage, name in STORAGES.items():
            model = str(args.folder / name)
            times.setdefault(f"session/{storage}", []).append(timed([sys.executable, "-c", SESSION, model, str(args.image)]))
            if storage != "ort-format":
                out = tempfile.mkdtemp()
                try:
                    times.setdefault(f"render/{storage}", []).append(
                        timed([sys.executable, "-m", "onnxviz", "render", model, str(args.image), "-o", out]))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
        print(json.dumps({k: round(v[-1], 2) for k, v in times.items()}), file=sys.stderr, flush=True)
    print(json.dumps({k: {"runs": [round(x, 2) for x in v], "median": round(statistics.median(v), 2)}
                      for k, v in times.items()}, indent=1))


if __name__ == "__main__":
    main()
